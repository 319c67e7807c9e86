//! Record mode (contract 1.2.0) through the real service: validators written in Python
//! (`plugins/python/required-fields`, built with componentize-py), JavaScript
//! (`plugins/js/required-fields`, built with componentize-js) and Rust
//! (`plugins/required-fields-records`, the template `plugin new --lang rust` writes) by
//! scripts/build-plugins.sh get
//! the records the host split from CSV or JSON uploads and reject bad rows with their row and
//! field, while good uploads are stored.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Caller, Reply, TestApp, export_request, plugin_component};
use crate::registry::{admin_app, call, push};

async fn upload(app: &TestApp, content_type: &str, body: &str) -> Reply {
    let created = app
        .create(
            &Caller::user("org-1", "alice"),
            export_request("records", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    app.upload_as(
        created["id"].as_str().unwrap(),
        "exampleApp",
        created["sources"][0]["id"].as_str().unwrap(),
        Some("psk-example"),
        Some(content_type),
        body.to_owned(),
    )
    .await
}

fn rows_and_fields(reply: &Reply) -> Vec<(Value, Value)> {
    reply.json()["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|violation| (violation["row"].clone(), violation["field"].clone()))
        .collect()
}

#[tokio::test]
async fn a_python_validator_in_record_mode_rejects_bad_rows_and_passes_good_uploads() {
    validates_records("required_fields_py.wasm", "required-fields-py").await;
}

#[tokio::test]
async fn a_rust_validator_in_record_mode_rejects_bad_rows_and_passes_good_uploads() {
    validates_records("required_fields_records.wasm", "required-fields-records").await;
}

#[tokio::test]
async fn a_javascript_validator_in_record_mode_rejects_bad_rows_and_passes_good_uploads() {
    validates_records("required_fields_js.wasm", "required-fields-js").await;
}

/// Binds the required-fields validator `file` (named `name`) and checks what it does with good
/// and bad CSV and JSON uploads.
async fn validates_records(file: &str, name: &str) {
    let app = admin_app().await;
    let (status, pushed) = push(&app, plugin_component(file)).await;
    assert_eq!(status, 201, "{pushed}");
    // Its compiled artefact (tens of MiB, stored in parts) is kept for the other replicas.
    let artefacts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM plugin_artefacts WHERE digest = $1")
            .bind(pushed["plugin"]["digest"].as_str().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(artefacts, 1, "the artefact was stored");
    let bound = call(
        &app,
        reqwest::Method::PUT,
        "/bindings/exampleApp",
        Some(json!({
            "plugin": name,
            "version": "1.0.0",
            "config": {"required": ["id", "name"], "numeric": ["amount"]},
        })),
    )
    .await;
    assert_eq!(bound.0, 200, "{}", bound.1);

    // A CSV upload with a row missing its name and holding a non-number: both found, by row.
    let bad_csv = "id,name,amount\n1,a,3\n2,,x\n3,c,4\n";
    let started = Instant::now();
    let rejected = loop {
        let reply = upload(&app, "text/csv", bad_csv).await;
        if reply.status == 422 {
            break reply;
        }
        assert_eq!(reply.status, 202, "{}", reply.json());
        assert!(started.elapsed() < Duration::from_secs(10), "never bound");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        rows_and_fields(&rejected),
        vec![(json!(2), json!("name")), (json!(2), json!("amount"))],
        "{}",
        rejected.json()
    );
    assert!(
        rejected.json()["message"].as_str().unwrap().contains(name),
        "{}",
        rejected.json()
    );

    // The same checks on JSON, whose records the host splits the same way.
    let bad_json = r#"{"data": [{"id": "1", "name": "a", "amount": 1}, {"id": "2", "name": " ", "amount": 7}, {"name": "z"}]}"#;
    let rejected = upload(&app, "application/json", bad_json).await;
    assert_eq!(rejected.status, 422, "{}", rejected.json());
    assert_eq!(
        rows_and_fields(&rejected),
        vec![(json!(2), json!("name")), (json!(3), json!("id"))]
    );

    // Good uploads are stored as they came (converted by the host when the export wants it).
    let good = upload(&app, "text/csv", "id,name,amount\n1,a,3\n2,b,4.5\n").await;
    assert_eq!(good.status, 202, "{}", good.json());
    assert_eq!(good.json()["plugin"]["name"], name);
    assert_eq!(good.json()["rows"], 2);
    let good = upload(&app, "application/json", r#"[{"id": 1, "name": "a"}]"#).await;
    assert_eq!(good.status, 202, "{}", good.json());
}
