//! The `export-service` command line: `serve` runs the service, `migrate` applies database
//! migrations.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use export_service::config::Config;
use export_service::server::{BoundService, shutdown_signal};
use export_service::storage::{KeyLayout, ObjectStore};
use export_service::worker::cleaner::Cleaner;
use export_service::{db, telemetry};

/// Export service: request, track and download archives of tenant data.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML file of settings (keys are the environment variable names); the environment
    /// overrides it. Also read from EXPORT_SERVICE_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every listener and background worker until SIGTERM or SIGINT.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// One cleaning pass (for a CronJob): delete expired exports and their objects, fail
    /// sources that never answered, finish deferred object deletions.
    Clean,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("export-service: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_filter, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("export-service: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(&config).await,
            Command::Clean => clean(&config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "export-service failed");
            eprintln!("export-service: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database);
    if config.database.migrate_on_start {
        migrate_with_retry(&pool).await?;
    }
    BoundService::bind(config, pool)
        .await?
        .run(shutdown_signal())
        .await?;
    tracing::info!("export-service stopped");
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database);
    migrate_with_retry(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn clean(config: &Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database);
    migrate_with_retry(&pool).await?;
    let store = ObjectStore::from_config(&config.store, &config.layout)
        .await
        .context("connecting to the object store")?;
    let keys = KeyLayout::new(&config.layout.source_key_template);
    let report = Cleaner::new(pool, store, keys, config.data_path.clone())
        .run_once()
        .await
        .context("cleaning")?;
    tracing::info!(
        expired = report.expired,
        timed_out = report.timed_out,
        prefixes_deleted = report.prefixes_deleted,
        prefixes_deferred = report.prefixes_deferred,
        "cleaning pass done"
    );
    Ok(())
}

/// Applies migrations, retrying for about 30 s while the database is unreachable (it may still
/// be starting next to us), then failing loudly.
async fn migrate_with_retry(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(250);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match db::migrate(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_),
            )) if attempts < 8 => {
                tracing::warn!(
                    attempt = attempts,
                    "database unreachable; retrying migrations"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
            Err(error) => return Err(error).context("applying database migrations"),
        }
    }
}
