//! A fleet: three `serve` processes on loopback sharing PostgreSQL, the object store and the
//! broker. A plugin version pushed and bound through one replica is in force on all three
//! within 2 s while uploads keep running on every replica, and none of them fails; a rollback
//! returns the fleet the same way; a restarted replica gets its bindings back from the database.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    Caller, PSKS, S3_ACCESS_KEY, S3_SECRET_KEY, export_request, free_port, fresh_database,
    plugin_component, s3_endpoint,
};

const BINARY: &str = env!("CARGO_BIN_EXE_export-service");
const TOKEN: &str = "fleet-admin-token-0123456789";

/// One `serve` process.
struct Replica {
    child: Child,
    public: u16,
    private: u16,
    metrics: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    async fn start(settings: &[(String, String)], client: &reqwest::Client) -> Self {
        let (public, private, metrics) = (free_port(), free_port(), free_port());
        let child = Command::new(BINARY)
            .arg("serve")
            .envs(settings.iter().map(|(name, value)| (name, value)))
            .env("PUBLIC_PORT", public.to_string())
            .env("PRIVATE_PORT", private.to_string())
            .env("METRICS_PORT", metrics.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let replica = Self {
            child,
            public,
            private,
            metrics,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("http://127.0.0.1:{metrics}/readyz"))
                .send()
                .await;
            if ready.is_ok_and(|response| response.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "replica never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        replica
    }

    fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/admin/v1{path}", self.private)
    }

    /// The version of `tagger` bound to exampleApp on this replica, per its metrics.
    async fn bound_version(&self, client: &reqwest::Client) -> Option<String> {
        let text = client
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .filter(|line| line.starts_with("export_service_plugin_binding_info{"))
            .filter(|line| line.contains(r#"application="exampleApp""#) && line.ends_with(" 1"))
            .find_map(|line| {
                let start = line.find(r#"version=""#)? + r#"version=""#.len();
                Some(line[start..].split('"').next()?.to_owned())
            })
    }

    /// Creates an export of one exampleApp source here and uploads a CSV to it through this
    /// replica; returns the export id, the HTTP status and the plugin version the upload ran.
    async fn export_and_upload(&self, client: &reqwest::Client) -> (String, u16, Option<String>) {
        let caller = Caller::user("org-fleet", "alice");
        let created: Value = client
            .post(format!(
                "http://127.0.0.1:{}/api/export/v1/exports",
                self.public
            ))
            .header("x-rh-identity", caller.header())
            .json(&export_request(
                "fleet",
                "csv",
                &[("exampleApp", "exampleResource")],
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let export = created["id"].as_str().unwrap().to_owned();
        let source = created["sources"][0]["id"].as_str().unwrap().to_owned();
        let response = client
            .post(format!(
                "http://127.0.0.1:{}/app/export/v1/{export}/exampleApp/{source}/upload",
                self.private
            ))
            .header("x-rh-exports-psk", "psk-example")
            .header("content-type", "text/csv")
            .body("id,name\n1,a\n2,b\n")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        let version = body["plugin"]["version"].as_str().map(str::to_owned);
        (export, status, version)
    }
}

/// Waits until every replica has `version` bound; returns how long the slowest took.
async fn converge(fleet: &[Replica], client: &reqwest::Client, version: &str) -> Duration {
    let started = Instant::now();
    for (index, replica) in fleet.iter().enumerate() {
        while replica.bound_version(client).await.as_deref() != Some(version) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "replica {index} never bound {version}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

/// The `plugin` entry of the one source in an export's meta.json.
async fn archived_plugin(replica: &Replica, client: &reqwest::Client, export: &str) -> Value {
    let caller = Caller::user("org-fleet", "alice");
    let deadline = Instant::now() + Duration::from_secs(30);
    let archive = loop {
        let response = client
            .get(format!(
                "http://127.0.0.1:{}/api/export/v1/exports/{export}",
                replica.public
            ))
            .header("x-rh-identity", caller.header())
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response.bytes().await.unwrap();
        }
        assert!(Instant::now() < deadline, "export {export} never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive.to_vec())).unwrap();
    let mut meta = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("meta.json").unwrap(), &mut meta).unwrap();
    let meta: Value = serde_json::from_str(&meta).unwrap();
    meta["file_meta"][0]["plugin"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_switches_plugin_versions_within_two_seconds_and_rolls_back() {
    let client = reqwest::Client::new();
    let database = fresh_database().await;
    let bucket = format!("exsvc-test-{}", uuid::Uuid::new_v4().simple());
    let settings: Vec<(String, String)> = [
        ("LISTEN_ADDRESS", "127.0.0.1".to_owned()),
        ("DATABASE_URL", database.clone()),
        ("LOG_LEVEL", "warn".to_owned()),
        (
            "EXPORT_ENABLE_APPS",
            json!({"exampleApp": ["exampleResource"]}).to_string(),
        ),
        ("EXPORTS_PSKS", PSKS.to_owned()),
        ("S3_ENDPOINT", s3_endpoint()),
        ("AWS_ACCESS_KEY", S3_ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
        ("EXPORT_SERVICE_BUCKET", bucket),
        ("S3_CREATE_BUCKET", "true".to_owned()),
        (
            "KAFKA_BROKERS",
            std::env::var("TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        ),
        (
            "KAFKA_ANNOUNCE_TOPIC",
            format!("exsvc-fleet-{}", uuid::Uuid::new_v4().simple()),
        ),
        ("ADMIN_TOKEN", TOKEN.to_owned()),
        // Long enough that only the notifications can explain a quick switch.
        ("PLUGIN_RESYNC_INTERVAL", "60s".to_owned()),
        ("RATE_LIMIT_RATE", "10000".to_owned()),
        ("RATE_LIMIT_BURST", "10000".to_owned()),
        // A load of exports from one organisation: quotas are not under test here.
        ("QUOTA_ACTIVE_EXPORTS", "0".to_owned()),
        ("QUOTA_SOURCES_PER_HOUR", "0".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(Replica::start(&settings, &client).await);
    }

    // Two versions of one plugin, pushed through replica 0; version 1 bound.
    for (file, version) in [("tagger_v1.wasm", "1.0.0"), ("tagger_v2.wasm", "2.0.0")] {
        let pushed = client
            .post(fleet[0].admin("/plugins"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/wasm")
            .body(plugin_component(file))
            .send()
            .await
            .unwrap();
        assert_eq!(pushed.status(), 201);
        let pushed: Value = pushed.json().await.unwrap();
        assert_eq!(pushed["plugin"]["version"], version);
    }
    let bind = |replica: &Replica, version: &str| {
        client
            .put(replica.admin("/bindings/exampleApp"))
            .bearer_auth(TOKEN)
            .header("x-admin-user", "fleet-test")
            .json(&json!({"plugin": "tagger", "version": version}))
            .send()
    };
    assert_eq!(bind(&fleet[0], "1.0.0").await.unwrap().status(), 200);
    converge(&fleet, &client, "1.0.0").await;

    // Uploads run on every replica all along.
    let fleet = Arc::new(fleet);
    let stop = Arc::new(AtomicBool::new(false));
    let mut uploaders = Vec::new();
    for index in 0..3 {
        let (fleet, stop, client) = (fleet.clone(), stop.clone(), client.clone());
        uploaders.push(tokio::spawn(async move {
            let mut results = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                results.push(fleet[index].export_and_upload(&client).await);
            }
            results
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Version 2 through replica 1: in force everywhere within 2 s.
    assert_eq!(bind(&fleet[1], "2.0.0").await.unwrap().status(), 200);
    let switched = converge(&fleet, &client, "2.0.0").await;
    assert!(switched <= Duration::from_secs(2), "took {switched:?}");
    eprintln!("fleet: version 2 in force on every replica after {switched:?}");
    for replica in fleet.iter() {
        let (export, status, version) = replica.export_and_upload(&client).await;
        assert_eq!((status, version.as_deref()), (202, Some("2.0.0")));
        assert_eq!(
            archived_plugin(replica, &client, &export).await["version"],
            "2.0.0"
        );
    }

    // A rollback through replica 2 returns every replica to version 1 the same way.
    let rolled = client
        .post(fleet[2].admin("/bindings/exampleApp/rollback"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(rolled.status(), 200);
    assert_eq!(rolled.json::<Value>().await.unwrap()["version"], "1.0.0");
    let rolled_back = converge(&fleet, &client, "1.0.0").await;
    assert!(
        rolled_back <= Duration::from_secs(2),
        "took {rolled_back:?}"
    );
    for replica in fleet.iter() {
        let (_, status, version) = replica.export_and_upload(&client).await;
        assert_eq!((status, version.as_deref()), (202, Some("1.0.0")));
    }

    stop.store(true, Ordering::Relaxed);
    let mut versions_seen = std::collections::BTreeSet::new();
    for (index, uploader) in uploaders.into_iter().enumerate() {
        let results = uploader.await.unwrap();
        assert!(!results.is_empty(), "replica {index} ran no upload");
        for (export, status, version) in results {
            assert_eq!(status, 202, "upload of {export} on replica {index} failed");
            versions_seen.insert(version.expect("every upload ran the plugin"));
        }
    }
    assert!(versions_seen.contains("1.0.0"), "{versions_seen:?}");

    // A restarted replica restores the binding from the database (no file on disk).
    let mut fleet = Arc::into_inner(fleet).expect("the uploaders are done");
    drop(fleet.pop());
    let restarted = Replica::start(&settings, &client).await;
    assert_eq!(
        restarted.bound_version(&client).await.as_deref(),
        Some("1.0.0")
    );
    let (_, status, version) = restarted.export_and_upload(&client).await;
    assert_eq!((status, version.as_deref()), (202, Some("1.0.0")));
}
