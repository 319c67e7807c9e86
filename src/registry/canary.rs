//! Canary rollouts: start one beside a binding, promote or abort it, and, on every replica,
//! add the outcomes counted here to its record and roll it back by itself once it fails more
//! than the stable version by more than its policy allows.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::binding::{Binding, BindingError, CanaryTable, LiveCanary};
use super::{Registry, RegistryError};
use crate::db::canaries::{CanaryEnd, CanaryRecord, CanaryStarted, NewCanary};
use crate::domain::BindingKey;
use crate::domain::canary::{CanaryAudience, CanaryPolicy, judge};
use crate::metrics::Metrics;

/// Who the history names for an automatic rollback.
pub const SERVICE_ACTOR: &str = "export-service";

/// The policy when the operator names none: rolled back when the canary fails on 5 % more
/// uploads than the stable version, judged from its 20th upload.
pub const DEFAULT_POLICY: CanaryPolicy = CanaryPolicy {
    max_failure_rate: 0.05,
    min_uploads: 20,
};

/// A canary to start.
#[derive(Debug, Clone)]
pub struct CanaryPlan {
    /// The plugin's name.
    pub plugin: String,
    /// The version to try.
    pub version: String,
    /// Its configuration.
    pub config: Option<serde_json::Value>,
    /// Whom it takes.
    pub audience: CanaryAudience,
    /// When it is rolled back by itself.
    pub policy: CanaryPolicy,
}

impl Registry {
    /// Starts a canary of `plan` beside the binding `key` (of every organisation), after the
    /// same checks as a bind.
    pub async fn start_canary(
        &self,
        key: &BindingKey,
        plan: CanaryPlan,
        by: &str,
    ) -> Result<CanaryRecord, RegistryError> {
        let refuse = |reason: &str| Err(RegistryError::BadCanary(reason.to_owned()));
        if key.org.is_some() {
            return refuse(
                "a canary takes a share of every organisation; to try a version on one \
                 organisation, bind it with org_id, or list it in the canary's org_ids",
            );
        }
        if plan.audience.share_percent > 100 {
            return refuse("share_percent must be between 0 and 100");
        }
        if plan.audience.share_percent == 0 && plan.audience.org_ids.is_empty() {
            return refuse("a canary needs share_percent above 0 or some org_ids to take");
        }
        if !(0.0..=1.0).contains(&plan.policy.max_failure_rate) {
            return refuse("max_failure_rate is a fraction between 0 and 1 (0.05 = 5 points)");
        }
        if plan.policy.min_uploads == 0 {
            return refuse("min_uploads must be at least 1");
        }
        self.check_target(key)?;
        for org in &plan.audience.org_ids {
            self.check_org(org)?;
        }
        if let Some(config) = &plan.config
            && !config.is_object()
        {
            return Err(RegistryError::BadConfig(BindingError::NotAnObject));
        }
        let unknown = || RegistryError::UnknownVersion {
            name: plan.plugin.clone(),
            version: plan.version.clone(),
        };
        let plugin = self.load_version(&plan.plugin, &plan.version).await?;
        self.check_binding(plugin, plan.config.as_ref())?;
        let started = self
            .repository
            .canaries()
            .start(&NewCanary {
                key,
                plugin: (&plan.plugin, &plan.version),
                config: plan.config.as_ref(),
                audience: &plan.audience,
                policy: plan.policy,
                by,
            })
            .await?;
        match started {
            CanaryStarted::Started(record) => Ok(*record),
            CanaryStarted::UnknownVersion => Err(unknown()),
            CanaryStarted::AlreadyRunning(running) => Err(RegistryError::CanaryRunning {
                key: key.clone(),
                plugin: running.plugin,
                version: running.version,
            }),
        }
    }

    /// Ends the canary at `key`: promoted (its version and configuration become the binding)
    /// or aborted (the binding stays).
    pub async fn end_canary(
        &self,
        key: &BindingKey,
        end: CanaryEnd,
        by: &str,
    ) -> Result<CanaryRecord, RegistryError> {
        self.repository
            .canaries()
            .end(key, None, &end, by)
            .await?
            .ok_or_else(|| RegistryError::NoCanary { key: key.clone() })
    }
}

/// The running canaries as this replica applies them: those already live keep their counters;
/// new ones are loaded. A canary whose plugin cannot be loaded here is left out (its tenants
/// get the stable binding on this replica), logged and counted.
pub async fn load_canaries(
    registry: &Registry,
    metrics: &Metrics,
) -> Result<CanaryTable, RegistryError> {
    let previous = registry.bindings().canaries();
    let mut table = CanaryTable::new();
    for record in registry.repository().canaries().running().await? {
        let at = (record.application.clone(), record.resource.clone());
        if let Some(live) = previous.get(&at).filter(|live| live.id == record.id) {
            table.insert(at, live.clone());
            continue;
        }
        let loaded = registry
            .load_version(&record.plugin, &record.version)
            .await
            .and_then(|plugin| {
                let config = record.config.as_ref().map(serde_json::Value::to_string);
                Binding::new(plugin, config).map_err(RegistryError::from)
            });
        match loaded {
            Ok(binding) => {
                tracing::info!(
                    binding = %record.key(), plugin = %record.plugin, version = %record.version,
                    share_percent = record.share_percent, "plugin canary applied"
                );
                let live = LiveCanary::new(
                    record.id,
                    record.key(),
                    Arc::new(binding),
                    record.audience(),
                );
                table.insert(at, Arc::new(live));
            }
            Err(reason) => {
                metrics
                    .plugin_load_failures
                    .with_label_values(&[record.plugin.as_str(), record.version.as_str()])
                    .inc();
                tracing::error!(
                    binding = %record.key(), plugin = %record.plugin, version = %record.version,
                    %reason, "cannot apply a plugin canary; its tenants keep the stable binding here"
                );
            }
        }
    }
    Ok(table)
}

/// Adds the outcomes this replica counted to each running canary's record and rolls back
/// those that fail too often. Outcomes that could not be added are kept for the next pass.
pub async fn judge_canaries(registry: &Registry, metrics: &Metrics) {
    let canaries = registry.bindings().canaries();
    for live in canaries.values() {
        let delta = live.take();
        if delta == Default::default() {
            continue;
        }
        let record = match registry
            .repository()
            .canaries()
            .add_outcomes(live.id, delta)
            .await
        {
            Ok(Some(record)) => record,
            // Ended meanwhile: its outcomes no longer matter.
            Ok(None) => continue,
            Err(error) => {
                live.restore(delta);
                tracing::warn!(%error, canary = live.id, "cannot record canary outcomes; will retry");
                continue;
            }
        };
        let Some(reason) = judge(record.counts(), record.policy()) else {
            continue;
        };
        let ended = registry
            .repository()
            .canaries()
            .end(
                &live.key,
                Some(live.id),
                &CanaryEnd::AutoRollback(reason.clone()),
                SERVICE_ACTOR,
            )
            .await;
        match ended {
            Ok(Some(_)) => {
                metrics
                    .plugin_canary_rollbacks
                    .with_label_values(&[record.application.as_str()])
                    .inc();
                tracing::warn!(
                    binding = %live.key, plugin = %record.plugin, version = %record.version,
                    %reason, "plugin canary rolled back automatically"
                );
            }
            // Another replica ended it first.
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, canary = live.id, "cannot roll a failing canary back; will retry");
            }
        }
    }
}

/// How often a replica adds its canary outcomes and judges the canaries.
pub const JUDGE_INTERVAL: Duration = Duration::from_secs(1);

/// Judges the canaries every `interval` until `stop`.
pub async fn watch_canaries(
    registry: Registry,
    metrics: Metrics,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        judge_canaries(&registry, &metrics).await;
    }
}
