//! Whose uploads a plugin binding applies to: an application, one of its resources or every
//! one, and one organisation (tenant) or every one. The most specific binding wins.

use std::fmt;

use super::ids::{Application, OrgId, Resource};

/// The resource that stands for every resource of an application.
pub const ANY_RESOURCE: &str = "*";

/// The organisation that stands for every tenant (how the registry stores an unscoped binding).
pub const ANY_ORG: &str = "*";

/// What a binding is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingKey {
    /// The application whose uploads it applies to.
    pub application: Application,
    /// One of its resources, or [`ANY_RESOURCE`].
    pub resource: Resource,
    /// One organisation, or `None` for every one.
    pub org: Option<OrgId>,
}

/// How specific a binding is; shown in metrics (a bounded label, unlike the organisation) and
/// recorded in `meta.json` with the plugin that processed a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindingScope {
    /// Every resource of the application, for every tenant.
    Application,
    /// One resource of the application, for every tenant.
    Resource,
    /// Every resource of the application, for one tenant.
    Org,
    /// One resource of the application, for one tenant.
    OrgResource,
}

impl BindingScope {
    /// The name used in metrics, `meta.json` and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::Resource => "resource",
            Self::Org => "org",
            Self::OrgResource => "org-resource",
        }
    }

    /// The scope named `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Application,
            Self::Resource,
            Self::Org,
            Self::OrgResource,
        ]
        .into_iter()
        .find(|scope| scope.as_str() == text)
    }
}

impl BindingKey {
    /// The binding of `resource` (or [`ANY_RESOURCE`]) of `application` for `org` (or every
    /// organisation).
    pub fn new(application: Application, resource: Resource, org: Option<OrgId>) -> Self {
        Self {
            application,
            resource,
            org,
        }
    }

    /// How specific this key is.
    pub fn scope(&self) -> BindingScope {
        match (self.org.is_some(), self.resource.as_str() == ANY_RESOURCE) {
            (true, false) => BindingScope::OrgResource,
            (true, true) => BindingScope::Org,
            (false, false) => BindingScope::Resource,
            (false, true) => BindingScope::Application,
        }
    }

    /// The organisation as the registry stores it ([`ANY_ORG`] for every one).
    pub fn org_column(&self) -> &str {
        self.org.as_ref().map_or(ANY_ORG, OrgId::as_str)
    }

    /// The keys that may bind uploads of `resource` of `application` from `org`, most specific
    /// first: the organisation's binding of the resource, its binding of every resource, then
    /// the same two for every organisation.
    pub fn candidates(
        application: &Application,
        resource: &Resource,
        org: &OrgId,
    ) -> [BindingKey; 4] {
        let any = Resource::from(ANY_RESOURCE);
        [
            Self::new(application.clone(), resource.clone(), Some(org.clone())),
            Self::new(application.clone(), any.clone(), Some(org.clone())),
            Self::new(application.clone(), resource.clone(), None),
            Self::new(application.clone(), any, None),
        ]
    }
}

impl fmt::Display for BindingKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.application, self.resource)?;
        if let Some(org) = &self.org {
            write!(formatter, " for org {org}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_go_from_the_tenants_resource_to_the_whole_application() {
        let keys = BindingKey::candidates(
            &Application::from("inventory"),
            &Resource::from("hosts"),
            &OrgId::from("42"),
        );
        let scopes: Vec<_> = keys.iter().map(BindingKey::scope).collect();
        assert_eq!(
            scopes,
            [
                BindingScope::OrgResource,
                BindingScope::Org,
                BindingScope::Resource,
                BindingScope::Application
            ]
        );
        assert_eq!(keys[0].to_string(), "inventory/hosts for org 42");
        assert_eq!(keys[3].to_string(), "inventory/*");
        assert_eq!(keys[3].org_column(), ANY_ORG);
        assert_eq!(keys[1].org_column(), "42");
    }

    #[test]
    fn scopes_round_trip_through_their_names() {
        for scope in [
            BindingScope::Application,
            BindingScope::Resource,
            BindingScope::Org,
            BindingScope::OrgResource,
        ] {
            assert_eq!(BindingScope::parse(scope.as_str()), Some(scope));
            assert_eq!(
                serde_json::to_value(scope).unwrap(),
                serde_json::json!(scope.as_str())
            );
        }
        assert_eq!(BindingScope::parse("tenant"), None);
    }
}
