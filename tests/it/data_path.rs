//! The data path end to end against the real S3-compatible server and PostgreSQL: uploads,
//! error reports, packaging, downloads (with Range), deletion and the cleaner.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Caller, TestApp, export_request};

pub(crate) const EXAMPLE_PSK: Option<&str> = Some("psk-example");
const OTHER_PSK: Option<&str> = Some("psk-other");

pub(crate) fn id(value: &Value) -> String {
    value["id"].as_str().unwrap().to_string()
}

pub(crate) fn source(export: &Value, index: usize) -> String {
    export["sources"][index]["id"].as_str().unwrap().to_string()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Entries of a ZIP archive, name → bytes (CRCs are checked while reading).
pub(crate) fn unzip(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).expect("a valid ZIP");
    (0..zip.len())
        .map(|index| {
            let mut file = zip.by_index(index).unwrap();
            let mut data = Vec::new();
            file.read_to_end(&mut data).unwrap();
            (file.name().unwrap().to_string(), data)
        })
        .collect()
}

pub(crate) fn entry<'a>(entries: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &entries
        .iter()
        .find(|(entry, _)| entry == name)
        .unwrap_or_else(|| panic!("no entry {name}"))
        .1
}

/// Creates a one-source export (exampleApp/exampleResource), delivers `body` and waits until
/// it is packaged. Returns the export id and the create response.
pub(crate) async fn delivered_export(
    app: &TestApp,
    caller: &Caller,
    name: &str,
    format: &str,
    body: &'static str,
) -> (String, Value) {
    let created = app
        .create(
            caller,
            export_request(name, format, &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = id(&created);
    let reply = app
        .upload(
            &export,
            "exampleApp",
            &source(&created, 0),
            EXAMPLE_PSK,
            body,
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    app.wait_for_status(caller, &export, "complete").await;
    (export, created)
}

/// An upload whose body the test feeds chunk by chunk.
pub(crate) struct StreamingUpload {
    pub(crate) sender: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    pub(crate) reply: tokio::task::JoinHandle<crate::helpers::Reply>,
}

/// Starts uploading to `source` with a first chunk, and waits until the source is held.
pub(crate) async fn start_streaming_upload(
    app: &TestApp,
    export: &str,
    source: &str,
    first_chunk: &[u8],
) -> StreamingUpload {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ));
    let url = app.internal_url(&format!(
        "/app/export/v1/{export}/exampleApp/{source}/upload"
    ));
    let client = app.client.clone();
    let reply = tokio::spawn(async move {
        let response = client
            .post(url)
            .header("x-rh-exports-psk", "psk-example")
            .body(body)
            .send()
            .await
            .unwrap();
        crate::helpers::Reply::from(response).await
    });
    sender.send(Ok(first_chunk.to_vec())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held: bool = sqlx::query_scalar(
            "SELECT upload_lease_until IS NOT NULL FROM sources WHERE id = $1::uuid",
        )
        .bind(source)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if held {
            return StreamingUpload { sender, reply };
        }
        assert!(Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const JSON_UPLOAD: &str = r#"{"data": [{"id": 1, "name": "alpha"}, {"id": 2, "name": "béta"}]}"#;
pub(crate) const CSV_UPLOAD: &str = "id,name\n1,alpha\n2,\"multi\nline\"\n3,gamma\n";

#[tokio::test]
async fn create_upload_package_download() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            json!({"name": "e2e", "format": "json", "sources": [
                {"application": "exampleApp", "resource": "exampleResource", "filters": {"b": 1, "a": "x"}},
                {"application": "exampleApp", "resource": "anotherExampleResource"},
            ]}),
        )
        .await;
    let export = id(&created);
    let (first, second) = (source(&created, 0), source(&created, 1));

    let reply = app
        .upload(&export, "exampleApp", &first, EXAMPLE_PSK, JSON_UPLOAD)
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json()["sha256"], sha256(JSON_UPLOAD.as_bytes()));
    assert_eq!(reply.json()["rows"], 2);
    let running = app
        .get(&format!("/api/export/v1/exports/{export}/status"), &caller)
        .await
        .json();
    assert_eq!(running["status"], "running");
    assert_eq!(running["sources"][0]["status"], "complete");
    app.get(&format!("/api/export/v1/exports/{export}"), &caller)
        .await
        .assert_error(400, &format!("'{export}' is not ready for download"));

    // The prefix path shape on the other mount works the same.
    let reply = crate::helpers::Reply::from(
        app.client
            .post(app.internal_url(&format!(
                "/internal/export/v1/upload/{export}/exampleApp/{second}"
            )))
            .header("x-rh-exports-psk", "psk-example")
            .header("x-request-id", "upload-42")
            .body(CSV_UPLOAD)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.header("x-request-id"), Some("upload-42"));
    assert_eq!(reply.json()["rows"], 3);

    let done = app.wait_for_status(&caller, &export, "complete").await;
    assert!(done.get("completed_at").is_some());

    let (headers, archive) = app.download(&caller, &export).await;
    assert_eq!(headers["content-type"], "application/zip");
    assert_eq!(
        headers["content-length"],
        archive.len().to_string().as_str()
    );
    assert_eq!(
        headers["etag"],
        format!("\"{}\"", sha256(&archive)).as_str()
    );
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"")
            && disposition.ends_with(&format!("-{export}.zip\"")),
        "{disposition}"
    );

    let entries = unzip(&archive);
    let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{first}.json").as_str(),
            &format!("{second}.json"),
            "meta.json",
            "README.md"
        ]
    );
    assert_eq!(
        entry(&entries, &format!("{first}.json")),
        JSON_UPLOAD.as_bytes()
    );
    // The CSV upload (sniffed: no Content-Type) was converted to the export's format, JSON.
    let converted: Value =
        serde_json::from_slice(entry(&entries, &format!("{second}.json"))).unwrap();
    assert_eq!(
        converted,
        json!([{"id": "1", "name": "alpha"}, {"id": "2", "name": "multi\nline"}, {"id": "3", "name": "gamma"}])
    );

    let meta: Value = serde_json::from_slice(entry(&entries, "meta.json")).unwrap();
    assert_eq!(meta["exported_by"], "alice");
    assert_eq!(meta["export_org_id"], "org-1");
    assert!(meta.get("failed_files").is_none());
    for index in 0..2 {
        let file = &meta["file_meta"][index];
        let name = file["filename"].as_str().unwrap();
        assert_eq!(
            file["sha256"],
            sha256(entry(&entries, name)),
            "checksums match the entries"
        );
        assert_eq!(file["bytes"], entry(&entries, name).len());
    }
    assert_eq!(
        meta["file_meta"][0]["bytes"],
        JSON_UPLOAD.len(),
        "same format: stored byte for byte"
    );
    assert_eq!(meta["file_meta"][0]["filters"], json!({"b": 1, "a": "x"}));
    let readme = String::from_utf8(entry(&entries, "README.md").to_vec()).unwrap();
    assert!(
        readme.contains("- **Filters**: \n  - b: 1\n  - a: x\n"),
        "{readme}"
    );
    assert!(readme.contains("No failures reported."));

    // A finished source cannot be written again.
    app.upload(&export, "exampleApp", &first, EXAMPLE_PSK, "again")
        .await
        .assert_error_containing(410, "already been processed");
    app.report_error(
        &export,
        "exampleApp",
        &first,
        EXAMPLE_PSK,
        json!({"message": "late", "error": 500}),
    )
    .await
    .assert_error_containing(410, "already been processed");

    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("export_service_total_s3_uploads 2"),
        "{metrics}"
    );
    assert!(metrics.contains("export_service_upload_sizes_count{app=\"exampleApp\"} 2"));
    assert!(metrics.contains(
        "export_service_internal_api_requests_total{base_path=\"/internal/export/v1\"} 1"
    ));
    assert!(metrics.contains("export_service_packaging_seconds_count 1"));
}

#[tokio::test]
async fn partial_when_one_source_errors_and_failed_when_all_do() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request(
                "p",
                "csv",
                &[("exampleApp", "exampleResource"), ("otherApp", "events")],
            ),
        )
        .await;
    let export = id(&created);
    assert_eq!(
        app.upload(
            &export,
            "exampleApp",
            &source(&created, 0),
            EXAMPLE_PSK,
            CSV_UPLOAD
        )
        .await
        .status,
        202
    );
    // "code" is accepted for "error".
    let reply = app
        .report_error(
            &export,
            "otherApp",
            &source(&created, 1),
            OTHER_PSK,
            json!({"message": "events backend down", "code": 503}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let status = app.wait_for_status(&caller, &export, "partial").await;
    assert_eq!(status["sources"][1]["status"], "failed");
    assert_eq!(status["sources"][1]["error"], 503);
    assert_eq!(status["sources"][1]["message"], "events backend down");

    let (_, archive) = app.download(&caller, &export).await;
    let entries = unzip(&archive);
    assert_eq!(entries.len(), 3, "one data file, meta.json, README.md");
    let meta: Value = serde_json::from_slice(entry(&entries, "meta.json")).unwrap();
    assert_eq!(
        meta["failed_files"][0]["filename"],
        format!("{}.csv", source(&created, 1))
    );
    assert_eq!(
        meta["failed_files"][0]["error"],
        json!({"code": "503", "message": "events backend down"})
    );
    assert_eq!(meta["file_meta"][0]["rows"], 3);
    let readme = String::from_utf8(entry(&entries, "README.md").to_vec()).unwrap();
    assert!(readme.contains(&format!("### {}.csv (Failed)", source(&created, 1))));
    assert!(readme.contains("- **Error Message**: events backend down"));

    let doomed = app
        .create(
            &caller,
            export_request(
                "f",
                "json",
                &[
                    ("exampleApp", "exampleResource"),
                    ("exampleApp", "anotherExampleResource"),
                ],
            ),
        )
        .await;
    let doomed_id = id(&doomed);
    for index in 0..2 {
        let reply = app
            .report_error(
                &doomed_id,
                "exampleApp",
                &source(&doomed, index),
                EXAMPLE_PSK,
                json!({"message": "nope", "error": 404}),
            )
            .await;
        assert_eq!(reply.status, 202);
    }
    let failed = app.wait_for_status(&caller, &doomed_id, "failed").await;
    assert!(failed.get("completed_at").is_some());
    app.get(&format!("/api/export/v1/exports/{doomed_id}"), &caller)
        .await
        .assert_error(400, &format!("'{doomed_id}' is not ready for download"));
    let objects = app
        .store
        .list(&format!("org-1/{doomed_id}/"))
        .await
        .unwrap();
    assert!(
        objects.is_empty(),
        "no archive for an export whose sources all failed: {objects:?}"
    );
}

#[tokio::test]
async fn keys_paths_limits_and_bad_reports() {
    let app = TestApp::spawn_with(&[("MAX_PAYLOAD_SIZE", "1")]).await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("k", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = id(&created);
    let first = source(&created, 0);

    app.upload(&export, "exampleApp", &first, None, "{}")
        .await
        .assert_error(400, "missing x-rh-exports-psk header");
    app.upload(&export, "exampleApp", &first, Some("wrong"), "{}")
        .await
        .assert_error(401, "invalid x-rh-exports-psk header for application");
    app.upload(&export, "exampleApp", &first, OTHER_PSK, "{}")
        .await
        .assert_error(401, "invalid x-rh-exports-psk header for application");
    app.upload(&export, "unknownApp", &first, EXAMPLE_PSK, "{}")
        .await
        .assert_error(403, "no PSK configured for application");
    // otherApp's valid key, naming its own application, cannot reach exampleApp's source.
    app.upload(&export, "otherApp", &first, OTHER_PSK, "{}")
        .await
        .assert_error(
            403,
            "the key of application 'otherApp' cannot write to a source of another application",
        );
    app.upload("not-a-uuid", "exampleApp", "nor-this", EXAMPLE_PSK, "{}")
        .await
        .assert_error(400, "'not-a-uuid' is not a valid export UUID");
    app.upload(&export, "exampleApp", "nope", EXAMPLE_PSK, "{}")
        .await
        .assert_error(400, "'nope' is not a valid resource UUID");
    let unknown = uuid::Uuid::new_v4();
    app.upload(
        &unknown.to_string(),
        "exampleApp",
        &first,
        EXAMPLE_PSK,
        "{}",
    )
    .await
    .assert_error(404, &format!("record '{unknown}' not found"));
    app.upload(
        &export,
        "exampleApp",
        &unknown.to_string(),
        EXAMPLE_PSK,
        "{}",
    )
    .await
    .assert_error(404, &format!("source '{unknown}' not found"));

    let too_big = vec![b'x'; 1024 * 1024 + 1];
    app.upload(&export, "exampleApp", &first, EXAMPLE_PSK, too_big)
        .await
        .assert_error(413, "payload is too large, max size: 1MB");
    // Without a Content-Length the limit is enforced while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..3).map(|_| Ok(vec![b'y'; 512 * 1024])).collect();
    app.upload(
        &export,
        "exampleApp",
        &first,
        EXAMPLE_PSK,
        reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
    )
    .await
    .assert_error(413, "payload is too large, max size: 1MB");
    assert!(
        app.store
            .list(&format!("org-1/{export}/"))
            .await
            .unwrap()
            .is_empty(),
        "nothing stored"
    );
    let status = app
        .get(&format!("/api/export/v1/exports/{export}/status"), &caller)
        .await
        .json();
    assert_eq!(
        status["sources"][0]["status"], "pending",
        "the source stays pending after 413"
    );

    for (body, message) in [
        (
            json!({"message": "x"}),
            "Both 'message' and 'code' are required fields",
        ),
        (
            json!({"error": 500}),
            "Both 'message' and 'code' are required fields",
        ),
        (
            json!({"message": "x", "error": 302}),
            "'error' must be an HTTP status code between 400 and 599, got 302",
        ),
    ] {
        app.report_error(&export, "exampleApp", &first, EXAMPLE_PSK, body)
            .await
            .assert_error(400, message);
    }

    // The application can still deliver.
    assert_eq!(
        app.upload(&export, "exampleApp", &first, EXAMPLE_PSK, JSON_UPLOAD)
            .await
            .status,
        202
    );
    app.wait_for_status(&caller, &export, "complete").await;
}

/// Creates a one-source export and uploads `{}` to it with `psk`.
async fn upload_with_key(app: &TestApp, psk: Option<&str>) -> crate::helpers::Reply {
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("k", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    app.upload(&id(&created), "exampleApp", &source(&created, 0), psk, "{}")
        .await
}

#[tokio::test]
async fn psk_modes_closed_shared_and_disabled() {
    let closed = TestApp::spawn_with(&[("EXPORTS_PSKS", "")]).await;
    upload_with_key(&closed, Some("anything"))
        .await
        .assert_error(
            403,
            "the internal API is closed: no pre-shared keys are configured",
        );

    let shared = TestApp::spawn_with(&[("EXPORTS_PSKS", "one, two")]).await;
    upload_with_key(&shared, Some("three"))
        .await
        .assert_error(401, "invalid x-rh-exports-psk header");
    assert_eq!(upload_with_key(&shared, Some("two")).await.status, 202);

    let open = TestApp::spawn_with(&[("DISABLE_SERVICE_TO_SERVICE_PSK_AUTH", "true")]).await;
    assert_eq!(upload_with_key(&open, None).await.status, 202);
}

#[tokio::test]
async fn range_requests_resume_to_identical_bytes() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("r", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = id(&created);
    let data: String = (0..20_000).map(|n| format!("{n},value {n}\n")).collect();
    assert_eq!(
        app.upload(
            &export,
            "exampleApp",
            &source(&created, 0),
            EXAMPLE_PSK,
            format!("id,value\n{data}")
        )
        .await
        .status,
        202
    );
    app.wait_for_status(&caller, &export, "complete").await;
    let (headers, full) = app.download(&caller, &export).await;
    let etag = headers["etag"].to_str().unwrap().to_string();
    let path = format!("/api/export/v1/exports/{export}");

    let first = app
        .request(reqwest::Method::GET, &path, &caller)
        .header("range", "bytes=0-999")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 206);
    assert_eq!(
        first.headers()["content-range"],
        format!("bytes 0-999/{}", full.len()).as_str()
    );
    assert_eq!(first.headers()["content-length"], "1000");
    let mut resumed = first.bytes().await.unwrap().to_vec();
    let rest = app
        .request(reqwest::Method::GET, &path, &caller)
        .header("range", "bytes=1000-")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 206);
    resumed.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(resumed, full, "the resumed download is identical");

    let stale = app
        .request(reqwest::Method::GET, &path, &caller)
        .header("range", "bytes=1000-")
        .header("if-range", "\"another-version\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200, "a changed archive is sent whole");
    let beyond = crate::helpers::Reply::from(
        app.request(reqwest::Method::GET, &path, &caller)
            .header("range", format!("bytes={}-", full.len()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    beyond.assert_error(416, &format!("the archive has {} bytes", full.len()));
    assert_eq!(
        beyond.header("content-range"),
        Some(format!("bytes */{}", full.len()).as_str())
    );
}

#[tokio::test]
async fn delete_removes_rows_and_objects() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let (export, _) = delivered_export(&app, &caller, "d", "json", JSON_UPLOAD).await;
    let prefix = format!("org-1/{export}/");
    assert_eq!(
        app.store.list(&prefix).await.unwrap().len(),
        2,
        "the upload and the archive"
    );
    assert_eq!(
        app.delete(&format!("/api/export/v1/exports/{export}"), &caller)
            .await
            .status,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.store.list(&prefix).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "objects were not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM object_deletions")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if queued == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the deletion stays queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_cleaner_removes_expired_exports_and_times_out_silent_sources() {
    let app = TestApp::spawn_with(&[
        ("CLEANER_GRACE", "1h"),
        ("SOURCE_TIMEOUT", "1h"),
        ("CLEANER_INTERVAL", "200ms"),
    ])
    .await;
    let caller = Caller::user("org-1", "alice");
    let (expired_id, _) = delivered_export(&app, &caller, "old", "json", JSON_UPLOAD).await;
    let recent = app
        .create(
            &caller,
            export_request("new", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let silent = app
        .create(
            &caller,
            export_request(
                "silent",
                "json",
                &[("exampleApp", "exampleResource"), ("otherApp", "events")],
            ),
        )
        .await;
    let silent_id = id(&silent);
    assert_eq!(
        app.upload(
            &silent_id,
            "exampleApp",
            &source(&silent, 0),
            EXAMPLE_PSK,
            JSON_UPLOAD
        )
        .await
        .status,
        202
    );

    // Expired two hours ago (beyond the 1 h grace); created two hours ago (beyond the timeout).
    sqlx::query("UPDATE exports SET expires_at = now() - interval '2 hours' WHERE id = $1::uuid")
        .bind(&expired_id)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE exports SET created_at = now() - interval '2 hours' WHERE id = $1::uuid")
        .bind(&silent_id)
        .execute(&app.pool)
        .await
        .unwrap();

    let status = app.wait_for_status(&caller, &silent_id, "partial").await;
    assert_eq!(status["sources"][1]["status"], "failed");
    assert_eq!(status["sources"][1]["error"], 504);
    assert!(
        status["sources"][1]["message"]
            .as_str()
            .unwrap()
            .contains("did not deliver")
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gone = app
            .get(
                &format!("/api/export/v1/exports/{expired_id}/status"),
                &caller,
            )
            .await
            .status
            == 404;
        let objects = app
            .store
            .list(&format!("org-1/{expired_id}/"))
            .await
            .unwrap();
        if gone && objects.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired export not cleaned: {objects:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still_there = app
        .get(
            &format!("/api/export/v1/exports/{}/status", id(&recent)),
            &caller,
        )
        .await;
    assert_eq!(still_there.status, 200);
    assert_eq!(
        still_there.json()["status"],
        "pending",
        "a recent source is not timed out"
    );
}

#[tokio::test]
async fn the_last_two_uploads_at_once_produce_exactly_one_archive() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    for round in 0..5 {
        let created = app
            .create(
                &caller,
                export_request(
                    &format!("race {round}"),
                    "json",
                    &[
                        ("exampleApp", "exampleResource"),
                        ("exampleApp", "anotherExampleResource"),
                    ],
                ),
            )
            .await;
        let export = id(&created);
        let (first, second) = (source(&created, 0), source(&created, 1));
        let (a, b) = tokio::join!(
            app.upload(&export, "exampleApp", &first, EXAMPLE_PSK, JSON_UPLOAD),
            app.upload(&export, "exampleApp", &second, EXAMPLE_PSK, JSON_UPLOAD),
        );
        assert_eq!((a.status, b.status), (202, 202));
        app.wait_for_status(&caller, &export, "complete").await;
        let (jobs, attempts): (i64, i64) = sqlx::query_as(
            "SELECT count(*), sum(attempts) FROM package_jobs WHERE export_id = $1::uuid",
        )
        .bind(&export)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!((jobs, attempts), (1, 1), "one job, packaged once");
        let zips: Vec<String> = app
            .store
            .list(&format!("org-1/{export}/"))
            .await
            .unwrap()
            .into_iter()
            .filter(|key| key.ends_with(".zip"))
            .collect();
        assert_eq!(zips.len(), 1, "{zips:?}");
    }
}

#[tokio::test]
async fn a_job_whose_worker_died_is_redriven_by_another() {
    let database = crate::helpers::fresh_database().await;
    let bucket = format!("exsvc-test-{}", uuid::Uuid::new_v4().simple());
    // Replica A takes uploads but packages nothing (its worker "died").
    let api_only = TestApp::spawn_on(
        &database,
        &[
            ("PACKAGING_WORKER", "false"),
            ("EXPORT_SERVICE_BUCKET", &bucket),
        ],
    )
    .await;
    let caller = Caller::user("org-1", "alice");
    let created = api_only
        .create(
            &caller,
            export_request("crash", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = id(&created);
    assert_eq!(
        api_only
            .upload(
                &export,
                "exampleApp",
                &source(&created, 0),
                EXAMPLE_PSK,
                JSON_UPLOAD
            )
            .await
            .status,
        202
    );
    // The dead worker had claimed the job: its lease runs for two more seconds.
    sqlx::query("UPDATE package_jobs SET attempts = 1, available_at = now() + interval '2 seconds' WHERE export_id = $1::uuid")
        .bind(&export)
        .execute(&api_only.pool)
        .await
        .unwrap();

    let worker = TestApp::spawn_on(&database, &[("EXPORT_SERVICE_BUCKET", &bucket)]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let during_lease = api_only
        .get(&format!("/api/export/v1/exports/{export}/status"), &caller)
        .await
        .json();
    assert_eq!(
        during_lease["status"], "running",
        "nobody steals a job before its lease ends"
    );
    let done = worker.wait_for_status(&caller, &export, "complete").await;
    assert_eq!(done["id"], json!(export));
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM package_jobs WHERE export_id = $1::uuid")
            .bind(&export)
            .fetch_one(&worker.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 2, "re-driven once");
    let zips: Vec<String> = worker
        .store
        .list(&format!("org-1/{export}/"))
        .await
        .unwrap()
        .into_iter()
        .filter(|key| key.ends_with(".zip"))
        .collect();
    assert_eq!(zips.len(), 1);
    let (_, archive) = worker.download(&caller, &export).await;
    assert_eq!(unzip(&archive).len(), 3);
}

/// An s3s-fs server of this test's own, on `port`, killed when dropped.
struct OwnS3(std::process::Child, std::path::PathBuf);

impl OwnS3 {
    fn start(port: u16) -> Self {
        let directory =
            std::env::temp_dir().join(format!("exsvc-s3-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&directory).unwrap();
        let binary = std::env::var("S3S_FS_BIN").unwrap_or_else(|_| {
            let installed = format!(
                "{}/.cargo/bin/s3s-fs",
                std::env::var("HOME").unwrap_or_default()
            );
            if std::path::Path::new(&installed).exists() {
                installed
            } else {
                "s3s-fs".into()
            }
        });
        let child = std::process::Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                crate::helpers::S3_ACCESS_KEY,
                "--secret-key",
                crate::helpers::S3_SECRET_KEY,
            ])
            .arg(&directory)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3s-fs is installed by scripts/ensure-s3.sh");
        Self(child, directory)
    }
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[tokio::test]
async fn an_unavailable_store_answers_503_and_the_retry_succeeds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let settings = [
        ("S3_ENDPOINT", endpoint.as_str()),
        ("S3_CREATE_BUCKET", "false"),
        ("EXPORT_SERVICE_BUCKET", "exports"),
    ];
    let app = TestApp::spawn_with(&settings).await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("u", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = id(&created);
    let first = source(&created, 0);

    let reply = app
        .upload(&export, "exampleApp", &first, EXAMPLE_PSK, JSON_UPLOAD)
        .await;
    reply.assert_error_containing(503, "object storage is unavailable");
    assert_eq!(reply.header("retry-after"), Some("5"));
    let status = app
        .get(&format!("/api/export/v1/exports/{export}/status"), &caller)
        .await
        .json();
    assert_eq!(status["sources"][0]["status"], "pending");

    // The store comes back; the application retries.
    let _server = OwnS3::start(port);
    let config = export_service::config::Config::from_settings(
        &export_service::config::Settings::from_pairs(
            [
                ("S3_ENDPOINT", endpoint.as_str()),
                ("AWS_ACCESS_KEY", crate::helpers::S3_ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", crate::helpers::S3_SECRET_KEY),
                ("EXPORT_SERVICE_BUCKET", "exports"),
                ("S3_CREATE_BUCKET", "true"),
            ]
            .map(|(name, value)| (name.to_string(), value.to_string())),
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match export_service::storage::ObjectStore::from_config(&config.store, &config.layout).await
        {
            Ok(_) => break,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the S3 server did not start: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let reply = app
        .upload(&export, "exampleApp", &first, EXAMPLE_PSK, JSON_UPLOAD)
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    app.wait_for_status(&caller, &export, "complete").await;
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("export_service_failed_s3_uploads 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_local_directory_store_serves_the_whole_flow() {
    let directory =
        std::env::temp_dir().join(format!("exsvc-objects-{}", uuid::Uuid::new_v4().simple()));
    let root = directory.to_str().unwrap().to_string();
    let app = TestApp::spawn_with(&[("OBJECT_STORE", "local"), ("STORAGE_DIR", &root)]).await;
    let caller = Caller::user("org-1", "alice");
    let (export, created) = delivered_export(&app, &caller, "l", "csv", CSV_UPLOAD).await;
    let (_, archive) = app.download(&caller, &export).await;
    assert_eq!(
        entry(&unzip(&archive), &format!("{}.csv", source(&created, 0))),
        CSV_UPLOAD.as_bytes()
    );
    assert!(
        directory
            .join("org-1")
            .join(&export)
            .join(format!("{export}.1.zip"))
            .exists()
    );
    assert_eq!(
        app.delete(&format!("/api/export/v1/exports/{export}"), &caller)
            .await
            .status,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while directory.join("org-1").join(&export).exists() {
        assert!(Instant::now() < deadline, "objects were not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(directory);
}

#[tokio::test]
async fn an_abandoned_upload_frees_its_source_for_the_retry() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("a", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = id(&created);
    let first = source(&created, 0);
    let streaming = start_streaming_upload(&app, &export, &first, b"id,name\n1,a\n").await;
    // A concurrent second upload, or an error report, is refused while the first runs.
    app.upload(&export, "exampleApp", &first, EXAMPLE_PSK, CSV_UPLOAD)
        .await
        .assert_error(409, "an upload for this source is already in progress");
    app.report_error(
        &export,
        "exampleApp",
        &first,
        EXAMPLE_PSK,
        json!({"message": "oops", "error": 500}),
    )
    .await
    .assert_error(409, "an upload for this source is already in progress");
    // The client goes away mid-body.
    streaming.reply.abort();
    drop(streaming.sender);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = app
            .upload(&export, "exampleApp", &first, EXAMPLE_PSK, CSV_UPLOAD)
            .await;
        if reply.status == 202 {
            break;
        }
        assert_eq!(reply.status, 409, "{}", reply.text);
        assert!(
            Instant::now() < deadline,
            "the abandoned upload kept its source"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.wait_for_status(&caller, &export, "complete").await;
}

#[tokio::test]
async fn uploads_in_the_other_format_are_converted_and_bad_shapes_rejected() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request(
                "conv",
                "csv",
                &[
                    ("exampleApp", "exampleResource"),
                    ("exampleApp", "anotherExampleResource"),
                ],
            ),
        )
        .await;
    let export = id(&created);
    let reply = app
        .upload_as(
            &export,
            "exampleApp",
            &source(&created, 0),
            EXAMPLE_PSK,
            Some("application/json"),
            JSON_UPLOAD,
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json()["converted_from"], "json");
    assert_eq!(reply.json()["rows"], 2);

    // Declared JSON, but not an array of records: 422, and the source fails visibly.
    let rejected = app
        .upload_as(
            &export,
            "exampleApp",
            &source(&created, 1),
            EXAMPLE_PSK,
            Some("application/json"),
            r#"[{"id": 1}, {"id": 2, "surprise": true}]"#,
        )
        .await;
    rejected.assert_error_containing(422, "upload rejected: record 2: has the key 'surprise'");
    assert_eq!(rejected.json()["violations"][0]["row"], 2);

    let status = app.wait_for_status(&caller, &export, "partial").await;
    assert_eq!(status["sources"][1]["status"], "failed");
    assert_eq!(status["sources"][1]["error"], 422);
    assert!(
        status["sources"][1]["message"]
            .as_str()
            .unwrap()
            .starts_with("upload rejected: record 2")
    );
    let (_, archive) = app.download(&caller, &export).await;
    let entries = unzip(&archive);
    assert_eq!(
        entry(&entries, &format!("{}.csv", source(&created, 0))),
        "id,name\n1,alpha\n2,béta\n".as_bytes()
    );
    let meta: Value = serde_json::from_slice(entry(&entries, "meta.json")).unwrap();
    assert_eq!(meta["failed_files"][0]["error"]["code"], "422");
    assert!(
        app.store
            .list(&format!("org-1/{export}/{}", source(&created, 1)))
            .await
            .unwrap()
            .is_empty(),
        "nothing stored for the rejected upload"
    );
}

#[tokio::test]
async fn an_upload_finishing_after_its_export_was_deleted_leaves_nothing() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("gone", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = id(&created);
    let first = source(&created, 0);
    let streaming = start_streaming_upload(&app, &export, &first, b"id,name\n1,a\n").await;
    assert_eq!(
        app.delete(&format!("/api/export/v1/exports/{export}"), &caller)
            .await
            .status,
        202
    );
    streaming.sender.send(Ok(b"2,b\n".to_vec())).await.unwrap();
    drop(streaming.sender);
    let reply = streaming.reply.await.unwrap();
    reply.assert_error(410, "the export was deleted while the upload ran");
    let prefix = format!("org-1/{export}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.store.list(&prefix).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the late upload's object was left behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn archives_pass_a_strict_independent_reader() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let (export, _) = delivered_export(&app, &caller, "strict", "json", JSON_UPLOAD).await;
    let (_, archive) = app.download(&caller, &export).await;
    let path = std::env::temp_dir().join(format!("exsvc-{export}.zip"));
    std::fs::write(&path, &archive).unwrap();
    // Python's zipfile checks every local header against the central directory and every CRC.
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\n\
             with zipfile.ZipFile(sys.argv[1]) as z:\n\
             \x20   bad = z.testzip()\n\
             \x20   assert bad is None, bad\n\
             \x20   for info in z.infolist():\n\
             \x20       assert z.read(info.filename) is not None\n\
             \x20   print(len(z.infolist()))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "3");
}

#[tokio::test]
async fn only_the_current_claim_can_record_an_archive() {
    use export_service::db::JobRepository;
    use export_service::domain::{Archive, ExportStatus};
    let app = TestApp::spawn_with(&[("PACKAGING_WORKER", "false")]).await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("claims", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = id(&created);
    assert_eq!(
        app.upload(
            &export,
            "exampleApp",
            &source(&created, 0),
            EXAMPLE_PSK,
            JSON_UPLOAD
        )
        .await
        .status,
        202
    );
    let jobs = JobRepository::new(app.pool.clone());
    let first = jobs
        .claim(Duration::from_secs(60))
        .await
        .unwrap()
        .expect("a job");
    assert!(
        jobs.claim(Duration::from_secs(60)).await.unwrap().is_none(),
        "claimed jobs are not handed out twice"
    );
    // The first worker stalls past its lease; a second one takes the job over.
    sqlx::query("UPDATE package_jobs SET available_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    let second = jobs
        .claim(Duration::from_secs(60))
        .await
        .unwrap()
        .expect("re-driven");
    assert_eq!(second.attempts, first.attempts + 1);
    assert!(
        !jobs
            .heartbeat(first, Duration::from_secs(60))
            .await
            .unwrap(),
        "the stale claim cannot extend"
    );
    // Nor reschedule the current claim, nor fail the export under it.
    jobs.retry_later(first, Duration::ZERO, "stale")
        .await
        .unwrap();
    jobs.give_up(first, "stale").await.unwrap();
    assert!(
        jobs.claim(Duration::from_secs(60)).await.unwrap().is_none(),
        "the current claim stands"
    );
    let status: String = sqlx::query_scalar("SELECT status FROM exports WHERE id = $1::uuid")
        .bind(&export)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "running", "a stale worker cannot fail the export");
    let archive = |attempt: i32| Archive {
        key: format!("org-1/{export}/{export}.{attempt}.zip"),
        bytes: 1,
        sha256: "00".repeat(32),
    };
    assert!(
        !jobs
            .finish(first, &archive(1), ExportStatus::Complete)
            .await
            .unwrap(),
        "the stale claim cannot record"
    );
    assert!(
        jobs.finish(second, &archive(2), ExportStatus::Complete)
            .await
            .unwrap()
    );
    let key: String = sqlx::query_scalar("SELECT archive_key FROM exports WHERE id = $1::uuid")
        .bind(&export)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(key.ends_with(".2.zip"));
}

#[tokio::test]
async fn csv_to_json_to_csv_through_the_upload_path_round_trips_exactly() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let original = "id,name,note,empty\n1,\"Smith, Jane\",\"said \"\"hi\"\"\",\n2,Zoë 🎉,\"two\nlines\",\n007,,plain,x\n";

    // CSV uploaded to a JSON export: stored as JSON (every value a string).
    let (as_json_export, created) =
        delivered_export(&app, &caller, "to-json", "json", original).await;
    let (_, archive) = app.download(&caller, &as_json_export).await;
    let json = entry(&unzip(&archive), &format!("{}.json", source(&created, 0))).to_vec();
    let records: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(records[0]["name"], "Smith, Jane");
    assert_eq!(records[1]["note"], "two\nlines");
    assert_eq!(records[2]["id"], "007", "numbers stay strings");
    assert_eq!(records[2]["name"], "");

    // That JSON uploaded to a CSV export: the original CSV again, byte for byte.
    let created = app
        .create(
            &caller,
            export_request("to-csv", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = id(&created);
    let reply = app
        .upload_as(
            &export,
            "exampleApp",
            &source(&created, 0),
            EXAMPLE_PSK,
            Some("application/json"),
            json,
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    app.wait_for_status(&caller, &export, "complete").await;
    let (_, archive) = app.download(&caller, &export).await;
    assert_eq!(
        entry(&unzip(&archive), &format!("{}.csv", source(&created, 0))),
        original.as_bytes()
    );
}
