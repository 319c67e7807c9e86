//! The per-organisation rate limit of the public API.

use crate::helpers::{Caller, TestApp};

#[tokio::test]
async fn an_organisation_over_its_rate_gets_429_and_others_are_unaffected() {
    // One request at once, then one every 10 s: the second would wait longer than 2 s.
    let app = TestApp::spawn_with(&[("RATE_LIMIT_RATE", "0.1"), ("RATE_LIMIT_BURST", "1")]).await;
    let noisy = Caller::user("org-noisy", "alice");
    assert_eq!(app.get("/api/export/v1/exports", &noisy).await.status, 200);
    let refused = app.get("/api/export/v1/exports", &noisy).await;
    refused.assert_error(429, "too many requests for this organisation; retry later");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((2..=10).contains(&retry_after), "{retry_after}");
    let quiet = Caller::user("org-quiet", "bob");
    assert_eq!(app.get("/api/export/v1/exports", &quiet).await.status, 200);
}
