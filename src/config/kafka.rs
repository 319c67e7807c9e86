//! Settings of event dispatch: the Kafka client, the CloudEvent strings and the outbox relay.

use std::time::Duration;

use super::{ConfigError, Reader, Secret, invalid};

/// How to reach the Kafka cluster. Without brokers the dispatcher is disabled and events wait
/// in the outbox.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`; `None` disables publishing.
    pub brokers: Option<String>,
    /// The topic requests are announced on.
    pub topic: String,
    /// The topic cancels of requested sources go to (default: the request topic, which every
    /// source application already consumes).
    pub cancel_topic: String,
    /// The topic completion events go to.
    pub completion_topic: String,
    /// `security.protocol` (plaintext, ssl, sasl_plaintext, sasl_ssl).
    pub security_protocol: Option<String>,
    /// `sasl.mechanism` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub sasl_mechanism: Option<String>,
    /// `sasl.username`.
    pub sasl_username: Option<String>,
    /// `sasl.password`.
    pub sasl_password: Option<Secret<String>>,
    /// `ssl.ca.location`: a CA bundle file.
    pub ssl_ca_location: Option<String>,
    /// Extra librdkafka properties, applied last (they override everything above).
    pub extra_properties: Vec<(String, Secret<String>)>,
    /// Create the topic at start-up with this many partitions (development); `None` = never.
    pub create_topic_partitions: Option<i32>,
    /// How long the client may try to deliver one message before reporting failure.
    pub message_timeout: Duration,
}

/// The constant strings of every CloudEvent (upstream `KAFKA_EVENT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventConfig {
    /// `source`.
    pub source: String,
    /// `specversion`.
    pub specversion: String,
    /// `type`.
    pub event_type: String,
    /// `dataschema`.
    pub dataschema: String,
    /// `$schema`.
    pub schema: String,
    /// `type` of the event that tells an application a requested source was cancelled.
    pub cancel_type: String,
    /// `type` of the event that tells other services an export reached a final status.
    pub completion_type: String,
}

/// How the outbox relay works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Rows claimed and published per round.
    pub batch_size: i64,
    /// How long a claimed row is reserved for the claiming replica; after that another replica
    /// may publish it (the claimant died). Must exceed the message timeout.
    pub lease: Duration,
    /// Longest wait between retries of a failing row.
    pub max_backoff: Duration,
    /// Idle check interval (a create also wakes the relay at once).
    pub poll_interval: Duration,
}

impl Default for EventConfig {
    fn default() -> Self {
        Self {
            source: "urn:redhat:source:console:app:export-service".into(),
            specversion: "1.0".into(),
            event_type: "com.redhat.console.export-service.request".into(),
            dataschema:
                "https://console.redhat.com/api/schemas/apps/export-service/v1/resource-request.json"
                    .into(),
            schema: "https://console.redhat.com/api/schemas/events/v1/events.json".into(),
            cancel_type: "com.redhat.console.export-service.request-cancelled".into(),
            completion_type: "com.redhat.console.export-service.export-completed".into(),
        }
    }
}

pub(super) fn kafka_config(reader: &Reader<'_>) -> Result<KafkaConfig, ConfigError> {
    let settings = reader.0;
    let text = |name: &str| settings.get(name).map(|value| value.trim().to_owned());
    let security_protocol = text("KAFKA_SECURITY_PROTOCOL")
        .map(|protocol| protocol.to_ascii_lowercase())
        .map(|protocol| match protocol.as_str() {
            "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl" => Ok(protocol),
            _ => Err(invalid(
                "KAFKA_SECURITY_PROTOCOL",
                format!("expected plaintext, ssl, sasl_plaintext or sasl_ssl, got '{protocol}'"),
            )),
        })
        .transpose()?;
    let sasl_mechanism = text("KAFKA_SASL_MECHANISM")
        .map(|mechanism| mechanism.to_ascii_uppercase())
        .map(|mechanism| match mechanism.as_str() {
            "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => Ok(mechanism),
            _ => Err(invalid(
                "KAFKA_SASL_MECHANISM",
                format!("expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got '{mechanism}'"),
            )),
        })
        .transpose()?;
    let sasl_username = text("KAFKA_SASL_USERNAME");
    let sasl_password = reader.secret("KAFKA_SASL_PASSWORD");
    if sasl_mechanism.is_some() && (sasl_username.is_none() || sasl_password.is_none()) {
        return Err(invalid(
            "KAFKA_SASL_MECHANISM",
            "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD".into(),
        ));
    }
    let create_topic_partitions = match reader.parsed("KAFKA_CREATE_TOPIC_PARTITIONS", 0i32)? {
        0 => None,
        partitions if partitions > 0 => Some(partitions),
        _ => {
            return Err(invalid(
                "KAFKA_CREATE_TOPIC_PARTITIONS",
                "must be 0 (never create) or a positive number of partitions".into(),
            ));
        }
    };
    let topic = text("KAFKA_ANNOUNCE_TOPIC").unwrap_or_else(|| "platform.export.requests".into());
    let topic_named = |name: &str, default: String| {
        text(name)
            .filter(|topic| !topic.is_empty())
            .unwrap_or(default)
    };
    Ok(KafkaConfig {
        brokers: text("KAFKA_BROKERS").filter(|brokers| !brokers.is_empty()),
        cancel_topic: topic_named("KAFKA_CANCEL_TOPIC", topic.clone()),
        completion_topic: topic_named("KAFKA_COMPLETION_TOPIC", "platform.export.completed".into()),
        topic,
        security_protocol,
        sasl_mechanism,
        sasl_username,
        sasl_password,
        ssl_ca_location: text("KAFKA_SSL_CA_LOCATION"),
        extra_properties: extra_properties(settings.get("KAFKA_PROPERTIES"))?,
        create_topic_partitions,
        message_timeout: reader.duration("KAFKA_MESSAGE_TIMEOUT", 20)?,
    })
}

/// `KAFKA_PROPERTIES`: a JSON object of librdkafka properties, e.g. `{"linger.ms": 5}`.
fn extra_properties(text: Option<&str>) -> Result<Vec<(String, Secret<String>)>, ConfigError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    // Values may hold credentials: errors describe the shape, never the content.
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|_| {
            invalid(
                "KAFKA_PROPERTIES",
                "expected a JSON object of librdkafka properties, e.g. {\"linger.ms\": 5}".into(),
            )
        })?;
    // These decide whether an event counts as delivered, and how long that may take: the relay's
    // guarantees (and the lease check) depend on them, so they are not overridable.
    const FIXED: [&str; 6] = [
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "transactional.id",
    ];
    if let Some(key) = object.keys().find(|key| FIXED.contains(&key.as_str())) {
        return Err(invalid(
            "KAFKA_PROPERTIES",
            format!(
                "'{key}' cannot be overridden (delivery guarantees depend on it; use KAFKA_MESSAGE_TIMEOUT for the timeout)"
            ),
        ));
    }
    object
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                serde_json::Value::String(text) => text,
                serde_json::Value::Number(number) => number.to_string(),
                serde_json::Value::Bool(flag) => flag.to_string(),
                _ => {
                    return Err(invalid(
                        "KAFKA_PROPERTIES",
                        format!("the value of '{key}' must be a string, number or boolean"),
                    ));
                }
            };
            Ok((key, Secret::new(value)))
        })
        .collect()
}

pub(super) fn event_config(reader: &Reader<'_>) -> EventConfig {
    let defaults = EventConfig::default();
    let text =
        |name: &str, default: String| reader.0.get(name).map(str::to_owned).unwrap_or(default);
    EventConfig {
        source: text("KAFKA_EVENT_SOURCE", defaults.source),
        specversion: text("KAFKA_EVENT_SPECVERSION", defaults.specversion),
        event_type: text("KAFKA_EVENT_TYPE", defaults.event_type),
        dataschema: text("KAFKA_EVENT_DATASCHEMA", defaults.dataschema),
        schema: text("KAFKA_EVENT_SCHEMA", defaults.schema),
        cancel_type: text("KAFKA_CANCEL_EVENT_TYPE", defaults.cancel_type),
        completion_type: text("KAFKA_COMPLETION_EVENT_TYPE", defaults.completion_type),
    }
}

pub(super) fn outbox_config(
    reader: &Reader<'_>,
    message_timeout: Duration,
) -> Result<OutboxConfig, ConfigError> {
    let config = OutboxConfig {
        batch_size: reader.parsed("OUTBOX_BATCH_SIZE", 100)?,
        lease: reader.duration("OUTBOX_LEASE", 120)?,
        max_backoff: reader.duration("OUTBOX_MAX_BACKOFF", 60)?,
        poll_interval: reader.duration("OUTBOX_POLL_INTERVAL", 1)?,
    };
    if !(1..=10_000).contains(&config.batch_size) {
        return Err(invalid(
            "OUTBOX_BATCH_SIZE",
            "must be between 1 and 10000".into(),
        ));
    }
    if config.lease < message_timeout + Duration::from_secs(5) {
        return Err(invalid(
            "OUTBOX_LEASE",
            format!(
                "must exceed KAFKA_MESSAGE_TIMEOUT ({} ms) by at least 5 s, or two replicas could publish the same event",
                message_timeout.as_millis()
            ),
        ));
    }
    if config.poll_interval.is_zero() || config.max_backoff.is_zero() {
        return Err(invalid(
            "OUTBOX_POLL_INTERVAL",
            "OUTBOX_POLL_INTERVAL and OUTBOX_MAX_BACKOFF must be positive".into(),
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {

    use super::super::config_of as config;

    #[test]
    fn defaults_disable_publishing_and_match_upstream_strings() {
        let config = config(&[]).unwrap();
        assert!(config.kafka.brokers.is_none());
        assert_eq!(config.kafka.topic, "platform.export.requests");
        assert_eq!(config.events.specversion, "1.0");
        assert_eq!(
            config.events.event_type,
            "com.redhat.console.export-service.request"
        );
        assert_eq!(config.kafka.create_topic_partitions, None);
        assert_eq!(config.kafka.cancel_topic, "platform.export.requests");
        assert_eq!(config.kafka.completion_topic, "platform.export.completed");
        assert_eq!(
            config.events.completion_type,
            "com.redhat.console.export-service.export-completed"
        );
    }

    #[test]
    fn cancels_follow_the_request_topic_unless_named() {
        let moved = config(&[("KAFKA_ANNOUNCE_TOPIC", "requests.x")]).unwrap();
        assert_eq!(moved.kafka.cancel_topic, "requests.x");
        let named = config(&[
            ("KAFKA_ANNOUNCE_TOPIC", "requests.x"),
            ("KAFKA_CANCEL_TOPIC", "cancels.x"),
            ("KAFKA_COMPLETION_TOPIC", "done.x"),
            ("KAFKA_COMPLETION_EVENT_TYPE", "com.example.done"),
        ])
        .unwrap();
        assert_eq!(named.kafka.cancel_topic, "cancels.x");
        assert_eq!(named.kafka.completion_topic, "done.x");
        assert_eq!(named.events.completion_type, "com.example.done");
    }

    #[test]
    fn security_settings_are_validated() {
        let ok = config(&[
            ("KAFKA_BROKERS", "b1:9092,b2:9092"),
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "svc"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            (
                "KAFKA_PROPERTIES",
                r#"{"linger.ms": 5, "enable.ssl.certificate.verification": false}"#,
            ),
        ])
        .unwrap();
        assert_eq!(ok.kafka.security_protocol.as_deref(), Some("sasl_ssl"));
        assert_eq!(ok.kafka.sasl_mechanism.as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(ok.kafka.extra_properties.len(), 2);
        assert!(!format!("{ok:?}").contains("hunter2"));

        assert!(
            config(&[("KAFKA_SECURITY_PROTOCOL", "tls")])
                .unwrap_err()
                .contains("KAFKA_SECURITY_PROTOCOL")
        );
        assert!(
            config(&[("KAFKA_SASL_MECHANISM", "PLAIN")])
                .unwrap_err()
                .contains("KAFKA_SASL_USERNAME")
        );
        let bad = config(&[("KAFKA_PROPERTIES", "sasl.password=hunter2")]).unwrap_err();
        assert!(
            bad.contains("KAFKA_PROPERTIES") && !bad.contains("hunter2"),
            "{bad}"
        );
        assert!(
            config(&[("OUTBOX_LEASE", "10s")])
                .unwrap_err()
                .contains("OUTBOX_LEASE")
        );
        assert!(config(&[("KAFKA_CREATE_TOPIC_PARTITIONS", "-1")]).is_err());
        assert!(
            config(&[("KAFKA_PROPERTIES", r#"{"acks": "0"}"#)])
                .unwrap_err()
                .contains("'acks' cannot be overridden")
        );
        assert!(config(&[("KAFKA_PROPERTIES", r#"{"enable.idempotence": false}"#)]).is_err());
        assert!(
            config(&[("KAFKA_BROKERS", "b:9092"), ("SHUTDOWN_TIMEOUT", "10s")])
                .unwrap_err()
                .contains("SHUTDOWN_TIMEOUT")
        );
    }
}
