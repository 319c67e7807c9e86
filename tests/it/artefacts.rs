//! Compile once per fleet: the replica a version is pushed through stores the compiled
//! artefact; the other replicas load it (from the object store, or from their artefact
//! directory after a restart) instead of compiling; an artefact whose bytes differ from the
//! record is never loaded, and the replica that compiled past it stores a good one.

use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, plugin_component};
use crate::registry::{TOKEN, call, push, wait_for_version};

fn loads(source: &str) -> String {
    format!(r#"export_service_plugin_loads_total{{source="{source}"}}"#)
}

/// Waits until `app` counted a load from `source`.
async fn wait_for_load(app: &TestApp, source: &str) {
    let started = Instant::now();
    while app.metric(&loads(source)).await.unwrap_or(0.0) < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no load from {source}: {}",
            app.metrics_text().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn artefact_record(app: &TestApp, digest: &str) -> (String, String) {
    sqlx::query_as("SELECT object_key, sha256 FROM plugin_artefacts WHERE digest = $1")
        .bind(digest)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn stored_bytes(app: &TestApp, key: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut body = app.store.get(key, None).await.unwrap().body;
    let mut bytes = Vec::new();
    body.read_to_end(&mut bytes).await.unwrap();
    bytes
}

#[tokio::test]
async fn replicas_load_the_artefact_compiled_at_push_and_never_a_tampered_one() {
    let database = crate::helpers::fresh_database().await;
    let bucket = format!("exsvc-test-{}", uuid::Uuid::new_v4().simple());
    let directory = std::env::temp_dir().join(format!("artefacts-{}", uuid::Uuid::new_v4()));
    let directory = directory.to_str().unwrap().to_owned();
    let shared = [
        ("ADMIN_TOKEN", TOKEN),
        ("EXPORT_SERVICE_BUCKET", bucket.as_str()),
    ];
    let with_directory = [
        ("ADMIN_TOKEN", TOKEN),
        ("EXPORT_SERVICE_BUCKET", bucket.as_str()),
        ("PLUGIN_ARTEFACT_DIR", directory.as_str()),
    ];
    let first = TestApp::spawn_on(&database, &shared).await;
    let second = TestApp::spawn_on(&database, &with_directory).await;

    // The push compiles once and stores the artefact, recorded with its SHA-256.
    let (status, pushed) = push(&first, plugin_component("tagger_v1.wasm")).await;
    assert_eq!(status, 201, "{pushed}");
    let digest = pushed["plugin"]["digest"].as_str().unwrap().to_owned();
    let (key, sha256) = artefact_record(&first, &digest).await;
    assert!(key.starts_with("_plugins/cwasm/"), "{key}");
    assert_eq!(
        hex::encode(Sha256::digest(stored_bytes(&first, &key).await)),
        sha256
    );

    // Bound through the first replica: the second loads the artefact from the object store
    // (nothing compiled there) and keeps it on disk.
    let bound = call(
        &first,
        reqwest::Method::PUT,
        "/bindings/exampleApp",
        Some(json!({"plugin": "tagger", "version": "1.0.0"})),
    )
    .await;
    assert_eq!(bound.0, 200, "{}", bound.1);
    wait_for_version(&second, Some("1.0.0")).await;
    wait_for_load(&second, "store").await;
    assert_eq!(second.metric(&loads("compiled")).await.unwrap_or(0.0), 0.0);
    let on_disk = std::fs::read_dir(&directory)
        .unwrap()
        .flat_map(|fingerprint| std::fs::read_dir(fingerprint.unwrap().path()).unwrap())
        .count();
    assert_eq!(on_disk, 1, "the artefact is kept in PLUGIN_ARTEFACT_DIR");

    // A restart with the same directory loads it from disk.
    drop(second);
    let restarted = TestApp::spawn_on(&database, &with_directory).await;
    wait_for_version(&restarted, Some("1.0.0")).await;
    wait_for_load(&restarted, "disk").await;
    assert_eq!(restarted.metric(&loads("store")).await.unwrap_or(0.0), 0.0);
    assert_eq!(
        restarted.metric(&loads("compiled")).await.unwrap_or(0.0),
        0.0
    );

    // Someone with write access to the bucket swaps the artefact for another valid one (of
    // tagger 2.0.0, which would load and run): a replica refuses it because its SHA-256 is not
    // the recorded one, compiles the component instead and stores a good artefact in its place.
    let (status, other) = push(&first, plugin_component("tagger_v2.wasm")).await;
    assert_eq!(status, 201, "{other}");
    let (other_key, _) = artefact_record(&first, other["plugin"]["digest"].as_str().unwrap()).await;
    let tampered = stored_bytes(&first, &other_key).await;
    first
        .store
        .put(&key, &mut tampered.as_slice(), "application/octet-stream")
        .await
        .unwrap();
    let fresh = TestApp::spawn_on(&database, &shared).await;
    wait_for_version(&fresh, Some("1.0.0")).await;
    wait_for_load(&fresh, "compiled").await;
    assert_eq!(fresh.metric(&loads("store")).await.unwrap_or(0.0), 0.0);
    let (repaired_key, repaired_sha) = artefact_record(&fresh, &digest).await;
    assert_eq!(
        hex::encode(Sha256::digest(stored_bytes(&fresh, &repaired_key).await)),
        repaired_sha,
        "the record names a good artefact again"
    );
    let next = TestApp::spawn_on(&database, &shared).await;
    wait_for_version(&next, Some("1.0.0")).await;
    wait_for_load(&next, "store").await;

    // Deleting the version (unbound first) deletes its artefact too.
    let unbound = call(
        &first,
        reqwest::Method::DELETE,
        "/bindings/exampleApp",
        None,
    )
    .await;
    assert_eq!(unbound.0, 200, "{}", unbound.1);
    let deleted = call(
        &first,
        reqwest::Method::DELETE,
        "/plugins/tagger/versions/1.0.0",
        None,
    )
    .await;
    assert!(deleted.0 == 204 || deleted.0 == 200, "{}", deleted.1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM plugin_artefacts WHERE digest = $1")
        .bind(&digest)
        .fetch_one(&first.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert!(first.store.get(&repaired_key, None).await.is_err());
    let _ = std::fs::remove_dir_all(&directory);
}
