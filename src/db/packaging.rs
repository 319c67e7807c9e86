//! Packaging jobs: one per export, claimed by one worker at a time with `SKIP LOCKED` and a
//! lease (a worker that dies leaves the job to be re-driven when the lease ends).

use std::time::Duration;

use sqlx::PgPool;

use super::DbError;
use crate::domain::{Archive, ExportId, ExportStatus};

/// A claimed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The export to package.
    pub export_id: ExportId,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// How long ago the job was created (when the export's last source answered).
    pub age: Duration,
}

/// Packaging job operations.
#[derive(Debug, Clone)]
pub struct JobRepository {
    pool: PgPool,
}

impl JobRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Claims the oldest due job for `lease`.
    pub async fn claim(&self, lease: Duration) -> Result<Option<ClaimedJob>, DbError> {
        let claimed: Option<(ExportId, i32, f64)> = sqlx::query_as(
            "UPDATE package_jobs SET available_at = now() + make_interval(secs => $1), attempts = attempts + 1 \
             WHERE export_id = ( \
                 SELECT export_id FROM package_jobs \
                 WHERE finished_at IS NULL AND available_at <= now() \
                 ORDER BY available_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING export_id, attempts, \
                 extract(epoch FROM now() - created_at)::float8",
        )
        .bind(lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(claimed.map(|(export_id, attempts, age)| ClaimedJob {
            export_id,
            attempts,
            age: Duration::try_from_secs_f64(age).unwrap_or_default(),
        }))
    }

    /// The age of the oldest unfinished job (due, claimed or waiting for a retry).
    pub async fn oldest_waiting_age(&self) -> Result<Option<Duration>, DbError> {
        let age: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - min(created_at))::float8 \
             FROM package_jobs WHERE finished_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(age.map(|age| Duration::try_from_secs_f64(age).unwrap_or_default()))
    }

    /// Extends the lease of a job this worker still holds; `false` when another worker has
    /// re-claimed it (or it is finished).
    pub async fn heartbeat(&self, job: ClaimedJob, lease: Duration) -> Result<bool, DbError> {
        let extended = sqlx::query(
            "UPDATE package_jobs SET available_at = now() + make_interval(secs => $3) \
             WHERE export_id = $1 AND attempts = $2 AND finished_at IS NULL",
        )
        .bind(job.export_id)
        .bind(job.attempts)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(extended > 0)
    }

    /// Records the archive and the export's final status, and closes the job, in one
    /// transaction — only while this worker's claim is the current one. Returns `false`
    /// otherwise (another worker re-claimed the job, or finished it).
    pub async fn finish(
        &self,
        job: ClaimedJob,
        archive: &Archive,
        status: ExportStatus,
    ) -> Result<bool, DbError> {
        let mut transaction = self.pool.begin().await?;
        let closed = sqlx::query(
            "UPDATE package_jobs SET finished_at = now(), last_error = NULL \
             WHERE export_id = $1 AND attempts = $2 AND finished_at IS NULL",
        )
        .bind(job.export_id)
        .bind(job.attempts)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if closed == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE exports SET status = $2, completed_at = now(), updated_at = now(), \
                    archive_key = $3, archive_bytes = $4, archive_sha256 = $5 \
             WHERE id = $1",
        )
        .bind(job.export_id)
        .bind(status)
        .bind(&archive.key)
        .bind(i64::try_from(archive.bytes).unwrap_or(i64::MAX))
        .bind(&archive.sha256)
        .execute(&mut *transaction)
        .await?;
        super::completion::record(&mut transaction, job.export_id).await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// Closes a job whose export no longer exists or needs no archive.
    pub async fn abandon(&self, export_id: ExportId, reason: &str) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE package_jobs SET finished_at = now(), last_error = $2 WHERE export_id = $1",
        )
        .bind(export_id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives up on a job that cannot succeed: the export fails (so it does not hang) and the
    /// job closes with the reason — only while this worker's claim is the current one (a
    /// worker whose claim lapsed must not fail a job another worker is building).
    pub async fn give_up(&self, job: ClaimedJob, error: &str) -> Result<(), DbError> {
        let mut transaction = self.pool.begin().await?;
        let closed = sqlx::query(
            "UPDATE package_jobs SET finished_at = now(), last_error = $3 \
             WHERE export_id = $1 AND attempts = $2 AND finished_at IS NULL",
        )
        .bind(job.export_id)
        .bind(job.attempts)
        .bind(error)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if closed == 0 {
            return Ok(());
        }
        let export_id = job.export_id;
        let failed = sqlx::query(
            "UPDATE exports SET status = $2, completed_at = now(), updated_at = now() \
             WHERE id = $1 AND status IN ($3, $4)",
        )
        .bind(export_id)
        .bind(ExportStatus::Failed)
        .bind(ExportStatus::Pending)
        .bind(ExportStatus::Running)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if failed > 0 {
            super::completion::record(&mut transaction, export_id).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Makes a failed job due again after `delay` — only while this worker's claim is the
    /// current one (a lapsed claim must not move another worker's).
    pub async fn retry_later(
        &self,
        job: ClaimedJob,
        delay: Duration,
        error: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE package_jobs SET available_at = now() + make_interval(secs => $2), last_error = $3 \
             WHERE export_id = $1 AND attempts = $4 AND finished_at IS NULL",
        )
        .bind(job.export_id)
        .bind(delay.as_secs_f64())
        .bind(error)
        .bind(job.attempts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
