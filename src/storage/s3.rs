//! Objects in S3 or an S3-compatible server (aws-sdk-s3). Puts stream in parts of the
//! configured size (one `PutObject` when the body fits in one part, a multipart upload
//! otherwise), so memory per upload is one part whatever the object's size. Payloads are sent
//! unsigned (`UNSIGNED-PAYLOAD`, as over TLS AWS recommends): the signature would hash every
//! byte a second time, and the service already records each object's SHA-256 and checks it
//! when it packages the object.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::exact_body::{self, ExactLength};
use super::idle::IdleTimeout;
use super::{ByteRange, ObjectRead, PutError, ResponseHeaders, StoreError};
use crate::config::S3Config;

/// The largest object one `PutObject` may carry on S3.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// The slowest rate at which a store is expected to assemble a multipart object: s3s-fs and
/// MinIO on one disk read every part back and write it again before they answer
/// CompleteMultipartUpload, and a replica's uploads and archives may all complete at once.
const SLOWEST_ASSEMBLY_BYTES_PER_SEC: u64 = 4 * 1024 * 1024;

/// How long the store may take to answer CompleteMultipartUpload of `total` bytes before it
/// counts as hung: the usual read timeout plus assembling at the slowest expected rate.
fn assembly_timeout(read_timeout: Duration, total: u64) -> Duration {
    read_timeout + Duration::from_secs(total / SLOWEST_ASSEMBLY_BYTES_PER_SEC)
}

/// A bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    part_size: usize,
    read_timeout: Duration,
}

impl S3Store {
    /// A client for `config`; creates the bucket when configured to.
    pub async fn new(config: &S3Config, part_size: usize) -> Result<Self, StoreError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(
                // Without these a hung store would hold a worker (and its renewed claim)
                // forever: every call ends, and a transient failure is retried by the caller.
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .read_timeout(config.read_timeout)
                    .operation_attempt_timeout(config.operation_timeout)
                    .operation_timeout(config.operation_timeout)
                    .build(),
            );
        if let Some((key, secret)) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(
                key,
                secret.expose(),
                None,
                None,
                "export-service-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            // Many S3-compatible servers reject the SDK's default CRC checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let store = Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            part_size,
            read_timeout: config.read_timeout,
        };
        if config.create_bucket {
            store.create_bucket().await?;
        }
        Ok(store)
    }

    async fn create_bucket(&self) -> Result<(), StoreError> {
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => {
                let code = error.code().unwrap_or_default().to_owned();
                if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
                    Ok(())
                } else {
                    Err(classify("CreateBucket", error))
                }
            }
        }
    }

    pub(super) async fn put(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Unpin + Send),
        content_type: &str,
    ) -> Result<u64, PutError> {
        let first = read_part(body, self.part_size).await?;
        if first.len() < self.part_size {
            let length = first.len() as u64;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .body(ByteStream::from(first.into_bytes()))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|error| classify("PutObject", error))?;
            return Ok(length);
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|error| classify("CreateMultipartUpload", error))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| StoreError::Other("no upload id in CreateMultipartUpload".into()))?
            .to_owned();
        // Aborted unless completed — also when this future is dropped (client gone, shutdown),
        // so no invisible parts of tenant data stay behind.
        let mut abort = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let result = self.upload_parts(key, &upload_id, first, body).await;
        if result.is_ok() {
            abort.armed = false;
        }
        result
    }

    /// Streams exactly `length` bytes of `body` into `key`. From one part up to the largest
    /// single `PutObject` (5 GiB) that is one streamed request, as a direct client would send
    /// it: no part buffers, no multipart bookkeeping, and no server-side concatenation of
    /// parts — which on some servers (s3s-fs) writes every byte a second time. Such a request
    /// cannot be retried by the SDK (its body is consumed as it goes); a failure is the
    /// caller's to retry, as a failed upload already is. Smaller and larger objects take
    /// [`Self::put`].
    pub(super) async fn put_exact(
        &self,
        key: &str,
        length: u64,
        body: &mut (dyn AsyncRead + Unpin + Send),
        content_type: &str,
    ) -> Result<u64, PutError> {
        let mut body = ExactLength::new(body, length);
        if length < self.part_size as u64 || length > MAX_SINGLE_PUT {
            return self.put(key, &mut body, content_type).await;
        }
        let content_length = i64::try_from(length)
            .map_err(|_| StoreError::Other(format!("{length} bytes is too large")))?;
        let (request_body, sender) = exact_body::channel(length);
        // The upload's own limits (idle timeout, UPLOAD_MAX_DURATION) bound how long the body
        // takes. The SDK's timeouts would cut a slow large upload: its read timeout runs from
        // the request's start, body included. A hung store is caught instead by `feed` (no
        // frame taken for S3_READ_TIMEOUT) and by the wait for the answer below.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .disable_read_timeout()
            .disable_operation_timeout()
            .disable_operation_attempt_timeout()
            .build();
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(content_length)
            .body(ByteStream::from(SdkBody::from_body_1_x(request_body)))
            .customize()
            .config_override(aws_sdk_s3::config::Builder::new().timeout_config(timeouts))
            .disable_payload_signing()
            .send();
        tokio::pin!(put);
        let feeding = exact_body::feed(&mut body, sender, self.read_timeout);
        // A body that fails returns at once, dropping the request short of its length: the
        // store keeps nothing. A store that answers before the body is whole has failed.
        let fed = tokio::select! {
            fed = feeding => fed?,
            answered = &mut put => {
                answered.map_err(|error| classify("PutObject", error))?;
                return Err(StoreError::Other(
                    "the store answered before the whole body was sent".into(),
                )
                .into());
            }
        };
        let answered = match tokio::time::timeout(self.read_timeout, put).await {
            Ok(answered) => answered.map_err(|error| classify("PutObject", error)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "PutObject: the store did not answer within {:?} of the whole object",
                self.read_timeout
            ))),
        };
        match (fed, answered) {
            (exact_body::Fed::Whole, Ok(_)) => Ok(length),
            (_, Err(error)) => Err(error.into()),
            (exact_body::Fed::RequestGone, Ok(_)) => Err(StoreError::Other(
                "the store answered before the whole body was sent".into(),
            )
            .into()),
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Part,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<u64, PutError> {
        let mut parts = Vec::new();
        let mut part = first;
        let mut total = 0u64;
        let mut number = 1;
        // The next part is read while the current one uploads.
        loop {
            let length = part.len();
            let upload = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(part.into_bytes()))
                .customize()
                .disable_payload_signing()
                .send();
            // A short part is the last; after a full one the body may still end exactly there.
            let (uploaded, next) = if length < self.part_size {
                (upload.await, None)
            } else {
                let (uploaded, next) = tokio::join!(upload, read_part(body, self.part_size));
                (uploaded, Some(next))
            };
            let uploaded = uploaded.map_err(|error| classify("UploadPart", error))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .build(),
            );
            total += length as u64;
            match next.transpose()? {
                Some(next) if !next.is_empty() => part = next,
                _ => break,
            }
            number += 1;
        }
        // The store answers only once it has assembled the object, in time that grows with its
        // size. The client's read timeout would cut a large one short, and its retry would then
        // find the upload completed and gone (s3s-fs answers AccessDenied, S3 NoSuchUpload). So
        // the answer is awaited for as long as assembling may take, and the call is made once:
        // a failure fails the upload, which its sender retries whole.
        let patience = assembly_timeout(self.read_timeout, total);
        let once = aws_sdk_s3::config::Builder::new()
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .read_timeout(patience)
                    .operation_attempt_timeout(patience)
                    .operation_timeout(patience)
                    .build(),
            )
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(1));
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(once)
            .send()
            .await
            .map_err(|error| classify("CompleteMultipartUpload", error))?;
        Ok(total)
    }

    pub(super) async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectRead, StoreError> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(range) = range {
            request = request.range(format!("bytes={}-{}", range.start, range.end));
        }
        let output = request.send().await.map_err(|error| {
            if error.code() == Some("NoSuchKey") {
                StoreError::NotFound(key.to_owned())
            } else {
                classify("GetObject", error)
            }
        })?;
        let length = output
            .content_length()
            .and_then(|length| u64::try_from(length).ok())
            .ok_or_else(|| StoreError::Other("GetObject returned no length".into()))?;
        Ok(ObjectRead {
            body: Box::pin(IdleTimeout::new(
                output.body.into_async_read(),
                self.read_timeout,
            )),
            length,
        })
    }

    /// A URL that reads `key` without credentials until `expires_in` has passed, whose response
    /// carries `headers` in place of the object's own `Content-Type` and `Content-Disposition`.
    /// Signing is local: no request reaches the store.
    pub(super) async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
        headers: &ResponseHeaders,
    ) -> Result<String, StoreError> {
        let presigning = PresigningConfig::expires_in(expires_in)
            .map_err(|error| StoreError::Other(format!("cannot presign: {error}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_type(&headers.content_type)
            .response_content_disposition(&headers.content_disposition)
            .presigned(presigning)
            .await
            .map_err(|error| StoreError::Other(format!("cannot presign: {error}")))?;
        Ok(request.uri().to_owned())
    }

    pub(super) async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => Ok(output
                .content_length()
                .and_then(|length| u64::try_from(length).ok())),
            Err(SdkError::ServiceError(error)) if error.err().is_not_found() => Ok(None),
            Err(error) => Err(classify("HeadObject", error)),
        }
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| classify("ListObjectsV2", error))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key().map(str::to_owned)),
            );
        }
        Ok(keys)
    }

    pub(super) async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let keys = self.list(prefix).await?;
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| StoreError::Other(error.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|error| StoreError::Other(error.to_string()))?;
            let result = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await;
            match result {
                Ok(output) => {
                    // With `quiet`, only failures are listed: any means objects remain.
                    if let Some(failed) = output.errors().first() {
                        return Err(StoreError::Unavailable(format!(
                            "{} of {} objects not deleted (first: {} {})",
                            output.errors().len(),
                            chunk.len(),
                            failed.key().unwrap_or_default(),
                            failed.message().unwrap_or_default()
                        )));
                    }
                }
                // Some S3-compatible servers lack DeleteObjects: delete one by one.
                Err(error) if error.code() == Some("NotImplemented") => {
                    for key in chunk {
                        self.delete(key).await?;
                    }
                }
                Err(error) => return Err(classify("DeleteObjects", error)),
            }
        }
        Ok(keys.len() as u64)
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| classify("DeleteObject", error))?;
        Ok(())
    }
}

/// Aborts a multipart upload when dropped while armed.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = request.send().await {
                    tracing::warn!(error = %error, "cannot abort a multipart upload");
                }
            });
        }
    }
}

/// One part of a multipart upload, read into an anonymous memory mapping of the part size.
///
/// Why not a `Vec`: with many uploads cycling multi-megabyte part buffers at once, glibc's
/// malloc served them from its per-thread arenas (its mmap threshold rises past the part size
/// once the first such buffer is freed), and freed parts stayed resident there: 16 concurrent
/// plugin-bound uploads peaked about 120 MiB higher than with every part mapped on its own
/// (`bench/results/NOTES.md`). A mapping's pages are committed only as data arrives, so a small
/// body costs little, and they leave the process the moment the part is dropped.
struct Part {
    buffer: memmap2::MmapMut,
    len: usize,
}

impl Part {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The part's bytes, without copying them out of the mapping.
    fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Part {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

/// Reads up to `size` bytes (fewer only at the end of the body).
async fn read_part(
    body: &mut (dyn AsyncRead + Unpin + Send),
    size: usize,
) -> Result<Part, PutError> {
    let mut buffer = memmap2::MmapMut::map_anon(size.max(1))
        .map_err(|error| StoreError::Other(format!("cannot map a part buffer: {error}")))?;
    let mut len = 0;
    while len < size {
        let read = body
            .read(&mut buffer[len..size])
            .await
            .map_err(PutError::Body)?;
        if read == 0 {
            break;
        }
        len += read;
    }
    Ok(Part { buffer, len })
}

/// Transport failures, timeouts and 5xx answers are worth retrying; the rest is not. The
/// message names the S3 `call`, so a log says which request of an upload failed.
fn classify<E, R>(call: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let retryable = match &error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            matches!(
                code,
                "InternalError" | "ServiceUnavailable" | "SlowDown" | "RequestTimeout"
            )
        }
        _ => false,
    };
    let message = match error.code() {
        Some(code) => format!("{call}: {code}: {}", error.message().unwrap_or_default()),
        None => format!("{call}: {}", aws_smithy_error_chain(&error)),
    };
    if retryable {
        StoreError::Unavailable(message)
    } else {
        StoreError::Other(message)
    }
}

fn aws_smithy_error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_is_named_and_a_timeout_is_worth_retrying() {
        let error: SdkError<aws_sdk_s3::operation::upload_part::UploadPartError, ()> =
            SdkError::timeout_error("no answer");
        match classify("UploadPart", error) {
            StoreError::Unavailable(message) => {
                assert!(message.starts_with("UploadPart: "), "{message}");
                assert!(message.contains("no answer"), "{message}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn assembling_a_large_object_is_awaited_longer_than_a_read() {
        let read = Duration::from_secs(30);
        assert_eq!(assembly_timeout(read, 0), read);
        assert_eq!(
            assembly_timeout(read, 5 * 1024 * 1024),
            read + Duration::from_secs(1)
        );
        // 16 uploads of 350 MiB completing at once on s3s-fs took longer than the 30 s read
        // timeout; each now has 30 s plus 87 s.
        assert_eq!(
            assembly_timeout(read, 350 * 1024 * 1024),
            Duration::from_secs(30 + 87)
        );
    }
}
