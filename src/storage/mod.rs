//! Object storage for uploads and archives: S3 (or an S3-compatible server) or a local
//! directory, behind one small interface. Every operation streams.

mod exact_body;
mod idle;
pub mod keys;
mod local;
mod s3;

use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{ObjectLayout, StoreConfig};
use exact_body::ExactLength;
pub use keys::KeyLayout;
pub use local::LocalStore;
pub use s3::S3Store;

/// A readable body of an object.
pub type ObjectBody = Pin<Box<dyn AsyncRead + Send>>;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered with a server error: retry later.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// No such object.
    #[error("no such object: {0}")]
    NotFound(String),
    /// Any other failure.
    #[error("object store error: {0}")]
    Other(String),
}

/// Why a streaming put failed.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// Reading the body failed (the client went away, or a limit was exceeded upstream).
    #[error("reading the body failed: {0}")]
    Body(#[source] std::io::Error),
    /// Writing to the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The headers a presigned read answers with instead of the object's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// `Content-Type`.
    pub content_type: String,
    /// `Content-Disposition` (the file name the tenant's browser saves).
    pub content_disposition: String,
}

/// An inclusive byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Whether the range is empty (never, for a valid range).
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }
}

/// An object being read.
pub struct ObjectRead {
    /// The bytes (the whole object, or the requested range).
    pub body: ObjectBody,
    /// How many bytes `body` yields.
    pub length: u64,
}

/// The configured object store.
#[derive(Debug, Clone)]
pub enum ObjectStore {
    /// S3 or an S3-compatible server.
    S3(S3Store),
    /// A local directory.
    Local(LocalStore),
}

impl ObjectStore {
    /// Connects to the configured store (creating the bucket or directory when configured to).
    pub async fn from_config(
        store: &StoreConfig,
        layout: &ObjectLayout,
    ) -> Result<Self, StoreError> {
        Ok(match store {
            StoreConfig::Local { root } => Self::Local(LocalStore::new(root.clone()).await?),
            StoreConfig::S3(config) => Self::S3(S3Store::new(config, layout.part_size).await?),
        })
    }

    /// Streams `body` into `key`; the object exists (durably) only once this returns `Ok`.
    /// Returns the number of bytes stored.
    pub async fn put(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Unpin + Send),
        content_type: &str,
    ) -> Result<u64, PutError> {
        match self {
            Self::S3(store) => store.put(key, body, content_type).await,
            Self::Local(store) => store.put(key, body).await,
        }
    }

    /// Streams `body`, which must yield exactly `length` bytes, into `key`; the object exists
    /// (durably) only once this returns `Ok`, and never when the body yields another length or
    /// fails, even at its very end. Knowing the length lets S3 take one streamed request
    /// instead of a multipart upload.
    pub async fn put_exact(
        &self,
        key: &str,
        length: u64,
        body: &mut (dyn AsyncRead + Unpin + Send),
        content_type: &str,
    ) -> Result<u64, PutError> {
        match self {
            Self::S3(store) => store.put_exact(key, length, body, content_type).await,
            Self::Local(store) => store.put(key, &mut ExactLength::new(body, length)).await,
        }
    }

    /// Reads `key`, or the given range of it.
    pub async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ObjectRead, StoreError> {
        match self {
            Self::S3(store) => store.get(key, range).await,
            Self::Local(store) => store.get(key, range).await,
        }
    }

    /// The whole object at `key` in memory (plugin components and artefacts), refused before
    /// its body is read when it is larger than `max_bytes`.
    pub async fn get_all(&self, key: &str, max_bytes: usize) -> Result<Vec<u8>, StoreError> {
        let object = self.get(key, None).await?;
        if object.length > max_bytes as u64 {
            return Err(StoreError::Other(format!(
                "{key} is larger than the {max_bytes} bytes accepted"
            )));
        }
        let mut bytes = Vec::with_capacity(object.length as usize);
        let mut body = object.body;
        // A body that breaks off is the store's passing trouble: the caller retries later.
        body.read_to_end(&mut bytes)
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        Ok(bytes)
    }

    /// A short-lived URL that reads `key` directly from the store, answering with `headers`;
    /// `Ok(None)` when the store cannot presign (the local directory).
    pub async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
        headers: &ResponseHeaders,
    ) -> Result<Option<String>, StoreError> {
        match self {
            Self::S3(store) => store.presign_get(key, expires_in, headers).await.map(Some),
            Self::Local(_) => Ok(None),
        }
    }

    /// The size of `key`, or `None` if it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Self::S3(store) => store.size(key).await,
            Self::Local(store) => store.size(key).await,
        }
    }

    /// Keys starting with `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Self::S3(store) => store.list(prefix).await,
            Self::Local(store) => store.list(prefix).await,
        }
    }

    /// Deletes every object whose key starts with `prefix` (which must end with `/`); returns
    /// how many were deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        debug_assert!(prefix.ends_with('/'), "prefixes end with a slash");
        match self {
            Self::S3(store) => store.delete_prefix(prefix).await,
            Self::Local(store) => store.delete_prefix(prefix).await,
        }
    }

    /// Deletes one object (missing is fine).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::S3(store) => store.delete(key).await,
            Self::Local(store) => store.delete(key).await,
        }
    }
}
