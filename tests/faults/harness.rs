//! The fault suite's harness: real processes on free loopback ports, killed when dropped.
//!
//! - [`S3Server`]: an s3s-fs of the test's own over a fresh directory; it can be killed and
//!   started again on the same port and data directory.
//! - [`Broker`]: a tansu broker of the test's own (memory engine: a restart loses its topics
//!   and messages, so [`Broker::create_topic`] is called again after one).
//! - [`Database`]: a fresh, empty PostgreSQL database (the service migrates it at start-up),
//!   dropped with the value.
//! - [`Service`]: the `export-service serve` binary configured by environment variables, with a
//!   small client for the calls the tests make, and its RSS and CPU time read from `/proc`.
//!
//! Binaries come from `~/.cargo/bin` (installed by `scripts/ensure-s3.sh` and
//! `scripts/ensure-kafka.sh`) unless `S3S_FS_BIN` / `TANSU_BIN` name others. A process's output
//! goes to a log file; when a test fails, the last lines of each log are printed.

use std::fs::File;
use std::io::Seek;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The service binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_export-service");
/// Credentials of the test's own S3 servers.
pub const S3_ACCESS_KEY: &str = "faults-access-key";
/// See [`S3_ACCESS_KEY`].
pub const S3_SECRET_KEY: &str = "faults-secret-key-0123456789";
/// The bucket every test service uses (each test has its own S3 server).
pub const BUCKET: &str = "exports";
/// Application-bound keys of the internal API.
pub const PSKS: &str = r#"{"exampleApp": "psk-example", "otherApp": "psk-other"}"#;
/// The key of `exampleApp`.
pub const EXAMPLE_PSK: &str = "psk-example";
/// The key of `otherApp`.
pub const OTHER_PSK: &str = "psk-other";
/// The admin token of services that enable the admin API.
pub const ADMIN_TOKEN: &str = "faults-admin-token-0123456789";

/// Prints a measured figure in a form the suite's runner can collect from `--nocapture` output.
pub fn figure(case: &str, what: &str, value: impl std::fmt::Display) {
    eprintln!("FIGURE: {case}: {what} = {value}");
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh scratch directory under the system's temporary directory.
pub fn scratch_dir(what: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!(
        "exsvc-faults-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&directory).expect("create a scratch directory");
    directory
}

/// A fresh path for a log file under the system's temporary directory (not created).
fn log_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "exsvc-faults-{what}-{}.log",
        uuid::Uuid::new_v4().simple()
    ))
}

/// A scratch directory, removed when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether something accepts TCP connections on `port`.
fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Waits until `port` accepts connections; panics naming `what` and its log after `timeout`.
async fn wait_listening(port: u16, what: &str, log: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !listening(port) {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within {timeout:?}; log:\n{}",
            tail(log, 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `lines` lines of a log file.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An installed helper binary: `$<variable>` if set, else `~/.cargo/bin/<name>`, else `name`.
fn installed(name: &str, variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        let path = format!(
            "{}/.cargo/bin/{name}",
            std::env::var("HOME").unwrap_or_default()
        );
        if Path::new(&path).exists() {
            path
        } else {
            name.to_owned()
        }
    })
}

/// Spawns `command` with stdout and stderr appended to `log`.
fn spawn_logged(command: &mut Command, log: &Path, what: &str) -> Child {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open a log file");
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {what}: {error}"))
}

/// SIGKILLs `child` (if still running) and reaps it.
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Prints a log's tail when the current test is failing (called from `Drop`).
fn report_if_failing(what: &str, log: &Path) {
    if std::thread::panicking() {
        eprintln!(
            "---- last lines of {what} ({}):\n{}",
            log.display(),
            tail(log, 40)
        );
    }
}

/// An s3s-fs server of the test's own.
pub struct S3Server {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl S3Server {
    /// Starts a server on a free port over a fresh directory holding the (empty) bucket
    /// [`BUCKET`].
    pub async fn start() -> Self {
        let data = scratch_dir("s3");
        // s3s-fs maps a bucket to a directory.
        std::fs::create_dir_all(data.join(BUCKET)).unwrap();
        let log = data.with_extension("log");
        let mut server = Self {
            child: None,
            port: free_port(),
            data,
            log,
        };
        server.restart().await;
        server
    }

    /// The endpoint URL for the service.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL); its data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        assert!(
            !listening(self.port),
            "the S3 port still answers after the kill"
        );
    }

    /// Freezes (`true`, SIGSTOP) or thaws (`false`, SIGCONT) the server: frozen, it accepts
    /// connections (the kernel does) but never answers — a hung store, not a dead one.
    pub fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("the S3 server is running");
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts the server (again) on the same port and data directory and waits until it listens.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the S3 server is already running");
        let child = spawn_logged(
            Command::new(installed("s3s-fs", "S3S_FS_BIN"))
                .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
                .arg(&self.data),
            &self.log,
            "s3s-fs (installed by scripts/ensure-s3.sh)",
        );
        self.child = Some(child);
        wait_listening(self.port, "s3s-fs", &self.log, Duration::from_secs(20)).await;
    }

    /// Parts of multipart uploads in progress: s3s-fs keeps each as a file
    /// `.upload_id-<id>.part-<n>` in its root until the upload completes.
    pub fn parts_in_progress(&self) -> usize {
        std::fs::read_dir(&self.data)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.starts_with(".upload_id-") && name.contains(".part-")
            })
            .count()
    }

    /// Keys of the objects under `prefix` in [`BUCKET`], listed through the S3 API (uploads in
    /// progress are not objects).
    pub async fn list(&self, prefix: &str) -> Vec<String> {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                S3_ACCESS_KEY,
                S3_SECRET_KEY,
                None,
                None,
                "faults",
            ))
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.expect("list the bucket");
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key().map(str::to_owned)),
            );
        }
        keys.sort();
        keys
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        report_if_failing("s3s-fs", &self.log);
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A tansu broker of the test's own (in-memory storage).
pub struct Broker {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl Broker {
    /// Starts a broker on a free port.
    pub async fn start() -> Self {
        let mut broker = Self {
            child: None,
            port: free_port(),
            log: log_path("kafka"),
        };
        broker.restart().await;
        broker
    }

    /// `host:port` for clients.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL). Its memory engine loses every topic and message.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        assert!(
            !listening(self.port),
            "the broker port still answers after the kill"
        );
    }

    /// Starts the broker (again) on the same port and waits until it listens.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let url = format!("tcp://{}", self.address());
        let child = spawn_logged(
            Command::new(installed("tansu", "TANSU_BIN"))
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"]),
            &self.log,
            "tansu (installed by scripts/ensure-kafka.sh)",
        );
        self.child = Some(child);
        wait_listening(self.port, "tansu", &self.log, Duration::from_secs(20)).await;
    }

    /// Creates `topic` with `partitions` partitions, retrying while the broker settles.
    pub async fn create_topic(&self, topic: &str, partitions: u32) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let output = Command::new(installed("tansu", "TANSU_BIN"))
                .args([
                    "topic",
                    "create",
                    "--broker",
                    &format!("tcp://{}", self.address()),
                ])
                .args(["--partitions", &partitions.to_string(), topic])
                .output()
                .expect("run tansu topic create");
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cannot create topic {topic}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        report_if_failing("tansu", &self.log);
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty database on the local PostgreSQL, dropped with this value (names start with
/// `exsvc_test_`, so `scripts/test.sh` removes any a killed run leaves).
pub struct Database {
    name: String,
    /// Its URL.
    pub url: String,
}

impl Database {
    /// Creates the database.
    pub async fn create() -> Self {
        use sqlx::Connection as _;
        let name = format!("exsvc_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_database_url();
        let mut connection = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to PostgreSQL (scripts/ensure-postgres.sh)");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut connection)
            .await
            .expect("create a test database");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// A small pool on the database, for the tests' own checks.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", &admin_database_url(), "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Settings every test service gets: loopback, this database and S3 server, two applications
/// with their keys, no rate limit in the way, info logs.
pub fn base_settings(database: &Database, s3: &S3Server) -> Vec<(String, String)> {
    [
        ("LISTEN_ADDRESS", "127.0.0.1".to_owned()),
        ("DATABASE_URL", database.url.clone()),
        ("HOSTNAME", "faults".to_owned()),
        // Packaging and worker events, not every request.
        (
            "LOG_LEVEL",
            "info,export_service::http::observe=warn".to_owned(),
        ),
        ("LOG_FORMAT", "text".to_owned()),
        (
            "EXPORT_ENABLE_APPS",
            json!({
                "exampleApp": ["exampleResource", "anotherExampleResource"],
                "otherApp": ["exampleResource", "events"],
            })
            .to_string(),
        ),
        ("RATE_LIMIT_RATE", "10000".to_owned()),
        ("RATE_LIMIT_BURST", "10000".to_owned()),
        ("S3_ENDPOINT", s3.endpoint()),
        ("AWS_ACCESS_KEY", S3_ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
        ("EXPORT_SERVICE_BUCKET", BUCKET.to_owned()),
        ("EXPORTS_PSKS", PSKS.to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// `settings` with `overrides` applied (same names replaced, new ones added).
pub fn with(
    mut settings: Vec<(String, String)>,
    overrides: &[(&str, &str)],
) -> Vec<(String, String)> {
    for (name, value) in overrides {
        settings.retain(|(existing, _)| existing != name);
        settings.push(((*name).to_owned(), (*value).to_owned()));
    }
    settings
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User + system CPU time.
    pub cpu: Duration,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size since start or since [`Service::reset_peak_rss`], KiB.
    pub peak_rss_kib: u64,
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// Reads `pid`'s CPU time (`/proc/PID/stat` utime + stime) and memory (`/proc/PID/status`
/// VmRSS, VmHWM).
pub fn usage_of(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which is in parentheses and may contain spaces): state is
    // field 3, utime 14 and stime 15.
    let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = clock_ticks_per_second();
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"))
    };
    Usage {
        cpu: Duration::from_millis(ticks * 1000 / per_second),
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    }
}

/// The `export-service serve` process under test.
pub struct Service {
    child: Option<Child>,
    settings: Vec<(String, String)>,
    /// Public (tenant) API port.
    pub public: u16,
    /// Internal (source application) API port.
    pub private: u16,
    /// Metrics and probes port.
    pub metrics: u16,
    log: PathBuf,
    /// A client without timeouts of its own (tests bound their waits).
    pub client: reqwest::Client,
}

impl Service {
    /// Starts the service with `settings` on free ports and waits until `/readyz` answers.
    pub async fn start(settings: Vec<(String, String)>) -> Self {
        let mut service = Self {
            child: None,
            settings,
            public: free_port(),
            private: free_port(),
            metrics: free_port(),
            log: log_path("service"),
            client: reqwest::Client::new(),
        };
        service.restart().await;
        service
    }

    /// Starts the process (again) with the same settings and ports; waits until it is ready.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the service is already running");
        let child = spawn_logged(
            Command::new(BINARY)
                .arg("serve")
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(self.settings.iter().map(|(name, value)| (name, value)))
                .env("PUBLIC_PORT", self.public.to_string())
                .env("PRIVATE_PORT", self.private.to_string())
                .env("METRICS_PORT", self.metrics.to_string()),
            &self.log,
            "export-service serve",
        );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the service exited at start-up ({status}); log:\n{}",
                    tail(&self.log, 40)
                );
            }
            let ready = self
                .client
                .get(format!("http://127.0.0.1:{}/readyz", self.metrics))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            // Readiness covers the metrics listener only; wait for the API listeners too.
            if ready.is_ok_and(|response| response.status() == 200)
                && listening(self.public)
                && listening(self.private)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the service was not ready within 90 s; log:\n{}",
                tail(&self.log, 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id (the service must be running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the service is running").id()
    }

    /// Kills the process with SIGKILL, as the kernel's OOM killer or a node failure would.
    pub fn sigkill(&mut self) {
        let mut child = self.child.take().expect("the service is running");
        kill_and_reap(&mut child);
    }

    /// The process's CPU time and memory now.
    pub fn usage(&self) -> Usage {
        usage_of(self.pid())
    }

    /// Resets the process's peak RSS (VmHWM) to its current RSS (Linux `clear_refs` 5), so a
    /// later [`Usage::peak_rss_kib`] is the peak of what followed.
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .expect("reset the peak RSS through /proc/PID/clear_refs");
    }

    /// A public API URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.public)
    }

    /// An internal API URL.
    pub fn internal_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.private)
    }

    /// Creates an export of `sources` ((application, resource) pairs) in `format` for `caller`;
    /// returns its id and its sources' ids in request order.
    pub async fn create_export(
        &self,
        caller: &Caller,
        format: &str,
        sources: &[(&str, &str)],
    ) -> (String, Vec<String>) {
        let body = json!({
            "name": "faults",
            "format": format,
            "sources": sources
                .iter()
                .map(|(application, resource)| json!({"application": application, "resource": resource}))
                .collect::<Vec<_>>(),
        });
        let reply = Reply::from(
            self.client
                .post(self.url("/api/export/v1/exports"))
                .header("x-rh-identity", caller.header())
                .json(&body)
                .send()
                .await
                .expect("create request"),
        )
        .await;
        assert_eq!(reply.status, 202, "create failed: {}", reply.text);
        let created = reply.json();
        let ids = created["sources"]
            .as_array()
            .expect("sources in the create answer")
            .iter()
            .map(|source| source["id"].as_str().unwrap().to_owned())
            .collect();
        (created["id"].as_str().unwrap().to_owned(), ids)
    }

    /// Uploads `body` as `content_type` for a source through the internal API.
    pub async fn upload(
        &self,
        export: &str,
        application: &str,
        source: &str,
        psk: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let response = self
            .client
            .post(self.internal_url(&format!(
                "/app/export/v1/{export}/{application}/{source}/upload"
            )))
            .header("x-rh-exports-psk", psk)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("upload request");
        Reply::from(response).await
    }

    /// Reports a source's error through the internal API (needs no object store).
    pub async fn report_error(
        &self,
        export: &str,
        application: &str,
        source: &str,
        psk: &str,
    ) -> Reply {
        let response = self
            .client
            .post(self.internal_url(&format!(
                "/app/export/v1/{export}/{application}/{source}/error"
            )))
            .header("x-rh-exports-psk", psk)
            .json(&json!({"error": 500, "message": "the source application failed on purpose"}))
            .send()
            .await
            .expect("error report request");
        Reply::from(response).await
    }

    /// The export's `/status` detail.
    pub async fn status(&self, caller: &Caller, export: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/api/export/v1/exports/{export}/status")))
            .header("x-rh-identity", caller.header())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("status request");
        Reply::from(response).await.json()
    }

    /// Polls `/status` until the export is `status`; panics with the last detail after
    /// `timeout`, or at once if it reaches another final status.
    pub async fn wait_for_status(
        &self,
        caller: &Caller,
        export: &str,
        status: &str,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let detail = self.status(caller, export).await;
            if detail["status"] == status {
                return detail;
            }
            let settled = ["complete", "partial", "failed"]
                .contains(&detail["status"].as_str().unwrap_or(""));
            assert!(
                !settled,
                "the export became {} instead of {status}: {detail}",
                detail["status"]
            );
            assert!(
                Instant::now() < deadline,
                "the export was not {status} within {timeout:?}: {detail}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Downloads the export's archive into a file; returns it, rewound.
    pub async fn download(&self, caller: &Caller, export: &str) -> File {
        use futures::StreamExt as _;
        use std::io::Write as _;
        let response = self
            .client
            .get(self.url(&format!("/api/export/v1/exports/{export}")))
            .header("x-rh-identity", caller.header())
            .send()
            .await
            .expect("download request");
        assert_eq!(response.status(), 200, "download of {export}");
        let path = scratch_dir("download").join("archive.zip");
        let mut file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.expect("archive bytes")).unwrap();
        }
        // The file stays readable through the open handle.
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
        file.rewind().unwrap();
        file
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        report_if_failing("export-service", &self.log);
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Its body as text.
    pub text: String,
}

impl Reply {
    /// Reads `response` whole.
    pub async fn from(response: reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            text: response.text().await.unwrap_or_default(),
        }
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text))
    }
}

/// Asserts that `status` and `body` are an error of the service's JSON envelope with this status
/// and a message containing `part`.
#[track_caller]
pub fn assert_json_error(status: u16, body: &str, expected: u16, part: &str) {
    assert_eq!(status, expected, "unexpected status; body: {body}");
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|error| panic!("error body is not JSON ({error}): {body}"));
    let message = value["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {body}"));
    assert!(
        message.to_lowercase().contains(&part.to_lowercase()),
        "message {message:?} lacks {part:?}"
    );
}

/// A tenant identity (`x-rh-identity`).
#[derive(Debug, Clone)]
pub struct Caller(Value);

impl Caller {
    /// A user of `org`.
    pub fn user(org: &str, username: &str) -> Self {
        Self(json!({"identity": {
            "account_number": "", "org_id": org, "type": "User",
            "internal": {"org_id": org},
            "user": {"username": username, "is_org_admin": false}
        }}))
    }

    /// The header value.
    pub fn header(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.to_string())
    }
}

/// A plugins directory binding `exampleApp` to `plugins/dist/<exampleapp_wasm>` and, if given,
/// `otherApp` to another component.
pub fn plugins_dir(example_app_wasm: &str, other_app_wasm: Option<&str>) -> ScratchDir {
    let directory = scratch_dir("plugins");
    let component = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("plugins/dist")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|error| {
            panic!(
                "{} is missing ({error}): run scripts/build-plugins.sh",
                path.display()
            )
        })
    };
    std::fs::write(
        directory.join("exampleApp.wasm"),
        component(example_app_wasm),
    )
    .unwrap();
    if let Some(other) = other_app_wasm {
        std::fs::write(directory.join("otherApp.wasm"), component(other)).unwrap();
    }
    ScratchDir(directory)
}

/// The status of source `id` in an export's `/status` detail.
pub fn source_status<'a>(detail: &'a Value, id: &str) -> &'a str {
    detail["sources"]
        .as_array()
        .and_then(|sources| sources.iter().find(|source| source["id"] == id))
        .and_then(|source| source["status"].as_str())
        .unwrap_or_else(|| panic!("source {id} missing from {detail}"))
}
