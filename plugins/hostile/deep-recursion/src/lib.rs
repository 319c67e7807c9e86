//! Recurses until its stack runs out: the host must report a crash and carry on.
use export_plugin_sdk::{
    Capabilities, Plugin, PluginError, PluginInfo, ResourceInfo, Session, SessionOptions,
    StepOutput,
};

struct Hostile;
struct Run;

impl Plugin for Hostile {
    type Session = Run;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            resources: vec![ResourceInfo {
                name: "*".into(),
                schema: None,
            }],
            capabilities: Capabilities {
                validate: false,
                transform: true,
                convert: false,
            },
        }
    }

    fn open(_options: SessionOptions) -> Result<Run, PluginError> {
        Ok(Run)
    }
}

#[allow(unconditional_recursion, reason = "the point of this plugin")]
fn descend(depth: u64, chunk: &[u8]) -> u64 {
    let local = std::hint::black_box([depth; 16]);
    descend(depth + 1, chunk).wrapping_add(local[(depth % 16) as usize])
}

impl Session for Run {
    fn push(&mut self, chunk: &[u8]) -> Result<StepOutput, PluginError> {
        let depth = descend(0, chunk);
        Ok(StepOutput::bytes(depth.to_le_bytes().to_vec()))
    }

    fn finish(&mut self) -> Result<StepOutput, PluginError> {
        Ok(StepOutput::bytes(Vec::new()))
    }
}

export_plugin_sdk::export_plugin!(Hostile);
