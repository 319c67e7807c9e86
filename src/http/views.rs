//! The JSON shapes of the public API's responses, in the upstream's key order (contract §4.3).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::db::exports::ListedExport;
use crate::domain::listing::PageLinks;
use crate::domain::timestamp::serde_format;
use crate::domain::{Export, ExportStatus, Format, Source, SourceStatus};

/// An export with its sources (create and status responses).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportDetail {
    /// The export's id.
    pub id: Uuid,
    /// When it was requested.
    #[serde(serialize_with = "serde_format::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// When it reached a final status; absent until then.
    #[serde(
        serialize_with = "serde_format::serialize_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<DateTime<Utc>>,
    /// When it stops being available.
    #[serde(serialize_with = "serde_format::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
    /// The tenant's label.
    pub name: String,
    /// The format of the delivered data.
    pub format: Format,
    /// Where the export is in its lifecycle.
    pub status: ExportStatus,
    /// The requested resources, in request order.
    pub sources: Vec<SourceView>,
    /// Why a failed export could not be packaged (its sources' own failures are on each source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How many of the sources have answered (delivered their data or failed); the export is
    /// packaged once all have. Not in the upstream.
    pub sources_answered: usize,
}

/// One requested resource and its state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceView {
    /// The source's id.
    pub id: Uuid,
    /// The application that owns the data.
    pub application: String,
    /// Where this resource is in its lifecycle.
    pub status: SourceStatus,
    /// The resource within the application.
    pub resource: String,
    /// The tenant's filters, as given; `null` when none.
    #[schema(value_type = Option<Object>)]
    pub filters: Option<Box<RawValue>>,
    /// Why the source failed; absent unless it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The error code the application reported; absent unless it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<i32>,
    /// Data rows stored for this source; present once it is uploaded, if its format tells rows.
    /// Not in the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes stored for this source; present once it is uploaded. Not in the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The last upload refused while the source stayed pending (too large, too slow, …): the
    /// application may upload again. Absent when there was none, and once the source settles.
    /// Not in the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastErrorView>,
}

/// A refused upload that left its source pending.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastErrorView {
    /// The HTTP status the application got.
    pub code: u16,
    /// The message it got.
    pub message: String,
    /// When.
    #[serde(serialize_with = "serde_format::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
}

/// An export in a list (no sources).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportListItem {
    /// The export's id.
    pub id: Uuid,
    /// The tenant's label.
    pub name: String,
    /// When it was requested.
    #[serde(serialize_with = "serde_format::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// When it reached a final status; absent until then.
    #[serde(
        serialize_with = "serde_format::serialize_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<DateTime<Utc>>,
    /// When it stops being available.
    #[serde(serialize_with = "serde_format::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
    /// The format of the delivered data.
    pub format: Format,
    /// Where the export is in its lifecycle.
    pub status: ExportStatus,
    /// How many sources the export has. Not in the upstream.
    pub sources_total: usize,
    /// How many of them have answered (delivered their data or failed). Not in the upstream.
    pub sources_answered: usize,
}

/// Pagination links (relative URLs).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinksView {
    /// The first page.
    pub first: String,
    /// The next page, or `null` on the last one.
    pub next: Option<String>,
    /// The previous page, or `null` on the first one.
    pub previous: Option<String>,
    /// The last page.
    pub last: String,
}

/// List metadata.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListMeta {
    /// How many exports match the filters, over all pages.
    pub count: i64,
}

/// A page of exports.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportList {
    /// Totals.
    pub meta: ListMeta,
    /// Links to other pages.
    pub links: LinksView,
    /// The exports on this page.
    pub data: Vec<ExportListItem>,
}

impl From<Export> for ExportDetail {
    fn from(export: Export) -> Self {
        let sources_answered = export
            .sources
            .iter()
            .filter(|source| source.status != SourceStatus::Pending)
            .count();
        Self {
            sources_answered,
            id: export.id.as_uuid(),
            created_at: export.created_at,
            completed_at: export.completed_at,
            expires_at: export.expires_at,
            name: export.name,
            format: export.format,
            status: export.status,
            sources: export.sources.into_iter().map(SourceView::from).collect(),
            message: export
                .failure
                .filter(|_| export.status == ExportStatus::Failed),
        }
    }
}

impl From<Source> for SourceView {
    fn from(source: Source) -> Self {
        Self {
            id: source.id.as_uuid(),
            application: source.application.into(),
            status: source.status,
            resource: source.resource.into(),
            filters: source.filters,
            message: source.message.filter(|message| !message.is_empty()),
            error: source.code.filter(|code| *code != 0),
            rows: source.delivery.as_ref().and_then(|delivery| delivery.rows),
            bytes: source.delivery.as_ref().map(|delivery| delivery.bytes),
            last_error: source.last_error.map(|refused| LastErrorView {
                code: refused.code,
                message: refused.message,
                at: refused.at,
            }),
        }
    }
}

impl From<ListedExport> for ExportListItem {
    fn from(listed: ListedExport) -> Self {
        let export = listed.summary;
        Self {
            id: export.id.as_uuid(),
            name: export.name,
            created_at: export.created_at,
            completed_at: export.completed_at,
            expires_at: export.expires_at,
            format: export.format,
            status: export.status,
            sources_total: listed.sources_total,
            sources_answered: listed.sources_answered,
        }
    }
}

impl From<PageLinks> for LinksView {
    fn from(links: PageLinks) -> Self {
        Self {
            first: links.first,
            next: links.next,
            previous: links.previous,
            last: links.last,
        }
    }
}
