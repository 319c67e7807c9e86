//! Event dispatch against a real Kafka-protocol broker (tansu, started by `scripts/ensure-kafka.sh`
//! on 127.0.0.1:9092; the fault tests start brokers of their own). Each test uses its own topic.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, export_request, free_port, fresh_database};

pub(crate) fn shared_broker() -> String {
    std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub(crate) fn unique_topic() -> String {
    format!("exports-test-{}", uuid::Uuid::new_v4().simple())
}

/// Settings that point the service at `brokers` and `topic`, creating the topic on start.
fn kafka_settings(brokers: &str, topic: &str) -> Vec<(String, String)> {
    vec![
        ("KAFKA_BROKERS".into(), brokers.into()),
        ("KAFKA_ANNOUNCE_TOPIC".into(), topic.into()),
        ("KAFKA_CREATE_TOPIC_PARTITIONS".into(), "3".into()),
        ("KAFKA_MESSAGE_TIMEOUT".into(), "3s".into()),
        ("OUTBOX_LEASE".into(), "10s".into()),
        ("OUTBOX_MAX_BACKOFF".into(), "1s".into()),
    ]
}

async fn spawn_with_kafka(database: &str, brokers: &str, topic: &str) -> TestApp {
    spawn_with_kafka_and(database, brokers, topic, &[]).await
}

pub(crate) async fn spawn_with_kafka_and(
    database: &str,
    brokers: &str,
    topic: &str,
    extra: &[(&str, &str)],
) -> TestApp {
    let mut settings = kafka_settings(brokers, topic);
    settings.extend(
        extra
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    let borrowed: Vec<(&str, &str)> = settings
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    TestApp::spawn_on(database, &borrowed).await
}

/// A message as consumed.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) key: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) value: Value,
}

impl Received {
    pub(crate) fn id(&self) -> String {
        self.value["id"].as_str().unwrap().to_string()
    }
}

/// Consumes `topic` from the beginning with a fresh consumer group until `expected` messages
/// arrived (or `timeout`), then keeps listening for `linger` to catch duplicates.
pub(crate) async fn consume(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
    linger: Duration,
) -> Vec<Received> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("test-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut received = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut linger_until: Option<Instant> = None;
    loop {
        let until = linger_until.unwrap_or(deadline);
        let remaining = until.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        match tokio::time::timeout(remaining, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(error)) => {
                // The topic may not exist yet while the service creates it.
                eprintln!("consumer: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| {
                                (
                                    header.key.to_string(),
                                    String::from_utf8(header.value.unwrap_or_default().to_vec())
                                        .unwrap(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                received.push(Received {
                    key: String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap(),
                    headers,
                    value: serde_json::from_slice(message.payload().unwrap_or_default()).unwrap(),
                });
                if received.len() >= expected && linger_until.is_none() {
                    linger_until = Some(Instant::now() + linger);
                }
            }
        }
    }
    received
}

fn count_by_id(messages: &[Received]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in messages {
        *counts.entry(message.id()).or_insert(0) += 1;
    }
    counts
}

async fn wait_for_metric(app: &TestApp, name: &str, wanted: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let value = app.metric(name).await;
        if value == Some(wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {value:?}, expected {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn every_field_and_header_of_the_cloud_events() {
    let topic = unique_topic();
    let brokers = shared_broker();
    let app = spawn_with_kafka(&fresh_database().await, &brokers, &topic).await;
    let caller = Caller::user_with_account("org-42", "alice", "acct-9");
    let created = app
        .create(
            &caller,
            json!({"name": "events", "format": "csv", "sources": [
                {"application": "exampleApp", "resource": "exampleResource", "filters": {"zeta": 1, "alpha": ["x"]}},
                {"application": "otherApp", "resource": "events"},
                {"application": "exampleApp", "resource": "anotherExampleResource", "filters": {}},
            ]}),
        )
        .await;
    let export_id = created["id"].as_str().unwrap();
    let messages = consume(
        &brokers,
        &topic,
        3,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(messages.len(), 3, "{messages:#?}");

    let outbox_ids: Vec<String> = sqlx::query_scalar("SELECT id::text FROM outbox ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for (index, message) in messages.iter().enumerate() {
        let source = &created["sources"][index];
        assert_eq!(message.key, export_id, "the export id keys every message");
        assert_eq!(
            message.headers,
            vec![
                (
                    "application".to_string(),
                    source["application"].as_str().unwrap().to_string()
                ),
                ("x-rh-identity".to_string(), caller.header()),
            ]
        );
        let event = &message.value;
        let keys: Vec<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "$schema",
                "source",
                "subject",
                "specversion",
                "type",
                "time",
                "redhatorgid",
                "dataschema",
                "data"
            ]
        );
        assert_eq!(
            event["id"],
            json!(outbox_ids[index]),
            "the event id is the outbox row id"
        );
        assert_eq!(
            event["$schema"],
            "https://console.redhat.com/api/schemas/events/v1/events.json"
        );
        assert_eq!(
            event["source"],
            "urn:redhat:source:console:app:export-service"
        );
        assert_eq!(
            event["subject"],
            format!("urn:redhat:subject:export-service:request:{export_id}")
        );
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "com.redhat.console.export-service.request");
        let created_at = created["created_at"].as_str().unwrap();
        assert_eq!(event["time"], format!("{}Z", &created_at[..19]));
        assert_eq!(event["redhatorgid"], "org-42");
        assert_eq!(
            event["dataschema"],
            "https://console.redhat.com/api/schemas/apps/export-service/v1/resource-request.json"
        );
        let request = &event["data"]["resource_request"];
        assert_eq!(request["application"], source["application"]);
        assert_eq!(request["resource"], source["resource"]);
        assert_eq!(request["export_request_uuid"], json!(export_id));
        assert_eq!(request["format"], "csv");
        assert_eq!(
            request["uuid"], source["id"],
            "uuid is the source id the internal API takes"
        );
        assert_eq!(request["x-rh-identity"], json!(caller.header()));
    }
    let first = &messages[0].value["data"]["resource_request"];
    assert_eq!(
        serde_json::to_string(&first["filters"]).unwrap(),
        r#"{"zeta":1,"alpha":["x"]}"#
    );
    assert!(
        messages[1].value["data"]["resource_request"]
            .get("filters")
            .is_none()
    );
    assert!(
        messages[2].value["data"]["resource_request"]
            .get("filters")
            .is_none()
    );

    // The source ids in the events are the export's stored sources.
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM sources WHERE export_id = $1::uuid ORDER BY position",
    )
    .bind(export_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let announced: Vec<String> = messages
        .iter()
        .map(|message| {
            message.value["data"]["resource_request"]["uuid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(announced, stored);
    // …and the internal API accepts them.
    for message in &messages {
        let request = &message.value["data"]["resource_request"];
        let reply = app
            .upload(
                export_id,
                request["application"].as_str().unwrap(),
                request["uuid"].as_str().unwrap(),
                Some(if request["application"] == "otherApp" {
                    "psk-other"
                } else {
                    "psk-example"
                }),
                "id\n1\n",
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    app.wait_for_status(&caller, export_id, "complete").await;

    wait_for_metric(
        &app,
        "export_service_outbox_pending",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(&format!(
            "export_service_kafka_produced{{topic=\"{topic}\"}} 3"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("export_service_publish_seconds_count"));
}

/// A tansu broker of this test's own, on `port`, killed when dropped.
struct OwnBroker(Child);

impl OwnBroker {
    fn start(port: u16) -> Self {
        let address = format!("tcp://127.0.0.1:{port}");
        let binary = std::env::var("TANSU_BIN").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            let installed = format!("{home}/.cargo/bin/tansu");
            if std::path::Path::new(&installed).exists() {
                installed
            } else {
                "tansu".into()
            }
        });
        let child = Command::new(binary)
            .args([
                "broker",
                "--listener-url",
                &address,
                "--advertised-listener-url",
                &address,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed by scripts/ensure-kafka.sh");
        Self(child)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn events_created_while_the_broker_is_down_arrive_once_it_is_back() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = unique_topic();
    let app = spawn_with_kafka(&fresh_database().await, &brokers, &topic).await;
    let caller = Caller::user("org-1", "alice");
    for index in 0..5 {
        let reply = app
            .post_raw(
                "/api/export/v1/exports",
                &caller,
                export_request(
                    &format!("e{index}"),
                    "json",
                    &[("exampleApp", "exampleResource"), ("otherApp", "events")],
                )
                .to_string(),
            )
            .await;
        assert_eq!(
            reply.status, 202,
            "the API answers while Kafka is down: {}",
            reply.text
        );
    }
    wait_for_metric(
        &app,
        "export_service_outbox_pending",
        10.0,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        unsent, 10,
        "nothing is marked sent while the broker is down"
    );

    let _broker = OwnBroker::start(port);
    let messages = consume(
        &brokers,
        &topic,
        10,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    let counts = count_by_id(&messages);
    assert_eq!(counts.len(), 10, "every event arrives: {counts:?}");
    assert!(
        counts.values().all(|count| *count == 1),
        "none twice: {counts:?}"
    );
    wait_for_metric(
        &app,
        "export_service_outbox_pending",
        0.0,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn two_relays_on_one_database_publish_each_event_once() {
    let topic = unique_topic();
    let brokers = shared_broker();
    let database = fresh_database().await;
    // Small batches make the two relays compete for rows many times.
    let small_batches = [("OUTBOX_BATCH_SIZE", "2")];
    let first = spawn_with_kafka_and(&database, &brokers, &topic, &small_batches).await;
    let second = spawn_with_kafka_and(&database, &brokers, &topic, &small_batches).await;
    let caller = Caller::user("org-1", "alice");
    let creates = (0..20).map(|index| {
        let app = if index % 2 == 0 { &first } else { &second };
        let body = export_request(
            &format!("e{index}"),
            "json",
            &[("exampleApp", "exampleResource"), ("otherApp", "events")],
        );
        let caller = caller.clone();
        async move { app.create(&caller, body).await }
    });
    futures::future::join_all(creates).await;
    let messages = consume(
        &brokers,
        &topic,
        40,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    let counts = count_by_id(&messages);
    assert_eq!(counts.len(), 40, "{counts:?}");
    assert!(
        counts.values().all(|count| *count == 1),
        "published once each: {counts:?}"
    );
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&first.pool)
        .await
        .unwrap();
    assert_eq!(unsent, 0);
    let produced = format!("export_service_kafka_produced{{topic=\"{topic}\"}}");
    let (by_first, by_second) = (
        first.metric(&produced).await.unwrap_or(0.0),
        second.metric(&produced).await.unwrap_or(0.0),
    );
    assert_eq!(by_first + by_second, 40.0);
    assert!(
        by_first > 0.0 && by_second > 0.0,
        "both relays published: {by_first} + {by_second}"
    );
}

#[tokio::test]
async fn shutdown_is_bounded_and_marks_nothing_unacknowledged_as_sent() {
    // Nothing listens on this port: deliveries cannot succeed.
    let brokers = format!("127.0.0.1:{}", free_port());
    let topic = unique_topic();
    let mut settings = kafka_settings(&brokers, &topic);
    // No topic creation, so the relay claims and tries to publish at once.
    settings.retain(|(name, _)| name != "KAFKA_CREATE_TOPIC_PARTITIONS");
    settings.push(("SHUTDOWN_TIMEOUT".into(), "8s".into()));
    let borrowed: Vec<(&str, &str)> = settings
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    // Not `spawn_with`: the database must outlive the stopped app.
    let app = TestApp::spawn_on(&fresh_database().await, &borrowed).await;
    let caller = Caller::user("org-1", "alice");
    app.create(
        &caller,
        export_request("n", "json", &[("exampleApp", "exampleResource")]),
    )
    .await;
    // Let the relay claim the event and start a delivery that cannot complete.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if attempts > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never claimed the event"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let failures = app
            .metric(&format!(
                "export_service_kafka_produce_failures{{topic=\"{topic}\"}}"
            ))
            .await;
        if failures.is_some_and(|count| count >= 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed delivery was not counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pool = app.pool.clone();
    let took = app.stop().await;
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let (sent, error): (Option<chrono::DateTime<chrono::Utc>>, Option<String>) =
        sqlx::query_as("SELECT sent_at, last_error FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        sent.is_none(),
        "an unacknowledged event must not be marked sent"
    );
    assert!(
        error.is_some(),
        "the failed delivery is recorded: {error:?}"
    );
}

#[tokio::test]
async fn without_brokers_events_wait_in_the_outbox() {
    let app = TestApp::spawn().await;
    let caller = Caller::user("org-1", "alice");
    app.create(
        &caller,
        export_request(
            "n",
            "json",
            &[("exampleApp", "exampleResource"), ("otherApp", "events")],
        ),
    )
    .await;
    let (unsent, attempts): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(attempts) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((unsent, attempts), (2, 0));
    wait_for_metric(
        &app,
        "export_service_outbox_pending",
        2.0,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn event_strings_come_from_configuration() {
    let topic = unique_topic();
    let brokers = shared_broker();
    let app = spawn_with_kafka_and(
        &fresh_database().await,
        &brokers,
        &topic,
        &[
            ("KAFKA_EVENT_SOURCE", "urn:example:source"),
            ("KAFKA_EVENT_TYPE", "com.example.export.request"),
            ("KAFKA_EVENT_SPECVERSION", "1.0.2"),
            ("KAFKA_EVENT_DATASCHEMA", "https://example.com/request.json"),
            ("KAFKA_EVENT_SCHEMA", "https://example.com/events.json"),
        ],
    )
    .await;
    let caller = Caller::user("org-1", "alice");
    app.create(
        &caller,
        export_request("n", "json", &[("exampleApp", "exampleResource")]),
    )
    .await;
    let messages = consume(
        &brokers,
        &topic,
        1,
        Duration::from_secs(30),
        Duration::from_millis(200),
    )
    .await;
    let event = &messages[0].value;
    assert_eq!(event["source"], "urn:example:source");
    assert_eq!(event["type"], "com.example.export.request");
    assert_eq!(event["specversion"], "1.0.2");
    assert_eq!(event["dataschema"], "https://example.com/request.json");
    assert_eq!(event["$schema"], "https://example.com/events.json");
}
