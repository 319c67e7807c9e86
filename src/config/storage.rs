//! Settings of the data path: object storage, the internal API's keys and limits, packaging and
//! the cleaner.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, PskConfig, Reader, Secret, invalid};

/// Where objects (uploads and archives) are kept.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// A local directory (the default when no S3 endpoint is configured).
    Local {
        /// The root directory.
        root: PathBuf,
    },
    /// An S3 or S3-compatible server.
    S3(S3Config),
}

/// S3 connection settings.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL for S3-compatible servers; `None` = AWS.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` when unset).
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Static credentials; `None` = the AWS default chain (environment, profile, IRSA, IMDS).
    pub credentials: Option<(String, Secret<String>)>,
    /// Path-style addressing (needed by most S3-compatible servers).
    pub path_style: bool,
    /// Create the bucket at start-up if missing (development).
    pub create_bucket: bool,
    /// The longest one S3 call may take from start to response head, retries included; a
    /// hung store frees the worker after it (`S3_OPERATION_TIMEOUT`).
    pub operation_timeout: Duration,
    /// The longest wait for the next bytes of a response body, or for the response head of
    /// one attempt (`S3_READ_TIMEOUT`).
    pub read_timeout: Duration,
}

/// How objects are laid out and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLayout {
    /// Template of a source's object key; `{org_id}`, `{export_id}`, `{source_id}`, `{format}`.
    pub source_key_template: String,
    /// Multipart part size in bytes (upstream `AWS_UPLOADER_BUFFER_SIZE`).
    pub part_size: usize,
}

/// How a tenant's download reaches the archive (`DOWNLOAD_REDIRECT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadRedirect {
    /// The service streams the archive itself, as the upstream does (`stream`, the default).
    Stream,
    /// `GET /exports/{id}` answers 302 to a presigned URL of the archive, made for that request
    /// and valid for `expires_in` (`DOWNLOAD_URL_EXPIRY`); the bytes then go from the store to
    /// the tenant directly. Stores that cannot presign (the local directory) stream instead.
    Presigned {
        /// How long the URL stays valid.
        expires_in: Duration,
    },
}

/// The longest validity of a presigned URL that S3's signature version 4 accepts (7 days).
pub const MAX_PRESIGNED_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

pub(super) fn download_redirect(reader: &Reader<'_>) -> Result<DownloadRedirect, ConfigError> {
    let expires_in = positive(reader, "DOWNLOAD_URL_EXPIRY", 300)?;
    if expires_in > MAX_PRESIGNED_EXPIRY {
        return Err(invalid(
            "DOWNLOAD_URL_EXPIRY",
            "must be at most 168h (7 days, the longest a presigned S3 URL may be valid)".into(),
        ));
    }
    let mode = reader
        .0
        .get("DOWNLOAD_REDIRECT")
        .map(|mode| mode.trim().to_ascii_lowercase());
    match mode.as_deref() {
        None | Some("stream") => Ok(DownloadRedirect::Stream),
        Some("presigned") => Ok(DownloadRedirect::Presigned { expires_in }),
        Some(other) => Err(invalid(
            "DOWNLOAD_REDIRECT",
            format!("expected 'stream' or 'presigned', got '{other}'"),
        )),
    }
}

/// Limits and timings of uploads, packaging and cleaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPathConfig {
    /// The largest upload, in bytes (`MAX_PAYLOAD_SIZE` is in MiB).
    pub max_payload_bytes: u64,
    /// The most bytes stored for one source once converted (or given by its plugin):
    /// `MAX_PAYLOAD_SIZE` × `MAX_STORED_EXPANSION`.
    pub max_stored_bytes: u64,
    /// How long one upload may hold its source before another attempt may take over.
    pub upload_lease: Duration,
    /// How long a packaging job is reserved for its worker before another re-drives it.
    pub package_lease: Duration,
    /// The longest wait between two attempts at packaging an export that failed transiently.
    pub package_retry_max_delay: Duration,
    /// How long packaging may keep failing transiently before the export fails; `None` = for
    /// as long as the export lives.
    pub package_max_age: Option<Duration>,
    /// DEFLATE level of archive entries (0 = stored, 1 fastest … 9 smallest).
    pub compression_level: u32,
    /// Whether this replica runs a packaging worker (API-only replicas can opt out).
    pub packaging_worker: bool,
    /// Uploads one replica accepts at once; more get 503 with `Retry-After`.
    pub max_concurrent_uploads: usize,
    /// Of those, the uploads one application may hold at once (so it cannot starve others).
    pub max_uploads_per_application: usize,
    /// The longest one upload may take from its first byte to its last, however steadily it
    /// trickles in.
    pub upload_max_duration: Duration,
    /// Directory of `<application>.wasm` plugins (and `<application>.json` configs).
    pub plugins_dir: Option<PathBuf>,
    /// Limits of plugin sessions.
    pub plugin_limits: export_plugin_host::PluginLimits,
    /// How often the in-process cleaner runs; `None` = only `export-service clean`.
    pub cleaner_interval: Option<Duration>,
    /// How long after `expires_at` an export's rows and objects are deleted.
    pub cleaner_grace: Duration,
    /// Sources that have not answered this long after creation are failed; `None` = never.
    pub source_timeout: Option<Duration>,
    /// How long audit records are kept (`AUDIT_RETENTION`).
    pub audit_retention: Duration,
}

const MIB: usize = 1024 * 1024;

/// Default multipart part size: the smallest S3 allows, so that the default upload slots fit a
/// 512 MiB container (docs/OPERATIONS.md, "Sizing"). Objects are limited to 10 000 parts.
const DEFAULT_PART_SIZE: usize = 5 * MIB;

/// Default upload slots of one replica (each holds two parts and, if its application is bound
/// to a plugin, a plugin session).
const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 4;

/// The default of `MAX_STORED_EXPANSION`. CSV→JSON repeats every field name in every record:
/// records of ordinary width (the demo's hosts and events, the benchmark samples, inventory-like
/// hosts with UUIDs and timestamps) store about 1.8 times the uploaded bytes, JSON→CSV about 0.56.
/// Only narrow columns under long names go further (one-digit flags under 20-character names:
/// about 7.5) and those still pass up to an upload of about half `MAX_PAYLOAD_SIZE`; a long name over
/// one-byte rows (hundreds of times) is what the limit stops. 4 keeps twice the ordinary need
/// while a 500 MiB upload stores at most 2 GiB.
pub const DEFAULT_STORED_EXPANSION: f64 = 4.0;

/// `MAX_PAYLOAD_SIZE` when unset, in MiB (the upstream's default).
pub const DEFAULT_MAX_PAYLOAD_MIB: u64 = 500;

/// The placeholders a source key template may use.
const PLACEHOLDERS: [&str; 4] = ["{org_id}", "{export_id}", "{source_id}", "{format}"];

pub(super) fn store_config(reader: &Reader<'_>) -> Result<StoreConfig, ConfigError> {
    let settings = reader.0;
    let endpoint = match settings.get("S3_ENDPOINT") {
        Some(endpoint) => Some(endpoint.trim().to_owned()),
        None => settings.get("MINIO_HOST").map(|host| {
            let scheme = if reader.boolean("MINIO_SSL", false).unwrap_or(false) {
                "https"
            } else {
                "http"
            };
            let port = settings.get("MINIO_PORT").unwrap_or("9099");
            format!("{scheme}://{}:{}", host.trim(), port.trim())
        }),
    };
    // Validate MINIO_SSL even when the endpoint comes from S3_ENDPOINT.
    reader.boolean("MINIO_SSL", false)?;
    if let Some(port) = settings.get("MINIO_PORT") {
        port.trim().parse::<u16>().map_err(|_| {
            invalid(
                "MINIO_PORT",
                format!("'{}' is not a port number", port.trim()),
            )
        })?;
    }
    let backend = settings
        .get("OBJECT_STORE")
        .map(|backend| backend.trim().to_ascii_lowercase());
    let use_s3 = match backend.as_deref() {
        None => endpoint.is_some(),
        Some("s3") => true,
        Some("local") => false,
        Some(other) => {
            return Err(invalid(
                "OBJECT_STORE",
                format!("expected 's3' or 'local', got '{other}'"),
            ));
        }
    };
    if !use_s3 {
        let root = settings
            .get("STORAGE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/export-service/objects"));
        return Ok(StoreConfig::Local { root });
    }
    if let Some(endpoint) = &endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        return Err(invalid(
            "S3_ENDPOINT",
            format!("'{endpoint}' must start with http:// or https://"),
        ));
    }
    let credentials = match (
        settings.get("AWS_ACCESS_KEY"),
        reader.secret("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(key), Some(secret)) => Some((key.trim().to_owned(), secret)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "AWS_SECRET_ACCESS_KEY",
                "must be set with AWS_ACCESS_KEY".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "AWS_ACCESS_KEY",
                "must be set with AWS_SECRET_ACCESS_KEY".into(),
            ));
        }
    };
    Ok(StoreConfig::S3(S3Config {
        path_style: reader.boolean("S3_FORCE_PATH_STYLE", endpoint.is_some())?,
        endpoint,
        region: settings
            .get("AWS_REGION")
            .map(str::to_owned)
            .unwrap_or_else(|| "us-east-1".into()),
        bucket: settings
            .get("EXPORT_SERVICE_BUCKET")
            .map(str::to_owned)
            .unwrap_or_else(|| "exports-bucket".into()),
        credentials,
        create_bucket: reader.boolean("S3_CREATE_BUCKET", false)?,
        operation_timeout: positive(reader, "S3_OPERATION_TIMEOUT", 120)?,
        read_timeout: positive(reader, "S3_READ_TIMEOUT", 30)?,
    }))
}

/// A duration setting that must not be zero.
fn positive(
    reader: &Reader<'_>,
    name: &'static str,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    let duration = reader.duration(name, default_secs)?;
    if duration.is_zero() {
        return Err(invalid(name, "must be greater than zero".into()));
    }
    Ok(duration)
}

pub(super) fn object_layout(reader: &Reader<'_>) -> Result<ObjectLayout, ConfigError> {
    let template = reader
        .0
        .get("OBJECT_KEY_TEMPLATE")
        .unwrap_or("{org_id}/{export_id}/{source_id}.{format}")
        .to_owned();
    validate_template(&template)
        .map_err(|reason| invalid("OBJECT_KEY_TEMPLATE", reason.to_string()))?;
    let part_size: usize = reader.parsed("AWS_UPLOADER_BUFFER_SIZE", DEFAULT_PART_SIZE)?;
    if !(5 * 1024 * 1024..=512 * 1024 * 1024).contains(&part_size) {
        return Err(invalid(
            "AWS_UPLOADER_BUFFER_SIZE",
            "must be between 5 MiB (the S3 minimum part size) and 512 MiB".into(),
        ));
    }
    Ok(ObjectLayout {
        source_key_template: template,
        part_size,
    })
}

/// Why an `OBJECT_KEY_TEMPLATE` cannot lay out an export's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No `{export_id}/`: an export's objects would not share a prefix.
    #[error("must contain '{{export_id}}/' (all of an export's objects share that prefix)")]
    NoExportPrefix,
    /// No `{source_id}` after the prefix: sources would share a key.
    #[error("must contain '{{source_id}}' after '{{export_id}}/'")]
    NoSourceId,
    /// A placeholder the layout does not fill.
    #[error(
        "unknown placeholder: only {{org_id}}, {{export_id}}, {{source_id}} and {{format}} exist"
    )]
    UnknownPlaceholder,
    /// An absolute key, or one that climbs out with `..`.
    #[error("must be a relative key without '..'")]
    NotRelative,
}

/// Every export's objects must share a prefix ending in `{export_id}/` (so deletion is one
/// prefix), and each source needs its own key.
fn validate_template(template: &str) -> Result<(), TemplateError> {
    let Some(prefix_end) = template.find("{export_id}/") else {
        return Err(TemplateError::NoExportPrefix);
    };
    let rest = &template[prefix_end + "{export_id}/".len()..];
    if !rest.contains("{source_id}") {
        return Err(TemplateError::NoSourceId);
    }
    let mut remainder = template.to_owned();
    for placeholder in PLACEHOLDERS {
        remainder = remainder.replace(placeholder, "");
    }
    if remainder.contains('{') || remainder.contains('}') {
        return Err(TemplateError::UnknownPlaceholder);
    }
    if template.starts_with('/') || template.contains("..") {
        return Err(TemplateError::NotRelative);
    }
    Ok(())
}

pub(super) fn psk_config(reader: &Reader<'_>) -> Result<PskConfig, ConfigError> {
    if reader.boolean("DISABLE_SERVICE_TO_SERVICE_PSK_AUTH", false)? {
        return Ok(PskConfig::Disabled);
    }
    let Some(text) = reader.0.get("EXPORTS_PSKS").map(str::trim) else {
        return Ok(PskConfig::None);
    };
    if text.starts_with('{') {
        // Never echo the value: it holds the keys.
        let map: BTreeMap<String, String> = serde_json::from_str(text).map_err(|_| {
            invalid(
                "EXPORTS_PSKS",
                "starts with '{' but is not a JSON object of application → key (value not shown)"
                    .into(),
            )
        })?;
        if map.is_empty() || map.values().any(|key| key.is_empty()) {
            return Err(invalid(
                "EXPORTS_PSKS",
                "the application → key map must be non-empty and every key non-empty".into(),
            ));
        }
        return Ok(PskConfig::PerApplication(
            map.into_iter()
                .map(|(application, key)| (application, Secret::new(key)))
                .collect(),
        ));
    }
    let keys: Vec<Secret<String>> = text
        .split(',')
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(|key| Secret::new(key.to_owned()))
        .collect();
    Ok(if keys.is_empty() {
        PskConfig::None
    } else {
        PskConfig::Shared(keys)
    })
}

pub(super) fn data_path_config(
    reader: &Reader<'_>,
    expiry_days: u32,
) -> Result<DataPathConfig, ConfigError> {
    let max_payload_mib: u64 = reader.parsed("MAX_PAYLOAD_SIZE", DEFAULT_MAX_PAYLOAD_MIB)?;
    if !(1..=1024 * 1024).contains(&max_payload_mib) {
        return Err(invalid(
            "MAX_PAYLOAD_SIZE",
            "must be between 1 and 1048576 (MiB)".into(),
        ));
    }
    let expansion: f64 = reader.parsed("MAX_STORED_EXPANSION", DEFAULT_STORED_EXPANSION)?;
    if !(1.0..=1000.0).contains(&expansion) {
        return Err(invalid(
            "MAX_STORED_EXPANSION",
            "must be a number from 1 to 1000 (stored bytes per uploaded byte)".into(),
        ));
    }
    let max_payload_bytes = max_payload_mib * 1024 * 1024;
    let compression_level: u32 = reader.parsed("PACKAGE_COMPRESSION_LEVEL", 1)?;
    if compression_level > 9 {
        return Err(invalid(
            "PACKAGE_COMPRESSION_LEVEL",
            "must be between 0 (stored) and 9".into(),
        ));
    }
    let optional = |duration: Duration| (!duration.is_zero()).then_some(duration);
    for name in ["UPLOAD_LEASE", "PACKAGE_LEASE"] {
        if reader.duration(name, 300)? < Duration::from_secs(10) {
            return Err(invalid(
                name,
                "must be at least 10s (it is renewed every third of it)".into(),
            ));
        }
    }
    let max_concurrent_uploads =
        reader.parsed::<usize>("MAX_CONCURRENT_UPLOADS", DEFAULT_MAX_CONCURRENT_UPLOADS)?;
    if max_concurrent_uploads == 0 {
        return Err(invalid(
            "MAX_CONCURRENT_UPLOADS",
            "must be at least 1".into(),
        ));
    }
    // Half the slots by default: one application can never take them all, and two busy ones
    // still share the replica.
    let max_uploads_per_application: usize = reader.parsed(
        "MAX_UPLOADS_PER_APPLICATION",
        max_concurrent_uploads.div_ceil(2),
    )?;
    if !(1..=max_concurrent_uploads).contains(&max_uploads_per_application) {
        return Err(invalid(
            "MAX_UPLOADS_PER_APPLICATION",
            format!("must be between 1 and MAX_CONCURRENT_UPLOADS ({max_concurrent_uploads})"),
        ));
    }
    // 30 minutes carries the default 500 MiB MAX_PAYLOAD_SIZE at about 285 KiB/s (2.3 Mbit/s),
    // slower than any link a source application uploads over, while a trickle still frees its
    // slot within the half hour.
    let upload_max_duration = reader.duration("UPLOAD_MAX_DURATION", 30 * 60)?;
    if upload_max_duration < Duration::from_secs(1) {
        return Err(invalid("UPLOAD_MAX_DURATION", "must be at least 1s".into()));
    }
    let plugin_defaults = export_plugin_host::PluginLimits::default();
    let plugin_cache_mib =
        reader.parsed::<usize>("PLUGIN_CACHE_SIZE", export_plugin_host::DEFAULT_CACHE_MIB)?;
    if plugin_cache_mib == 0 {
        // Without a cache every registry resync would compile its plugins again.
        return Err(invalid(
            "PLUGIN_CACHE_SIZE",
            "must be at least 1 (MiB of compiled plugins kept)".into(),
        ));
    }
    Ok(DataPathConfig {
        max_payload_bytes,
        // At most 2^40 × 1000: exact enough in an f64, and within a u64.
        max_stored_bytes: (max_payload_bytes as f64 * expansion) as u64,
        upload_lease: reader.duration("UPLOAD_LEASE", 15 * 60)?,
        package_lease: reader.duration("PACKAGE_LEASE", 5 * 60)?,
        package_retry_max_delay: positive(reader, "PACKAGE_RETRY_MAX_DELAY", 60)?,
        package_max_age: optional(reader.duration("PACKAGE_MAX_AGE", 0)?),
        compression_level,
        packaging_worker: reader.boolean("PACKAGING_WORKER", true)?,
        max_concurrent_uploads,
        max_uploads_per_application,
        upload_max_duration,
        plugins_dir: reader.0.get("PLUGINS_DIR").map(PathBuf::from),
        plugin_limits: export_plugin_host::PluginLimits {
            memory_bytes: reader
                .parsed::<usize>("PLUGIN_MEMORY_LIMIT", plugin_defaults.memory_bytes / MIB)?
                .saturating_mul(MIB),
            call_timeout: reader.duration(
                "PLUGIN_CALL_TIMEOUT",
                plugin_defaults.call_timeout.as_secs(),
            )?,
            session_timeout: reader.duration(
                "PLUGIN_SESSION_TIMEOUT",
                plugin_defaults.session_timeout.as_secs(),
            )?,
            output_bytes_per_call: reader
                .parsed::<usize>(
                    "PLUGIN_OUTPUT_LIMIT",
                    plugin_defaults.output_bytes_per_call / MIB,
                )?
                .saturating_mul(MIB),
            cache_bytes: plugin_cache_mib.saturating_mul(MIB),
        },
        cleaner_interval: optional(reader.duration("CLEANER_INTERVAL", 0)?),
        cleaner_grace: reader.duration("CLEANER_GRACE", u64::from(expiry_days) * 24 * 3600)?,
        source_timeout: optional(reader.duration("SOURCE_TIMEOUT", 24 * 3600)?),
        audit_retention: positive(reader, "AUDIT_RETENTION", 90 * 24 * 3600)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::config_of as config;

    #[test]
    fn the_plugin_cache_is_sized_in_mib_and_cannot_be_zero() {
        let default = config(&[]).unwrap();
        assert_eq!(
            default.data_path.plugin_limits.cache_bytes,
            64 * 1024 * 1024
        );
        let set = config(&[("PLUGIN_CACHE_SIZE", "32")]).unwrap();
        assert_eq!(set.data_path.plugin_limits.cache_bytes, 32 * 1024 * 1024);
        let zero = config(&[("PLUGIN_CACHE_SIZE", "0")]).unwrap_err();
        assert!(zero.contains("PLUGIN_CACHE_SIZE"), "{zero}");
        assert!(zero.contains("at least 1"), "{zero}");
    }

    #[test]
    fn local_store_by_default_s3_when_an_endpoint_is_set() {
        assert!(matches!(
            config(&[]).unwrap().store,
            StoreConfig::Local { .. }
        ));
        let minio = config(&[
            ("MINIO_HOST", "minio"),
            ("MINIO_PORT", "9000"),
            ("AWS_ACCESS_KEY", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ])
        .unwrap();
        let StoreConfig::S3(s3) = minio.store else {
            panic!("expected S3")
        };
        assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
        assert!(s3.path_style);
        assert_eq!(s3.bucket, "exports-bucket");
        assert!(
            config(&[("AWS_ACCESS_KEY", "k"), ("OBJECT_STORE", "s3")])
                .unwrap_err()
                .contains("AWS_SECRET_ACCESS_KEY")
        );
        assert!(
            config(&[("S3_ENDPOINT", "minio:9000")])
                .unwrap_err()
                .contains("S3_ENDPOINT")
        );
    }

    #[test]
    fn psks_follow_the_upstream_parsing() {
        let parse = |value: &str| config(&[("EXPORTS_PSKS", value)]).map(|config| config.psks);
        assert_eq!(parse(" ").unwrap(), PskConfig::None);
        assert!(
            matches!(parse(r#"{"app": "k1"}"#).unwrap(), PskConfig::PerApplication(map) if map.len() == 1)
        );
        let PskConfig::Shared(keys) = parse("a, b,,c").unwrap() else {
            panic!("expected a flat list")
        };
        assert_eq!(keys.len(), 3);
        // Upstream silently turns these into one-key lists; we refuse them.
        for bad in ["{}", "{invalid-json", r#"{"app": ""}"#] {
            let error = parse(bad).unwrap_err();
            assert!(
                error.contains("EXPORTS_PSKS") && !error.contains("invalid-json"),
                "{error}"
            );
        }
        assert_eq!(
            config(&[
                ("EXPORTS_PSKS", "k"),
                ("DISABLE_SERVICE_TO_SERVICE_PSK_AUTH", "true")
            ])
            .unwrap()
            .psks,
            PskConfig::Disabled
        );
    }

    #[test]
    fn key_templates_are_validated() {
        assert!(
            config(&[(
                "OBJECT_KEY_TEMPLATE",
                "exports/{org_id}/{export_id}/{source_id}.{format}"
            )])
            .is_ok()
        );
        for bad in [
            "{org_id}/{source_id}",
            "{export_id}-{source_id}",
            "{export_id}/{source}",
            "../{export_id}/{source_id}",
        ] {
            assert!(
                config(&[("OBJECT_KEY_TEMPLATE", bad)])
                    .unwrap_err()
                    .contains("OBJECT_KEY_TEMPLATE"),
                "{bad}"
            );
        }
        assert_eq!(
            validate_template("{export_id}-{source_id}"),
            Err(TemplateError::NoExportPrefix)
        );
        assert_eq!(
            TemplateError::UnknownPlaceholder.to_string(),
            "unknown placeholder: only {org_id}, {export_id}, {source_id} and {format} exist"
        );
        assert_eq!(
            validate_template("{export_id}/{source}"),
            Err(TemplateError::NoSourceId)
        );
    }

    #[test]
    fn data_path_limits() {
        let defaults = config(&[]).unwrap().data_path;
        assert_eq!(defaults.max_payload_bytes, 500 * 1024 * 1024);
        assert_eq!(defaults.max_stored_bytes, 4 * 500 * 1024 * 1024);
        let expanded = config(&[("MAX_PAYLOAD_SIZE", "2"), ("MAX_STORED_EXPANSION", "1.5")])
            .unwrap()
            .data_path;
        assert_eq!(expanded.max_stored_bytes, 3 * 1024 * 1024);
        for bad in ["0.5", "0", "-2", "NaN", "inf", "1001", "four"] {
            assert!(
                config(&[("MAX_STORED_EXPANSION", bad)])
                    .unwrap_err()
                    .contains("MAX_STORED_EXPANSION"),
                "{bad}"
            );
        }
        assert_eq!(defaults.cleaner_interval, None);
        assert_eq!(defaults.cleaner_grace, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(
            defaults.audit_retention,
            Duration::from_secs(90 * 24 * 3600)
        );
        assert!(
            config(&[("AUDIT_RETENTION", "0s")])
                .unwrap_err()
                .contains("AUDIT_RETENTION")
        );
        assert!(
            config(&[("MAX_PAYLOAD_SIZE", "0")])
                .unwrap_err()
                .contains("MAX_PAYLOAD_SIZE")
        );
        assert!(config(&[("PACKAGE_COMPRESSION_LEVEL", "12")]).is_err());
        assert!(config(&[("AWS_UPLOADER_BUFFER_SIZE", "1024")]).is_err());
    }

    #[test]
    fn upload_fairness_limits() {
        let defaults = config(&[]).unwrap().data_path;
        assert_eq!(defaults.max_uploads_per_application, 2);
        assert_eq!(defaults.upload_max_duration, Duration::from_secs(30 * 60));
        // Half, rounded up, and never 0.
        let share = |total: &str| {
            config(&[("MAX_CONCURRENT_UPLOADS", total)])
                .unwrap()
                .data_path
                .max_uploads_per_application
        };
        assert_eq!((share("1"), share("5")), (1, 3));
        let error = config(&[
            ("MAX_CONCURRENT_UPLOADS", "4"),
            ("MAX_UPLOADS_PER_APPLICATION", "5"),
        ])
        .unwrap_err();
        assert!(
            error.contains("MAX_UPLOADS_PER_APPLICATION") && error.contains("(4)"),
            "{error}"
        );
        assert!(
            config(&[("MAX_UPLOADS_PER_APPLICATION", "0")])
                .unwrap_err()
                .contains("MAX_UPLOADS_PER_APPLICATION")
        );
        assert!(
            config(&[("UPLOAD_MAX_DURATION", "500ms")])
                .unwrap_err()
                .contains("UPLOAD_MAX_DURATION")
        );
        assert_eq!(
            config(&[("UPLOAD_MAX_DURATION", "2s")])
                .unwrap()
                .data_path
                .upload_max_duration,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn downloads_stream_unless_a_presigned_redirect_is_asked_for() {
        assert_eq!(config(&[]).unwrap().download, DownloadRedirect::Stream);
        assert_eq!(
            config(&[("DOWNLOAD_REDIRECT", " Presigned ")])
                .unwrap()
                .download,
            DownloadRedirect::Presigned {
                expires_in: Duration::from_secs(300)
            }
        );
        assert_eq!(
            config(&[
                ("DOWNLOAD_REDIRECT", "presigned"),
                ("DOWNLOAD_URL_EXPIRY", "168h")
            ])
            .unwrap()
            .download,
            DownloadRedirect::Presigned {
                expires_in: MAX_PRESIGNED_EXPIRY
            }
        );
        let unknown = config(&[("DOWNLOAD_REDIRECT", "proxy")]).unwrap_err();
        assert!(
            unknown.contains("DOWNLOAD_REDIRECT") && unknown.contains("'stream' or 'presigned'"),
            "{unknown}"
        );
        for (expiry, says) in [("169h", "at most 168h"), ("0s", "greater than zero")] {
            let error = config(&[
                ("DOWNLOAD_REDIRECT", "presigned"),
                ("DOWNLOAD_URL_EXPIRY", expiry),
            ])
            .unwrap_err();
            assert!(
                error.contains("DOWNLOAD_URL_EXPIRY") && error.contains(says),
                "{error}"
            );
        }
    }
}
