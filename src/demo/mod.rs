//! The demo: a source application that answers export requests from Kafka through the internal
//! API ([`source`]), and a tenant that requests an export and downloads it ([`tenant`]). Both
//! run as `export-service demo …` subcommands (the README's run command and docker-compose use
//! them) and talk to the service only over its public interfaces.

use std::path::PathBuf;
use std::time::Duration;

pub mod data;
pub mod source;
pub mod tenant;

/// Why a demo step failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A Kafka client could not be created or used.
    #[error("Kafka: {0}")]
    Kafka(String),
    /// An event was not a resource request.
    #[error("not a resource request event: {0}")]
    BadEvent(String),
    /// The internal API kept failing.
    #[error("delivery to the internal API failed after retries: {0}")]
    Delivery(String),
    /// An HTTP call failed.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The service answered something unexpected.
    #[error("{0}")]
    Api(String),
    /// The export did not reach a final status in time.
    #[error("the export was not finished after {0:?}; last status: {1}")]
    TimedOut(Duration, String),
    /// A local file could not be written or read.
    #[error("{0}: {1}")]
    File(PathBuf, std::io::Error),
    /// The downloaded archive could not be read.
    #[error("the archive is unreadable: {0}")]
    Archive(String),
}
