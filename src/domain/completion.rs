//! What an export's completion event says: its final status, what each source delivered and
//! the archive's size and checksum. The relay wraps this `data` in the CloudEvent envelope.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::timestamp::serde_format;
use super::{Export, ExportStatus, Format, SourceStatus};

/// The `data` of a completion event (schema in `docs/EVENTS.md`).
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    /// The export.
    pub id: Uuid,
    /// The tenant's label.
    pub name: String,
    /// The organisation that owns the export.
    pub org_id: String,
    /// The user (or system) that requested it.
    pub username: String,
    /// The format of the delivered data.
    pub format: Format,
    /// `complete`, `partial` or `failed`.
    pub status: ExportStatus,
    /// When it was requested.
    #[serde(serialize_with = "serde_format::serialize")]
    pub created_at: DateTime<Utc>,
    /// When it reached its final status.
    #[serde(serialize_with = "serde_format::serialize")]
    pub completed_at: DateTime<Utc>,
    /// When it stops being available.
    #[serde(serialize_with = "serde_format::serialize")]
    pub expires_at: DateTime<Utc>,
    /// The archive; `null` when there is none (a failed export).
    pub archive: Option<CompletedArchive>,
    /// Why packaging failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Every source, in request order.
    pub sources: Vec<CompletedSource>,
}

/// The archive of a completed export.
#[derive(Debug, Clone, Serialize)]
pub struct CompletedArchive {
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

/// One source of a completed export.
#[derive(Debug, Clone, Serialize)]
pub struct CompletedSource {
    /// The source.
    pub id: Uuid,
    /// Its application.
    pub application: String,
    /// Its resource.
    pub resource: String,
    /// `complete` or `failed`.
    pub status: SourceStatus,
    /// Data rows delivered, when the format tells rows.
    pub rows: Option<u64>,
    /// Bytes delivered.
    pub bytes: Option<u64>,
    /// The error code of a failed source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The error message of a failed source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Completion {
    /// The completion of `export`; `None` while it is not final.
    pub fn of(export: &Export) -> Option<Self> {
        if !matches!(
            export.status,
            ExportStatus::Complete | ExportStatus::Partial | ExportStatus::Failed
        ) {
            return None;
        }
        Some(Self {
            id: export.id.as_uuid(),
            name: export.name.clone(),
            org_id: export.owner.org_id.as_str().to_owned(),
            username: export.owner.username.clone(),
            format: export.format,
            status: export.status,
            created_at: export.created_at,
            completed_at: export.completed_at.unwrap_or_else(Utc::now),
            expires_at: export.expires_at,
            archive: export.archive.as_ref().map(|archive| CompletedArchive {
                bytes: archive.bytes,
                sha256: archive.sha256.clone(),
            }),
            message: export.failure.clone(),
            sources: export
                .sources
                .iter()
                .map(|source| CompletedSource {
                    id: source.id.as_uuid(),
                    application: source.application.as_str().to_owned(),
                    resource: source.resource.as_str().to_owned(),
                    status: source.status,
                    rows: source.delivery.as_ref().and_then(|delivery| delivery.rows),
                    bytes: source.delivery.as_ref().map(|delivery| delivery.bytes),
                    code: source.code,
                    message: source.message.clone(),
                })
                .collect(),
        })
    }

    /// The serialised `data`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a completion always serialises")
    }
}
