//! Canary rollouts' records: the running canary per application and resource, its audience and
//! policy, the outcomes replicas add to it, and how it ended. Starting and ending one writes the
//! binding history and notifies every replica in the same transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row, postgres::PgRow};

use super::DbError;
use super::plugins::{BindingAction, NewBinding, lock_registry, record_binding};
use crate::domain::canary::{CanaryAudience, CanaryCounts, CanaryPolicy};
use crate::domain::{Application, BindingKey, OrgId, Resource};

/// One canary, running or ended.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CanaryRecord {
    /// Its id.
    pub id: i64,
    /// The application.
    #[schema(value_type = String)]
    pub application: Application,
    /// The resource (`*` = every resource of the application).
    #[schema(value_type = String)]
    pub resource: Resource,
    /// The canary's plugin.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The version's digest (absent if the version was deleted since).
    pub digest: Option<String>,
    /// The canary's configuration.
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// Percentage of organisations it takes (by a stable hash of `org_id`).
    pub share_percent: u8,
    /// Organisations it takes whatever their hash.
    pub org_ids: Vec<String>,
    /// How much its failure rate may exceed the stable version's before it is rolled back.
    pub max_failure_rate: f64,
    /// Uploads it must process before it is judged.
    pub min_uploads: u64,
    /// Uploads the canary processed.
    pub canary_uploads: u64,
    /// Of those, where the plugin failed (traps, deadlines, memory, output limits).
    pub canary_failures: u64,
    /// Uploads the stable binding processed meanwhile.
    pub stable_uploads: u64,
    /// Of those, where the plugin failed.
    pub stable_failures: u64,
    /// `running`, `promoted`, `aborted` or `rolled-back`.
    pub state: String,
    /// Why it was rolled back automatically.
    pub reason: Option<String>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// Who started it.
    pub created_by: String,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Who ended it (`export-service` for an automatic rollback).
    pub ended_by: Option<String>,
    /// Where the version's bytes are.
    #[serde(skip)]
    pub object_key: Option<String>,
}

impl CanaryRecord {
    /// Whom it takes.
    pub fn audience(&self) -> CanaryAudience {
        CanaryAudience {
            share_percent: self.share_percent,
            org_ids: self
                .org_ids
                .iter()
                .map(|org| OrgId::from(org.as_str()))
                .collect(),
        }
    }

    /// When it is rolled back by itself.
    pub fn policy(&self) -> CanaryPolicy {
        CanaryPolicy {
            max_failure_rate: self.max_failure_rate,
            min_uploads: self.min_uploads,
        }
    }

    /// What it and the stable binding did.
    pub fn counts(&self) -> CanaryCounts {
        CanaryCounts {
            canary_uploads: self.canary_uploads,
            canary_failures: self.canary_failures,
            stable_uploads: self.stable_uploads,
            stable_failures: self.stable_failures,
        }
    }

    /// The binding it canaries (every organisation's).
    pub fn key(&self) -> BindingKey {
        BindingKey::new(self.application.clone(), self.resource.clone(), None)
    }
}

/// A canary to start.
#[derive(Debug, Clone)]
pub struct NewCanary<'a> {
    /// The binding it canaries (`org` must be `None`).
    pub key: &'a BindingKey,
    /// Plugin name and version.
    pub plugin: (&'a str, &'a str),
    /// Its configuration.
    pub config: Option<&'a serde_json::Value>,
    /// Whom it takes.
    pub audience: &'a CanaryAudience,
    /// When it is rolled back by itself.
    pub policy: CanaryPolicy,
    /// Who starts it.
    pub by: &'a str,
}

/// What starting a canary did.
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryStarted {
    /// It runs.
    Started(Box<CanaryRecord>),
    /// The plugin has no such version.
    UnknownVersion,
    /// Another canary runs there.
    AlreadyRunning(Box<CanaryRecord>),
}

/// How a canary ends.
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryEnd {
    /// Its version and configuration become the binding.
    Promote,
    /// An operator stops it; the binding stays.
    Abort,
    /// The service stops it, for this reason; the binding stays.
    AutoRollback(String),
}

impl CanaryEnd {
    fn state(&self) -> &'static str {
        match self {
            Self::Promote => "promoted",
            Self::Abort => "aborted",
            Self::AutoRollback(_) => "rolled-back",
        }
    }

    fn action(&self) -> BindingAction {
        match self {
            Self::Promote => BindingAction::Promote,
            Self::Abort => BindingAction::Abort,
            Self::AutoRollback(_) => BindingAction::AutoRollback,
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Self::AutoRollback(reason) => Some(reason),
            _ => None,
        }
    }
}

const CANARY_COLUMNS: &str = "c.id, c.application, c.resource, c.plugin_name, c.plugin_version, \
     c.config, c.share_percent, c.org_ids, c.max_failure_rate, c.min_uploads, c.canary_uploads, \
     c.canary_failures, c.stable_uploads, c.stable_failures, c.state, c.reason, c.created_at, \
     c.created_by, c.ended_at, c.ended_by, v.digest, v.object_key";

/// The canaries' table.
#[derive(Debug, Clone)]
pub struct CanaryRepository {
    pool: PgPool,
}

impl CanaryRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Starts a canary unless one runs at the same application and resource.
    pub async fn start(&self, canary: &NewCanary<'_>) -> Result<CanaryStarted, DbError> {
        let mut transaction = self.pool.begin().await?;
        lock_registry(&mut transaction).await?;
        if let Some(running) = select_running(&mut transaction, canary.key).await? {
            return Ok(CanaryStarted::AlreadyRunning(Box::new(running)));
        }
        let recorded = record_binding(
            &mut transaction,
            &NewBinding {
                key: canary.key,
                action: BindingAction::Canary,
                plugin: Some(canary.plugin),
                config: canary.config,
                reason: None,
                by: canary.by,
            },
        )
        .await?;
        if recorded == super::plugins::BindOutcome::UnknownVersion {
            return Ok(CanaryStarted::UnknownVersion);
        }
        let org_ids: Vec<&str> = canary.audience.org_ids.iter().map(OrgId::as_str).collect();
        sqlx::query(
            "INSERT INTO plugin_canaries (application, resource, plugin_name, plugin_version, \
                 config, share_percent, org_ids, max_failure_rate, min_uploads, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(canary.key.application.as_str())
        .bind(canary.key.resource.as_str())
        .bind(canary.plugin.0)
        .bind(canary.plugin.1)
        .bind(canary.config)
        .bind(i16::from(canary.audience.share_percent))
        .bind(&org_ids)
        .bind(canary.policy.max_failure_rate)
        .bind(i64::try_from(canary.policy.min_uploads).unwrap_or(i64::MAX))
        .bind(canary.by)
        .execute(&mut *transaction)
        .await?;
        let started = select_running(&mut transaction, canary.key)
            .await?
            .ok_or_else(|| DbError::Corrupt("a canary vanished as it started".into()))?;
        transaction.commit().await?;
        Ok(CanaryStarted::Started(Box::new(started)))
    }

    /// Every running canary.
    pub async fn running(&self) -> Result<Vec<CanaryRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {CANARY_COLUMNS} FROM plugin_canaries c {VERSION_JOIN} \
             WHERE c.state = 'running' ORDER BY c.application, c.resource"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(canary_from_row).collect()
    }

    /// The canaries of an application (of one resource when given), newest first.
    pub async fn of(
        &self,
        application: &Application,
        resource: Option<&Resource>,
    ) -> Result<Vec<CanaryRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {CANARY_COLUMNS} FROM plugin_canaries c {VERSION_JOIN} \
             WHERE c.application = $1 AND ($2::text IS NULL OR c.resource = $2) \
             ORDER BY c.id DESC LIMIT 100"
        ))
        .bind(application.as_str())
        .bind(resource.map(Resource::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(canary_from_row).collect()
    }

    /// Adds outcomes counted by a replica to a running canary; returns it as it now stands
    /// (`None` when it is no longer running: the outcomes no longer matter).
    pub async fn add_outcomes(
        &self,
        id: i64,
        delta: CanaryCounts,
    ) -> Result<Option<CanaryRecord>, DbError> {
        let count = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        let row = sqlx::query(&format!(
            "WITH c AS (UPDATE plugin_canaries SET \
                 canary_uploads = canary_uploads + $2, canary_failures = canary_failures + $3, \
                 stable_uploads = stable_uploads + $4, stable_failures = stable_failures + $5 \
             WHERE id = $1 AND state = 'running' RETURNING *) \
             SELECT {CANARY_COLUMNS} FROM c {VERSION_JOIN}"
        ))
        .bind(id)
        .bind(count(delta.canary_uploads))
        .bind(count(delta.canary_failures))
        .bind(count(delta.stable_uploads))
        .bind(count(delta.stable_failures))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(canary_from_row).transpose()
    }

    /// Ends the canary running at `key` (`id` when given must be that canary's), recording the
    /// end in the binding history; `None` when no such canary runs.
    pub async fn end(
        &self,
        key: &BindingKey,
        id: Option<i64>,
        end: &CanaryEnd,
        by: &str,
    ) -> Result<Option<CanaryRecord>, DbError> {
        let mut transaction = self.pool.begin().await?;
        lock_registry(&mut transaction).await?;
        let Some(running) = select_running(&mut transaction, key).await? else {
            return Ok(None);
        };
        if id.is_some_and(|id| id != running.id) {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE plugin_canaries SET state = $2, reason = $3, ended_at = now(), ended_by = $4 \
             WHERE id = $1",
        )
        .bind(running.id)
        .bind(end.state())
        .bind(end.reason())
        .bind(by)
        .execute(&mut *transaction)
        .await?;
        record_binding(
            &mut transaction,
            &NewBinding {
                key,
                action: end.action(),
                plugin: Some((&running.plugin, &running.version)),
                config: running.config.as_ref(),
                reason: end.reason(),
                by,
            },
        )
        .await?;
        let ended = sqlx::query(&format!(
            "SELECT {CANARY_COLUMNS} FROM plugin_canaries c {VERSION_JOIN} WHERE c.id = $1"
        ))
        .bind(running.id)
        .fetch_one(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Some(canary_from_row(&ended)?))
    }
}

const VERSION_JOIN: &str = "LEFT JOIN plugin_versions v \
     ON v.name = c.plugin_name AND v.version = c.plugin_version";

async fn select_running(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &BindingKey,
) -> Result<Option<CanaryRecord>, DbError> {
    let row = sqlx::query(&format!(
        "SELECT {CANARY_COLUMNS} FROM plugin_canaries c {VERSION_JOIN} \
         WHERE c.application = $1 AND c.resource = $2 AND c.state = 'running'"
    ))
    .bind(key.application.as_str())
    .bind(key.resource.as_str())
    .fetch_optional(&mut **transaction)
    .await?;
    row.as_ref().map(canary_from_row).transpose()
}

fn canary_from_row(row: &PgRow) -> Result<CanaryRecord, DbError> {
    let count = |name: &str| -> Result<u64, DbError> {
        Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or_default())
    };
    Ok(CanaryRecord {
        id: row.try_get("id")?,
        application: Application::from(row.try_get::<String, _>("application")?),
        resource: Resource::from(row.try_get::<String, _>("resource")?),
        plugin: row.try_get("plugin_name")?,
        version: row.try_get("plugin_version")?,
        digest: row.try_get("digest")?,
        config: row.try_get("config")?,
        share_percent: u8::try_from(row.try_get::<i16, _>("share_percent")?).unwrap_or(0),
        org_ids: row.try_get("org_ids")?,
        max_failure_rate: row.try_get("max_failure_rate")?,
        min_uploads: count("min_uploads")?,
        canary_uploads: count("canary_uploads")?,
        canary_failures: count("canary_failures")?,
        stable_uploads: count("stable_uploads")?,
        stable_failures: count("stable_failures")?,
        state: row.try_get("state")?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        ended_at: row.try_get("ended_at")?,
        ended_by: row.try_get("ended_by")?,
        object_key: row.try_get("object_key")?,
    })
}
