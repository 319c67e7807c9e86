//! Publishing outbox events to Kafka with an idempotent producer (`acks=all`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::KafkaConfig;
use crate::domain::outbox::{EventKind, OutboxEvent};
use crate::metrics::Metrics;

/// Batches in a row without one acknowledgement after which the producer is replaced.
const STUCK_BATCHES: u32 = 3;

/// A Kafka client problem that is not about one message.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// The client could not be created (bad properties).
    #[error("cannot create the Kafka client: {0}")]
    Client(#[source] KafkaError),
    /// The topic could not be created.
    #[error("cannot create topic {topic}: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// What the broker said.
        reason: String,
    },
}

/// Why one event was not acknowledged; it stays in the outbox and is retried.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer's queue refused the message (full, or the producer failed).
    #[error("not queued: {0}")]
    NotQueued(#[source] KafkaError),
    /// The broker did not acknowledge the message (timed out, or refused it).
    #[error("{0}")]
    NotAcknowledged(#[source] KafkaError),
    /// The producer was replaced before the message's delivery report arrived.
    #[error("the producer was dropped before delivery")]
    ProducerDropped,
}

/// The librdkafka configuration for `config` (brokers must be set).
pub fn client_config(config: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set(
            "bootstrap.servers",
            config.brokers.as_deref().unwrap_or_default(),
        )
        .set("client.id", client_id);
    if let Some(protocol) = &config.security_protocol {
        client.set("security.protocol", protocol);
    }
    if let Some(mechanism) = &config.sasl_mechanism {
        client.set("sasl.mechanism", mechanism);
    }
    if let Some(username) = &config.sasl_username {
        client.set("sasl.username", username);
    }
    if let Some(password) = &config.sasl_password {
        client.set("sasl.password", password.expose());
    }
    if let Some(ca) = &config.ssl_ca_location {
        client.set("ssl.ca.location", ca);
    }
    client
}

/// Publishes events, each to the topic of its kind.
pub struct KafkaPublisher {
    /// Replaced by a new one after a fatal error (an idempotent producer whose broker lost its
    /// producer id cannot send again).
    producer: Mutex<FutureProducer>,
    producer_config: ClientConfig,
    /// Batches in a row of which no event was acknowledged.
    failed_batches: AtomicU32,
    admin_config: ClientConfig,
    topic: String,
    cancel_topic: String,
    completion_topic: String,
    create_topic_partitions: Option<i32>,
    metrics: Metrics,
}

impl KafkaPublisher {
    /// A publisher to the topics of `config`. No connection is made yet.
    pub fn new(
        config: &KafkaConfig,
        client_id: &str,
        metrics: Metrics,
    ) -> Result<Self, KafkaSetupError> {
        let base = client_config(config, client_id);
        let mut producer_config = base.clone();
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                config.message_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "5");
        for (key, value) in &config.extra_properties {
            producer_config.set(key, value.expose());
        }
        let producer: FutureProducer = producer_config.create().map_err(KafkaSetupError::Client)?;
        Ok(Self {
            producer: Mutex::new(producer),
            producer_config,
            failed_batches: AtomicU32::new(0),
            admin_config: base,
            topic: config.topic.clone(),
            cancel_topic: config.cancel_topic.clone(),
            completion_topic: config.completion_topic.clone(),
            create_topic_partitions: config.create_topic_partitions,
            metrics,
        })
    }

    /// The topic requests go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic events of `kind` go to.
    pub fn topic_of(&self, kind: EventKind) -> &str {
        match kind {
            EventKind::Request => &self.topic,
            EventKind::Cancel => &self.cancel_topic,
            EventKind::Completion => &self.completion_topic,
        }
    }

    /// Whether the topic must be created before publishing.
    pub fn creates_topic(&self) -> bool {
        self.create_topic_partitions.is_some()
    }

    /// Creates the topics when configured to (an existing topic is fine).
    pub async fn ensure_topic(&self) -> Result<(), KafkaSetupError> {
        let Some(partitions) = self.create_topic_partitions else {
            return Ok(());
        };
        let admin: AdminClient<DefaultClientContext> = self
            .admin_config
            .create()
            .map_err(KafkaSetupError::Client)?;
        let mut names = vec![
            self.topic.as_str(),
            &self.cancel_topic,
            &self.completion_topic,
        ];
        names.sort_unstable();
        names.dedup();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let failed = |reason: String| KafkaSetupError::Topic {
            topic: names.join(", "),
            reason,
        };
        let results = admin
            .create_topics(&topics, &options)
            .await
            .map_err(|error| failed(error.to_string()))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(failed(code.to_string())),
            }
        }
        Ok(())
    }

    /// Publishes `events` concurrently and waits for every delivery report. The result for each
    /// event (same order) is `Ok` only once the broker acknowledged it.
    pub async fn publish(&self, events: &[OutboxEvent]) -> Vec<Result<(), PublishError>> {
        let producer = self.producer().clone();
        let deliveries = events
            .iter()
            .map(|event| self.publish_one(&producer, event));
        let results = join_all(deliveries).await;
        drop(producer);
        if results.iter().all(Result::is_err) {
            let failed = self.failed_batches.fetch_add(1, Ordering::Relaxed) + 1;
            self.replace_if_stuck(failed);
        } else {
            self.failed_batches.store(0, Ordering::Relaxed);
        }
        for (event, result) in events.iter().zip(&results) {
            let counter = match result {
                Ok(_) => &self.metrics.kafka_produced,
                Err(_) => &self.metrics.kafka_produce_failures,
            };
            counter
                .with_label_values(&[self.topic_of(event.kind)])
                .inc();
        }
        results
    }

    fn producer(&self) -> std::sync::MutexGuard<'_, FutureProducer> {
        self.producer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Starts a new producer after a fatal error, or after [`STUCK_BATCHES`] batches in a
    /// row without one acknowledgement. An idempotent producer whose broker restarted without
    /// its state gets `UnknownProducerId` and retries inside librdkafka until every message
    /// times out, however long the broker has been back (librdkafka#3009): a new producer, with
    /// a new producer id, sends them. When the broker is simply down the new producer waits for
    /// it like the old one; nothing is lost either way, the events stay in the outbox.
    fn replace_if_stuck(&self, failed_batches: u32) {
        let mut producer = self.producer();
        let reason = match producer.client().fatal_error() {
            Some((code, reason)) => format!("fatal error {code}: {reason}"),
            None if failed_batches >= STUCK_BATCHES => {
                format!("{failed_batches} batches in a row without an acknowledgement")
            }
            None => return,
        };
        match self.producer_config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!(%reason, "starting a new Kafka producer");
                let stuck = std::mem::replace(&mut *producer, fresh);
                self.failed_batches.store(0, Ordering::Relaxed);
                // Dropping a producer flushes for up to half a second: not on the async workers.
                tokio::task::spawn_blocking(move || drop(stuck));
            }
            Err(error) => tracing::error!(%error, "cannot create a new Kafka producer"),
        }
    }

    async fn publish_one(
        &self,
        producer: &FutureProducer,
        event: &OutboxEvent,
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        let key = event.export_id.to_string();
        let mut headers = OwnedHeaders::new();
        if let Some(application) = &event.application {
            headers = headers.insert(Header {
                key: "application",
                value: Some(application.as_str()),
            });
        }
        if let Some(identity) = &event.identity {
            headers = headers.insert(Header {
                key: "x-rh-identity",
                value: Some(identity.as_str()),
            });
        }
        let topic = self.topic_of(event.kind);
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&event.payload)
            .headers(headers);
        let delivery = producer
            .send_result(record)
            .map_err(|(error, _)| PublishError::NotQueued(error))?;
        match delivery.await {
            Ok(Ok(_)) => {
                self.metrics
                    .publish_seconds
                    .with_label_values(&[topic])
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Ok(Err((error, _))) => Err(PublishError::NotAcknowledged(error)),
            Err(_) => Err(PublishError::ProducerDropped),
        }
    }

    /// Waits up to `timeout` for queued messages to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer().flush(timeout) {
            tracing::warn!(error = %error, "not every queued event was delivered before shutdown");
        }
    }
}
