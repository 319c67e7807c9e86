//! Clowder (console.redhat.com's operator): when `ACG_CONFIG` names its `cdappconfig.json`, the
//! ports, database, Kafka brokers and topic, object store and bucket it provides override the
//! environment — as the upstream does. The file's values are translated into the same setting
//! names the environment uses, so they are validated by the same code; certificates it carries
//! inline (the database's RDS CA, the Kafka CA) are written to files the clients can read.

use std::path::Path;

use serde::Deserialize;

use super::FileError;
use super::settings::Settings;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppConfig {
    public_port: Option<u16>,
    private_port: Option<u16>,
    metrics_port: Option<u16>,
    database: Option<Database>,
    kafka: Option<Kafka>,
    object_store: Option<ObjectStore>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Database {
    name: String,
    username: String,
    password: String,
    hostname: String,
    port: u16,
    ssl_mode: Option<String>,
    rds_ca: Option<String>,
}

#[derive(Deserialize)]
struct Kafka {
    #[serde(default)]
    brokers: Vec<Broker>,
    #[serde(default)]
    topics: Vec<Topic>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Broker {
    hostname: String,
    port: Option<u16>,
    cacert: Option<String>,
    authtype: Option<String>,
    sasl: Option<Sasl>,
    security_protocol: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sasl {
    username: Option<String>,
    password: Option<String>,
    sasl_mechanism: Option<String>,
    security_protocol: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Topic {
    requested_name: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectStore {
    hostname: String,
    port: u16,
    #[serde(default)]
    tls: bool,
    access_key: Option<String>,
    secret_key: Option<String>,
    #[serde(default)]
    buckets: Vec<Bucket>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bucket {
    requested_name: String,
    name: String,
    access_key: Option<String>,
    secret_key: Option<String>,
    region: Option<String>,
}

/// The settings Clowder's `cdappconfig.json` (`text`) provides, given the settings so far
/// (`base`, for the requested topic and bucket names). Inline certificates are written under
/// `certificates`. Errors name what is wrong without quoting secrets.
pub fn settings_from_app_config(
    text: &str,
    base: &Settings,
    certificates: &Path,
) -> Result<Settings, FileError> {
    let config: AppConfig = serde_json::from_str(text).map_err(|error| {
        // Type errors quote the offending value, which may be a secret: say where it is.
        let text = error.to_string();
        if text.starts_with("missing field") {
            FileError::AppConfigIncomplete(text)
        } else {
            FileError::AppConfigInvalid {
                line: error.line(),
                column: error.column(),
            }
        }
    })?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: String| pairs.push((name.to_owned(), value));
    for (name, port) in [
        ("PUBLIC_PORT", config.public_port),
        ("PRIVATE_PORT", config.private_port),
        ("METRICS_PORT", config.metrics_port),
    ] {
        if let Some(port) = port {
            set(name, port.to_string());
        }
    }
    if let Some(database) = config.database {
        set("PGSQL_HOSTNAME", database.hostname);
        set("PGSQL_PORT", database.port.to_string());
        set("PGSQL_USER", database.username);
        set("PGSQL_PASSWORD", database.password);
        set("PGSQL_DATABASE", database.name);
        if let Some(mode) = database.ssl_mode.filter(|mode| !mode.is_empty()) {
            set("PGSQL_SSLMODE", mode);
        }
        if let Some(ca) = database.rds_ca.filter(|ca| !ca.trim().is_empty()) {
            set(
                "PGSQL_SSLROOTCERT",
                write_certificate(certificates, "rds-ca.pem", &ca)?,
            );
        }
    }
    if let Some(kafka) = config.kafka {
        if !kafka.brokers.is_empty() {
            let servers: Vec<String> = kafka
                .brokers
                .iter()
                .map(|broker| format!("{}:{}", broker.hostname, broker.port.unwrap_or(9092)))
                .collect();
            set("KAFKA_BROKERS", servers.join(","));
            let broker = &kafka.brokers[0];
            let sasl = broker
                .sasl
                .as_ref()
                .filter(|_| broker.authtype.as_deref().is_none_or(|kind| kind == "sasl"));
            if let Some(sasl) = sasl {
                if let Some(username) = &sasl.username {
                    set("KAFKA_SASL_USERNAME", username.clone());
                }
                if let Some(password) = &sasl.password {
                    set("KAFKA_SASL_PASSWORD", password.clone());
                }
                set(
                    "KAFKA_SASL_MECHANISM",
                    sasl.sasl_mechanism
                        .clone()
                        .unwrap_or_else(|| "SCRAM-SHA-512".into()),
                );
            }
            let protocol = broker
                .security_protocol
                .clone()
                .or_else(|| sasl.and_then(|sasl| sasl.security_protocol.clone()))
                .or_else(|| sasl.map(|_| "SASL_SSL".to_owned()))
                .or_else(|| broker.cacert.as_ref().map(|_| "SSL".to_owned()));
            if let Some(protocol) = protocol {
                set("KAFKA_SECURITY_PROTOCOL", protocol.to_ascii_lowercase());
            }
            if let Some(ca) = broker.cacert.as_ref().filter(|ca| !ca.trim().is_empty()) {
                set(
                    "KAFKA_SSL_CA_LOCATION",
                    write_certificate(certificates, "kafka-ca.pem", ca)?,
                );
            }
        }
        let requested = base
            .get("KAFKA_ANNOUNCE_TOPIC")
            .unwrap_or("platform.export.requests");
        if let Some(topic) = kafka
            .topics
            .iter()
            .find(|topic| topic.requested_name == requested)
        {
            set("KAFKA_ANNOUNCE_TOPIC", topic.name.clone());
        }
    }
    if let Some(store) = config.object_store {
        let scheme = if store.tls { "https" } else { "http" };
        set("OBJECT_STORE", "s3".into());
        set(
            "S3_ENDPOINT",
            format!("{scheme}://{}:{}", store.hostname, store.port),
        );
        let requested = base
            .get("EXPORT_SERVICE_BUCKET")
            .unwrap_or("exports-bucket");
        let bucket = store
            .buckets
            .iter()
            .find(|bucket| bucket.requested_name == requested);
        let access_key = bucket
            .and_then(|bucket| bucket.access_key.clone())
            .or(store.access_key);
        let secret_key = bucket
            .and_then(|bucket| bucket.secret_key.clone())
            .or(store.secret_key);
        if let Some(bucket) = bucket {
            set("EXPORT_SERVICE_BUCKET", bucket.name.clone());
            if let Some(region) = bucket.region.clone().filter(|region| !region.is_empty()) {
                set("AWS_REGION", region);
            }
        }
        if let (Some(access_key), Some(secret_key)) = (access_key, secret_key) {
            set("AWS_ACCESS_KEY", access_key);
            set("AWS_SECRET_ACCESS_KEY", secret_key);
        }
    }
    Ok(Settings::from_pairs(pairs))
}

/// Writes an inline PEM certificate to `directory/name` and returns the file's path.
fn write_certificate(directory: &Path, name: &str, pem: &str) -> Result<String, FileError> {
    let path = directory.join(name);
    std::fs::create_dir_all(directory)
        .and_then(|()| std::fs::write(&path, pem))
        .map_err(|source| FileError::Certificate {
            path: path.display().to_string(),
            source,
        })?;
    Ok(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP_CONFIG: &str = r#"{
        "publicPort": 8000, "privatePort": 10000, "metricsPort": 9000, "metricsPath": "/metrics",
        "logging": {"type": "null"},
        "database": {"name": "export-service", "username": "u", "password": "p", "hostname": "db.svc",
                     "port": 5432, "adminUsername": "a", "adminPassword": "ap", "sslMode": "verify-full",
                     "rdsCa": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
        "kafka": {"brokers": [{"hostname": "kafka-0", "port": 9093, "authtype": "sasl",
                               "cacert": "-----BEGIN CERTIFICATE-----\nKAFKA\n-----END CERTIFICATE-----\n",
                               "sasl": {"username": "ku", "password": "kp", "saslMechanism": "SCRAM-SHA-512",
                                        "securityProtocol": "SASL_SSL"}},
                              {"hostname": "kafka-1", "port": 9093}],
                  "topics": [{"requestedName": "platform.export.requests", "name": "env-platform.export.requests"}]},
        "objectStore": {"hostname": "minio.svc", "port": 9000, "tls": false, "accessKey": "store-key",
                        "secretKey": "store-secret",
                        "buckets": [{"requestedName": "exports-bucket", "name": "exports-bucket-env",
                                     "accessKey": "bucket-key", "secretKey": "bucket-secret", "region": "eu-west-1"}]}
    }"#;

    fn certificates() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("exsvc-clowder-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn every_provided_service_becomes_the_matching_settings() {
        let directory = certificates();
        let base = Settings::from_pairs([]);
        let settings = settings_from_app_config(APP_CONFIG, &base, &directory).unwrap();
        let expect = [
            ("PUBLIC_PORT", "8000"),
            ("PRIVATE_PORT", "10000"),
            ("METRICS_PORT", "9000"),
            ("PGSQL_HOSTNAME", "db.svc"),
            ("PGSQL_PORT", "5432"),
            ("PGSQL_USER", "u"),
            ("PGSQL_PASSWORD", "p"),
            ("PGSQL_DATABASE", "export-service"),
            ("PGSQL_SSLMODE", "verify-full"),
            ("KAFKA_BROKERS", "kafka-0:9093,kafka-1:9093"),
            ("KAFKA_SASL_USERNAME", "ku"),
            ("KAFKA_SASL_PASSWORD", "kp"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_ANNOUNCE_TOPIC", "env-platform.export.requests"),
            ("OBJECT_STORE", "s3"),
            ("S3_ENDPOINT", "http://minio.svc:9000"),
            ("EXPORT_SERVICE_BUCKET", "exports-bucket-env"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY", "bucket-key"),
            ("AWS_SECRET_ACCESS_KEY", "bucket-secret"),
        ];
        for (name, value) in expect {
            assert_eq!(settings.get(name), Some(value), "{name}");
        }
        let rds = settings.get("PGSQL_SSLROOTCERT").unwrap();
        assert!(std::fs::read_to_string(rds).unwrap().contains("MIIB"));
        let kafka = settings.get("KAFKA_SSL_CA_LOCATION").unwrap();
        assert!(std::fs::read_to_string(kafka).unwrap().contains("KAFKA"));
        std::fs::remove_dir_all(directory).ok();
    }

    #[test]
    fn topic_and_bucket_are_looked_up_by_the_requested_names_configured() {
        let base = Settings::from_pairs([
            ("KAFKA_ANNOUNCE_TOPIC".to_owned(), "other.topic".to_owned()),
            (
                "EXPORT_SERVICE_BUCKET".to_owned(),
                "other-bucket".to_owned(),
            ),
        ]);
        let settings = settings_from_app_config(APP_CONFIG, &base, &certificates()).unwrap();
        // Not provided by Clowder under those names: the environment's values stay.
        assert_eq!(settings.get("KAFKA_ANNOUNCE_TOPIC"), None);
        assert_eq!(settings.get("EXPORT_SERVICE_BUCKET"), None);
        // The store's own credentials are used without a matching bucket.
        assert_eq!(settings.get("AWS_ACCESS_KEY"), Some("store-key"));
    }

    #[test]
    fn a_minimal_config_sets_only_what_it_has_and_tls_means_https() {
        let text = r#"{"publicPort": 8000, "objectStore": {"hostname": "s3.amazonaws.com", "port": 443, "tls": true}}"#;
        let settings =
            settings_from_app_config(text, &Settings::from_pairs([]), &certificates()).unwrap();
        assert_eq!(
            settings.get("S3_ENDPOINT"),
            Some("https://s3.amazonaws.com:443")
        );
        assert_eq!(settings.get("PGSQL_HOSTNAME"), None);
        assert_eq!(settings.get("KAFKA_BROKERS"), None);
        assert_eq!(settings.get("AWS_ACCESS_KEY"), None);
    }

    #[test]
    fn garbage_is_refused_without_quoting_it() {
        let error = settings_from_app_config(
            r#"{"database": {"password": "hunter2", "port": "hunter2"}}"#,
            &Settings::from_pairs([]),
            &certificates(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("not a Clowder app config"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
