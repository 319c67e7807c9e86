//! The one retry policy of the service: capped exponential backoff with jitter, for every loop
//! that retries a failing dependency (the outbox relay, the packager, the notification
//! listeners, releasing an upload's hold).

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;

/// The first delay of [`retry_delay`].
const FIRST_DELAY: Duration = Duration::from_millis(500);

/// Delay before retry number `attempts` (1-based): 0.5 s doubling up to `max`, with ±20 %
/// jitter so failing work of many replicas does not retry in lock-step.
pub fn retry_delay(attempts: i32, max: Duration) -> Duration {
    let exponent = attempts.clamp(1, 30) - 1;
    let base = FIRST_DELAY.saturating_mul(1u32 << exponent).min(max);
    base.mul_f64(rand::rng().random_range(0.8..1.2)).min(max)
}

/// The setbacks of one loop in a row: each failure lengthens the next pause, a success resets
/// it.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    setbacks: i32,
    max: Duration,
}

impl Backoff {
    /// A backoff whose pauses grow up to `max`.
    pub fn new(max: Duration) -> Self {
        Self { setbacks: 0, max }
    }

    /// Records a failure and returns the pause before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.setbacks = self.setbacks.saturating_add(1);
        retry_delay(self.setbacks, self.max)
    }

    /// Records a success: the next failure pauses briefly again.
    pub fn succeeded(&mut self) {
        self.setbacks = 0;
    }

    /// Failures since the last success.
    pub fn setbacks(&self) -> i32 {
        self.setbacks
    }
}

/// Runs `attempt` until it succeeds or `delays` are used up, sleeping each delay in turn
/// between attempts; returns the last error. For work with a fixed budget of attempts (a
/// shutdown's grace period), where [`Backoff`] would retry forever.
pub async fn retry_with_delays<F, Fut, T, E>(delays: &[Duration], mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = delays.iter();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => match delays.next() {
                Some(delay) => tokio::time::sleep(*delay).await,
                None => return Err(error),
            },
        }
    }
}

/// Sleeps `delay`, or less when `stop` changes first.
pub async fn pause(delay: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
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

    #[test]
    fn backoff_grows_with_setbacks_and_resets_on_success() {
        let mut backoff = Backoff::new(Duration::from_secs(30));
        assert!(backoff.failed() <= Duration::from_millis(600));
        backoff.failed();
        backoff.failed();
        assert!(backoff.failed() >= Duration::from_millis(3200));
        assert_eq!(backoff.setbacks(), 4);
        backoff.succeeded();
        assert_eq!(backoff.setbacks(), 0);
        assert!(backoff.failed() <= Duration::from_millis(600));
    }
}
