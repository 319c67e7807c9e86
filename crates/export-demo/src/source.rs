//! The demo source application: consumes the export requests on Kafka with a consumer group and
//! answers each one for its application through the internal API, with its pre-shared key —
//! uploading generated data for a resource it knows, reporting an error for one it does not.
//!
//! Offsets are committed only after a request is answered (or refused for good), so a request
//! whose answer was cut short by a crash is delivered again; the generated data depends only on
//! the request, so the answer is the same.
//!
//! It honours cancels: the service sends one for each source still pending when its export is
//! deleted. While the source works on a request (`work_time`) it keeps reading the topic, so a
//! cancel that arrives meanwhile stops the answer; a request already cancelled is skipped.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use uuid::Uuid;

use crate::data::{Dataset, KNOWN_RESOURCES};
use crate::{DemoError, Format};

/// Which format the demo uploads in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFormat {
    /// The export's format (stored as uploaded).
    Requested,
    /// The other format, so the service (or the application's plugin) converts it.
    Other,
}

/// How the demo source reaches Kafka and the internal API.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Kafka bootstrap servers (`host:port,…`).
    pub brokers: String,
    /// The request topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Base URL of the internal API (`http://host:10000`).
    pub internal_url: String,
    /// The application this source answers for; requests for others are skipped.
    pub application: String,
    /// The application's pre-shared key.
    pub psk: String,
    /// Rows generated per request.
    pub rows: usize,
    /// The format uploads are made in.
    pub upload_as: UploadFormat,
    /// How long the source works on a request before it answers (a cancel may come meanwhile).
    pub work_time: Duration,
    /// The topic cancels come on, when not the request topic.
    pub cancel_topic: Option<String>,
}

/// The `type` of the service's cancel events.
pub const CANCEL_TYPE: &str = "com.redhat.console.export-service.request-cancelled";

/// What an event on the source's topics asks of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Deliver this resource.
    Request(ResourceRequest),
    /// Stop working on this source: its export was deleted.
    Cancel {
        /// The application the cancelled source belongs to.
        application: String,
        /// The cancelled source.
        source_id: Uuid,
    },
}

#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type", default)]
    event_type: String,
}

#[derive(Deserialize)]
struct CancelEvent {
    data: CancelData,
}

#[derive(Deserialize)]
struct CancelData {
    resource_request: CancelledRequest,
}

#[derive(Deserialize)]
struct CancelledRequest {
    application: String,
    uuid: Uuid,
}

impl Incoming {
    /// The application the event is for.
    pub fn application(&self) -> &str {
        match self {
            Self::Request(request) => &request.application,
            Self::Cancel { application, .. } => application,
        }
    }

    /// Reads a request or cancel event.
    pub fn from_event(payload: &[u8]) -> Result<Self, DemoError> {
        let kind: Kind = serde_json::from_slice(payload)
            .map_err(|error| DemoError::BadEvent(error.to_string()))?;
        if kind.event_type != CANCEL_TYPE {
            return ResourceRequest::from_event(payload).map(Self::Request);
        }
        let event: CancelEvent = serde_json::from_slice(payload)
            .map_err(|error| DemoError::BadEvent(error.to_string()))?;
        Ok(Self::Cancel {
            application: event.data.resource_request.application,
            source_id: event.data.resource_request.uuid,
        })
    }
}

/// How many requests a source run answered and how many it dropped because they were
/// cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests answered (uploaded, or reported as errors).
    pub answered: usize,
    /// Requests not answered because a cancel came first.
    pub cancelled: usize,
}

/// The most recent cancelled source ids, bounded so a long-running source does not grow.
struct Cancelled {
    order: VecDeque<Uuid>,
    ids: HashSet<Uuid>,
}

impl Cancelled {
    const CAPACITY: usize = 10_000;

    fn new() -> Self {
        Self {
            order: VecDeque::new(),
            ids: HashSet::new(),
        }
    }

    fn insert(&mut self, id: Uuid) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY
                && let Some(oldest) = self.order.pop_front()
            {
                self.ids.remove(&oldest);
            }
        }
    }

    fn contains(&self, id: Uuid) -> bool {
        self.ids.contains(&id)
    }
}

/// One resource request, as the CloudEvent's `data.resource_request` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    /// The requested application.
    pub application: String,
    /// The export.
    pub export_id: Uuid,
    /// The source (the event's `uuid`).
    pub source_id: Uuid,
    /// The requested resource.
    pub resource: String,
    /// The export's format.
    pub format: Format,
}

#[derive(Deserialize)]
struct Event {
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    resource_request: RawRequest,
}

#[derive(Deserialize)]
struct RawRequest {
    application: String,
    export_request_uuid: Uuid,
    uuid: Uuid,
    resource: String,
    format: String,
}

impl ResourceRequest {
    /// Reads a request event (a CloudEvent as the service publishes it).
    pub fn from_event(payload: &[u8]) -> Result<Self, DemoError> {
        let event: Event = serde_json::from_slice(payload)
            .map_err(|error| DemoError::BadEvent(error.to_string()))?;
        let raw = event.data.resource_request;
        let format = raw
            .format
            .parse()
            .map_err(|_| DemoError::BadEvent(format!("unknown format '{}'", raw.format)))?;
        Ok(Self {
            application: raw.application,
            export_id: raw.export_request_uuid,
            source_id: raw.uuid,
            resource: raw.resource,
            format,
        })
    }
}

/// What the source answers to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Upload these bytes in this format.
    Upload {
        /// The body's format.
        format: Format,
        /// The rows rendered.
        body: Vec<u8>,
        /// How many rows.
        rows: usize,
    },
    /// Report an error with this code (400–599) and message.
    Error {
        /// The code.
        code: u16,
        /// What went wrong, for the tenant.
        message: String,
    },
}

/// The answer to `request`: generated data for a known resource, a 400 for an unknown one.
pub fn answer(request: &ResourceRequest, rows: usize, upload_as: UploadFormat) -> Answer {
    match Dataset::generate(&request.resource, request.source_id, rows) {
        Some(data) => {
            let format = match (upload_as, request.format) {
                (UploadFormat::Requested, format) => format,
                (UploadFormat::Other, Format::Csv) => Format::Json,
                (UploadFormat::Other, Format::Json) => Format::Csv,
            };
            Answer::Upload {
                format,
                body: data.render(format),
                rows: data.len(),
            }
        }
        None => Answer::Error {
            code: 400,
            message: format!(
                "the demo source does not know the resource '{}' (it knows: {})",
                request.resource,
                KNOWN_RESOURCES
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

/// How a delivery to the internal API ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The service accepted the answer.
    Accepted,
    /// The service refused it for good (status and body), e.g. the export was deleted.
    Refused(u16, String),
}

/// Sends answers to the internal API, retrying what may succeed later (connection failures,
/// 429 and 5xx) with a capped exponential backoff.
pub struct InternalApi {
    client: reqwest::Client,
    base: String,
    psk: String,
    attempts: u32,
}

impl InternalApi {
    /// A client of the internal API at `base` using `psk`.
    pub fn new(base: &str, psk: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("a plain HTTP client always builds"),
            base: base.trim_end_matches('/').to_owned(),
            psk: psk.to_owned(),
            attempts: 10,
        }
    }

    /// Delivers `answer` for `request`.
    pub async fn deliver(
        &self,
        request: &ResourceRequest,
        answer: &Answer,
    ) -> Result<Delivered, DemoError> {
        let url = |action: &str| {
            format!(
                "{}/app/export/v1/{}/{}/{}/{action}",
                self.base, request.export_id, request.application, request.source_id
            )
        };
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let call = match answer {
                Answer::Upload { format, body, .. } => self
                    .client
                    .post(url("upload"))
                    .header("content-type", content_type(*format))
                    .body(body.clone()),
                Answer::Error { code, message } => self
                    .client
                    .post(url("error"))
                    .json(&serde_json::json!({ "message": message, "error": code })),
            };
            let outcome = call.header("x-rh-exports-psk", &self.psk).send().await;
            let retry_reason = match outcome {
                Ok(response) if response.status().is_success() => return Ok(Delivered::Accepted),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap_or_default();
                    if status != 429 && status < 500 {
                        return Ok(Delivered::Refused(status, body));
                    }
                    format!("{status}: {body}")
                }
                Err(error) => error.to_string(),
            };
            if attempt >= self.attempts {
                return Err(DemoError::Delivery(retry_reason));
            }
            tracing::warn!(source_id = %request.source_id, attempt, reason = %retry_reason, "delivery failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(8));
        }
    }
}

fn content_type(format: Format) -> &'static str {
    match format {
        Format::Csv => "text/csv",
        Format::Json => "application/json",
    }
}

/// Consumes requests until `shutdown` resolves, answering those of `settings.application`
/// unless they are cancelled first.
pub async fn run(
    settings: &SourceSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<Tally, DemoError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("client.id", "export-demo-source")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // Notice a topic the service creates after we subscribed within seconds.
        .set("topic.metadata.refresh.interval.ms", "2000")
        .create()
        .map_err(|error| DemoError::Kafka(error.to_string()))?;
    let mut topics = vec![settings.topic.as_str()];
    if let Some(cancels) = settings.cancel_topic.as_deref()
        && cancels != settings.topic
    {
        topics.push(cancels);
    }
    consumer
        .subscribe(&topics)
        .map_err(|error| DemoError::Kafka(error.to_string()))?;
    let api = InternalApi::new(&settings.internal_url, &settings.psk);
    tracing::info!(topics = ?topics, group = %settings.group, application = %settings.application, "demo source listening");
    tokio::pin!(shutdown);
    let mut cancelled = Cancelled::new();
    // Messages read ahead while working on a request (with what they say for us), handled
    // and committed after it.
    let mut ahead: VecDeque<(OwnedMessage, Option<Incoming>)> = VecDeque::new();
    let mut tally = Tally::default();
    loop {
        let (message, incoming) = match ahead.pop_front() {
            Some(read_ahead) => read_ahead,
            None => tokio::select! {
                () = &mut shutdown => break,
                message = consumer.recv() => match message {
                    Ok(message) => {
                        let incoming = ours(settings, message.payload());
                        (message.detach(), incoming)
                    }
                    Err(error) => {
                        // The topic may not exist yet, or the broker may be restarting.
                        tracing::debug!(%error, "no message");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
            },
        };
        if let Some(Incoming::Cancel { source_id, .. }) = &incoming {
            cancelled.insert(*source_id);
        }
        if let Some(Incoming::Request(request)) = incoming {
            // Work on it, reading ahead for cancels; a shutdown now leaves it uncommitted.
            let done = tokio::time::sleep(settings.work_time);
            tokio::pin!(done);
            while !cancelled.contains(request.source_id) {
                tokio::select! {
                    () = &mut shutdown => return Ok(tally),
                    () = &mut done => break,
                    next = consumer.recv() => if let Ok(next) = next {
                        let incoming = ours(settings, next.payload());
                        if let Some(Incoming::Cancel { source_id, .. }) = &incoming {
                            cancelled.insert(*source_id);
                        }
                        ahead.push_back((next.detach(), incoming));
                    },
                }
            }
            if cancelled.contains(request.source_id) {
                tracing::info!(export_id = %request.export_id, source_id = %request.source_id, "request cancelled; not answering");
                tally.cancelled += 1;
            } else {
                answer_request(settings, &api, &request).await?;
                tally.answered += 1;
            }
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                message.topic(),
                message.partition(),
                Offset::Offset(message.offset() + 1),
            )
            .map_err(|error| DemoError::Kafka(error.to_string()))?;
        consumer
            .commit(&offsets, CommitMode::Async)
            .map_err(|error| DemoError::Kafka(error.to_string()))?;
    }
    tracing::info!(?tally, "demo source stopped");
    Ok(tally)
}

/// What `payload` asks of our application: a request or a cancel of one of its sources;
/// `None` for another application's event or an unreadable one.
fn ours(settings: &SourceSettings, payload: Option<&[u8]>) -> Option<Incoming> {
    match Incoming::from_event(payload?) {
        Ok(incoming) if incoming.application() == settings.application => Some(incoming),
        Ok(incoming) => {
            tracing::debug!(application = %incoming.application(), "not ours");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "skipping an unreadable event");
            None
        }
    }
}

/// Answers one request of ours.
async fn answer_request(
    settings: &SourceSettings,
    api: &InternalApi,
    request: &ResourceRequest,
) -> Result<(), DemoError> {
    let reply = answer(request, settings.rows, settings.upload_as);
    match api.deliver(request, &reply).await? {
        Delivered::Accepted => match &reply {
            Answer::Upload { format, rows, body } => tracing::info!(
                export_id = %request.export_id, source_id = %request.source_id,
                resource = %request.resource, rows, bytes = body.len(), uploaded_as = %format,
                requested = %request.format, "uploaded"
            ),
            Answer::Error { code, message } => tracing::info!(
                export_id = %request.export_id, source_id = %request.source_id,
                resource = %request.resource, code, message = %message, "reported an error"
            ),
        },
        Delivered::Refused(status, body) => tracing::warn!(
            export_id = %request.export_id, source_id = %request.source_id, status, body = %body,
            "the service refused the answer; not retrying"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(resource: &str, format: &str) -> Vec<u8> {
        serde_json::json!({
            "id": Uuid::new_v4(), "source": "urn:x", "type": "t", "specversion": "1.0",
            "data": {"resource_request": {
                "application": "exampleApp", "export_request_uuid": Uuid::nil(),
                "uuid": Uuid::max(), "resource": resource, "format": format,
                "x-rh-identity": "e30="
            }}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn reads_the_request_out_of_the_cloud_event() {
        let request = ResourceRequest::from_event(&event("exampleResource", "csv")).unwrap();
        assert_eq!(request.application, "exampleApp");
        assert_eq!(request.export_id, Uuid::nil());
        assert_eq!(request.source_id, Uuid::max());
        assert_eq!(request.format, Format::Csv);
        assert!(ResourceRequest::from_event(b"{}").is_err());
        assert!(ResourceRequest::from_event(&event("exampleResource", "xml")).is_err());
    }

    #[test]
    fn tells_a_cancel_from_a_request() {
        let cancel = serde_json::json!({
            "id": Uuid::new_v4(), "type": CANCEL_TYPE, "specversion": "1.0",
            "data": {"resource_request": {
                "application": "exampleApp", "export_request_uuid": Uuid::nil(),
                "uuid": Uuid::max(), "resource": "exampleResource",
                "reason": "the export was deleted", "x-rh-identity": "e30="
            }}
        })
        .to_string();
        assert_eq!(
            Incoming::from_event(cancel.as_bytes()).unwrap(),
            Incoming::Cancel {
                application: "exampleApp".into(),
                source_id: Uuid::max()
            }
        );
        assert!(matches!(
            Incoming::from_event(&event("exampleResource", "csv")).unwrap(),
            Incoming::Request(_)
        ));
        let mut cancelled = Cancelled::new();
        let source_for = |application: &str| SourceSettings {
            brokers: String::new(),
            topic: String::new(),
            group: String::new(),
            internal_url: String::new(),
            application: application.into(),
            psk: String::new(),
            rows: 0,
            upload_as: UploadFormat::Requested,
            work_time: Duration::ZERO,
            cancel_topic: None,
        };
        let note = |cancelled: &mut Cancelled, application: &str| {
            if let Some(Incoming::Cancel { source_id, .. }) =
                ours(&source_for(application), Some(cancel.as_bytes()))
            {
                cancelled.insert(source_id);
            }
        };
        note(&mut cancelled, "otherApp");
        assert!(
            !cancelled.contains(Uuid::max()),
            "another application's cancel"
        );
        note(&mut cancelled, "exampleApp");
        assert!(cancelled.contains(Uuid::max()));
    }

    #[test]
    fn the_cancelled_set_forgets_the_oldest_beyond_its_capacity() {
        let mut cancelled = Cancelled::new();
        let first = Uuid::new_v4();
        cancelled.insert(first);
        for _ in 0..Cancelled::CAPACITY {
            cancelled.insert(Uuid::new_v4());
        }
        assert!(!cancelled.contains(first));
        assert_eq!(cancelled.ids.len(), Cancelled::CAPACITY);
    }

    #[test]
    fn answers_in_the_requested_or_the_other_format() {
        let request = ResourceRequest::from_event(&event("exampleResource", "json")).unwrap();
        match answer(&request, 4, UploadFormat::Other) {
            Answer::Upload { format, rows, body } => {
                assert_eq!((format, rows), (Format::Csv, 4));
                assert!(body.starts_with(b"id,name,"));
            }
            other => panic!("{other:?}"),
        }
        match answer(&request, 4, UploadFormat::Requested) {
            Answer::Upload { format, body, .. } => {
                assert_eq!(format, Format::Json);
                assert!(body.starts_with(b"{\"data\":["));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unknown_resource_gets_a_400_naming_it_and_the_known_ones() {
        let request = ResourceRequest::from_event(&event("payroll", "json")).unwrap();
        match answer(&request, 4, UploadFormat::Other) {
            Answer::Error { code, message } => {
                assert_eq!(code, 400);
                assert!(message.contains("'payroll'"), "{message}");
                assert!(message.contains("exampleResource"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
