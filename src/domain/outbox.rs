//! Messages waiting in the transactional outbox.

use uuid::Uuid;

use super::ids::{Application, ExportId, SourceId};

/// One event to publish: the announcement of one source of a new export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The event id (CloudEvent `id`), stable across redeliveries.
    pub id: Uuid,
    /// The export; also the message key, so one export's events share a partition.
    pub export_id: ExportId,
    /// The source the event asks for.
    pub source_id: SourceId,
    /// The `application` header.
    pub application: Application,
    /// The `x-rh-identity` header: the creating request's raw identity.
    pub identity: String,
    /// The serialised CloudEvent.
    pub payload: String,
}
