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

/// Status, download and delete of `id` answer 404 to `stranger`, and its list does not show it.
async fn assert_unreachable(app: &TestApp, id: &str, stranger: &Caller) {
    for path in [format!("{EXPORTS}/{id}/status"), format!("{EXPORTS}/{id}")] {
        app.get(&path, stranger)
            .await
            .assert_error(404, &format!("record '{id}' not found"));
    }
    app.delete(&format!("{EXPORTS}/{id}"), stranger)
        .await
        .assert_error(404, &format!("record '{id}' not found"));
    let list = app.get(EXPORTS, stranger).await.json();
    let listed: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|export| export["id"].as_str().unwrap())
        .collect();
    assert!(!listed.contains(&id), "{id} listed for a stranger: {list}");
}

/// The ids of `caller`'s exports, and the list's `meta.count`.
async fn listed(app: &TestApp, caller: &Caller) -> (Vec<String>, serde_json::Value) {
    let list = app.get(EXPORTS, caller).await.json();
    let mut ids: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|export| export["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    (ids, list["meta"]["count"].clone())
}

#[tokio::test]
async fn a_system_cn_is_not_the_user_of_the_same_name() {
    let app = TestApp::spawn().await;
    let user = Caller::user("org-a", "alice");
    let system = Caller::system("org-a", "alice");
    let account = Caller::service_account("org-a", "alice");
    let mut ids = Vec::new();
    for caller in [&user, &system, &account] {
        let created = app
            .create(
                caller,
                export_request("mine", "json", &[("exampleApp", "exampleResource")]),
            )
            .await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    // The System's export is delivered and packaged, so its download is a real archive.
    let system_export = app
        .get(&format!("{EXPORTS}/{}/status", ids[1]), &system)
        .await
        .json();
    let source = system_export["sources"][0]["id"].as_str().unwrap();
    let upload = app
        .upload(
            &ids[1],
            "exampleApp",
            source,
            Some("psk-example"),
            r#"{"data": [{"id": 1}]}"#,
        )
        .await;
    assert_eq!(upload.status, 202, "{}", upload.text);
    app.wait_for_status(&system, &ids[1], "complete").await;

    let callers = [&user, &system, &account];
    for (index, caller) in callers.iter().enumerate() {
        assert_eq!(
            listed(&app, caller).await,
            (vec![ids[index].clone()], serde_json::json!(1)),
            "each identity lists only its own export"
        );
        for (other, id) in ids.iter().enumerate() {
            if other != index {
                assert_unreachable(&app, id, caller).await;
            }
        }
    }
    // Nothing above deleted anything, and the owner downloads its archive.
    let (_, archive) = app.download(&system, &ids[1]).await;
    assert!(archive.starts_with(b"PK"), "a ZIP archive");
    for (index, caller) in callers.iter().enumerate() {
        assert_eq!(
            app.get(&format!("{EXPORTS}/{}/status", ids[index]), caller)
                .await
                .status,
            200
        );
    }
    // A filtered list (counted by a scan, not from export_counts) is scoped the same way.
    let filtered = app
        .get(&format!("{EXPORTS}?name=mine&status=complete"), &user)
        .await
        .json();
    assert_eq!(filtered["meta"]["count"], 0, "{filtered}");
    let filtered = app
        .get(&format!("{EXPORTS}?name=mine&status=complete"), &system)
        .await
        .json();
    assert_eq!(filtered["meta"]["count"], 1, "{filtered}");

    // The owner deletes its own; the others keep theirs.
    let deleted = app.delete(&format!("{EXPORTS}/{}", ids[1]), &system).await;
    assert!(deleted.status < 300, "{}", deleted.text);
    assert_eq!(listed(&app, &system).await.1, 0);
    assert_eq!(listed(&app, &user).await.0, vec![ids[0].clone()]);
    assert_eq!(listed(&app, &account).await.0, vec![ids[2].clone()]);
}

/// Migration 0008 attributes existing exports: exactly from the creating header kept in the
/// outbox, otherwise (purged, undecodable, or naming someone else) to `User`.
#[tokio::test]
async fn migration_attributes_existing_exports_to_their_identity_type() {
    use sqlx::{Connection, PgConnection};

    let url = crate::helpers::empty_database().await;
    let mut connection = PgConnection::connect(&url).await.unwrap();
    let previous = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            export_service::db::MIGRATOR
                .iter()
                .filter(|migration| migration.version < 8)
                .cloned()
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    previous.run(&mut connection).await.unwrap();

    let lower_case_system = Caller::from_json(serde_json::json!({"identity": {
        "org_id": "org-m", "type": "system", "system": {"cn": "alice"}}}));
    // (name, stored username, outbox headers, expected type)
    let rows: [(&str, &str, Vec<String>, &str); 7] = [
        (
            "system",
            "alice",
            vec![Caller::system("org-m", "alice").header(); 2],
            "System",
        ),
        (
            "system-lower-case",
            "alice",
            vec![lower_case_system.header()],
            "System",
        ),
        (
            "user",
            "alice",
            vec![Caller::user("org-m", "alice").header()],
            "User",
        ),
        (
            "service-account",
            "svc",
            vec![Caller::service_account("org-m", "svc").header()],
            "ServiceAccount",
        ),
        ("purged", "alice", vec![], "User"),
        ("undecodable", "alice", vec!["not base64 !".into()], "User"),
        (
            "names-someone-else",
            "alice",
            vec![Caller::system("org-m", "bob").header()],
            "User",
        ),
    ];
    let mut ids = std::collections::HashMap::new();
    for (name, username, headers, _) in &rows {
        let export = uuid::Uuid::new_v4();
        ids.insert(*name, export.to_string());
        sqlx::query(
            "INSERT INTO exports (id, org_id, username, name, format, expires_at) \
             VALUES ($1, 'org-m', $2, $3, 'json', now() + interval '7 days')",
        )
        .bind(export)
        .bind(username)
        .bind(name)
        .execute(&mut connection)
        .await
        .unwrap();
        for (position, header) in headers.iter().enumerate() {
            let source = uuid::Uuid::new_v4();
            sqlx::query(
                "INSERT INTO sources (id, export_id, position, application, resource) \
                 VALUES ($1, $2, $3, 'exampleApp', 'exampleResource')",
            )
            .bind(source)
            .bind(export)
            .bind(i32::try_from(position).unwrap())
            .execute(&mut connection)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO outbox (id, export_id, source_id, application, identity, payload) \
                 VALUES ($1, $2, $3, 'exampleApp', $4, '{}')",
            )
            .bind(uuid::Uuid::new_v4())
            .bind(export)
            .bind(source)
            .bind(header)
            .execute(&mut connection)
            .await
            .unwrap();
        }
    }

    export_service::db::MIGRATOR
        .run(&mut connection)
        .await
        .unwrap();
    for (name, _, _, expected) in &rows {
        let stored: String =
            sqlx::query_scalar("SELECT identity_type FROM exports WHERE name = $1")
                .bind(name)
                .fetch_one(&mut connection)
                .await
                .unwrap();
        assert_eq!(&stored, expected, "{name}");
    }
    let counts: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT username, identity_type, exports FROM export_counts ORDER BY 1, 2")
            .fetch_all(&mut connection)
            .await
            .unwrap();
    assert_eq!(
        counts,
        [
            ("alice".into(), "System".into(), 2),
            ("alice".into(), "User".into(), 4),
            ("svc".into(), "ServiceAccount".into(), 1),
        ]
    );
    connection.close().await.unwrap();

    // The service on the migrated database: each identity sees what was attributed to it, and
    // the triggers keep counting per type.
    let app = TestApp::spawn_on(&url, &[]).await;
    let expect = |names: &[&str]| {
        let mut expected: Vec<String> = names.iter().map(|name| ids[name].clone()).collect();
        expected.sort();
        expected
    };
    let system = Caller::system("org-m", "alice");
    let user = Caller::user("org-m", "alice");
    assert_eq!(
        listed(&app, &system).await,
        (
            expect(&["system", "system-lower-case"]),
            serde_json::json!(2)
        )
    );
    assert_eq!(
        listed(&app, &user).await,
        (
            expect(&["user", "purged", "undecodable", "names-someone-else"]),
            serde_json::json!(4)
        )
    );
    assert_eq!(
        listed(&app, &Caller::service_account("org-m", "svc")).await,
        (expect(&["service-account"]), serde_json::json!(1))
    );
    app.create(
        &system,
        export_request("new", "json", &[("exampleApp", "exampleResource")]),
    )
    .await;
    assert_eq!(listed(&app, &system).await.1, 3);
    assert_eq!(listed(&app, &user).await.1, 4);
}
