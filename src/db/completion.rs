//! The completion event of an export, written to the outbox in the transaction that makes the
//! export final — so it is published exactly when, and only once, the export completes.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::DbError;
use super::exports::find_in;
use crate::domain::ExportId;
use crate::domain::completion::Completion;
use crate::domain::outbox::{EventKind, OutboxEvent};

/// Writes the completion event of `export_id`, which this transaction has just made final.
pub(super) async fn record(
    transaction: &mut Transaction<'_, Postgres>,
    export_id: ExportId,
) -> Result<(), DbError> {
    let Some(export) = find_in(&mut *transaction, export_id).await? else {
        return Ok(());
    };
    let Some(completion) = Completion::of(&export) else {
        return Err(DbError::Corrupt(format!(
            "export {export_id} is '{}' where a final status was just written",
            export.status
        )));
    };
    let event = OutboxEvent {
        id: Uuid::new_v4(),
        kind: EventKind::Completion,
        export_id,
        source_id: None,
        application: None,
        identity: None,
        payload: completion.to_json(),
    };
    super::outbox::insert(transaction, &[event]).await
}
