//! export-service: tenants request, track and download archives of their data; the source
//! applications that own the data deliver it.
//!
//! Layers depend one way: the edge ([`http`], the CLI) calls the use cases ([`delivery`],
//! [`package`], [`dispatch`], [`registry`], [`worker`]), which apply the rules of [`domain`] (no
//! I/O) and do their I/O through [`db`], [`storage`], the Kafka publisher and the plugin host
//! (the leaf crate `export-plugin-host`). docs/ARCHITECTURE.md maps the modules and names the
//! exceptions.

pub mod config;
pub mod db;
pub mod delivery;
pub mod dispatch;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod oidc;
pub mod package;
pub mod registry;
pub mod retry;
pub mod scaffold;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod worker;
