//! Waking a background worker: on a PostgreSQL notification channel when it can listen, on a
//! poll interval always (a notification can be missed while the connection is down), and at
//! once when the service stops. The outbox relay, the packager and the registry sync share it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::retry::Backoff;

/// The longest pause between two attempts to listen again.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);

/// Why a worker woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A notification arrived, or the listening connection was (re)established or lost, so
    /// notifications may have been missed.
    Notified,
    /// The poll interval passed.
    Polled,
    /// The service is stopping.
    Stopped,
}

/// A worker's wake-up source: a task that listens on one channel, reconnecting with backoff.
/// Dropping it stops the listening.
pub struct Wakeup {
    notify: Arc<Notify>,
    listening: Arc<AtomicBool>,
    listener: JoinHandle<()>,
}

impl Wakeup {
    /// Listens on `channel` through a connection of `pool`.
    pub fn listen(pool: PgPool, channel: &'static str) -> Self {
        let notify = Arc::new(Notify::new());
        let listening = Arc::new(AtomicBool::new(false));
        let listener = tokio::spawn(listen(pool, channel, notify.clone(), listening.clone()));
        Self {
            notify,
            listening,
            listener,
        }
    }

    /// Whether notifications arrive now; while they do not, a worker may poll more often.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Waits for a notification, for `poll` to pass, or for `stop` to change.
    pub async fn wait(&self, poll: Duration, stop: &mut watch::Receiver<bool>) -> Woken {
        if *stop.borrow() {
            return Woken::Stopped;
        }
        tokio::select! {
            () = self.notify.notified() => Woken::Notified,
            () = tokio::time::sleep(poll) => Woken::Polled,
            _ = stop.changed() => Woken::Stopped,
        }
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Listens on `channel` for ever, waking the worker on every notification, and on every
/// connection made or lost (what was sent meanwhile is unknown).
async fn listen(
    pool: PgPool,
    channel: &'static str,
    notify: Arc<Notify>,
    listening: Arc<AtomicBool>,
) {
    let mut backoff = Backoff::new(MAX_RECONNECT_DELAY);
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match connected.await {
            Ok(listener) => listener,
            Err(error) => {
                let delay = backoff.failed();
                tracing::debug!(channel, error = %error, "cannot listen for notifications yet");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        backoff.succeeded();
        listening.store(true, Ordering::Relaxed);
        notify.notify_one();
        // `Ok(None)`: the connection dropped. Reconnect here rather than inside `try_recv`, so
        // that `listening` tells the truth meanwhile.
        while let Ok(Some(_)) = listener.try_recv().await {
            notify.notify_one();
        }
        tracing::debug!(channel, "notifications interrupted; listening again");
        listening.store(false, Ordering::Relaxed);
        notify.notify_one();
    }
}
