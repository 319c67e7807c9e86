//! Misuses `host.emit`: in `push`, one byte at a time without end (the host must stop it at its
//! limit on pieces per call, each piece costing the host a record, long before the deadline);
//! with the configuration `"open"`, already in `open`, where output has nowhere to go (the host
//! must refuse it). Either way the host carries on.

use export_plugin_sdk::bindings::export_service::plugin::host::emit;
use export_plugin_sdk::{
    Plugin, PluginError, PluginInfo, Session, SessionOptions, StepOutput, transform_info,
};

struct Flood;

struct Flooding;

impl Plugin for Flood {
    type Session = Flooding;

    fn describe() -> PluginInfo {
        transform_info(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
    }

    fn open(options: SessionOptions) -> Result<Flooding, PluginError> {
        if options.config.as_deref() == Some("\"open\"") {
            emit(b"too early");
        }
        Ok(Flooding)
    }
}

impl Session for Flooding {
    fn push<'a>(&'a mut self, chunk: &'a [u8]) -> Result<StepOutput<'a>, PluginError> {
        loop {
            emit(&chunk[..1]);
        }
    }

    fn finish(&mut self) -> Result<StepOutput<'_>, PluginError> {
        Ok(StepOutput::nothing())
    }
}

export_plugin_sdk::export_plugin!(Flood);
