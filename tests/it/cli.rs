//! The `export-service` binary: configuration errors, `migrate`, and `serve` with nothing but a
//! reachable database, stopped gracefully by SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Caller, empty_database};

const BINARY: &str = env!("CARGO_BIN_EXE_export-service");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('exports', 'sources')",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(tables, 2);

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
