//! Panics: the host must report a crash and carry on.
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

impl Session for Run {
    fn push(&mut self, chunk: &[u8]) -> Result<StepOutput, PluginError> {
        panic!("hostile plugin panics on a chunk of {} bytes", chunk.len());
    }

    fn finish(&mut self) -> Result<StepOutput, PluginError> {
        Ok(StepOutput::bytes(Vec::new()))
    }
}

export_plugin_sdk::export_plugin!(Hostile);
