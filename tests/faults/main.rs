//! The fault and abuse suite: the real `export-service serve` binary against its own s3s-fs
//! and tansu processes (killed and restarted by the tests, never the shared ones) and the real
//! PostgreSQL, a fresh database per test. Run it alone with `cargo test --test faults`; measured
//! figures are printed as `FIGURE: …` lines (add `-- --nocapture` to see them).
//!
//! - `s3_outage`: S3 down for longer than the old packaging retry window while an export
//!   packages → the export completes with a valid archive once S3 is back.
//! - `service_kill`: the service SIGKILLed while it builds an archive → after a restart,
//!   exactly one archive, valid.
//! - `broker_restart`: the broker killed and restarted around exports → every event
//!   delivered, none twice.
//! - `abuse`: hostile clients and plugins → the right status with a clear message, within
//!   bounds of RSS and CPU time.

mod abuse;
mod archive;
mod broker_restart;
mod harness;
mod raw_http;
mod s3_outage;
mod service_kill;
