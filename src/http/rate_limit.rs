//! Per-organisation rate limiting of the public API. Like the upstream, a request over the rate
//! waits for its turn rather than failing at once; unlike it, one organisation's burst cannot
//! slow the others down, and a request that would wait too long gets 429 with `Retry-After`.
//!
//! Hand-written rather than `governor`'s keyed limiter for a missing feature: governor answers
//! "not until T" without taking the token, so N requests waiting on one organisation all wake
//! at T and N−1 of them wait again, in no order, and the wait of the last one cannot be known
//! up front. Taking the token ahead (Go's `rate.Limiter.Reserve`, which the upstream's waiting
//! follows) queues them in arrival order and refuses at once the one that would wait too long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::config::RateLimitConfig;
use crate::domain::identity::Identity;

/// The longest a request waits for a token before it is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// Buckets kept before idle (full) ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// A token bucket that lends tokens ahead of time: a caller takes a token now and waits until
/// the bucket would have had it.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by organisation.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_wait: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter with the configured rate and burst.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            rate: config.rate,
            burst: f64::from(config.burst),
            max_wait: MAX_WAIT,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` at `now`: `Ok(wait)` says how long to wait before proceeding,
    /// `Err(retry_after)` that the wait would exceed the maximum (no token is taken).
    pub fn reserve(&self, key: &str, now: Instant) -> Result<Duration, Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, bucket| refilled(bucket, now, rate, burst) < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let available = refilled(bucket, now, self.rate, self.burst);
        let after = available - 1.0;
        let wait = if after >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-after / self.rate)
        };
        if wait > self.max_wait {
            return Err(wait);
        }
        *bucket = Bucket {
            tokens: after,
            updated: now,
        };
        Ok(wait)
    }
}

fn refilled(bucket: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

/// Middleware: waits for the caller's organisation's turn, or answers 429.
pub async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let org = request
        .extensions()
        .get::<Identity>()
        .map(|identity| identity.owner.org_id.to_string())
        .unwrap_or_default();
    match limiter.reserve(&org, Instant::now()) {
        Ok(wait) => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            next.run(request).await
        }
        Err(retry_after) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests for this organisation; retry later",
        )
        .retry_after(retry_after.as_secs().max(1))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig { rate, burst })
    }

    #[test]
    fn burst_then_waits_then_refuses() {
        let limiter = limiter(10.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.reserve("org", start), Ok(Duration::ZERO));
        }
        // Fourth waits one token's time (100 ms), the next 200 ms, ...
        let wait = limiter.reserve("org", start).unwrap();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        for _ in 0..19 {
            limiter.reserve("org", start).unwrap();
        }
        // 20 tokens in debt = 2 s: the next one would wait longer than MAX_WAIT.
        assert!(limiter.reserve("org", start).is_err());
        // Another organisation is unaffected.
        assert_eq!(limiter.reserve("other", start), Ok(Duration::ZERO));
        // Time refills the bucket.
        let later = start + Duration::from_secs(10);
        assert_eq!(limiter.reserve("org", later), Ok(Duration::ZERO));
    }
}
