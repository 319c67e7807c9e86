//! Which plugin runs on whose uploads: a binding (plugin + configuration), the table of bindings
//! by application, resource and organisation, and the live set a running service swaps
//! atomically.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use export_plugin_host::{LoadedPlugin, PluginHost, PluginLimits};

use crate::domain::canary::{CanaryAudience, CanaryCounts};
use crate::domain::plugin_limits::{BindingLimits, LimitCeilings, LimitsError};
pub use crate::domain::{ANY_RESOURCE, BindingKey};
use crate::domain::{Application, OrgId, Resource};
use crate::ingest::schema::{SchemaError, compile};

/// A plugin bound to an application's uploads, with its configuration.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The plugin.
    pub plugin: Arc<LoadedPlugin>,
    /// Its configuration (JSON text), if any.
    pub config: Option<String>,
    /// The binding's JSON Schema (`"schema"` in its configuration), checked by the host.
    pub schema: Option<Arc<jsonschema::Validator>>,
    /// JSON Schemas the plugin declares per resource.
    pub resource_schemas: HashMap<String, Arc<jsonschema::Validator>>,
    /// The binding's own limits (`"limits"` in its configuration).
    pub limits: BindingLimits,
}

/// Why a binding's configuration or its plugin's schemas are unusable.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// The configuration is not JSON.
    #[error("the configuration is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The configuration is JSON but not an object (the admin API binds objects only).
    #[error("must be a JSON object")]
    NotAnObject,
    /// The configuration's `"schema"` does not compile.
    #[error("\"schema\" is not a JSON Schema: {0}")]
    Schema(#[source] SchemaError),
    /// The configuration's `"limits"` are malformed or beyond what this service allows.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// A schema the plugin declares for a resource does not compile.
    #[error("the schema of resource '{resource}' is not a JSON Schema: {reason}")]
    ResourceSchema {
        /// The resource.
        resource: String,
        /// What is wrong.
        reason: String,
    },
}

impl Binding {
    /// Binds `plugin` with `config` (JSON text), compiling the schemas involved; `Err` says
    /// what is wrong with them.
    pub fn new(plugin: Arc<LoadedPlugin>, config: Option<String>) -> Result<Self, BindingError> {
        let (schema, limits) = match &config {
            None => (None, BindingLimits::default()),
            Some(text) => {
                let value: serde_json::Value =
                    serde_json::from_str(text).map_err(BindingError::NotJson)?;
                let schema = value
                    .get("schema")
                    .map(|schema| compile(schema).map(Arc::new).map_err(BindingError::Schema))
                    .transpose()?;
                (schema, BindingLimits::from_config(&value)?)
            }
        };
        let mut resource_schemas = HashMap::new();
        for resource in &plugin.info.resources {
            let Some(text) = &resource.schema else {
                continue;
            };
            let invalid = |reason: String| BindingError::ResourceSchema {
                resource: resource.name.clone(),
                reason,
            };
            let schema = serde_json::from_str::<serde_json::Value>(text)
                .map_err(|error| invalid(error.to_string()))?;
            let compiled = compile(&schema).map_err(|error| invalid(error.to_string()))?;
            resource_schemas.insert(resource.name.clone(), Arc::new(compiled));
        }
        Ok(Self {
            plugin,
            config,
            schema,
            resource_schemas,
            limits,
        })
    }

    /// The limits this binding's sessions run under: the host's, with the binding's memory and
    /// call time (capped at `ceilings`).
    pub fn session_limits(&self, host: &PluginLimits, ceilings: &LimitCeilings) -> PluginLimits {
        PluginLimits {
            memory_bytes: usize::try_from(
                self.limits.memory_bytes(host.memory_bytes as u64, ceilings),
            )
            .unwrap_or(usize::MAX),
            call_timeout: self.limits.call_timeout(host.call_timeout, ceilings),
            ..host.clone()
        }
    }

    /// The schema the host checks records of `resource` against: the binding's, else the one the
    /// plugin declares for the resource. The binding's applies whatever the plugin does — a
    /// validating plugin may check it too, but one that ignores it must not let an operator's
    /// schema go unchecked.
    pub fn schema_for(&self, resource: &str) -> Option<Arc<jsonschema::Validator>> {
        self.schema
            .clone()
            .or_else(|| self.resource_schemas.get(resource).cloned())
            .or_else(|| self.resource_schemas.get("*").cloned())
    }

    /// Whether the plugin handles `resource` (by name, or `*`).
    fn handles(&self, resource: &str) -> bool {
        self.plugin
            .info
            .resources
            .iter()
            .any(|handled| handled.name == "*" || handled.name == resource)
    }
}

/// Bindings by what they are for.
pub type BindingTable = HashMap<BindingKey, Arc<Binding>>;

/// A running canary as a replica applies it: its binding, whom it takes, and the outcomes this
/// replica counted since it last added them to the canary's record.
#[derive(Debug)]
pub struct LiveCanary {
    /// The canary's id in the registry.
    pub id: i64,
    /// The binding it canaries (every organisation's, of an application or one resource).
    pub key: BindingKey,
    /// The canary's plugin and configuration.
    pub binding: Arc<Binding>,
    /// Whom it takes.
    pub audience: CanaryAudience,
    /// Uploads and failures of the canary, then of the stable binding.
    outcomes: [AtomicU64; 4],
}

/// Which side of a canary an upload ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The canary's version.
    Canary,
    /// The stable binding it is compared with.
    Stable,
}

impl LiveCanary {
    /// A canary with nothing counted yet.
    pub fn new(id: i64, key: BindingKey, binding: Arc<Binding>, audience: CanaryAudience) -> Self {
        Self {
            id,
            key,
            binding,
            audience,
            outcomes: Default::default(),
        }
    }

    /// Counts one upload on `arm`, and whether the plugin failed on it.
    pub fn count(&self, arm: Arm, failed: bool) {
        let base = match arm {
            Arm::Canary => 0,
            Arm::Stable => 2,
        };
        self.outcomes[base].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.outcomes[base + 1].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The outcomes counted since the last call, reset to zero.
    pub fn take(&self) -> CanaryCounts {
        let [
            canary_uploads,
            canary_failures,
            stable_uploads,
            stable_failures,
        ] = std::array::from_fn(|index| self.outcomes[index].swap(0, Ordering::Relaxed));
        CanaryCounts {
            canary_uploads,
            canary_failures,
            stable_uploads,
            stable_failures,
        }
    }

    /// Gives back outcomes [`take`](Self::take) returned that could not be recorded.
    pub fn restore(&self, counts: CanaryCounts) {
        for (index, value) in [
            counts.canary_uploads,
            counts.canary_failures,
            counts.stable_uploads,
            counts.stable_failures,
        ]
        .into_iter()
        .enumerate()
        {
            self.outcomes[index].fetch_add(value, Ordering::Relaxed);
        }
    }
}

/// An upload's place in a canary, to count its outcome.
#[derive(Debug, Clone)]
pub struct CanaryTicket {
    /// The canary.
    pub canary: Arc<LiveCanary>,
    /// The side the upload runs on.
    pub arm: Arm,
}

impl CanaryTicket {
    /// Counts the upload's outcome.
    pub fn record(&self, failed: bool) {
        self.canary.count(self.arm, failed);
    }
}

/// Running canaries by the (application, resource) they canary.
pub type CanaryTable = HashMap<(Application, Resource), Arc<LiveCanary>>;

/// Which binding applies to an upload.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// This binding, found under this key; with its side of a canary when one runs there.
    Bound(Arc<Binding>, BindingKey, Option<CanaryTicket>),
    /// The most specific binding is in the registry but this replica has not loaded its plugin
    /// (its bytes could not be fetched yet, say): the upload must not run without it, nor with
    /// a less specific binding's plugin.
    Unloaded(BindingKey),
    /// No binding: the upload runs without a plugin.
    Unbound,
}

/// The bindings a running service uses: those of the plugin directory and those of the registry
/// (which win where both bind the same key). Each source is replaced as a
/// whole, so an upload sees either the old bindings or the new ones, never a mix; an upload
/// keeps the binding it started with.
#[derive(Debug)]
pub struct LiveBindings {
    /// The host that runs the plugins.
    pub host: Arc<PluginHost>,
    /// The most memory and call time a binding may give its sessions on this replica.
    pub ceilings: LimitCeilings,
    sources: RwLock<Sources>,
}

#[derive(Debug, Default)]
struct Sources {
    directory: Arc<BindingTable>,
    registry: Arc<BindingTable>,
    /// Registry bindings in force in the database that this replica could not load and had no
    /// earlier version of: their uploads must wait, not bypass the plugin.
    unloaded: Arc<HashSet<BindingKey>>,
    /// Running canaries this replica loaded.
    canaries: Arc<CanaryTable>,
}

impl LiveBindings {
    /// No bindings yet; bindings may raise their sessions' limits up to `ceilings`.
    pub fn new(host: Arc<PluginHost>, ceilings: LimitCeilings) -> Self {
        Self {
            host,
            ceilings,
            sources: RwLock::new(Sources::default()),
        }
    }

    /// The limits a session of `binding` runs under on this replica.
    pub fn session_limits(&self, binding: &Binding) -> PluginLimits {
        binding.session_limits(self.host.limits(), &self.ceilings)
    }

    /// Replaces the plugin directory's bindings.
    pub fn set_directory(&self, table: BindingTable) {
        self.sources
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .directory = Arc::new(table);
    }

    /// Replaces the registry's bindings, and the keys bound in the registry whose plugin this
    /// replica could not load.
    pub fn set_registry(&self, table: BindingTable, unloaded: HashSet<BindingKey>) {
        let mut sources = self
            .sources
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        sources.registry = Arc::new(table);
        sources.unloaded = Arc::new(unloaded);
    }

    /// Replaces the running canaries.
    pub fn set_canaries(&self, canaries: CanaryTable) {
        self.sources
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .canaries = Arc::new(canaries);
    }

    /// The running canaries this replica applies.
    pub fn canaries(&self) -> Arc<CanaryTable> {
        self.sources
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .canaries
            .clone()
    }

    /// The registry's bindings now in force.
    pub fn registry(&self) -> Arc<BindingTable> {
        self.sources
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .registry
            .clone()
    }

    /// The binding for uploads of `resource` of `application` from `org`: the most specific one
    /// (see [`BindingKey::candidates`]) whose plugin handles the resource; at each key the
    /// registry's binding wins over the plugin directory's. A canary running at a key takes the
    /// organisations of its audience there; an organisation's own binding wins over a canary.
    pub fn resolve(&self, application: &Application, resource: &Resource, org: &OrgId) -> Resolved {
        let (directory, registry, unloaded, canaries) = {
            let sources = self
                .sources
                .read()
                .unwrap_or_else(|poison| poison.into_inner());
            (
                sources.directory.clone(),
                sources.registry.clone(),
                sources.unloaded.clone(),
                sources.canaries.clone(),
            )
        };
        for key in BindingKey::candidates(application, resource, org) {
            if unloaded.contains(&key) {
                return Resolved::Unloaded(key);
            }
            let canary = match key.org {
                Some(_) => None,
                None => canaries
                    .get(&(key.application.clone(), key.resource.clone()))
                    .filter(|canary| canary.binding.handles(resource.as_str())),
            };
            let ticket = |arm| {
                canary.map(|canary| CanaryTicket {
                    canary: canary.clone(),
                    arm,
                })
            };
            if let Some(live) = canary
                && live.audience.takes(org)
            {
                return Resolved::Bound(live.binding.clone(), key, ticket(Arm::Canary));
            }
            let found = [registry.get(&key), directory.get(&key)]
                .into_iter()
                .flatten()
                .find(|binding| binding.handles(resource.as_str()));
            if let Some(binding) = found {
                return Resolved::Bound(binding.clone(), key, ticket(Arm::Stable));
            }
        }
        Resolved::Unbound
    }
}
