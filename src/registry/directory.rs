//! Plugin bindings from a directory (e.g. a mounted ConfigMap): `<application>.wasm` binds that
//! application's uploads to the plugin, with an optional `<application>.json` as its
//! configuration. The directory is watched: a change is applied like a registry change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::binding::{ANY_RESOURCE, Binding, BindingKey, BindingTable};
use crate::domain::{Application, Resource};
use export_plugin_host::{PluginFailure, PluginHost};

/// Loads every `<application>.wasm` of `directory` (compiling each once).
pub fn load_directory(host: &PluginHost, directory: &Path) -> Result<BindingTable, PluginFailure> {
    let mut table = BindingTable::new();
    for path in wasm_files(directory)? {
        let Some(application) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        let bytes = std::fs::read(&path).map_err(|error| {
            PluginFailure::Invalid(format!("cannot read {}: {error}", path.display()))
        })?;
        let plugin = host
            .load(&bytes)
            .map_err(|failure| PluginFailure::Invalid(format!("{}: {failure}", path.display())))?;
        let config_path = path.with_extension("json");
        let config = std::fs::read_to_string(&config_path).ok();
        let binding = Binding::new(plugin, config).map_err(|reason| {
            PluginFailure::Invalid(format!("{}: {reason}", config_path.display()))
        })?;
        tracing::info!(
            application,
            plugin = %binding.plugin.info.name,
            version = %binding.plugin.info.version,
            digest = %binding.plugin.digest,
            "plugin bound from the plugin directory"
        );
        table.insert(
            BindingKey::new(
                Application::from(application),
                Resource::from(ANY_RESOURCE),
                None,
            ),
            Arc::new(binding),
        );
    }
    Ok(table)
}

fn wasm_files(directory: &Path) -> Result<Vec<PathBuf>, PluginFailure> {
    let entries = std::fs::read_dir(directory).map_err(|error| {
        PluginFailure::Invalid(format!("cannot read {}: {error}", directory.display()))
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().and_then(|extension| extension.to_str()) == Some("wasm"))
        .collect();
    files.sort();
    Ok(files)
}

/// What the directory's plugin files look like now (names, sizes, modification times), to tell
/// when it changed. Follows symbolic links, as a ConfigMap's files are.
pub fn fingerprint(directory: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|extension| extension.to_str()),
                Some("wasm" | "json")
            )
        })
        .map(|path| {
            let metadata = std::fs::metadata(&path).ok();
            let size = metadata.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = metadata.and_then(|metadata| metadata.modified().ok());
            (path, size, modified)
        })
        .collect();
    files.sort();
    files
}
