//! Records of compiled components (artefacts) in the object store, by component digest and
//! engine fingerprint, with the SHA-256 a replica checks before it loads one.

use sqlx::{PgPool, Row};

use super::DbError;

/// One stored artefact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtefactRecord {
    /// The component's digest (SHA-256 of its wasm, hex).
    pub digest: String,
    /// The fingerprint of the engines that can load it.
    pub fingerprint: String,
    /// Where its bytes are.
    pub object_key: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Its length in bytes.
    pub size_bytes: i64,
}

/// The artefact records.
#[derive(Debug, Clone)]
pub struct ArtefactRepository {
    pool: PgPool,
}

impl ArtefactRepository {
    /// Records kept in `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The artefact of `digest` for engines of `fingerprint`, if one was stored.
    pub async fn find(
        &self,
        digest: &str,
        fingerprint: &str,
    ) -> Result<Option<ArtefactRecord>, DbError> {
        let row = sqlx::query(
            "SELECT object_key, sha256, size_bytes FROM plugin_artefacts \
             WHERE digest = $1 AND fingerprint = $2",
        )
        .bind(digest)
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ArtefactRecord {
                digest: digest.to_owned(),
                fingerprint: fingerprint.to_owned(),
                object_key: row.try_get("object_key")?,
                sha256: row.try_get("sha256")?,
                size_bytes: row.try_get("size_bytes")?,
            })
        })
        .transpose()
    }

    /// Records an artefact whose bytes are stored; the first record of a (digest, fingerprint)
    /// stays (two replicas compiling at once store equal or equally good artefacts). Returns
    /// the record in force.
    pub async fn record(&self, artefact: &ArtefactRecord) -> Result<ArtefactRecord, DbError> {
        sqlx::query(
            "INSERT INTO plugin_artefacts (digest, fingerprint, object_key, sha256, size_bytes) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (digest, fingerprint) DO NOTHING",
        )
        .bind(&artefact.digest)
        .bind(&artefact.fingerprint)
        .bind(&artefact.object_key)
        .bind(&artefact.sha256)
        .bind(artefact.size_bytes)
        .execute(&self.pool)
        .await?;
        self.find(&artefact.digest, &artefact.fingerprint)
            .await?
            .ok_or_else(|| DbError::Corrupt("an artefact record vanished".into()))
    }

    /// Replaces the record `old` (an artefact found unusable) by `new`, unless another replica
    /// replaced it first. Returns the record in force.
    pub async fn replace(
        &self,
        old: &ArtefactRecord,
        new: &ArtefactRecord,
    ) -> Result<ArtefactRecord, DbError> {
        sqlx::query(
            "UPDATE plugin_artefacts SET object_key = $3, sha256 = $4, size_bytes = $5,              created_at = now() WHERE digest = $1 AND fingerprint = $2 AND sha256 = $6",
        )
        .bind(&new.digest)
        .bind(&new.fingerprint)
        .bind(&new.object_key)
        .bind(&new.sha256)
        .bind(new.size_bytes)
        .bind(&old.sha256)
        .execute(&self.pool)
        .await?;
        self.record(new).await
    }
}
