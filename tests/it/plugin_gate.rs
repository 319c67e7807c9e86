//! Test cases a plugin version carries: they gate its push, every bind and canary, and every
//! replica's applying it.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::plugin_component;
use crate::registry::{admin_app, call, cli, upload_for};

const RULES: &str = r#"{"required": ["id", "name"]}"#;

fn cases(good_expect: Value) -> Value {
    let rules: Value = serde_json::from_str(RULES).unwrap();
    json!([
        {"name": "good", "input": "id,name\n1,a\n", "from": "csv", "to": "json",
         "config": rules, "expect": good_expect},
        {"name": "missing-id", "input": "id,name\n,a\n", "from": "csv", "to": "json",
         "config": rules, "expect": {"outcome": "violations", "violations": [{"field": "id"}]}},
    ])
}

fn push_body(cases: Value) -> Value {
    use base64::Engine as _;
    json!({
        "component": base64::engine::general_purpose::STANDARD
            .encode(plugin_component("required_fields.wasm")),
        "test_cases": cases,
    })
}

// Multi-threaded: the CLI runs as a blocking child process while the service answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_cases_gate_the_push_every_bind_and_every_replica() {
    let app = admin_app().await;
    // The stored bytes of the good case, converted to JSON.
    let digest = hex::encode(Sha256::digest(br#"[{"id":"1","name":"a"}]"#));

    // A case the version does not pass: refused, nothing stored, the message names the case.
    for (expect, part) in [
        (
            json!({"outcome": "violations"}),
            "case 'good': expected violations, the sample was accepted",
        ),
        (
            json!({"outcome": "accepted", "output_sha256": "00ff"}),
            "expected 00ff",
        ),
    ] {
        let (status, reply) = call(
            &app,
            Method::POST,
            "/plugins",
            Some(push_body(cases(expect))),
        )
        .await;
        assert_eq!(status, 422, "{reply}");
        assert!(reply["message"].as_str().unwrap().contains(part), "{reply}");
    }
    let (status, _) = call(&app, Method::GET, "/plugins/required-fields", None).await;
    assert_eq!(status, 404, "a version failing its cases is not stored");

    let passing = cases(json!({"outcome": "accepted", "output_sha256": digest}));
    let (status, pushed) = call(&app, Method::POST, "/plugins", Some(push_body(passing))).await;
    assert_eq!(status, 201, "{pushed}");
    assert_eq!(pushed["plugin"]["test_case_count"], 2);
    // The same bytes with other cases would change an immutable version.
    let (status, reply) = call(&app, Method::POST, "/plugins", Some(push_body(json!([])))).await;
    assert_eq!(status, 409, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("other test cases"),
        "{reply}"
    );
    let bind = json!({"plugin": "required-fields", "version": "1.0.0",
                      "config": serde_json::from_str::<Value>(RULES).unwrap()});
    let (status, reply) = call(
        &app,
        Method::PUT,
        "/bindings/exampleApp",
        Some(bind.clone()),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, _) = call(&app, Method::DELETE, "/bindings/exampleApp", None).await;
    assert_eq!(status, 200);

    // This replica's engine no longer reaches the outcome the cases expect (simulated by
    // changing what they expect): binding and canarying are refused and say why.
    sqlx::query(
        "UPDATE plugin_versions SET test_cases = jsonb_set(test_cases, \
         '{0,expect,output_sha256}', '\"0123\"') WHERE name = 'required-fields'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, reply) = call(&app, Method::PUT, "/bindings/exampleApp", Some(bind)).await;
    assert_eq!(status, 422, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("required-fields 1.0.0 fails its test cases")
            && message.contains("expected 0123")
            && message.contains("on this replica"),
        "{reply}"
    );
    let (status, reply) = call(
        &app,
        Method::POST,
        "/bindings/exampleApp/canary",
        Some(json!({"plugin": "required-fields", "version": "1.0.0", "share_percent": 50})),
    )
    .await;
    assert_eq!(status, 422, "{reply}");

    // A binding recorded anyway (by a replica whose engine passes them) is not applied here:
    // its uploads wait rather than run a plugin this replica cannot vouch for.
    sqlx::query(
        "INSERT INTO plugin_bindings (application, resource, action, plugin_name, \
         plugin_version, created_by) \
         VALUES ('exampleApp', '*', 'bind', 'required-fields', '1.0.0', 'elsewhere')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('export_plugins', 'test')")
        .execute(&app.pool)
        .await
        .unwrap();
    let failures =
        r#"export_service_plugin_load_failures_total{plugin="required-fields",version="1.0.0"}"#;
    let started = Instant::now();
    while app.metric(failures).await.unwrap_or(0.0) < 1.0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(upload_for(&app, "org-1", "exampleResource").await.0, 503);

    // The CLI reads a directory of cases, inputs from files beside them.
    let directory =
        std::env::temp_dir().join(format!("exsvc-cases-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join("good.csv"), "id,name\n1,a\n").unwrap();
    std::fs::write(
        directory.join("good.json"),
        json!({"input_file": "good.csv", "from": "csv", "to": "json",
               "config": {"required": ["id"]}, "expect": {"outcome": "accepted"}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        directory.join("bad.json"),
        json!({"input": "id,name\n,a\n", "to": "csv", "config": {"required": ["id"]},
               "expect": {"outcome": "violations", "violations": [{"field": "id"}]}})
        .to_string(),
    )
    .unwrap();
    let run = cli(&app);
    let component =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/tagger_v1.wasm");
    let (ok, out) = run(&[
        "push",
        component.to_str().unwrap(),
        "--test",
        directory.to_str().unwrap(),
    ]);
    // The tagger accepts everything: its "bad" case fails, and the push with it.
    assert!(
        !ok && out.contains("422") && out.contains("case 'bad'"),
        "{out}"
    );
    std::fs::remove_file(directory.join("bad.json")).unwrap();
    let (ok, out) = run(&[
        "push",
        component.to_str().unwrap(),
        "--test",
        directory.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("test cases: 1 passed"), "{out}");
    let _ = std::fs::remove_dir_all(directory);
}
