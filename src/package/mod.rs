//! Packaging: once every source of an export has answered, one worker (whichever claims the
//! job) streams a ZIP of the delivered sources plus `meta.json` and `README.md` from the object
//! store back into it, then records the archive and the final status in one transaction.

pub mod manifest;
pub mod zip;

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, watch};
use tokio_util::io::StreamReader;

use crate::db::packaging::{ClaimedJob, JobRepository};
use crate::db::sources::PACKAGING_CHANNEL;
use crate::db::{DbError, ExportRepository};
use crate::dispatch::relay::retry_delay;
use crate::domain::progress::packaged_status;
use crate::domain::{Archive, Export, SourceStatus};
use crate::metrics::Metrics;
use crate::storage::{KeyLayout, ObjectStore, PutError, StoreError};
use zip::{ArchiveSummary, Sink, ZipStreamWriter};

/// Attempts after which a job that keeps failing fails its export instead of retrying.
pub const MAX_ATTEMPTS: i32 = 8;
/// Archive bytes are handed to the store in chunks of this size.
const CHUNK: usize = 1024 * 1024;

/// Why packaging failed.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Reading a source or writing the archive failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Building the archive failed.
    #[error("building the archive failed: {0}")]
    Archive(String),
}

/// Packaging settings.
#[derive(Debug, Clone, Copy)]
pub struct PackagerSettings {
    /// How long a claimed job is reserved.
    pub lease: Duration,
    /// DEFLATE level.
    pub compression_level: u32,
    /// Idle check interval.
    pub poll_interval: Duration,
}

/// The packaging worker of one replica.
pub struct Packager {
    exports: ExportRepository,
    jobs: JobRepository,
    store: ObjectStore,
    keys: KeyLayout,
    settings: PackagerSettings,
    metrics: Metrics,
}

impl Packager {
    /// A worker over the given stores.
    pub fn new(
        pool: PgPool,
        store: ObjectStore,
        keys: KeyLayout,
        settings: PackagerSettings,
        metrics: Metrics,
    ) -> Self {
        Self {
            exports: ExportRepository::new(pool.clone()),
            jobs: JobRepository::new(pool),
            store,
            keys,
            settings,
            metrics,
        }
    }

    /// Packages jobs until `stop` turns true (the job in progress is finished first; a job cut
    /// short is re-driven by another worker after its lease).
    pub async fn run(self, pool: PgPool, mut stop: watch::Receiver<bool>) {
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let listener = tokio::spawn(listen(pool, wake.clone()));
        let mut setbacks = 0;
        while !*stop.borrow() {
            match self.jobs.claim(self.settings.lease).await {
                Ok(Some(job)) => {
                    setbacks = 0;
                    self.handle(job).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(error) => {
                    setbacks += 1;
                    tracing::warn!(error = %error, "cannot claim packaging jobs; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry_delay(setbacks, Duration::from_secs(30))) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        listener.abort();
    }

    async fn handle(&self, job: ClaimedJob) {
        let span =
            tracing::info_span!("packaging", export_id = %job.export_id, attempt = job.attempts);
        let _entered = span.enter();
        let started = Instant::now();
        match self.package(job).await {
            Ok(Some(summary)) => {
                self.metrics
                    .packaging_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.packaged_bytes.inc_by(summary.bytes);
                tracing::info!(
                    bytes = summary.bytes,
                    elapsed_ms = started.elapsed().as_millis(),
                    "export packaged"
                );
            }
            Ok(None) => {}
            Err(error) => {
                self.metrics.packaging_failures.inc();
                if job.attempts >= MAX_ATTEMPTS {
                    tracing::error!(error = %error, "packaging failed for good; failing the export");
                    if let Err(db_error) =
                        self.jobs.give_up(job.export_id, &error.to_string()).await
                    {
                        tracing::error!(error = %db_error, "cannot record the packaging failure");
                    }
                } else {
                    let delay = retry_delay(job.attempts, Duration::from_secs(300));
                    tracing::warn!(error = %error, retry_in_ms = delay.as_millis(), "packaging failed; will retry");
                    if let Err(db_error) = self
                        .jobs
                        .retry_later(job.export_id, delay, &error.to_string())
                        .await
                    {
                        tracing::warn!(error = %db_error, "cannot reschedule; the lease will");
                    }
                }
            }
        }
    }

    /// Builds and records the archive of one job. `Ok(None)` when there was nothing to do.
    pub async fn package(&self, job: ClaimedJob) -> Result<Option<ArchiveSummary>, PackageError> {
        let Some(export) = self.exports.find(job.export_id).await? else {
            self.jobs.abandon(job.export_id, "export deleted").await?;
            return Ok(None);
        };
        let key = self
            .keys
            .archive_key(&export.owner.org_id, export.id, job.attempts);
        // Keep the claim alive while building, so no other worker takes the job over.
        let heartbeat = tokio::spawn(keep_claimed(self.jobs.clone(), job, self.settings.lease));
        let built =
            build_archive(&self.store, &export, &key, self.settings.compression_level).await;
        heartbeat.abort();
        let summary = built?;
        let status = packaged_status(export.sources.iter().map(|source| source.status));
        let archive = Archive {
            key: key.clone(),
            bytes: summary.bytes,
            sha256: summary.sha256.clone(),
        };
        if self.jobs.finish(job, &archive, status).await? {
            self.remove_other_archives(&export, &key).await;
        } else {
            // Another worker's claim won (or the export is gone): this archive is not recorded.
            tracing::info!(
                "another worker finished this export; discarding this attempt's archive"
            );
            if let Err(error) = self.store.delete(&key).await {
                tracing::warn!(error = %error, key, "cannot delete a discarded archive");
            }
        }
        Ok(Some(summary))
    }

    /// Deletes archives of earlier attempts that died after storing theirs.
    async fn remove_other_archives(&self, export: &Export, kept: &str) {
        let prefix = self.keys.export_prefix(&export.owner.org_id, export.id);
        let archive_prefix = format!("{prefix}{}.", export.id);
        match self.store.list(&archive_prefix).await {
            Ok(keys) => {
                for key in keys
                    .iter()
                    .filter(|key| key.as_str() != kept && key.ends_with(".zip"))
                {
                    if let Err(error) = self.store.delete(key).await {
                        tracing::warn!(error = %error, key, "cannot delete a stale archive");
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot list stale archives"),
        }
    }
}

/// Extends a job's lease every third of it until aborted.
async fn keep_claimed(jobs: JobRepository, job: ClaimedJob, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        match jobs.heartbeat(job, lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the packaging claim was lost; another worker may be building");
                return;
            }
            Err(error) => tracing::warn!(error = %error, "cannot extend the packaging claim"),
        }
    }
}

/// Streams the archive of `export` into `key`.
pub async fn build_archive(
    store: &ObjectStore,
    export: &Export,
    key: &str,
    compression_level: u32,
) -> Result<ArchiveSummary, PackageError> {
    let (sender, receiver) = mpsc::channel::<Message>(4);
    let producer = async {
        let sink = ChannelSink {
            sender,
            buffer: Vec::with_capacity(CHUNK),
        };
        let mut writer = ZipStreamWriter::new(sink, compression_level, export.created_at);
        for source in &export.sources {
            let (SourceStatus::Complete, Some(delivery)) = (source.status, &source.delivery) else {
                continue;
            };
            let object = store.get(&delivery.object_key, None).await?;
            let mut verified = Verifying {
                inner: object.body,
                hasher: Sha256::new(),
            };
            let written = writer
                .add_entry(
                    &manifest::file_name(export, source),
                    &mut verified,
                    delivery.bytes,
                )
                .await
                .map_err(|error| PackageError::Archive(error.to_string()))?;
            let sha256 = hex::encode(verified.hasher.finalize());
            if written.uncompressed != delivery.bytes || sha256 != delivery.sha256 {
                return Err(PackageError::Archive(format!(
                    "the stored object of source {} is not what was uploaded \
                     ({} bytes, sha256 {sha256}; expected {} bytes, sha256 {})",
                    source.id, written.uncompressed, delivery.bytes, delivery.sha256
                )));
            }
        }
        for (name, text) in [
            ("meta.json", manifest::meta_json(export)),
            ("README.md", manifest::readme(export)),
        ] {
            let mut input: &[u8] = text.as_bytes();
            writer
                .add_entry(name, &mut input, text.len() as u64)
                .await
                .map_err(|error| PackageError::Archive(error.to_string()))?;
        }
        let (sink, summary) = writer
            .finish()
            .await
            .map_err(|error| PackageError::Archive(error.to_string()))?;
        sink.close()
            .await
            .map_err(|error| PackageError::Archive(error.to_string()))?;
        Ok::<_, PackageError>(summary)
    };
    let consumer = async {
        let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Some(Message::Chunk(bytes)) => Some((Ok(bytes), receiver)),
                Some(Message::Done) => None,
                // The producer stopped without finishing: never store a truncated archive.
                None => Some((
                    Err(io::Error::other("the archive was not completed")),
                    receiver,
                )),
            }
        });
        let mut reader = StreamReader::new(Box::pin(chunks));
        store.put(key, &mut reader, "application/zip").await
    };
    let (produced, consumed) = tokio::join!(producer, consumer);
    match (produced, consumed) {
        (Ok(summary), Ok(_)) => Ok(summary),
        (Err(error), _) => Err(error),
        (Ok(_), Err(PutError::Store(error))) => Err(PackageError::Store(error)),
        (Ok(_), Err(PutError::Body(error))) => Err(PackageError::Archive(error.to_string())),
    }
}

/// Hashes what passes through, to check a source object against what was recorded.
struct Verifying<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Verifying<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buffer.filled().len();
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(context, buffer);
        if let std::task::Poll::Ready(Ok(())) = polled {
            this.hasher.update(&buffer.filled()[before..]);
        }
        polled
    }
}

enum Message {
    Chunk(Bytes),
    Done,
}

/// Hands archive bytes to the uploader in chunks; `close` marks the end as complete.
struct ChannelSink {
    sender: mpsc::Sender<Message>,
    buffer: Vec<u8>,
}

impl ChannelSink {
    async fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender
            .send(Message::Chunk(chunk))
            .await
            .map_err(|_| io::Error::other("the archive upload stopped"))
    }

    async fn close(mut self) -> io::Result<()> {
        self.flush().await?;
        self.sender
            .send(Message::Done)
            .await
            .map_err(|_| io::Error::other("the archive upload stopped"))
    }
}

impl Sink for ChannelSink {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }
}

async fn listen(pool: PgPool, wake: std::sync::Arc<tokio::sync::Notify>) {
    let mut attempts = 0;
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(PACKAGING_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listener.await {
            Ok(mut listener) => {
                attempts = 0;
                while listener.recv().await.is_ok() {
                    wake.notify_one();
                }
                wake.notify_one();
            }
            Err(error) => {
                attempts += 1;
                tracing::debug!(error = %error, "cannot listen for packaging notifications yet");
                tokio::time::sleep(retry_delay(attempts, Duration::from_secs(10))).await;
            }
        }
    }
}
