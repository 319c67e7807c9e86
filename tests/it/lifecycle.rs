//! Status, download readiness, expiry and deletion of one export.

use serde_json::json;

use crate::helpers::{Caller, TestApp, export_request};

const EXPORTS: &str = "/api/export/v1/exports";

#[tokio::test]
async fn status_accepts_every_uuid_form_and_rejects_garbage() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("n", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let simple = id.replace('-', "");
    for form in [
        id.clone(),
        id.to_uppercase(),
        simple.clone(),
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
    ] {
        let reply = app.get(&format!("{EXPORTS}/{form}/status"), &caller).await;
        assert_eq!(reply.status, 200, "{form}: {}", reply.text);
        assert_eq!(reply.json()["id"], json!(id));
    }
    app.get(&format!("{EXPORTS}/not-a-uuid/status"), &caller)
        .await
        .assert_error(400, "'not-a-uuid' is not a valid export UUID");
    app.delete(&format!("{EXPORTS}/1234"), &caller)
        .await
        .assert_error(400, "'1234' is not a valid export UUID");
    app.get(&format!("{EXPORTS}/%FF/status"), &caller)
        .await
        .assert_error_containing(400, "invalid export id in the path");
    let unknown = uuid::Uuid::new_v4();
    app.get(&format!("{EXPORTS}/{unknown}/status"), &caller)
        .await
        .assert_error(404, &format!("record '{unknown}' not found"));
    // Trailing slashes route to the same handlers.
    assert_eq!(
        app.get(&format!("{EXPORTS}/{id}/status/"), &caller)
            .await
            .status,
        200
    );
    assert_eq!(app.get(&format!("{EXPORTS}/"), &caller).await.status, 200);
}

#[tokio::test]
async fn status_shows_failed_sources_with_their_error() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request(
                "n",
                "json",
                &[("exampleApp", "exampleResource"), ("otherApp", "events")],
            ),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let failed_source = created["sources"][1]["id"].as_str().unwrap();
    sqlx::query("UPDATE sources SET status = 'failed', code = 503, message = 'upstream down' WHERE id = $1::uuid")
        .bind(failed_source)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE sources SET status = 'success' WHERE id = $1::uuid")
        .bind(created["sources"][0]["id"].as_str().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let status = app
        .get(&format!("{EXPORTS}/{id}/status"), &caller)
        .await
        .json();
    assert_eq!(
        status["sources"][0]["status"], "complete",
        "legacy success reads as complete"
    );
    assert!(status["sources"][0].get("error").is_none());
    assert_eq!(status["sources"][1]["status"], "failed");
    assert_eq!(status["sources"][1]["error"], 503);
    assert_eq!(status["sources"][1]["message"], "upstream down");
}

#[tokio::test]
async fn download_is_refused_until_ready_and_after_expiry() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("n", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    for status in ["pending", "running", "failed"] {
        sqlx::query("UPDATE exports SET status = $1 WHERE id = $2::uuid")
            .bind(status)
            .bind(id)
            .execute(&app.pool)
            .await
            .unwrap();
        app.get(&format!("{EXPORTS}/{id}"), &caller)
            .await
            .assert_error(400, &format!("'{id}' is not ready for download"));
    }
    sqlx::query("UPDATE exports SET expires_at = now() - interval '1 minute' WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    app.get(&format!("{EXPORTS}/{id}"), &caller)
        .await
        .assert_error_containing(410, "expired at");
}

#[tokio::test]
async fn delete_answers_202_and_removes_the_export_and_its_sources() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request(
                "n",
                "json",
                &[("exampleApp", "exampleResource"), ("otherApp", "events")],
            ),
        )
        .await;
    let keep = app
        .create(
            &caller,
            export_request("keep", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let reply = app.delete(&format!("{EXPORTS}/{id}"), &caller).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert!(reply.text.is_empty());
    app.get(&format!("{EXPORTS}/{id}/status"), &caller)
        .await
        .assert_error(404, &format!("record '{id}' not found"));
    app.delete(&format!("{EXPORTS}/{id}"), &caller)
        .await
        .assert_error(404, &format!("record '{id}' not found"));
    let sources: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sources WHERE export_id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(sources, 0);
    let listed = app.get(EXPORTS, &caller).await.json();
    assert_eq!(listed["meta"]["count"], 1);
    assert_eq!(listed["data"][0]["id"], keep["id"]);
}

#[tokio::test]
async fn wrong_method_gets_405_in_the_json_envelope() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let reply = crate::helpers::Reply::from(
        app.request(reqwest::Method::PUT, EXPORTS, &caller)
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_error(405, "method not allowed on this endpoint");
}

#[tokio::test]
async fn status_shows_progress_and_asks_for_patience_while_running() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request(
                "n",
                "csv",
                &[("exampleApp", "exampleResource"), ("otherApp", "events")],
            ),
        )
        .await;
    assert_eq!(created["sources_answered"], 0);
    let id = created["id"].as_str().unwrap();
    let source = |index: usize| created["sources"][index]["id"].as_str().unwrap().to_owned();
    let status = || async {
        let reply = app.get(&format!("{EXPORTS}/{id}/status"), &caller).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        (reply.header("retry-after").map(str::to_owned), reply.json())
    };

    let (retry_after, detail) = status().await;
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(detail["sources_answered"], 0);
    assert!(detail["sources"][0].get("rows").is_none());
    assert!(detail["sources"][0].get("bytes").is_none());

    // Three records, one of them spanning two lines.
    let csv = "id,name\n1,alpha\n2,\"multi\nline\"\n3,gamma\n";
    let reply = app
        .upload(id, "exampleApp", &source(0), Some("psk-example"), csv)
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let (retry_after, detail) = status().await;
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(detail["status"], "running");
    assert_eq!(detail["sources_answered"], 1);
    assert_eq!(detail["sources"][0]["rows"], 3);
    assert_eq!(detail["sources"][0]["bytes"], csv.len());
    assert!(detail["sources"][1].get("bytes").is_none());

    let reply = app
        .report_error(
            id,
            "otherApp",
            &source(1),
            Some("psk-other"),
            json!({"message": "no events", "error": 404}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    app.wait_for_status(&caller, id, "partial").await;
    let (retry_after, detail) = status().await;
    assert_eq!(retry_after, None, "a final export needs no more polling");
    assert_eq!(detail["sources_answered"], 2);
    assert_eq!(detail["sources"][0]["rows"], 3);
    assert!(detail["sources"][1].get("rows").is_none());
}
