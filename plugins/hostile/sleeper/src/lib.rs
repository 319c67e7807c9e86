//! Blocks inside WASI waits, where the plugin's own code (and so the epoch deadline) never runs:
//! the host must still stop it at the deadline of the call. The configuration picks the wait:
//!
//! - none or `"sleep"`: `std::thread::sleep` for an hour in `push` (a monotonic-clock
//!   subscription, then `pollable.block`);
//! - `"poll"`: `wasi:io/poll.poll` on a pollable for the farthest instant the clock can name;
//! - `"open"`: the hour's sleep already in `open`;
//! - `"short"`: a 20 ms sleep in `push`, well within any deadline, then the chunk unchanged (a
//!   short wait is allowed; it counts against the call's time).

use std::time::Duration;

use export_plugin_sdk::{
    Plugin, PluginError, PluginInfo, Session, SessionOptions, StepOutput, transform_info,
};

wit_bindgen::generate!({ world: "waits", path: "wit", generate_all });

use wasi::clocks::monotonic_clock;
use wasi::io::poll;

const AN_HOUR: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Sleep,
    Poll,
    Short,
}

struct Sleeper;

struct Sleeping(Wait);

impl Plugin for Sleeper {
    type Session = Sleeping;

    fn describe() -> PluginInfo {
        transform_info(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
    }

    fn open(options: SessionOptions) -> Result<Sleeping, PluginError> {
        let wait = match options.config.as_deref() {
            Some("\"open\"") => {
                std::thread::sleep(AN_HOUR);
                Wait::Sleep
            }
            Some("\"poll\"") => Wait::Poll,
            Some("\"short\"") => Wait::Short,
            _ => Wait::Sleep,
        };
        Ok(Sleeping(wait))
    }
}

impl Session for Sleeping {
    fn push<'a>(&'a mut self, chunk: &'a [u8]) -> Result<StepOutput<'a>, PluginError> {
        match self.0 {
            Wait::Sleep => std::thread::sleep(AN_HOUR),
            Wait::Poll => {
                let never = monotonic_clock::subscribe_instant(u64::MAX);
                poll::poll(&[&never]);
            }
            Wait::Short => {
                std::thread::sleep(Duration::from_millis(20));
                return Ok(StepOutput::borrowed(chunk));
            }
        }
        Err(PluginError::Failed(
            "the wait ended: the host let it run".into(),
        ))
    }

    fn finish(&mut self) -> Result<StepOutput<'_>, PluginError> {
        Ok(StepOutput::nothing())
    }
}

export_plugin_sdk::export_plugin!(Sleeper);
