//! Expiry and deferred object deletion. Rows go first (in a transaction that also queues their
//! objects' prefix); objects follow, retried until the store has removed them.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::DbError;
use crate::domain::idempotency::KEY_LIFETIME;
use crate::domain::quota::SOURCE_WINDOW;

/// Queues `prefix` for deletion inside the caller's transaction.
pub(super) async fn queue_deletion(
    transaction: &mut Transaction<'_, Postgres>,
    prefix: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO object_deletions (prefix) VALUES ($1) \
         ON CONFLICT (prefix) DO UPDATE SET available_at = now()",
    )
    .bind(prefix)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Cleaner operations.
#[derive(Debug, Clone)]
pub struct CleanupRepository {
    pool: PgPool,
}

impl CleanupRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Forgets idempotency keys older than [`KEY_LIFETIME`]; returns how many.
    pub async fn forget_idempotency_keys(&self) -> Result<u64, DbError> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(KEY_LIFETIME.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Forgets entries of the sources-per-hour ledger older than its window (an organisation's
    /// creates trim its own; this catches organisations that stopped creating); returns how
    /// many.
    pub async fn trim_source_ledger(&self) -> Result<u64, DbError> {
        let done = sqlx::query(
            "DELETE FROM source_requests WHERE requested_at < now() - make_interval(secs => $1)",
        )
        .bind(SOURCE_WINDOW.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes up to `limit` exports whose `expires_at` is more than `grace` ago, queueing
    /// their objects (prefix from `prefix_of(org_id, export_id)`). Returns the deleted ids.
    pub async fn expire(
        &self,
        grace: Duration,
        limit: i64,
        prefix_of: impl Fn(&str, Uuid) -> String,
    ) -> Result<Vec<Uuid>, DbError> {
        let mut transaction = self.pool.begin().await?;
        let expired: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, org_id FROM exports WHERE expires_at < now() - make_interval(secs => $1) \
             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(grace.as_secs_f64())
        .bind(limit)
        .fetch_all(&mut *transaction)
        .await?;
        for (id, org_id) in &expired {
            queue_deletion(&mut transaction, &prefix_of(org_id, *id)).await?;
        }
        let ids: Vec<Uuid> = expired.into_iter().map(|(id, _)| id).collect();
        sqlx::query("DELETE FROM exports WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *transaction)
            .await?;
        // Requests of an expired export that no relay has touched would ask for data nobody
        // can deliver any more.
        sqlx::query(
            "DELETE FROM outbox WHERE export_id = ANY($1) AND kind = 'request' \
               AND sent_at IS NULL AND attempts = 0",
        )
        .bind(&ids)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(ids)
    }

    /// Claims up to `limit` due prefixes for `lease`.
    pub async fn claim_deletions(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "UPDATE object_deletions SET available_at = now() + make_interval(secs => $2), attempts = attempts + 1 \
             WHERE prefix IN ( \
                 SELECT prefix FROM object_deletions WHERE available_at <= now() \
                 ORDER BY available_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING prefix",
        )
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets a prefix whose objects are gone.
    pub async fn deletion_done(&self, prefix: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM object_deletions WHERE prefix = $1")
            .bind(prefix)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Retries a prefix later.
    pub async fn deletion_failed(
        &self,
        prefix: &str,
        max_delay: Duration,
        error: &str,
    ) -> Result<(), DbError> {
        // Half a second doubling with each attempt, up to `max_delay`.
        sqlx::query(
            "UPDATE object_deletions SET available_at = now() + make_interval(secs => \
                 least($2, 0.5 * power(2, least(greatest(attempts, 1), 30) - 1))), \
                 last_error = $3 \
             WHERE prefix = $1",
        )
        .bind(prefix)
        .bind(max_delay.as_secs_f64())
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
