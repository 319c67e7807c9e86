//! The bounds of the upload path against hostile data: format sniffing over a body of blanks,
//! conversion output that would multiply the stored size, and JSON nested without end — each
//! answered with its status and a message naming the limit, with nothing stored.

use serde_json::Value;
use sha2::Digest;

use crate::helpers::{Caller, TestApp, export_request, plugin_component};

const PSK: Option<&str> = Some("psk-example");

/// Creates an export of `format` with `count` exampleApp sources; its id and the sources' ids.
pub(crate) async fn export_with_sources(
    app: &TestApp,
    caller: &Caller,
    format: &str,
    count: usize,
) -> (String, Vec<String>) {
    let resources = ["exampleResource", "anotherExampleResource"];
    let sources: Vec<(&str, &str)> = (0..count)
        .map(|index| ("exampleApp", resources[index % 2]))
        .collect();
    let created = app
        .create(caller, export_request("limits", format, &sources))
        .await;
    let ids = created["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| source["id"].as_str().unwrap().to_owned())
        .collect();
    (created["id"].as_str().unwrap().to_owned(), ids)
}

/// A directory binding `exampleApp` to the csv-json plugin.
fn csv_json_plugin() -> std::path::PathBuf {
    let directory =
        std::env::temp_dir().join(format!("exsvc-plugins-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(
        directory.join("exampleApp.wasm"),
        plugin_component("csv_json.wasm"),
    )
    .unwrap();
    directory
}

async fn source_status(app: &TestApp, caller: &Caller, export: &str, index: usize) -> Value {
    let status = app
        .get(&format!("/api/export/v1/exports/{export}/status"), caller)
        .await
        .json();
    status["sources"][index].clone()
}

async fn nothing_stored(app: &TestApp, export: &str, source: &str) -> bool {
    app.store
        .list(&format!("org-1/{export}/{source}"))
        .await
        .unwrap()
        .is_empty()
}

/// CPU seconds this process (the test and the in-process service) has used.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name (which is in parentheses): utime is the 14th field.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // The kernel's USER_HZ (100 on Linux).
    ticks / 100.0
}

/// CSV whose single column has a `name_bytes`-long name, over one-byte rows, `bytes` in all.
fn long_name_over_short_rows(name_bytes: usize, bytes: usize) -> Vec<u8> {
    let mut csv = "n".repeat(name_bytes).into_bytes();
    csv.push(b'\n');
    while csv.len() < bytes {
        csv.extend_from_slice(b"1\n");
    }
    csv
}

#[tokio::test]
async fn converted_data_over_the_stored_limit_is_refused_and_nothing_is_kept() {
    // The limit: 1 MiB × 2.
    let app =
        TestApp::spawn_with(&[("MAX_PAYLOAD_SIZE", "1"), ("MAX_STORED_EXPANSION", "2")]).await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = export_with_sources(&app, &caller, "json", 2).await;

    // 1 MiB of CSV that would be about 4 GiB as JSON: refused once 2 MiB are converted.
    let csv = long_name_over_short_rows(8 * 1024, 1000 * 1024);
    let refused = app
        .upload_as(
            &export,
            "exampleApp",
            &sources[0],
            PSK,
            Some("text/csv"),
            csv,
        )
        .await;
    refused.assert_error(
        413,
        "upload rejected: the data as stored would exceed 2097152 bytes (MAX_PAYLOAD_SIZE × \
         MAX_STORED_EXPANSION); upload it in the export's format (json) or split it",
    );
    assert!(nothing_stored(&app, &export, &sources[0]).await);
    let failed = source_status(&app, &caller, &export, 0).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"], 413);
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("would exceed 2097152 bytes")
    );
    assert_eq!(
        app.metric(r#"export_service_refusals_total{limit="stored_size"}"#)
            .await,
        Some(1.0)
    );

    // Ordinary records convert within the same limit; a body over MAX_PAYLOAD_SIZE is counted
    // as the other refusal.
    app.upload(
        &export,
        "exampleApp",
        &sources[1],
        PSK,
        vec![b'x'; 1024 * 1024 + 1],
    )
    .await
    .assert_error(413, "payload is too large, max size: 1MB");
    assert_eq!(
        app.metric(r#"export_service_refusals_total{limit="payload_size"}"#)
            .await,
        Some(1.0)
    );
    // The source stays pending, and the tenant sees why.
    let waiting = source_status(&app, &caller, &export, 1).await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["last_error"]["code"], 413, "{waiting}");
    assert_eq!(
        waiting["last_error"]["message"],
        "payload is too large, max size: 1MB"
    );
    assert!(waiting["last_error"]["at"].is_string());
    // The refused source that failed for good shows its failure, not a last error.
    assert!(failed.get("last_error").is_none(), "{failed}");
    let mut ordinary = b"id,name,amount\n".to_vec();
    for row in 0..20_000 {
        ordinary.extend_from_slice(format!("{row},name-{row},{}.50\n", row % 1000).as_bytes());
    }
    let accepted = app
        .upload_as(
            &export,
            "exampleApp",
            &sources[1],
            PSK,
            Some("text/csv"),
            ordinary,
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let uploaded = source_status(&app, &caller, &export, 1).await;
    assert!(
        uploaded.get("last_error").is_none(),
        "a settled source forgets its refused attempts: {uploaded}"
    );
    assert_eq!(accepted.json()["rows"], 20_000);
    app.wait_for_status(&caller, &export, "partial").await;
}

#[tokio::test]
async fn a_plugins_output_over_the_stored_limit_is_refused_too() {
    let directory = csv_json_plugin();
    let app = TestApp::spawn_with(&[
        ("PLUGINS_DIR", directory.to_str().unwrap()),
        ("MAX_PAYLOAD_SIZE", "1"),
        ("MAX_STORED_EXPANSION", "1.5"),
    ])
    .await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = export_with_sources(&app, &caller, "json", 1).await;
    // A name short enough that one plugin call stays within its own output limit: the stored
    // limit is what stops it.
    let csv = long_name_over_short_rows(40, 1000 * 1024);
    let refused = app
        .upload_as(
            &export,
            "exampleApp",
            &sources[0],
            PSK,
            Some("text/csv"),
            csv,
        )
        .await;
    refused.assert_error_containing(413, "would exceed 1572864 bytes");
    assert!(nothing_stored(&app, &export, &sources[0]).await);
    assert_eq!(source_status(&app, &caller, &export, 0).await["error"], 413);
    let _ = std::fs::remove_dir_all(directory);
}

#[tokio::test]
async fn twenty_mib_of_blanks_of_undeclared_format_are_refused_after_a_bounded_prefix() {
    let directory = csv_json_plugin();
    let app = TestApp::spawn_with(&[("PLUGINS_DIR", directory.to_str().unwrap())]).await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = export_with_sources(&app, &caller, "json", 2).await;

    let before = process_cpu_seconds();
    let refused = app
        .upload_as(
            &export,
            "exampleApp",
            &sources[0],
            PSK,
            Some("application/octet-stream"),
            vec![b' '; 20 * 1024 * 1024],
        )
        .await;
    let cpu = process_cpu_seconds() - before;
    eprintln!("20 MiB of spaces as application/octet-stream, plugin-bound: {cpu:.2} s of CPU");
    refused.assert_error(
        422,
        "upload rejected: the format cannot be told: the first 65536 bytes are blank; send the \
         data with Content-Type text/csv or application/json",
    );
    // Generous (the quadratic sniffing took minutes of CPU in a debug build): sending the body
    // is most of it.
    assert!(cpu < 10.0, "{cpu} s of CPU");
    assert!(nothing_stored(&app, &export, &sources[0]).await);
    assert_eq!(source_status(&app, &caller, &export, 0).await["error"], 422);

    // Blanks within the prefix are kept and reach the plugin unchanged.
    let mut padded = vec![b'\n'; 60 * 1024];
    padded.extend_from_slice(b"id,name\n1,a\n2,b\n");
    let accepted = app
        .upload_as(
            &export,
            "exampleApp",
            &sources[1],
            PSK,
            Some("application/octet-stream"),
            padded,
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    assert_eq!(accepted.json()["rows"], 2);
    assert_eq!(accepted.json()["converted_from"], "csv");
    let _ = std::fs::remove_dir_all(directory);
}

#[tokio::test]
async fn json_nested_past_the_limit_is_refused_naming_the_record_and_the_limit() {
    let directory = csv_json_plugin();
    let plain = TestApp::spawn().await;
    let plugged = TestApp::spawn_with(&[("PLUGINS_DIR", directory.to_str().unwrap())]).await;
    let caller = Caller::user("org-1", "alice");
    let megabyte_of_brackets = vec![b'['; 1024 * 1024];
    let mut deep_record = br#"{"data": [{"id": 1}, {"id": "#.to_vec();
    deep_record.extend(std::iter::repeat_n(b'[', 100));
    // (JSON → CSV through the converter or the plugin, and JSON stored as it came.)
    for (app, format) in [(&plain, "csv"), (&plain, "json"), (&plugged, "csv")] {
        let (export, sources) = export_with_sources(app, &caller, format, 2).await;
        let refused = app
            .upload_as(
                &export,
                "exampleApp",
                &sources[0],
                PSK,
                Some("application/json"),
                megabyte_of_brackets.clone(),
            )
            .await;
        refused.assert_error(
            422,
            "upload rejected: record 1: nests deeper than 64 levels of arrays and objects (the \
             limit, counting the document's own)",
        );
        assert_eq!(refused.json()["violations"][0]["row"], 1);
        assert!(nothing_stored(app, &export, &sources[0]).await);
        assert_eq!(source_status(app, &caller, &export, 0).await["error"], 422);

        // Sniffed, inside the second record of a wrapped array.
        let refused = app
            .upload(&export, "exampleApp", &sources[1], PSK, deep_record.clone())
            .await;
        refused.assert_error_containing(422, "record 2: nests deeper than 64 levels");
        assert!(nothing_stored(app, &export, &sources[1]).await);
    }
    let _ = std::fs::remove_dir_all(directory);
}

#[tokio::test]
async fn a_sniffed_upload_converts_from_its_first_character() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = export_with_sources(&app, &caller, "json", 1).await;
    let accepted = app
        .upload_as(
            &export,
            "exampleApp",
            &sources[0],
            PSK,
            Some("application/octet-stream"),
            " \n\t id,name\n1,a\n",
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    assert_eq!(accepted.json()["converted_from"], "csv");
    // The blanks before `id` are not part of the first column's name.
    let expected = br#"[{"id":"1","name":"a"}]"#;
    let digest = sha2::Sha256::digest(expected);
    assert_eq!(accepted.json()["sha256"], hex::encode(digest));
    assert_eq!(accepted.json()["uploaded_bytes"], 16);
}

#[tokio::test]
async fn a_source_that_fails_forgets_its_refused_uploads() {
    let app = TestApp::spawn_with(&[("MAX_PAYLOAD_SIZE", "1")]).await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = export_with_sources(&app, &caller, "csv", 1).await;
    app.upload(
        &export,
        "exampleApp",
        &sources[0],
        PSK,
        vec![b'x'; 1024 * 1024 + 1],
    )
    .await
    .assert_error(413, "payload is too large, max size: 1MB");
    assert_eq!(
        source_status(&app, &caller, &export, 0).await["last_error"]["code"],
        413
    );
    let reply = app
        .report_error(
            &export,
            "exampleApp",
            &sources[0],
            PSK,
            serde_json::json!({"message": "gave up", "error": 500}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let failed = source_status(&app, &caller, &export, 0).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed.get("last_error").is_none(), "{failed}");
}
