//! The plugin author's check (`export-service plugin check`: does the component load, and what
//! does it say about itself) and one session over a whole input, which the registry runs when a
//! version is pushed. `plugin run` goes through the service's upload pipeline instead (its
//! `delivery::trial`), which adds the conversion and the schema check around the session.

use std::io::Read;
use std::path::Path;

use super::{
    ArtefactDir, CHUNK_BYTES, LoadedPlugin, PluginFailure, PluginHost, PluginLimits, PluginSession,
    SessionOptions, Violation,
};

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

fn read(path: &Path) -> Result<Vec<u8>, ToolError> {
    std::fs::read(path).map_err(|error| ToolError::File {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// Loads a component and returns what it says about itself.
pub fn check(component: &Path) -> Result<std::sync::Arc<LoadedPlugin>, ToolError> {
    let host = PluginHost::new(PluginLimits::default())?;
    let bytes = read(component)?;
    Ok(match ArtefactDir::for_tool() {
        Some(directory) => host.load_through(&bytes, &directory)?,
        None => host.load(&bytes)?,
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
