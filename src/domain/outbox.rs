//! Messages waiting in the transactional outbox.

use uuid::Uuid;

use super::ids::{Application, ExportId, SourceId};

/// What an outbox event announces; the relay picks its topic by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A source of a new export is requested from its application.
    Request,
    /// A pending source's export was deleted: its application may stop working on it.
    Cancel,
    /// An export reached a final status (`complete`, `partial` or `failed`).
    Completion,
}

impl EventKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Cancel => "cancel",
            Self::Completion => "completion",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "request" => Ok(Self::Request),
            "cancel" => Ok(Self::Cancel),
            "completion" => Ok(Self::Completion),
            other => Err(format!("unknown outbox event kind '{other}'")),
        }
    }
}

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The event id (CloudEvent `id`), stable across redeliveries.
    pub id: Uuid,
    /// What the event announces.
    pub kind: EventKind,
    /// The export; also the message key, so one export's events share a partition.
    pub export_id: ExportId,
    /// The source a request or cancel is about; `None` for a completion.
    pub source_id: Option<SourceId>,
    /// The `application` header of a request or cancel.
    pub application: Option<Application>,
    /// The `x-rh-identity` header of a request or cancel: the creating request's raw identity.
    pub identity: Option<String>,
    /// A request or cancel: the serialised CloudEvent. A completion: its `data` (the relay
    /// wraps it in the envelope configured when it is published).
    pub payload: String,
}

/// A source still pending when its export was deleted: its application is told to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelledSource {
    /// The deleted export.
    pub export_id: ExportId,
    /// The source.
    pub source_id: SourceId,
    /// Its application.
    pub application: Application,
    /// Its resource.
    pub resource: super::Resource,
}

/// What deleting an export did to the events of its pending sources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Withdrawal {
    /// Requests no relay had touched yet: removed, so those applications never hear of it.
    pub withdrawn: usize,
    /// Requests that may have reached their application: a cancel event follows each.
    pub cancelled: usize,
}
