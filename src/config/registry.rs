//! The plugin registry's settings: the operators' token and how often replicas re-check.

use std::time::Duration;

use super::{ConfigError, Reader, Secret, invalid};

/// The shortest operator token accepted (a guessable token would open the admin API).
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// How the plugin registry and its admin API run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The operators' bearer token; `None` disables the admin API (the registry's bindings
    /// still apply).
    pub admin_token: Option<Secret<String>>,
    /// How often each replica reloads the bindings even without a notification.
    pub resync_interval: Duration,
    /// How often the plugin directory is checked for changes.
    pub directory_poll_interval: Duration,
    /// The largest component the admin API accepts, in bytes.
    pub max_component_bytes: usize,
    /// Where compiled artefacts are kept across restarts (`PLUGIN_ARTEFACT_DIR`); `None`:
    /// only in the object store.
    pub artefact_dir: Option<std::path::PathBuf>,
}

impl RegistryConfig {
    /// The largest compiled artefact a replica fetches: compiled code is a few times the size
    /// of the component it came from.
    pub fn max_artefact_bytes(&self) -> usize {
        self.max_component_bytes.saturating_mul(8)
    }
}

pub(super) fn registry_config(reader: &Reader<'_>) -> Result<RegistryConfig, ConfigError> {
    let admin_token = match reader.0.get("ADMIN_TOKEN").map(str::trim) {
        None | Some("") => None,
        Some(token) if token.chars().count() < MIN_ADMIN_TOKEN_CHARS => {
            return Err(invalid(
                "ADMIN_TOKEN",
                format!("must be at least {MIN_ADMIN_TOKEN_CHARS} characters"),
            ));
        }
        Some(token) => Some(Secret::new(token.to_owned())),
    };
    let resync_interval = reader.duration("PLUGIN_RESYNC_INTERVAL", 30)?;
    let directory_poll_interval = reader.duration("PLUGINS_DIR_POLL_INTERVAL", 1)?;
    for (name, value) in [
        ("PLUGIN_RESYNC_INTERVAL", resync_interval),
        ("PLUGINS_DIR_POLL_INTERVAL", directory_poll_interval),
    ] {
        if value < Duration::from_millis(100) {
            return Err(invalid(name, "must be at least 100ms".into()));
        }
    }
    let max_component_mib: usize = reader.parsed("PLUGIN_MAX_COMPONENT_SIZE", 32)?;
    if max_component_mib == 0 {
        return Err(invalid(
            "PLUGIN_MAX_COMPONENT_SIZE",
            "must be at least 1".into(),
        ));
    }
    Ok(RegistryConfig {
        admin_token,
        resync_interval,
        directory_poll_interval,
        max_component_bytes: max_component_mib * 1024 * 1024,
        artefact_dir: match reader.0.get("PLUGIN_ARTEFACT_DIR").map(str::trim) {
            None | Some("") => None,
            Some(path) => Some(path.into()),
        },
    })
}
