//! A delivery tried offline, for plugin authors (`export-service plugin run`): a sample file
//! goes through the same pipeline an upload does — sniffing, the plugin, the default
//! conversion, the binding's JSON Schema, the violation cap, the row count — and is judged by
//! the same rules, with the session's time, fuel and memory reported besides. Nothing touches
//! a database or an object store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use tokio_util::io::ReaderStream;

use super::{Disposition, disposition};
use crate::config::{DEFAULT_MAX_PAYLOAD_MIB, DEFAULT_STORED_EXPANSION};
use crate::domain::plugin_limits::LimitCeilings;
use crate::domain::{Application, Format, Resource};
use crate::ingest::intake::BodyStream;
use crate::ingest::plugin_stage::SessionFigures;
use crate::ingest::{Ingested, Limits, Pipeline, Plan, PluginRun};
use crate::registry::binding::{Binding, BindingError};
use crate::registry::cases::{CaseOutcome, CaseRunner, TestCase};
use export_plugin_host::{
    ArtefactDir, LoadedPlugin, PluginFailure, PluginHost, PluginLimits, Violation,
};

/// What to try.
#[derive(Debug, Clone)]
pub struct Trial {
    /// The component (.wasm).
    pub component: PathBuf,
    /// The sample upload.
    pub input: PathBuf,
    /// Its format, as a `Content-Type` would declare it; sniffed when `None`, as the service does.
    pub from: Option<Format>,
    /// The export's format.
    pub to: Format,
    /// The binding's configuration (a JSON file), if any.
    pub config: Option<PathBuf>,
    /// The application the binding is for.
    pub application: Application,
    /// The resource requested.
    pub resource: Resource,
    /// Where the stored bytes go; when `None` they are only counted.
    pub output: Option<PathBuf>,
}

/// What the service would have done with the sample, and what it cost.
#[derive(Debug)]
pub struct TrialReport {
    /// The plugin: name, version, digest.
    pub plugin: [String; 3],
    /// The format the sample was taken to be in.
    pub uploaded_format: Option<Format>,
    /// Bytes read from the sample.
    pub input_bytes: u64,
    /// What would be stored, when accepted.
    pub stored: Option<Ingested>,
    /// Why the service would refuse it (the message the tenant would read), when refused.
    pub refused: Option<String>,
    /// The violations the service would answer with.
    pub violations: Vec<Violation>,
    /// Wall time of the whole run (instantiation included).
    pub wall_time: Duration,
    /// The session's figures, when it ran to its end.
    pub session: Option<SessionFigures>,
}

/// Why a trial could not judge the sample.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: std::io::Error,
    },
    /// The component did not load.
    #[error(transparent)]
    Plugin(#[from] PluginFailure),
    /// The configuration is not one a binding takes.
    #[error("the binding's configuration: {0}")]
    Config(#[from] BindingError),
    /// The plugin or the pipeline failed in a way the service would not blame on the data
    /// (the source would stay pending).
    #[error("the service would not store this upload: {0}")]
    NotStored(String),
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> TrialError + '_ {
    move |reason| TrialError::File {
        path: path.to_owned(),
        reason,
    }
}

/// Runs `trial` through the pipeline the service uses, with the service's default limits.
pub async fn run(trial: &Trial) -> Result<TrialReport, TrialError> {
    let started = Instant::now();
    let host = Arc::new(PluginHost::with_fuel_metering(PluginLimits::default())?);
    let component = std::fs::read(&trial.component).map_err(file_error(&trial.component))?;
    // The author's tool compiles a component once, then loads it from its artefact cache.
    let plugin = match ArtefactDir::for_tool() {
        Some(directory) => host.load_through(&component, &directory)?,
        None => host.load(&component)?,
    };
    let config = match &trial.config {
        Some(path) => Some(std::fs::read_to_string(path).map_err(file_error(path))?),
        None => None,
    };
    let input = tokio::fs::File::open(&trial.input)
        .await
        .map_err(file_error(&trial.input))?;
    let body = ReaderStream::new(input)
        .map_err(|error| error.to_string())
        .boxed();
    let mut output = match &trial.output {
        Some(path) => Some(std::fs::File::create(path).map_err(file_error(path))?),
        None => None,
    };
    let sample = Sample {
        host,
        plugin,
        config,
        from: trial.from,
        to: trial.to,
        application: trial.application.clone(),
        resource: trial.resource.clone(),
    };
    let mut report = sample
        .judge(body, |chunk| match &mut output {
            Some(file) => file.write_all(chunk),
            None => Ok(()),
        })
        .await?;
    report.wall_time = started.elapsed();
    Ok(report)
}

/// A trial's ceilings on a binding's `"limits"`: a sample runs alone, so no upload slots bound
/// its memory (the replica checks its own ceilings when the binding is made).
fn trial_ceilings(host: &PluginHost) -> LimitCeilings {
    LimitCeilings {
        memory_bytes: 4 * 1024 * 1024 * 1024,
        call_timeout: host.limits().session_timeout,
    }
}

/// A sample and the plugin binding to judge it with.
struct Sample {
    host: Arc<PluginHost>,
    plugin: Arc<LoadedPlugin>,
    /// The binding's configuration (JSON text).
    config: Option<String>,
    from: Option<Format>,
    to: Format,
    application: Application,
    resource: Resource,
}

impl Sample {
    /// What the service would do with `body`; the bytes it would store go to `sink`.
    async fn judge(
        self,
        body: BodyStream,
        sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<TrialReport, TrialError> {
        let started = Instant::now();
        let binding = Binding::new(self.plugin.clone(), self.config.clone())?;
        let max_payload = DEFAULT_MAX_PAYLOAD_MIB * 1024 * 1024;
        let plan = Plan {
            declared_format: self.from,
            // The trial drains into a sink: the length only matters to the object store.
            declared_length: None,
            stored_format: self.to,
            limits: Limits {
                max_bytes: max_payload,
                max_stored_bytes: (max_payload as f64 * DEFAULT_STORED_EXPANSION) as u64,
                // A sample does not pause.
                idle_timeout: Duration::from_secs(3600),
            },
            plugin: Some(PluginRun {
                host: self.host.clone(),
                plugin: self.plugin.clone(),
                config: self.config,
                application: self.application.clone(),
                resource: self.resource.clone(),
                schema: binding.schema_for(self.resource.as_str()),
                scope: None,
                limits: binding.session_limits(self.host.limits(), &trial_ceilings(&self.host)),
            }),
        };
        let outcome = match Pipeline::start(body, plan).await {
            Ok(pipeline) => pipeline.drain(sink).await,
            Err(error) => Err(error),
        };
        let plugin = &self.plugin;
        let mut report = TrialReport {
            plugin: [
                plugin.info.name.clone(),
                plugin.info.version.clone(),
                plugin.digest.clone(),
            ],
            uploaded_format: None,
            input_bytes: 0,
            stored: None,
            refused: None,
            violations: Vec::new(),
            wall_time: Duration::ZERO,
            session: None,
        };
        match outcome {
            Ok(ingested) => {
                report.uploaded_format = ingested.uploaded_format;
                report.input_bytes = ingested.uploaded_bytes;
                report.session = ingested.session;
                report.stored = Some(ingested);
            }
            Err(error) => match disposition(error, self.to, max_payload) {
                Disposition::Fail {
                    message,
                    violations,
                    ..
                } => {
                    report.refused = Some(message);
                    report.violations = violations;
                }
                Disposition::Retry(error) => {
                    return Err(TrialError::NotStored(error.to_string()));
                }
            },
        }
        report.wall_time = started.elapsed();
        Ok(report)
    }
}

/// Runs registry test cases through the upload pipeline, as [`run`] runs a sample.
#[derive(Debug, Default)]
pub struct PipelineCases;

impl CaseRunner for PipelineCases {
    fn run<'a>(
        &'a self,
        host: Arc<PluginHost>,
        plugin: Arc<LoadedPlugin>,
        case: &'a TestCase,
    ) -> BoxFuture<'a, CaseOutcome> {
        Box::pin(async move {
            let sample = Sample {
                host,
                plugin,
                config: case.config.as_ref().map(serde_json::Value::to_string),
                from: case.from,
                to: case.to,
                application: Application::from("test-case"),
                resource: Resource::from(case.name.as_str()),
            };
            let input = bytes::Bytes::from(case.input.clone().into_bytes());
            let body = futures::stream::iter([Ok::<_, String>(input)]).boxed();
            match sample.judge(body, |_| Ok(())).await {
                Ok(TrialReport {
                    stored: Some(stored),
                    ..
                }) => CaseOutcome::Accepted(stored.sha256),
                Ok(report) => {
                    CaseOutcome::Refused(report.refused.unwrap_or_default(), report.violations)
                }
                Err(error) => CaseOutcome::Failed(error.to_string()),
            }
        })
    }
}
