//! Snapshots of the wire format: the generated OpenAPI documents and representative error
//! answers. An accidental change of a field, status, header or message shows up as a diff of
//! `tests/snapshots/` in review; an intended one is accepted with `cargo insta review` (or
//! `INSTA_UPDATE=always cargo test --test wire_snapshots`).

use std::time::Duration;

use axum::response::IntoResponse;
use export_plugin_host::Violation;
use export_service::delivery::{DeliveryError, Refusal};
use export_service::domain::{BindingKey, ExportId, SourceId};
use export_service::http::admin::AdminApiDoc;
use export_service::http::error::ApiError;
use export_service::http::openapi::PublicApiDoc;
use serde_json::{Value, json};
use utoipa::OpenApi;

#[test]
fn public_openapi_document() {
    insta::assert_json_snapshot!(PublicApiDoc::openapi());
}

#[test]
fn admin_openapi_document() {
    insta::assert_json_snapshot!(AdminApiDoc::openapi());
}

/// Status, the headers a client acts on, and the JSON body of an error answer.
async fn answer(error: impl Into<ApiError>) -> Value {
    let response = error.into().into_response();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let (content_type, retry_after) = (header("content-type"), header("retry-after"));
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    json!({
        "status": status,
        "content-type": content_type,
        "retry-after": retry_after,
        "body": serde_json::from_slice::<Value>(&body).unwrap(),
    })
}

#[tokio::test]
async fn upload_failures_as_answered() {
    let export_id: ExportId = "0b5b3c9e-2f0e-4a53-9a57-3b2f5f7c1d10".parse().unwrap();
    let source_id: SourceId = "6a1f0c5e-8d2b-4b7e-9c3a-1e2d3f4a5b6c".parse().unwrap();
    let refused = DeliveryError::Refused {
        refusal: Refusal::Data,
        message: "row 3: field 'name' is required".to_owned(),
        violations: vec![Violation {
            row: Some(3),
            field: Some("name".to_owned()),
            message: "is required".to_owned(),
        }],
    };
    let answers = json!({
        "too_large": answer(DeliveryError::TooLarge { limit: 500 * 1024 * 1024 }).await,
        "plugin_not_loaded": answer(DeliveryError::PluginNotLoaded {
            binding: BindingKey::new("exampleApp".into(), "*".into(), None),
        })
        .await,
        "export_not_found": answer(DeliveryError::ExportNotFound(export_id)).await,
        "source_not_found": answer(DeliveryError::SourceNotFound(source_id)).await,
        "already_processed": answer(DeliveryError::AlreadyProcessed).await,
        "in_progress": answer(DeliveryError::InProgress).await,
        "too_slow": answer(DeliveryError::TooSlow(Duration::from_secs(1800))).await,
        "idle": answer(DeliveryError::Idle(Duration::from_secs(30))).await,
        "refused": answer(refused).await,
    });
    insta::assert_json_snapshot!(answers);
}

#[tokio::test]
async fn tenant_errors_as_answered() {
    let answers = json!({
        "bad_request": answer(ApiError::bad_request("'abc' is not a valid export UUID")).await,
        "export_not_found": answer(ApiError::export_not_found("0b5b3c9e-2f0e-4a53-9a57-3b2f5f7c1d10")).await,
    });
    insta::assert_json_snapshot!(answers);
}
