//! Packaging under store faults: a transient failure is retried for as long as the export
//! lives (never "failed after N attempts"), and only a permanent cause fails the export, with
//! the reason shown in its status.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, export_request, free_port};

const EXAMPLE_PSK: Option<&str> = Some("psk-example");
const JSON_UPLOAD: &str = r#"{"data": [{"id": 1, "name": "alpha"}]}"#;

/// A replica that takes uploads but packages nothing, with one export whose only source was
/// delivered: its packaging job waits for a worker. Returns the replica, the bucket, the
/// export id and its caller.
async fn delivered_without_worker(database: &str) -> (TestApp, String, String, Caller) {
    let bucket = format!("exsvc-test-{}", uuid::Uuid::new_v4().simple());
    let app = TestApp::spawn_on(
        database,
        &[
            ("PACKAGING_WORKER", "false"),
            ("EXPORT_SERVICE_BUCKET", &bucket),
        ],
    )
    .await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("faults", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = created["id"].as_str().unwrap().to_owned();
    let source = created["sources"][0]["id"].as_str().unwrap().to_owned();
    let reply = app
        .upload(&export, "exampleApp", &source, EXAMPLE_PSK, JSON_UPLOAD)
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.json());
    (app, bucket, export, caller)
}

async fn attempts(app: &TestApp, export: &str) -> i32 {
    sqlx::query_scalar("SELECT attempts FROM package_jobs WHERE export_id = $1::uuid")
        .bind(export)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn packaging_keeps_retrying_through_a_store_outage_and_then_completes() {
    let database = crate::helpers::fresh_database().await;
    let (api, bucket, export, caller) = delivered_without_worker(&database).await;
    // As if the job had already failed many times: the old rule gave up after eight.
    sqlx::query("UPDATE package_jobs SET attempts = 20 WHERE export_id = $1::uuid")
        .bind(&export)
        .execute(&api.pool)
        .await
        .unwrap();
    // A worker whose object store is down (nothing listens on its endpoint).
    let dead_store = format!("http://127.0.0.1:{}", free_port());
    let broken = TestApp::spawn_on(
        &database,
        &[
            ("EXPORT_SERVICE_BUCKET", &bucket),
            ("S3_ENDPOINT", &dead_store),
            ("S3_CREATE_BUCKET", "false"),
            ("PACKAGE_RETRY_MAX_DELAY", "1s"),
            ("S3_OPERATION_TIMEOUT", "2s"),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while attempts(&api, &export).await < 23 {
        assert!(
            Instant::now() < deadline,
            "the worker did not retry three more times"
        );
        let status = api
            .get(&format!("/api/export/v1/exports/{export}/status"), &caller)
            .await
            .json();
        assert_eq!(status["status"], "running", "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = api
        .get(&format!("/api/export/v1/exports/{export}/status"), &caller)
        .await
        .json();
    assert_eq!(
        status["status"], "running",
        "a transient fault never fails it"
    );
    assert!(status.get("message").is_none(), "{status}");
    // The third claim may still be running: two retries are certainly counted.
    let retries = broken
        .metric("export_service_packaging_retries_total")
        .await
        .unwrap_or_default();
    assert!(retries >= 2.0, "retries counted: {retries}");
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM package_jobs WHERE export_id = $1::uuid")
            .bind(&export)
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert!(
        last_error.is_some_and(|error| error.contains("unavailable")),
        "the job records why it waits"
    );
    broken.stop().await;

    // The store is back (a worker that reaches it): the export completes.
    sqlx::query("UPDATE package_jobs SET available_at = now() WHERE export_id = $1::uuid")
        .bind(&export)
        .execute(&api.pool)
        .await
        .unwrap();
    let worker = TestApp::spawn_on(&database, &[("EXPORT_SERVICE_BUCKET", &bucket)]).await;
    worker.wait_for_status(&caller, &export, "complete").await;
    let (_, archive) = worker.download(&caller, &export).await;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).expect("a valid ZIP");
    let mut data = String::new();
    zip.by_name(&format!(
        "{}.json",
        api.get(&format!("/api/export/v1/exports/{export}/status"), &caller)
            .await
            .json()["sources"][0]["id"]
            .as_str()
            .unwrap()
    ))
    .unwrap()
    .read_to_string(&mut data)
    .unwrap();
    assert_eq!(data, JSON_UPLOAD);
}

#[tokio::test]
async fn a_source_object_lost_after_its_upload_fails_the_export_at_once_with_the_reason() {
    let database = crate::helpers::fresh_database().await;
    let (api, bucket, export, caller) = delivered_without_worker(&database).await;
    let prefix = format!("org-1/{export}/");
    for key in api.store.list(&prefix).await.unwrap() {
        api.store.delete(&key).await.unwrap();
    }
    let worker = TestApp::spawn_on(&database, &[("EXPORT_SERVICE_BUCKET", &bucket)]).await;
    let status: Value = worker.wait_for_status(&caller, &export, "failed").await;
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("missing from the object store"),
        "the status says why: {status}"
    );
    assert_eq!(attempts(&worker, &export).await, 1, "not retried");
    assert_eq!(status["sources"][0]["status"], json!("complete"));
}
