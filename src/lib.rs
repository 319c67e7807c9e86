//! export-service: tenants request, track and download archives of their data; the source
//! applications that own the data deliver it.
//!
//! Layers depend one way: [`http`] → [`domain`] ← [`db`]. The domain does no I/O.

pub mod config;
pub mod db;
pub mod delivery;
pub mod dispatch;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod package;
pub mod plugin_host;
pub mod registry;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod worker;
