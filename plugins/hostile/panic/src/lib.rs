//! Panics: the host must report a crash and carry on.

use export_plugin_sdk::{PluginError, StepOutput};

fn push(chunk: &[u8]) -> Result<StepOutput<'static>, PluginError> {
    panic!("hostile plugin panics on a chunk of {} bytes", chunk.len());
}

export_plugin_sdk::export_transform!(push);
