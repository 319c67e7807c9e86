//! Every identity variant of contract §3.1 through the real HTTP stack.

use base64::Engine as _;
use serde_json::json;

use crate::helpers::{Caller, TestApp, export_request};

const EXPORTS: &str = "/api/export/v1/exports";

async fn get_with_header(app: &TestApp, header: Option<&str>) -> crate::helpers::Reply {
    let mut request = app.client.get(app.url(EXPORTS));
    if let Some(header) = header {
        request = request.header("x-rh-identity", header);
    }
    crate::helpers::Reply::from(request.send().await.unwrap()).await
}

fn encode(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn malformed_headers_get_400_with_a_reason() {
    let app = TestApp::spawn().await;
    get_with_header(&app, None)
        .await
        .assert_error(400, "missing x-rh-identity header");
    get_with_header(&app, Some(""))
        .await
        .assert_error(400, "missing x-rh-identity header");
    get_with_header(&app, Some("%%%not-base64"))
        .await
        .assert_error(400, "unable to b64 decode x-rh-identity header");
    let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(r#"{"identity":{"org_id":"o","type":"User","user":{"username":"u"}}}"#);
    get_with_header(&app, Some(&unpadded))
        .await
        .assert_error(400, "unable to b64 decode x-rh-identity header");
    get_with_header(
        &app,
        Some(&encode(
            r#"{"identity":{"org_id":"o\u0000","type":"User","user":{"username":"u"}}}"#,
        )),
    )
    .await
    .assert_error(400, "x-rh-identity header contains a NUL character");
    get_with_header(&app, Some(&encode("{not json")))
        .await
        .assert_error_containing(400, "x-rh-identity header does not contain valid JSON");
    get_with_header(&app, Some(&encode(r#"{"identity": {"org_id": 12}}"#)))
        .await
        .assert_error_containing(400, "does not contain valid JSON");
    get_with_header(
        &app,
        Some(&encode(
            r#"{"identity": {"type": "User", "user": {"username": "u"}}}"#,
        )),
    )
    .await
    .assert_error(400, "x-rh-identity header has an invalid or missing org_id");
    get_with_header(
        &app,
        Some(&encode(
            r#"{"identity": {"org_id": "o", "user": {"username": "u"}}}"#,
        )),
    )
    .await
    .assert_error(400, "x-rh-identity header is missing type");
}

#[tokio::test]
async fn user_service_account_and_system_rules() {
    let app = TestApp::spawn().await;
    let cases = [
        // The upstream answers 500 with an empty body for this one.
        (
            json!({"org_id": "o", "type": "User"}),
            "User identity has no 'user' object",
        ),
        (
            json!({"org_id": "o", "type": "User", "user": {"username": ""}}),
            "User identity has no user.username",
        ),
        (
            json!({"org_id": "o", "type": "ServiceAccount"}),
            "ServiceAccount identity has no 'service_account' object",
        ),
        (
            json!({"org_id": "o", "type": "ServiceAccount", "service_account": {"username": null}}),
            "ServiceAccount identity has no service_account.username",
        ),
        (
            json!({"org_id": "o", "type": "System"}),
            "System identity has no 'system' object",
        ),
        (
            json!({"org_id": "o", "type": "System", "system": {"cn": ""}}),
            "System identity has no system.cn",
        ),
    ];
    for (identity, reason) in cases {
        let caller = Caller::from_json(json!({ "identity": identity }));
        app.get(EXPORTS, &caller)
            .await
            .assert_error(400, &format!("invalid identity header: {reason}"));
    }
    for kind in ["Associate", "X509", "Robot"] {
        let caller = Caller::from_json(
            json!({"identity": {"org_id": "o", "type": kind, "account_number": ""}}),
        );
        app.get(EXPORTS, &caller)
            .await
            .assert_error_containing(400, &format!("identity type '{kind}' cannot use exports"));
    }

    let accepted = [
        json!({"org_id": "o", "type": "User", "user": {"username": "alice"}}),
        json!({"org_id": "o", "type": "user", "user": {"username": "alice"}}),
        json!({"org_id": "o", "type": "ServiceAccount", "service_account": {"client_id": "c", "username": "svc"}}),
        json!({"org_id": "o", "type": "serviceaccount", "service_account": {"username": "svc"}}),
        json!({"org_id": "o", "type": "System", "system": {"cn": "host-cert"}}),
        json!({"org_id": "o", "type": "SYSTEM", "system": {"cn": "host-cert"}}),
        // org falls back to identity.internal.org_id
        json!({"type": "User", "internal": {"org_id": "o"}, "user": {"username": "bob"}}),
    ];
    for identity in accepted {
        let caller = Caller::from_json(json!({ "identity": identity, "entitlements": {} }));
        let reply = app.get(EXPORTS, &caller).await;
        assert_eq!(reply.status, 200, "{identity}: {}", reply.text);
    }
}

#[tokio::test]
async fn internal_org_fallback_owns_the_export() {
    let app = TestApp::spawn().await;
    let fallback = Caller::from_json(
        json!({"identity": {"type": "User", "internal": {"org_id": "org-9"}, "user": {"username": "bob"}}}),
    );
    let direct = Caller::user("org-9", "bob");
    let created = app
        .create(
            &fallback,
            export_request("x", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let reply = app.get(&format!("{EXPORTS}/{id}/status"), &direct).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn identity_guards_every_path_under_the_api_prefix() {
    let app = TestApp::spawn().await;
    let anonymous = crate::helpers::Reply::from(
        app.client
            .get(app.url("/api/export/v1/nowhere"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    anonymous.assert_error(400, "missing x-rh-identity header");
    let caller = Caller::user("o", "u");
    app.get("/api/export/v1/nowhere", &caller)
        .await
        .assert_error(404, "no such endpoint");

    let ping = app.get("/api/export/v1/ping", &caller).await;
    assert_eq!((ping.status, ping.text.as_str()), (200, "Hello world"));
    let anonymous_ping = crate::helpers::Reply::from(
        app.client
            .get(app.url("/api/export/v1/ping"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(anonymous_ping.status, 400);

    // The OpenAPI document and the docs page need no identity.
    let openapi = crate::helpers::Reply::from(
        app.client
            .get(app.url("/api/export/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(openapi.status, 200);
    assert!(openapi.json()["paths"]["/exports"]["post"].is_object());
    let docs =
        crate::helpers::Reply::from(app.client.get(app.url("/docs")).send().await.unwrap()).await;
    assert_eq!(docs.status, 200);
    assert!(docs.text.contains("/api/export/v1/openapi.json"));
}

#[tokio::test]
async fn the_type_is_part_of_the_owner_whatever_its_case() {
    let app = TestApp::spawn().await;
    let system = |kind: &str| {
        Caller::from_json(
            json!({"identity": {"org_id": "o", "type": kind, "system": {"cn": "alice"}}}),
        )
    };
    let created = app
        .create(
            &system("SYSTEM"),
            export_request("x", "json", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    // The same System, its type spelled differently: the same owner.
    let status = app
        .get(&format!("{EXPORTS}/{id}/status"), &system("system"))
        .await;
    assert_eq!(status.status, 200, "{}", status.text);
    // A User of the same name in the same org: a different owner.
    app.get(
        &format!("{EXPORTS}/{id}/status"),
        &Caller::user("o", "alice"),
    )
    .await
    .assert_error(404, &format!("record '{id}' not found"));
}
