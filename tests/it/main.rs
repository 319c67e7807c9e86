//! Integration tests: the real server on random ports against a real PostgreSQL, a fresh
//! database per test.

mod admission;
mod artefacts;
mod audit;
mod binding_limits;
mod canary;
mod cli;
mod conformance;
mod create;
mod data_path;
mod demo;
mod deploy;
mod downloads;
mod fairness;
mod fleet;
mod helpers;
mod idempotency;
mod identity;
mod ingest_limits;
mod isolation;
mod kafka;
mod lifecycle;
mod lifecycle_events;
mod list;
mod oidc;
mod packaging;
mod plugin_gate;
mod plugin_run;
mod plugins;
mod probes;
mod quotas;
mod rate_limit;
mod record_mode;
mod registry;
mod scaffold;
mod streamed_put;
