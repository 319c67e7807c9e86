//! Uploads are fair and finite (a total time per upload, a share of the slots per application)
//! and every listener is bounded (a header-read timeout, a connection cap); an upload's hold on
//! its source is released even when recording it fails or a shutdown abandons it.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Caller, Reply, TestApp, export_request, fresh_database};

const CSV_UPLOAD: &str = "id,name\n1,alpha\n2,beta\n";

fn source(export: &Value, index: usize) -> String {
    export["sources"][index]["id"].as_str().unwrap().to_string()
}

fn psk(application: &str) -> &'static str {
    match application {
        "exampleApp" => "psk-example",
        "otherApp" => "psk-other",
        other => panic!("no key for {other}"),
    }
}

/// An upload whose body the test feeds chunk by chunk.
struct StreamingUpload {
    sender: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    reply: tokio::task::JoinHandle<Reply>,
}

impl StreamingUpload {
    /// Sends the last chunk, ends the body and returns the reply.
    async fn finish(self, last_chunk: &[u8]) -> Reply {
        self.sender.send(Ok(last_chunk.to_vec())).await.unwrap();
        drop(self.sender);
        self.reply.await.unwrap()
    }
}

/// Starts uploading to `source` of `application` with a first chunk and waits until the source
/// is held (the upload took its slot and began).
async fn start_upload(
    app: &TestApp,
    export: &str,
    application: &str,
    source: &str,
    first_chunk: &[u8],
) -> StreamingUpload {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ));
    let request = app
        .client
        .post(app.internal_url(&format!(
            "/app/export/v1/{export}/{application}/{source}/upload"
        )))
        .header("x-rh-exports-psk", psk(application))
        .body(body);
    let reply = tokio::spawn(async move { Reply::from(request.send().await.unwrap()).await });
    sender.send(Ok(first_chunk.to_vec())).await.unwrap();
    wait_until_held(app, source, true).await;
    StreamingUpload { sender, reply }
}

async fn is_held(app: &TestApp, source: &str) -> bool {
    sqlx::query_scalar("SELECT upload_token IS NOT NULL FROM sources WHERE id = $1::uuid")
        .bind(source)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn wait_until_held(app: &TestApp, source: &str, held: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_held(app, source).await != held {
        assert!(
            Instant::now() < deadline,
            "source {source} never became held={held}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[track_caller]
fn assert_accepted(reply: &Reply) {
    assert_eq!(reply.status, 202, "{}", reply.text);
}

async fn upload(app: &TestApp, export: &str, application: &str, source: &str) -> Reply {
    app.upload(
        export,
        application,
        source,
        Some(psk(application)),
        CSV_UPLOAD,
    )
    .await
}

#[tokio::test]
async fn a_trickling_upload_is_cut_at_upload_max_duration_and_the_source_stays_open() {
    // Each pause (200 ms) is far below the per-read idle timeout (5 s): only the total limit
    // can stop this upload.
    let app = TestApp::spawn_with(&[("UPLOAD_MAX_DURATION", "2s")]).await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("slow", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = created["id"].as_str().unwrap().to_string();
    let first = source(&created, 0);
    let started = Instant::now();
    let StreamingUpload { sender, reply } =
        start_upload(&app, &export, "exampleApp", &first, b"id,name\n").await;
    let trickle = tokio::spawn(async move {
        for row in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if sender
                .send(Ok(format!("{row},x\n").into_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let reply = tokio::time::timeout(Duration::from_secs(15), reply)
        .await
        .expect("the trickling upload was never cut")
        .unwrap();
    let took = started.elapsed();
    trickle.abort();
    reply.assert_error_containing(408, "UPLOAD_MAX_DURATION (2s)");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "cut after {took:?}"
    );
    // Nothing was recorded and the source is free at once: the next upload is accepted.
    assert_accepted(&upload(&app, &export, "exampleApp", &first).await);
    app.wait_for_status(&caller, &export, "complete").await;
    assert_eq!(
        app.metric(r#"export_service_refusals_total{limit="upload_duration"}"#)
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn an_application_at_its_share_of_slots_is_refused_while_others_upload() {
    let app = TestApp::spawn_with(&[
        ("MAX_CONCURRENT_UPLOADS", "3"),
        ("MAX_UPLOADS_PER_APPLICATION", "2"),
    ])
    .await;
    let caller = Caller::user("org-1", "alice");
    let first = app
        .create(
            &caller,
            export_request(
                "a",
                "csv",
                &[
                    ("exampleApp", "exampleResource"),
                    ("exampleApp", "anotherExampleResource"),
                    ("otherApp", "exampleResource"),
                ],
            ),
        )
        .await;
    let second = app
        .create(
            &caller,
            export_request(
                "b",
                "csv",
                &[("exampleApp", "exampleResource"), ("otherApp", "events")],
            ),
        )
        .await;
    let (first_id, second_id) = (
        first["id"].as_str().unwrap().to_string(),
        second["id"].as_str().unwrap().to_string(),
    );
    // exampleApp takes its whole share.
    let [one, two] = [
        start_upload(
            &app,
            &first_id,
            "exampleApp",
            &source(&first, 0),
            b"id,name\n",
        )
        .await,
        start_upload(
            &app,
            &first_id,
            "exampleApp",
            &source(&first, 1),
            b"id,name\n",
        )
        .await,
    ];
    let refused = upload(&app, &second_id, "exampleApp", &source(&second, 0)).await;
    refused.assert_error_containing(503, "MAX_UPLOADS_PER_APPLICATION = 2");
    refused.assert_error_containing(503, "'exampleApp'");
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert!(
        !is_held(&app, &source(&second, 0)).await,
        "a refused upload touched its source"
    );
    assert_eq!(
        app.metric(r#"export_service_upload_slots_in_use{application="exampleApp"}"#)
            .await,
        Some(2.0)
    );
    // Another application still gets in, and takes the replica's last slot.
    let third = start_upload(
        &app,
        &second_id,
        "otherApp",
        &source(&second, 1),
        b"id,name\n",
    )
    .await;
    // Now the replica is full for everyone, even an application under its share.
    let full = upload(&app, &first_id, "otherApp", &source(&first, 2)).await;
    full.assert_error_containing(503, "MAX_CONCURRENT_UPLOADS = 3");
    assert_accepted(&third.finish(b"3,c\n").await);
    assert_accepted(&upload(&app, &first_id, "otherApp", &source(&first, 2)).await);
    assert_accepted(&one.finish(b"1,a\n").await);
    assert_accepted(&two.finish(b"2,b\n").await);
    assert_accepted(&upload(&app, &second_id, "exampleApp", &source(&second, 0)).await);
    app.wait_for_status(&caller, &first_id, "complete").await;
    app.wait_for_status(&caller, &second_id, "complete").await;
    assert_eq!(
        app.metric(r#"export_service_refusals_total{limit="application_upload_slots"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        app.metric(r#"export_service_refusals_total{limit="upload_slots"}"#)
            .await,
        Some(1.0)
    );
    // No upload runs: no application has a series any more.
    assert!(
        !app.metrics_text()
            .await
            .contains("export_service_upload_slots_in_use{"),
        "slots still counted as in use"
    );
}

/// Reads until the server closes the connection (EOF or reset); returns what it sent and how
/// long after `started` it closed, or `None` if it was still open `within` after `started`.
async fn closed_within(
    stream: &mut TcpStream,
    started: Instant,
    within: Duration,
) -> Option<(Vec<u8>, Duration)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some((received, started.elapsed())),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Sends a whole request on `stream` and reads the head of its response.
async fn ping(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("no response")
        .unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[tokio::test]
async fn a_stalled_request_head_is_closed_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(&[("HTTP_HEADER_READ_TIMEOUT", "1s")]).await;
    for (listener, address, path) in [
        ("public", app.public, "/api/export/v1/ping"),
        ("internal", app.private, "/app/export/v1/ping"),
        ("metrics", app.metrics, "/metrics"),
    ] {
        let opened = Instant::now();
        // Half a request line, then nothing.
        let mut stalled = TcpStream::connect(address).await.unwrap();
        stalled.write_all(b"GET /api/exp").await.unwrap();
        // A connection that never sends a byte.
        let mut silent = TcpStream::connect(address).await.unwrap();
        for (what, stream) in [
            ("half a request line", &mut stalled),
            ("nothing", &mut silent),
        ] {
            let (_, took) = closed_within(stream, opened, Duration::from_secs(8))
                .await
                .unwrap_or_else(|| panic!("{listener}: a connection that sent {what} stayed open"));
            assert!(
                took >= Duration::from_millis(500),
                "{listener}: closed after {took:?}, before the timeout"
            );
        }
        // A client that sends its request in time is served.
        let mut prompt = TcpStream::connect(address).await.unwrap();
        let head = ping(&mut prompt, path).await;
        assert!(head.starts_with("HTTP/1.1 "), "{listener}: {head}");
    }
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let app = TestApp::spawn_with(&[("MAX_CONNECTIONS", "2")]).await;
    let path = "/app/export/v1/ping";
    // Two served, kept-alive connections fill the internal listener.
    let mut first = TcpStream::connect(app.private).await.unwrap();
    let mut second = TcpStream::connect(app.private).await.unwrap();
    for stream in [&mut first, &mut second] {
        assert!(ping(stream, path).await.starts_with("HTTP/1.1 200"));
    }
    // The third is closed as soon as it is accepted, without an answer.
    let mut third = TcpStream::connect(app.private).await.unwrap();
    let _ = third
        .write_all(b"GET /app/export/v1/ping HTTP/1.1\r\nhost: test\r\n\r\n")
        .await;
    let (received, _) = closed_within(&mut third, Instant::now(), Duration::from_secs(5))
        .await
        .expect("a connection beyond MAX_CONNECTIONS stayed open");
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    // The other listeners have their own cap: the metrics listener still answers.
    assert_eq!(
        app.metric(r#"export_service_refusals_total{limit="connections"}"#)
            .await,
        Some(1.0)
    );
    // Once a connection closes, a new one is served.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = TcpStream::connect(app.private).await.unwrap();
        let _ = next
            .write_all(b"GET /app/export/v1/ping HTTP/1.1\r\nhost: test\r\n\r\n")
            .await;
        let mut buffer = vec![0u8; 1024];
        if let Ok(Ok(read)) =
            tokio::time::timeout(Duration::from_secs(2), next.read(&mut buffer)).await
            && read > 0
        {
            assert!(buffer.starts_with(b"HTTP/1.1 200"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed connection slot was never reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ping(&mut second, path).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_failed_complete_releases_the_source_for_a_prompt_retry() {
    // Statements give up after 300 ms: while the test holds the source's row lock, recording
    // the upload fails, and so do the first attempts to release its hold.
    let app = TestApp::spawn_with(&[("DB_STATEMENT_TIMEOUT", "300ms")]).await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("a", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let export = created["id"].as_str().unwrap().to_string();
    let first = source(&created, 0);
    let streaming = start_upload(&app, &export, "exampleApp", &first, b"id,name\n").await;
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM sources WHERE id = $1::uuid FOR UPDATE")
        .bind(&first)
        .execute(&mut *lock)
        .await
        .unwrap();
    let reply = streaming.finish(b"1,a\n").await;
    assert!(reply.status >= 500, "{} {}", reply.status, reply.text);
    // The release could not get through either: the hold is still there.
    let held: bool =
        sqlx::query_scalar("SELECT upload_token IS NOT NULL FROM sources WHERE id = $1::uuid")
            .bind(&first)
            .fetch_one(&mut *lock)
            .await
            .unwrap();
    assert!(held, "the hold was released while its row was locked");
    tokio::time::sleep(Duration::from_millis(800)).await;
    lock.rollback().await.unwrap();
    // A retry of the release gets in within seconds, not after UPLOAD_LEASE (15 min).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = upload(&app, &export, "exampleApp", &first).await;
        if reply.status == 202 {
            break;
        }
        reply.assert_error(409, "an upload for this source is already in progress");
        assert!(Instant::now() < deadline, "the hold was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.wait_for_status(&caller, &export, "complete").await;
}

#[tokio::test]
async fn a_shutdown_that_abandons_an_upload_releases_its_source() {
    // Not owned by the app: it must outlive the app's shutdown for the check below.
    let database = fresh_database().await;
    let app = TestApp::spawn_on(&database, &[("SHUTDOWN_TIMEOUT", "1s")]).await;
    let caller = Caller::user("org-1", "alice");
    let created = app
        .create(
            &caller,
            export_request("a", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let first = source(&created, 0);
    let export = created["id"].as_str().unwrap().to_string();
    let streaming = start_upload(&app, &export, "exampleApp", &first, b"id,name\n").await;
    let pool = app.pool.clone();
    app.stop().await;
    let held: bool =
        sqlx::query_scalar("SELECT upload_token IS NOT NULL FROM sources WHERE id = $1::uuid")
            .bind(&first)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!held, "the abandoned upload kept its source after shutdown");
    drop(streaming);
}
