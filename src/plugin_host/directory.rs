//! Plugin bindings from a directory (until the registry exists): `<application>.wasm` binds that
//! application's uploads to the plugin, with an optional `<application>.json` as its config.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{LoadedPlugin, PluginFailure, PluginHost};

/// One application's plugin.
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
}

impl Binding {
    /// The schema the host checks records of `resource` against: the binding's (unless the plugin
    /// validates by itself, in which case the configuration's schema is the plugin's to use), else
    /// the one the plugin declares for the resource.
    pub fn schema_for(&self, resource: &str) -> Option<Arc<jsonschema::Validator>> {
        self.schema
            .clone()
            .filter(|_| !self.plugin.info.capabilities.validate)
            .or_else(|| self.resource_schemas.get(resource).cloned())
            .or_else(|| self.resource_schemas.get("*").cloned())
    }
}

/// Application → plugin.
#[derive(Debug)]
pub struct PluginBindings {
    /// The host that runs them.
    pub host: Arc<PluginHost>,
    by_application: HashMap<String, Binding>,
}

impl PluginBindings {
    /// Loads every `<application>.wasm` of `directory` (compiling each once).
    pub fn load_directory(host: Arc<PluginHost>, directory: &Path) -> Result<Self, PluginFailure> {
        let entries = std::fs::read_dir(directory).map_err(|error| {
            PluginFailure::Invalid(format!("cannot read {}: {error}", directory.display()))
        })?;
        let mut by_application = HashMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|extension| extension.to_str()) != Some("wasm") {
                continue;
            }
            let Some(application) = path.file_stem().and_then(|stem| stem.to_str()) else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(|error| {
                PluginFailure::Invalid(format!("cannot read {}: {error}", path.display()))
            })?;
            let plugin = host.load(&bytes).map_err(|failure| {
                PluginFailure::Invalid(format!("{}: {failure}", path.display()))
            })?;
            let config_path = path.with_extension("json");
            let (config, schema) = match std::fs::read_to_string(&config_path) {
                Ok(text) => {
                    let value: serde_json::Value =
                        serde_json::from_str(&text).map_err(|error| {
                            PluginFailure::Invalid(format!(
                                "{} is not JSON: {error}",
                                config_path.display()
                            ))
                        })?;
                    let schema = value
                        .get("schema")
                        .map(|schema| {
                            crate::ingest::schema::compile(schema)
                                .map(Arc::new)
                                .map_err(|reason| {
                                    PluginFailure::Invalid(format!(
                                        "{}: \"schema\" is not a JSON Schema: {reason}",
                                        config_path.display()
                                    ))
                                })
                        })
                        .transpose()?;
                    (Some(text), schema)
                }
                Err(_) => (None, None),
            };
            let mut resource_schemas = HashMap::new();
            for resource in &plugin.info.resources {
                let Some(text) = &resource.schema else {
                    continue;
                };
                let compiled = serde_json::from_str::<serde_json::Value>(text)
                    .map_err(|error| error.to_string())
                    .and_then(|schema| crate::ingest::schema::compile(&schema))
                    .map_err(|reason| {
                        PluginFailure::Invalid(format!(
                            "{}: the schema of resource '{}' is not a JSON Schema: {reason}",
                            path.display(),
                            resource.name
                        ))
                    })?;
                resource_schemas.insert(resource.name.clone(), Arc::new(compiled));
            }
            tracing::info!(
                application,
                plugin = %plugin.info.name,
                version = %plugin.info.version,
                digest = %plugin.digest,
                "plugin bound"
            );
            by_application.insert(
                application.to_owned(),
                Binding {
                    plugin,
                    config,
                    schema,
                    resource_schemas,
                },
            );
        }
        Ok(Self {
            host,
            by_application,
        })
    }

    /// The plugin bound to uploads of `resource` of `application`, if any (the plugin must
    /// handle that resource, or `*`).
    pub fn binding_for(&self, application: &str, resource: &str) -> Option<&Binding> {
        self.by_application.get(application).filter(|binding| {
            binding
                .plugin
                .info
                .resources
                .iter()
                .any(|handled| handled.name == "*" || handled.name == resource)
        })
    }
}
