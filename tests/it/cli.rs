//! The `export-service` binary: configuration errors, `migrate`, and `serve` with nothing but a
//! reachable database, stopped gracefully by SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Caller, empty_database, free_port, fresh_database};

const BINARY: &str = env!("CARGO_BIN_EXE_export-service");

#[test]
fn a_bad_variable_exits_non_zero_naming_it() {
    for (name, value) in [
        ("PUBLIC_PORT", "eighty"),
        ("EXPORT_ENABLE_APPS", "{not json"),
        ("PGSQL_PORT", "-1"),
        ("PUBLIC_HTTP_SERVER_WRITE_TIMEOUT", "10"),
    ] {
        let output = Command::new(BINARY)
            .arg("serve")
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("invalid {name}")),
            "{name}: {stderr}"
        );
    }
    let output = Command::new(BINARY)
        .arg("serve")
        .env("DATABASE_URL", "mysql://root:hunter2@db/x")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("DATABASE_URL") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

#[tokio::test]
async fn migrate_then_serve_with_only_a_database_configured() {
    let url = empty_database().await;
    let status = Command::new(BINARY)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(service_tables(&url).await, 2);

    let (public, private, metrics) = (free_port(), free_port(), free_port());
    let mut child = Command::new(BINARY)
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("PUBLIC_PORT", public.to_string())
        .env("PRIVATE_PORT", private.to_string())
        .env("METRICS_PORT", metrics.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let caller = Caller::user("org-1", "alice");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ping = loop {
        let attempt = client
            .get(format!("http://127.0.0.1:{public}/api/export/v1/ping"))
            .header("x-rh-identity", caller.header())
            .send()
            .await;
        match attempt {
            Ok(response) => break response,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("service never answered: {error}"),
        }
    };
    assert_eq!(ping.status(), 200);
    let ready = client
        .get(format!("http://127.0.0.1:{metrics}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
}

/// Waits until `url` answers, or panics after 20 s.
/// How many of the service's main tables (`exports`, `sources`) the database at `url` has.
async fn service_tables(url: &str) -> i64 {
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('exports', 'sources')",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap()
}

async fn wait_until_up(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(url).send().await.is_err() {
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_config_file_is_read_and_logs_carry_ids_but_no_secrets() {
    let url = fresh_database().await;
    // Trust authentication ignores the password, which must never reach the logs.
    let url_with_password = url.replacen("postgres@", "postgres:s3cret-pw@", 1);
    let (public, metrics) = (free_port(), free_port());
    let directory =
        std::env::temp_dir().join(format!("exsvc-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    let config_file = directory.join("config.toml");
    std::fs::write(
        &config_file,
        format!(
            "PUBLIC_PORT = {public}\nMETRICS_PORT = {metrics}\nPRIVATE_PORT = {}\nLOG_FORMAT = \"json\"\n\
             [EXPORT_ENABLE_APPS]\nfileApp = [\"fileResource\"]\n",
            free_port()
        ),
    )
    .unwrap();
    let log_path = directory.join("stderr.log");
    let mut child = Command::new(BINARY)
        .args(["--config", config_file.to_str().unwrap(), "serve"])
        .env("DATABASE_URL", &url_with_password)
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_until_up(&client, &format!("http://127.0.0.1:{metrics}/healthz")).await;
    let caller = Caller::user("org-logs", "alice");
    let created: serde_json::Value = client
        .post(format!("http://127.0.0.1:{public}/api/export/v1/exports"))
        .header("x-rh-identity", caller.header())
        .body(
            r#"{"format":"json","sources":[{"application":"fileApp","resource":"fileResource"}]}"#,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let export_id = created["id"]
        .as_str()
        .expect("the allow-list came from the file")
        .to_string();
    assert!(terminate(&mut child).success());

    let logs = std::fs::read_to_string(&log_path).unwrap();
    let served = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "request served" && line["span"]["method"] == "POST")
        .unwrap_or_else(|| panic!("no access line for the create:\n{logs}"));
    assert_eq!(served["span"]["org_id"], "org-logs");
    assert_eq!(served["span"]["export_id"], export_id.as_str());
    assert_eq!(served["status"], 202);
    assert!(
        served["span"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(!logs.contains("s3cret-pw"), "the database password leaked");
    assert!(
        !logs.contains(&caller.header()),
        "the identity header leaked"
    );
    let _ = std::fs::remove_dir_all(&directory);
}

#[tokio::test]
async fn serve_leaves_the_schema_alone_when_told_to() {
    let url = empty_database().await;
    let (public, metrics) = (free_port(), free_port());
    let mut child = Command::new(BINARY)
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("DB_MIGRATE_ON_START", "false")
        .env("PUBLIC_PORT", public.to_string())
        .env("METRICS_PORT", metrics.to_string())
        .env("PRIVATE_PORT", free_port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_until_up(&client, &format!("http://127.0.0.1:{metrics}/healthz")).await;
    assert!(terminate(&mut child).success());
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'exports'",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(tables, 0, "DB_MIGRATE_ON_START=false must not migrate");
}

#[tokio::test]
async fn clean_runs_one_pass_and_exits() {
    let url = fresh_database().await;
    let directory =
        std::env::temp_dir().join(format!("exsvc-clean-{}", uuid::Uuid::new_v4().simple()));
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO exports (id, org_id, username, format, expires_at) \
         VALUES (gen_random_uuid(), 'o', 'u', 'json', now() - interval '30 days')",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    let output = Command::new(BINARY)
        .arg("clean")
        .env("DATABASE_URL", &url)
        .env("STORAGE_DIR", &directory)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM exports")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(left, 0, "the expired export (past the 7-day grace) is gone");
    let _ = std::fs::remove_dir_all(directory);
}

#[test]
fn plugin_check_and_run_work_offline() {
    let component =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/csv_json.wasm");
    let check = Command::new(BINARY)
        .args(["plugin", "check"])
        .arg(&component)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("plugin:       csv-json 1.0.0"), "{report}");
    assert!(report.contains("ok: the component implements export-service:plugin@1.3.0"));

    let directory = std::env::temp_dir().join(format!(
        "exsvc-plugin-run-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&directory).unwrap();
    let input = directory.join("sample.csv");
    let output = directory.join("out.json");
    std::fs::write(&input, "id,name\n1,\"a, b\"\n2,c\n").unwrap();
    let run = Command::new(BINARY)
        .args(["plugin", "run"])
        .arg(&component)
        .arg("--input")
        .arg(&input)
        .args(["--from", "csv", "--to", "json", "--output"])
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = String::from_utf8_lossy(&run.stdout);
    for expected in ["rows:        2", "violations:  0", "fuel:", "peak memory:"] {
        assert!(
            report.contains(expected),
            "{expected} missing from:\n{report}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        r#"[{"id":"1","name":"a, b"},{"id":"2","name":"c"}]"#
    );

    // A validator that finds a violation: exit 1, with the violation listed.
    let validator =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/schema_validator.wasm");
    let schema = directory.join("schema.json");
    std::fs::write(
        &schema,
        r#"{"schema": {"type": "object", "properties": {"id": {"pattern": "^[0-9]+$"}}}}"#,
    )
    .unwrap();
    std::fs::write(&input, "id,name\n1,a\nx,b\n").unwrap();
    let rejected = Command::new(BINARY)
        .args(["plugin", "run"])
        .arg(&validator)
        .arg("--input")
        .arg(&input)
        .args(["--from", "csv", "--to", "csv", "--config"])
        .arg(&schema)
        .output()
        .unwrap();
    assert_eq!(rejected.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rejected.stdout).contains("row 2 field id:"));
    assert!(
        String::from_utf8_lossy(&rejected.stderr)
            .contains("would reject this upload: 1 violation(s)")
    );

    let broken = directory.join("broken.wasm");
    std::fs::write(&broken, b"\0asm garbage").unwrap();
    let refused = Command::new(BINARY)
        .args(["plugin", "check"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("plugin rejected"));
    let _ = std::fs::remove_dir_all(directory);
}

#[test]
fn plugin_run_stops_a_plugin_that_sleeps() {
    let component =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/hostile_sleeper.wasm");
    let input = std::env::temp_dir().join(format!(
        "exsvc-plugin-sleep-{}.csv",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&input, "id\n1\n").unwrap();
    let started = std::time::Instant::now();
    let run = Command::new(BINARY)
        .args(["plugin", "run"])
        .arg(&component)
        .arg("--input")
        .arg(&input)
        .args(["--from", "csv", "--to", "csv"])
        .output()
        .unwrap();
    let took = started.elapsed();
    eprintln!("plugin run on the sleeper ended after {took:?} (call deadline 2s)");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("plugin hostile-sleeper exceeded its time limit of 2000 ms"),
        "{stderr}"
    );
    // Generous: it ends at its 2 s deadline instead of sleeping for an hour.
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
    let _ = std::fs::remove_file(input);
}

#[tokio::test]
async fn clowder_app_config_overrides_the_environment() {
    let url = empty_database().await;
    let name = url.rsplit_once('/').unwrap().1.to_owned();
    let directory =
        std::env::temp_dir().join(format!("exsvc-clowder-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    let config = directory.join("cdappconfig.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "publicPort": 8000, "privatePort": 10000, "metricsPort": 9000,
            "database": {"name": name, "username": "postgres", "password": "", "hostname": "127.0.0.1",
                         "port": 5432, "adminUsername": "postgres", "adminPassword": "", "sslMode": "disable"}
        })
        .to_string(),
    )
    .unwrap();
    // The environment names a database that does not exist; Clowder's wins.
    let status = Command::new(BINARY)
        .arg("migrate")
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/no_such_database_here",
        )
        .env("ACG_CONFIG", &config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        service_tables(&url).await,
        2,
        "migrated the database Clowder named"
    );

    // A broken file stops start-up with exit code 2, naming the file.
    std::fs::write(
        &config,
        r#"{"database": {"password": "hunter2", "port": "x"}}"#,
    )
    .unwrap();
    let output = Command::new(BINARY)
        .arg("migrate")
        .env("ACG_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cdappconfig.json") && stderr.contains("not a Clowder app config"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    std::fs::remove_dir_all(&directory).ok();
}
