//! The export domain: plain types and rules, no I/O. Everything here is unit-tested on its own;
//! the HTTP layer parses into these types and the database layer stores them.

pub mod audit;
pub mod binding_scope;
pub mod canary;
pub mod completion;
pub mod create;
mod enabled;
pub mod export;
pub mod idempotency;
pub mod identity;
pub mod ids;
pub mod listing;
pub mod outbox;
pub mod plugin_limits;
pub mod progress;
pub mod psk;
pub mod quota;
pub mod range;
pub mod secret;
pub mod status;
pub mod timestamp;

pub use binding_scope::{ANY_ORG, ANY_RESOURCE, BindingKey, BindingScope};
pub use enabled::{EnabledApps, InvalidEnabledApps};
pub use export::{
    Archive, Delivery, Export, ExportSummary, IdentityKind, NewExport, NewSource, Owner,
    PluginStamp, RefusedUpload, Source,
};
pub use ids::{Application, ExportId, InvalidId, OrgId, Resource, SourceId};
pub use status::{ExportStatus, Format, SourceStatus};
