//! Completion and cancel events, through the outbox, against the real broker, PostgreSQL and
//! S3 server: one completion per final export, carrying the archive's checksum; a cancel for
//! each source still pending when its export is deleted, and none for a request never sent.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Caller, TestApp, fresh_database, wait_until_sent};
use crate::kafka::{consume, shared_broker, spawn_with_kafka_and, unique_topic};

const CSV: &str = "id,name\n1,alpha\n2,beta\n3,gamma\n";

fn two_sources() -> Value {
    json!({"name": "events", "format": "csv", "sources": [
        {"application": "exampleApp", "resource": "exampleResource"},
        {"application": "otherApp", "resource": "events"},
    ]})
}

fn source(created: &Value, index: usize) -> String {
    created["sources"][index]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_final_export_publishes_one_completion_with_its_archive_checksum() {
    let (requests, completions) = (unique_topic(), unique_topic());
    let brokers = shared_broker();
    let app = spawn_with_kafka_and(
        &fresh_database().await,
        &brokers,
        &requests,
        &[("KAFKA_COMPLETION_TOPIC", completions.as_str())],
    )
    .await;
    let caller = Caller::user("org-done", "alice");

    // Complete: both sources upload.
    let complete = app.create(&caller, two_sources()).await;
    let complete_id = complete["id"].as_str().unwrap();
    for (index, (application, psk)) in [("exampleApp", "psk-example"), ("otherApp", "psk-other")]
        .into_iter()
        .enumerate()
    {
        let reply = app
            .upload(
                complete_id,
                application,
                &source(&complete, index),
                Some(psk),
                CSV,
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    app.wait_for_status(&caller, complete_id, "complete").await;
    let (_, archive) = app.download(&caller, complete_id).await;

    // Partial: one source reports an error.
    let partial = app.create(&caller, two_sources()).await;
    let partial_id = partial["id"].as_str().unwrap();
    app.upload(
        partial_id,
        "exampleApp",
        &source(&partial, 0),
        Some("psk-example"),
        CSV,
    )
    .await;
    let reply = app
        .report_error(
            partial_id,
            "otherApp",
            &source(&partial, 1),
            Some("psk-other"),
            json!({"message": "no such events", "error": 404}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    app.wait_for_status(&caller, partial_id, "partial").await;

    // Failed: every source reports an error.
    let failed = app.create(&caller, two_sources()).await;
    let failed_id = failed["id"].as_str().unwrap();
    for (index, (application, psk)) in [("exampleApp", "psk-example"), ("otherApp", "psk-other")]
        .into_iter()
        .enumerate()
    {
        app.report_error(
            failed_id,
            application,
            &source(&failed, index),
            Some(psk),
            json!({"message": "down", "error": 503}),
        )
        .await;
    }
    app.wait_for_status(&caller, failed_id, "failed").await;

    // Still pending: no completion.
    let pending = app.create(&caller, two_sources()).await;

    let messages = consume(
        &brokers,
        &completions,
        3,
        Duration::from_secs(30),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(
        messages.len(),
        3,
        "one completion per final export: {messages:#?}"
    );
    let by_export = |id: &str| {
        messages
            .iter()
            .find(|message| message.key == id)
            .unwrap_or_else(|| panic!("no completion for {id}: {messages:#?}"))
    };
    assert!(messages.iter().all(|message| message.key != pending["id"]));

    let done = by_export(complete_id);
    assert!(done.headers.is_empty(), "{:?}", done.headers);
    let event = &done.value;
    assert_eq!(
        event["type"],
        "com.redhat.console.export-service.export-completed"
    );
    assert_eq!(event["redhatorgid"], "org-done");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(
        event["subject"],
        format!("urn:redhat:subject:export-service:export:{complete_id}")
    );
    let data = &event["data"];
    assert_eq!(data["id"], complete_id);
    assert_eq!(data["status"], "complete");
    assert_eq!(data["org_id"], "org-done");
    assert_eq!(data["username"], "alice");
    assert_eq!(data["archive"]["bytes"], archive.len());
    assert_eq!(
        data["archive"]["sha256"],
        hex::encode(Sha256::digest(&archive)),
        "the checksum of the bytes a download returns"
    );
    for index in 0..2 {
        let source = &data["sources"][index];
        assert_eq!(source["status"], "complete");
        assert_eq!(source["rows"], 3);
        assert_eq!(source["bytes"], CSV.len());
    }
    assert_eq!(data["expires_at"], complete["expires_at"]);

    let half = &by_export(partial_id).value["data"];
    assert_eq!(half["status"], "partial");
    assert!(half["archive"]["sha256"].is_string());
    assert_eq!(half["sources"][1]["status"], "failed");
    assert_eq!(half["sources"][1]["code"], 404);
    assert_eq!(half["sources"][1]["message"], "no such events");

    let none = &by_export(failed_id).value["data"];
    assert_eq!(none["status"], "failed");
    assert_eq!(none["archive"], Value::Null);

    // Ids are unique and stable: the outbox row's id is the event's.
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM outbox WHERE kind = 'completion' ORDER BY seq")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let mut published: Vec<String> = messages.iter().map(|message| message.id()).collect();
    published.sort();
    let mut stored_sorted = stored.clone();
    stored_sorted.sort();
    assert_eq!(published, stored_sorted);
}

#[tokio::test]
async fn deleting_a_running_export_cancels_its_pending_sources() {
    let (requests, cancels) = (unique_topic(), unique_topic());
    let brokers = shared_broker();
    let app = spawn_with_kafka_and(
        &fresh_database().await,
        &brokers,
        &requests,
        &[("KAFKA_CANCEL_TOPIC", cancels.as_str())],
    )
    .await;
    let caller = Caller::user("org-cancel", "bob");
    let created = app
        .create(
            &caller,
            json!({"name": "to cancel", "format": "json", "sources": [
                {"application": "exampleApp", "resource": "exampleResource"},
                {"application": "otherApp", "resource": "events"},
                {"application": "exampleApp", "resource": "anotherExampleResource"},
            ]}),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    // The requests reached the applications.
    let announced = consume(
        &brokers,
        &requests,
        3,
        Duration::from_secs(30),
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(announced.len(), 3);
    wait_until_sent(&app, 3).await;
    // One source answers; the export is running.
    app.upload(
        id,
        "exampleApp",
        &source(&created, 0),
        Some("psk-example"),
        "[]",
    )
    .await;
    app.wait_for_status(&caller, id, "running").await;

    let reply = app
        .delete(&format!("/api/export/v1/exports/{id}"), &caller)
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);

    let messages = consume(
        &brokers,
        &cancels,
        2,
        Duration::from_secs(30),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        messages.len(),
        2,
        "one cancel per pending source: {messages:#?}"
    );
    let mut cancelled: Vec<(String, String)> = messages
        .iter()
        .map(|message| {
            assert_eq!(message.key, id);
            let event = &message.value;
            assert_eq!(
                event["type"],
                "com.redhat.console.export-service.request-cancelled"
            );
            assert_eq!(event["redhatorgid"], "org-cancel");
            let request = &event["data"]["resource_request"];
            assert_eq!(request["export_request_uuid"], id);
            assert_eq!(request["reason"], "the export was deleted");
            assert_eq!(
                message.headers[0],
                (
                    "application".to_string(),
                    request["application"].as_str().unwrap().to_string()
                )
            );
            (
                request["uuid"].as_str().unwrap().to_owned(),
                request["resource"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    cancelled.sort();
    let mut expected = vec![
        (source(&created, 1), "events".to_owned()),
        (source(&created, 2), "anotherExampleResource".to_owned()),
    ];
    expected.sort();
    assert_eq!(cancelled, expected, "the uploaded source is not cancelled");
}

#[tokio::test]
async fn a_request_never_published_is_withdrawn_instead_of_cancelled() {
    // No broker: the requests wait in the outbox, untouched.
    let app = TestApp::spawn_on(&fresh_database().await, &[]).await;
    let caller = Caller::user("org-quiet", "carol");
    let created = app.create(&caller, two_sources()).await;
    let id = created["id"].as_str().unwrap();
    let kept = app.create(&caller, two_sources()).await;
    let reply = app
        .delete(&format!("/api/export/v1/exports/{id}"), &caller)
        .await;
    assert_eq!(reply.status, 202);
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT export_id::text, kind FROM outbox ORDER BY seq")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                kept["id"].as_str().unwrap().to_owned(),
                "request".to_owned()
            ),
            (
                kept["id"].as_str().unwrap().to_owned(),
                "request".to_owned()
            ),
        ],
        "the deleted export's requests are gone and no cancel replaces them"
    );

    // A request a relay already claimed (attempts > 0) may be on its way: it gets a cancel.
    sqlx::query("UPDATE outbox SET attempts = 1 WHERE export_id = $1::uuid")
        .bind(kept["id"].as_str().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    app.delete(
        &format!("/api/export/v1/exports/{}", kept["id"].as_str().unwrap()),
        &caller,
    )
    .await;
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM outbox WHERE export_id = $1::uuid ORDER BY seq")
            .bind(kept["id"].as_str().unwrap())
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(kinds, ["request", "request", "cancel", "cancel"]);

    // A relay publishes the cancels only once their requests are out.
    let outbox = export_service::db::OutboxRepository::new(app.pool.clone());
    let kinds_of = |claimed: &[export_service::db::outbox::ClaimedEvent]| -> Vec<&'static str> {
        claimed
            .iter()
            .map(|event| event.event.kind.as_str())
            .collect()
    };
    let first = outbox
        .claim_due(100, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(kinds_of(&first), ["request", "request"]);
    let ids: Vec<uuid::Uuid> = first.iter().map(|event| event.event.id).collect();
    outbox.mark_sent(&ids).await.unwrap();
    let second = outbox
        .claim_due(100, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(kinds_of(&second), ["cancel", "cancel"]);
}
