//! Which applications and resources tenants may export (`EXPORT_ENABLE_APPS`): a rule of the
//! domain that the configuration fills in.

use std::collections::{BTreeMap, BTreeSet};

/// Why `EXPORT_ENABLE_APPS` is not the upstream's shape.
#[derive(Debug, thiserror::Error)]
#[error("expected a JSON object of application → list of resources ({0})")]
pub struct InvalidEnabledApps(#[source] serde_json::Error);

/// Which (application, resource) pairs tenants may request, from `EXPORT_ENABLE_APPS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnabledApps(BTreeMap<String, BTreeSet<String>>);

impl EnabledApps {
    /// Parses the upstream's JSON shape: `{"<application>": ["<resource>", …], …}`.
    pub fn parse(json: &str) -> Result<Self, InvalidEnabledApps> {
        let map: BTreeMap<String, Vec<String>> =
            serde_json::from_str(json).map_err(InvalidEnabledApps)?;
        Ok(Self(
            map.into_iter()
                .map(|(app, resources)| (app, resources.into_iter().collect()))
                .collect(),
        ))
    }

    /// The resources of `application`, if tenants may export it.
    pub fn resources(&self, application: &str) -> Option<&BTreeSet<String>> {
        self.0.get(application)
    }

    /// Whether tenants may export `resource` of `application` (exact, case-sensitive match).
    pub fn allows(&self, application: &str, resource: &str) -> bool {
        self.0
            .get(application)
            .is_some_and(|resources| resources.contains(resource))
    }
}
