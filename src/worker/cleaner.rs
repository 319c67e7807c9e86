//! The cleaner: deletes expired exports (rows, then objects), fails sources that never
//! answered so no export hangs, and finishes object deletions the store could not do at once.
//! Runs as `export-service clean` (a CronJob) or on an interval inside `serve`; every step is
//! idempotent and safe on several replicas at once.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::config::DataPathConfig;
use crate::db::{AuditRepository, CleanupRepository, DbError, SourceRepository};
use crate::metrics::Metrics;
use crate::storage::{KeyLayout, ObjectStore};

/// The error code given to sources that timed out.
pub const TIMEOUT_CODE: i32 = 504;
const BATCH: i64 = 500;

/// What one cleaning pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanReport {
    /// Expired exports deleted.
    pub expired: usize,
    /// Sources failed for not answering in time.
    pub timed_out: u64,
    /// Object prefixes removed from the store.
    pub prefixes_deleted: usize,
    /// Object prefixes left for a later pass (store unavailable).
    pub prefixes_deferred: usize,
    /// Idempotency keys forgotten past their lifetime.
    pub idempotency_keys_forgotten: u64,
    /// Audit records removed past `AUDIT_RETENTION`.
    pub audit_records_removed: u64,
}

/// Cleans the database and the object store.
#[derive(Debug, Clone)]
pub struct Cleaner {
    cleanup: CleanupRepository,
    sources: SourceRepository,
    audit: AuditRepository,
    store: ObjectStore,
    keys: KeyLayout,
    config: DataPathConfig,
    metrics: Metrics,
}

impl Cleaner {
    /// A cleaner over the given stores.
    pub fn new(
        pool: PgPool,
        store: ObjectStore,
        keys: KeyLayout,
        config: DataPathConfig,
        metrics: Metrics,
    ) -> Self {
        Self {
            metrics,
            cleanup: CleanupRepository::new(pool.clone()),
            audit: AuditRepository::new(pool.clone()),
            sources: SourceRepository::new(pool),
            store,
            keys,
            config,
        }
    }

    /// One full pass.
    pub async fn run_once(&self) -> Result<CleanReport, DbError> {
        let mut report = CleanReport::default();
        if let Some(timeout) = self.config.source_timeout {
            let message = format!(
                "the application did not deliver this resource within {}",
                humanize(timeout)
            );
            report.timed_out = self
                .sources
                .time_out(timeout, TIMEOUT_CODE, &message)
                .await?;
        }
        report.idempotency_keys_forgotten = self.cleanup.forget_idempotency_keys().await?;
        report.audit_records_removed = self.audit.purge(self.config.audit_retention).await?;
        self.cleanup.trim_source_ledger().await?;
        loop {
            let keys = &self.keys;
            let expired = self
                .cleanup
                .expire(self.config.cleaner_grace, BATCH, |org_id, id| {
                    keys.export_prefix(org_id, id.into())
                })
                .await?;
            report.expired += expired.len();
            if (expired.len() as i64) < BATCH {
                break;
            }
        }
        loop {
            let prefixes = self
                .cleanup
                .claim_deletions(100, Duration::from_secs(300))
                .await?;
            if prefixes.is_empty() {
                break;
            }
            for prefix in &prefixes {
                if remove_objects(&self.store, &self.cleanup, prefix, &self.metrics).await {
                    report.prefixes_deleted += 1;
                } else {
                    report.prefixes_deferred += 1;
                }
            }
            if report.prefixes_deferred > 0 {
                break;
            }
        }
        Ok(report)
    }

    /// Runs a pass every `interval` until `stop` turns true.
    pub async fn run(self, interval: Duration, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            match self.run_once().await {
                Ok(report) if report != CleanReport::default() => {
                    tracing::info!(?report, "cleaning pass done");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "cleaning pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Deletes the objects under `prefix` and forgets the queued deletion; on failure leaves it
/// queued with a backoff. Returns whether the objects are gone.
pub async fn remove_objects(
    store: &ObjectStore,
    cleanup: &CleanupRepository,
    prefix: &str,
    metrics: &Metrics,
) -> bool {
    match store.delete_prefix(prefix).await {
        Ok(deleted) => {
            tracing::debug!(prefix, deleted, "objects deleted");
            if let Err(error) = cleanup.deletion_done(prefix).await {
                tracing::warn!(error = %error, prefix, "objects deleted but the queue entry remains");
            }
            true
        }
        Err(error) => {
            tracing::warn!(error = %error, prefix, "cannot delete objects yet; the cleaner will retry");
            metrics.store_retries.with_label_values(&["delete"]).inc();
            // Retried for as long as it takes, each wait twice the last up to ten minutes.
            if let Err(db_error) = cleanup
                .deletion_failed(prefix, Duration::from_secs(600), &error.to_string())
                .await
            {
                tracing::warn!(error = %db_error, prefix, "cannot reschedule the deletion");
            }
            false
        }
    }
}

fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds.is_multiple_of(3600) {
        format!("{} h", seconds / 3600)
    } else if seconds.is_multiple_of(60) {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}
