//! The audit trail against the real PostgreSQL and S3 server: a record for every tenant action
//! and authentication failure and every admin change, in the action's transaction where it has
//! one; the admin query's filters and pagination; retention.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, export_request, plugin_component};

const TOKEN: &str = "audit-admin-token-0123456789";

async fn trail(app: &TestApp, query: &str) -> (u16, Value) {
    let response = app
        .client
        .get(format!("http://{}/admin/v1/audit{query}", app.private))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

fn actions(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            format!(
                "{}:{}",
                record["action"].as_str().unwrap(),
                record["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn every_tenant_action_and_refusal_is_recorded_and_queryable() {
    let app = TestApp::spawn_with(&[("ADMIN_TOKEN", TOKEN)]).await;
    let alice = Caller::user("org-audit", "alice");
    let created = app
        .create(
            &alice,
            export_request("audited", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let source = created["sources"][0]["id"].as_str().unwrap();
    app.get(&format!("/api/export/v1/exports/{id}/status"), &alice)
        .await;
    app.get("/api/export/v1/exports", &alice).await;
    app.upload(id, "exampleApp", source, Some("psk-example"), "a,b\n1,2\n")
        .await;
    app.wait_for_status(&alice, id, "complete").await;
    app.download(&alice, id).await;
    // Someone else's export is not found: a denied read.
    let mallory = Caller::user("org-other", "mallory");
    let refused = app
        .get(&format!("/api/export/v1/exports/{id}/status"), &mallory)
        .await;
    assert_eq!(refused.status, 404);
    assert_eq!(
        app.delete(&format!("/api/export/v1/exports/{id}"), &alice)
            .await
            .status,
        202
    );
    // No usable identity.
    let anonymous = app
        .client
        .get(app.url("/api/export/v1/exports"))
        .header("x-rh-identity", "not base64 at all")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 400);

    let (status, page) = trail(&app, "?org_id=org-audit").await;
    assert_eq!(status, 200, "{page}");
    let seen = actions(&page);
    // Newest first; wait_for_status polled /status several times, so those are counted apart.
    assert_eq!(
        seen.first().map(String::as_str),
        Some("delete:success"),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("create:success"),
        "{seen:?}"
    );
    for expected in ["list:success", "download:success", "read_status:success"] {
        assert!(
            seen.iter().any(|seen| seen == expected),
            "{expected} in {seen:?}"
        );
    }
    let create = page["data"].as_array().unwrap().last().unwrap();
    assert_eq!(create["resource_id"], id);
    assert_eq!(create["resource_type"], "export");
    assert_eq!(create["principal_user_id"], "alice");
    assert_eq!(create["principal_org_id"], "org-audit");
    assert_eq!(create["principal_type"], "User");
    assert_eq!(create["security_event"], false);
    assert!(
        create["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let download = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|record| record["action"] == "download")
        .unwrap();
    assert_eq!(download["security_event"], true);

    // Filters: the other organisation's denied read, with its reason.
    let (_, denied) = trail(&app, "?org_id=org-other&action=read_status").await;
    assert_eq!(actions(&denied), ["read_status:denied"]);
    assert!(
        denied["data"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{denied}"
    );
    let (_, failures) = trail(&app, "?action=auth_failure").await;
    assert_eq!(actions(&failures), ["auth_failure:denied"]);
    assert_eq!(failures["data"][0]["principal_type"], "anonymous");
    let (_, by_export) = trail(&app, &format!("?resource_id={id}&action=delete")).await;
    assert_eq!(actions(&by_export), ["delete:success"]);
    let (_, future) = trail(&app, "?since=2999-01-01T00:00:00Z").await;
    assert_eq!(actions(&future), Vec::<String>::new());

    // Pagination: pages of two, each older than the last, covering the whole trail once.
    let (_, all) = trail(&app, "?limit=1000").await;
    let total = all["data"].as_array().unwrap().len();
    let mut walked = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = trail(&app, &format!("?limit=2{cursor}")).await;
        walked.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|record| record["id"].as_i64().unwrap()),
        );
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(walked.len(), total);
    assert!(
        walked.windows(2).all(|pair| pair[0] > pair[1]),
        "{walked:?}"
    );

    // Bad filters are explained; the trail needs the admin token.
    let (status, bad) = trail(&app, "?action=dance").await;
    assert_eq!(status, 400);
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("unknown action 'dance'")
    );
    let unauthorised = app
        .client
        .get(format!("http://{}/admin/v1/audit", app.private))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
}

#[tokio::test]
async fn the_create_record_is_written_with_the_export_or_not_at_all() {
    let app = TestApp::spawn_with(&[("ADMIN_TOKEN", TOKEN), ("QUOTA_ACTIVE_EXPORTS", "1")]).await;
    let caller = Caller::user("org-tx", "tom");
    let body = export_request("one", "csv", &[("exampleApp", "exampleResource")]);
    app.create(&caller, body.clone()).await;
    let refused = app
        .post_raw("/api/export/v1/exports", &caller, body.to_string())
        .await;
    assert_eq!(refused.status, 429);
    let (_, page) = trail(&app, "?org_id=org-tx&action=create").await;
    assert_eq!(actions(&page), ["create:denied", "create:success"]);
    assert!(
        page["data"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("quota active_exports"),
        "{page}"
    );
    assert_eq!(page["data"][0]["resource_id"], "");

    // An idempotent replay is recorded once, naming the export it answers.
    let tim = Caller::user("org-tx2", "tim");
    let keyed = |key: &str| {
        app.request(reqwest::Method::POST, "/api/export/v1/exports", &tim)
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let first: Value = keyed("k-1").await.unwrap().json().await.unwrap();
    assert_eq!(keyed("k-1").await.unwrap().status(), 202);
    let (_, replays) = trail(&app, "?org_id=org-tx2").await;
    assert_eq!(actions(&replays), ["create:success", "create:success"]);
    for record in replays["data"].as_array().unwrap() {
        assert_eq!(record["resource_id"], first["id"]);
    }
    assert!(
        replays["data"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("replayed under Idempotency-Key 'k-1'")
    );

    // A source application with a wrong key is an authentication failure too.
    let refused = app
        .upload(
            first["id"].as_str().unwrap(),
            "exampleApp",
            first["sources"][0]["id"].as_str().unwrap(),
            Some("wrong-key"),
            "a\n1\n",
        )
        .await;
    assert_eq!(refused.status, 401);
    let (_, failures) = trail(&app, "?action=auth_failure").await;
    assert_eq!(failures["data"][0]["principal_type"], "application");
    assert_eq!(failures["data"][0]["principal_user_id"], "exampleApp");
    assert_eq!(
        failures["data"][0]["resource_id"],
        first["sources"][0]["id"]
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events a JOIN exports e ON e.id::text = a.resource_id \
         WHERE a.action = 'create' AND a.outcome = 'success' AND a.principal_org_id = 'org-tx'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1, "the success record names the stored export");
}

#[tokio::test]
async fn admin_changes_and_bad_tokens_are_recorded() {
    let app = TestApp::spawn_with(&[("ADMIN_TOKEN", TOKEN)]).await;
    let admin = |method: reqwest::Method, path: &str| {
        app.client
            .request(method, format!("http://{}/admin/v1{path}", app.private))
            .bearer_auth(TOKEN)
            .header("x-admin-user", "olga")
    };
    let pushed = admin(reqwest::Method::POST, "/plugins")
        .header("content-type", "application/wasm")
        .body(plugin_component("csv_json.wasm"))
        .send()
        .await
        .unwrap();
    assert!(pushed.status().is_success());
    let pushed: Value = pushed.json().await.unwrap();
    let name = pushed["plugin"]["name"].as_str().unwrap().to_owned();
    let version = pushed["plugin"]["version"].as_str().unwrap().to_owned();
    let bound = admin(reqwest::Method::PUT, "/bindings/exampleApp")
        .json(&json!({"plugin": name, "version": version}))
        .send()
        .await
        .unwrap();
    assert!(
        bound.status().is_success(),
        "{}",
        bound.text().await.unwrap()
    );
    admin(reqwest::Method::DELETE, "/bindings/exampleApp")
        .send()
        .await
        .unwrap();
    let stolen = app
        .client
        .put(format!(
            "http://{}/admin/v1/bindings/exampleApp",
            app.private
        ))
        .bearer_auth("guessed-token")
        .json(&json!({"plugin": name, "version": version}))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 401);

    let (_, page) = trail(&app, "").await;
    assert_eq!(
        actions(&page),
        [
            "auth_failure:denied",
            "plugin_unbind:success",
            "plugin_bind:success",
            "plugin_push:success"
        ]
    );
    let records = page["data"].as_array().unwrap();
    assert_eq!(records[3]["resource_id"], format!("{name}@{version}"));
    assert_eq!(records[3]["principal_user_id"], "olga");
    assert_eq!(records[3]["principal_type"], "admin");
    assert_eq!(records[2]["resource_id"], "exampleApp");
    assert_eq!(records[0]["principal_type"], "anonymous");
    assert!(
        records
            .iter()
            .all(|record| record["security_event"] == true)
    );
}

#[tokio::test]
async fn records_past_the_retention_are_removed_by_the_cleaner() {
    let app = TestApp::spawn_with(&[
        ("ADMIN_TOKEN", TOKEN),
        ("AUDIT_RETENTION", "1h"),
        ("CLEANER_INTERVAL", "1s"),
    ])
    .await;
    let caller = Caller::user("org-old", "olive");
    app.get("/api/export/v1/exports", &caller).await;
    app.get("/api/export/v1/exports", &caller).await;
    sqlx::query(
        "UPDATE audit_events SET at = now() - interval '2 hours' \
         WHERE id = (SELECT min(id) FROM audit_events)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if left == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} records left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
