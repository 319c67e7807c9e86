//! The transactional outbox: events written with their export, claimed by relays with
//! `FOR UPDATE SKIP LOCKED` and a lease, marked sent only after the broker acknowledged them.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::DbError;
use crate::domain::Application;
use crate::domain::outbox::{EventKind, OutboxEvent};

/// The `LISTEN/NOTIFY` channel that wakes relays when events are written.
pub const OUTBOX_CHANNEL: &str = "export_outbox";

/// An event claimed for publishing.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    /// The event (its id is the CloudEvent id).
    pub event: OutboxEvent,
    /// Publishing attempts so far, this one included.
    pub attempts: i32,
}

/// Unsent events: how many, and how long the oldest has waited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Events not yet acknowledged by the broker.
    pub pending: i64,
    /// Age of the oldest of them, in seconds (0 when there are none).
    pub oldest_age_secs: f64,
}

/// Writes `events` inside the caller's transaction and notifies the relays on commit.
pub(super) async fn insert(
    transaction: &mut Transaction<'_, Postgres>,
    events: &[OutboxEvent],
) -> Result<(), DbError> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
    let kinds: Vec<&str> = events.iter().map(|event| event.kind.as_str()).collect();
    let export_ids: Vec<Uuid> = events
        .iter()
        .map(|event| event.export_id.as_uuid())
        .collect();
    let source_ids: Vec<Option<Uuid>> = events
        .iter()
        .map(|event| event.source_id.map(|id| id.as_uuid()))
        .collect();
    let applications: Vec<Option<&str>> = events
        .iter()
        .map(|event| event.application.as_ref().map(Application::as_str))
        .collect();
    let identities: Vec<Option<&str>> = events
        .iter()
        .map(|event| event.identity.as_deref())
        .collect();
    let payloads: Vec<&str> = events.iter().map(|event| event.payload.as_str()).collect();
    // An export completes once: a second completion (which the status guards already prevent)
    // is dropped by the unique index rather than published twice.
    sqlx::query(
        "INSERT INTO outbox (id, kind, export_id, source_id, application, identity, payload) \
         SELECT id, kind, export_id, source_id, application, identity, payload FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[]) \
         WITH ORDINALITY AS e(id, kind, export_id, source_id, application, identity, payload, n) \
         ORDER BY n \
         ON CONFLICT (export_id) WHERE kind = 'completion' DO NOTHING",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&export_ids)
    .bind(&source_ids)
    .bind(&applications)
    .bind(&identities)
    .bind(&payloads)
    .execute(&mut **transaction)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(OUTBOX_CHANNEL)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

fn parse_kind(text: String) -> Result<EventKind, DbError> {
    text.parse().map_err(|_| DbError::Corrupt(text))
}

/// Outbox operations of the relay.
#[derive(Debug, Clone)]
pub struct OutboxRepository {
    pool: PgPool,
}

impl OutboxRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Claims up to `limit` due events, oldest first, reserving them for `lease`: no other relay
    /// sees them until the lease ends (the claimant died) or they are rescheduled. A cancel waits
    /// until its source's request is sent, so an application never hears the cancel first.
    pub async fn claim_due(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<ClaimedEvent>, DbError> {
        let rows = sqlx::query(
            "WITH due AS ( \
                 SELECT id FROM outbox o \
                 WHERE sent_at IS NULL AND available_at <= now() \
                   AND NOT (o.kind = 'cancel' AND EXISTS ( \
                       SELECT 1 FROM outbox r WHERE r.kind = 'request' \
                         AND r.source_id = o.source_id AND r.sent_at IS NULL)) \
                 ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE outbox o \
             SET available_at = now() + make_interval(secs => $2), attempts = o.attempts + 1 \
             FROM due WHERE o.id = due.id \
             RETURNING o.id, o.seq, o.kind, o.export_id, o.source_id, o.application, o.identity, o.payload, o.attempts",
        )
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64, _>("seq")?,
                    ClaimedEvent {
                        event: OutboxEvent {
                            id: row.try_get("id")?,
                            kind: parse_kind(row.try_get("kind")?)?,
                            export_id: row.try_get("export_id")?,
                            source_id: row.try_get("source_id")?,
                            application: row
                                .try_get::<Option<String>, _>("application")?
                                .map(Application::from),
                            identity: row.try_get("identity")?,
                            payload: row.try_get("payload")?,
                        },
                        attempts: row.try_get("attempts")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        claimed.sort_by_key(|(seq, _)| *seq);
        Ok(claimed.into_iter().map(|(_, event)| event).collect())
    }

    /// Marks events acknowledged by the broker.
    pub async fn mark_sent(&self, ids: &[Uuid]) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE outbox SET sent_at = now(), last_error = NULL WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Makes a failed event due again after `delay`, remembering why it failed.
    pub async fn reschedule(&self, id: Uuid, delay: Duration, error: &str) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE outbox SET available_at = now() + make_interval(secs => $2), last_error = $3 \
             WHERE id = $1 AND sent_at IS NULL",
        )
        .bind(id)
        .bind(delay.as_secs_f64())
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many events wait, and for how long the oldest has.
    pub async fn backlog(&self) -> Result<Backlog, DbError> {
        let row = sqlx::query(
            "SELECT count(*) AS pending, \
                    COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) AS oldest \
             FROM outbox WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            pending: row.try_get("pending")?,
            oldest_age_secs: row.try_get("oldest")?,
        })
    }

    /// Deletes events sent more than `older_than` ago; returns how many.
    pub async fn purge_sent(&self, older_than: Duration) -> Result<u64, DbError> {
        let result =
            sqlx::query("DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)")
                .bind(older_than.as_secs_f64())
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected())
    }
}
