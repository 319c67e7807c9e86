//! `GET /exports`: filters, sort, direction, pagination, links and count (contract §5.2).

use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, export_request};

const EXPORTS: &str = "/api/export/v1/exports";

struct Seeded {
    app: TestApp,
    caller: Caller,
    ids: std::collections::HashMap<&'static str, String>,
}

/// Four exports with controlled names, times and sources.
async fn seed() -> Seeded {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    let specs: [(&str, &str, &str, Value); 4] = [
        (
            "alpha",
            "2024-01-10T10:00:00Z",
            "2024-02-01T00:00:00Z",
            json!([{"application": "exampleApp", "resource": "exampleResource"}]),
        ),
        // Two sources of the same application: must be listed and counted once.
        (
            "beta",
            "2024-01-11T10:00:00Z",
            "2024-01-20T00:00:00Z",
            json!([{"application": "exampleApp", "resource": "exampleResource"},
                {"application": "exampleApp", "resource": "anotherExampleResource"}]),
        ),
        // exampleApp and exampleResource, but not on the same source.
        (
            "gamma",
            "2024-01-12T09:00:00Z",
            "2024-03-01T00:00:00Z",
            json!([{"application": "exampleApp", "resource": "anotherExampleResource"},
                {"application": "otherApp", "resource": "exampleResource"}]),
        ),
        (
            "delta",
            "2024-01-12T20:00:00Z",
            "2024-01-25T00:00:00Z",
            json!([{"application": "otherApp", "resource": "events"}]),
        ),
    ];
    let mut ids = std::collections::HashMap::new();
    for (name, created_at, expires_at, sources) in specs {
        let created = app
            .create(
                &caller,
                json!({"name": name, "format": "json", "sources": sources}),
            )
            .await;
        let id = created["id"].as_str().unwrap().to_string();
        sqlx::query("UPDATE exports SET created_at = $1::timestamptz, expires_at = $2::timestamptz WHERE id = $3::uuid")
            .bind(created_at)
            .bind(expires_at)
            .bind(&id)
            .execute(&app.pool)
            .await
            .unwrap();
        ids.insert(name, id);
    }
    // Someone else's export never shows up.
    app.create(
        &Caller::user("org-1", "mallory"),
        json!({"name": "alpha", "format": "json", "sources": [{"application": "exampleApp", "resource": "exampleResource"}]}),
    )
    .await;
    Seeded { app, caller, ids }
}

impl Seeded {
    async fn list(&self, query: &str) -> Value {
        let reply = self
            .app
            .get(&format!("{EXPORTS}?{query}"), &self.caller)
            .await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.text);
        reply.json()
    }

    async fn names(&self, query: &str) -> Vec<String> {
        let page = self.list(query).await;
        let data = page["data"].as_array().unwrap();
        assert!(page["meta"]["count"].as_i64().unwrap() >= data.len() as i64);
        data.iter()
            .map(|item| item["name"].as_str().unwrap().to_string())
            .collect()
    }
}

#[tokio::test]
async fn filters() {
    let seeded = seed().await;
    assert_eq!(seeded.names("name=beta").await, ["beta"]);
    assert_eq!(seeded.names("name=nope").await, Vec::<String>::new());
    assert_eq!(
        seeded.names("created_at=2024-01-12").await,
        ["gamma", "delta"]
    );
    // The window is [t, t + 24h], both ends inclusive: beta at its start, gamma at its end.
    assert_eq!(
        seeded.names("created_at=2024-01-11T09:00:00Z").await,
        ["beta", "gamma"]
    );
    assert_eq!(
        seeded.names("created_at=2024-01-11T10:00:00.000001Z").await,
        ["gamma", "delta"][..1]
    );
    assert_eq!(seeded.names("expires_at=2024-01-25").await, ["delta"]);
    assert_eq!(
        seeded.names("application=otherApp").await,
        ["gamma", "delta"]
    );
    assert_eq!(seeded.names("resource=events").await, ["delta"]);
    // The two-matching-sources case: beta has two exampleApp sources, listed and counted once.
    let by_app = seeded.list("application=exampleApp").await;
    assert_eq!(by_app["meta"]["count"], 3);
    let names: Vec<&str> = by_app["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    // Application and resource must match on the same source: not gamma.
    assert_eq!(
        seeded
            .names("application=exampleApp&resource=exampleResource")
            .await,
        ["alpha", "beta"]
    );
    assert_eq!(
        seeded.names("application=exampleApp&name=beta").await,
        ["beta"]
    );

    sqlx::query("UPDATE exports SET status = 'failed' WHERE id = $1::uuid")
        .bind(&seeded.ids["gamma"])
        .execute(&seeded.app.pool)
        .await
        .unwrap();
    assert_eq!(seeded.names("status=failed").await, ["gamma"]);
    assert_eq!(
        seeded.names("status=pending").await,
        ["alpha", "beta", "delta"]
    );

    let item = &seeded.list("name=alpha").await["data"][0];
    let keys: Vec<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "created_at",
            "expires_at",
            "format",
            "status",
            "sources_total",
            "sources_answered"
        ]
    );
    assert_eq!(item["created_at"], "2024-01-10T10:00:00Z");
}

#[tokio::test]
async fn sort_and_direction() {
    let seeded = seed().await;
    assert_eq!(
        seeded.names("").await,
        ["alpha", "beta", "gamma", "delta"],
        "default: created_at asc"
    );
    assert_eq!(
        seeded.names("dir=desc").await,
        ["delta", "gamma", "beta", "alpha"]
    );
    assert_eq!(
        seeded.names("sort=name").await,
        ["alpha", "beta", "delta", "gamma"]
    );
    assert_eq!(
        seeded.names("sort=name&dir=desc").await,
        ["gamma", "delta", "beta", "alpha"]
    );
    for key in ["created", "created_at"] {
        assert_eq!(
            seeded.names(&format!("sort={key}&dir=desc")).await,
            ["delta", "gamma", "beta", "alpha"]
        );
    }
    for key in ["expires", "expires_at"] {
        assert_eq!(
            seeded.names(&format!("sort={key}")).await,
            ["beta", "delta", "alpha", "gamma"]
        );
    }
    // First application (alphabetically) of each export: exampleApp ×3, otherApp (delta) last.
    let by_application = seeded.names("sort=application").await;
    assert_eq!(by_application.last().map(String::as_str), Some("delta"));
    assert_eq!(seeded.names("sort=application&dir=desc").await[0], "delta");
    // First resource: anotherExampleResource (beta, gamma) < events (delta) < exampleResource (alpha).
    let by_resource = seeded.names("sort=resource").await;
    assert_eq!(&by_resource[2..], ["delta", "alpha"]);
}

#[tokio::test]
async fn pagination_links_and_count() {
    let seeded = seed().await;
    let page = seeded.list("sort=name&limit=2").await;
    assert_eq!(page["meta"]["count"], 4);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["links"]["first"],
        "/api/export/v1/exports?limit=2&offset=0&sort=name"
    );
    assert_eq!(
        page["links"]["next"],
        "/api/export/v1/exports?limit=2&offset=2&sort=name"
    );
    assert_eq!(page["links"]["previous"], Value::Null);
    assert_eq!(
        page["links"]["last"],
        "/api/export/v1/exports?limit=2&offset=2&sort=name"
    );

    let second = seeded.list("sort=name&limit=2&offset=2").await;
    let names: Vec<&str> = second["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["delta", "gamma"]);
    assert_eq!(second["links"]["next"], Value::Null);
    assert_eq!(
        second["links"]["previous"],
        "/api/export/v1/exports?limit=2&offset=0&sort=name"
    );

    let odd = seeded.list("limit=3&offset=1").await;
    assert_eq!(
        odd["links"]["previous"],
        "/api/export/v1/exports?limit=3&offset=0"
    );
    assert_eq!(
        odd["links"]["last"],
        "/api/export/v1/exports?limit=3&offset=1"
    );

    // Upstream would say offset=-6 here.
    let short = seeded.list("limit=10&offset=2").await;
    assert_eq!(
        short["links"]["last"],
        "/api/export/v1/exports?limit=10&offset=0"
    );
    assert_eq!(short["data"].as_array().unwrap().len(), 2);

    let beyond = seeded.list("offset=10").await;
    assert_eq!(beyond["data"], json!([]));
    assert_eq!(beyond["meta"]["count"], 4);
    assert_eq!(beyond["links"]["previous"], Value::Null);
    assert_eq!(
        beyond["links"]["last"],
        "/api/export/v1/exports?limit=100&offset=0"
    );

    let single = seeded.list("").await;
    assert_eq!(single["links"]["first"], single["links"]["last"]);
    assert_eq!(single["links"]["next"], Value::Null);

    let empty_page = seeded.list("limit=0").await;
    assert_eq!(empty_page["data"], json!([]));
    assert_eq!(empty_page["meta"]["count"], 4);

    let capped = seeded.list("limit=100000").await;
    assert_eq!(
        capped["links"]["first"],
        "/api/export/v1/exports?limit=1000&offset=0"
    );

    // Other parameters survive in the links, keys sorted, values encoded.
    let filtered = seeded.list("application=exampleApp&limit=1&dir=desc").await;
    assert_eq!(
        filtered["links"]["next"],
        "/api/export/v1/exports?application=exampleApp&dir=desc&limit=1&offset=1"
    );
    assert_eq!(filtered["data"][0]["name"], "gamma");
}

#[tokio::test]
async fn empty_parameters_count_as_absent() {
    let seeded = seed().await;
    let page = seeded
        .list("limit=&offset=&sort=&dir=&status=&created_at=&expires_at=&name=&application=&resource=")
        .await;
    assert_eq!(page["meta"]["count"], 4);
    let names: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma", "delta"]);
}

#[tokio::test]
async fn invalid_parameters_get_400() {
    let seeded = seed().await;
    let app = &seeded.app;
    let caller = &seeded.caller;
    let cases = [
        (
            "limit=ten",
            "invalid limit 'ten': must be a non-negative integer",
        ),
        (
            "limit=-1",
            "invalid limit '-1': must be a non-negative integer",
        ),
        (
            "offset=-5",
            "invalid offset '-5': must be a non-negative integer",
        ),
        (
            "offset=1e3",
            "invalid offset '1e3': must be a non-negative integer",
        ),
        (
            "sort=size",
            "invalid sort 'size': must be one of name, created_at, expires_at, application, resource",
        ),
        (
            "dir=sideways",
            "invalid dir 'sideways': must be asc or desc",
        ),
        (
            "created_at=last-tuesday",
            "'last-tuesday' is not a valid date in ISO 8601",
        ),
        (
            "expires_at=2024-02-30",
            "'2024-02-30' is not a valid date in ISO 8601",
        ),
        (
            "status=done",
            "invalid status 'done': must be one of pending, running, partial, complete, failed",
        ),
    ];
    for (query, message) in cases {
        app.get(&format!("{EXPORTS}?{query}"), caller)
            .await
            .assert_error(400, message);
    }
}

#[tokio::test]
async fn unfiltered_count_follows_creates_deletes_and_bulk_changes() {
    let seeded = seed().await;
    assert_eq!(seeded.list("").await["meta"]["count"], 4);
    // A filter counts the matching rows; no filter reads the owner's kept count.
    assert_eq!(seeded.list("name=alpha").await["meta"]["count"], 1);

    let reply = seeded
        .app
        .delete(
            &format!("{EXPORTS}/{}", seeded.ids["alpha"]),
            &seeded.caller,
        )
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(seeded.list("").await["meta"]["count"], 3);

    // Bulk statements (the cleaner deletes many rows at once; the benchmark inserts many).
    sqlx::query("DELETE FROM exports WHERE id = ANY($1::uuid[])")
        .bind(vec![
            seeded.ids["beta"].as_str(),
            seeded.ids["gamma"].as_str(),
        ])
        .execute(&seeded.app.pool)
        .await
        .unwrap();
    assert_eq!(seeded.list("").await["meta"]["count"], 1);
    sqlx::query(
        "INSERT INTO exports (id, org_id, username, name, format, expires_at) \
         SELECT gen_random_uuid(), 'org-1', 'alice', 'bulk', 'csv', now() + interval '1 day' \
         FROM generate_series(1, 25)",
    )
    .execute(&seeded.app.pool)
    .await
    .unwrap();
    assert_eq!(seeded.list("").await["meta"]["count"], 26);
    assert_eq!(seeded.list("name=bulk").await["meta"]["count"], 25);
    // The other user's export was never counted for alice, and still is for him.
    let mallory = Caller::user("org-1", "mallory");
    let theirs = seeded.app.get(EXPORTS, &mallory).await.json();
    assert_eq!(theirs["meta"]["count"], 1);
}

#[tokio::test]
async fn each_listed_export_tells_how_many_sources_answered() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-progress", "paula");
    let created = app
        .create(
            &caller,
            export_request(
                "progress",
                "csv",
                &[
                    ("exampleApp", "exampleResource"),
                    ("otherApp", "events"),
                    ("exampleApp", "anotherExampleResource"),
                ],
            ),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let listed =
        || async { app.get("/api/export/v1/exports", &caller).await.json()["data"][0].clone() };
    let before = listed().await;
    assert_eq!(
        (
            before["sources_total"].clone(),
            before["sources_answered"].clone()
        ),
        (json!(3), json!(0))
    );
    let source = |index: usize| created["sources"][index]["id"].as_str().unwrap().to_owned();
    let reply = app
        .upload(
            id,
            "exampleApp",
            &source(0),
            Some("psk-example"),
            "a,b\n1,2\n",
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    app.report_error(
        id,
        "otherApp",
        &source(1),
        Some("psk-other"),
        json!({"message": "nope", "error": 500}),
    )
    .await;
    let after = listed().await;
    assert_eq!(after["id"], id);
    assert_eq!(
        (
            after["sources_total"].clone(),
            after["sources_answered"].clone()
        ),
        (json!(3), json!(2))
    );
}
