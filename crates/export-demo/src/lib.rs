//! The export service's demo: a source application that answers export requests from Kafka
//! through the internal API ([`source`]), and a tenant that requests an export and downloads it
//! ([`tenant`]). Both run as `export-demo source|export` (the README's run command and
//! docker-compose use them) and talk to the service only over its public interfaces; this crate
//! does not depend on the service.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub mod data;
pub mod source;
pub mod tenant;

/// The two formats of the service's wire: what an export is requested in and what a source
/// uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Comma-separated values.
    Csv,
    /// JSON documents.
    Json,
}

impl Format {
    /// The wire spelling (`csv`, `json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            other => Err(format!("'{other}' is not csv or json")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

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

#[cfg(test)]
mod tests {
    use super::Format;

    #[test]
    fn formats_read_and_print_their_wire_spelling() {
        for format in [Format::Csv, Format::Json] {
            assert_eq!(format.to_string().parse::<Format>(), Ok(format));
        }
        assert!("xml".parse::<Format>().is_err());
        assert!("CSV".parse::<Format>().is_err());
    }
}
