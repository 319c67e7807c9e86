//! Tenants are isolated: another user or another organisation gets 404 / an empty list on every
//! route; the account number is compared only when the caller has one (contract §3.2).

use crate::helpers::{Caller, TestApp, export_request};

const EXPORTS: &str = "/api/export/v1/exports";

async fn assert_invisible(app: &TestApp, id: &str, stranger: &Caller) {
    for path in [format!("{EXPORTS}/{id}/status"), format!("{EXPORTS}/{id}")] {
        app.get(&path, stranger)
            .await
            .assert_error(404, &format!("record '{id}' not found"));
    }
    app.delete(&format!("{EXPORTS}/{id}"), stranger)
        .await
        .assert_error(404, &format!("record '{id}' not found"));
    let list = app.get(EXPORTS, stranger).await.json();
    assert_eq!(list["meta"]["count"], 0, "{list}");
    assert_eq!(list["data"], serde_json::json!([]));
}

#[tokio::test]
async fn other_users_and_orgs_see_nothing() {
    let app = TestApp::spawn().await;
    let owner = Caller::user("org-a", "alice");
    let created = app
        .create(
            &owner,
            export_request("mine", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let id = created["id"].as_str().unwrap();

    assert_invisible(&app, id, &Caller::user("org-a", "bob")).await;
    assert_invisible(&app, id, &Caller::user("org-b", "alice")).await;

    // The owner still has it: nothing above deleted it.
    assert_eq!(
        app.get(&format!("{EXPORTS}/{id}/status"), &owner)
            .await
            .status,
        200
    );
    assert_eq!(app.get(EXPORTS, &owner).await.json()["meta"]["count"], 1);
}

#[tokio::test]
async fn account_is_compared_only_when_the_caller_has_one() {
    let app = TestApp::spawn().await;
    let with_account = Caller::user_with_account("org-a", "alice", "acct-1");
    let without_account = Caller::user("org-a", "alice");
    let other_account = Caller::user_with_account("org-a", "alice", "acct-2");

    let stored_with = app
        .create(
            &with_account,
            export_request("with", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let stored_without = app
        .create(
            &without_account,
            export_request("without", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let with_id = stored_with["id"].as_str().unwrap();
    let without_id = stored_without["id"].as_str().unwrap();

    // No account on the caller: sees both.
    assert_eq!(
        app.get(EXPORTS, &without_account).await.json()["meta"]["count"],
        2
    );
    assert_eq!(
        app.get(&format!("{EXPORTS}/{with_id}/status"), &without_account)
            .await
            .status,
        200
    );
    // An account on the caller: only exports stored with that account.
    let listed = app.get(EXPORTS, &with_account).await.json();
    assert_eq!(listed["meta"]["count"], 1);
    assert_eq!(listed["data"][0]["id"], with_id);
    assert_eq!(
        app.get(&format!("{EXPORTS}/{without_id}/status"), &with_account)
            .await
            .status,
        404
    );
    assert_invisible(&app, with_id, &other_account).await;
}
