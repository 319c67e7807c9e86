//! The demo source application: consumes the export requests on Kafka with a consumer group and
//! answers each one for its application through the internal API, with its pre-shared key —
//! uploading generated data for a resource it knows, reporting an error for one it does not.
//!
//! Offsets are committed only after a request is answered (or refused for good), so a request
//! whose answer was cut short by a crash is delivered again; the generated data depends only on
//! the request, so the answer is the same.

use std::future::Future;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
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

/// Consumes requests until `shutdown` resolves, answering those of `settings.application`.
pub async fn run(
    settings: &SourceSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
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
    consumer
        .subscribe(&[&settings.topic])
        .map_err(|error| DemoError::Kafka(error.to_string()))?;
    let api = InternalApi::new(&settings.internal_url, &settings.psk);
    tracing::info!(topic = %settings.topic, group = %settings.group, application = %settings.application, "demo source listening");
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            () = &mut shutdown => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                // The topic may not exist yet, or the broker may be restarting.
                tracing::debug!(%error, "no message");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Some(payload) = message.payload() {
            handle(settings, &api, payload).await?;
        }
        consumer
            .commit_message(&message, CommitMode::Async)
            .map_err(|error| DemoError::Kafka(error.to_string()))?;
    }
    tracing::info!("demo source stopped");
    Ok(())
}

/// Answers one event; an event that is not for us, or unreadable, is skipped.
async fn handle(
    settings: &SourceSettings,
    api: &InternalApi,
    payload: &[u8],
) -> Result<(), DemoError> {
    let request = match ResourceRequest::from_event(payload) {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(%error, "skipping an unreadable event");
            return Ok(());
        }
    };
    if request.application != settings.application {
        tracing::debug!(application = %request.application, "not ours");
        return Ok(());
    }
    let reply = answer(&request, settings.rows, settings.upload_as);
    match api.deliver(&request, &reply).await? {
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
