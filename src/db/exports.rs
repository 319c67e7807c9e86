//! Storing and reading exports and their sources. Every tenant-facing read is scoped by owner.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::DbError;
use crate::domain::audit::AuditRecord;
use crate::domain::idempotency::{IdempotencyKey, KEY_LIFETIME};
use crate::domain::listing::{Direction, ListFilters, ListQuery, SortKey};
use crate::domain::outbox::{CancelledSource, OutboxEvent, Withdrawal};
use crate::domain::quota::{self, QuotaExceeded, Quotas, SOURCE_WINDOW, Usage};
use crate::domain::{
    Application, Archive, BindingScope, Delivery, Export, ExportId, ExportStatus, ExportSummary,
    NewExport, Owner, PluginStamp, RefusedUpload, Resource, Source, SourceId, SourceStatus,
};

const EXPORT_COLUMNS: &str = "e.id, e.org_id, e.account_id, e.identity_type, e.username, \
     e.name, e.format, \
     e.status, e.request_id, e.created_at, e.completed_at, e.expires_at, \
     e.archive_key, e.archive_bytes, e.archive_sha256, \
     (SELECT j.last_error FROM package_jobs j \
       WHERE j.export_id = e.id AND j.finished_at IS NOT NULL) AS packaging_error";

/// How many sources a listed export has, and how many have answered (only the page's rows
/// are counted: the planner evaluates these after the sort and limit).
const SOURCE_TALLY: &str = "(SELECT count(*) FROM sources s WHERE s.export_id = e.id) AS sources_total, \
     (SELECT count(*) FROM sources s WHERE s.export_id = e.id AND s.status <> 'pending') AS sources_answered";

/// Exports and sources in PostgreSQL.
#[derive(Debug, Clone)]
pub struct ExportRepository {
    pool: PgPool,
}

/// One page of a list, with the number of exports matching the filters.
#[derive(Debug)]
pub struct ExportPage {
    /// The exports on this page.
    pub exports: Vec<ListedExport>,
    /// How many exports match, over all pages.
    pub count: i64,
}

/// A pending source of an export being deleted: id, application, resource.
type PendingRow = (Uuid, String, String);

/// An export on a list page, with its progress.
#[derive(Debug)]
pub struct ListedExport {
    /// The export.
    pub summary: ExportSummary,
    /// How many sources it has.
    pub sources_total: usize,
    /// How many of them have answered (delivered or failed).
    pub sources_answered: usize,
}

/// What storing an export under an idempotency key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedInsert {
    /// The key was new (or past its lifetime): the export is stored.
    Stored,
    /// The key created an export earlier; nothing was stored.
    Replay {
        /// The fingerprint of the request that created it.
        fingerprint: String,
        /// The answer that request got (JSON).
        response: String,
    },
}

impl ExportRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores a new export, its sources and the events announcing them in one transaction,
    /// then wakes the outbox relays — unless it would exceed one of its organisation's
    /// `quotas`, checked in the same transaction.
    pub async fn insert(&self, creation: &Creation<'_>) -> Result<(), InsertError> {
        let mut transaction = self.pool.begin().await?;
        insert_export(&mut transaction, creation).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Like [`ExportRepository::insert`], under the owner's idempotency key: stores the export
    /// with the key, its request's `fingerprint` and the `response` it gets, unless the key
    /// already created one within [`KEY_LIFETIME`]; then nothing is stored and that earlier
    /// fingerprint and response are returned. Concurrent requests with one key wait for each
    /// other on the key's row, so exactly one of them creates an export.
    pub async fn insert_keyed(
        &self,
        creation: &Creation<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
        response: &str,
    ) -> Result<KeyedInsert, InsertError> {
        let export = creation.export;
        // A key the cleaner forgets between the two statements below is simply tried again.
        for _ in 0..3 {
            let mut transaction = self.pool.begin().await?;
            let owner = &export.owner;
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (org_id, username, identity_type, account_id, key, \
                 fingerprint, export_id, response, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (org_id, username, identity_type, account_id, key) DO UPDATE \
                 SET fingerprint = EXCLUDED.fingerprint, export_id = EXCLUDED.export_id, \
                     response = EXCLUDED.response, created_at = EXCLUDED.created_at \
                 WHERE idempotency_keys.created_at < EXCLUDED.created_at - make_interval(secs => $10) \
                 RETURNING 1",
            )
            .bind(&owner.org_id)
            .bind(&owner.username)
            .bind(owner.kind.as_str())
            .bind(&owner.account_id)
            .bind(key.as_str())
            .bind(fingerprint)
            .bind(export.id)
            .bind(response)
            .bind(export.created_at)
            .bind(KEY_LIFETIME.as_secs_f64())
            .fetch_optional(&mut *transaction)
            .await?;
            if claimed.is_some() {
                insert_export(&mut transaction, creation).await?;
                transaction.commit().await?;
                return Ok(KeyedInsert::Stored);
            }
            let earlier: Option<(String, String)> = sqlx::query_as(
                "SELECT fingerprint, response FROM idempotency_keys \
                 WHERE org_id = $1 AND username = $2 AND identity_type = $3 AND account_id = $4 \
                   AND key = $5",
            )
            .bind(&owner.org_id)
            .bind(&owner.username)
            .bind(owner.kind.as_str())
            .bind(&owner.account_id)
            .bind(key.as_str())
            .fetch_optional(&mut *transaction)
            .await?;
            if let Some((fingerprint, response)) = earlier {
                return Ok(KeyedInsert::Replay {
                    fingerprint,
                    response,
                });
            }
        }
        Err(DbError::Corrupt(format!(
            "idempotency key '{key}' neither stored nor found after three attempts"
        ))
        .into())
    }

    /// The export `id` with its sources, if `owner` may see it.
    pub async fn find_owned(&self, owner: &Owner, id: ExportId) -> Result<Option<Export>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {EXPORT_COLUMNS} FROM exports e \
             WHERE e.id = $1 AND e.org_id = $2 AND e.username = $3 AND e.identity_type = $4 \
               AND ($5 = '' OR e.account_id = $5)"
        ))
        .bind(id)
        .bind(&owner.org_id)
        .bind(&owner.username)
        .bind(owner.kind.as_str())
        .bind(&owner.account_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sources = self.sources_of(id).await?;
        export_from_row(&row, sources).map(Some)
    }

    /// The export `id` with its sources, whoever owns it (for the packaging worker).
    pub async fn find(&self, id: ExportId) -> Result<Option<Export>, DbError> {
        let mut connection = self.pool.acquire().await?;
        find_in(&mut connection, id).await
    }

    async fn sources_of(&self, export_id: ExportId) -> Result<Vec<Source>, DbError> {
        let mut connection = self.pool.acquire().await?;
        sources_in(&mut connection, export_id).await
    }

    /// One page of `owner`'s exports matching `query`, and the total number that match.
    pub async fn list_owned(
        &self,
        owner: &Owner,
        query: &ListQuery,
    ) -> Result<ExportPage, DbError> {
        let mut select = QueryBuilder::new(format!(
            "SELECT {EXPORT_COLUMNS}, {SOURCE_TALLY} FROM exports e"
        ));
        push_conditions(&mut select, owner, query);
        let direction = match query.direction {
            Direction::Asc => "ASC",
            Direction::Desc => "DESC",
        };
        let sort_expression = match query.sort {
            SortKey::Name => "e.name",
            SortKey::CreatedAt => "e.created_at",
            SortKey::ExpiresAt => "e.expires_at",
            SortKey::Application => {
                "(SELECT min(s.application) FROM sources s WHERE s.export_id = e.id)"
            }
            SortKey::Resource => "(SELECT min(s.resource) FROM sources s WHERE s.export_id = e.id)",
        };
        select.push(format_args!(
            " ORDER BY {sort_expression} {direction}, e.id {direction} LIMIT "
        ));
        select.push_bind(query.limit);
        select.push(" OFFSET ");
        select.push_bind(query.offset);
        let exports = select
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(listed_from_row)
            .collect::<Result<Vec<_>, _>>()?;

        let mut count = if query.filters == ListFilters::default() {
            // Kept by triggers (migration 0007): no scan of the owner's exports.
            let mut count = QueryBuilder::new(
                "SELECT coalesce(sum(e.exports), 0)::bigint FROM export_counts e",
            );
            push_owner(&mut count, owner);
            count
        } else {
            let mut count = QueryBuilder::new("SELECT count(*) FROM exports e");
            push_conditions(&mut count, owner, query);
            count
        };
        let count: i64 = count.build().fetch_one(&self.pool).await?.try_get(0)?;
        Ok(ExportPage { exports, count })
    }

    /// Deletes the export `id` (its sources and job cascade) if `owner` may see it, and
    /// queues the deletion of its objects under `object_prefix` and appends `audit` in the
    /// same transaction. Of its
    /// pending sources, a request no relay has touched yet is withdrawn from the outbox; every
    /// other gets the event `cancel` builds, written in the same transaction. `None` when there
    /// was no such export.
    pub async fn delete_owned(
        &self,
        owner: &Owner,
        id: ExportId,
        object_prefix: &str,
        cancel: impl Fn(&CancelledSource) -> OutboxEvent,
        audit: &AuditRecord,
    ) -> Result<Option<Withdrawal>, DbError> {
        let mut transaction = self.pool.begin().await?;
        // The export's row lock first: uploads, error reports and timeouts settle sources under
        // it, so the pending sources read next are the ones still pending at the delete.
        let owned: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM exports WHERE id = $1 AND org_id = $2 AND username = $3 \
             AND identity_type = $4 AND ($5 = '' OR account_id = $5) FOR UPDATE",
        )
        .bind(id)
        .bind(&owner.org_id)
        .bind(&owner.username)
        .bind(owner.kind.as_str())
        .bind(&owner.account_id)
        .fetch_optional(&mut *transaction)
        .await?;
        if owned.is_none() {
            return Ok(None);
        }
        let rows: Vec<PendingRow> = sqlx::query_as(
            "SELECT id, application, resource FROM sources \
             WHERE export_id = $1 AND status = $2 ORDER BY position",
        )
        .bind(id)
        .bind(SourceStatus::Pending)
        .fetch_all(&mut *transaction)
        .await?;
        sqlx::query("DELETE FROM exports WHERE id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        // A relay that claimed a request first has raised its attempts, and the delete then
        // leaves it (and sends a cancel after it).
        let withdrawn: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM outbox WHERE export_id = $1 AND kind = 'request' \
               AND sent_at IS NULL AND attempts = 0 RETURNING source_id",
        )
        .bind(id)
        .fetch_all(&mut *transaction)
        .await?;
        let events: Vec<OutboxEvent> = rows
            .into_iter()
            .map(|(source_id, application, resource)| CancelledSource {
                export_id: id,
                source_id: SourceId::from(source_id),
                application: Application::from(application),
                resource: Resource::from(resource),
            })
            .filter(|source| !withdrawn.contains(&source.source_id.as_uuid()))
            .map(|source| cancel(&source))
            .collect();
        super::outbox::insert(&mut transaction, &events).await?;
        super::cleanup::queue_deletion(&mut transaction, object_prefix).await?;
        super::audit::append_in(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(Some(Withdrawal {
            withdrawn: withdrawn.len(),
            cancelled: events.len(),
        }))
    }
}

/// The export `id` with its sources, read on `connection` (a transaction sees its own writes).
pub(super) async fn find_in(
    connection: &mut PgConnection,
    id: ExportId,
) -> Result<Option<Export>, DbError> {
    let row = sqlx::query(&format!(
        "SELECT {EXPORT_COLUMNS} FROM exports e WHERE e.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let sources = sources_in(connection, id).await?;
    export_from_row(&row, sources).map(Some)
}

async fn sources_in(
    connection: &mut PgConnection,
    export_id: ExportId,
) -> Result<Vec<Source>, DbError> {
    sqlx::query(
        "SELECT id, application, resource, filters::text AS filters, status, code, message, \
                object_key, sha256, bytes, rows, plugin_name, plugin_version, plugin_digest, \
                plugin_scope, last_error_code, last_error_message, last_error_at \
         FROM sources WHERE export_id = $1 ORDER BY position",
    )
    .bind(export_id)
    .fetch_all(connection)
    .await?
    .iter()
    .map(source_from_row)
    .collect()
}

/// `WHERE` the owner's rows (of `exports e` or `export_counts e`).
fn push_owner(builder: &mut QueryBuilder<'_, Postgres>, owner: &Owner) {
    builder.push(" WHERE e.org_id = ");
    builder.push_bind(owner.org_id.clone());
    builder.push(" AND e.username = ");
    builder.push_bind(owner.username.clone());
    builder.push(" AND e.identity_type = ");
    builder.push_bind(owner.kind.as_str());
    if !owner.account_id.is_empty() {
        builder.push(" AND e.account_id = ");
        builder.push_bind(owner.account_id.clone());
    }
}

fn push_conditions(builder: &mut QueryBuilder<'_, Postgres>, owner: &Owner, query: &ListQuery) {
    push_owner(builder, owner);
    let filters = &query.filters;
    if let Some(name) = &filters.name {
        builder.push(" AND e.name = ");
        builder.push_bind(name.clone());
    }
    if let Some(status) = filters.status {
        builder.push(" AND e.status = ");
        builder.push_bind(status);
    }
    for (column, window) in [
        ("e.created_at", filters.created_at),
        ("e.expires_at", filters.expires_at),
    ] {
        if let Some(window) = window {
            builder.push(format_args!(" AND {column} BETWEEN "));
            builder.push_bind(window.start);
            builder.push(" AND ");
            builder.push_bind(window.end());
        }
    }
    // One source must match both filters when both are given; EXISTS keeps each export once.
    if filters.application.is_some() || filters.resource.is_some() {
        builder.push(" AND EXISTS (SELECT 1 FROM sources s WHERE s.export_id = e.id");
        if let Some(application) = &filters.application {
            builder.push(" AND s.application = ");
            builder.push_bind(application.clone());
        }
        if let Some(resource) = &filters.resource {
            builder.push(" AND s.resource = ");
            builder.push_bind(resource.clone());
        }
        builder.push(")");
    }
}

fn parse_column<T: std::str::FromStr>(row: &PgRow, column: &str) -> Result<T, DbError> {
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|_| DbError::Corrupt(format!("unexpected {column} '{text}'")))
}

fn summary_from_row(row: &PgRow) -> Result<ExportSummary, DbError> {
    Ok(ExportSummary {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        format: parse_column(row, "format")?,
        status: parse_column(row, "status")?,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get::<Option<DateTime<Utc>>, _>("completed_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn listed_from_row(row: &PgRow) -> Result<ListedExport, DbError> {
    let count = |column: &str| -> Result<usize, DbError> {
        let count: i64 = row.try_get(column)?;
        usize::try_from(count).map_err(|_| DbError::Corrupt(format!("{column} {count}")))
    };
    Ok(ListedExport {
        summary: summary_from_row(row)?,
        sources_total: count("sources_total")?,
        sources_answered: count("sources_answered")?,
    })
}

fn export_from_row(row: &PgRow, sources: Vec<Source>) -> Result<Export, DbError> {
    let summary = summary_from_row(row)?;
    Ok(Export {
        id: summary.id,
        owner: Owner {
            org_id: row.try_get("org_id")?,
            account_id: row.try_get("account_id")?,
            kind: parse_column(row, "identity_type")?,
            username: row.try_get("username")?,
        },
        name: summary.name,
        format: summary.format,
        status: summary.status,
        request_id: row.try_get("request_id")?,
        created_at: summary.created_at,
        completed_at: summary.completed_at,
        expires_at: summary.expires_at,
        sources,
        archive: archive_from_row(row)?,
        failure: row.try_get("packaging_error")?,
    })
}

fn archive_from_row(row: &PgRow) -> Result<Option<Archive>, DbError> {
    let key: Option<String> = row.try_get("archive_key")?;
    let bytes: Option<i64> = row.try_get("archive_bytes")?;
    let sha256: Option<String> = row.try_get("archive_sha256")?;
    Ok(match (key, bytes, sha256) {
        (Some(key), Some(bytes), Some(sha256)) => Some(Archive {
            key,
            bytes: u64::try_from(bytes).unwrap_or_default(),
            sha256,
        }),
        _ => None,
    })
}

fn source_from_row(row: &PgRow) -> Result<Source, DbError> {
    let filters = row
        .try_get::<Option<String>, _>("filters")?
        .map(RawValue::from_string)
        .transpose()
        .map_err(|error| DbError::Corrupt(format!("filters are not JSON: {error}")))?;
    Ok(Source {
        id: row.try_get("id")?,
        application: row.try_get("application")?,
        resource: row.try_get("resource")?,
        filters,
        status: parse_column(row, "status")?,
        code: row.try_get("code")?,
        message: row.try_get("message")?,
        delivery: delivery_from_row(row)?,
        last_error: refused_from_row(row)?,
    })
}

fn refused_from_row(row: &PgRow) -> Result<Option<RefusedUpload>, DbError> {
    let code: Option<i32> = row.try_get("last_error_code")?;
    let message: Option<String> = row.try_get("last_error_message")?;
    let at: Option<DateTime<Utc>> = row.try_get("last_error_at")?;
    Ok(match (code, message, at) {
        (Some(code), Some(message), Some(at)) => Some(RefusedUpload {
            code: u16::try_from(code).map_err(|_| DbError::Corrupt(format!("status {code}")))?,
            message,
            at,
        }),
        _ => None,
    })
}

fn delivery_from_row(row: &PgRow) -> Result<Option<Delivery>, DbError> {
    let key: Option<String> = row.try_get("object_key")?;
    let sha256: Option<String> = row.try_get("sha256")?;
    let bytes: Option<i64> = row.try_get("bytes")?;
    let rows: Option<i64> = row.try_get("rows")?;
    Ok(match (key, sha256, bytes) {
        (Some(object_key), Some(sha256), Some(bytes)) => Some(Delivery {
            object_key,
            sha256,
            bytes: u64::try_from(bytes).unwrap_or_default(),
            rows: rows.and_then(|rows| u64::try_from(rows).ok()),
            plugin: match (
                row.try_get::<Option<String>, _>("plugin_name")?,
                row.try_get::<Option<String>, _>("plugin_version")?,
                row.try_get::<Option<String>, _>("plugin_digest")?,
            ) {
                (Some(name), Some(version), Some(digest)) => Some(PluginStamp {
                    name,
                    version,
                    digest,
                    scope: row
                        .try_get::<Option<String>, _>("plugin_scope")?
                        .as_deref()
                        .and_then(BindingScope::parse),
                }),
                _ => None,
            },
        }),
        _ => None,
    })
}

/// Stores a new export, its sources and its outbox events in `transaction`.
/// A new export to store: the export, the events announcing it, the quotas it must fit and
/// its audit record, all written in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Creation<'a> {
    /// The export with its sources.
    pub export: &'a NewExport,
    /// One request event per source.
    pub events: &'a [OutboxEvent],
    /// The organisation's quotas.
    pub quotas: &'a Quotas,
    /// The record of the create in the audit trail.
    pub audit: &'a AuditRecord,
}

/// Why a new export was not stored.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// It would exceed a quota of its organisation.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for InsertError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.into())
    }
}

/// Checks the organisation's quotas and records the sources requested, with the
/// organisation's creates serialised by a transaction-scoped advisory lock (two concurrent
/// creates must not both fit under the last unit of a quota).
async fn claim_quota(
    transaction: &mut Transaction<'_, Postgres>,
    export: &NewExport,
    quotas: &Quotas,
) -> Result<(), InsertError> {
    if !quotas.any() {
        return Ok(());
    }
    let org_id = export.owner.org_id.as_str();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('export-quota:' || $1, 0))")
        .bind(org_id)
        .execute(&mut **transaction)
        .await?;
    let window = SOURCE_WINDOW.as_secs_f64();
    sqlx::query(
        "DELETE FROM source_requests WHERE org_id = $1 \
           AND requested_at < now() - make_interval(secs => $2)",
    )
    .bind(org_id)
    .bind(window)
    .execute(&mut **transaction)
    .await?;
    let (active, recent, oldest, stored): (i64, i64, Option<f64>, i64) = sqlx::query_as(
        "SELECT \
           (SELECT count(*) FROM exports WHERE org_id = $1 AND status IN ('pending', 'running')), \
           (SELECT coalesce(sum(sources), 0)::bigint FROM source_requests WHERE org_id = $1), \
           (SELECT extract(epoch FROM now() - min(requested_at))::float8 \
              FROM source_requests WHERE org_id = $1), \
           (SELECT coalesce(sum(archive_bytes), 0)::bigint FROM exports WHERE org_id = $1) \
           + (SELECT coalesce(sum(s.bytes), 0)::bigint FROM sources s \
                JOIN exports e ON e.id = s.export_id WHERE e.org_id = $1)",
    )
    .bind(org_id)
    .fetch_one(&mut **transaction)
    .await?;
    let count = |value: i64| u64::try_from(value).unwrap_or_default();
    let usage = Usage {
        active_exports: count(active),
        recent_sources: count(recent),
        oldest_recent: oldest.and_then(|secs| Duration::try_from_secs_f64(secs).ok()),
        stored_bytes: count(stored),
    };
    let sources = export.sources.len() as u64;
    quota::check(quotas, &usage, sources)?;
    sqlx::query("INSERT INTO source_requests (org_id, sources) VALUES ($1, $2)")
        .bind(org_id)
        .bind(i32::try_from(sources).unwrap_or(i32::MAX))
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

async fn insert_export(
    transaction: &mut Transaction<'_, Postgres>,
    creation: &Creation<'_>,
) -> Result<(), InsertError> {
    let export = creation.export;
    claim_quota(transaction, export, creation.quotas).await?;
    super::audit::append_in(transaction, creation.audit).await?;
    sqlx::query(
        "INSERT INTO exports (id, org_id, account_id, identity_type, username, name, format, \
             status, request_id, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $11, $8, $9, $9, $10)",
    )
    .bind(export.id)
    .bind(&export.owner.org_id)
    .bind(&export.owner.account_id)
    .bind(export.owner.kind.as_str())
    .bind(&export.owner.username)
    .bind(&export.name)
    .bind(export.format)
    .bind(&export.request_id)
    .bind(export.created_at)
    .bind(export.expires_at)
    .bind(ExportStatus::Pending)
    .execute(&mut **transaction)
    .await?;

    let ids: Vec<Uuid> = export
        .sources
        .iter()
        .map(|source| source.id.as_uuid())
        .collect();
    let positions: Vec<i32> = (0..).take(export.sources.len()).collect();
    let applications: Vec<&str> = export
        .sources
        .iter()
        .map(|source| source.application.as_str())
        .collect();
    let resources: Vec<&str> = export
        .sources
        .iter()
        .map(|source| source.resource.as_str())
        .collect();
    let filters: Vec<Option<&str>> = export
        .sources
        .iter()
        .map(|source| source.filters.as_deref().map(RawValue::get))
        .collect();
    sqlx::query(
        "INSERT INTO sources (id, export_id, position, application, resource, filters, updated_at) \
             SELECT id, $1, position, application, resource, filters::json, $7 \
             FROM UNNEST($2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[]) \
                  AS s(id, position, application, resource, filters)",
    )
    .bind(export.id)
    .bind(&ids)
    .bind(&positions)
    .bind(&applications)
    .bind(&resources)
    .bind(&filters)
    .bind(export.created_at)
    .execute(&mut **transaction)
    .await?;
    super::outbox::insert(transaction, creation.events).await?;
    Ok(())
}
