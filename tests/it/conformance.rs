//! Our responses validate against the response schemas of the upstream's OpenAPI document,
//! loaded at test time from the shared reference (never copied into the project).

use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, export_request, upstream_reference};

/// The upstream spec's components, turned from OpenAPI 3.0 into JSON Schema (`nullable`).
fn upstream_components() -> Value {
    let path = upstream_reference("openapi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "the upstream OpenAPI document is needed at {} (set UPSTREAM_REFERENCE_DIR): {error}",
            path.display()
        )
    });
    let mut spec: Value = serde_json::from_str(&text).unwrap();
    convert_nullable(&mut spec);
    spec["components"].take()
}

fn convert_nullable(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(kind)) = map.get("type").cloned()
            {
                map.insert("type".into(), json!([kind, "null"]));
            }
            map.values_mut().for_each(convert_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(convert_nullable),
        _ => {}
    }
}

fn violations(components: &Value, schema_name: &str, instance: &Value) -> Vec<String> {
    let schema = json!({
        "$ref": format!("#/components/schemas/{schema_name}"),
        "components": components,
    });
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the upstream schema compiles");
    validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

fn assert_conforms(components: &Value, schema_name: &str, instance: &Value) {
    let errors = violations(components, schema_name, instance);
    assert!(
        errors.is_empty(),
        "{schema_name} violations: {errors:#?}\ninstance: {instance:#}"
    );
}

#[test]
fn the_schema_check_rejects_a_non_conforming_document() {
    let components = upstream_components();
    let broken = json!({"id": "not-a-uuid", "name": "n", "created_at": "yesterday", "format": "xml", "status": "done"});
    let errors = violations(&components, "ExportStatus", &broken);
    for field in ["/id", "/created_at", "/format", "/status"] {
        assert!(
            errors
                .iter()
                .any(|error| error.ends_with(&format!(" at {field}"))),
            "{field} should be reported: {errors:#?}"
        );
    }
    assert!(!errors.iter().any(|error| error.ends_with(" at /name")));
    let missing_links = json!({"data": [], "meta": {"count": 0}});
    assert!(!violations(&components, "ExportList", &missing_links).is_empty());
}

#[tokio::test]
async fn create_list_and_status_match_the_upstream_schemas() {
    let components = upstream_components();
    let app = TestApp::spawn().await;
    let caller = Caller::user_with_account("org-1", "alice", "acct");
    let body = json!({
        "name": "Conformance",
        "format": "json",
        "sources": [
            {"application": "exampleApp", "resource": "exampleResource", "filters": {"since": "2024-01-01"}},
            {"application": "otherApp", "resource": "events", "filters": {}},
        ],
    });
    let created = app.create(&caller, body).await;
    assert_conforms(&components, "ExportStatus", &created);

    let id = created["id"].as_str().unwrap();
    // A failed source carries `message` and `error`, which the schema types too.
    sqlx::query(
        "UPDATE sources SET status = 'failed', code = 500, message = 'boom' WHERE id = $1::uuid",
    )
    .bind(created["sources"][1]["id"].as_str().unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE exports SET status = 'partial', completed_at = now() WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let status = app
        .get(&format!("/api/export/v1/exports/{id}/status"), &caller)
        .await
        .json();
    assert!(status.get("completed_at").is_some());
    assert_conforms(&components, "ExportStatus", &status);

    app.create(
        &caller,
        export_request("second", "csv", &[("exampleApp", "exampleResource")]),
    )
    .await;
    for query in ["", "?limit=1", "?limit=1&offset=1", "?offset=5"] {
        let list = app
            .get(&format!("/api/export/v1/exports{query}"), &caller)
            .await
            .json();
        assert_conforms(&components, "ExportList", &list);
    }

    let error = app
        .get("/api/export/v1/exports/zzz/status", &caller)
        .await
        .json();
    assert_conforms(&components, "ErrorResponse", &error);
}

/// A source without filters carries `"filters": null`, as upstream (contract §4.3); the upstream
/// schema types `filters` as a non-nullable object, so that one path is the only violation.
#[tokio::test]
async fn sources_without_filters_differ_from_the_schema_only_where_upstream_does() {
    let components = upstream_components();
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("no filters", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    assert_eq!(created["sources"][0]["filters"], Value::Null);
    let errors = violations(&components, "ExportStatus", &created);
    assert!(
        !errors.is_empty(),
        "null filters are outside the upstream schema"
    );
    assert!(
        errors
            .iter()
            .all(|error| error.ends_with(" at /sources/0/filters")),
        "only the filters differ: {errors:#?}"
    );
}

#[tokio::test]
async fn error_responses_match_the_upstream_error_schema() {
    let components = upstream_components();
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let anonymous = crate::helpers::Reply::from(
        app.client
            .get(app.url("/api/export/v1/exports"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let errors = [
        anonymous,
        app.get("/api/export/v1/exports?limit=-1", &caller).await,
        app.get(
            &format!("/api/export/v1/exports/{}", uuid::Uuid::new_v4()),
            &caller,
        )
        .await,
        app.post_raw(
            "/api/export/v1/exports",
            &caller,
            r#"{"format":"csv","sources":[{"application":"x","resource":"y"}]}"#,
        )
        .await,
        app.post_raw("/api/export/v1/exports", &caller, "{").await,
        app.delete("/api/export/v1/exports/nope", &caller).await,
    ];
    for reply in errors {
        assert!(reply.status >= 400, "{}", reply.text);
        assert_conforms(&components, "ErrorResponse", &reply.json());
    }
}

#[tokio::test]
async fn the_upstream_example_request_is_accepted() {
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(upstream_reference("example_export_request.json")).unwrap(),
    )
    .unwrap();
    let app = TestApp::spawn_with(&[(
        "EXPORT_ENABLE_APPS",
        r#"{"exampleApplication":["exampleResource","anotherExampleResource"]}"#,
    )])
    .await;
    let caller = Caller::user("org-1", "alice");
    let created = app.create(&caller, example.clone()).await;
    assert_eq!(created["expires_at"], example["expires_at"]);
    assert_eq!(
        created["sources"][1]["filters"],
        example["sources"][1]["filters"]
    );
    assert_conforms(&upstream_components(), "ExportStatus", &created);
}
