//! The `export-service` command line: `serve` runs the service, `migrate` applies database
//! migrations.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod admin_cli;
mod demo_cli;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use export_service::config::Config;
use export_service::domain::Format;
use export_service::plugin_host::tool;
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
    /// Plugin tools: check and run components offline (no database needed), and manage the
    /// registry through the admin API (push, list, bindings, bind, unbind, rollback, history, rm).
    Plugin {
        #[command(flatten)]
        target: admin_cli::AdminTarget,
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// The demo: a source application answering requests from Kafka, and a tenant that
    /// requests an export and prints its manifest (no service configuration needed).
    Demo {
        #[command(subcommand)]
        command: demo_cli::DemoCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a component, check it implements the plugin world, print what it says about itself.
    Check {
        /// The component (.wasm).
        component: PathBuf,
    },
    /// Run a component over a sample file exactly as the service would.
    Run {
        /// The component (.wasm).
        component: PathBuf,
        /// The sample upload.
        #[arg(long)]
        input: PathBuf,
        /// Format of the sample: csv or json.
        #[arg(long, value_parser = parse_format)]
        from: Format,
        /// Format to produce: csv or json.
        #[arg(long, value_parser = parse_format)]
        to: Format,
        /// The binding's configuration (JSON), if the plugin takes one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where to write the output (default: report only its size).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    #[command(flatten)]
    Registry(admin_cli::AdminCommand),
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not csv or json"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Plugin { target, command } = cli.command {
        let outcome = match command {
            PluginCommand::Registry(command) => admin_cli::run(target, command),
            command => plugin_tool(command),
        };
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("export-service plugin: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Demo { command } = cli.command {
        return demo(command);
    }
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
            Command::Plugin { .. } | Command::Demo { .. } => {
                unreachable!("handled before the configuration is loaded")
            }
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

/// Runs a demo role with readable logs (`RUST_LOG` or `LOG_LEVEL` filter them).
fn demo(command: demo_cli::DemoCommand) -> ExitCode {
    let filter = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into());
    telemetry::init(
        &filter.to_lowercase(),
        export_service::config::LogFormat::Text,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("export-service demo: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo_cli::run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("export-service demo: {error:#}");
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

/// Writes a report line for a person (the author's tools print to stdout by design).
#[expect(clippy::print_stdout, reason = "the plugin tools report on stdout")]
fn say(line: &str) {
    println!("{line}");
}

fn plugin_tool(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Check { component } => {
            let plugin = tool::check(&component)?;
            let info = &plugin.info;
            say(&format!("plugin:       {} {}", info.name, info.version));
            say(&format!("digest:       sha256:{}", plugin.digest));
            say(&format!(
                "capabilities: validate={} transform={} convert={}",
                info.capabilities.validate, info.capabilities.transform, info.capabilities.convert
            ));
            for resource in &info.resources {
                let schema = if resource.schema.is_some() {
                    " (with a JSON Schema)"
                } else {
                    ""
                };
                say(&format!("resource:     {}{schema}", resource.name));
            }
            say(&format!(
                "ok: the component implements export-service:plugin@{}",
                plugin.contract
            ));
        }
        PluginCommand::Registry(_) => unreachable!("registry commands are sent to the admin API"),
        PluginCommand::Run {
            component,
            input,
            from,
            to,
            config,
            output,
        } => {
            let report = tool::run(&component, &input, from, to, config.as_deref())?;
            say(&format!(
                "plugin:      {} {} (sha256:{})",
                report.plugin, report.version, report.digest
            ));
            say(&format!(
                "input:       {} bytes of {from}",
                report.input_bytes
            ));
            match &output {
                Some(path) => {
                    std::fs::write(path, &report.output)
                        .with_context(|| format!("writing {}", path.display()))?;
                    say(&format!(
                        "output:      {} bytes of {to} in {}",
                        report.output.len(),
                        path.display()
                    ));
                }
                None => say(&format!(
                    "output:      {} bytes of {to} (use --output to keep them)",
                    report.output.len()
                )),
            }
            say(&format!(
                "rows:        {}",
                report
                    .rows
                    .map_or("unknown".to_string(), |rows| rows.to_string())
            ));
            say(&format!("violations:  {}", report.violations.len()));
            for violation in report.violations.iter().take(20) {
                say(&format!(
                    "  row {} field {}: {}",
                    violation.row.map_or("-".to_string(), |row| row.to_string()),
                    violation.field.as_deref().unwrap_or("-"),
                    violation.message
                ));
            }
            say(&format!(
                "time:        {:.1} ms wall, {:.1} ms in the plugin",
                report.wall_time.as_secs_f64() * 1000.0,
                report.guest_time.as_secs_f64() * 1000.0
            ));
            if let Some(fuel) = report.fuel {
                say(&format!(
                    "fuel:        {fuel} (about one unit per Wasm instruction)"
                ));
            }
            say(&format!(
                "peak memory: {:.1} MiB of plugin linear memory",
                report.peak_memory as f64 / 1_048_576.0
            ));
            if !report.violations.is_empty() {
                anyhow::bail!(
                    "the service would reject this upload: {} violation(s)",
                    report.violations.len()
                );
            }
        }
    }
    Ok(())
}

async fn clean(config: &Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database);
    migrate_with_retry(&pool).await?;
    let store = ObjectStore::from_config(&config.store, &config.layout)
        .await
        .context("connecting to the object store")?;
    let keys = KeyLayout::new(&config.layout.source_key_template);
    // A one-shot pass: its counters are not served, only the report below is logged.
    let metrics = export_service::metrics::Metrics::new();
    let report = Cleaner::new(pool, store, keys, config.data_path.clone(), metrics)
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
