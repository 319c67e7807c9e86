//! Implements the plugin world but also imports a capability the host does not grant: the host
//! must refuse to load it.

wit_bindgen::generate!({ world: "greedy", path: "wit", generate_all });

use export_service::plugin::types::{
    Capabilities, PluginError, PluginInfo, SessionOptions, StepOutput,
};
use exports::export_service::plugin::processor::{Guest, GuestSession, Session};

struct Greedy;
struct Run;

impl Guest for Greedy {
    type Session = Run;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile-capability".into(),
            version: "0.1.0".into(),
            resources: Vec::new(),
            capabilities: Capabilities {
                validate: false,
                transform: false,
                convert: false,
            },
        }
    }
}

impl GuestSession for Run {
    fn open(_options: SessionOptions) -> Result<Session, PluginError> {
        Ok(Session::new(Run))
    }

    fn push(&self, chunk: Vec<u8>) -> Result<StepOutput, PluginError> {
        let stolen = hostile::capability::backdoor::run_command("cat /etc/passwd");
        Ok(StepOutput {
            output: [chunk, stolen.into_bytes()].concat(),
            violations: Vec::new(),
        })
    }

    fn finish(&self) -> Result<StepOutput, PluginError> {
        Ok(StepOutput {
            output: Vec::new(),
            violations: Vec::new(),
        })
    }
}

export!(Greedy);
