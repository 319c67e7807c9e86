//! `export-service plugin run` and the service judge the same upload alike: for the reference
//! plugins and their bindings, on accepted and refused samples, the CLI's `--json` report and
//! the service's answer (and archive) agree on rows, violations and the stored bytes.

use std::process::Command;

use sha2::{Digest, Sha256};

use crate::helpers::{Caller, TestApp, export_request, plugin_component};

const BINARY: &str = env!("CARGO_BIN_EXE_export-service");

/// One case: a component bound with `config`, an upload, and the export's format.
struct Case {
    component: &'static str,
    config: &'static str,
    format: &'static str,
    body: &'static str,
}

const CASES: &[Case] = &[
    // Converting plugin, no schema: CSV in, JSON stored.
    Case {
        component: "csv_json.wasm",
        config: "{}",
        format: "json",
        body: "id,name\n1,\"a, b\"\n2,c\n3,d\n",
    },
    // Converting plugin with the binding's schema, checked by the host: refused.
    Case {
        component: "csv_json.wasm",
        config: r#"{"schema": {"type": "object", "properties": {"id": {"pattern": "^[0-9]+$"}}}}"#,
        format: "json",
        body: "id,name\n1,a\nx2,b\nfour,c\n",
    },
    // A validator that does not convert: the default conversion turns its CSV into JSON.
    Case {
        component: "schema_validator.wasm",
        config: r#"{"schema": {"type": "object", "properties": {"id": {"pattern": "^[0-9]+$"}}}}"#,
        format: "json",
        body: "id,name\n1,a\n2,b\n",
    },
    Case {
        component: "schema_validator.wasm",
        config: r#"{"schema": {"type": "object", "properties": {"id": {"pattern": "^[0-9]+$"}}}}"#,
        format: "csv",
        body: "id,name\n1,a\nx,b\n",
    },
    // The SDK's record validator, on JSON sent to a CSV export.
    Case {
        component: "required_fields.wasm",
        config: r#"{"required": ["id", "name"], "numeric": ["amount"]}"#,
        format: "csv",
        body: r#"[{"id":"1","name":"a","amount":"2.5"},{"id":"2","name":"b","amount":"3"}]"#,
    },
    Case {
        component: "required_fields.wasm",
        config: r#"{"required": ["id", "name"], "numeric": ["amount"]}"#,
        format: "json",
        body: "id,name,amount\n1,a,2.5\n, b ,3\n3,c,many\n",
    },
];

/// The CLI's JSON report on `case`.
fn plugin_run(case: &Case, directory: &std::path::Path) -> serde_json::Value {
    let input = directory.join("sample");
    let config = directory.join("config.json");
    std::fs::write(&input, case.body).unwrap();
    std::fs::write(&config, case.config).unwrap();
    let component = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/dist")
        .join(case.component);
    let run = Command::new(BINARY)
        .args(["plugin", "run"])
        .arg(&component)
        .arg("--input")
        .arg(&input)
        .arg("--config")
        .arg(&config)
        .args(["--to", case.format, "--output"])
        .arg(directory.join("output"))
        .args([
            "--application",
            "exampleApp",
            "--resource",
            "exampleResource",
        ])
        .arg("--json")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|error| {
        panic!(
            "not a JSON report ({error}): {}\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        )
    });
    assert_eq!(
        run.status.success(),
        report["accepted"] == true,
        "exit status follows the verdict: {report}"
    );
    report
}

#[tokio::test]
async fn plugin_run_and_the_service_agree_on_rows_violations_and_bytes() {
    for (index, case) in CASES.iter().enumerate() {
        let directory = std::env::temp_dir().join(format!(
            "exsvc-plugin-run-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let bindings = directory.join("bindings");
        std::fs::create_dir_all(&bindings).unwrap();
        std::fs::write(
            bindings.join("exampleApp.wasm"),
            plugin_component(case.component),
        )
        .unwrap();
        std::fs::write(bindings.join("exampleApp.json"), case.config).unwrap();
        let report = plugin_run(case, &directory);

        let app = TestApp::spawn_with(&[("PLUGINS_DIR", bindings.to_str().unwrap())]).await;
        let caller = Caller::user("org-1", "alice");
        let created = app
            .create(
                &caller,
                export_request("r", case.format, &[("exampleApp", "exampleResource")]),
            )
            .await;
        let export = created["id"].as_str().unwrap().to_string();
        let source = created["sources"][0]["id"].as_str().unwrap().to_string();
        let reply = app
            .upload(
                &export,
                "exampleApp",
                &source,
                Some("psk-example"),
                case.body,
            )
            .await;
        let label = format!("case {index} ({})", case.component);
        if reply.status == 202 {
            let answer = reply.json();
            assert_eq!(report["accepted"], true, "{label}: {report}");
            assert_eq!(report["rows"], answer["rows"], "{label}");
            assert_eq!(report["sha256"], answer["sha256"], "{label}");
            assert_eq!(report["output_bytes"], answer["bytes"], "{label}");
            let written = std::fs::read(directory.join("output")).unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(&written)),
                answer["sha256"].as_str().unwrap(),
                "{label}: the written output is what the service stored"
            );
        } else {
            assert_eq!(reply.status, 422, "{label}: {}", reply.text);
            let answer = reply.json();
            assert_eq!(report["accepted"], false, "{label}: {report}");
            assert_eq!(report["refused"], answer["message"], "{label}");
            assert_eq!(report["violations"], answer["violations"], "{label}");
            assert!(
                !report["violations"].as_array().unwrap().is_empty(),
                "{label}: refused with violations"
            );
        }
        let _ = std::fs::remove_dir_all(directory);
    }
}
