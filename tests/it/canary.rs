//! Canary rollouts through the admin API and the CLI: the tenants a canary takes, promotion,
//! abort, the refusals, and the automatic rollback of a canary that fails.

use std::time::{Duration, Instant};

use export_service::domain::OrgId;
use export_service::domain::canary::bucket;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, plugin_component};
use crate::registry::{admin_app, call, cli, push, upload_for, wait_for_org_version};

/// The first organisation named `{prefix}-N` whose bucket is below (`inside`) or at least
/// `share`.
fn org_with_bucket(prefix: &str, share: u8, inside: bool) -> String {
    (0..10_000)
        .map(|n| format!("{prefix}-{n}"))
        .find(|org| (bucket(&OrgId::from(org.as_str())) < share) == inside)
        .unwrap()
}

async fn start_canary(app: &TestApp, body: Value) -> (u16, Value) {
    call(app, Method::POST, "/bindings/exampleApp/canary", Some(body)).await
}

async fn bound(app: &TestApp, version: &str) {
    let (status, reply) = call(
        app,
        Method::PUT,
        "/bindings/exampleApp",
        Some(json!({"plugin": "tagger", "version": version})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
}

/// The newest canary of exampleApp, once its counts or state satisfy `done` (10 s at most).
async fn canary_when(app: &TestApp, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (_, listed) = call(app, Method::GET, "/bindings/exampleApp/canary", None).await;
        let newest = listed["data"][0].clone();
        if done(&newest) {
            return newest;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the canary never got there: {newest}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_canary_takes_its_share_and_its_list_and_is_promoted_for_everyone() {
    let app = admin_app().await;
    for file in ["tagger_v1.wasm", "tagger_v2.wasm"] {
        assert_eq!(push(&app, plugin_component(file)).await.0, 201);
    }
    bound(&app, "1.0.0").await;
    let inside = org_with_bucket("tenant", 30, true);
    let outside = org_with_bucket("tenant", 30, false);
    let listed = org_with_bucket("listed", 30, false);
    let (status, canary) = start_canary(
        &app,
        json!({"plugin": "tagger", "version": "2.0.0", "share_percent": 30,
               "org_ids": [listed], "min_uploads": 1000}),
    )
    .await;
    assert_eq!(status, 201, "{canary}");
    assert_eq!(
        (&canary["state"], &canary["share_percent"]),
        (&json!("running"), &json!(30))
    );

    wait_for_org_version(&app, &inside, "exampleResource", Some("2.0.0")).await;
    wait_for_org_version(&app, &listed, "exampleResource", Some("2.0.0")).await;
    for _ in 0..3 {
        let (status, version, _) = upload_for(&app, &outside, "exampleResource").await;
        assert_eq!((status, version.as_deref()), (202, Some("1.0.0")));
    }
    // An organisation's own binding wins over the canary.
    let (status, _) = call(
        &app,
        Method::PUT,
        &format!("/bindings/exampleApp?org_id={inside}"),
        Some(json!({"plugin": "tagger", "version": "1.0.0"})),
    )
    .await;
    assert_eq!(status, 200);
    wait_for_org_version(&app, &inside, "exampleResource", Some("1.0.0")).await;
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/bindings/exampleApp?org_id={inside}"),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Both sides are counted, by every replica, into the canary's record.
    let counted = canary_when(&app, |canary| {
        canary["canary_uploads"].as_u64() >= Some(2) && canary["stable_uploads"].as_u64() >= Some(3)
    })
    .await;
    assert_eq!(
        (&counted["canary_failures"], &counted["stable_failures"]),
        (&json!(0), &json!(0))
    );
    // One canary at a time, and its version cannot be deleted while it runs.
    let (status, reply) = start_canary(
        &app,
        json!({"plugin": "tagger", "version": "1.0.0", "share_percent": 5}),
    )
    .await;
    assert_eq!(status, 409, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("promote or abort it first"),
        "{reply}"
    );
    let (status, _) = call(&app, Method::DELETE, "/plugins/tagger/versions/2.0.0", None).await;
    assert_eq!(status, 409);

    let (status, promoted) = call(
        &app,
        Method::POST,
        "/bindings/exampleApp/canary/promote",
        None,
    )
    .await;
    assert_eq!((status, &promoted["state"]), (200, &json!("promoted")));
    wait_for_org_version(&app, &outside, "exampleResource", Some("2.0.0")).await;
    let (status, _) = call(
        &app,
        Method::POST,
        "/bindings/exampleApp/canary/promote",
        None,
    )
    .await;
    assert_eq!(status, 404, "nothing runs any more");
    let (_, history) = call(
        &app,
        Method::GET,
        "/bindings/exampleApp/history?org_id=*",
        None,
    )
    .await;
    let actions: Vec<(&str, &str)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| {
            (
                change["action"].as_str().unwrap(),
                change["version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [("promote", "2.0.0"), ("canary", "2.0.0"), ("bind", "1.0.0")]
    );
    // A rollback after a promotion goes back to the version before it.
    let (status, rolled) = call(&app, Method::POST, "/bindings/exampleApp/rollback", None).await;
    assert_eq!((status, &rolled["version"]), (200, &json!("1.0.0")));
}

#[tokio::test]
async fn a_canary_that_traps_is_rolled_back_by_the_service_with_the_reason() {
    let app = admin_app().await;
    assert_eq!(push(&app, plugin_component("tagger_v1.wasm")).await.0, 201);
    assert_eq!(
        push(&app, plugin_component("hostile_panic.wasm")).await.0,
        201
    );
    bound(&app, "1.0.0").await;
    let (status, canary) = start_canary(
        &app,
        json!({"plugin": "hostile-panic", "version": "0.1.0", "share_percent": 100,
               "min_uploads": 3, "max_failure_rate": 0.5}),
    )
    .await;
    assert_eq!(status, 201, "{canary}");
    // Wait until the canary is in force, then give it its three uploads.
    let started = Instant::now();
    let mut failed = 0;
    while failed < 3 {
        let (status, version, _) = upload_for(&app, "org-1", "exampleResource").await;
        if status != 202 {
            failed += 1;
        } else {
            assert_eq!(version.as_deref(), Some("1.0.0"));
            assert!(started.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ended = canary_when(&app, |canary| canary["state"] == "rolled-back").await;
    let reason = ended["reason"].as_str().unwrap();
    assert!(reason.contains("3/3 uploads (100 %)"), "{ended}");
    assert_eq!(ended["ended_by"], "export-service");
    assert_eq!(
        app.metric(r#"export_service_plugin_canary_rollbacks_total{application="exampleApp"}"#)
            .await,
        Some(1.0)
    );
    wait_for_org_version(&app, "org-1", "exampleResource", Some("1.0.0")).await;
    let (_, history) = call(&app, Method::GET, "/bindings/exampleApp/history", None).await;
    let newest = &history["data"][0];
    assert_eq!(
        (&newest["action"], &newest["version"], &newest["created_by"]),
        (
            &json!("auto-rollback"),
            &json!("0.1.0"),
            &json!("export-service")
        )
    );
    assert_eq!(newest["reason"].as_str(), Some(reason));
    // The binding was never touched.
    let (_, active) = call(&app, Method::GET, "/bindings", None).await;
    assert_eq!(active["data"][0]["version"], "1.0.0");
}

#[tokio::test]
async fn canary_requests_that_cannot_work_are_refused_with_what_to_change() {
    let app = admin_app().await;
    for file in ["tagger_v1.wasm", "tagger_v2.wasm"] {
        assert_eq!(push(&app, plugin_component(file)).await.0, 201);
    }
    for (body, status, part) in [
        (
            json!({"plugin": "tagger", "version": "2.0.0"}),
            422,
            "share_percent above 0 or some org_ids",
        ),
        (
            json!({"plugin": "tagger", "version": "2.0.0", "share_percent": 101}),
            422,
            "between 0 and 100",
        ),
        (
            json!({"plugin": "tagger", "version": "2.0.0", "share_percent": 5, "max_failure_rate": 5}),
            422,
            "fraction between 0 and 1",
        ),
        (
            json!({"plugin": "tagger", "version": "2.0.0", "org_ids": ["a b"]}),
            422,
            "org_id 'a b'",
        ),
        (
            json!({"plugin": "tagger", "version": "9.0.0", "share_percent": 5}),
            422,
            "no version 9.0.0",
        ),
        (
            json!({"plugin": "tagger", "version": "2.0.0", "share_percent": 5, "resource": "nope"}),
            422,
            "has no resource 'nope'",
        ),
    ] {
        let (got, reply) = start_canary(&app, body.clone()).await;
        assert_eq!(got, status, "{body}: {reply}");
        assert!(
            reply["message"].as_str().unwrap_or_default().contains(part),
            "{body}: {reply}"
        );
    }
    let (status, reply) = call(&app, Method::DELETE, "/bindings/exampleApp/canary", None).await;
    assert_eq!(status, 404, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("no canary runs on exampleApp/*"),
        "{reply}"
    );
}

// Multi-threaded: the CLI runs as a blocking child process while the service answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_starts_lists_and_aborts_a_canary() {
    let app = admin_app().await;
    for file in ["tagger_v1.wasm", "tagger_v2.wasm"] {
        assert_eq!(push(&app, plugin_component(file)).await.0, 201);
    }
    bound(&app, "1.0.0").await;
    let run = cli(&app);
    let (ok, out) = run(&[
        "canary",
        "exampleApp",
        "tagger",
        "2.0.0",
        "--share",
        "10",
        "--org",
        "org-1",
    ]);
    assert!(
        ok && out.contains("running") && out.contains("org-1"),
        "{out}"
    );
    wait_for_org_version(&app, "org-1", "exampleResource", Some("2.0.0")).await;
    let (ok, out) = run(&["canaries", "exampleApp"]);
    assert!(
        ok && out.contains("running") && out.contains("10%"),
        "{out}"
    );
    let (ok, out) = run(&["abort", "exampleApp"]);
    assert!(ok && out.contains("aborted"), "{out}");
    wait_for_org_version(&app, "org-1", "exampleResource", Some("1.0.0")).await;
    let (ok, out) = run(&["promote", "exampleApp"]);
    assert!(!ok && out.contains("404"), "{out}");
}
