//! Request ids: taken from the caller's header when it is sane, generated otherwise, echoed in
//! the response and attached to every log line of the request.
//!
//! Not tower-http's `SetRequestId`: it keeps any caller-supplied header verbatim, and these
//! ids go into every log line, so an id with control characters or of any length must be
//! replaced, which its `MakeRequestId` hook (called only when the header is absent) cannot do.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderMap;
use rand::Rng;
use rand::distr::Alphanumeric;

/// The header the public API reads and echoes.
pub const PUBLIC_REQUEST_ID_HEADER: &str = "x-rh-insights-request-id";
/// The header the internal API reads and echoes.
pub const INTERNAL_REQUEST_ID_HEADER: &str = "x-request-id";
/// The longest caller-supplied request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 256;

/// The request id of the current request, available to handlers as an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Generates request ids shaped like the upstream's: `<host>/<10 random chars>-<counter>`.
#[derive(Debug)]
pub struct RequestIdGenerator {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIdGenerator {
    /// A generator for ids of this host.
    pub fn new(hostname: &str) -> Self {
        let random: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(10)
            .map(char::from)
            .collect();
        Self {
            prefix: format!("{hostname}/{random}"),
            counter: AtomicU64::new(0),
        }
    }

    /// The caller's id from `header` if it is printable ASCII of sane length, else a new one.
    pub fn for_request(&self, headers: &HeaderMap, header: &str) -> RequestId {
        let supplied = headers
            .get(header)
            .and_then(|value| value.to_str().ok())
            .filter(|value| {
                !value.is_empty()
                    && value.len() <= MAX_REQUEST_ID_LEN
                    && value.bytes().all(|byte| byte.is_ascii_graphic())
            });
        match supplied {
            Some(value) => RequestId(value.to_owned()),
            None => {
                let count = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
                RequestId(format!("{}-{count:06}", self.prefix))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let generator = RequestIdGenerator::new("host");
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(generator.for_request(&headers, "x-request-id").0, "abc-123");

        let first = generator.for_request(&HeaderMap::new(), "x-request-id").0;
        let second = generator.for_request(&HeaderMap::new(), "x-request-id").0;
        assert!(
            first.starts_with("host/") && first.ends_with("-000001"),
            "{first}"
        );
        assert!(second.ends_with("-000002"));

        headers.insert("x-request-id", "has space".parse().unwrap());
        assert_ne!(
            generator.for_request(&headers, "x-request-id").0,
            "has space"
        );
        headers.insert(
            "x-request-id",
            "a".repeat(MAX_REQUEST_ID_LEN + 1).parse().unwrap(),
        );
        assert!(
            generator
                .for_request(&headers, "x-request-id")
                .0
                .starts_with("host/")
        );
    }
}
