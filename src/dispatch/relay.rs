//! The outbox relay, one per replica: claims due events, publishes them, marks them sent after
//! the broker acknowledged them, and retries failures with capped exponential backoff. A create
//! wakes every relay at once through `LISTEN/NOTIFY`; an idle poll covers missed notifications.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::kafka::KafkaPublisher;
use crate::config::OutboxConfig;
use crate::db::OutboxRepository;
use crate::db::outbox::{ClaimedEvent, OUTBOX_CHANNEL};
use crate::metrics::Metrics;

/// How long sent events are kept (for inspection) before they are purged.
pub const SENT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often the backlog gauges are refreshed.
pub const BACKLOG_INTERVAL: Duration = Duration::from_secs(1);

/// Delay before retry number `attempts` (1-based): 0.5 s doubling up to `max`, with ±20 %
/// jitter so failing rows of many replicas do not retry in lock-step.
pub fn retry_delay(attempts: i32, max: Duration) -> Duration {
    let exponent = attempts.clamp(1, 30) - 1;
    let base = Duration::from_millis(500)
        .saturating_mul(1u32 << exponent)
        .min(max);
    base.mul_f64(rand::rng().random_range(0.8..1.2)).min(max)
}

/// Publishes the outbox.
pub struct Relay {
    outbox: OutboxRepository,
    publisher: KafkaPublisher,
    config: OutboxConfig,
}

impl Relay {
    /// A relay publishing through `publisher`.
    pub fn new(pool: PgPool, publisher: KafkaPublisher, config: OutboxConfig) -> Self {
        Self {
            outbox: OutboxRepository::new(pool),
            publisher,
            config,
        }
    }

    /// Runs until `stop` turns true. The batch in flight is finished (bounded by the message
    /// timeout) and the producer flushed; nothing unacknowledged is marked sent.
    pub async fn run(self, pool: PgPool, mut stop: watch::Receiver<bool>) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(pool, wake.clone(), stop.clone()));
        let mut topic_ready = !self.publisher.creates_topic();
        let mut setbacks = 0;
        tracing::info!(topic = self.publisher.topic(), "event dispatch started");
        while !*stop.borrow() {
            if !topic_ready {
                match self.publisher.ensure_topic().await {
                    Ok(()) => topic_ready = true,
                    Err(error) => {
                        setbacks += 1;
                        tracing::warn!(error = %error, "cannot create the topic yet; retrying");
                        pause(retry_delay(setbacks, self.config.max_backoff), &mut stop).await;
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
                    setbacks += 1;
                    tracing::warn!(error = %error, "cannot claim outbox events; retrying");
                    pause(retry_delay(setbacks, self.config.max_backoff), &mut stop).await;
                }
                Ok(batch) if batch.is_empty() => {
                    setbacks = 0;
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
                Ok(batch) => {
                    setbacks = 0;
                    self.publish(batch).await;
                }
            }
        }
        listener.abort();
        // Flushing blocks: keep it off the async workers.
        let publisher = self.publisher;
        let _ = tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(5))).await;
        tracing::info!("event dispatch stopped");
    }

    async fn publish(&self, batch: Vec<ClaimedEvent>) {
        let events: Vec<_> = batch.iter().map(|claimed| claimed.event.clone()).collect();
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
                        .reschedule(claimed.event.id, delay, &error)
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

    /// Records acknowledged events, retrying while the database is briefly unavailable: an
    /// acknowledged event left unmarked would be published again when its lease ends.
    async fn mark_sent(&self, ids: &[Uuid]) {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.outbox.mark_sent(ids).await {
                Ok(()) => {
                    if !ids.is_empty() {
                        tracing::debug!(events = ids.len(), "events published");
                    }
                    return;
                }
                Err(error) if attempts < 10 => {
                    tracing::warn!(error = %error, "cannot mark events sent; retrying");
                    tokio::time::sleep(retry_delay(attempts, Duration::from_secs(5))).await;
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

/// Wakes the relay whenever an export is created on any replica.
async fn listen(pool: PgPool, wake: Arc<Notify>, stop: watch::Receiver<bool>) {
    let mut attempts = 0;
    while !*stop.borrow() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                attempts += 1;
                tracing::debug!(error = %error, "cannot listen for outbox notifications yet");
                tokio::time::sleep(retry_delay(attempts, Duration::from_secs(10))).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(OUTBOX_CHANNEL).await {
            attempts += 1;
            tracing::debug!(error = %error, "cannot listen for outbox notifications yet");
            tokio::time::sleep(retry_delay(attempts, Duration::from_secs(10))).await;
            continue;
        }
        attempts = 0;
        loop {
            match listener.recv().await {
                Ok(_) => wake.notify_one(),
                Err(error) => {
                    // The poll interval covers the gap; reconnect.
                    tracing::debug!(error = %error, "outbox notifications interrupted");
                    wake.notify_one();
                    break;
                }
            }
        }
    }
}

async fn pause(delay: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let max = Duration::from_secs(60);
        let first = retry_delay(1, max);
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600));
        let fifth = retry_delay(5, max);
        assert!(fifth >= Duration::from_millis(6400) && fifth <= Duration::from_millis(9600));
        for attempts in [12, 30, 1000, i32::MAX] {
            assert!(retry_delay(attempts, max) <= max);
        }
        assert!(retry_delay(0, max) <= Duration::from_millis(600));
    }
}
