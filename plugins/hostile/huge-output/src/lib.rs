//! Returns far more output than one chunk can justify: the host's output cap must stop it.

use export_plugin_sdk::{PluginError, StepOutput};

fn push(_chunk: &[u8]) -> Result<StepOutput<'static>, PluginError> {
    Ok(StepOutput::bytes(vec![b'x'; 24 * 1024 * 1024]))
}

export_plugin_sdk::export_transform!(push);
