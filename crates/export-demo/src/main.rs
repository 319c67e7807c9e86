//! `export-demo source|export`: the demo source application and the demo tenant, run next to
//! the export service (they reach it only over Kafka and HTTP; no service configuration needed).

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use export_demo::source::{self, SourceSettings, UploadFormat};
use export_demo::tenant::{self, ExportSettings, Progress};
use tracing_subscriber::EnvFilter;

/// The export service's demo: a source application answering requests from Kafka, and a tenant
/// that requests an export and prints its manifest.
#[derive(Parser)]
#[command(name = "export-demo", version)]
struct Cli {
    #[command(subcommand)]
    command: DemoCommand,
}

/// The demo's two roles.
#[derive(Subcommand)]
enum DemoCommand {
    /// A source application: consume export requests from Kafka (consumer group) and answer
    /// each through the internal API with generated data (or an error for unknown resources).
    Source(SourceArgs),
    /// A tenant: create an export, follow its progress, download the archive, print its
    /// manifest.
    Export(ExportArgs),
}

/// Settings of the demo source application.
#[derive(Args)]
struct SourceArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The request topic.
    #[arg(
        long,
        env = "KAFKA_ANNOUNCE_TOPIC",
        default_value = "platform.export.requests"
    )]
    topic: String,
    /// The consumer group.
    #[arg(long, default_value = "export-demo-source")]
    group: String,
    /// Base URL of the service's internal API.
    #[arg(long, default_value = "http://127.0.0.1:10000")]
    internal_url: String,
    /// The application this source answers for.
    #[arg(long, default_value = "exampleApp")]
    application: String,
    /// The application's pre-shared key (x-rh-exports-psk).
    #[arg(long, env = "DEMO_SOURCE_PSK")]
    psk: String,
    /// Rows generated per request.
    #[arg(long, default_value_t = 100)]
    rows: usize,
    /// Upload in the export's format (`requested`) or the other one (`other`, so the service
    /// or the application's plugin converts).
    #[arg(long, default_value = "other", value_parser = parse_upload_format)]
    upload_as: UploadFormat,
    /// Seconds the source works on a request before answering; a cancel that arrives
    /// meanwhile (its export was deleted) stops it.
    #[arg(long, default_value_t = 0.0)]
    work_seconds: f64,
    /// The topic cancels come on, when not the request topic.
    #[arg(long, env = "KAFKA_CANCEL_TOPIC")]
    cancel_topic: Option<String>,
}

/// Settings of the demo tenant.
#[derive(Args)]
struct ExportArgs {
    /// Base URL of the service's public API.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// The tenant's organisation.
    #[arg(long, default_value = "org1")]
    org: String,
    /// The tenant's user name.
    #[arg(long, default_value = "alice")]
    user: String,
    /// The export's name.
    #[arg(long, default_value = "demo")]
    name: String,
    /// The export's format: json or csv.
    #[arg(long, default_value = "json")]
    format: String,
    /// A source as APPLICATION:RESOURCE (repeatable).
    #[arg(long = "source", value_parser = parse_source,
          default_values = ["exampleApp:exampleResource", "exampleApp:anotherExampleResource"])]
    sources: Vec<(String, String)>,
    /// Where the archive is written.
    #[arg(long, default_value = "export.zip")]
    output: PathBuf,
    /// Seconds to wait for the export to finish.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

fn parse_upload_format(text: &str) -> Result<UploadFormat, String> {
    match text {
        "requested" => Ok(UploadFormat::Requested),
        "other" => Ok(UploadFormat::Other),
        _ => Err(format!("'{text}' is not requested or other")),
    }
}

fn parse_source(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((application, resource)) if !application.is_empty() && !resource.is_empty() => {
            Ok((application.to_owned(), resource.to_owned()))
        }
        _ => Err(format!("'{text}' is not APPLICATION:RESOURCE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("export-demo: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("export-demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs readable logs on stderr, filtered by `LOG_LEVEL` (the service's variable: `INFO`,
/// `debug`, or any tracing directive), else by `RUST_LOG`, else at `info`.
fn init_logging() {
    let directive = std::env::var("LOG_LEVEL")
        .map(|level| level.to_lowercase())
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(directive).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .compact()
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Resolves on SIGTERM (how containers are stopped) or Ctrl-C. The handlers are installed by the
/// call, not at the first poll: the source's loop may not poll this future before a signal comes
/// (when its Kafka branch is ready first), and an unhandled SIGTERM would kill it mid-answer.
#[cfg(unix)]
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind| signal(kind).expect("installing a signal handler");
    let (mut terminate, mut interrupt) = (
        install(SignalKind::terminate()),
        install(SignalKind::interrupt()),
    );
    async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> impl Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs a demo command to its end.
async fn run(command: DemoCommand) -> anyhow::Result<()> {
    match command {
        DemoCommand::Source(args) => {
            let settings = SourceSettings {
                brokers: args.brokers,
                topic: args.topic,
                group: args.group,
                internal_url: args.internal_url,
                application: args.application,
                psk: args.psk,
                rows: args.rows,
                upload_as: args.upload_as,
                work_time: Duration::try_from_secs_f64(args.work_seconds)
                    .map_err(|_| anyhow::anyhow!("--work-seconds must be 0 or more"))?,
                cancel_topic: args.cancel_topic,
            };
            source::run(&settings, shutdown_signal()).await?;
        }
        DemoCommand::Export(args) => export(args).await?,
    }
    Ok(())
}

#[expect(clippy::print_stdout, reason = "the demo tenant reports on stdout")]
async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let settings = ExportSettings {
        public_url: args.url,
        org_id: args.org,
        username: args.user,
        name: args.name,
        format: args.format,
        sources: args.sources,
        output: args.output,
        timeout: Duration::from_secs(args.timeout),
    };
    let terminal = std::io::stderr().is_terminal();
    let show = |progress: &Progress| {
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r{}   ", progress.bar());
            if progress.is_final() {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{}", progress.bar());
        }
    };
    let downloaded = tenant::run(&settings, show)
        .await
        .context("the demo export")?;
    println!(
        "export {}: {}",
        downloaded.export_id,
        downloaded.status["status"].as_str().unwrap_or("?")
    );
    for source in downloaded.status["sources"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "  {}/{}: {}{}",
            source["application"].as_str().unwrap_or("?"),
            source["resource"].as_str().unwrap_or("?"),
            source["status"].as_str().unwrap_or("?"),
            source["message"]
                .as_str()
                .map(|message| format!(" ({message})"))
                .unwrap_or_default()
        );
    }
    let Some(archive) = &downloaded.archive else {
        anyhow::bail!("the export failed: no archive");
    };
    println!("archive {}:", archive.display());
    for (name, size) in &downloaded.entries {
        println!("  {size:>10}  {name}");
    }
    println!("meta.json:");
    println!(
        "{}",
        serde_json::to_string_pretty(&downloaded.manifest).unwrap_or_default()
    );
    Ok(())
}
