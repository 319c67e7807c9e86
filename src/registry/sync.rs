//! Keeping a replica's bindings current: the registry's bindings are reloaded on every
//! `NOTIFY` of a change (within about a second on every replica) and on a timer (so a missed
//! notification heals); the plugin directory is polled and reloaded when its files change.
//! A binding whose plugin cannot be fetched or compiled here keeps the one in force before, and
//! the failure is logged and counted.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use super::{Registry, RegistryError};
use crate::db::plugins::PLUGINS_CHANNEL;
use crate::metrics::Metrics;
use crate::registry::binding::{Binding, BindingTable};
use crate::registry::directory;
use crate::worker::wakeup::{Wakeup, Woken};

/// How often the bindings are reloaded while change notifications cannot be received.
const UNHEARD_RESYNC: Duration = Duration::from_secs(5);

/// Loads the registry's active bindings and swaps them in. Returns how many bindings are in
/// force; individual failures keep the previous binding.
pub async fn reload(registry: &Registry, metrics: &Metrics) -> Result<usize, super::RegistryError> {
    let records = registry.repository().active_bindings().await?;
    let previous = registry.bindings().registry();
    let mut table = BindingTable::new();
    let mut unloaded = HashSet::new();
    for record in records {
        let key = record.key();
        let (Some(name), Some(version)) = (&record.plugin, &record.version) else {
            continue;
        };
        let config = record.config.as_ref().map(serde_json::Value::to_string);
        if let Some(current) = previous.get(&key)
            && record.digest.as_deref() == Some(current.plugin.digest.as_str())
            && current.config == config
        {
            table.insert(key, current.clone());
            continue;
        }
        // The version may have been deleted since the record was read: that is UnknownVersion.
        let loaded = match registry.load_version(name, version).await {
            Ok(plugin) => Binding::new(plugin, config).map_err(RegistryError::from),
            Err(error) => {
                // The store's passing trouble: the next reload (a notification or the periodic
                // resync) fetches it again.
                if matches!(error, RegistryError::Store(_)) {
                    metrics
                        .store_retries
                        .with_label_values(&["registry_fetch"])
                        .inc();
                }
                Err(error)
            }
        };
        match loaded {
            Ok(binding) => {
                tracing::info!(binding = %key, plugin = %name, %version, "plugin binding applied");
                table.insert(key, Arc::new(binding));
            }
            Err(reason) => {
                metrics
                    .plugin_load_failures
                    .with_label_values(&[name.as_str(), version.as_str()])
                    .inc();
                tracing::error!(
                    binding = %key, plugin = %name, %version, %reason,
                    "cannot apply a plugin binding; keeping the previous one"
                );
                match previous.get(&key) {
                    Some(current) => {
                        table.insert(key, current.clone());
                    }
                    None => {
                        unloaded.insert(key);
                    }
                }
            }
        }
    }
    let count = table.len();
    let canaries = super::canary::load_canaries(registry, metrics).await?;
    registry.bindings().set_registry(table, unloaded);
    registry.bindings().set_canaries(canaries);
    publish_bindings(registry, metrics);
    Ok(count)
}

/// Sets `export_service_plugin_binding_info` to the bindings in force. Organisation-scoped
/// bindings are counted under their scope, not labelled by organisation, so the number of
/// series stays bounded by applications × resources × versions whatever the tenants.
fn publish_bindings(registry: &Registry, metrics: &Metrics) {
    metrics.plugin_binding_info.reset();
    for (key, binding) in registry.bindings().registry().iter() {
        metrics
            .plugin_binding_info
            .with_label_values(&[
                key.application.as_str(),
                key.resource.as_str(),
                key.scope().as_str(),
                binding.plugin.info.name.as_str(),
                binding.plugin.info.version.as_str(),
            ])
            .inc();
    }
}

/// Follows the registry until `stop`: reloads on every notification, every `resync`, and
/// whenever the notification connection was made or lost (a change may have gone unheard).
pub async fn follow_registry(
    registry: Registry,
    pool: PgPool,
    metrics: Metrics,
    resync: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let wakeup = Wakeup::listen(pool, PLUGINS_CHANNEL);
    loop {
        if let Err(error) = reload(&registry, &metrics).await {
            tracing::warn!(%error, "cannot load the plugin bindings; will retry");
        }
        // Without notifications, a change is noticed only by polling: poll sooner.
        let poll = if wakeup.is_listening() {
            resync
        } else {
            resync.min(UNHEARD_RESYNC)
        };
        if wakeup.wait(poll, &mut stop).await == Woken::Stopped {
            return;
        }
    }
}

/// Watches the plugin directory until `stop`: when its files change, loads them again and swaps
/// the directory's bindings in (a directory that fails to load keeps the previous bindings).
pub async fn watch_directory(
    registry: Registry,
    directory: PathBuf,
    metrics: Metrics,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = directory::fingerprint(&directory);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let now = directory::fingerprint(&directory);
        if now == seen {
            continue;
        }
        let host = registry.bindings().host.clone();
        let path = directory.clone();
        let loaded =
            tokio::task::spawn_blocking(move || directory::load_directory(&host, &path)).await;
        match loaded {
            Ok(Ok(table)) => {
                tracing::info!(directory = %directory.display(), bindings = table.len(), "plugin directory reloaded");
                registry.bindings().set_directory(table);
                seen = now;
            }
            Ok(Err(failure)) => {
                metrics
                    .plugin_load_failures
                    .with_label_values(&["(directory)", ""])
                    .inc();
                tracing::error!(%failure, "cannot reload the plugin directory; keeping the previous bindings");
                // Try again only when the files change once more.
                seen = now;
            }
            Err(error) => tracing::error!(%error, "reloading the plugin directory crashed"),
        }
    }
}
