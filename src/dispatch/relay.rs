//! The outbox relay, one per replica: claims due events, publishes them, marks them sent after
//! the broker acknowledged them, and retries failures with capped exponential backoff. A create
//! wakes every relay at once through `LISTEN/NOTIFY`; an idle poll covers missed notifications.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::event::completion_event;
use super::kafka::KafkaPublisher;
use crate::config::{EventConfig, OutboxConfig};
use crate::db::OutboxRepository;
use crate::db::outbox::{ClaimedEvent, OUTBOX_CHANNEL};
use crate::domain::outbox::{EventKind, OutboxEvent};
use crate::metrics::Metrics;
use crate::retry::{Backoff, pause, retry_delay};
use crate::worker::wakeup::{Wakeup, Woken};

/// How long sent events are kept (for inspection) before they are purged.
pub const SENT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often the backlog gauges are refreshed.
pub const BACKLOG_INTERVAL: Duration = Duration::from_secs(1);
/// How many times marking acknowledged events sent is retried before their lease is left to
/// end (and they are published again).
const MARK_SENT_RETRIES: i32 = 9;

/// Publishes the outbox.
pub struct Relay {
    outbox: OutboxRepository,
    publisher: KafkaPublisher,
    config: OutboxConfig,
    events: EventConfig,
}

impl Relay {
    /// A relay publishing through `publisher`.
    pub fn new(
        pool: PgPool,
        publisher: KafkaPublisher,
        config: OutboxConfig,
        events: EventConfig,
    ) -> Self {
        Self {
            outbox: OutboxRepository::new(pool),
            publisher,
            config,
            events,
        }
    }

    /// Runs until `stop` turns true. The batch in flight is finished (bounded by the message
    /// timeout) and the producer flushed; nothing unacknowledged is marked sent.
    pub async fn run(self, pool: PgPool, mut stop: watch::Receiver<bool>) {
        let wakeup = Wakeup::listen(pool, OUTBOX_CHANNEL);
        let mut topic_ready = !self.publisher.creates_topic();
        let mut backoff = Backoff::new(self.config.max_backoff);
        tracing::info!(topic = self.publisher.topic(), "event dispatch started");
        while !*stop.borrow() {
            if !topic_ready {
                match self.publisher.ensure_topic().await {
                    Ok(()) => topic_ready = true,
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot create the topic yet; retrying");
                        pause(backoff.failed(), &mut stop).await;
                        continue;
                    }
                }
            }
            match self
                .outbox
                .claim_due(self.config.batch_size, self.config.lease)
                .await
            {
                Err(error) => {
                    tracing::warn!(error = %error, "cannot claim outbox events; retrying");
                    pause(backoff.failed(), &mut stop).await;
                }
                Ok(batch) if batch.is_empty() => {
                    backoff.succeeded();
                    if wakeup.wait(self.config.poll_interval, &mut stop).await == Woken::Stopped {
                        break;
                    }
                }
                Ok(batch) => {
                    backoff.succeeded();
                    self.publish(batch).await;
                }
            }
        }
        drop(wakeup);
        // Flushing blocks: keep it off the async workers.
        let publisher = self.publisher;
        let _ = tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(5))).await;
        tracing::info!("event dispatch stopped");
    }

    async fn publish(&self, batch: Vec<ClaimedEvent>) {
        let mut publishable = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for claimed in batch {
            match self.render(&claimed.event) {
                Some(event) => {
                    events.push(event);
                    publishable.push(claimed);
                }
                None => {
                    // Kept, not dropped: it stays in the outbox (and its backlog gauge) for an
                    // operator to see, retried at the longest backoff.
                    tracing::error!(event_id = %claimed.event.id, kind = claimed.event.kind.as_str(), "outbox event cannot be rendered; not publishing it");
                    if let Err(error) = self
                        .outbox
                        .reschedule(claimed.event.id, self.config.max_backoff, "unreadable data")
                        .await
                    {
                        tracing::warn!(%error, "cannot reschedule event");
                    }
                }
            }
        }
        let batch = publishable;
        let results = self.publisher.publish(&events).await;
        let mut sent: Vec<Uuid> = Vec::with_capacity(batch.len());
        for (claimed, result) in batch.iter().zip(results) {
            match result {
                Ok(()) => sent.push(claimed.event.id),
                Err(error) => {
                    let delay = retry_delay(claimed.attempts, self.config.max_backoff);
                    tracing::warn!(
                        event_id = %claimed.event.id,
                        export_id = %claimed.event.export_id,
                        attempts = claimed.attempts,
                        retry_in_ms = delay.as_millis(),
                        error = %error,
                        "event not delivered; will retry"
                    );
                    if let Err(db_error) = self
                        .outbox
                        .reschedule(claimed.event.id, delay, &error.to_string())
                        .await
                    {
                        // The lease expires and the event is retried anyway.
                        tracing::warn!(error = %db_error, "cannot reschedule event");
                    }
                }
            }
        }
        self.mark_sent(&sent).await;
    }

    /// The event as published: a completion's stored `data` goes into its envelope now, so the
    /// envelope follows the configuration of the replica that publishes it.
    fn render(&self, event: &OutboxEvent) -> Option<OutboxEvent> {
        match event.kind {
            EventKind::Request | EventKind::Cancel => Some(event.clone()),
            EventKind::Completion => Some(OutboxEvent {
                payload: completion_event(event, &self.events)?,
                ..event.clone()
            }),
        }
    }

    /// Records acknowledged events, retrying while the database is briefly unavailable: an
    /// acknowledged event left unmarked would be published again when its lease ends.
    async fn mark_sent(&self, ids: &[Uuid]) {
        let mut backoff = Backoff::new(Duration::from_secs(5));
        loop {
            match self.outbox.mark_sent(ids).await {
                Ok(()) => {
                    if !ids.is_empty() {
                        tracing::debug!(events = ids.len(), "events published");
                    }
                    return;
                }
                Err(error) if backoff.setbacks() < MARK_SENT_RETRIES => {
                    tracing::warn!(error = %error, "cannot mark events sent; retrying");
                    tokio::time::sleep(backoff.failed()).await;
                }
                Err(error) => {
                    tracing::error!(
                        error = %error,
                        events = ids.len(),
                        "cannot mark events sent; they will be published again after their lease"
                    );
                    return;
                }
            }
        }
    }
}

/// Keeps the backlog gauges current (on every replica, publishing or not) and purges old sent
/// events.
pub async fn monitor_backlog(pool: PgPool, metrics: Metrics, mut stop: watch::Receiver<bool>) {
    let outbox = OutboxRepository::new(pool);
    let mut ticks: u64 = 0;
    while !*stop.borrow() {
        match outbox.backlog().await {
            Ok(backlog) => {
                metrics.outbox_pending.set(backlog.pending);
                metrics.outbox_oldest_age.set(backlog.oldest_age_secs);
            }
            Err(error) => tracing::debug!(error = %error, "cannot read the outbox backlog"),
        }
        if ticks.is_multiple_of(600) {
            match outbox.purge_sent(SENT_RETENTION).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged sent outbox events"),
                Err(error) => tracing::debug!(error = %error, "cannot purge sent outbox events"),
            }
        }
        ticks += 1;
        pause(BACKLOG_INTERVAL, &mut stop).await;
    }
}
