//! Compile once per fleet: the first replica to compile a component (at push, usually) stores
//! the compiled artefact in the object store, keyed by its own SHA-256 under the engine's
//! fingerprint, and records it with that SHA-256 in PostgreSQL; every other replica of the same
//! fingerprint loads the artefact instead of compiling, which takes a fraction of the time for
//! the large components of interpreted languages. A local directory (`PLUGIN_ARTEFACT_DIR`)
//! keeps artefacts across restarts.
//!
//! An artefact runs as native code, so a replica loads only bytes whose SHA-256 matches the
//! record, wherever they come from (object store or disk). Anything wrong (no record, bytes
//! that differ, another engine, the store unreachable) falls back to compiling, and a replica
//! that compiled past a broken artefact stores a good one in its place.

use std::sync::Arc;

use prometheus::IntCounterVec;
use sha2::{Digest, Sha256};

use crate::db::artefacts::{ArtefactRecord, ArtefactRepository};
use crate::storage::ObjectStore;
use export_plugin_host::{ArtefactDir, LoadedPlugin, PluginHost};

/// Where artefacts live in the object store.
pub const ARTEFACT_PREFIX: &str = "_plugins/cwasm/";

/// The object key of an artefact whose bytes have `sha256`: content-addressed, so replicas
/// storing at once never overwrite each other's bytes with other bytes (the engine fingerprint
/// is in the record, not the key: s3s-fs names a multipart upload's file after its key, and a
/// longer key goes past the file system's 255-byte names).
pub fn artefact_key(sha256: &str) -> String {
    format!("{ARTEFACT_PREFIX}{sha256}.cwasm")
}

/// How a replica got a plugin it did not hold compiled (the `source` label of
/// `export_service_plugin_loads_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Compiled from the component.
    Compiled,
    /// The fleet's artefact, from the object store.
    Store,
    /// The fleet's artefact, from the local directory.
    Disk,
}

impl LoadSource {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Compiled => "compiled",
            Self::Store => "store",
            Self::Disk => "disk",
        }
    }
}

/// The fleet's artefacts, as one replica sees them.
#[derive(Debug, Clone)]
pub struct Artefacts {
    records: ArtefactRepository,
    store: ObjectStore,
    directory: Option<ArtefactDir>,
    max_bytes: usize,
    loads: IntCounterVec,
}

/// An artefact that was recorded but could not be used: replaced once a good one exists.
#[derive(Debug)]
pub struct Broken(ArtefactRecord);

impl Artefacts {
    /// Artefacts recorded in `records`, stored in `store` and kept in `directory` if any; no
    /// artefact larger than `max_bytes` is fetched; loads are counted in `loads` (by source).
    pub fn new(
        records: ArtefactRepository,
        store: ObjectStore,
        directory: Option<ArtefactDir>,
        max_bytes: usize,
        loads: IntCounterVec,
    ) -> Self {
        Self {
            records,
            store,
            directory,
            max_bytes,
            loads,
        }
    }

    /// Counts a load from `source`.
    pub fn count(&self, source: LoadSource) {
        self.loads.with_label_values(&[source.label()]).inc();
    }

    /// The plugin of `digest` from the fleet's artefact for `host`'s engine: `Ok(None)` when
    /// none is recorded, `Err(Broken)` when the recorded one cannot be used (the caller compiles
    /// and then [`keep`](Self::keep)s a good one).
    pub async fn load(
        &self,
        host: &Arc<PluginHost>,
        digest: &str,
    ) -> Result<Option<Arc<LoadedPlugin>>, Broken> {
        let record = match self.records.find(digest, host.fingerprint()).await {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::warn!(%digest, %error, "cannot look up the artefact; compiling");
                return Ok(None);
            }
        };
        let (bytes, source) = match self.bytes(&record).await {
            Ok(found) => found,
            Err(reason) => {
                tracing::warn!(%digest, key = %record.object_key, %reason, "the artefact is unusable; compiling");
                return Err(Broken(record));
            }
        };
        let loading = host.clone();
        let owned_digest = digest.to_owned();
        let loaded = blocking(move || loading.load_artefact(&owned_digest, &bytes)).await;
        match loaded {
            Ok(Ok(plugin)) => {
                self.count(source);
                Ok(Some(plugin))
            }
            Ok(Err(failure)) => {
                tracing::warn!(%digest, %failure, "the artefact does not load; compiling");
                self.forget_on_disk(&record);
                Err(Broken(record))
            }
            Err(error) => {
                tracing::warn!(%digest, %error, "loading the artefact crashed; compiling");
                Err(Broken(record))
            }
        }
    }

    /// The artefact's bytes, checked against the record: from the directory, else from the
    /// object store (then kept in the directory). Hashing tens of MiB and the file I/O run off
    /// the async threads.
    async fn bytes(&self, record: &ArtefactRecord) -> Result<(Vec<u8>, LoadSource), String> {
        if let Some(bytes) = self.read_on_disk(record).await {
            return Ok((bytes, LoadSource::Disk));
        }
        let bytes = self
            .store
            .get_all(&record.object_key, self.max_bytes)
            .await
            .map_err(|error| error.to_string())?;
        let directory = self.directory.clone();
        let expected = record.clone();
        let (bytes, actual) = blocking(move || {
            let actual = sha256(&bytes);
            if actual == expected.sha256 {
                keep_on_disk(
                    directory.as_ref(),
                    &expected.digest,
                    &expected.fingerprint,
                    &bytes,
                );
            }
            (bytes, actual)
        })
        .await?;
        if actual != record.sha256 {
            return Err(format!(
                "its bytes have SHA-256 {actual}, not the recorded {}",
                record.sha256
            ));
        }
        Ok((bytes, LoadSource::Store))
    }

    /// The artefact from the directory, when it holds one matching the record (one that does
    /// not is removed).
    async fn read_on_disk(&self, record: &ArtefactRecord) -> Option<Vec<u8>> {
        let directory = self.directory.clone()?;
        let record = record.clone();
        blocking(move || {
            let bytes = directory.read(&record.digest, &record.fingerprint)?;
            if sha256(&bytes) == record.sha256 {
                return Some(bytes);
            }
            tracing::warn!(digest = %record.digest, "the artefact on disk differs from the record; fetching it again");
            directory.remove(&record.digest, &record.fingerprint);
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// Stores the artefact of `plugin`, just compiled by `host`, for the fleet (unless a usable
    /// one is recorded already), replacing `broken` if given. Failing only costs the other
    /// replicas a compilation, so it is logged, not returned.
    pub async fn keep(
        &self,
        host: &Arc<PluginHost>,
        plugin: &Arc<LoadedPlugin>,
        broken: Option<Broken>,
    ) {
        let digest = plugin.digest.as_str();
        let fingerprint = host.fingerprint().to_owned();
        if broken.is_none()
            && let Ok(Some(_)) = self.records.find(digest, &fingerprint).await
        {
            return;
        }
        let serialising = plugin.clone();
        let serialised = blocking(move || {
            serialising.artefact().map(|artefact| {
                let sha256 = sha256(&artefact);
                (artefact, sha256)
            })
        })
        .await;
        let (artefact, artefact_sha256) = match serialised {
            Ok(Ok(serialised)) => serialised,
            Ok(Err(failure)) => {
                tracing::warn!(%digest, %failure, "cannot serialise the compiled plugin");
                return;
            }
            Err(error) => {
                tracing::warn!(%digest, %error, "serialising the compiled plugin crashed");
                return;
            }
        };
        let record = ArtefactRecord {
            digest: digest.to_owned(),
            fingerprint: fingerprint.clone(),
            object_key: artefact_key(&artefact_sha256),
            sha256: artefact_sha256,
            size_bytes: artefact.len() as i64,
        };
        let mut reader: &[u8] = &artefact;
        if let Err(error) = self
            .store
            .put(&record.object_key, &mut reader, "application/octet-stream")
            .await
        {
            tracing::warn!(%digest, %error, "cannot store the compiled artefact");
            return;
        }
        let recorded = match &broken {
            Some(Broken(old)) => self.records.replace(old, &record).await,
            None => self.records.record(&record).await,
        };
        if let Some(Broken(old)) = broken
            && old.object_key != record.object_key
            && let Err(error) = self.store.delete(&old.object_key).await
        {
            tracing::warn!(key = %old.object_key, %error, "cannot delete an unusable artefact");
        }
        match recorded {
            Ok(kept) => {
                tracing::info!(%digest, %fingerprint, bytes = artefact.len(), "compiled artefact stored for the fleet");
                if kept.sha256 == record.sha256
                    && let Some(directory) = self.directory.clone()
                {
                    let _ = blocking(move || {
                        keep_on_disk(
                            Some(&directory),
                            &record.digest,
                            &record.fingerprint,
                            &artefact,
                        )
                    })
                    .await;
                }
            }
            Err(error) => tracing::warn!(%digest, %error, "cannot record the compiled artefact"),
        }
    }

    fn forget_on_disk(&self, record: &ArtefactRecord) {
        if let Some(directory) = &self.directory {
            directory.remove(&record.digest, &record.fingerprint);
        }
    }
}

/// Runs `work` on the blocking pool (file I/O, hashing and serialising tens of MiB).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| error.to_string())
}

/// Keeps an artefact in `directory`, if one is configured; failing only costs a fetch later.
fn keep_on_disk(directory: Option<&ArtefactDir>, digest: &str, fingerprint: &str, artefact: &[u8]) {
    if let Some(directory) = directory
        && let Err(error) = directory.write(digest, fingerprint, artefact)
    {
        tracing::warn!(%digest, %error, "cannot keep the artefact on disk");
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
