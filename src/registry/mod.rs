//! The plugin registry: operators push immutable plugin versions (checked before they are
//! accepted, bytes kept in the object store by digest, records in PostgreSQL) and bind
//! applications to them; every replica applies the bindings ([`sync`]).

pub mod artefacts;
pub mod binding;
pub mod canary;
pub mod cases;
pub mod directory;
pub mod sync;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::EnabledApps;
use crate::db::DbError;
use crate::db::plugins::{
    BindOutcome, BindingAction, BindingRecord, NewBinding, PluginRepository, PluginVersion,
    VersionDeleted, VersionStored,
};
use crate::domain::{BindingKey, Format};
use crate::registry::artefacts::{Artefacts, LoadSource};
use crate::registry::binding::{ANY_RESOURCE, Binding, BindingError, LiveBindings};
use crate::registry::cases::{CaseRunner, TestCase};
use crate::storage::ObjectStore;
use export_plugin_host::tool::{SessionError, run_session};
use export_plugin_host::{DataFormat, LoadedPlugin, PluginFailure, SessionOptions, Violation};

/// Where component bytes live in the object store (by digest, so equal bytes are stored once).
pub const COMPONENT_PREFIX: &str = "_plugins/sha256/";

/// The object key of the component with this digest.
pub fn component_key(digest: &str) -> String {
    format!("{COMPONENT_PREFIX}{digest}.wasm")
}

/// Why a registry operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The component cannot be used (not a component, wrong world, ungranted import, `describe`
    /// failed, or its name or version is unusable).
    #[error("the component was refused: {0}")]
    Refused(String),
    /// The optional self-test did not pass.
    #[error("the self-test failed: {reason}")]
    SelfTest {
        /// Why.
        reason: String,
        /// The violations the plugin reported on the sample.
        violations: Vec<Violation>,
    },
    /// Other bytes are stored under this name and version.
    #[error(
        "{name} {version} already exists with another digest ({digest}); versions are immutable, push a new version"
    )]
    VersionExists {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// The stored digest.
        digest: String,
    },
    /// No such plugin version.
    #[error("plugin {name} has no version {version}")]
    UnknownVersion {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
    },
    /// The application (or resource) is not one the service exports.
    #[error("{0}")]
    UnknownTarget(String),
    /// The binding's configuration is unusable.
    #[error("the configuration is refused: {0}")]
    BadConfig(#[from] BindingError),
    /// Nothing to roll back to.
    #[error("{key} has no earlier binding to roll back to{hint}")]
    NoPrevious {
        /// The binding asked for.
        key: BindingKey,
        /// Where the application is bound instead, if anywhere (see [`scope_hint`]).
        hint: String,
    },
    /// Nothing is bound where an unbind asked.
    #[error("{key} is not bound{hint}")]
    NotBound {
        /// The binding asked for.
        key: BindingKey,
        /// Where the application is bound instead, if anywhere (see [`scope_hint`]).
        hint: String,
    },
    /// The version is bound and cannot be deleted.
    #[error("{name} {version} is bound to {bindings}; bind another version first")]
    InUse {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// The bindings, as `application/resource` (and `for org …`), comma-separated.
        bindings: String,
    },
    /// The canary's audience or policy is unusable.
    #[error("the canary is refused: {0}")]
    BadCanary(String),
    /// A canary already runs there.
    #[error("a canary of {plugin} {version} already runs on {key}; promote or abort it first")]
    CanaryRunning {
        /// Where.
        key: BindingKey,
        /// Its plugin.
        plugin: String,
        /// Its version.
        version: String,
    },
    /// No canary runs there.
    #[error("no canary runs on {key} (name the resource with --resource or ?resource=)")]
    NoCanary {
        /// Where one was asked for.
        key: BindingKey,
    },
    /// The version fails its test cases (at push, or on this replica's engine before a bind).
    #[error("{name} {version} fails its test cases: {failures}")]
    TestCases {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// How each failing case differs, `; `-separated.
        failures: String,
    },
    /// The same bytes are stored under this name and version with other test cases.
    #[error(
        "{name} {version} is already stored with other test cases; versions are immutable, push \
         a new version"
    )]
    CasesDiffer {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(String),
}

/// Where `key`'s application is bound at other scopes, for an operator who named the wrong
/// one: empty when nowhere else. Lists a few, then how many more.
fn scope_hint(active: &[BindingRecord], key: &BindingKey) -> String {
    const SHOWN: usize = 5;
    let elsewhere: Vec<String> = active
        .iter()
        .filter(|bound| bound.application == key.application && bound.key() != *key)
        .map(|bound| bound.key().to_string())
        .collect();
    if elsewhere.is_empty() {
        return String::new();
    }
    let more = elsewhere.len().saturating_sub(SHOWN);
    let mut listed = elsewhere[..elsewhere.len().min(SHOWN)].join(", ");
    if more > 0 {
        listed.push_str(&format!(" and {more} more"));
    }
    format!(
        "; {} is bound as {listed} — name that scope (--resource and --org in the CLI, \
         ?resource= and ?org_id= in the API)",
        key.application
    )
}

/// A sample to run a pushed component on before accepting it.
#[derive(Debug, Clone)]
pub struct SelfTest {
    /// The sample's bytes.
    pub input: Vec<u8>,
    /// Its format.
    pub from: Format,
    /// The format to produce.
    pub to: Format,
    /// The configuration to run with (JSON text).
    pub config: Option<String>,
}

/// What a self-test produced.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SelfTestReport {
    /// Bytes of output.
    pub output_bytes: u64,
    /// Time inside the plugin, in milliseconds.
    pub guest_ms: f64,
}

/// A pushed version, and whether it was new.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The stored version.
    pub version: PluginVersion,
    /// `false` when exactly these bytes were already stored under this name and version.
    pub created: bool,
    /// The self-test's figures, if one ran.
    pub self_test: Option<SelfTestReport>,
}

/// The registry's operations.
#[derive(Debug, Clone)]
pub struct Registry {
    repository: PluginRepository,
    store: ObjectStore,
    bindings: Arc<LiveBindings>,
    applications: EnabledApps,
    max_component_bytes: usize,
    cases: Arc<dyn CaseRunner>,
    artefacts: Artefacts,
}

impl Registry {
    /// A registry storing records with `repository` and bytes in `store`, compiling with the host
    /// of `bindings` (or loading the fleet's `artefacts`) and running test cases with `cases`.
    pub fn new(
        repository: PluginRepository,
        store: ObjectStore,
        bindings: Arc<LiveBindings>,
        applications: EnabledApps,
        max_component_bytes: usize,
        cases: Arc<dyn CaseRunner>,
        artefacts: Artefacts,
    ) -> Self {
        Self {
            repository,
            store,
            bindings,
            applications,
            max_component_bytes,
            cases,
            artefacts,
        }
    }

    /// The live bindings this registry feeds.
    pub fn bindings(&self) -> &Arc<LiveBindings> {
        &self.bindings
    }

    /// The records.
    pub fn repository(&self) -> &PluginRepository {
        &self.repository
    }

    /// Compiles and checks `bytes`, runs the self-test and the test cases if any, stores the
    /// bytes and records the version (its name and version from `describe`) with its cases.
    pub async fn push(
        &self,
        bytes: Vec<u8>,
        self_test: Option<SelfTest>,
        cases: Vec<TestCase>,
        by: &str,
    ) -> Result<Pushed, RegistryError> {
        if cases.len() > cases::MAX_CASES {
            return Err(RegistryError::Refused(format!(
                "{} test cases; a version carries at most {}",
                cases.len(),
                cases::MAX_CASES
            )));
        }
        let host = self.bindings.host.clone();
        let bytes = Arc::new(bytes);
        let compiling = bytes.clone();
        let (plugin, report) = tokio::task::spawn_blocking(move || {
            let plugin = host
                .load(&compiling)
                .map_err(|failure| RegistryError::Refused(refusal(failure)))?;
            let report = self_test
                .map(|test| run_self_test(&host, &plugin, test))
                .transpose()?;
            Ok::<_, RegistryError>((plugin, report))
        })
        .await
        .map_err(|error| RegistryError::Refused(format!("the check crashed: {error}")))??;
        check_identity(&plugin)?;
        let failures = cases::run_all(&*self.cases, &self.bindings.host, &plugin, &cases).await;
        if !failures.is_empty() {
            return Err(RegistryError::TestCases {
                name: plugin.info.name.clone(),
                version: plugin.info.version.clone(),
                failures: failures.join("; "),
            });
        }
        let test_cases = serde_json::to_value(&cases)
            .map_err(|error| RegistryError::Refused(error.to_string()))?;
        let key = component_key(&plugin.digest);
        let mut reader: &[u8] = &bytes;
        self.store
            .put(&key, &mut reader, "application/wasm")
            .await
            .map_err(|error| RegistryError::Store(error.to_string()))?;
        let info = serde_json::to_value(describe_json(&plugin))
            .map_err(|error| RegistryError::Refused(error.to_string()))?;
        let record = PluginVersion {
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            digest: plugin.digest.clone(),
            size_bytes: bytes.len() as i64,
            info,
            object_key: key,
            created_at: chrono::Utc::now(),
            created_by: by.to_owned(),
            test_case_count: cases.len(),
            test_cases,
        };
        let stored = self.repository.store_version(&record).await?;
        if matches!(
            stored,
            VersionStored::Created(_) | VersionStored::AlreadyStored(_)
        ) {
            // Compiled here once: the other replicas load this artefact instead.
            self.artefacts
                .keep(&self.bindings.host, &plugin, None)
                .await;
        }
        match stored {
            VersionStored::Created(version) => Ok(Pushed {
                version,
                created: true,
                self_test: report,
            }),
            VersionStored::AlreadyStored(version) if version.test_cases != record.test_cases => {
                Err(RegistryError::CasesDiffer {
                    name: version.name,
                    version: version.version,
                })
            }
            VersionStored::AlreadyStored(version) => Ok(Pushed {
                version,
                created: false,
                self_test: report,
            }),
            VersionStored::Conflict(existing) => Err(RegistryError::VersionExists {
                name: existing.name,
                version: existing.version,
                digest: existing.digest,
            }),
        }
    }

    /// Binds `key` (an application, one resource or `*`, one organisation or all) to a stored
    /// version with `config`, after checking the configuration against the plugin on this
    /// replica.
    pub async fn bind(
        &self,
        key: &BindingKey,
        name: &str,
        version: &str,
        config: Option<serde_json::Value>,
        by: &str,
    ) -> Result<BindingRecord, RegistryError> {
        self.check_target(key)?;
        if let Some(config) = &config
            && !config.is_object()
        {
            return Err(RegistryError::BadConfig(BindingError::NotAnObject));
        }
        let unknown = || RegistryError::UnknownVersion {
            name: name.to_owned(),
            version: version.to_owned(),
        };
        let plugin = self.load_version(name, version).await?;
        self.check_binding(plugin, config.as_ref())?;
        let outcome = self
            .repository
            .bind(&NewBinding {
                key,
                action: BindingAction::Bind,
                plugin: Some((name, version)),
                config: config.as_ref(),
                reason: None,
                by,
            })
            .await?;
        match outcome {
            BindOutcome::Bound(record) => Ok(*record),
            BindOutcome::UnknownVersion => Err(unknown()),
            BindOutcome::NoPrevious => unreachable_outcome(),
        }
    }

    /// Removes the binding `key`.
    pub async fn unbind(&self, key: &BindingKey, by: &str) -> Result<BindingRecord, RegistryError> {
        let active = self.repository.active_bindings().await?;
        if !active.iter().any(|bound| bound.key() == *key) {
            return Err(RegistryError::NotBound {
                key: key.clone(),
                hint: scope_hint(&active, key),
            });
        }
        let outcome = self
            .repository
            .bind(&NewBinding {
                key,
                action: BindingAction::Unbind,
                plugin: None,
                config: None,
                reason: None,
                by,
            })
            .await?;
        match outcome {
            BindOutcome::Bound(record) => Ok(*record),
            _ => unreachable_outcome(),
        }
    }

    /// Binds the previous version (and configuration) of the binding `key` again.
    pub async fn rollback(
        &self,
        key: &BindingKey,
        by: &str,
    ) -> Result<BindingRecord, RegistryError> {
        match self.repository.rollback(key, by).await? {
            BindOutcome::Bound(record) => Ok(*record),
            BindOutcome::NoPrevious => Err(RegistryError::NoPrevious {
                key: key.clone(),
                hint: scope_hint(&self.repository.active_bindings().await?, key),
            }),
            BindOutcome::UnknownVersion => Err(RegistryError::UnknownTarget(format!(
                "the previous binding of {key} uses a version that was deleted"
            ))),
        }
    }

    /// Deletes a version that no binding uses (and its bytes, unless another version has them).
    pub async fn delete(&self, name: &str, version: &str) -> Result<(), RegistryError> {
        match self.repository.delete_version(name, version).await? {
            VersionDeleted::Deleted(orphans) => {
                for key in orphans {
                    if let Err(error) = self.store.delete(&key).await {
                        // The record is gone; an orphaned object only costs space.
                        tracing::warn!(%key, %error, "could not delete a plugin component");
                    }
                }
                Ok(())
            }
            VersionDeleted::Bound(bindings) => Err(RegistryError::InUse {
                name: name.to_owned(),
                version: version.to_owned(),
                bindings: bindings
                    .iter()
                    .map(BindingKey::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            VersionDeleted::Unknown => Err(RegistryError::UnknownVersion {
                name: name.to_owned(),
                version: version.to_owned(),
            }),
        }
    }

    /// The stored version `name` `version`, compiled on this replica and passing its test
    /// cases on this replica's engine.
    pub async fn load_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Arc<LoadedPlugin>, RegistryError> {
        let stored = self
            .repository
            .version(name, version)
            .await?
            .ok_or_else(|| RegistryError::UnknownVersion {
                name: name.to_owned(),
                version: version.to_owned(),
            })?;
        let plugin = self.load(&stored.digest, &stored.object_key).await?;
        let cases: Vec<TestCase> = serde_json::from_value(stored.test_cases).map_err(|error| {
            DbError::Corrupt(format!("test cases of {name} {version}: {error}"))
        })?;
        let failures = cases::run_all(&*self.cases, &self.bindings.host, &plugin, &cases).await;
        if failures.is_empty() {
            Ok(plugin)
        } else {
            Err(RegistryError::TestCases {
                name: name.to_owned(),
                version: version.to_owned(),
                failures: format!("{} (on this replica)", failures.join("; ")),
            })
        }
    }

    /// The compiled plugin with `digest`: from the host's cache, else from the fleet's
    /// artefact, else fetched from the object store, checked against its digest and compiled
    /// (and its artefact stored for the fleet).
    pub async fn load(
        &self,
        digest: &str,
        object_key: &str,
    ) -> Result<Arc<LoadedPlugin>, RegistryError> {
        let host = &self.bindings.host;
        if let Some(plugin) = host.cached(digest) {
            return Ok(plugin);
        }
        let broken = match self.artefacts.load(host, digest).await {
            Ok(Some(plugin)) => return Ok(plugin),
            Ok(None) => None,
            Err(broken) => Some(broken),
        };
        let bytes = self
            .store
            .get_all(object_key, self.max_component_bytes)
            .await
            .map_err(|error| RegistryError::Store(error.to_string()))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != digest {
            return Err(RegistryError::Refused(format!(
                "the stored component {object_key} has digest {actual}, not {digest}"
            )));
        }
        let compiling = host.clone();
        let plugin = tokio::task::spawn_blocking(move || compiling.load(&bytes))
            .await
            .map_err(|error| RegistryError::Refused(format!("compiling crashed: {error}")))?
            .map_err(|failure| RegistryError::Refused(refusal(failure)))?;
        self.artefacts.count(LoadSource::Compiled);
        self.artefacts.keep(host, &plugin, broken).await;
        Ok(plugin)
    }

    /// Checks a binding of `plugin` with `config` before it is recorded: its schemas compile
    /// and its limits are within what this service allows.
    pub(crate) fn check_binding(
        &self,
        plugin: Arc<LoadedPlugin>,
        config: Option<&serde_json::Value>,
    ) -> Result<Binding, RegistryError> {
        let binding = Binding::new(plugin, config.map(serde_json::Value::to_string))?;
        binding
            .limits
            .check(&self.bindings.ceilings)
            .map_err(BindingError::from)?;
        Ok(binding)
    }

    fn check_org(&self, org: &crate::domain::OrgId) -> Result<(), RegistryError> {
        if plain_org(org.as_str()) {
            return Ok(());
        }
        Err(RegistryError::UnknownTarget(format!(
            "org_id '{org}' must be 1 to 64 letters, digits, '-' or '_' (the tenant's org_id as \
             in its identity)"
        )))
    }

    fn check_target(&self, key: &BindingKey) -> Result<(), RegistryError> {
        let BindingKey {
            application,
            resource,
            org,
        } = key;
        if let Some(org) = org {
            self.check_org(org)?;
        }
        let Some(resources) = self.applications.resources(application.as_str()) else {
            return Err(RegistryError::UnknownTarget(format!(
                "application '{application}' is not one the service exports (EXPORT_ENABLE_APPS)"
            )));
        };
        if resource.as_str() != ANY_RESOURCE && !resources.contains(resource.as_str()) {
            return Err(RegistryError::UnknownTarget(format!(
                "application '{application}' has no resource '{resource}'"
            )));
        }
        Ok(())
    }
}

/// Organisation ids are numeric upstream; anything plain is accepted, `*` (every organisation)
/// is not one.
fn plain_org(org: &str) -> bool {
    !org.is_empty()
        && org.len() <= 64
        && org
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

fn unreachable_outcome<T>() -> Result<T, RegistryError> {
    Err(RegistryError::Db(DbError::Corrupt(
        "unexpected binding outcome".into(),
    )))
}

/// The reason a component was refused, without the "plugin rejected:" prefix.
fn refusal(failure: PluginFailure) -> String {
    match failure {
        PluginFailure::Invalid(reason) => reason,
        other => other.to_string(),
    }
}

/// Names and versions end up in object keys, metrics and URLs: keep them plain.
fn check_identity(plugin: &LoadedPlugin) -> Result<(), RegistryError> {
    let plain = |text: &str| {
        !text.is_empty()
            && text.len() <= 64
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
    };
    for (what, value) in [
        ("name", &plugin.info.name),
        ("version", &plugin.info.version),
    ] {
        if !plain(value) {
            return Err(RegistryError::Refused(format!(
                "its {what} '{value}' must be 1 to 64 letters, digits, '-', '_', '.' or '+'"
            )));
        }
    }
    Ok(())
}

fn run_self_test(
    host: &export_plugin_host::PluginHost,
    plugin: &Arc<LoadedPlugin>,
    test: SelfTest,
) -> Result<SelfTestReport, RegistryError> {
    let options = SessionOptions {
        application: "self-test".into(),
        resource: "self-test".into(),
        input_format: DataFormat::from(test.from),
        output_format: DataFormat::from(test.to),
        config: test.config,
    };
    let mut input: &[u8] = &test.input;
    let run = run_session(host, plugin, &options, &mut input).map_err(|error| match error {
        SessionError::Plugin(PluginFailure::Rejected { violations, .. }) => {
            RegistryError::SelfTest {
                reason: "the plugin rejected the sample".into(),
                violations,
            }
        }
        other => RegistryError::SelfTest {
            reason: other.to_string(),
            violations: Vec::new(),
        },
    })?;
    if !run.violations.is_empty() {
        return Err(RegistryError::SelfTest {
            reason: format!("{} violation(s) in the sample", run.violations.len()),
            violations: run.violations,
        });
    }
    Ok(SelfTestReport {
        output_bytes: run.output.len() as u64,
        guest_ms: run.session.guest_time().as_secs_f64() * 1000.0,
    })
}

/// What `describe` said, as stored with the version.
fn describe_json(plugin: &LoadedPlugin) -> serde_json::Value {
    let info = &plugin.info;
    serde_json::json!({
        "name": info.name,
        "version": info.version,
        "resources": info.resources.iter().map(|resource| serde_json::json!({
            "name": resource.name,
            "schema": resource.schema,
        })).collect::<Vec<_>>(),
        "capabilities": {
            "validate": info.capabilities.validate,
            "transform": info.capabilities.transform,
            "convert": info.capabilities.convert,
        },
    })
}
