//! The public API's OpenAPI document, generated from the handlers and response types, and a
//! documentation page that renders it.

use axum::Json;
use axum::response::Html;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::exports::{CreateExportRequest, CreateSourceRequest};
use super::views::{ExportDetail, ExportList, ExportListItem, LinksView, ListMeta, SourceView};
use crate::domain::{ExportStatus, Format, SourceStatus};

/// The public API, as documented at `/api/export/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Export Service — public API",
        description = "Request, track and download archives of your data. Wire-compatible with \
                       the console.redhat.com Export Service; see docs/API-DIFFERENCES.md.",
        version = "1.0.0"
    ),
    servers((url = "/api/export/v1")),
    paths(
        super::exports::create_export,
        super::exports::list_exports,
        super::exports::export_status,
        super::exports::download_export,
        super::exports::delete_export,
    ),
    components(schemas(
        ErrorBody, ExportDetail, SourceView, ExportList, ExportListItem, LinksView, ListMeta,
        CreateExportRequest, CreateSourceRequest, ExportStatus, SourceStatus, Format
    )),
    modifiers(&IdentityScheme),
    tags((name = "exports", description = "Tenant exports"))
)]
pub struct PublicApiDoc;

struct IdentityScheme;

impl Modify for IdentityScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "x-rh-identity",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-rh-identity",
                "Base64-encoded JSON identity set by the platform gateway: \
                 {\"identity\":{\"org_id\":…,\"type\":\"User\",\"user\":{\"username\":…}}}",
            ))),
        );
    }
}

/// `GET /api/export/v1/openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(PublicApiDoc::openapi())
}

/// `GET /docs`: a Redoc page rendering the OpenAPI document.
pub async fn docs_page() -> Html<&'static str> {
    Html(
        r#"<!DOCTYPE html>
<html>
  <head>
    <title>Export Service API</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
  </head>
  <body>
    <redoc spec-url="/api/export/v1/openapi.json"></redoc>
    <script src="https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js"></script>
  </body>
</html>
"#,
    )
}
