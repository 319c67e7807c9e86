//! The demo end to end: the demo source application consumes the request events from the real
//! broker and answers through the internal API; a plugin converts its CSV to the export's JSON;
//! the demo tenant follows the progress, downloads the archive and reads its manifest.

use std::time::Duration;

use export_demo::data::Dataset;
use export_demo::source::{self, SourceSettings, UploadFormat};
use export_demo::tenant::{self, ExportSettings};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::helpers::{fresh_database, plugin_component};
use crate::kafka::{shared_broker, spawn_with_kafka_and, unique_topic};

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_source_answers_requests_from_kafka_and_the_tenant_gets_the_archive() {
    let plugins =
        std::env::temp_dir().join(format!("exsvc-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(
        plugins.join("exampleApp.wasm"),
        plugin_component("csv_json.wasm"),
    )
    .unwrap();
    let (brokers, topic) = (shared_broker(), unique_topic());
    let enabled =
        json!({"exampleApp": ["exampleResource", "anotherExampleResource", "payroll"]}).to_string();
    let database = fresh_database().await;
    let app = spawn_with_kafka_and(
        &database,
        &brokers,
        &topic,
        &[
            ("PLUGINS_DIR", plugins.to_str().unwrap()),
            ("EXPORT_ENABLE_APPS", &enabled),
        ],
    )
    .await;

    let settings = SourceSettings {
        brokers: brokers.clone(),
        topic: topic.clone(),
        group: format!("demo-{}", uuid::Uuid::new_v4().simple()),
        internal_url: format!("http://{}", app.private),
        application: "exampleApp".into(),
        psk: "psk-example".into(),
        rows: 150,
        upload_as: UploadFormat::Other,
        work_time: Duration::ZERO,
        cancel_topic: None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        source::run(&settings, async {
            let _ = stopped.await;
        })
        .await
    });

    let output = plugins.join("export.zip");
    let mut seen = Vec::new();
    let downloaded = tenant::run(
        &ExportSettings {
            public_url: format!("http://{}", app.public),
            org_id: "org-demo".into(),
            username: "alice".into(),
            name: "demo".into(),
            format: "json".into(),
            sources: vec![
                ("exampleApp".into(), "exampleResource".into()),
                ("exampleApp".into(), "anotherExampleResource".into()),
                ("exampleApp".into(), "payroll".into()),
            ],
            output: output.clone(),
            timeout: Duration::from_secs(60),
        },
        |progress| seen.push(progress.clone()),
    )
    .await
    .expect("the demo export finishes");

    // Progress was reported as it changed and ended final with every source answered.
    let last = seen.last().unwrap();
    assert_eq!((last.answered, last.total), (3, 3));
    assert_eq!(last.status, "partial");
    assert!(seen.windows(2).all(|pair| pair[0] != pair[1]), "{seen:?}");

    // The unknown resource was reported as an error the tenant sees.
    let payroll = downloaded.status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|source| source["resource"] == "payroll")
        .unwrap();
    assert_eq!(payroll["status"], "failed");
    assert!(payroll["message"].as_str().unwrap().contains("'payroll'"));

    // The manifest names the plugin that converted the CSV uploads, with the rows.
    let manifest = downloaded.manifest.expect("a manifest");
    let files = manifest["file_meta"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for file in files {
        assert_eq!(file["rows"], 150, "{file}");
        assert_eq!(file["plugin"]["name"], "csv-json", "{file}");
    }
    assert_eq!(manifest["failed_files"].as_array().unwrap().len(), 1);
    let names: Vec<&str> = downloaded
        .entries
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        names.contains(&"meta.json") && names.contains(&"README.md"),
        "{names:?}"
    );

    // The stored records are the generated ones, converted from CSV (so every value a string).
    let source_id = files[0]["filename"]
        .as_str()
        .unwrap()
        .trim_end_matches(".json");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&output).unwrap()).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut archive
            .by_name(files[0]["filename"].as_str().unwrap())
            .unwrap(),
        &mut text,
    )
    .unwrap();
    let stored: Value = serde_json::from_str(&text).unwrap();
    let expected = Dataset::generate(
        files[0]["resource"].as_str().unwrap(),
        source_id.parse().unwrap(),
        150,
    )
    .unwrap()
    .render(export_demo::Format::Json);
    let expected: Value = serde_json::from_slice(&expected).unwrap();
    let as_text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let expected = expected["data"].as_array().unwrap();
    let stored = stored.as_array().unwrap();
    assert_eq!(stored.len(), expected.len());
    for (got, want) in stored.iter().zip(expected) {
        let got: Vec<String> = got.as_object().unwrap().values().map(as_text).collect();
        let want: Vec<String> = want.as_object().unwrap().values().map(as_text).collect();
        assert_eq!(got, want);
    }

    stop.send(()).unwrap();
    running
        .await
        .unwrap()
        .expect("the demo source stops cleanly");
    app.stop().await;
    std::fs::remove_dir_all(&plugins).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_source_drops_requests_cancelled_while_it_works_on_them() {
    let (brokers, topic) = (shared_broker(), unique_topic());
    let app = spawn_with_kafka_and(&fresh_database().await, &brokers, &topic, &[]).await;
    let settings = SourceSettings {
        brokers: brokers.clone(),
        topic: topic.clone(),
        group: format!("demo-{}", uuid::Uuid::new_v4().simple()),
        internal_url: format!("http://{}", app.private),
        application: "exampleApp".into(),
        psk: "psk-example".into(),
        rows: 10,
        upload_as: UploadFormat::Requested,
        work_time: Duration::from_secs(8),
        cancel_topic: None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        source::run(&settings, async {
            let _ = stopped.await;
        })
        .await
    });
    let caller = crate::helpers::Caller::user("org-demo-cancel", "dora");
    let created = app
        .create(
            &caller,
            json!({"name": "cancelled", "format": "csv", "sources": [
                {"application": "exampleApp", "resource": "exampleResource"},
                {"application": "exampleApp", "resource": "anotherExampleResource"},
            ]}),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    // Delete once the requests are published: the source is working on the first one.
    crate::helpers::wait_until_sent(&app, 2).await;
    let reply = app
        .delete(&format!("/api/export/v1/exports/{id}"), &caller)
        .await;
    assert_eq!(reply.status, 202);
    // Both cancels are published, then the source gets past its work time and moves on.
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.send(()).unwrap();
    let tally = running
        .await
        .unwrap()
        .expect("the demo source stops cleanly");
    assert_eq!(
        tally,
        source::Tally {
            answered: 0,
            cancelled: 2
        }
    );
    app.stop().await;
}
