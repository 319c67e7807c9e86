//! Calls `host.emit` with one byte at a time, without end: the host must stop it at its limit on
//! pieces per call (each piece costs the host a record, whatever its size) long before the
//! deadline, and carry on.

use export_plugin_sdk::bindings::export_service::plugin::host::emit;
use export_plugin_sdk::{PluginError, StepOutput};

fn push(chunk: &[u8]) -> Result<StepOutput<'static>, PluginError> {
    loop {
        emit(&chunk[..1]);
    }
}

export_plugin_sdk::export_transform!(push);
