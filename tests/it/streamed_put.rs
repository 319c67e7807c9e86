//! Uploads that declare their length and pass through unchanged go to S3 as one streamed
//! `PutObject`, as a direct client would send them; the rest take a multipart upload. Against
//! the real S3 server: the object holds exactly the uploaded bytes, and an upload that stops
//! part-way — the data rejected after megabytes, or the client gone short of its declared
//! length — leaves nothing in the bucket and its source free for the retry.

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::helpers::{Caller, S3_ACCESS_KEY, S3_SECRET_KEY, TestApp, s3_endpoint};
use crate::ingest_limits::export_with_sources;

const PSK: Option<&str> = Some("psk-example");
const MIB: usize = 1024 * 1024;

/// An app on its own bucket, with a client of that bucket to look at objects directly.
async fn app_and_bucket() -> (TestApp, aws_sdk_s3::Client, String) {
    app_and_bucket_with(&[]).await
}

/// [`app_and_bucket`] with more settings.
async fn app_and_bucket_with(settings: &[(&str, &str)]) -> (TestApp, aws_sdk_s3::Client, String) {
    let bucket = format!("exsvc-test-{}", uuid::Uuid::new_v4().simple());
    let mut settings = settings.to_vec();
    settings.push(("EXPORT_SERVICE_BUCKET", bucket.as_str()));
    let app = TestApp::spawn_with(&settings).await;
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(s3_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            S3_ACCESS_KEY,
            S3_SECRET_KEY,
            None,
            None,
            "tests",
        ))
        .force_path_style(true)
        .build();
    (app, aws_sdk_s3::Client::from_conf(config), bucket)
}

/// `bytes` of CSV with a header and numbered rows.
fn csv_of(bytes: usize) -> Vec<u8> {
    let mut data = b"id,name,comment\n".to_vec();
    let mut row = 0u64;
    while data.len() < bytes {
        data.extend_from_slice(format!("{row},name {row},\"a, quoted comment\"\n").as_bytes());
        row += 1;
    }
    data
}

/// Keys of the objects under `prefix`.
async fn objects(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let listed = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    listed
        .contents()
        .iter()
        .filter_map(|object| object.key().map(str::to_owned))
        .collect()
}

async fn head_of(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> HeadObjectOutput {
    client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
}

/// Multipart uploads started and neither completed nor aborted, under `prefix`.
async fn open_multipart_uploads(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> usize {
    client
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .map(|listed| listed.uploads().len())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_declared_length_is_one_put_of_exactly_the_uploaded_bytes() {
    let (app, client, bucket) = app_and_bucket().await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = export_with_sources(&app, &caller, "csv", 2).await;
    let data = csv_of(12 * MIB);

    // A body of known length (reqwest declares it) …
    let declared = app
        .upload_as(
            &export,
            "exampleApp",
            &sources[0],
            PSK,
            Some("text/csv"),
            data.clone(),
        )
        .await;
    assert_eq!(declared.status, 202, "{}", declared.text);
    // … and the same bytes streamed without a length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(MIB).map(|chunk| Ok(chunk.to_vec())).collect();
    let streamed = app
        .upload_as(
            &export,
            "exampleApp",
            &sources[1],
            PSK,
            Some("text/csv"),
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await;
    assert_eq!(streamed.status, 202, "{}", streamed.text);

    let expected_sha = hex::encode(Sha256::digest(&data));
    let status = app.wait_for_status(&caller, &export, "complete").await;
    let keys = objects(&client, &bucket, &format!("org-1/{export}/")).await;
    for (index, source) in sources.iter().enumerate() {
        let key = keys
            .iter()
            .find(|key| key.contains(source.as_str()))
            .unwrap_or_else(|| panic!("no object for source {index} in {keys:?}"));
        let head = head_of(&client, &bucket, key).await;
        assert_eq!(head.content_length(), Some(data.len() as i64));
        // S3 marks the ETag of a multipart object with its part count.
        let multipart = head.e_tag().unwrap().trim_matches('"').contains('-');
        assert_eq!(
            multipart,
            index == 1,
            "source {index}: ETag {:?}",
            head.e_tag()
        );
        let object = app.store.get(key, None).await.unwrap();
        let mut stored = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut { object.body }, &mut stored)
            .await
            .unwrap();
        assert_eq!(hex::encode(Sha256::digest(&stored)), expected_sha);
        assert_eq!(
            status["sources"][index]["rows"].as_u64(),
            Some(data.iter().filter(|byte| **byte == b'\n').count() as u64 - 1)
        );
    }
}

#[tokio::test]
async fn a_stored_archive_is_one_put_of_exactly_its_worked_out_length() {
    let (app, client, bucket) = app_and_bucket_with(&[("PACKAGE_COMPRESSION_LEVEL", "0")]).await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = export_with_sources(&app, &caller, "csv", 2).await;
    let sizes = [7 * MIB, 3 * MIB + 17];
    let uploads: Vec<Vec<u8>> = sizes.iter().map(|size| csv_of(*size)).collect();
    for (source, data) in sources.iter().zip(&uploads) {
        let response = app
            .upload_as(
                &export,
                "exampleApp",
                source,
                PSK,
                Some("text/csv"),
                data.clone(),
            )
            .await;
        assert_eq!(response.status, 202, "{}", response.text);
    }
    app.wait_for_status(&caller, &export, "complete").await;

    let keys = objects(&client, &bucket, &format!("org-1/{export}/")).await;
    let archive_key = keys
        .iter()
        .find(|key| key.ends_with(".zip"))
        .unwrap_or_else(|| panic!("no archive in {keys:?}"));
    let head = head_of(&client, &bucket, archive_key).await;
    assert!(
        !head.e_tag().unwrap().contains('-'),
        "a stored archive of known length is one PutObject, not a multipart upload: ETag {:?}",
        head.e_tag()
    );
    let (_, archive) = app.download(&caller, &export).await;
    assert_eq!(head.content_length(), Some(archive.len() as i64));
    assert!(
        archive.len() > sizes.iter().sum::<usize>(),
        "stored, not compressed"
    );
    let entries = crate::data_path::unzip(&archive);
    let mut found: Vec<&Vec<u8>> = entries
        .iter()
        .filter(|(name, _)| name.ends_with(".csv"))
        .map(|(_, data)| data)
        .collect();
    found.sort_by_key(|data| data.len());
    let mut expected: Vec<&Vec<u8>> = uploads.iter().collect();
    expected.sort_by_key(|data| data.len());
    assert_eq!(found, expected, "both sources, byte for byte");
    assert!(entries.iter().any(|(name, _)| name == "meta.json"));
    assert_eq!(open_multipart_uploads(&client, &bucket, "org-1/").await, 0);
}

#[tokio::test]
async fn data_rejected_after_megabytes_leaves_nothing_in_the_bucket() {
    let (app, client, bucket) = app_and_bucket().await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = export_with_sources(&app, &caller, "json", 2).await;
    // 8 MiB of good records, then one nested past the depth limit: JSON stored as JSON passes
    // through, so most of the body has reached the store's request when the limit trips.
    let mut data = b"[".to_vec();
    while data.len() < 8 * MIB {
        data.extend_from_slice(br#"{"id": 1, "name": "a record of plain fields"},"#);
    }
    data.extend_from_slice(br#"{"deep": "#);
    data.extend(std::iter::repeat_n(b'[', 100));
    data.extend(std::iter::repeat_n(b']', 100));
    data.extend_from_slice(b"}]");
    let refused = app
        .upload_as(
            &export,
            "exampleApp",
            &sources[0],
            PSK,
            Some("application/json"),
            data,
        )
        .await;
    refused.assert_error_containing(422, "nests deeper than 64 levels");
    let prefix = format!("org-1/{export}/");
    assert_eq!(
        objects(&client, &bucket, &prefix).await,
        Vec::<String>::new()
    );
    assert_eq!(open_multipart_uploads(&client, &bucket, &prefix).await, 0);
}

#[tokio::test]
async fn a_client_gone_short_of_its_declared_length_leaves_nothing_and_the_retry_stores() {
    let (app, client, bucket) = app_and_bucket().await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = export_with_sources(&app, &caller, "csv", 2).await;
    let data = csv_of(12 * MIB);

    // Declares the whole length, sends two thirds, and hangs up.
    let mut connection = tokio::net::TcpStream::connect(app.private).await.unwrap();
    let request_head = format!(
        "POST /app/export/v1/{export}/exampleApp/{}/upload HTTP/1.1\r\nhost: test\r\n\
         x-rh-exports-psk: psk-example\r\ncontent-type: text/csv\r\ncontent-length: {}\r\n\r\n",
        sources[0],
        data.len()
    );
    connection.write_all(request_head.as_bytes()).await.unwrap();
    connection.write_all(&data[..8 * MIB]).await.unwrap();
    connection.flush().await.unwrap();
    // Long enough for the service to have passed the first megabytes on to the store.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(connection);

    // The abandoned upload's hold is released as its request ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held: bool = sqlx::query_scalar(
            "SELECT upload_lease_until IS NOT NULL FROM sources WHERE id = $1::uuid",
        )
        .bind(&sources[0])
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if !held {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the source stayed held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let prefix = format!("org-1/{export}/");
    assert_eq!(
        objects(&client, &bucket, &prefix).await,
        Vec::<String>::new()
    );

    let retry = app
        .upload_as(
            &export,
            "exampleApp",
            &sources[0],
            PSK,
            Some("text/csv"),
            data.clone(),
        )
        .await;
    assert_eq!(retry.status, 202, "{}", retry.text);
    let keys = objects(&client, &bucket, &prefix).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let head = head_of(&client, &bucket, &keys[0]).await;
    assert_eq!(head.content_length(), Some(data.len() as i64));
}
