//! The service's one typed configuration, loaded once at start-up from the environment (the
//! upstream's variable names and defaults) layered over an optional TOML file, and validated
//! before anything starts. Every error names the variable; secrets are never printed.

mod clowder;
mod duration;
mod kafka;
mod oidc;
mod registry;
mod settings;
mod sizing;
mod storage;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::domain::create::MAX_SOURCES;
pub use crate::domain::psk::PskConfig;
pub use crate::domain::quota::Quotas;
pub use crate::domain::secret::Secret;
pub use crate::domain::{EnabledApps, InvalidEnabledApps};
pub use duration::{DurationError, parse_go_duration};
pub use kafka::{EventConfig, KafkaConfig, OutboxConfig};
pub use registry::RegistryConfig;
pub use settings::Settings;
pub use sizing::{MemoryBudget, MemoryTerm, plugin_ceilings, push_slots, upload_slots_for};
pub use storage::{
    DEFAULT_MAX_PAYLOAD_MIB, DEFAULT_STORED_EXPANSION, DataPathConfig, DownloadRedirect,
    MAX_PRESIGNED_EXPIRY, ObjectLayout, S3Config, StoreConfig,
};

/// Every setting the service reads. Deployment manifests are checked against this list.
pub const KNOWN_SETTINGS: &[&str] = &[
    "LISTEN_ADDRESS",
    "PUBLIC_PORT",
    "PRIVATE_PORT",
    "METRICS_PORT",
    "PUBLIC_HTTP_SERVER_READ_TIMEOUT",
    "PUBLIC_HTTP_SERVER_WRITE_TIMEOUT",
    "PRIVATE_HTTP_SERVER_READ_TIMEOUT",
    "PRIVATE_HTTP_SERVER_WRITE_TIMEOUT",
    "SHUTDOWN_TIMEOUT",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "DEBUG",
    "HOSTNAME",
    "DATABASE_URL",
    "PGSQL_USER",
    "PGSQL_PASSWORD",
    "PGSQL_HOSTNAME",
    "PGSQL_PORT",
    "PGSQL_DATABASE",
    "PGSQL_SSLMODE",
    "PGSQL_SSLROOTCERT",
    "DB_MAX_CONNECTIONS",
    "DB_MIGRATE_ON_START",
    "DB_STATEMENT_TIMEOUT",
    "EXPORT_EXPIRY_DAYS",
    "EXPORT_MAX_EXPIRY_DAYS",
    "EXPORT_ENABLE_APPS",
    "QUOTA_ACTIVE_EXPORTS",
    "QUOTA_SOURCES_PER_HOUR",
    "QUOTA_STORED_BYTES",
    "RATE_LIMIT_RATE",
    "RATE_LIMIT_BURST",
    "KAFKA_BROKERS",
    "KAFKA_ANNOUNCE_TOPIC",
    "KAFKA_CANCEL_TOPIC",
    "KAFKA_COMPLETION_TOPIC",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CA_LOCATION",
    "KAFKA_PROPERTIES",
    "KAFKA_CREATE_TOPIC_PARTITIONS",
    "KAFKA_MESSAGE_TIMEOUT",
    "KAFKA_EVENT_SOURCE",
    "KAFKA_EVENT_SPECVERSION",
    "KAFKA_EVENT_TYPE",
    "KAFKA_EVENT_DATASCHEMA",
    "KAFKA_EVENT_SCHEMA",
    "KAFKA_CANCEL_EVENT_TYPE",
    "KAFKA_COMPLETION_EVENT_TYPE",
    "OUTBOX_BATCH_SIZE",
    "OUTBOX_LEASE",
    "OUTBOX_MAX_BACKOFF",
    "OUTBOX_POLL_INTERVAL",
    "OBJECT_STORE",
    "STORAGE_DIR",
    "S3_ENDPOINT",
    "MINIO_HOST",
    "MINIO_PORT",
    "MINIO_SSL",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "EXPORT_SERVICE_BUCKET",
    "S3_FORCE_PATH_STYLE",
    "S3_CREATE_BUCKET",
    "OBJECT_KEY_TEMPLATE",
    "AWS_UPLOADER_BUFFER_SIZE",
    "EXPORTS_PSKS",
    "OIDC_ENABLED",
    "OIDC_ISSUER_URL",
    "OIDC_CLIENT_ID",
    "OIDC_PROVIDER_TIMEOUT",
    "OIDC_JWKS_CACHE_DURATION",
    "OIDC_APPLICATION_CLAIM",
    "OIDC_APPLICATIONS",
    "DISABLE_SERVICE_TO_SERVICE_PSK_AUTH",
    "MAX_PAYLOAD_SIZE",
    "MAX_STORED_EXPANSION",
    "UPLOAD_LEASE",
    "PACKAGE_LEASE",
    "PACKAGE_RETRY_MAX_DELAY",
    "PACKAGE_MAX_AGE",
    "S3_OPERATION_TIMEOUT",
    "S3_READ_TIMEOUT",
    "PACKAGE_COMPRESSION_LEVEL",
    "PACKAGING_WORKER",
    "MAX_CONCURRENT_UPLOADS",
    "PLUGINS_DIR",
    "PLUGIN_MEMORY_LIMIT",
    "PLUGIN_CALL_TIMEOUT",
    "PLUGIN_SESSION_TIMEOUT",
    "PLUGIN_OUTPUT_LIMIT",
    "ADMIN_TOKEN",
    "PLUGIN_RESYNC_INTERVAL",
    "PLUGINS_DIR_POLL_INTERVAL",
    "PLUGIN_MAX_COMPONENT_SIZE",
    "PLUGIN_ARTEFACT_DIR",
    "PLUGIN_CACHE_SIZE",
    "CLEANER_INTERVAL",
    "CLEANER_GRACE",
    "AUDIT_RETENTION",
    "SOURCE_TIMEOUT",
    "UPLOAD_MAX_DURATION",
    "MAX_UPLOADS_PER_APPLICATION",
    "HTTP_HEADER_READ_TIMEOUT",
    "MAX_CONNECTIONS",
    "DOWNLOAD_REDIRECT",
    "DOWNLOAD_URL_EXPIRY",
];

/// The upstream's default allow-list of exportable application resources.
pub const DEFAULT_ENABLED_APPS: &str =
    r#"{"exampleApp":["exampleResource","anotherExampleResource"]}"#;

/// The longest default lifetime of an export (100 years).
pub const MAX_EXPIRY_DAYS: u32 = 36_500;
/// `EXPORT_MAX_EXPIRY_DAYS` when unset (unless `EXPORT_EXPIRY_DAYS` is longer).
pub const DEFAULT_MAX_EXPIRY_DAYS: u32 = 365;
/// The lowest rate limit (one request every 1000 s).
pub const MIN_RATE: f64 = 0.001;

/// Why the configuration could not be loaded. Each variant names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a value the service cannot use.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// The environment variable (or config file key).
        name: &'static str,
        /// What is wrong, including the value unless it is a secret.
        reason: String,
    },
    /// The config file could not be read or parsed.
    #[error("config file {path}: {source}")]
    File {
        /// The file's path.
        path: String,
        /// What went wrong.
        source: FileError,
    },
}

/// Why a config file (TOML settings or Clowder's app config) was refused. Messages say where
/// the problem is, never the offending value: it may be a secret.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{0}")]
    Read(#[from] std::io::Error),
    /// The TOML does not parse; the line, when the parser knows it.
    #[error(
        "not valid TOML{} (values must be quoted strings, numbers, booleans or tables)",
        .line.map(|line| format!(" at line {line}")).unwrap_or_default()
    )]
    Toml {
        /// The line of the error, from 1.
        line: Option<usize>,
    },
    /// A TOML key that is no setting of the service.
    #[error("unknown setting '{0}'")]
    UnknownSetting(String),
    /// Clowder's app config lacks a field the service needs (serde's message names it).
    #[error("not a Clowder app config: {0}")]
    AppConfigIncomplete(String),
    /// Clowder's app config has a value of the wrong type or bad JSON at this place.
    #[error("not a Clowder app config: invalid at line {line} column {column}")]
    AppConfigInvalid {
        /// The line, from 1.
        line: usize,
        /// The column, from 1.
        column: usize,
    },
    /// An inline certificate of the app config could not be written out.
    #[error("cannot write {path}: {source}")]
    Certificate {
        /// Where it was to be written.
        path: String,
        /// Why it could not be.
        source: std::io::Error,
    },
}

/// Reads the config file at `path` and parses it with `parse`; either failure names the file.
fn parse_config_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, FileError>,
) -> Result<T, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(FileError::from)
        .and_then(|text| parse(&text))
        .map_err(|source| ConfigError::File {
            path: path.display().to_string(),
            source,
        })
}

/// `settings` with what Clowder's app config at `path` provides on top (as the upstream, Clowder
/// wins over the environment; a database from Clowder replaces a `DATABASE_URL`).
fn with_clowder(settings: Settings, path: &Path) -> Result<Settings, ConfigError> {
    let certificates = std::env::temp_dir().join("export-service-clowder");
    let clowder = parse_config_file(path, |text| {
        clowder::settings_from_app_config(text, &settings, &certificates)
    })?;
    let settings = if clowder.get("PGSQL_HOSTNAME").is_some() {
        settings.without("DATABASE_URL")
    } else {
        settings
    };
    Ok(settings.overridden_by(clowder))
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines (development).
    Text,
}

/// Connection settings for PostgreSQL.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// Where and how to connect (includes the password: never print it).
    pub connect_options: PgConnectOptions,
    /// Upper bound of pooled connections per process.
    pub max_connections: u32,
    /// Whether `serve` applies pending migrations before it starts listening.
    pub migrate_on_start: bool,
}

/// How long one SQL statement may run before PostgreSQL cancels it.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options = &self.connect_options;
        formatter
            .debug_struct("DatabaseConfig")
            .field("host", &options.get_host())
            .field("port", &options.get_port())
            .field("username", &options.get_username())
            .field("database", &options.get_database())
            .field("max_connections", &self.max_connections)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish_non_exhaustive()
    }
}

/// Timeouts of one HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Time allowed to receive a request body.
    pub read: Duration,
    /// Time allowed to produce a (non-streaming) response.
    pub write: Duration,
}

/// The largest request head (request line and headers) a listener reads; larger heads get
/// 431. It bounds what an open connection can hold (docs/OPERATIONS.md, "Sizing"): the
/// identity header, the largest a caller sends, is a few KiB.
pub const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;

/// Connections one listener serves at once by default: three full listeners hold at most
/// 3 × 512 × [`MAX_REQUEST_HEAD_BYTES`] = 48 MiB of request heads.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Limits every listener (public, internal, metrics) applies to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Time a client has to send a request's head (request line and headers), counted from
    /// when the connection starts waiting for one (so idle keep-alive connections close too).
    pub header_read_timeout: Duration,
    /// Connections one listener serves at once; more are closed on accept.
    pub max_connections: usize,
}

/// The public API's per-organisation rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained requests per second per organisation.
    pub rate: f64,
    /// Requests an organisation may make at once before the rate applies.
    pub burst: u32,
}

/// The whole configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address all listeners bind to.
    pub listen_address: IpAddr,
    /// Port of the public (tenant) API.
    pub public_port: u16,
    /// Port of the internal (source application) API.
    pub private_port: u16,
    /// Port of metrics and probes.
    pub metrics_port: u16,
    /// Timeouts of the public listener.
    pub public_timeouts: HttpTimeouts,
    /// Timeouts of the internal listener.
    pub private_timeouts: HttpTimeouts,
    /// How long a graceful shutdown may take before in-flight work is abandoned.
    pub shutdown_timeout: Duration,
    /// Header-read timeout and connection cap of every listener.
    pub listener_limits: ListenerLimits,
    /// Tracing filter directive, e.g. `info` or `export_service=debug,info`.
    pub log_filter: String,
    /// Log output format.
    pub log_format: LogFormat,
    /// Host name used in generated request ids.
    pub hostname: String,
    /// PostgreSQL settings.
    pub database: DatabaseConfig,
    /// Days from creation until an export expires when the request names no `expires_at`.
    pub export_expiry_days: u32,
    /// The latest `expires_at` a create may ask for, in days from now (`EXPORT_MAX_EXPIRY_DAYS`).
    pub export_max_expiry_days: u32,
    /// Per-organisation quotas on creating exports.
    pub quotas: Quotas,
    /// Which application resources may be exported.
    pub enabled_apps: EnabledApps,
    /// Rate limit of the public API.
    pub rate_limit: RateLimitConfig,
    /// The Kafka client.
    pub kafka: KafkaConfig,
    /// The CloudEvent constants.
    pub events: EventConfig,
    /// The outbox relay.
    pub outbox: OutboxConfig,
    /// Object storage.
    pub store: StoreConfig,
    /// Object key layout and part size.
    pub layout: ObjectLayout,
    /// The internal API's keys.
    pub psks: PskConfig,
    /// Bearer tokens on the internal API (`OIDC_ENABLED`); `None` when off.
    pub oidc: Option<crate::oidc::OidcConfig>,
    /// Upload, packaging and cleaning limits.
    pub data_path: DataPathConfig,
    /// The plugin registry and its admin API.
    pub registry: RegistryConfig,
    /// Whether downloads are streamed or redirected to a presigned URL.
    pub download: DownloadRedirect,
}

impl Config {
    /// Loads the configuration from the process environment, layered over the TOML file named
    /// by `config_file` (or by `EXPORT_SERVICE_CONFIG` when `config_file` is `None`).
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let env = Settings::from_pairs(std::env::vars());
        let file_path: Option<PathBuf> = config_file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("EXPORT_SERVICE_CONFIG").map(PathBuf::from));
        let settings = match file_path {
            Some(path) => Settings::from_toml_file(&path)?.overridden_by(env),
            None => env,
        };
        let settings = match std::env::var_os("ACG_CONFIG") {
            Some(path) => with_clowder(settings, Path::new(&path))?,
            None => settings,
        };
        Self::from_settings(&settings)
    }

    /// Builds and validates the configuration from raw settings.
    ///
    /// (Clowder's file, when `ACG_CONFIG` names one, has been applied by [`Config::load`].)
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let reader = Reader(settings);
        let debug = reader.boolean("DEBUG", false)?;
        let log_format = match settings.get("LOG_FORMAT").map(str::to_ascii_lowercase) {
            None if debug => LogFormat::Text,
            None => LogFormat::Json,
            Some(format) if format == "json" => LogFormat::Json,
            Some(format) if format == "text" => LogFormat::Text,
            Some(other) => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("expected 'json' or 'text', got '{other}'"),
                ));
            }
        };
        let kafka = kafka::kafka_config(&reader)?;
        let outbox = kafka::outbox_config(&reader, kafka.message_timeout)?;
        let export_expiry_days = reader.parsed("EXPORT_EXPIRY_DAYS", 7)?;
        let config = Self {
            listen_address: reader.parsed("LISTEN_ADDRESS", IpAddr::from([0, 0, 0, 0]))?,
            public_port: reader.parsed("PUBLIC_PORT", 8000)?,
            private_port: reader.parsed("PRIVATE_PORT", 10000)?,
            metrics_port: reader.parsed("METRICS_PORT", 9000)?,
            public_timeouts: HttpTimeouts {
                read: reader.duration("PUBLIC_HTTP_SERVER_READ_TIMEOUT", 5)?,
                write: reader.duration("PUBLIC_HTTP_SERVER_WRITE_TIMEOUT", 10)?,
            },
            private_timeouts: HttpTimeouts {
                read: reader.duration("PRIVATE_HTTP_SERVER_READ_TIMEOUT", 5)?,
                write: reader.duration("PRIVATE_HTTP_SERVER_WRITE_TIMEOUT", 10)?,
            },
            shutdown_timeout: reader.duration("SHUTDOWN_TIMEOUT", 30)?,
            listener_limits: listener_limits(&reader)?,
            log_filter: log_filter(settings.get("LOG_LEVEL"))?,
            log_format,
            hostname: settings
                .get("HOSTNAME")
                .map(str::to_owned)
                .unwrap_or_else(local_hostname),
            database: database_config(&reader)?,
            export_expiry_days,
            // A year, or the default lifetime if that is longer.
            export_max_expiry_days: reader.parsed(
                "EXPORT_MAX_EXPIRY_DAYS",
                export_expiry_days.max(DEFAULT_MAX_EXPIRY_DAYS),
            )?,
            quotas: quotas(&reader)?,
            enabled_apps: EnabledApps::parse(
                settings
                    .get("EXPORT_ENABLE_APPS")
                    .unwrap_or(DEFAULT_ENABLED_APPS),
            )
            .map_err(|reason| invalid("EXPORT_ENABLE_APPS", reason.to_string()))?,
            rate_limit: RateLimitConfig {
                rate: reader.parsed("RATE_LIMIT_RATE", 100.0)?,
                burst: reader.parsed("RATE_LIMIT_BURST", 60)?,
            },
            events: kafka::event_config(&reader),
            kafka,
            outbox,
            store: storage::store_config(&reader)?,
            layout: storage::object_layout(&reader)?,
            psks: storage::psk_config(&reader)?,
            oidc: oidc::oidc_config(&reader)?,
            data_path: storage::data_path_config(&reader, export_expiry_days)?,
            registry: registry::registry_config(&reader)?,
            download: storage::download_redirect(&reader)?,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_EXPIRY_DAYS).contains(&self.export_expiry_days) {
            return Err(invalid(
                "EXPORT_EXPIRY_DAYS",
                format!("must be between 1 and {MAX_EXPIRY_DAYS}"),
            ));
        }
        if !(self.export_expiry_days..=MAX_EXPIRY_DAYS).contains(&self.export_max_expiry_days) {
            return Err(invalid(
                "EXPORT_MAX_EXPIRY_DAYS",
                format!(
                    "must be between EXPORT_EXPIRY_DAYS ({}) and {MAX_EXPIRY_DAYS}",
                    self.export_expiry_days
                ),
            ));
        }
        if !(self.rate_limit.rate.is_finite() && self.rate_limit.rate >= MIN_RATE) {
            return Err(invalid(
                "RATE_LIMIT_RATE",
                format!("must be a number of requests per second of at least {MIN_RATE}"),
            ));
        }
        if self.rate_limit.burst == 0 {
            return Err(invalid("RATE_LIMIT_BURST", "must be at least 1".into()));
        }
        if self.kafka.brokers.is_some()
            && self.shutdown_timeout < self.kafka.message_timeout + Duration::from_secs(5)
        {
            return Err(invalid(
                "SHUTDOWN_TIMEOUT",
                format!(
                    "must exceed KAFKA_MESSAGE_TIMEOUT ({} ms) by at least 5 s, so deliveries in flight can finish",
                    self.kafka.message_timeout.as_millis()
                ),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("DB_MAX_CONNECTIONS", "must be at least 1".into()));
        }
        let ports = [
            ("PUBLIC_PORT", self.public_port),
            ("PRIVATE_PORT", self.private_port),
            ("METRICS_PORT", self.metrics_port),
        ];
        for (index, (name, port)) in ports.iter().enumerate() {
            for (other, other_port) in &ports[index + 1..] {
                if *port != 0 && port == other_port {
                    return Err(invalid(
                        other,
                        format!("port {port} is already used by {name}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `HTTP_HEADER_READ_TIMEOUT` (default 10 s) and `MAX_CONNECTIONS` (per listener).
fn listener_limits(reader: &Reader<'_>) -> Result<ListenerLimits, ConfigError> {
    let header_read_timeout = reader.duration("HTTP_HEADER_READ_TIMEOUT", 10)?;
    if header_read_timeout.is_zero() {
        return Err(invalid(
            "HTTP_HEADER_READ_TIMEOUT",
            "must be more than 0 (a client that never finishes its headers would hold its connection forever)".into(),
        ));
    }
    let max_connections: usize = reader.parsed("MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)?;
    if max_connections == 0 {
        return Err(invalid("MAX_CONNECTIONS", "must be at least 1".into()));
    }
    Ok(ListenerLimits {
        header_read_timeout,
        max_connections,
    })
}

fn invalid(name: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { name, reason }
}

/// Typed access to raw settings with error messages that name the variable.
struct Reader<'a>(&'a Settings);

impl Reader<'_> {
    fn parsed<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.0.get(name) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|error| invalid(name, format!("cannot parse '{}': {error}", text.trim()))),
        }
    }

    fn boolean(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.0.get(name).map(str::trim) {
            None => Ok(default),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(other) => Err(invalid(
                name,
                format!("expected true or false, got '{other}'"),
            )),
        }
    }

    fn duration(&self, name: &'static str, default_secs: u64) -> Result<Duration, ConfigError> {
        match self.0.get(name) {
            None => Ok(Duration::from_secs(default_secs)),
            Some(text) => {
                parse_go_duration(text).map_err(|reason| invalid(name, reason.to_string()))
            }
        }
    }

    fn secret(&self, name: &'static str) -> Option<Secret<String>> {
        self.0.get(name).map(|value| Secret::new(value.to_owned()))
    }
}

fn database_config(reader: &Reader<'_>) -> Result<DatabaseConfig, ConfigError> {
    let connect_options = match reader.secret("DATABASE_URL") {
        // The URL may hold a password: the error must not echo it.
        Some(url) => url_options(url.expose()).map_err(|_| {
            invalid(
                "DATABASE_URL",
                "not a valid postgres:// URL (value not shown: it may contain a password)".into(),
            )
        })?,
        None => {
            let mut options = PgConnectOptions::new_without_pgpass()
                .host(reader.0.get("PGSQL_HOSTNAME").unwrap_or("localhost"))
                .port(reader.parsed("PGSQL_PORT", 5432)?)
                .username(reader.0.get("PGSQL_USER").unwrap_or("postgres"))
                .database(reader.0.get("PGSQL_DATABASE").unwrap_or("postgres"))
                .password(
                    reader
                        .secret("PGSQL_PASSWORD")
                        .unwrap_or_else(|| Secret::new("postgres".into()))
                        .expose(),
                );
            let ssl_mode: PgSslMode = reader.parsed("PGSQL_SSLMODE", PgSslMode::Prefer)?;
            options = options.ssl_mode(ssl_mode);
            if let Some(root_cert) = reader.0.get("PGSQL_SSLROOTCERT") {
                options = options.ssl_root_cert(root_cert);
            }
            options
        }
    };
    let statement_timeout =
        reader.duration("DB_STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT.as_secs())?;
    Ok(DatabaseConfig {
        connect_options: connect_options
            .application_name("export-service")
            .options([(
                "statement_timeout",
                format!("{}ms", statement_timeout.as_millis()),
            )]),
        max_connections: reader.parsed("DB_MAX_CONNECTIONS", 10)?,
        migrate_on_start: reader.boolean("DB_MIGRATE_ON_START", true)?,
    })
}

fn url_options(url: &str) -> Result<PgConnectOptions, ()> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(());
    }
    PgConnectOptions::from_str(url).map_err(|_| ())
}

/// Maps `LOG_LEVEL` to a tracing filter. The upstream names (`DEBUG`, `INFO`, `ERROR`) work in
/// any case; a full `tracing` directive (`export_service=debug,info`) is accepted too.
fn log_filter(level: Option<&str>) -> Result<String, ConfigError> {
    let Some(level) = level.map(str::trim) else {
        return Ok("info".into());
    };
    let lower = level.to_ascii_lowercase();
    let filter = match lower.as_str() {
        "trace" | "debug" | "info" | "error" => lower,
        "warn" | "warning" => "warn".into(),
        _ if level.contains('=') => level.to_owned(),
        _ => {
            return Err(invalid(
                "LOG_LEVEL",
                format!(
                    "'{level}' is not a level (DEBUG, INFO, WARN, ERROR or a tracing directive)"
                ),
            ));
        }
    };
    tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|error| invalid("LOG_LEVEL", format!("'{level}' is not a level: {error}")))?;
    Ok(filter)
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "export-service".into())
}

/// Default `QUOTA_ACTIVE_EXPORTS`: far above what one tenant's tooling needs at once, low
/// enough that a runaway script cannot fill the source applications' queues.
const DEFAULT_ACTIVE_EXPORTS: u64 = 200;
/// Default `QUOTA_SOURCES_PER_HOUR`: a hundred full-size requests an hour.
const DEFAULT_SOURCES_PER_HOUR: u64 = 100 * MAX_SOURCES as u64;
/// Default `QUOTA_STORED_BYTES`: 100 GiB.
const DEFAULT_STORED_BYTES: u64 = 100 << 30;

/// The `QUOTA_*` settings; `0` turns a quota off.
fn quotas(reader: &Reader<'_>) -> Result<Quotas, ConfigError> {
    let limit = |value: u64| (value > 0).then_some(value);
    let quotas = Quotas {
        active_exports: limit(reader.parsed("QUOTA_ACTIVE_EXPORTS", DEFAULT_ACTIVE_EXPORTS)?),
        sources_per_hour: limit(reader.parsed("QUOTA_SOURCES_PER_HOUR", DEFAULT_SOURCES_PER_HOUR)?),
        stored_bytes: limit(reader.parsed("QUOTA_STORED_BYTES", DEFAULT_STORED_BYTES)?),
    };
    // Below one full request the quota would refuse a valid request forever.
    if quotas
        .sources_per_hour
        .is_some_and(|limit| limit < MAX_SOURCES as u64)
    {
        return Err(invalid(
            "QUOTA_SOURCES_PER_HOUR",
            format!(
                "must be 0 (no quota) or at least {MAX_SOURCES}, the most sources one request may name"
            ),
        ));
    }
    Ok(quotas)
}

/// The configuration of exactly `pairs`, or its error's text: for the settings modules' tests.
#[cfg(test)]
fn config_of(pairs: &[(&str, &str)]) -> Result<Config, String> {
    Config::from_settings(&Settings::from_pairs(
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    ))
    .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(
            pairs
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        )
    }

    fn error_of(pairs: &[(&str, &str)]) -> String {
        Config::from_settings(&settings(pairs))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn quotas_have_defaults_and_zero_turns_one_off() {
        let config = |pairs: &[(&str, &str)]| Config::from_settings(&settings(pairs));
        let defaults = config(&[]).unwrap().quotas;
        assert_eq!(defaults.active_exports, Some(200));
        assert_eq!(defaults.sources_per_hour, Some(10_000));
        assert_eq!(defaults.stored_bytes, Some(100 << 30));
        let off = config(&[
            ("QUOTA_ACTIVE_EXPORTS", "0"),
            ("QUOTA_SOURCES_PER_HOUR", "0"),
            ("QUOTA_STORED_BYTES", "0"),
        ])
        .unwrap()
        .quotas;
        assert!(!off.any());
        let error = config(&[("QUOTA_SOURCES_PER_HOUR", "50")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("QUOTA_SOURCES_PER_HOUR") && error.contains("100"),
            "{error}"
        );
        assert!(config(&[("QUOTA_STORED_BYTES", "-1")]).is_err());
    }

    #[test]
    fn the_latest_expiry_defaults_to_a_year_and_never_undercuts_the_default_lifetime() {
        let config = |pairs: &[(&str, &str)]| Config::from_settings(&settings(pairs)).unwrap();
        assert_eq!(config(&[]).export_max_expiry_days, 365);
        assert_eq!(
            config(&[("EXPORT_EXPIRY_DAYS", "400")]).export_max_expiry_days,
            400
        );
        assert_eq!(
            config(&[("EXPORT_MAX_EXPIRY_DAYS", "30")]).export_max_expiry_days,
            30
        );
        let error = error_of(&[
            ("EXPORT_EXPIRY_DAYS", "10"),
            ("EXPORT_MAX_EXPIRY_DAYS", "9"),
        ]);
        assert!(
            error.contains("EXPORT_MAX_EXPIRY_DAYS") && error.contains("(10)"),
            "{error}"
        );
    }

    #[test]
    fn defaults_match_the_upstream() {
        let config = Config::from_settings(&Settings::default()).unwrap();
        assert_eq!(
            (config.public_port, config.private_port, config.metrics_port),
            (8000, 10000, 9000)
        );
        assert_eq!(config.export_expiry_days, 7);
        assert!(config.enabled_apps.allows("exampleApp", "exampleResource"));
        assert!(!config.enabled_apps.allows("exampleApp", "other"));
        assert_eq!(config.public_timeouts.read, Duration::from_secs(5));
        assert_eq!(config.public_timeouts.write, Duration::from_secs(10));
        assert_eq!(config.rate_limit.burst, 60);
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.database.migrate_on_start);
        assert_eq!(
            config.listener_limits,
            ListenerLimits {
                header_read_timeout: Duration::from_secs(10),
                max_connections: 512,
            }
        );
    }

    #[test]
    fn errors_name_the_variable() {
        assert!(error_of(&[("PUBLIC_PORT", "eighty")]).starts_with("invalid PUBLIC_PORT"));
        assert!(error_of(&[("EXPORT_ENABLE_APPS", "{oops")]).contains("EXPORT_ENABLE_APPS"));
        assert!(error_of(&[("EXPORT_EXPIRY_DAYS", "0")]).contains("EXPORT_EXPIRY_DAYS"));
        assert!(error_of(&[("EXPORT_EXPIRY_DAYS", "100000000")]).contains("EXPORT_EXPIRY_DAYS"));
        assert!(error_of(&[("RATE_LIMIT_RATE", "1e-20")]).contains("RATE_LIMIT_RATE"));
        assert!(error_of(&[("DB_STATEMENT_TIMEOUT", "soon")]).contains("DB_STATEMENT_TIMEOUT"));
        assert!(error_of(&[("DEBUG", "yes please")]).contains("DEBUG"));
        assert!(
            error_of(&[("PUBLIC_HTTP_SERVER_READ_TIMEOUT", "5")])
                .contains("PUBLIC_HTTP_SERVER_READ_TIMEOUT")
        );
        assert!(error_of(&[("METRICS_PORT", "8000")]).contains("METRICS_PORT"));
        assert!(error_of(&[("LOG_LEVEL", "loud")]).contains("LOG_LEVEL"));
        assert!(
            error_of(&[("HTTP_HEADER_READ_TIMEOUT", "0s")]).contains("HTTP_HEADER_READ_TIMEOUT")
        );
        assert!(error_of(&[("MAX_CONNECTIONS", "0")]).contains("MAX_CONNECTIONS"));
    }

    #[test]
    fn secrets_are_never_printed() {
        let message = error_of(&[("DATABASE_URL", "mysql://user:hunter2@db/x")]);
        assert!(message.contains("DATABASE_URL"));
        assert!(!message.contains("hunter2"), "{message}");

        let config = Config::from_settings(&settings(&[("PGSQL_PASSWORD", "hunter2")])).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn debug_selects_readable_logs_and_levels_are_case_insensitive() {
        let config =
            Config::from_settings(&settings(&[("DEBUG", "true"), ("LOG_LEVEL", "DEBUG")])).unwrap();
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.log_filter, "debug");
    }
}
