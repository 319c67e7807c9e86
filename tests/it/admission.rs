//! Requests are admitted before their bodies are read: a caller without credentials costs the
//! service its headers, not the body it announces.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::TestApp;

/// Sends a request head announcing `length` bytes of body, then only a few of them, and
/// returns the status line of the answer — which must come without the rest of the body.
async fn answer_before_body(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    length: usize,
) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n{headers}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"{\"component\":\"AAAA").await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered without waiting for the announced body")
        .unwrap();
    String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_admin_push_without_a_valid_token_is_refused_before_its_body_is_read() {
    let closed = TestApp::spawn().await;
    let status =
        answer_before_body(closed.private, "POST", "/admin/v1/plugins", "", 10 << 20).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden", "no ADMIN_TOKEN: closed");

    let open = TestApp::spawn_with(&[("ADMIN_TOKEN", "an-operator-token-of-some-length")]).await;
    for headers in ["", "Authorization: Bearer wrong\r\n"] {
        let status =
            answer_before_body(open.private, "POST", "/admin/v1/plugins", headers, 10 << 20).await;
        assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{headers:?}");
    }
    let refused = open
        .metric(r#"export_service_refusals_total{limit="admin_token"}"#)
        .await
        .unwrap_or_default();
    assert!(refused >= 2.0, "refusals counted: {refused}");
    // The binding routes take JSON bodies too.
    let status = answer_before_body(
        open.private,
        "PUT",
        "/admin/v1/bindings/exampleApp",
        "Authorization: Bearer wrong\r\n",
        1 << 20,
    )
    .await;
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
}

#[tokio::test]
async fn an_upload_or_error_report_with_a_bad_key_is_refused_before_its_body_is_read() {
    let app = TestApp::spawn().await;
    let export = uuid::Uuid::new_v4();
    let source = uuid::Uuid::new_v4();
    for action in ["upload", "error"] {
        let path = format!("/app/export/v1/{export}/exampleApp/{source}/{action}");
        let status = answer_before_body(
            app.private,
            "POST",
            &path,
            "x-rh-exports-psk: wrong\r\n",
            10 << 20,
        )
        .await;
        assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{action}");
    }
}

#[tokio::test]
async fn a_push_borrows_upload_slots_for_the_memory_it_holds() {
    const TOKEN: &str = "an-operator-token-of-some-length";
    let app = TestApp::spawn_with(&[("ADMIN_TOKEN", TOKEN), ("MAX_CONCURRENT_UPLOADS", "2")]).await;
    let caller = crate::helpers::Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            crate::helpers::export_request("slots", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let (export, source) = (
        created["id"].as_str().unwrap(),
        created["sources"][0]["id"].as_str().unwrap(),
    );
    // An upload that has sent its head and part of its body holds one of the two slots.
    let upload = crate::helpers::hold_upload(&app, export, source).await;
    let push = |app: &TestApp| {
        app.client
            .post(format!("http://{}/admin/v1/plugins", app.private))
            .bearer_auth(TOKEN)
            .header("content-type", "application/wasm")
            .body(crate::helpers::plugin_component("csv_json.wasm"))
            .send()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let refused = push(&app).await.unwrap();
        if refused.status() == 503 {
            let body: serde_json::Value = refused.json().await.unwrap();
            assert!(
                body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("MAX_CONCURRENT_UPLOADS"),
                "{body}"
            );
            break;
        }
        // The upload may not hold its slot yet.
        assert!(
            std::time::Instant::now() < deadline,
            "the push was never refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The upload goes away: its slot comes back and the push gets in.
    drop(upload);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = push(&app).await.unwrap().status().as_u16();
        if status == 201 || status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            std::time::Instant::now() < deadline,
            "the slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
