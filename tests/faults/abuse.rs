//! Hostile clients and plugins against the real process: each gets the right status with a
//! clear JSON message, and the service's memory growth (peak RSS over the case) and CPU time
//! stay within generous stated bounds. Every figure is printed (`FIGURE:` lines).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{
    ADMIN_TOKEN, Caller, Database, EXAMPLE_PSK, OTHER_PSK, S3Server, Service, assert_json_error,
    base_settings, figure, plugins_dir, with,
};
use crate::raw_http::{RawBody, RawOutcome, raw_exchange};

const MIB: u64 = 1024 * 1024;

/// Asserts `outcome` is a JSON error with `status` whose message contains `part`.
#[track_caller]
fn assert_refused(outcome: &RawOutcome, status: u16, part: &str) {
    match outcome {
        RawOutcome::Response { status: got, body } => assert_json_error(*got, body, status, part),
        RawOutcome::Closed => {
            panic!("the connection closed without a response (expected {status})")
        }
    }
}

/// Bound of the peak RSS growth over five 100 MiB pushes (their bodies would be 500 MiB).
const MAX_PUSH_GROWTH_MIB: u64 = 50;

/// What five concurrent pushes got and cost.
struct Pushes {
    outcomes: Vec<RawOutcome>,
    slowest: Duration,
    growth_mib: u64,
}

/// Sends five concurrent unauthenticated 100 MiB plugin pushes and measures the service's peak
/// RSS growth and CPU time over them (printed as figures of `case`).
async fn unauthenticated_pushes(service: &Service, case: &str) -> Pushes {
    let before = service.usage();
    service.reset_peak_rss();
    let head = format!(
        "POST /admin/v1/plugins HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}",
        100 * MIB
    );
    let body = RawBody {
        total: 100 * MIB,
        chunk: 256 * 1024,
        byte: 0,
        pause: Duration::ZERO,
    };
    let requests = (0..5).map(|_| async {
        tokio::time::timeout(
            Duration::from_secs(120),
            raw_exchange(service.private, &head, Some(body)),
        )
        .await
        .expect("an answer within 120 s")
    });
    let answered = futures::future::join_all(requests).await;
    let after = service.usage();
    let slowest = answered.iter().map(|(_, took)| *took).max().unwrap();
    let growth_mib = after.peak_rss_kib.saturating_sub(before.rss_kib) / 1024;
    figure(
        case,
        "peak RSS growth over 5 x 100 MiB pushes (MiB)",
        growth_mib,
    );
    figure(case, "slowest refusal (ms)", slowest.as_millis());
    figure(case, "CPU time (ms)", (after.cpu - before.cpu).as_millis());
    Pushes {
        outcomes: answered.into_iter().map(|(outcome, _)| outcome).collect(),
        slowest,
        growth_mib,
    }
}

impl Pushes {
    /// Each push was refused with `status` and a message containing `part`, before its body
    /// was read, and the process did not grow by the bodies.
    #[track_caller]
    fn assert_refused_cheaply(&self, status: u16, part: &str) {
        for outcome in &self.outcomes {
            assert_refused(outcome, status, part);
        }
        assert!(
            self.slowest < Duration::from_secs(10),
            "the refusals should come before the bodies are read; the slowest took {:?}",
            self.slowest
        );
        assert!(
            self.growth_mib < MAX_PUSH_GROWTH_MIB,
            "the process grew by {} MiB (bound {MAX_PUSH_GROWTH_MIB} MiB)",
            self.growth_mib
        );
    }
}

#[tokio::test]
async fn unauthenticated_plugin_pushes_are_refused_before_their_bodies_are_read() {
    let database = Database::create().await;
    let s3 = S3Server::start().await;
    // One service after the other, to keep the machine's memory for the rest of the suite.
    let service = Service::start(with(
        base_settings(&database, &s3),
        &[("ADMIN_TOKEN", ADMIN_TOKEN)],
    ))
    .await;
    let with_token = unauthenticated_pushes(&service, "admin_push_with_token").await;
    drop(service);
    let service = Service::start(base_settings(&database, &s3)).await;
    let without_token = unauthenticated_pushes(&service, "admin_push_without_token").await;
    with_token.assert_refused_cheaply(401, "Authorization");
    without_token.assert_refused_cheaply(403, "ADMIN_TOKEN");
}

#[tokio::test]
async fn megabytes_of_whitespace_to_a_plugin_bound_application_cost_little_cpu() {
    /// Bound of the service's CPU time for the upload (it was 22.8 s).
    const MAX_CPU: Duration = Duration::from_secs(4);
    let database = Database::create().await;
    let s3 = S3Server::start().await;
    let plugins = plugins_dir("csv_json.wasm", None);
    let service = Service::start(with(
        base_settings(&database, &s3),
        &[("PLUGINS_DIR", plugins.path().to_str().unwrap())],
    ))
    .await;
    let caller = Caller::user("org-faults", "alice");
    let (export, sources) = service
        .create_export(&caller, "json", &[("exampleApp", "exampleResource")])
        .await;
    let before = service.usage();
    service.reset_peak_rss();
    let head = format!(
        "POST /app/export/v1/{export}/exampleApp/{}/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         x-rh-exports-psk: {EXAMPLE_PSK}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}",
        sources[0],
        20 * MIB
    );
    let body = RawBody {
        total: 20 * MIB,
        chunk: 64 * 1024,
        byte: b' ',
        pause: Duration::ZERO,
    };
    let answered = tokio::time::timeout(
        Duration::from_secs(60),
        raw_exchange(service.private, &head, Some(body)),
    )
    .await;
    let after = service.usage();
    let cpu = after.cpu - before.cpu;
    figure(
        "whitespace_upload",
        "service CPU time for 20 MiB of spaces (ms)",
        cpu.as_millis(),
    );
    figure(
        "whitespace_upload",
        "peak RSS growth (MiB)",
        after.peak_rss_kib.saturating_sub(before.rss_kib) / 1024,
    );
    let (outcome, took) = answered.expect("an answer within 60 s");
    figure("whitespace_upload", "answer after (ms)", took.as_millis());
    assert_refused(&outcome, 422, "Content-Type");
    assert!(
        cpu < MAX_CPU,
        "the upload cost {cpu:?} of CPU (bound {MAX_CPU:?})"
    );
    let growth_mib = after.peak_rss_kib.saturating_sub(before.rss_kib) / 1024;
    assert!(
        growth_mib < 32,
        "20 MiB of spaces grew the service by {growth_mib} MiB (bound 32)"
    );
}

#[tokio::test]
async fn a_trickling_upload_is_cut_at_the_upload_time_limit() {
    let database = Database::create().await;
    let s3 = S3Server::start().await;
    let service = Service::start(with(
        base_settings(&database, &s3),
        &[("UPLOAD_MAX_DURATION", "3s")],
    ))
    .await;
    let caller = Caller::user("org-faults", "alice");
    let (export, sources) = service
        .create_export(&caller, "csv", &[("exampleApp", "exampleResource")])
        .await;
    let before = service.usage();
    // A byte a second: 600 bytes would take ten minutes.
    let head = format!(
        "POST /app/export/v1/{export}/exampleApp/{}/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         x-rh-exports-psk: {EXAMPLE_PSK}\r\nContent-Type: text/csv\r\nContent-Length: 600",
        sources[0]
    );
    let body = RawBody {
        total: 600,
        chunk: 1,
        byte: b'1',
        pause: Duration::from_secs(1),
    };
    let (outcome, took) = tokio::time::timeout(
        Duration::from_secs(60),
        raw_exchange(service.private, &head, Some(body)),
    )
    .await
    .expect("the upload is cut within 60 s");
    let after = service.usage();
    figure("trickle_upload", "cut after (ms)", took.as_millis());
    figure(
        "trickle_upload",
        "CPU time (ms)",
        (after.cpu - before.cpu).as_millis(),
    );
    assert_refused(&outcome, 408, "UPLOAD_MAX_DURATION");
    assert!(
        took < Duration::from_secs(15),
        "cut at about 3 s, not after {took:?}"
    );
    assert_cpu_within("trickle_upload", after.cpu - before.cpu);
    // The source is free again: a proper upload succeeds.
    let reply = service
        .upload(
            &export,
            "exampleApp",
            &sources[0],
            EXAMPLE_PSK,
            "text/csv",
            "id\n1\n",
        )
        .await;
    assert_eq!(reply.status, 202, "the next upload: {}", reply.text);
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_after_the_header_read_timeout() {
    let database = Database::create().await;
    let s3 = S3Server::start().await;
    let service = Service::start(with(
        base_settings(&database, &s3),
        &[("HTTP_HEADER_READ_TIMEOUT", "2s")],
    ))
    .await;
    let before = service.usage();
    for (listener, port) in [
        ("public", service.public),
        ("internal", service.private),
        ("metrics", service.metrics),
    ] {
        let started = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        // One more header byte every half second, never the blank line, for up to 15 s.
        let mut answer = Vec::new();
        let closed = loop {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the {listener} listener kept a slowloris connection open for 15 s"
            );
            if stream.write_all(b"x").await.is_err() {
                break true;
            }
            let mut buffer = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(read)) => answer.extend_from_slice(&buffer[..read]),
                Err(_) => {}
            }
        };
        let took = started.elapsed();
        figure(
            "slowloris",
            &format!("{listener} listener closed after (ms)"),
            took.as_millis(),
        );
        assert!(closed);
        assert!(
            took < Duration::from_secs(10),
            "the {listener} listener closed a slowloris connection only after {took:?}"
        );
        // Whatever the server said before closing, it is not a success.
        let said = String::from_utf8_lossy(&answer);
        assert!(
            said.is_empty() || said.starts_with("HTTP/1.1 408"),
            "the {listener} listener answered: {said}"
        );
    }
    let after = service.usage();
    figure(
        "slowloris",
        "CPU time (ms)",
        (after.cpu - before.cpu).as_millis(),
    );
    assert_cpu_within("slowloris", after.cpu - before.cpu);
}

/// A generous bound on the service's CPU time for a case that should cost next to nothing
/// (tens of milliseconds measured): holding a connection or a slot must not mean working.
fn assert_cpu_within(case: &str, cpu: Duration) {
    assert!(
        cpu < Duration::from_secs(2),
        "{case} cost the service {cpu:?} of CPU (bound 2 s)"
    );
}

#[tokio::test]
async fn a_sleeping_plugin_is_stopped_within_its_deadline_and_the_next_upload_succeeds() {
    let database = Database::create().await;
    let s3 = S3Server::start().await;
    let plugins = plugins_dir("csv_json.wasm", Some("hostile_sleeper.wasm"));
    let service = Service::start(with(
        base_settings(&database, &s3),
        &[
            ("PLUGINS_DIR", plugins.path().to_str().unwrap()),
            ("PLUGIN_CALL_TIMEOUT", "2s"),
            ("PLUGIN_SESSION_TIMEOUT", "5s"),
        ],
    ))
    .await;
    let caller = Caller::user("org-faults", "alice");
    let (export, sources) = service
        .create_export(
            &caller,
            "json",
            &[("exampleApp", "exampleResource"), ("otherApp", "events")],
        )
        .await;
    let before = service.usage();
    let started = Instant::now();
    let stopped = tokio::time::timeout(
        Duration::from_secs(60),
        service.upload(
            &export,
            "otherApp",
            &sources[1],
            OTHER_PSK,
            "text/csv",
            "id\n1\n",
        ),
    )
    .await
    .expect("the sleeping plugin is stopped within 60 s");
    let took = started.elapsed();
    let after = service.usage();
    figure("sleeper_plugin", "stopped after (ms)", took.as_millis());
    figure(
        "sleeper_plugin",
        "CPU time (ms)",
        (after.cpu - before.cpu).as_millis(),
    );
    assert_json_error(stopped.status, &stopped.text, 422, "time limit of 2000 ms");
    assert!(
        stopped.text.contains("hostile-sleeper"),
        "the message names the plugin: {}",
        stopped.text
    );
    assert!(
        took < Duration::from_secs(10),
        "stopped at about its 2 s deadline, not after {took:?}"
    );
    // The sleeper waits rather than spins: its deadline costs time, not CPU.
    assert_cpu_within("sleeper_plugin", after.cpu - before.cpu);

    let reply = service
        .upload(
            &export,
            "exampleApp",
            &sources[0],
            EXAMPLE_PSK,
            "text/csv",
            "id,name\n1,a\n",
        )
        .await;
    assert_eq!(reply.status, 202, "the next upload: {}", reply.text);
    let detail = service
        .wait_for_status(&caller, &export, "partial", Duration::from_secs(30))
        .await;
    assert_eq!(
        crate::harness::source_status(&detail, &sources[1]),
        "failed",
        "{detail}"
    );
}

#[tokio::test]
async fn a_long_column_name_over_tiny_rows_stops_at_the_stored_size_limit() {
    let database = Database::create().await;
    let s3 = S3Server::start().await;
    // Stored bytes are bounded at 16 MiB × 2 = 32 MiB.
    let service = Service::start(with(
        base_settings(&database, &s3),
        &[("MAX_PAYLOAD_SIZE", "16"), ("MAX_STORED_EXPANSION", "2")],
    ))
    .await;
    let caller = Caller::user("org-faults", "alice");
    let (export, sources) = service
        .create_export(&caller, "json", &[("exampleApp", "exampleResource")])
        .await;
    // 8 MiB of CSV whose 64 KiB column name is repeated in every JSON record: unbounded, it
    // would store about 256 GiB.
    let mut csv = "c".repeat(64 * 1024).into_bytes();
    csv.push(b'\n');
    while csv.len() < 8 * MIB as usize {
        csv.extend_from_slice(b"1\n");
    }
    let before = service.usage();
    service.reset_peak_rss();
    let started = Instant::now();
    let reply = service
        .upload(
            &export,
            "exampleApp",
            &sources[0],
            EXAMPLE_PSK,
            "text/csv",
            csv,
        )
        .await;
    let took = started.elapsed();
    let after = service.usage();
    let growth_mib = after.peak_rss_kib.saturating_sub(before.rss_kib) / 1024;
    let cpu = after.cpu - before.cpu;
    figure("expansion_bomb", "refused after (ms)", took.as_millis());
    figure("expansion_bomb", "CPU time (ms)", cpu.as_millis());
    figure("expansion_bomb", "peak RSS growth (MiB)", growth_mib);
    assert_json_error(reply.status, &reply.text, 413, "MAX_STORED_EXPANSION");
    assert!(
        growth_mib < 64,
        "converting grew the service by {growth_mib} MiB (bound 64)"
    );
    assert!(
        cpu < Duration::from_secs(10),
        "the refusal cost {cpu:?} of CPU (bound 10 s)"
    );
    assert!(
        s3.list(&format!("org-faults/{export}/")).await.is_empty(),
        "nothing of the refused upload is stored"
    );
}

#[tokio::test]
async fn a_connection_flood_is_capped_and_the_probes_keep_answering() {
    const CAP: usize = 100;
    let database = Database::create().await;
    let s3 = S3Server::start().await;
    let cap = CAP.to_string();
    let service = Service::start(with(
        base_settings(&database, &s3),
        &[("MAX_CONNECTIONS", cap.as_str())],
    ))
    .await;
    let before = service.usage();
    service.reset_peak_rss();
    // Three times the cap of silent connections to the public port.
    let mut flood = Vec::new();
    for _ in 0..3 * CAP {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", service.public)).await {
            flood.push(stream);
        }
    }
    // The ones beyond the cap are closed at once: a read sees the end.
    let mut closed = 0;
    for stream in &mut flood {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    figure("connection_flood", "connections closed of 300", closed);
    assert!(
        closed >= 2 * CAP - 10,
        "only {closed} of {} connections beyond the cap were closed",
        2 * CAP
    );
    // The metrics listener has its own cap: probes keep answering during the flood.
    let probe = service
        .client
        .get(format!("http://127.0.0.1:{}/healthz", service.metrics))
        .send()
        .await
        .expect("the probe answers");
    assert_eq!(probe.status(), 200);
    let after = service.usage();
    let growth_mib = after.peak_rss_kib.saturating_sub(before.rss_kib) / 1024;
    figure("connection_flood", "peak RSS growth (MiB)", growth_mib);
    figure(
        "connection_flood",
        "CPU time (ms)",
        (after.cpu - before.cpu).as_millis(),
    );
    assert!(
        growth_mib < 32,
        "the flood grew the service by {growth_mib} MiB"
    );
    assert_cpu_within("connection_flood", after.cpu - before.cpu);
    // Once the flood is gone, the public API serves again.
    drop(flood);
    let caller = Caller::user("org-faults", "alice");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = service
            .client
            .get(service.url("/api/export/v1/exports"))
            .header("x-rh-identity", caller.header())
            .send()
            .await;
        if matches!(&answer, Ok(response) if response.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the public API never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
