//! Downloads redirected to a presigned URL of the store (`DOWNLOAD_REDIRECT=presigned`), against
//! the real S3-compatible server, and the fallback to streaming where the store cannot presign.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION, RANGE};

use crate::data_path::{CSV_UPLOAD, delivered_export, entry, source, unzip};
use crate::helpers::{Caller, TestApp};

/// Asks for the archive of `export` as `caller` without following a redirect.
async fn ask_for_archive(app: &TestApp, caller: &Caller, export: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url(&format!("/api/export/v1/exports/{export}")))
        .header("x-rh-identity", caller.header())
        .send()
        .await
        .unwrap()
}

/// Asks for the archive of `export` and returns the 302's `Location`, checking the redirect's
/// other headers.
async fn redirect_of(app: &TestApp, caller: &Caller, export: &str) -> String {
    let response = ask_for_archive(app, caller, export).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

/// A service redirecting downloads to URLs valid for `expiry`, with one packaged export of
/// alice's: the app, alice, the export's id, its create response and the first redirect.
async fn redirected_export(expiry: &str) -> (TestApp, Caller, String, serde_json::Value, String) {
    let app = TestApp::spawn_with(&[
        ("DOWNLOAD_REDIRECT", "presigned"),
        ("DOWNLOAD_URL_EXPIRY", expiry),
    ])
    .await;
    let caller = Caller::user("org-1", "alice");
    let (export, created) = delivered_export(&app, &caller, "p", "csv", CSV_UPLOAD).await;
    let location = redirect_of(&app, &caller, &export).await;
    (app, caller, export, created, location)
}

#[tokio::test]
async fn a_presigned_redirect_downloads_the_archive_the_service_streams() {
    let (app, caller, export, created, location) = redirected_export("2m").await;
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(location.contains("X-Amz-Expires=120"), "{location}");

    // The URL needs no identity: it is the credential.
    let direct = reqwest::get(&location).await.unwrap();
    assert_eq!(direct.status(), StatusCode::OK);
    assert_eq!(direct.headers()[CONTENT_TYPE], "application/zip");
    let disposition = direct.headers()[CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"")
            && disposition.ends_with(&format!("-{export}.zip\"")),
        "{disposition}"
    );
    let redirected = direct.bytes().await.unwrap();
    assert_eq!(
        entry(&unzip(&redirected), &format!("{}.csv", source(&created, 0))),
        CSV_UPLOAD.as_bytes()
    );

    // A ranged request resumes against the service's own ETag, so the service serves it.
    let streamed = app
        .request(
            reqwest::Method::GET,
            &format!("/api/export/v1/exports/{export}"),
            &caller,
        )
        .header(RANGE, "bytes=0-")
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        streamed.headers()[CONTENT_DISPOSITION],
        disposition.as_str()
    );
    assert_eq!(streamed.bytes().await.unwrap(), redirected);

    // A client that follows redirects gets the archive in one call.
    let (_, followed) = app.download(&caller, &export).await;
    assert_eq!(followed, redirected);

    // Another tenant is refused before any URL is made.
    let response = ask_for_archive(&app, &Caller::user("org-2", "mallory"), &export).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().get(LOCATION).is_none());
}

#[tokio::test]
async fn an_expired_or_altered_presigned_url_is_refused_by_the_store() {
    let (app, caller, export, _, location) = redirected_export("2s").await;
    // Valid at first (signatures date to the second, so it lasts at least one more).
    assert_eq!(
        reqwest::get(&location).await.unwrap().status(),
        StatusCode::OK
    );

    // Another object under the same signature.
    let altered = location.replacen(&format!("{export}.1.zip"), &format!("{export}.2.zip"), 1);
    assert_ne!(altered, location);
    let refused = reqwest::get(&altered).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let expired = reqwest::get(&location).await.unwrap();
    assert_eq!(expired.status(), StatusCode::FORBIDDEN);

    // The service makes a fresh one on each request.
    let fresh = redirect_of(&app, &caller, &export).await;
    assert_eq!(reqwest::get(&fresh).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn the_local_store_streams_when_a_redirect_is_configured() {
    let directory =
        std::env::temp_dir().join(format!("exsvc-objects-{}", uuid::Uuid::new_v4().simple()));
    let root = directory.to_str().unwrap().to_string();
    let app = TestApp::spawn_with(&[
        ("OBJECT_STORE", "local"),
        ("STORAGE_DIR", &root),
        ("DOWNLOAD_REDIRECT", "presigned"),
    ])
    .await;
    let caller = Caller::user("org-1", "alice");
    let (export, created) = delivered_export(&app, &caller, "l", "csv", CSV_UPLOAD).await;
    let response = ask_for_archive(&app, &caller, &export).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(LOCATION).is_none());
    let archive = response.bytes().await.unwrap();
    assert_eq!(
        entry(&unzip(&archive), &format!("{}.csv", source(&created, 0))),
        CSV_UPLOAD.as_bytes()
    );
    let _ = std::fs::remove_dir_all(directory);
}
