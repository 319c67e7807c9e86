//! Statuses of exports and sources, and the data formats an export can be delivered in.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Lifecycle of an export: `pending → running → complete | partial | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportStatus {
    /// Waiting for the first source to answer.
    Pending,
    /// At least one source answered; others are still outstanding or packaging runs.
    Running,
    /// Some sources failed; the archive holds the others.
    Partial,
    /// Every source delivered; the archive is ready.
    Complete,
    /// Every source failed; there is no archive.
    Failed,
}

/// Lifecycle of one requested resource: `pending → complete | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceStatus {
    /// The application has not answered yet.
    Pending,
    /// The application uploaded its data.
    Complete,
    /// The application reported an error, or its upload was rejected.
    Failed,
}

/// The format tenants receive their data in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values.
    Csv,
    /// JSON documents.
    Json,
}

/// A status or format string that is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value '{0}'")]
pub struct UnknownValue(pub String);

macro_rules! string_enum {
    ($type:ty { $($variant:ident => $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        impl $type {
            /// The wire and database spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl FromStr for $type {
            type Err = UnknownValue;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text $(| $alias)* => Ok(Self::$variant),)+
                    other => Err(UnknownValue(other.to_owned())),
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }
    };
}

string_enum!(ExportStatus {
    Pending => "pending",
    Running => "running",
    Partial => "partial",
    Complete => "complete",
    Failed => "failed",
});

// Rows written by older upstream versions may say `success`; it means `complete`.
string_enum!(SourceStatus {
    Pending => "pending",
    Complete => "complete" | "success",
    Failed => "failed",
});

string_enum!(Format {
    Csv => "csv",
    Json => "json",
});

impl ExportStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Running,
        Self::Partial,
        Self::Complete,
        Self::Failed,
    ];

    /// Whether the export's archive can be downloaded.
    pub fn is_downloadable(self) -> bool {
        matches!(self, Self::Complete | Self::Partial)
    }

    /// Whether the export still waits for sources or for its archive.
    pub fn is_in_progress(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

impl Format {
    /// The file extension of data in this format.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_legacy_success() {
        for status in ExportStatus::ALL {
            assert_eq!(status.as_str().parse::<ExportStatus>(), Ok(status));
        }
        assert_eq!(
            "success".parse::<SourceStatus>(),
            Ok(SourceStatus::Complete)
        );
        assert_eq!(SourceStatus::Complete.as_str(), "complete");
        assert!("CSV".parse::<Format>().is_err());
        assert!(ExportStatus::Partial.is_downloadable());
        assert!(!ExportStatus::Failed.is_downloadable());
    }
}
