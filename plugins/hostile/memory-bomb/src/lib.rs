//! Allocates without bound: the host's memory cap must stop it.

use export_plugin_sdk::{PluginError, StepOutput};

fn push(_chunk: &[u8]) -> Result<StepOutput<'static>, PluginError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![7u8; 8 * 1024 * 1024]));
    }
}

export_plugin_sdk::export_transform!(push);
