//! The internal API's view of sources: finding the target of an upload, holding a source while
//! its upload runs, and settling it (complete or failed) together with the export's progress —
//! all transitions of one export serialised by a row lock on the export.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::DbError;
use crate::domain::progress::{Progress, progress};
use crate::domain::{
    Application, ExportId, ExportStatus, Format, OrgId, Resource, SourceId, SourceStatus,
};

/// The channel that wakes packaging workers when a job is created.
pub const PACKAGING_CHANNEL: &str = "export_packaging";

/// An upload's or error report's target.
#[derive(Debug, Clone)]
pub struct SourceTarget {
    /// The export.
    pub export_id: ExportId,
    /// Its organisation (first segment of object keys).
    pub org_id: OrgId,
    /// The format the tenant asked for.
    pub format: Format,
    /// The source.
    pub source_id: SourceId,
    /// The application the source belongs to.
    pub application: Application,
    /// The resource requested from it.
    pub resource: Resource,
    /// The source's status.
    pub status: SourceStatus,
}

/// Result of looking a target up.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// No such export.
    NoExport,
    /// The export exists but has no such source.
    NoSource,
    /// Found.
    Found(SourceTarget),
}

/// Result of trying to hold a source for an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginUpload {
    /// The source is held for this upload (identified by the token) until the lease ends.
    Started(Uuid),
    /// The source already completed or failed.
    AlreadyProcessed,
    /// Another upload of the same source is running.
    InProgress,
}

/// Result of settling a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Recorded; the export's progress afterwards.
    Recorded(Progress),
    /// The source was already complete or failed; nothing changed.
    AlreadyProcessed,
    /// An upload holds the source (error reports), or another upload took it over (uploads).
    Held,
    /// The source no longer exists (its export was deleted or expired).
    Gone,
}

/// What a completed upload stored.
#[derive(Debug, Clone)]
pub struct StoredUpload {
    /// The object's key.
    pub object_key: String,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// Stored bytes.
    pub bytes: u64,
    /// Data rows, when known.
    pub rows: Option<u64>,
    /// The plugin that processed it.
    pub plugin: Option<crate::domain::PluginStamp>,
}

/// Source transitions.
#[derive(Debug, Clone)]
pub struct SourceRepository {
    pool: PgPool,
}

impl SourceRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Finds the export and source of an internal API call (no owner: the key authorises).
    pub async fn lookup(
        &self,
        export_id: ExportId,
        source_id: SourceId,
    ) -> Result<Lookup, DbError> {
        let Some(export) = sqlx::query("SELECT org_id, format FROM exports WHERE id = $1")
            .bind(export_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(Lookup::NoExport);
        };
        let Some(source) = sqlx::query(
            "SELECT application, resource, status FROM sources WHERE id = $1 AND export_id = $2",
        )
        .bind(source_id)
        .bind(export_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(Lookup::NoSource);
        };
        Ok(Lookup::Found(SourceTarget {
            export_id,
            org_id: export.try_get("org_id")?,
            format: export.try_get("format")?,
            source_id,
            application: source.try_get("application")?,
            resource: source.try_get("resource")?,
            status: source.try_get("status")?,
        }))
    }

    /// Holds a pending source for one upload (until `lease` ends) and marks its export running.
    pub async fn begin_upload(
        &self,
        target: &SourceTarget,
        lease: Duration,
    ) -> Result<BeginUpload, DbError> {
        let token = Uuid::new_v4();
        let mut transaction = self.pool.begin().await?;
        let held = sqlx::query(
            "UPDATE sources SET upload_lease_until = now() + make_interval(secs => $2), \
                    upload_token = $3, updated_at = now() \
             WHERE id = $1 AND status = $4 \
               AND (upload_lease_until IS NULL OR upload_lease_until < now())",
        )
        .bind(target.source_id)
        .bind(lease.as_secs_f64())
        .bind(token)
        .bind(SourceStatus::Pending)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if held == 0 {
            let status: String = sqlx::query_scalar("SELECT status FROM sources WHERE id = $1")
                .bind(target.source_id)
                .fetch_one(&mut *transaction)
                .await?;
            return Ok(if status == "pending" {
                BeginUpload::InProgress
            } else {
                BeginUpload::AlreadyProcessed
            });
        }
        mark_running(&mut transaction, target.export_id).await?;
        transaction.commit().await?;
        Ok(BeginUpload::Started(token))
    }

    /// Extends the hold of an upload that is still running; `false` when it lost the source.
    pub async fn extend_upload(
        &self,
        source_id: SourceId,
        token: Uuid,
        lease: Duration,
    ) -> Result<bool, DbError> {
        let extended = sqlx::query(
            "UPDATE sources SET upload_lease_until = now() + make_interval(secs => $3) \
             WHERE id = $1 AND upload_token = $2 AND status = $4",
        )
        .bind(source_id)
        .bind(token)
        .bind(lease.as_secs_f64())
        .bind(SourceStatus::Pending)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(extended > 0)
    }

    /// Lets go of a source whose upload failed, so the application can retry at once.
    pub async fn release_upload(&self, source_id: SourceId, token: Uuid) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE sources SET upload_lease_until = NULL, upload_token = NULL \
             WHERE id = $1 AND upload_token = $2 AND status = $3",
        )
        .bind(source_id)
        .bind(token)
        .bind(SourceStatus::Pending)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a durably stored upload and advances the export.
    pub async fn complete(
        &self,
        target: &SourceTarget,
        token: Uuid,
        stored: &StoredUpload,
    ) -> Result<Settled, DbError> {
        let mut transaction = self.pool.begin().await?;
        lock_export(&mut transaction, target.export_id).await?;
        let updated = sqlx::query(
                        "UPDATE sources SET status = $10, object_key = $2, sha256 = $3, bytes = $4, rows = $5, \
                    completed_at = now(), updated_at = now(), upload_lease_until = NULL, upload_token = NULL, \
                    last_error_code = NULL, last_error_message = NULL, last_error_at = NULL, \
                    plugin_name = $7, plugin_version = $8, plugin_digest = $9, plugin_scope = $12 \
             WHERE id = $1 AND status = $11 AND upload_token = $6",
        )
        .bind(target.source_id)
        .bind(&stored.object_key)
        .bind(&stored.sha256)
        .bind(i64::try_from(stored.bytes).unwrap_or(i64::MAX))
        .bind(stored.rows.map(|rows| i64::try_from(rows).unwrap_or(i64::MAX)))
        .bind(token)
        .bind(stored.plugin.as_ref().map(|plugin| plugin.name.as_str()))
        .bind(stored.plugin.as_ref().map(|plugin| plugin.version.as_str()))
        .bind(stored.plugin.as_ref().map(|plugin| plugin.digest.as_str()))
        .bind(SourceStatus::Complete)
        .bind(SourceStatus::Pending)
        .bind(
            stored
                .plugin
                .as_ref()
                .and_then(|plugin| plugin.scope)
                .map(crate::domain::BindingScope::as_str),
        )
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if updated == 0 {
            return explain(&mut transaction, target.source_id).await;
        }
        let progress = advance(&mut transaction, target.export_id).await?;
        transaction.commit().await?;
        Ok(Settled::Recorded(progress))
    }

    /// Remembers a refused upload on a source that stays pending (a settled source keeps its
    /// outcome).
    pub async fn note_refusal(
        &self,
        source_id: SourceId,
        code: u16,
        message: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE sources SET last_error_code = $2, last_error_message = $3, last_error_at = now() \
             WHERE id = $1 AND status = $4",
        )
        .bind(source_id)
        .bind(i32::from(code))
        .bind(message)
        .bind(SourceStatus::Pending)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an application's error report and advances the export.
    pub async fn fail(
        &self,
        target: &SourceTarget,
        code: i32,
        message: &str,
    ) -> Result<Settled, DbError> {
        let mut transaction = self.pool.begin().await?;
        lock_export(&mut transaction, target.export_id).await?;
        let updated = sqlx::query(
            "UPDATE sources SET status = $4, code = $2, message = $3, completed_at = now(), \
                    updated_at = now(), upload_lease_until = NULL, \
                    last_error_code = NULL, last_error_message = NULL, last_error_at = NULL \
             WHERE id = $1 AND status = $5 \
               AND (upload_lease_until IS NULL OR upload_lease_until < now())",
        )
        .bind(target.source_id)
        .bind(code)
        .bind(message)
        .bind(SourceStatus::Failed)
        .bind(SourceStatus::Pending)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if updated == 0 {
            return explain(&mut transaction, target.source_id).await;
        }
        mark_running(&mut transaction, target.export_id).await?;
        let progress = advance(&mut transaction, target.export_id).await?;
        transaction.commit().await?;
        Ok(Settled::Recorded(progress))
    }

    /// Fails every source still pending `timeout` after its export was created (and not being
    /// uploaded right now); returns how many.
    pub async fn time_out(
        &self,
        timeout: Duration,
        code: i32,
        message: &str,
    ) -> Result<u64, DbError> {
        // The one status spelled in SQL: the partial index `sources_pending_idx` serves this
        // scan only when the planner sees the literal (a bound parameter's generic plan
        // cannot prove it equals 'pending').
        let stale: Vec<(ExportId, SourceId)> = sqlx::query_as(
            "SELECT s.export_id, s.id FROM sources s JOIN exports e ON e.id = s.export_id \
             WHERE s.status = 'pending' AND e.created_at < now() - make_interval(secs => $1) \
               AND (s.upload_lease_until IS NULL OR s.upload_lease_until < now()) \
             ORDER BY e.created_at LIMIT 1000",
        )
        .bind(timeout.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let mut failed = 0;
        for (export_id, source_id) in stale {
            let mut transaction = self.pool.begin().await?;
            lock_export(&mut transaction, export_id).await?;
            let updated = sqlx::query(
                "UPDATE sources SET status = $4, code = $2, message = $3, completed_at = now(), updated_at = now(), \
                        last_error_code = NULL, last_error_message = NULL, last_error_at = NULL \
                 WHERE id = $1 AND status = $5 \
                   AND (upload_lease_until IS NULL OR upload_lease_until < now())",
            )
            .bind(source_id)
            .bind(code)
            .bind(message)
            .bind(SourceStatus::Failed)
            .bind(SourceStatus::Pending)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
            if updated > 0 {
                advance(&mut transaction, export_id).await?;
                failed += 1;
            }
            transaction.commit().await?;
        }
        Ok(failed)
    }
}

/// Why a source could not be settled: gone, held by an upload, or already terminal.
async fn explain(
    transaction: &mut Transaction<'_, Postgres>,
    source_id: SourceId,
) -> Result<Settled, DbError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM sources WHERE id = $1")
        .bind(source_id)
        .fetch_optional(&mut **transaction)
        .await?;
    Ok(match status.as_deref() {
        None => Settled::Gone,
        Some("pending") => Settled::Held,
        Some(_) => Settled::AlreadyProcessed,
    })
}

async fn lock_export(
    transaction: &mut Transaction<'_, Postgres>,
    export_id: ExportId,
) -> Result<(), DbError> {
    sqlx::query("SELECT 1 FROM exports WHERE id = $1 FOR UPDATE")
        .bind(export_id)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

async fn mark_running(
    transaction: &mut Transaction<'_, Postgres>,
    export_id: ExportId,
) -> Result<(), DbError> {
    sqlx::query("UPDATE exports SET status = $2, updated_at = now() WHERE id = $1 AND status = $3")
        .bind(export_id)
        .bind(ExportStatus::Running)
        .bind(ExportStatus::Pending)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// With the export locked: when no source is pending any more, either fail the export (all
/// sources failed) or create its packaging job (once) and wake the packagers.
async fn advance(
    transaction: &mut Transaction<'_, Postgres>,
    export_id: ExportId,
) -> Result<Progress, DbError> {
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM sources WHERE export_id = $1")
            .bind(export_id)
            .fetch_all(&mut **transaction)
            .await?;
    let statuses = statuses
        .into_iter()
        .map(|status| {
            status
                .parse::<SourceStatus>()
                .map_err(|_| DbError::Corrupt(status))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let progress = progress(statuses);
    match progress {
        Progress::Waiting => {}
        Progress::AllFailed => {
            let failed = sqlx::query(
                "UPDATE exports SET status = $2, completed_at = now(), updated_at = now() \
                 WHERE id = $1 AND status IN ($3, $4)",
            )
            .bind(export_id)
            .bind(ExportStatus::Failed)
            .bind(ExportStatus::Pending)
            .bind(ExportStatus::Running)
            .execute(&mut **transaction)
            .await?
            .rows_affected();
            if failed > 0 {
                super::completion::record(transaction, export_id).await?;
            }
        }
        Progress::ReadyToPackage => {
            sqlx::query("INSERT INTO package_jobs (export_id) VALUES ($1) ON CONFLICT (export_id) DO NOTHING")
                .bind(export_id)
                .execute(&mut **transaction)
                .await?;
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(PACKAGING_CHANNEL)
                .execute(&mut **transaction)
                .await?;
        }
    }
    Ok(progress)
}
