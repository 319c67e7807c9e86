//! The test harness: a fresh database per test (cloned from a migrated template), the real
//! server on random ports, and a small typed client.

use std::net::SocketAddr;

use base64::Engine as _;
use export_service::config::{Config, Settings};
use export_service::server::BoundService;
use export_service::storage::ObjectStore;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{OnceCell, oneshot};

/// The server the tests talk to and the database behind it.
pub struct TestApp {
    pub public: SocketAddr,
    pub private: SocketAddr,
    pub metrics: SocketAddr,
    pub pool: PgPool,
    /// The same object store the service uses.
    pub store: ObjectStore,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<()>>,
    /// The database this app created for itself, dropped with it.
    owned_database: Option<String>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(name) = self.owned_database.take() {
            // Best effort; scripts/test.sh removes whatever is left.
            let _ = std::process::Command::new("psql")
                .args(["-X", "-q", &admin_url(), "-c"])
                .arg(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Development credentials of the local S3 server (scripts/ensure-s3.sh).
pub const S3_ACCESS_KEY: &str = "export-service-dev";
/// See [`S3_ACCESS_KEY`].
pub const S3_SECRET_KEY: &str = "export-service-dev-secret";
/// Application-bound keys every test app accepts.
pub const PSKS: &str = r#"{"exampleApp": "psk-example", "otherApp": "psk-other"}"#;

pub fn s3_endpoint() -> String {
    std::env::var("TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9099".into())
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn database_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{name}")
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A migrated template database, created once per schema version (shared across test
/// processes: creation is serialised with an advisory lock).
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let mut digest = 0u64;
            for migration in export_service::db::MIGRATOR.iter() {
                for byte in migration.checksum.iter() {
                    digest = digest.wrapping_mul(31).wrapping_add(u64::from(*byte));
                }
            }
            let name = format!("exsvc_template_{digest:016x}");
            let mut admin = PgConnection::connect(&admin_url())
                .await
                .expect("admin connection");
            sqlx::query("SELECT pg_advisory_lock(74657374)")
                .execute(&mut admin)
                .await
                .unwrap();
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            if !exists {
                let building = format!("{name}_building");
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{building}\""))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                sqlx::query(&format!("CREATE DATABASE \"{building}\""))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let mut connection = PgConnection::connect(&database_url(&building))
                    .await
                    .unwrap();
                export_service::db::MIGRATOR
                    .run(&mut connection)
                    .await
                    .expect("migrations apply to an empty database");
                connection.close().await.unwrap();
                sqlx::query(&format!(
                    "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
                ))
                .execute(&mut admin)
                .await
                .unwrap();
            }
            sqlx::query("SELECT pg_advisory_unlock(74657374)")
                .execute(&mut admin)
                .await
                .unwrap();
            name
        })
        .await
}

/// Creates an empty database of the current schema and returns its URL.
pub async fn fresh_database() -> String {
    let template = template().await;
    let name = format!("exsvc_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    let mut attempts = 0;
    loop {
        let created = sqlx::query(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .execute(&mut admin)
        .await;
        match created {
            Ok(_) => break,
            // Another process may be connected to the template for a moment.
            Err(error) if attempts < 20 => {
                attempts += 1;
                eprintln!("retrying CREATE DATABASE: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot create test database: {error}"),
        }
    }
    database_url(&name)
}

/// An empty, unmigrated database (for the `migrate` command's tests).
pub async fn empty_database() -> String {
    let name = format!("exsvc_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap();
    database_url(&name)
}

impl TestApp {
    /// Starts the service on random ports against a fresh database.
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// Like [`TestApp::spawn`], with extra settings.
    pub async fn spawn_with(settings: &[(&str, &str)]) -> Self {
        let url = fresh_database().await;
        let mut app = Self::spawn_on(&url, settings).await;
        app.owned_database = url.rsplit_once('/').map(|(_, name)| name.to_string());
        app
    }

    /// Starts the service against `database_url` (not migrated by the server itself).
    pub async fn spawn_on(database_url: &str, settings: &[(&str, &str)]) -> Self {
        init_test_logging();
        let mut pairs: Vec<(String, String)> = vec![
            ("LISTEN_ADDRESS".into(), "127.0.0.1".into()),
            ("PUBLIC_PORT".into(), "0".into()),
            ("PRIVATE_PORT".into(), "0".into()),
            ("METRICS_PORT".into(), "0".into()),
            ("DATABASE_URL".into(), database_url.into()),
            ("HOSTNAME".into(), "test-host".into()),
            (
                "EXPORT_ENABLE_APPS".into(),
                json!({
                    "exampleApp": ["exampleResource", "anotherExampleResource"],
                    "otherApp": ["exampleResource", "events"],
                })
                .to_string(),
            ),
            ("RATE_LIMIT_RATE".into(), "10000".into()),
            ("RATE_LIMIT_BURST".into(), "10000".into()),
            // The real S3-compatible server started by scripts/ensure-s3.sh, one bucket per app.
            ("S3_ENDPOINT".into(), s3_endpoint()),
            ("AWS_ACCESS_KEY".into(), S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into()),
            (
                "EXPORT_SERVICE_BUCKET".into(),
                format!("exsvc-test-{}", uuid::Uuid::new_v4().simple()),
            ),
            ("S3_CREATE_BUCKET".into(), "true".into()),
            ("EXPORTS_PSKS".into(), PSKS.into()),
        ];
        pairs.extend(
            settings
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
        let config = Config::from_settings(&Settings::from_pairs(pairs)).expect("test config");
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect_lazy_with(config.database.connect_options.clone());
        let store = ObjectStore::from_config(&config.store, &config.layout)
            .await
            .expect("object store");
        let service = BoundService::bind(config, pool.clone())
            .await
            .expect("bind");
        let (public, private, metrics) = (
            service.public_addr(),
            service.private_addr(),
            service.metrics_addr(),
        );
        let (sender, receiver) = oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            service
                .run(async move {
                    let _ = receiver.await;
                })
                .await
                .expect("service ran");
        });
        Self {
            public,
            private,
            metrics,
            pool,
            store,
            client: reqwest::Client::new(),
            shutdown: Some(sender),
            running: Some(running),
            owned_database: None,
        }
    }

    /// Requests a graceful shutdown and waits for the service to finish; returns how long it
    /// took.
    pub async fn stop(mut self) -> std::time::Duration {
        let started = std::time::Instant::now();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(running) = self.running.take() {
            running.await.expect("service task");
        }
        started.elapsed()
    }

    /// The Prometheus exposition of the metrics listener.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.metrics_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of a metric, if exposed; `name` includes its labels, e.g.
    /// `export_service_kafka_produced{topic="t"}`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        text.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn internal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.private)
    }

    /// Uploads `body` for a source through the internal API (suffix path shape).
    pub async fn upload(
        &self,
        export: &str,
        application: &str,
        source: &str,
        psk: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        self.upload_as(export, application, source, psk, None, body)
            .await
    }

    /// Like [`TestApp::upload`], declaring the body's `Content-Type`.
    pub async fn upload_as(
        &self,
        export: &str,
        application: &str,
        source: &str,
        psk: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self
            .client
            .post(self.internal_url(&format!(
                "/app/export/v1/{export}/{application}/{source}/upload"
            )))
            .body(body);
        if let Some(psk) = psk {
            request = request.header("x-rh-exports-psk", psk);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        Reply::from(request.send().await.unwrap()).await
    }

    /// Reports a source's error through the internal API.
    pub async fn report_error(
        &self,
        export: &str,
        application: &str,
        source: &str,
        psk: Option<&str>,
        body: Value,
    ) -> Reply {
        let mut request = self
            .client
            .post(self.internal_url(&format!(
                "/app/export/v1/{export}/{application}/{source}/error"
            )))
            .json(&body);
        if let Some(psk) = psk {
            request = request.header("x-rh-exports-psk", psk);
        }
        Reply::from(request.send().await.unwrap()).await
    }

    /// Polls `/status` until the export reaches `status` (10 s at most); returns the detail.
    pub async fn wait_for_status(&self, caller: &Caller, export: &str, status: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let detail = self
                .get(&format!("/api/export/v1/exports/{export}/status"), caller)
                .await
                .json();
            if detail["status"] == status {
                return detail;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "export never became {status}: {detail}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Downloads the archive whole.
    pub async fn download(
        &self,
        caller: &Caller,
        export: &str,
    ) -> (reqwest::header::HeaderMap, Vec<u8>) {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/api/export/v1/exports/{export}"),
                caller,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        (headers, response.bytes().await.unwrap().to_vec())
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics)
    }

    /// A request to the public API as `caller`.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        caller: &Caller,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-rh-identity", caller.header())
    }

    pub async fn get(&self, path: &str, caller: &Caller) -> Reply {
        Reply::from(
            self.request(reqwest::Method::GET, path, caller)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn delete(&self, path: &str, caller: &Caller) -> Reply {
        Reply::from(
            self.request(reqwest::Method::DELETE, path, caller)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        caller: &Caller,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        Reply::from(
            self.request(reqwest::Method::POST, path, caller)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Creates an export and asserts it was accepted; returns the response body.
    pub async fn create(&self, caller: &Caller, body: Value) -> Value {
        let reply = self
            .post_raw("/api/export/v1/exports", caller, body.to_string())
            .await;
        assert_eq!(reply.status, 202, "create failed: {}", reply.text);
        reply.json()
    }
}

/// Service logs go to the test's captured output (shown when a test fails); `RUST_LOG`
/// overrides the default level, `warn`.
fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts an error in the JSON envelope with this status and message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self.assert_error_headers();
        let body = self.json();
        assert_eq!(body["code"], json!(status), "{body}");
        assert_eq!(body["message"], json!(message), "{body}");
    }

    /// Every error is JSON, not sniffable, and carries the request id.
    #[track_caller]
    fn assert_error_headers(&self) {
        assert_eq!(
            self.header("content-type"),
            Some("application/json; charset=utf-8"),
            "{:?}",
            self.headers
        );
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
        assert!(
            self.header("x-rh-insights-request-id").is_some()
                || self.header("x-request-id").is_some(),
            "the request id is echoed on errors too"
        );
    }

    /// Asserts an error in the JSON envelope with this status whose message contains `part`.
    #[track_caller]
    pub fn assert_error_containing(&self, status: u16, part: &str) {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self.assert_error_headers();
        let body = self.json();
        assert_eq!(body["code"], json!(status), "{body}");
        let message = body["message"].as_str().expect("message is a string");
        assert!(message.contains(part), "message {message:?} lacks {part:?}");
    }
}

/// A tenant identity.
#[derive(Debug, Clone)]
pub struct Caller {
    identity: Value,
}

impl Caller {
    pub fn user(org: &str, username: &str) -> Self {
        Self::from_json(json!({"identity": {
            "account_number": "", "org_id": org, "type": "User",
            "internal": {"org_id": org},
            "user": {"username": username, "is_org_admin": false}
        }}))
    }

    pub fn user_with_account(org: &str, username: &str, account: &str) -> Self {
        let mut caller = Self::user(org, username);
        caller.identity["identity"]["account_number"] = json!(account);
        caller
    }

    /// A `System` identity (certificate) named by `cn`.
    pub fn system(org: &str, cn: &str) -> Self {
        Self::from_json(json!({"identity": {
            "account_number": "", "org_id": org, "type": "System",
            "internal": {"org_id": org},
            "system": {"cn": cn, "cert_type": "system"}
        }}))
    }

    /// A `ServiceAccount` identity named by `username`.
    pub fn service_account(org: &str, username: &str) -> Self {
        Self::from_json(json!({"identity": {
            "account_number": "", "org_id": org, "type": "ServiceAccount",
            "internal": {"org_id": org},
            "service_account": {"client_id": "client-1", "username": username}
        }}))
    }

    pub fn from_json(identity: Value) -> Self {
        Self { identity }
    }

    pub fn header(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.identity.to_string())
    }
}

/// A create request for the given (application, resource) pairs.
pub fn export_request(name: &str, format: &str, sources: &[(&str, &str)]) -> Value {
    json!({
        "name": name,
        "format": format,
        "sources": sources
            .iter()
            .map(|(application, resource)| json!({"application": application, "resource": resource}))
            .collect::<Vec<_>>(),
    })
}

/// Shared reference to the upstream's documents (conformance data, never copied).
pub fn upstream_reference(file: &str) -> std::path::PathBuf {
    let directory = std::env::var("UPSTREAM_REFERENCE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/upstream")
        });
    directory.join(file)
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The bytes of a built plugin component (`plugins/dist/<name>`).
pub fn plugin_component(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/dist")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "{} is missing ({error}): run scripts/build-plugins.sh",
            path.display()
        )
    })
}

/// Waits until `count` outbox events are marked sent (20 s at most).
pub async fn wait_until_sent(app: &TestApp, count: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if sent >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sent} of {count} events sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Starts an upload to exampleApp's `source` of `export` that sends its head and the first bytes
/// of a 1 MB body, then nothing: it holds an upload slot until the connection is dropped (or
/// the idle timeout ends it).
pub async fn hold_upload(app: &TestApp, export: &str, source: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut upload = tokio::net::TcpStream::connect(app.private).await.unwrap();
    let head = format!(
        "POST /app/export/v1/{export}/exampleApp/{source}/upload HTTP/1.1\r\nHost: test\r\n\
         x-rh-exports-psk: psk-example\r\nContent-Type: text/csv\r\nContent-Length: 1000000\r\n\r\n\
         id,name\n"
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    upload
}
