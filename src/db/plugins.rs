//! The plugin registry's records: immutable plugin versions, and the history of bindings (the
//! newest row per application and resource is the active binding). Every change notifies
//! [`PLUGINS_CHANNEL`] in its transaction, so every replica reloads its bindings.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Row, Transaction, postgres::PgRow};

use super::DbError;
use crate::domain::{ANY_ORG, Application, BindingKey, OrgId, Resource};

/// The `LISTEN/NOTIFY` channel that tells replicas the bindings changed.
pub const PLUGINS_CHANNEL: &str = "export_plugins";

/// One stored plugin version.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PluginVersion {
    /// The plugin's name (from its `describe`).
    pub name: String,
    /// Its version (from its `describe`).
    pub version: String,
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// The component's size in bytes.
    pub size_bytes: i64,
    /// What `describe` said (resources, schemas, capabilities).
    #[schema(value_type = Object)]
    pub info: serde_json::Value,
    /// Where the component's bytes are in the object store.
    #[serde(skip)]
    pub object_key: String,
    /// When it was pushed.
    pub created_at: DateTime<Utc>,
    /// Who pushed it.
    pub created_by: String,
    /// How many test cases it carries.
    pub test_case_count: usize,
    /// The test cases (a JSON array), run before it is bound or applied.
    #[serde(skip)]
    pub test_cases: serde_json::Value,
}

/// What a binding change was. The first four decide which binding is in force; the canary
/// events are recorded beside them so one history tells the whole story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BindingAction {
    /// A version was bound (or bound again with another configuration).
    Bind,
    /// The binding was removed.
    Unbind,
    /// The previous version and configuration were bound again.
    Rollback,
    /// A canary's version and configuration became the binding.
    Promote,
    /// A canary started (its version and configuration; the binding stays).
    Canary,
    /// An operator ended a canary.
    Abort,
    /// The service ended a canary that failed more than the stable version (see `reason`).
    AutoRollback,
}

const ALL_ACTIONS: [BindingAction; 7] = [
    BindingAction::Bind,
    BindingAction::Unbind,
    BindingAction::Rollback,
    BindingAction::Promote,
    BindingAction::Canary,
    BindingAction::Abort,
    BindingAction::AutoRollback,
];

impl BindingAction {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Unbind => "unbind",
            Self::Rollback => "rollback",
            Self::Promote => "promote",
            Self::Canary => "canary",
            Self::Abort => "abort",
            Self::AutoRollback => "auto-rollback",
        }
    }

    fn parse(text: &str) -> Result<Self, DbError> {
        ALL_ACTIONS
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| DbError::Corrupt(format!("unknown binding action '{text}'")))
    }
}

/// The actions that change which binding is in force (SQL list).
const BINDING_ACTIONS: &str = "('bind', 'unbind', 'rollback', 'promote')";

/// One binding change (the newest per application, resource and organisation is in force).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BindingRecord {
    /// The change's sequence number.
    pub id: i64,
    /// What the change was.
    pub action: BindingAction,
    /// The application whose uploads it applies to.
    #[schema(value_type = String)]
    pub application: Application,
    /// The resource (`*` = every resource of the application).
    #[schema(value_type = String)]
    pub resource: Resource,
    /// The organisation whose uploads it applies to (`null` = every organisation).
    #[schema(value_type = Option<String>)]
    pub org_id: Option<OrgId>,
    /// How specific the binding is: `application`, `resource`, `org` or `org-resource`.
    #[schema(value_type = String)]
    pub scope: crate::domain::BindingScope,
    /// The plugin, or `None` when the binding was removed.
    pub plugin: Option<String>,
    /// The plugin's version.
    pub version: Option<String>,
    /// The version's digest (absent if the version was deleted since).
    pub digest: Option<String>,
    /// The configuration passed to the plugin.
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// Why, when the service made the change (an automatic rollback's figures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the change was made.
    pub created_at: DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
    /// Where the bound version's bytes are.
    #[serde(skip)]
    pub object_key: Option<String>,
}

impl BindingRecord {
    /// What the binding is for.
    pub fn key(&self) -> BindingKey {
        BindingKey::new(
            self.application.clone(),
            self.resource.clone(),
            self.org_id.clone(),
        )
    }
}

/// What storing a version did.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionStored {
    /// It is new.
    Created(PluginVersion),
    /// The same bytes were already stored under this name and version.
    AlreadyStored(PluginVersion),
    /// Other bytes are stored under this name and version (versions are immutable).
    Conflict(PluginVersion),
}

/// What a binding change did.
#[derive(Debug, Clone, PartialEq)]
pub enum BindOutcome {
    /// The change is recorded and in force.
    Bound(Box<BindingRecord>),
    /// The plugin has no such version.
    UnknownVersion,
    /// Nothing to roll back to.
    NoPrevious,
}

/// What deleting a version did.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionDeleted {
    /// Deleted; with the object keys no version uses any more (the component and its
    /// artefacts, when no other version has the same bytes).
    Deleted(Vec<String>),
    /// Refused: these bindings use it.
    Bound(Vec<BindingKey>),
    /// There is no such version.
    Unknown,
}

/// A binding to record.
#[derive(Debug, Clone)]
pub struct NewBinding<'a> {
    /// What it is for.
    pub key: &'a BindingKey,
    /// What the change is.
    pub action: BindingAction,
    /// Plugin name and version; `None` removes the binding.
    pub plugin: Option<(&'a str, &'a str)>,
    /// Configuration for the plugin.
    pub config: Option<&'a serde_json::Value>,
    /// Why, when the service makes the change.
    pub reason: Option<&'a str>,
    /// Who asks.
    pub by: &'a str,
}

const BINDING_COLUMNS: &str = "b.id, b.action, b.application, b.resource, b.org_id, b.plugin_name, \
     b.plugin_version, b.config, b.reason, b.created_at, b.created_by, v.digest, v.object_key";

/// The registry's tables.
#[derive(Debug, Clone)]
pub struct PluginRepository {
    pool: PgPool,
}

impl PluginRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The canaries' records, in the same database.
    pub fn canaries(&self) -> super::canaries::CanaryRepository {
        super::canaries::CanaryRepository::new(self.pool.clone())
    }

    /// The records of compiled artefacts, in the same database.
    pub fn artefacts(&self) -> super::artefacts::ArtefactRepository {
        super::artefacts::ArtefactRepository::new(self.pool.clone())
    }

    /// Records a version whose bytes are already at `object_key`.
    pub async fn store_version(&self, version: &PluginVersion) -> Result<VersionStored, DbError> {
        let inserted = sqlx::query(
            "INSERT INTO plugin_versions \
                 (name, version, digest, size_bytes, info, object_key, created_by, test_cases) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (name, version) DO NOTHING \
             RETURNING name, version, digest, size_bytes, info, object_key, created_at, \
                 created_by, test_cases",
        )
        .bind(&version.name)
        .bind(&version.version)
        .bind(&version.digest)
        .bind(version.size_bytes)
        .bind(&version.info)
        .bind(&version.object_key)
        .bind(&version.created_by)
        .bind(&version.test_cases)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = inserted {
            return Ok(VersionStored::Created(version_from_row(&row)?));
        }
        let existing = self
            .version(&version.name, &version.version)
            .await?
            .ok_or_else(|| DbError::Corrupt("a conflicting version vanished".into()))?;
        Ok(if existing.digest == version.digest {
            VersionStored::AlreadyStored(existing)
        } else {
            VersionStored::Conflict(existing)
        })
    }

    /// One version.
    pub async fn version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<PluginVersion>, DbError> {
        let row = sqlx::query(
            "SELECT name, version, digest, size_bytes, info, object_key, created_at, created_by, \
                 test_cases \
             FROM plugin_versions WHERE name = $1 AND version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// Every version (of one plugin when `name` is given), by name then newest first.
    pub async fn versions(&self, name: Option<&str>) -> Result<Vec<PluginVersion>, DbError> {
        let rows = sqlx::query(
            "SELECT name, version, digest, size_bytes, info, object_key, created_at, created_by, \
                 test_cases \
             FROM plugin_versions WHERE $1::text IS NULL OR name = $1 \
             ORDER BY name, created_at DESC, version",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Whether another version has the same bytes.
    async fn digest_used(
        transaction: &mut Transaction<'_, Postgres>,
        digest: &str,
    ) -> Result<bool, DbError> {
        Ok(
            sqlx::query("SELECT 1 FROM plugin_versions WHERE digest = $1 LIMIT 1")
                .bind(digest)
                .fetch_optional(&mut **transaction)
                .await?
                .is_some(),
        )
    }

    /// Deletes a version unless an active binding uses it.
    pub async fn delete_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<VersionDeleted, DbError> {
        let mut transaction = self.pool.begin().await?;
        lock_registry(&mut transaction).await?;
        // The bindings in force that use it, and the running canaries that do.
        let bound: Vec<BindingKey> = sqlx::query(&format!(
            "{ACTIVE} SELECT application, resource, org_id FROM active \
             WHERE plugin_name = $1 AND plugin_version = $2 \
             UNION SELECT application, resource, '*' FROM plugin_canaries \
             WHERE plugin_name = $1 AND plugin_version = $2 AND state = 'running' \
             ORDER BY application, resource, org_id"
        ))
        .bind(name)
        .bind(version)
        .fetch_all(&mut *transaction)
        .await?
        .iter()
        .map(key_from_row)
        .collect::<Result<_, DbError>>()?;
        if !bound.is_empty() {
            return Ok(VersionDeleted::Bound(bound));
        }
        let deleted = sqlx::query(
            "DELETE FROM plugin_versions WHERE name = $1 AND version = $2 \
             RETURNING digest, object_key",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(deleted) = deleted else {
            return Ok(VersionDeleted::Unknown);
        };
        let digest: String = deleted.try_get("digest")?;
        let mut orphans = Vec::new();
        if !Self::digest_used(&mut transaction, &digest).await? {
            orphans.push(deleted.try_get("object_key")?);
            let artefacts =
                sqlx::query("DELETE FROM plugin_artefacts WHERE digest = $1 RETURNING object_key")
                    .bind(&digest)
                    .fetch_all(&mut *transaction)
                    .await?;
            for artefact in artefacts {
                orphans.push(artefact.try_get("object_key")?);
            }
        }
        transaction.commit().await?;
        Ok(VersionDeleted::Deleted(orphans))
    }

    /// Records a binding change and notifies every replica.
    pub async fn bind(&self, binding: &NewBinding<'_>) -> Result<BindOutcome, DbError> {
        let mut transaction = self.pool.begin().await?;
        lock_registry(&mut transaction).await?;
        let outcome = record_binding(&mut transaction, binding).await?;
        transaction.commit().await?;
        Ok(outcome)
    }

    /// Binds the application's previous plugin version (and configuration) again.
    pub async fn rollback(&self, key: &BindingKey, by: &str) -> Result<BindOutcome, DbError> {
        let mut transaction = self.pool.begin().await?;
        lock_registry(&mut transaction).await?;
        let history = sqlx::query(&format!(
            "SELECT plugin_name, plugin_version, config FROM plugin_bindings \
             WHERE application = $1 AND resource = $2 AND org_id = $3 \
               AND action IN {BINDING_ACTIONS} \
             ORDER BY id DESC LIMIT 100"
        ))
        .bind(key.application.as_str())
        .bind(key.resource.as_str())
        .bind(key.org_column())
        .fetch_all(&mut *transaction)
        .await?;
        type Entry = (Option<String>, Option<String>, Option<serde_json::Value>);
        let entries: Vec<Entry> = history
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("plugin_name")?,
                    row.try_get("plugin_version")?,
                    row.try_get("config")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        // The newest earlier state that differs from the current one.
        let Some((current, earlier)) = entries.split_first() else {
            return Ok(BindOutcome::NoPrevious);
        };
        let Some(previous) = earlier.iter().find(|entry| *entry != current) else {
            return Ok(BindOutcome::NoPrevious);
        };
        let plugin = previous.0.as_deref().zip(previous.1.as_deref());
        let outcome = record_binding(
            &mut transaction,
            &NewBinding {
                key,
                action: BindingAction::Rollback,
                plugin,
                config: previous.2.as_ref(),
                reason: None,
                by,
            },
        )
        .await?;
        transaction.commit().await?;
        Ok(outcome)
    }

    /// The bindings in force (removed ones left out), by application, resource and organisation.
    pub async fn active_bindings(&self) -> Result<Vec<BindingRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "{ACTIVE} SELECT {} FROM active b \
             LEFT JOIN plugin_versions v \
               ON v.name = b.plugin_name AND v.version = b.plugin_version \
             WHERE b.plugin_name IS NOT NULL ORDER BY b.application, b.resource, b.org_id",
            BINDING_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(binding_from_row).collect()
    }

    /// Every binding change of an application (of one resource, one organisation's bindings —
    /// [`ANY_ORG`] for those of every organisation — when given), newest first.
    pub async fn history(
        &self,
        application: &Application,
        resource: Option<&Resource>,
        org: Option<&str>,
    ) -> Result<Vec<BindingRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM plugin_bindings b \
             LEFT JOIN plugin_versions v \
               ON v.name = b.plugin_name AND v.version = b.plugin_version \
             WHERE b.application = $1 AND ($2::text IS NULL OR b.resource = $2) \
               AND ($3::text IS NULL OR b.org_id = $3) \
             ORDER BY b.id DESC LIMIT 1000",
            BINDING_COLUMNS
        ))
        .bind(application.as_str())
        .bind(resource.map(Resource::as_str))
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(binding_from_row).collect()
    }
}

/// The newest binding change per application, resource and organisation (canary events are
/// history, not bindings).
const ACTIVE: &str = "WITH active AS ( \
     SELECT DISTINCT ON (application, resource, org_id) * FROM plugin_bindings \
     WHERE action IN ('bind', 'unbind', 'rollback', 'promote') \
     ORDER BY application, resource, org_id, id DESC)";

/// Serialises registry changes (a binding cannot race a deletion of its version).
pub(super) async fn lock_registry(
    transaction: &mut Transaction<'_, Postgres>,
) -> Result<(), DbError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('export_plugins'))")
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// Records one change of the history (checking the version exists) and notifies every replica.
pub(super) async fn record_binding(
    transaction: &mut Transaction<'_, Postgres>,
    binding: &NewBinding<'_>,
) -> Result<BindOutcome, DbError> {
    if let Some((name, version)) = binding.plugin {
        let known = sqlx::query("SELECT 1 FROM plugin_versions WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(&mut **transaction)
            .await?;
        if known.is_none() {
            return Ok(BindOutcome::UnknownVersion);
        }
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO plugin_bindings \
             (application, resource, org_id, action, plugin_name, plugin_version, config, \
              reason, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(binding.key.application.as_str())
    .bind(binding.key.resource.as_str())
    .bind(binding.key.org_column())
    .bind(binding.action.as_str())
    .bind(binding.plugin.map(|(name, _)| name))
    .bind(binding.plugin.map(|(_, version)| version))
    .bind(binding.config)
    .bind(binding.reason)
    .bind(binding.by)
    .fetch_one(&mut **transaction)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(PLUGINS_CHANNEL)
        .bind(id.to_string())
        .execute(&mut **transaction)
        .await?;
    let row = sqlx::query(&format!(
        "SELECT {} FROM plugin_bindings b \
         LEFT JOIN plugin_versions v \
           ON v.name = b.plugin_name AND v.version = b.plugin_version \
         WHERE b.id = $1",
        BINDING_COLUMNS
    ))
    .bind(id)
    .fetch_one(&mut **transaction)
    .await?;
    Ok(BindOutcome::Bound(Box::new(binding_from_row(&row)?)))
}

fn version_from_row(row: &PgRow) -> Result<PluginVersion, DbError> {
    let test_cases: serde_json::Value = row.try_get("test_cases")?;
    Ok(PluginVersion {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        size_bytes: row.try_get("size_bytes")?,
        info: row.try_get("info")?,
        object_key: row.try_get("object_key")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        test_case_count: test_cases.as_array().map_or(0, Vec::len),
        test_cases,
    })
}

pub(super) fn key_from_row(row: &PgRow) -> Result<BindingKey, DbError> {
    let org: String = row.try_get("org_id")?;
    Ok(BindingKey::new(
        Application::from(row.try_get::<String, _>("application")?),
        Resource::from(row.try_get::<String, _>("resource")?),
        (org != ANY_ORG).then(|| OrgId::from(org)),
    ))
}

fn binding_from_row(row: &PgRow) -> Result<BindingRecord, DbError> {
    let key = key_from_row(row)?;
    Ok(BindingRecord {
        id: row.try_get("id")?,
        action: BindingAction::parse(&row.try_get::<String, _>("action")?)?,
        scope: key.scope(),
        application: key.application,
        resource: key.resource,
        org_id: key.org,
        plugin: row.try_get("plugin_name")?,
        version: row.try_get("plugin_version")?,
        digest: row.try_get("digest")?,
        config: row.try_get("config")?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        object_key: row.try_get("object_key")?,
    })
}
