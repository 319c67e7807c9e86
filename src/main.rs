//! The `export-service` command line: `serve` runs the service, `migrate` applies database
//! migrations.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod admin_cli;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use export_plugin_host::tool;
use export_service::config::Config;
use export_service::delivery::trial;
use export_service::domain::Format;
use export_service::scaffold;
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
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing would only complicate the clap derive"
)]
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
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a component, check it implements the plugin world, print what it says about itself.
    Check {
        /// The component (.wasm).
        component: PathBuf,
    },
    /// Run a sample upload through the service's own pipeline with a component bound: the
    /// plugin, the default conversion, the binding's JSON Schema, the violation cap and the row
    /// count, judged as the service would. Exits 1 when the service would refuse the upload.
    Run {
        /// The component (.wasm).
        component: PathBuf,
        /// The sample upload.
        #[arg(long)]
        input: PathBuf,
        /// Format of the sample, as its Content-Type would say: csv or json (default: told
        /// from its first character, as the service does).
        #[arg(long, value_parser = parse_format)]
        from: Option<Format>,
        /// The export's format, which is stored: csv or json.
        #[arg(long, value_parser = parse_format)]
        to: Format,
        /// The binding's configuration (JSON), if the plugin takes one; its "schema" is
        /// checked as the service checks it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The application the plugin is bound to.
        #[arg(long, default_value = "local")]
        application: String,
        /// The resource requested.
        #[arg(long, default_value = "local")]
        resource: String,
        /// Where to write what would be stored (default: report only its size).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Print the report as one JSON object (for CI) instead of lines for a person.
        #[arg(long)]
        json: bool,
    },
    /// Create a record-mode validator project in a new directory NAME, in Rust, Python or
    /// JavaScript, that builds outside this repository (the contract vendored into it); prints
    /// how to build it and try it with `plugin run`.
    New {
        /// The plugin's name (lowercase letters, digits and '-'), also the directory's.
        name: String,
        /// The language: rust, python or js.
        #[arg(long = "lang", value_parser = parse_language)]
        language: scaffold::Language,
        /// The directory to create (default: NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    #[command(flatten)]
    Registry(admin_cli::AdminCommand),
}

fn parse_language(text: &str) -> Result<scaffold::Language, String> {
    text.parse()
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not csv or json"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Plugin { command } = cli.command {
        let outcome = match command {
            PluginCommand::Registry(command) => admin_cli::run(command),
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
            Command::Plugin { .. } => {
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
                "mode:         {}",
                if plugin.transforms_records() {
                    "records, transforming (the service splits uploads into JSON records for \
                     it and stores the records it returns)"
                } else if plugin.record_mode() {
                    "records (the service splits uploads into JSON records for it)"
                } else {
                    "streaming (it gets the uploaded bytes)"
                }
            ));
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
        PluginCommand::New {
            name,
            language,
            dir,
        } => {
            let project = scaffold::project(language, &name)?;
            let directory = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold::write(&project, &directory)?;
            say(&format!("created {}", directory.display()));
            say("build it, then try it on the bad sample:");
            say(&format!("  cd {}", directory.display()));
            say(&format!("  {}", project.build));
            say(&format!(
                "  export-service plugin run {} --input bad.csv --to json --config config.json",
                project.component.display()
            ));
        }
        PluginCommand::Run {
            component,
            input,
            from,
            to,
            config,
            application,
            resource,
            output,
            json,
        } => {
            let trial = trial::Trial {
                component,
                input,
                from,
                to,
                config,
                application: application.into(),
                resource: resource.into(),
                output,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let report = runtime.block_on(trial::run(&trial))?;
            if let (Some(path), Some(_)) = (&trial.output, &report.refused) {
                // The service stores nothing of a refused upload.
                let _ = std::fs::remove_file(path);
            }
            if json {
                say(&serde_json::to_string_pretty(&trial_json(&trial, &report))?);
            } else {
                say_trial(&trial, &report);
            }
            if let Some(message) = &report.refused {
                match report.violations.len() {
                    0 => anyhow::bail!("the service would reject this upload: {message}"),
                    count => anyhow::bail!(
                        "the service would reject this upload: {count} violation(s) ({message})"
                    ),
                }
            }
        }
    }
    Ok(())
}

/// The report of `plugin run`, for a person.
fn say_trial(trial: &trial::Trial, report: &trial::TrialReport) {
    let [name, version, digest] = &report.plugin;
    say(&format!("plugin:      {name} {version} (sha256:{digest})"));
    let uploaded = report
        .uploaded_format
        .map_or("unknown".to_string(), |format| format.to_string());
    say(&format!(
        "input:       {} bytes of {uploaded}",
        report.input_bytes
    ));
    match &report.stored {
        Some(stored) => {
            let place = match &trial.output {
                Some(path) => format!("in {}", path.display()),
                None => "(use --output to keep them)".to_string(),
            };
            say(&format!(
                "output:      {} bytes of {} {place}",
                stored.bytes, trial.to
            ));
            say(&format!("sha256:      {}", stored.sha256));
            say(&format!(
                "rows:        {}",
                stored
                    .rows
                    .map_or("unknown".to_string(), |rows| rows.to_string())
            ));
        }
        None => say("output:      nothing (the upload would be refused)"),
    }
    if let Some(message) = &report.refused {
        say(&format!("refused:     {message}"));
    }
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
        "time:        {:.1} ms wall",
        report.wall_time.as_secs_f64() * 1000.0
    ));
    if let Some(session) = &report.session {
        say(&format!(
            "plugin time: {:.1} ms",
            session.guest_time.as_secs_f64() * 1000.0
        ));
        if let Some(fuel) = session.fuel {
            say(&format!(
                "fuel:        {fuel} (about one unit per Wasm instruction)"
            ));
        }
        say(&format!(
            "peak memory: {:.1} MiB of plugin linear memory",
            session.peak_memory as f64 / 1_048_576.0
        ));
    }
}

/// The report of `plugin run --json`.
fn trial_json(trial: &trial::Trial, report: &trial::TrialReport) -> serde_json::Value {
    let [name, version, digest] = &report.plugin;
    serde_json::json!({
        "plugin": {"name": name, "version": version, "digest": digest},
        "application": trial.application,
        "resource": trial.resource,
        "accepted": report.refused.is_none(),
        "refused": report.refused,
        "uploaded_format": report.uploaded_format.map(|format| format.to_string()),
        "stored_format": trial.to.to_string(),
        "input_bytes": report.input_bytes,
        "output_bytes": report.stored.as_ref().map(|stored| stored.bytes),
        "sha256": report.stored.as_ref().map(|stored| &stored.sha256),
        "rows": report.stored.as_ref().and_then(|stored| stored.rows),
        "violations": report.violations.iter().map(|violation| serde_json::json!({
            "row": violation.row,
            "field": violation.field,
            "message": violation.message,
        })).collect::<Vec<_>>(),
        "wall_ms": report.wall_time.as_secs_f64() * 1000.0,
        "plugin_ms": report.session.map(|session| session.guest_time.as_secs_f64() * 1000.0),
        "fuel": report.session.and_then(|session| session.fuel),
        "peak_memory_bytes": report.session.map(|session| session.peak_memory),
    })
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
        idempotency_keys_forgotten = report.idempotency_keys_forgotten,
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
