//! Packaging: once every source of an export has answered, one worker (whichever claims the
//! job) streams a ZIP of the delivered sources plus `meta.json` and `README.md` from the object
//! store back into it, then records the archive and the final status in one transaction.

pub mod archive;
pub mod manifest;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::io::{ReaderStream, StreamReader};
use tracing::Instrument;

use crate::db::packaging::{ClaimedJob, JobRepository};
use crate::db::sources::PACKAGING_CHANNEL;
use crate::db::{DbError, ExportRepository};
use crate::domain::progress::packaged_status;
use crate::domain::{Archive, Delivery, Export, SourceId, SourceStatus};
use crate::metrics::Metrics;
use crate::retry::{Backoff, pause, retry_delay};
use crate::storage::{KeyLayout, ObjectBody, ObjectStore, PutError, StoreError};
use crate::worker::lease::{LeaseKeeper, Renewal};
use crate::worker::wakeup::{Wakeup, Woken};
use archive::{ArchiveError, ArchiveSummary, Feed, Output};

/// The longest pause between attempts to claim a job while the database fails.
const CLAIM_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why packaging failed. Only [`PackageError::SourceMissing`] and
/// [`PackageError::SourceAltered`] are permanent: anything else may pass, so it is retried.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Reading a source or writing the archive failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading a source's stored data broke off (the store dropped the connection).
    #[error("reading the stored data of source {source_id} broke off: {error}")]
    SourceRead {
        /// The source being read.
        source_id: SourceId,
        /// What the store's body reported.
        #[source]
        error: io::Error,
    },
    /// The archive writer failed.
    #[error("writing the archive failed: {0}")]
    Writer(#[from] ArchiveError),
    /// The archive writer's thread panicked or was cancelled.
    #[error("the archive writer's thread failed: {0}")]
    WriterTask(#[from] tokio::task::JoinError),
    /// A stage stopped before the archive was complete; never stored.
    #[error("the archive was not completed: {0}")]
    Unfinished(String),
    /// A source's object is gone although its upload was recorded.
    #[error("the stored data of source {source_id} is missing from the object store")]
    SourceMissing {
        /// The source whose object is missing.
        source_id: SourceId,
    },
    /// A source's object is not what was uploaded (size or SHA-256 differ).
    #[error("the stored data of source {source_id} is not what was uploaded: {detail}")]
    SourceAltered {
        /// The source whose object differs.
        source_id: SourceId,
        /// What differs.
        detail: String,
    },
}

impl PackageError {
    /// Whether retrying cannot help: the export fails at once.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PackageError::SourceMissing { .. } | PackageError::SourceAltered { .. }
        )
    }
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
    /// The longest wait between two attempts after transient failures.
    pub retry_max_delay: Duration,
    /// How long transient failures may go on before the export fails; `None` = until the
    /// export expires (the cleaner then removes it and its job).
    pub max_age: Option<Duration>,
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
        let wakeup = Wakeup::listen(pool, PACKAGING_CHANNEL);
        let monitor = tokio::spawn(monitor_waiting(self.jobs.clone(), self.metrics.clone()));
        let mut backoff = Backoff::new(CLAIM_MAX_BACKOFF);
        while !*stop.borrow() {
            match self.jobs.claim(self.settings.lease).await {
                Ok(Some(job)) => {
                    backoff.succeeded();
                    self.handle(job).await;
                }
                Ok(None) => {
                    backoff.succeeded();
                    if wakeup.wait(self.settings.poll_interval, &mut stop).await == Woken::Stopped {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot claim packaging jobs; retrying");
                    pause(backoff.failed(), &mut stop).await;
                }
            }
        }
        monitor.abort();
    }

    async fn handle(&self, job: ClaimedJob) {
        let span =
            tracing::info_span!("packaging", export_id = %job.export_id, attempt = job.attempts);
        self.handle_in_span(job).instrument(span).await;
    }

    async fn handle_in_span(&self, job: ClaimedJob) {
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
                match next_step(&error, job, self.settings) {
                    NextStep::Fail(reason) => {
                        tracing::error!(error = %error, %reason, "packaging failed for good; failing the export");
                        if let Err(db_error) = self.jobs.give_up(job, &reason).await {
                            tracing::error!(error = %db_error, "cannot record the packaging failure; the job will be retried");
                        }
                    }
                    NextStep::Retry(delay) => {
                        self.metrics.packaging_retries.inc();
                        if matches!(
                            error,
                            PackageError::Store(_) | PackageError::SourceRead { .. }
                        ) {
                            self.metrics
                                .store_retries
                                .with_label_values(&["package"])
                                .inc();
                        }
                        tracing::warn!(error = %error, retry_in_ms = delay.as_millis(), "packaging failed; will retry");
                        if let Err(db_error) =
                            self.jobs.retry_later(job, delay, &error.to_string()).await
                        {
                            tracing::warn!(error = %db_error, "cannot reschedule; the lease will");
                        }
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
            .archive_key(export.owner.org_id.as_str(), export.id, job.attempts);
        // Keep the claim alive while building makes progress, so no other worker takes a
        // live job over, and a stalled one is re-driven after its lease.
        let progress = Arc::new(AtomicU64::new(0));
        let heartbeat = keep_claimed(
            self.jobs.clone(),
            job,
            self.settings.lease,
            progress.clone(),
        );
        // Retries send even a stored archive as a multipart upload: were its length ever worked
        // out wrong, the store would refuse every attempt alike, and the export would never be
        // packaged.
        let shape = match (self.settings.compression_level, job.attempts) {
            (0, ..=1) => Shape::StoredOneRequest,
            (level, _) => Shape::Streamed { level },
        };
        let built = build_archive(&self.store, &export, &key, shape, &progress).await;
        heartbeat.stop();
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
        let prefix = self
            .keys
            .export_prefix(export.owner.org_id.as_str(), export.id);
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

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NextStep {
    /// Try again after this delay.
    Retry(Duration),
    /// Fail the export with this reason (shown with its status).
    Fail(String),
}

/// Transient failures are retried with capped exponential backoff for as long as the export
/// lives, or until `max_age` when one is set; permanent ones fail the export at once.
fn next_step(error: &PackageError, job: ClaimedJob, settings: PackagerSettings) -> NextStep {
    if error.is_permanent() {
        return NextStep::Fail(error.to_string());
    }
    if let Some(max_age) = settings.max_age
        && job.age >= max_age
    {
        return NextStep::Fail(format!(
            "packaging kept failing for longer than PACKAGE_MAX_AGE ({} s); last error: {error}",
            max_age.as_secs()
        ));
    }
    NextStep::Retry(retry_delay(job.attempts, settings.retry_max_delay))
}

/// Keeps the oldest waiting job's age current for the metrics.
async fn monitor_waiting(jobs: JobRepository, metrics: Metrics) {
    loop {
        match jobs.oldest_waiting_age().await {
            Ok(age) => metrics
                .packaging_oldest_waiting
                .set(age.map_or(0.0, |age| age.as_secs_f64())),
            Err(error) => tracing::debug!(error = %error, "cannot read the packaging backlog"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Extends a job's lease every third of it, as long as the archive grew since the last
/// extension. A build that hangs stops renewing, so another worker re-drives the job when the
/// lease ends (this worker's late result is then discarded by `finish`).
fn keep_claimed(
    jobs: JobRepository,
    job: ClaimedJob,
    lease: Duration,
    progress: Arc<AtomicU64>,
) -> LeaseKeeper {
    let mut seen = 0;
    LeaseKeeper::spawn("packaging claim", lease, move || {
        let now = progress.load(Ordering::Relaxed);
        let stalled = now == seen;
        seen = now;
        let jobs = jobs.clone();
        async move {
            if stalled {
                tracing::warn!(
                    "packaging made no progress for a third of its lease; letting the claim lapse"
                );
                return Ok(Renewal::Skipped);
            }
            match jobs.heartbeat(job, lease).await? {
                true => Ok(Renewal::Extended),
                false => Ok::<_, DbError>(Renewal::Lost),
            }
        }
    })
}

/// Streams the archive of `export` into `key`: the sources are fetched and verified here, the
/// archive writer compresses on its own thread, and the store takes the archive as it grows.
pub async fn build_archive(
    store: &ObjectStore,
    export: &Export,
    key: &str,
    shape: Shape,
    progress: &AtomicU64,
) -> Result<ArchiveSummary, PackageError> {
    let plan = plan(export);
    let (compression_level, length) = match shape {
        Shape::StoredOneRequest => (0, Some(stored_length(export, &plan).await?)),
        Shape::Streamed { level } => (level, None),
    };
    let (feed, feed_receiver) = mpsc::channel::<Feed>(FEED_DEPTH);
    let (output, mut output_receiver) = mpsc::channel::<Output>(4);
    // Each stage owns its end of the channels, so one that stops closes them and the others
    // stop too instead of waiting.
    let writer = archive::spawn_writer(compression_level, export.created_at, feed_receiver, output);
    let consumer = async move {
        // Bytes taken by the store count as progress too: a slow store that keeps accepting
        // parts keeps the claim.
        let chunks = futures::stream::poll_fn(|context| {
            output_receiver
                .poll_recv(context)
                .map(|message| match message {
                    Some(Output::Chunk(bytes)) => {
                        progress.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        Some(Ok(bytes))
                    }
                    Some(Output::Done) => None,
                    // The writer stopped without finishing: never store a truncated archive.
                    None => Some(Err(io::Error::other("the archive was not completed"))),
                })
        });
        let mut reader = StreamReader::new(Box::pin(chunks));
        match length {
            Some(length) => {
                store
                    .put_exact(key, length, &mut reader, "application/zip")
                    .await
            }
            None => store.put(key, &mut reader, "application/zip").await,
        }
    };
    let (fed, consumed) = tokio::join!(feed_entries(store, plan, feed, progress), consumer);
    let written = writer.await?;
    // A source problem explains everything after it; then the store's own failure.
    match (fed, consumed, written) {
        (Err(Fed::Source(error)), _, _) => Err(error),
        (_, Err(PutError::Store(error)), _) => Err(PackageError::Store(error)),
        (_, _, Err(error)) => Err(error.into()),
        (_, Err(PutError::Body(error)), _) => Err(PackageError::Unfinished(format!(
            "the writer's output did not reach the store whole: {error}"
        ))),
        (Err(Fed::WriterGone), _, _) => Err(PackageError::Unfinished(
            "the writer stopped taking input".to_owned(),
        )),
        (Ok(()), Ok(_), Ok(summary)) => Ok(summary),
    }
}

/// How the archive reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Compressed at `level` (0 stores) and sent as it is written, in parts (a multipart
    /// upload on S3).
    Streamed {
        /// The Deflate level, 0–9.
        level: u32,
    },
    /// A stored (level 0) archive, whose length is worked out beforehand, as one streamed
    /// request: on S3-compatible servers that assemble parts by copying them (s3s-fs, MinIO on
    /// one disk), this writes the archive once instead of twice.
    StoredOneRequest,
}

/// One entry of the archive, in the order written, and where its bytes come from.
struct Planned<'a> {
    name: String,
    bytes: u64,
    content: Content<'a>,
}

/// Where an entry's bytes come from.
enum Content<'a> {
    /// A delivered source's stored object, checked against its recorded size and SHA-256.
    Source(SourceId, &'a Delivery),
    /// Text made here (`meta.json`, `README.md`).
    Text(String),
}

/// Every delivered source, then `meta.json` and `README.md`.
fn plan(export: &Export) -> Vec<Planned<'_>> {
    let sources = export.sources.iter().filter_map(|source| {
        let (SourceStatus::Complete, Some(delivery)) = (source.status, &source.delivery) else {
            return None;
        };
        Some(Planned {
            name: manifest::file_name(export, source),
            bytes: delivery.bytes,
            content: Content::Source(source.id, delivery),
        })
    });
    let texts = [
        ("meta.json", manifest::meta_json(export)),
        ("README.md", manifest::readme(export)),
    ]
    .into_iter()
    .map(|(name, text)| Planned {
        name: name.to_owned(),
        bytes: text.len() as u64,
        content: Content::Text(text),
    });
    sources.chain(texts).collect()
}

/// The stored archive's length, worked out on a blocking thread (it runs a CRC over zeros as
/// long as the sources).
async fn stored_length(export: &Export, plan: &[Planned<'_>]) -> Result<u64, PackageError> {
    let modified = export.created_at;
    let entries: Vec<(String, u64)> = plan
        .iter()
        .map(|entry| (entry.name.clone(), entry.bytes))
        .collect();
    Ok(tokio::task::spawn_blocking(move || archive::stored_length(modified, &entries)).await??)
}

/// How many source chunks may wait for the archive writer: the next source is read while the
/// current one is compressed, within this many chunks.
const FEED_DEPTH: usize = 8;

/// Why feeding the archive writer stopped.
enum Fed {
    /// A source could not be read or is not what was uploaded.
    Source(PackageError),
    /// The writer stopped taking input (its own error says why).
    WriterGone,
}

/// Sends every planned entry in order, each source checked against its recorded size and
/// SHA-256, then `Finish`.
async fn feed_entries(
    store: &ObjectStore,
    plan: Vec<Planned<'_>>,
    feed: mpsc::Sender<Feed>,
    progress: &AtomicU64,
) -> Result<(), Fed> {
    let feed = &feed;
    let send = |message: Feed| async move { feed.send(message).await.map_err(|_| Fed::WriterGone) };
    for entry in plan {
        match entry.content {
            Content::Source(source_id, delivery) => {
                let object = match store.get(&delivery.object_key, None).await {
                    Ok(object) => object,
                    Err(StoreError::NotFound(_)) => {
                        return Err(Fed::Source(PackageError::SourceMissing { source_id }));
                    }
                    Err(error) => return Err(Fed::Source(error.into())),
                };
                send(Feed::Entry {
                    name: entry.name,
                    size_hint: entry.bytes,
                })
                .await?;
                feed_source(source_id, delivery, object.body, feed, progress).await?;
            }
            Content::Text(text) => {
                send(Feed::Entry {
                    name: entry.name,
                    size_hint: entry.bytes,
                })
                .await?;
                send(Feed::Data(Bytes::from(text))).await?;
            }
        }
    }
    send(Feed::Finish).await
}

/// Sends one source's stored bytes, then checks them against what was uploaded.
async fn feed_source(
    source_id: SourceId,
    delivery: &Delivery,
    body: ObjectBody,
    feed: &mpsc::Sender<Feed>,
    progress: &AtomicU64,
) -> Result<(), Fed> {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut body = ReaderStream::with_capacity(body, SOURCE_READ);
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|error| Fed::Source(PackageError::SourceRead { source_id, error }))?;
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        feed.send(Feed::Data(chunk))
            .await
            .map_err(|_| Fed::WriterGone)?;
    }
    let sha256 = hex::encode(hasher.finalize());
    if bytes != delivery.bytes || sha256 != delivery.sha256 {
        return Err(Fed::Source(PackageError::SourceAltered {
            source_id,
            detail: format!(
                "{bytes} bytes, sha256 {sha256}; expected {} bytes, sha256 {}",
                delivery.bytes, delivery.sha256
            ),
        }));
    }
    Ok(())
}

/// Source objects are read in pieces of this size.
const SOURCE_READ: usize = 128 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn job(attempts: i32, age_secs: u64) -> ClaimedJob {
        ClaimedJob {
            export_id: uuid::Uuid::nil().into(),
            attempts,
            age: Duration::from_secs(age_secs),
        }
    }

    fn settings(max_age: Option<Duration>) -> PackagerSettings {
        PackagerSettings {
            lease: Duration::from_secs(60),
            compression_level: 6,
            poll_interval: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(30),
            max_age,
        }
    }

    fn unavailable() -> PackageError {
        PackageError::Store(StoreError::Unavailable("connection refused".into()))
    }

    #[test]
    fn transient_failures_are_retried_however_many_attempts_with_a_capped_delay() {
        for attempts in [1, 8, 9, 100, 10_000] {
            match next_step(&unavailable(), job(attempts, 86_400), settings(None)) {
                NextStep::Retry(delay) => assert!(delay <= Duration::from_secs(30)),
                other => panic!("attempt {attempts}: {other:?}"),
            }
        }
        let broken_read = PackageError::SourceRead {
            source_id: SourceId::from(uuid::Uuid::nil()),
            error: io::Error::from(io::ErrorKind::ConnectionReset),
        };
        assert!(matches!(
            next_step(&broken_read, job(50, 10), settings(None)),
            NextStep::Retry(_)
        ));
        let database = PackageError::Db(DbError::Unavailable(sqlx::Error::PoolTimedOut));
        assert!(matches!(
            next_step(&database, job(50, 10), settings(None)),
            NextStep::Retry(_)
        ));
    }

    #[test]
    fn a_missing_or_altered_source_fails_the_export_at_once_with_its_reason() {
        let source_id = SourceId::from(uuid::Uuid::from_u128(7));
        let missing = PackageError::SourceMissing { source_id };
        let NextStep::Fail(reason) = next_step(&missing, job(1, 0), settings(None)) else {
            panic!("a missing object is permanent");
        };
        assert!(reason.contains(&source_id.to_string()) && reason.contains("missing"));
        let altered = PackageError::SourceAltered {
            source_id,
            detail: "3 bytes".into(),
        };
        assert!(matches!(
            next_step(&altered, job(1, 0), settings(None)),
            NextStep::Fail(_)
        ));
    }

    #[test]
    fn package_max_age_ends_the_retries() {
        let max_age = Some(Duration::from_secs(3600));
        assert!(matches!(
            next_step(&unavailable(), job(20, 3599), settings(max_age)),
            NextStep::Retry(_)
        ));
        let NextStep::Fail(reason) = next_step(&unavailable(), job(20, 3600), settings(max_age))
        else {
            panic!("past PACKAGE_MAX_AGE the export fails");
        };
        assert!(reason.contains("PACKAGE_MAX_AGE") && reason.contains("connection refused"));
    }
}
