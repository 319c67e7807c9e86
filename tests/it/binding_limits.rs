//! A binding's own plugin limits (`"limits"` in its configuration): more memory or call time
//! than the defaults reaches the plugin's sessions, a binding beyond what the replica can lend
//! is refused with the allowed range, and an upload whose session may use more memory than one
//! upload slot budgets holds more slots.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, export_request, plugin_component};
use crate::registry::{TOKEN, call, push};

/// Creates an export of exampleApp's `resource`; returns its id and the source's.
async fn export_of(app: &TestApp, resource: &str) -> (String, String) {
    let created = app
        .create(
            &Caller::user("org-1", "alice"),
            export_request("limits", "csv", &[("exampleApp", resource)]),
        )
        .await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["sources"][0]["id"].as_str().unwrap().to_owned(),
    )
}

async fn upload(app: &TestApp, resource: &str) -> (u16, Value) {
    let (export, source) = export_of(app, resource).await;
    let reply = app
        .upload(
            &export,
            "exampleApp",
            &source,
            Some("psk-example"),
            "id,name\n1,a\n",
        )
        .await;
    (reply.status, reply.json())
}

async fn bind(app: &TestApp, resource: &str, plugin: &str, config: Value) -> (u16, Value) {
    call(
        app,
        reqwest::Method::PUT,
        &format!("/bindings/exampleApp?resource={resource}"),
        Some(json!({"plugin": plugin, "version": "0.1.0", "config": config})),
    )
    .await
}

/// Uploads until the answer's message contains `expected` (a binding applies within about a
/// second), or panics.
async fn wait_for_refusal(app: &TestApp, resource: &str, expected: &str) {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = upload(app, resource).await;
        if body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(expected)
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {status} {body}, wanted {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_bindings_limits_reach_its_sessions_within_what_the_replica_can_lend() {
    // Two upload slots of 64 MiB each (5 MiB parts), both open to one application: a session
    // may have at most the default 32 MiB plus the other slot's 64.
    let app = TestApp::spawn_with(&[
        ("ADMIN_TOKEN", TOKEN),
        ("MAX_CONCURRENT_UPLOADS", "2"),
        ("MAX_UPLOADS_PER_APPLICATION", "2"),
    ])
    .await;
    for file in ["hostile_memory_bomb.wasm", "hostile_spin.wasm"] {
        let (status, pushed) = push(&app, plugin_component(file)).await;
        assert_eq!(status, 201, "{pushed}");
    }

    // Beyond the ceiling, or malformed: refused at once, saying what is allowed.
    let (status, refused) = bind(
        &app,
        "exampleResource",
        "hostile-memory-bomb",
        json!({"limits": {"memory_mib": 97}}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("1 to 96 MiB"),
        "{refused}"
    );
    let (status, refused) = bind(
        &app,
        "exampleResource",
        "hostile-memory-bomb",
        json!({"limits": {"memory": 64}}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("memory_mib"),
        "{refused}"
    );

    // Within it: the session runs with the binding's memory (the bomb now stops at 80 MiB, not
    // at the default 32).
    let (status, bound) = bind(
        &app,
        "exampleResource",
        "hostile-memory-bomb",
        json!({"limits": {"memory_mib": 80}}),
    )
    .await;
    assert_eq!(status, 200, "{bound}");
    wait_for_refusal(
        &app,
        "exampleResource",
        "exceeded its memory limit of 80 MiB",
    )
    .await;
    // An upload of the other resource holds one of the two slots: the bomb's upload gets its
    // own slot but not the second one its 80 MiB need.
    let (export, source) = export_of(&app, "anotherExampleResource").await;
    let held = crate::helpers::hold_upload(&app, &export, &source).await;
    wait_for_refusal(&app, "exampleResource", "holds 1 more upload slot").await;
    let (status, _) = upload(&app, "exampleResource").await;
    assert_eq!(status, 503);
    drop(held);
    wait_for_refusal(
        &app,
        "exampleResource",
        "exceeded its memory limit of 80 MiB",
    )
    .await;
    // And with the binding's call time.
    let (status, bound) = bind(
        &app,
        "anotherExampleResource",
        "hostile-spin",
        json!({"limits": {"call_timeout_ms": 250}}),
    )
    .await;
    assert_eq!(status, 200, "{bound}");
    wait_for_refusal(
        &app,
        "anotherExampleResource",
        "exceeded its time limit of 250 ms",
    )
    .await;
}
