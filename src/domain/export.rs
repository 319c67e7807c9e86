//! Exports and their sources as the service knows them.

use super::ids::{Application, ExportId, OrgId, Resource, SourceId};
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::{ExportStatus, Format, SourceStatus};

/// The kinds of identity that can own exports. Part of the owner: a `System` whose CN equals a
/// user's username is a different owner from that user (the upstream does not tell them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// A person; named by `identity.user.username`.
    User,
    /// A service account; named by `identity.service_account.username`.
    ServiceAccount,
    /// A system (certificate); named by `identity.system.cn`.
    System,
}

impl IdentityKind {
    /// The stored form (the `exports.identity_type` column): the type as the upstream spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::ServiceAccount => "ServiceAccount",
            Self::System => "System",
        }
    }
}

impl std::str::FromStr for IdentityKind {
    type Err = ();

    /// Parses the stored form (exact spelling, as written by [`IdentityKind::as_str`]).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "User" => Ok(Self::User),
            "ServiceAccount" => Ok(Self::ServiceAccount),
            "System" => Ok(Self::System),
            _ => Err(()),
        }
    }
}

/// Who owns an export. Exports are private to one identity (kind and name) of one
/// organisation; the account is compared only when the caller has one (the upstream's rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The organisation (`identity.org_id`).
    pub org_id: OrgId,
    /// The legacy account number; empty when the identity has none.
    pub account_id: String,
    /// What kind of identity `username` names.
    pub kind: IdentityKind,
    /// The user name, service-account name or system CN.
    pub username: String,
}

/// A stored export.
#[derive(Debug, Clone)]
pub struct Export {
    /// Server-generated id.
    pub id: ExportId,
    /// Who requested it.
    pub owner: Owner,
    /// The tenant's label for it (may be empty).
    pub name: String,
    /// The format the tenant receives.
    pub format: Format,
    /// Where it is in its lifecycle.
    pub status: ExportStatus,
    /// The request id of the create call.
    pub request_id: Option<String>,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When it reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it stops being available.
    pub expires_at: DateTime<Utc>,
    /// The requested resources, in request order.
    pub sources: Vec<Source>,
    /// The packaged archive, once there is one.
    pub archive: Option<Archive>,
    /// Why packaging failed for good, when it did (shown with a failed export's status).
    pub failure: Option<String>,
}

/// A packaged archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// Its object key.
    pub key: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes, hex (the download's ETag).
    pub sha256: String,
}

/// What a source delivered: where its data is stored and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The object's key.
    pub object_key: String,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// Stored bytes.
    pub bytes: u64,
    /// Data rows, when known.
    pub rows: Option<u64>,
    /// The plugin that processed the upload.
    pub plugin: Option<PluginStamp>,
}

/// Which plugin processed an upload (recorded with the source, listed in `meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginStamp {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of its component.
    pub digest: String,
    /// How specific the binding that chose it was (absent for uploads recorded before scopes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<super::BindingScope>,
}

/// One requested resource of an export.
#[derive(Debug, Clone)]
pub struct Source {
    /// Server-generated id; the source application uses it to upload.
    pub id: SourceId,
    /// The application that owns the data.
    pub application: Application,
    /// The resource within that application.
    pub resource: Resource,
    /// The tenant's filters: a JSON object, kept verbatim (key order included).
    pub filters: Option<Box<RawValue>>,
    /// Where it is in its lifecycle.
    pub status: SourceStatus,
    /// The error code reported for a failed source.
    pub code: Option<i32>,
    /// The error message reported for a failed source.
    pub message: Option<String>,
    /// The stored data of a completed source.
    pub delivery: Option<Delivery>,
    /// The last upload refused while the source stayed pending.
    pub last_error: Option<RefusedUpload>,
}

/// An upload that was refused but left its source pending (it may be retried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedUpload {
    /// The HTTP status the uploader got.
    pub code: u16,
    /// The message the uploader got.
    pub message: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A validated request for a new export, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewExport {
    /// The id the export will have.
    pub id: ExportId,
    /// Who requested it.
    pub owner: Owner,
    /// The tenant's label.
    pub name: String,
    /// The format the tenant receives.
    pub format: Format,
    /// The request id of the create call.
    pub request_id: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry time.
    pub expires_at: DateTime<Utc>,
    /// The requested resources, in request order.
    pub sources: Vec<NewSource>,
}

/// One requested resource of a new export.
#[derive(Debug, Clone)]
pub struct NewSource {
    /// The id the source will have.
    pub id: SourceId,
    /// The application that owns the data.
    pub application: Application,
    /// The resource within that application.
    pub resource: Resource,
    /// The tenant's filters (a JSON object), compacted, in the client's key order.
    pub filters: Option<Box<RawValue>>,
}

impl NewExport {
    /// The export as it is once stored: every source pending.
    pub fn into_export(self) -> Export {
        Export {
            id: self.id,
            owner: self.owner,
            name: self.name,
            format: self.format,
            status: ExportStatus::Pending,
            request_id: self.request_id,
            created_at: self.created_at,
            completed_at: None,
            expires_at: self.expires_at,
            sources: self
                .sources
                .into_iter()
                .map(|source| Source {
                    id: source.id,
                    application: source.application,
                    resource: source.resource,
                    filters: source.filters,
                    status: SourceStatus::Pending,
                    code: None,
                    message: None,
                    delivery: None,
                    last_error: None,
                })
                .collect(),
            archive: None,
            failure: None,
        }
    }
}

impl Export {
    /// Whether the export is past its expiry at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }
}

/// An export as it appears in a list: no sources.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// Server-generated id.
    pub id: ExportId,
    /// The tenant's label.
    pub name: String,
    /// The format the tenant receives.
    pub format: Format,
    /// Where it is in its lifecycle.
    pub status: ExportStatus,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When it reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it stops being available.
    pub expires_at: DateTime<Utc>,
}
