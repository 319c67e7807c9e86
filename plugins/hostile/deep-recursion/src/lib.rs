//! Recurses until its stack runs out: the host must report a crash and carry on.

use export_plugin_sdk::{PluginError, StepOutput};

#[allow(unconditional_recursion, reason = "the point of this plugin")]
fn descend(depth: u64, chunk: &[u8]) -> u64 {
    let local = std::hint::black_box([depth; 16]);
    descend(depth + 1, chunk).wrapping_add(local[(depth % 16) as usize])
}

fn push(chunk: &[u8]) -> Result<StepOutput<'static>, PluginError> {
    Ok(StepOutput::bytes(descend(0, chunk).to_le_bytes().to_vec()))
}

export_plugin_sdk::export_transform!(push);
