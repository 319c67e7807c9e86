//! Never returns from `push`: the host's deadline must stop it.

use export_plugin_sdk::{PluginError, StepOutput};

fn push(chunk: &[u8]) -> Result<StepOutput<'static>, PluginError> {
    let mut counter = chunk.len() as u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

export_plugin_sdk::export_transform!(push);
