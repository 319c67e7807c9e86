//! Event dispatch: the CloudEvents that ask source applications for their data, and the outbox
//! relay that publishes them to Kafka.

pub mod event;
pub mod kafka;
pub mod relay;
