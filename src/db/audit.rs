//! The audit trail in PostgreSQL: appended in the action's transaction where it has one,
//! queried newest first with keyset pagination, trimmed by age.

use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};

use super::DbError;
use crate::domain::audit::{AuditEntry, AuditQuery, AuditRecord, Outcome, Principal};

/// Appends `record` inside the caller's transaction.
pub(super) async fn append_in(
    transaction: &mut Transaction<'_, Postgres>,
    record: &AuditRecord,
) -> Result<(), DbError> {
    insert(record).execute(&mut **transaction).await?;
    Ok(())
}

fn insert(record: &AuditRecord) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(
        "INSERT INTO audit_events (request_id, security_event, action, resource_type, \
         resource_id, outcome, principal_user_id, principal_org_id, principal_type, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&record.request_id)
    .bind(record.action.is_security_event())
    .bind(record.action.as_str())
    .bind(record.action.resource_type())
    .bind(&record.resource_id)
    .bind(record.outcome.as_str())
    .bind(&record.principal.user_id)
    .bind(&record.principal.org_id)
    .bind(&record.principal.kind)
    .bind(&record.reason)
}

/// The audit trail.
#[derive(Debug, Clone)]
pub struct AuditRepository {
    pool: PgPool,
}

impl AuditRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Appends `record` on its own (an action with no transaction: a read, a refusal).
    pub async fn append(&self, record: &AuditRecord) -> Result<(), DbError> {
        insert(record).execute(&self.pool).await?;
        Ok(())
    }

    /// The page of the trail `query` selects, newest first.
    pub async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, DbError> {
        let mut select = QueryBuilder::new(
            "SELECT id, at, request_id, action, resource_id, outcome, principal_user_id, \
             principal_org_id, principal_type, reason FROM audit_events WHERE true",
        );
        if let Some(org_id) = &query.org_id {
            select.push(" AND principal_org_id = ").push_bind(org_id);
        }
        if let Some(action) = query.action {
            select.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(resource_id) = &query.resource_id {
            select.push(" AND resource_id = ").push_bind(resource_id);
        }
        if let Some(since) = query.since {
            select.push(" AND at >= ").push_bind(since);
        }
        if let Some(until) = query.until {
            select.push(" AND at < ").push_bind(until);
        }
        if let Some(before) = query.before {
            select.push(" AND id < ").push_bind(before);
        }
        select
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(query.limit);
        select
            .build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(entry_from_row)
            .collect()
    }

    /// Removes records older than `retention`; returns how many.
    pub async fn purge(&self, retention: Duration) -> Result<u64, DbError> {
        let done =
            sqlx::query("DELETE FROM audit_events WHERE at < now() - make_interval(secs => $1)")
                .bind(retention.as_secs_f64())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}

fn entry_from_row(row: &PgRow) -> Result<AuditEntry, DbError> {
    let text = |column: &str| -> Result<String, DbError> { Ok(row.try_get(column)?) };
    let action = text("action")?;
    let outcome = match text("outcome")?.as_str() {
        "success" => Outcome::Success,
        "denied" => Outcome::Denied,
        "failure" => Outcome::Failure,
        other => return Err(DbError::Corrupt(format!("audit outcome '{other}'"))),
    };
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        record: AuditRecord {
            action: action.parse().map_err(DbError::Corrupt)?,
            resource_id: text("resource_id")?,
            outcome,
            principal: Principal {
                user_id: text("principal_user_id")?,
                org_id: text("principal_org_id")?,
                kind: text("principal_type")?,
            },
            reason: text("reason")?,
            request_id: text("request_id")?,
        },
    })
}
