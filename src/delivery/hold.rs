//! An upload's hold on its source: renewed while the upload runs, and released when it ends
//! without settling the source — retried with backoff, so a failure of the database at that
//! moment does not leave the source refusing the application's retry (409) for a whole
//! `UPLOAD_LEASE`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

use crate::db::{DbError, SourceRepository};
use crate::domain::SourceId;
use crate::retry::retry_with_delays;
use crate::worker::lease::{LeaseKeeper, Renewal};

/// The pauses between attempts to release a hold: five attempts over about four seconds, long
/// enough to ride out a dropped connection or a failover, short enough to finish within a
/// shutdown's grace period.
pub const RELEASE_RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Releases the hold `token` has on `source_id`, retrying per [`RELEASE_RETRY_DELAYS`].
pub async fn release_with_retry(
    sources: &SourceRepository,
    source_id: SourceId,
    token: Uuid,
) -> Result<(), DbError> {
    retry_with_delays(&RELEASE_RETRY_DELAYS, || async {
        let released = sources.release_upload(source_id, token).await;
        if let Err(error) = &released {
            tracing::warn!(%source_id, error = %error, "cannot release an upload's hold yet; retrying");
        }
        released
    })
    .await
}

/// The holds this replica's uploads have now, so that a shutdown which abandons uploads can
/// release them before the process exits (a task spawned then would never run).
#[derive(Debug, Default)]
pub struct HeldUploads {
    /// Upload token → source.
    holds: Mutex<HashMap<Uuid, SourceId>>,
}

impl HeldUploads {
    fn insert(&self, token: Uuid, source_id: SourceId) {
        self.lock().insert(token, source_id);
    }

    fn remove(&self, token: Uuid) {
        self.lock().remove(&token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, SourceId>> {
        self.holds
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// How many holds are registered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no hold is registered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Releases every hold still registered (each retried with backoff, all at once). Called
    /// when the server stops: uploads still running then are abandoned with the process.
    pub async fn release_all(&self, sources: &SourceRepository) {
        let holds: Vec<(Uuid, SourceId)> = self.lock().drain().collect();
        if holds.is_empty() {
            return;
        }
        tracing::warn!(
            uploads = holds.len(),
            "releasing the holds of abandoned uploads"
        );
        let releases = holds.into_iter().map(|(token, source_id)| async move {
            if let Err(error) = release_with_retry(sources, source_id, token).await {
                tracing::warn!(%source_id, error = %error, "cannot release an abandoned upload; its lease will");
            }
        });
        futures::future::join_all(releases).await;
    }
}

/// A running upload's hold on its source. While `armed`, dropping it releases the hold (with
/// retries, in the background) — e.g. when the client goes away or storing fails.
pub struct UploadHold {
    sources: SourceRepository,
    held: std::sync::Arc<HeldUploads>,
    source_id: SourceId,
    token: Uuid,
    /// Whether the hold still needs releasing; cleared once the source is settled or released.
    pub armed: bool,
    /// The task renewing the hold every third of the lease.
    pub renewal: LeaseKeeper,
}

impl UploadHold {
    /// Registers the hold `token` has on `source_id` and starts renewing it.
    pub fn start(
        sources: SourceRepository,
        held: std::sync::Arc<HeldUploads>,
        source_id: SourceId,
        token: Uuid,
        lease: Duration,
    ) -> Self {
        held.insert(token, source_id);
        Self {
            renewal: keep_holding(sources.clone(), source_id, token, lease),
            sources,
            held,
            source_id,
            token,
            armed: true,
        }
    }

    /// The source held.
    pub fn source_id(&self) -> SourceId {
        self.source_id
    }

    /// The token the hold was taken with.
    pub fn token(&self) -> Uuid {
        self.token
    }

    /// Releases the hold now (retried with backoff) and disarms the guard once that succeeded.
    pub async fn release(&mut self) -> Result<(), DbError> {
        self.renewal.stop();
        release_with_retry(&self.sources, self.source_id, self.token).await?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for UploadHold {
    fn drop(&mut self) {
        self.renewal.stop();
        if !self.armed {
            self.held.remove(self.token);
            return;
        }
        let (sources, held, source_id, token) = (
            self.sources.clone(),
            self.held.clone(),
            self.source_id,
            self.token,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = release_with_retry(&sources, source_id, token).await {
                    tracing::warn!(%source_id, error = %error, "cannot release an abandoned upload; its lease will");
                }
                held.remove(token);
            });
        }
    }
}

/// Renews an upload's hold every third of the lease while the upload runs.
fn keep_holding(
    sources: SourceRepository,
    source_id: SourceId,
    token: Uuid,
    lease: Duration,
) -> LeaseKeeper {
    LeaseKeeper::spawn("upload hold", lease, move || {
        let sources = sources.clone();
        async move {
            Ok::<_, DbError>(
                match sources.extend_upload(source_id, token, lease).await? {
                    true => Renewal::Extended,
                    false => Renewal::Lost,
                },
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failed_release_is_retried_with_growing_pauses() {
        let attempts = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), &str> = retry_with_delays(&RELEASE_RETRY_DELAYS, || {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst);
            async move { if attempt < 2 { Err("down") } else { Ok(()) } }
        })
        .await;
        assert_eq!(result, Ok(()));
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        // Two pauses: 250 ms, then 500 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(750));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_after_the_last_pause() {
        let attempts = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), &str> = retry_with_delays(&RELEASE_RETRY_DELAYS, || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err("down") }
        })
        .await;
        assert_eq!(result, Err("down"));
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            RELEASE_RETRY_DELAYS.len() + 1
        );
        assert_eq!(
            started.elapsed(),
            RELEASE_RETRY_DELAYS.iter().sum::<Duration>()
        );
    }
}
