//! Keeping a claim alive: a task renews a lease every third of it while the work that holds it
//! runs, so no other replica takes live work over, and work that stops renewing (a crash, a
//! hang) is taken over once its lease ends. An upload's hold on its source and a packaging
//! job's claim both use it.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;

/// What one renewal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The lease runs for another period.
    Extended,
    /// The work made no progress, so the lease was left to run out.
    Skipped,
    /// The claim belongs to someone else now; renewing stops.
    Lost,
}

/// The task renewing one lease; dropping it (or [`stop`](LeaseKeeper::stop)) ends the renewal.
pub struct LeaseKeeper {
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Calls `renew` every third of `lease` until stopped or the claim is lost. A renewal that
    /// fails is logged and tried again at the next third: the lease covers two misses.
    pub fn spawn<F, Fut, E>(what: &'static str, lease: Duration, mut renew: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Renewal, E>> + Send,
        E: Display,
    {
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match renew().await {
                    Ok(Renewal::Extended | Renewal::Skipped) => {}
                    Ok(Renewal::Lost) => {
                        tracing::warn!(what, "the claim was lost; no longer renewing it");
                        return;
                    }
                    Err(error) => tracing::warn!(what, error = %error, "cannot renew the lease"),
                }
            }
        });
        Self { task }
    }

    /// Stops renewing.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(outcomes: Vec<Result<Renewal, &'static str>>) -> (Arc<AtomicUsize>, LeaseKeeper) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let keeper = LeaseKeeper::spawn("test", Duration::from_secs(30), move || {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            let outcome = outcomes.get(call).copied().unwrap_or(Ok(Renewal::Extended));
            async move { outcome }
        });
        (calls, keeper)
    }

    #[tokio::test(start_paused = true)]
    async fn renews_every_third_of_the_lease_through_failures() {
        let (calls, _keeper) = counting(vec![Err("database down"), Ok(Renewal::Skipped)]);
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "at 10 s, 20 s and 30 s");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_claim_is_lost_or_the_keeper_is_dropped() {
        let (lost, _keeper) = counting(vec![Ok(Renewal::Lost)]);
        let (dropped, keeper) = counting(Vec::new());
        tokio::time::sleep(Duration::from_secs(15)).await;
        drop(keeper);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(lost.load(Ordering::SeqCst), 1);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
