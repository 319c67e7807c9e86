//! PostgreSQL access: the connection pool, migrations and one repository per aggregate.

pub mod artefacts;
pub mod audit;
pub mod canaries;
pub mod cleanup;
mod columns;
mod completion;
pub mod exports;
pub mod outbox;
pub mod packaging;
pub mod plugins;
pub mod sources;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

pub use audit::AuditRepository;
pub use cleanup::CleanupRepository;
pub use exports::ExportRepository;
pub use outbox::OutboxRepository;
pub use packaging::JobRepository;
pub use sources::SourceRepository;

/// The migrations under `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A database failure, classified so the edge can answer 503 (retry) or 500.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached or no connection was free in time: worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database error.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
    /// A stored value is not one the service knows (e.g. a status written by something else).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable(error)
            }
            other => Self::Other(other),
        }
    }
}

/// Opens a connection pool. Connections are made lazily, so the service starts (and reports
/// not-ready) while the database is still coming up.
pub fn connect(config: &DatabaseConfig) -> PgPool {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(config.connect_options.clone())
}

/// Applies every pending migration. Safe to run from several replicas at once: sqlx serialises
/// them with an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether the database answers a trivial query within `timeout`.
pub async fn is_reachable(pool: &PgPool, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await,
        Ok(Ok(_))
    )
}
