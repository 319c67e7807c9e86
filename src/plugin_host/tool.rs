//! The plugin author's tools: `export-service plugin check` (does the component load, and what
//! does it say about itself) and `plugin run` (process a sample file offline exactly as the
//! service would, and report output, violations, rows, time, fuel and peak memory).

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{
    CHUNK_BYTES, DataFormat, LoadedPlugin, PluginFailure, PluginHost, PluginLimits, PluginSession,
    SessionOptions, Violation,
};
use crate::domain::Format;
use crate::ingest::rows::RowCounter;

/// Why a tool run failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginFailure),
}

/// What `plugin run` observed.
#[derive(Debug)]
pub struct RunReport {
    /// The plugin.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// Its digest.
    pub digest: String,
    /// The converted output.
    pub output: Vec<u8>,
    /// Violations reported.
    pub violations: Vec<Violation>,
    /// Rows in the output.
    pub rows: Option<u64>,
    /// Input bytes.
    pub input_bytes: u64,
    /// Wall time of the whole run (instantiation included).
    pub wall_time: Duration,
    /// Time inside the plugin.
    pub guest_time: Duration,
    /// Fuel consumed (about one unit per Wasm instruction).
    pub fuel: Option<u64>,
    /// Peak linear memory of the plugin.
    pub peak_memory: usize,
}

fn read(path: &Path) -> Result<Vec<u8>, ToolError> {
    std::fs::read(path).map_err(|error| ToolError::File {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// Loads a component and returns what it says about itself.
pub fn check(component: &Path) -> Result<std::sync::Arc<LoadedPlugin>, ToolError> {
    let host = PluginHost::new(PluginLimits::default())?;
    Ok(host.load(&read(component)?)?)
}

/// Runs a component over `input` as the service would.
pub fn run(
    component: &Path,
    input: &Path,
    from: Format,
    to: Format,
    config: Option<&Path>,
) -> Result<RunReport, ToolError> {
    let started = Instant::now();
    let host = PluginHost::with_fuel_metering(PluginLimits::default())?;
    let plugin = host.load(&read(component)?)?;
    let config = config
        .map(read)
        .transpose()?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let options = SessionOptions {
        application: "local".into(),
        resource: "local".into(),
        input_format: DataFormat::from(from),
        output_format: DataFormat::from(to),
        config,
    };
    let mut file = std::fs::File::open(input).map_err(|error| ToolError::File {
        path: input.display().to_string(),
        reason: error.to_string(),
    })?;
    let run = run_session(&host, &plugin, &options, &mut file).map_err(|error| match error {
        SessionError::Plugin(failure) => ToolError::from(failure),
        SessionError::Read(reason) => ToolError::File {
            path: input.display().to_string(),
            reason,
        },
    })?;
    let SessionRun {
        output,
        violations,
        input_bytes,
        session,
    } = run;
    let mut rows = RowCounter::new(Some(to));
    rows.feed(&output);
    Ok(RunReport {
        plugin: plugin.info.name.clone(),
        version: plugin.info.version.clone(),
        digest: plugin.digest.clone(),
        rows: rows.finish(),
        output,
        violations,
        input_bytes,
        wall_time: started.elapsed(),
        guest_time: session.guest_time(),
        fuel: session.fuel_consumed(),
        peak_memory: session.peak_memory(),
    })
}

/// What one session over a whole input produced.
pub struct SessionRun {
    /// The output, whole.
    pub output: Vec<u8>,
    /// Every violation reported.
    pub violations: Vec<Violation>,
    /// Bytes read from the input.
    pub input_bytes: u64,
    /// The finished session (for its time, fuel and memory figures).
    pub session: PluginSession,
}

/// Why [`run_session`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginFailure),
    /// The input could not be read.
    #[error("cannot read the input: {0}")]
    Read(String),
}

/// Runs one session of `plugin` over all of `input`, in the chunks the service uses.
pub fn run_session(
    host: &PluginHost,
    plugin: &std::sync::Arc<LoadedPlugin>,
    options: &SessionOptions,
    input: &mut dyn Read,
) -> Result<SessionRun, SessionError> {
    let mut session = host.open(plugin, options)?;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut output = Vec::new();
    let mut violations = Vec::new();
    let mut input_bytes = 0u64;
    loop {
        let read = input
            .read(&mut buffer)
            .map_err(|error| SessionError::Read(error.to_string()))?;
        if read == 0 {
            break;
        }
        input_bytes += read as u64;
        let step = session.push(&buffer[..read])?;
        step.append_output_to(&mut output);
        violations.extend(step.violations);
    }
    let step = session.finish()?;
    step.append_output_to(&mut output);
    violations.extend(step.violations);
    Ok(SessionRun {
        output,
        violations,
        input_bytes,
        session,
    })
}
