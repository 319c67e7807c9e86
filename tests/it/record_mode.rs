//! Record mode (contracts 1.2.0 and 1.3.0) through the real service: validators written in Python
//! (`plugins/python/required-fields`, built with componentize-py), JavaScript
//! (`plugins/js/required-fields`, built with componentize-js) and Rust
//! (`plugins/required-fields-records`, the template `plugin new --lang rust` writes) by
//! scripts/build-plugins.sh get
//! the records the host split from CSV or JSON uploads and reject bad rows with their row and
//! field, while good uploads are stored. A transformer (`plugins/mask-fields`, 1.3.0) has the
//! records it returns stored in their place, written by the host as JSON or CSV.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Caller, Reply, TestApp, export_request, plugin_component};
use crate::registry::{admin_app, call, push};

async fn upload(app: &TestApp, content_type: &str, body: &str) -> Reply {
    upload_for(app, "csv", content_type, body).await.0
}

/// Uploads `body` to the one source of a new export in `format`; the reply and the export.
async fn upload_for(
    app: &TestApp,
    format: &str,
    content_type: &str,
    body: &str,
) -> (Reply, String) {
    let created = app
        .create(
            &Caller::user("org-1", "alice"),
            export_request("records", format, &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = created["id"].as_str().unwrap().to_owned();
    let reply = app
        .upload_as(
            &export,
            "exampleApp",
            created["sources"][0]["id"].as_str().unwrap(),
            Some("psk-example"),
            Some(content_type),
            body.to_owned(),
        )
        .await;
    (reply, export)
}

/// The one data file of `export`'s archive, once packaged.
/// Binds version 1.0.0 of `plugin` with `config` to every upload of exampleApp.
async fn bind(app: &TestApp, plugin: &str, config: Value) {
    let (status, body) = call(
        app,
        reqwest::Method::PUT,
        "/bindings/exampleApp",
        Some(json!({"plugin": plugin, "version": "1.0.0", "config": config})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn stored_data(app: &TestApp, export: &str, extension: &str) -> String {
    let caller = Caller::user("org-1", "alice");
    app.wait_for_status(&caller, export, "complete").await;
    let (_, archive) = app.download(&caller, export).await;
    let entries = crate::data_path::unzip(&archive);
    let (_, data) = entries
        .iter()
        .find(|(name, _)| name.ends_with(extension))
        .unwrap_or_else(|| panic!("no {extension} file in the archive"));
    String::from_utf8(data.clone()).unwrap()
}

#[tokio::test]
async fn a_record_transformer_has_the_records_it_returns_stored_in_their_place() {
    let app = admin_app().await;
    let (status, pushed) = push(&app, plugin_component("mask_fields.wasm")).await;
    assert_eq!(status, 201, "{pushed}");
    bind(
        &app,
        "mask-fields",
        json!({"mask": ["ssn"], "drop_empty": ["id"], "required": ["name"]}),
    )
    .await;

    // CSV in, CSV out (written by the host from the records returned), JSON for the export.
    let csv = "id,name,ssn\n1,ada,123-45-6789\n,ghost,000\n2,\"bob, jr\",987\n";
    let started = Instant::now();
    let (accepted, export) = loop {
        let (reply, export) = upload_for(&app, "json", "text/csv", csv).await;
        assert_eq!(reply.status, 202, "{}", reply.json());
        if reply.json()["plugin"]["name"] == "mask-fields" {
            break (reply, export);
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never bound");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        accepted.json()["rows"],
        2,
        "the dropped record is not stored"
    );
    let stored: Value = serde_json::from_str(&stored_data(&app, &export, ".json").await).unwrap();
    assert_eq!(
        stored,
        json!([
            {"id": "1", "name": "ada", "ssn": "***"},
            {"id": "2", "name": "bob, jr", "ssn": "***"},
        ])
    );

    // JSON in, JSON out, CSV for the export.
    let body = r#"{"data": [{"id": 7, "name": "eve", "ssn": "1"}, {"id": null, "name": "x"}]}"#;
    let (accepted, export) = upload_for(&app, "csv", "application/json", body).await;
    assert_eq!(accepted.status, 202, "{}", accepted.json());
    assert_eq!(
        stored_data(&app, &export, ".csv").await,
        "id,name,ssn\n7,eve,***\n"
    );

    // Its violations carry the rows of the records it was given, dropped ones counted.
    let (rejected, _) = upload_for(&app, "csv", "text/csv", "id,name\n,\n2,\n3,c\n").await;
    assert_eq!(rejected.status, 422, "{}", rejected.json());
    assert_eq!(
        rows_and_fields(&rejected),
        vec![(json!(1), json!("name")), (json!(2), json!("name"))]
    );
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
    bind(
        &app,
        name,
        json!({"required": ["id", "name"], "numeric": ["amount"]}),
    )
    .await;

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
