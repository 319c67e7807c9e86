//! `Idempotency-Key` on `POST /exports`, against the real PostgreSQL: one export (and one set of
//! request events) per key and owner, however often and however concurrently it is sent.

use serde_json::Value;

use crate::helpers::{Caller, Reply, TestApp, export_request};

const EXPORTS: &str = "/api/export/v1/exports";

async fn create_keyed(app: &TestApp, caller: &Caller, key: &str, body: &str) -> Reply {
    Reply::from(
        app.request(reqwest::Method::POST, EXPORTS, caller)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn two_sources() -> String {
    export_request(
        "keyed",
        "csv",
        &[
            ("exampleApp", "exampleResource"),
            ("exampleApp", "anotherExampleResource"),
        ],
    )
    .to_string()
}

/// How many exports, and how many request events, the database holds.
async fn stored(app: &TestApp) -> (i64, i64) {
    let exports: i64 = sqlx::query_scalar("SELECT count(*) FROM exports")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    (exports, events)
}

#[tokio::test]
async fn the_same_key_and_body_answer_the_first_export_again() {
    let app = TestApp::spawn().await;
    let alice = Caller::user("org-1", "alice");
    let body = two_sources();
    let first = create_keyed(&app, &alice, "key-1", &body).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert!(first.header("idempotent-replayed").is_none());

    // The same request with other whitespace and key order is the same request.
    let reordered: Value = serde_json::from_str(&body).unwrap();
    let reordered = format!(
        "{{ \"sources\": {}, \"format\": \"csv\", \"name\": \"keyed\" }}",
        reordered["sources"]
    );
    for again in [body.as_str(), reordered.as_str()] {
        let replay = create_keyed(&app, &alice, "key-1", again).await;
        assert_eq!(replay.status, 202, "{}", replay.text);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.header("content-type"), Some("application/json"));
        assert_eq!(replay.text, first.text, "the same body as first answered");
    }
    assert_eq!(
        stored(&app).await,
        (1, 2),
        "one export, one event per source"
    );

    // A create without a key, or with another key, is a new export.
    app.create(&alice, serde_json::from_str(&body).unwrap())
        .await;
    assert_eq!(create_keyed(&app, &alice, "key-2", &body).await.status, 202);
    assert_eq!(stored(&app).await, (3, 6));
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_refused_and_keys_are_per_owner() {
    let app = TestApp::spawn().await;
    let alice = Caller::user("org-1", "alice");
    let body = two_sources();
    let first = create_keyed(&app, &alice, "shared", &body).await;
    assert_eq!(first.status, 202);
    let other = export_request("keyed", "json", &[("exampleApp", "exampleResource")]).to_string();
    let refused = create_keyed(&app, &alice, "shared", &other).await;
    refused.assert_error_containing(422, "Idempotency-Key 'shared' was used");
    assert!(refused.text.contains("use a new key"), "{}", refused.text);
    assert_eq!(stored(&app).await, (1, 2));

    // Another user of the same organisation, or a system with the same name, owns its keys.
    for caller in [
        Caller::user("org-1", "bob"),
        Caller::system("org-1", "alice"),
    ] {
        let theirs = create_keyed(&app, &caller, "shared", &body).await;
        assert_eq!(theirs.status, 202);
        assert!(theirs.header("idempotent-replayed").is_none());
        assert_ne!(theirs.json()["id"], first.json()["id"]);
    }
    assert_eq!(stored(&app).await, (3, 6));
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_export() {
    let app = TestApp::spawn().await;
    let alice = Caller::user("org-1", "alice");
    let body = two_sources();
    let replies =
        futures::future::join_all((0..8).map(|_| create_keyed(&app, &alice, "raced", &body))).await;
    let ids: std::collections::HashSet<String> = replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, 202, "{}", reply.text);
            reply.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every request answered the one export");
    let replayed = replies
        .iter()
        .filter(|reply| reply.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replayed, 7);
    assert_eq!(stored(&app).await, (1, 2));
}

#[tokio::test]
async fn a_key_past_its_day_creates_again_and_the_cleaner_forgets_it() {
    let app = TestApp::spawn().await;
    let alice = Caller::user("org-1", "alice");
    let body = two_sources();
    let first = create_keyed(&app, &alice, "daily", &body).await;
    sqlx::query("UPDATE idempotency_keys SET created_at = created_at - interval '25 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    let second = create_keyed(&app, &alice, "daily", &body).await;
    assert_eq!(second.status, 202);
    assert!(second.header("idempotent-replayed").is_none());
    assert_ne!(second.json()["id"], first.json()["id"]);
    // The key now names the second export.
    let replay = create_keyed(&app, &alice, "daily", &body).await;
    assert_eq!(replay.json()["id"], second.json()["id"]);

    let cleanup = export_service::db::cleanup::CleanupRepository::new(app.pool.clone());
    assert_eq!(cleanup.forget_idempotency_keys().await.unwrap(), 0);
    sqlx::query("UPDATE idempotency_keys SET created_at = created_at - interval '25 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(cleanup.forget_idempotency_keys().await.unwrap(), 1);
}

#[tokio::test]
async fn a_malformed_key_is_refused_before_anything_is_stored() {
    let app = TestApp::spawn().await;
    let alice = Caller::user("org-1", "alice");
    let body = two_sources();
    for key in ["has space", &"k".repeat(256)] {
        create_keyed(&app, &alice, key, &body)
            .await
            .assert_error_containing(400, "Idempotency-Key must be 1 to 255 visible ASCII");
    }
    // A bad body under a good key stores nothing, so the key stays free.
    create_keyed(&app, &alice, "fresh", "{\"name\": 1}")
        .await
        .assert_error_containing(400, "");
    assert_eq!(create_keyed(&app, &alice, "fresh", &body).await.status, 202);
    assert_eq!(stored(&app).await, (1, 2));
}
