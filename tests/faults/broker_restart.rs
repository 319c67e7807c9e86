//! The broker killed and started again while tenants keep creating exports: every event the
//! service owes is delivered, and none twice.
//!
//! What exactly is asserted, given the broker (tansu's memory engine) forgets every topic and
//! message when it dies:
//! - Phase "before": exports are created with the broker up; a consumer (fresh group, from the
//!   beginning) receives their events, and the broker is killed only once it has them all and
//!   the outbox has nothing unsent. So no event the service handed over is lost with the
//!   broker's memory — which would be the broker's loss, not the service's.
//! - Phase "during": exports created while the broker is down; their events must wait in the
//!   outbox (nothing marked sent).
//! - Phase "restart": exports created right after the broker is back but before its topic
//!   exists again (the producer must retry, not drop them).
//! - Phase "after": exports created once the topic is back.
//! - After the restart, a second consumer (fresh group, from the beginning of the recreated
//!   topic) reads everything delivered since.
//!
//! Every event id in the outbox is received by one of the two consumers, and the two together
//! receive no id twice (an event re-sent after the restart would be counted twice).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;

use crate::harness::{Broker, Caller, Database, S3Server, Service, base_settings, figure, with};

const TOPIC: &str = "platform.export.requests.faults";

/// A consumer of the topic from its beginning in a fresh group, collecting event ids until
/// dropped.
struct Collector {
    ids: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    fn start(brokers: &str) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("faults-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("a consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let ids = Arc::new(Mutex::new(Vec::new()));
        let collected = ids.clone();
        let task = tokio::spawn(async move {
            let mut stream = consumer.stream();
            while let Some(message) = stream.next().await {
                match message {
                    Ok(message) => {
                        let value: serde_json::Value =
                            serde_json::from_slice(message.payload().unwrap_or_default())
                                .expect("an event is JSON");
                        let id = value["id"].as_str().expect("an event has an id").to_owned();
                        collected.lock().unwrap().push(id);
                    }
                    // Transient while the broker or the topic is missing.
                    Err(error) => {
                        eprintln!("consumer: {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Self { ids, task }
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }

    /// Waits until every id of `expected` was received; panics after `timeout`.
    async fn wait_for(&self, expected: &HashSet<String>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let received: HashSet<String> = self.ids().into_iter().collect();
            let missing = expected.difference(&received).count();
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {} events not received within {timeout:?}",
                expected.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_once_across_a_broker_restart() {
    let database = Database::create().await;
    let s3 = S3Server::start().await;
    let mut broker = Broker::start().await;
    broker.create_topic(TOPIC, 3).await;
    let brokers = broker.address();
    let settings = with(
        base_settings(&database, &s3),
        &[
            ("KAFKA_BROKERS", brokers.as_str()),
            ("KAFKA_ANNOUNCE_TOPIC", TOPIC),
            ("KAFKA_MESSAGE_TIMEOUT", "3s"),
            ("OUTBOX_LEASE", "10s"),
            ("OUTBOX_MAX_BACKOFF", "1s"),
        ],
    );
    let service = Service::start(settings).await;
    let pool = database.pool().await;
    let caller = Caller::user("org-faults", "alice");
    let two_sources = [("exampleApp", "exampleResource"), ("otherApp", "events")];
    let outbox_ids = || async {
        sqlx::query_scalar::<_, String>("SELECT id::text FROM outbox")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect::<HashSet<String>>()
    };
    let unsent = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    // Before: the first consumer gets every event, then the broker dies.
    let first = Collector::start(&broker.address());
    for _ in 0..10 {
        service.create_export(&caller, "json", &two_sources).await;
    }
    let before = outbox_ids().await;
    assert_eq!(before.len(), 20);
    first.wait_for(&before, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while unsent().await > 0 {
        assert!(
            Instant::now() < deadline,
            "events stayed unsent after delivery"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received_before = first.ids();
    drop(first);
    broker.kill();

    // During: the API answers, the events wait.
    for _ in 0..10 {
        service.create_export(&caller, "json", &two_sources).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        unsent().await,
        20,
        "nothing is marked sent while the broker is down"
    );

    // The broker returns without its topic; exports keep coming; then the topic is back.
    broker.restart().await;
    for _ in 0..5 {
        service.create_export(&caller, "json", &two_sources).await;
    }
    broker.create_topic(TOPIC, 3).await;
    let restarted = Instant::now();
    for _ in 0..10 {
        service.create_export(&caller, "json", &two_sources).await;
    }

    let all = outbox_ids().await;
    assert_eq!(all.len(), 70);
    let owed_after: HashSet<String> = all.difference(&before).cloned().collect();
    let second = Collector::start(&broker.address());
    second.wait_for(&owed_after, Duration::from_secs(60)).await;
    figure(
        "broker_restart",
        "seconds from the topic's return to the last event's delivery",
        format!("{:.1}", restarted.elapsed().as_secs_f64()),
    );
    // Keep listening a little for late duplicates.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received_after = second.ids();

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in received_before.iter().chain(&received_after) {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        twice.is_empty(),
        "events delivered more than once: {twice:?}"
    );
    let missing: Vec<_> = all
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "events never delivered: {missing:?}");
    assert_eq!(unsent().await, 0, "the outbox is drained");
    figure("broker_restart", "events delivered", counts.len());
}
