//! The plugin host running the reference plugins built by scripts/build-plugins.sh.

use export_convert::{Converter, CsvToJson};
use export_plugin_host::{
    DataFormat, LoadedPlugin, PluginFailure, PluginHost, PluginLimits, SessionOptions,
};

use crate::helpers::plugin_component;

fn options(input: DataFormat, output: DataFormat) -> SessionOptions {
    SessionOptions {
        application: "exampleApp".into(),
        resource: "exampleResource".into(),
        input_format: input,
        output_format: output,
        config: None,
    }
}

#[test]
fn the_csv_json_plugin_converts_exactly_like_the_native_converter() {
    let host = PluginHost::new(PluginLimits::default()).unwrap();
    let plugin = host.load(&plugin_component("csv_json.wasm")).unwrap();
    assert_eq!(plugin.info.name, "csv-json");
    assert!(plugin.info.capabilities.convert);
    assert_eq!(plugin.digest.len(), 64);
    // Loading the same bytes again hits the cache.
    assert!(std::sync::Arc::ptr_eq(
        &plugin,
        &host.load(&plugin_component("csv_json.wasm")).unwrap()
    ));

    // Fields of every length up to 100 with a byte that needs attention (a quote, a backslash,
    // a control character, UTF-8, a delimiter inside quotes) or one next to such bytes in value
    // that does not (0x7f, a space, `!`) at places throughout them, in every step of a turn:
    // the sandbox's scans (two words for a field's first sixteen bytes, `simd128` in the
    // long-run loop, four sixteen-byte steps per turn) must stop exactly where the native SSE2
    // one does (stopping at a byte that needs no attention escapes it: the output differs).
    let specials = [
        "\"\"", "\\", "\t", "\u{1}", "\u{1f}", " ", "!", "é", "€", ",", "\n", "\u{7f}",
    ];
    let csv: String = std::iter::once("id,name,note\n".to_string())
        .chain((0..20000).map(|n| {
            let length = n % 101;
            let special = specials[n / 41 % specials.len()];
            let mut note: String = (0..length)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            note.insert_str((n / 7) % (length + 1), special);
            // Unquoted: a quote inside is a literal one (not at the start, where it would
            // open a quoted field).
            let mut name = format!("name-{}", "x".repeat(n % 89));
            let special = ["\\", "\t", "é", "€", "\u{1}", "\u{1f}", "\"", " ", ""][n % 9];
            let place = if special == "\"" {
                1 + n % name.len()
            } else {
                n % (name.len() + 1)
            };
            name.insert_str(place, special);
            format!("{n},{name},\"{note}\"\n")
        }))
        .collect();
    let mut session = host
        .open(&plugin, &options(DataFormat::Csv, DataFormat::Json))
        .unwrap();
    let mut wasm_output = Vec::new();
    for chunk in csv.as_bytes().chunks(7777) {
        session
            .push(chunk)
            .unwrap()
            .append_output_to(&mut wasm_output);
    }
    session.finish().unwrap().append_output_to(&mut wasm_output);
    assert!(session.peak_memory() > 0);

    let mut native = CsvToJson::new();
    let mut native_output = native.push(csv.as_bytes()).unwrap().to_vec();
    native_output.extend_from_slice(native.finish().unwrap());
    assert_eq!(wasm_output, native_output);

    // Rejected data comes back as violations.
    let failure = csv_rejection(&host, &plugin, b"a,b\n1\n", "a short row must be rejected");
    assert!(
        failure.to_string().contains("csv-json rejected the data"),
        "{failure}"
    );
}

/// How a CSV→JSON session of `plugin` fails on `csv` (in one push, then finish), which it must
/// (`why` says why).
fn csv_rejection(
    host: &PluginHost,
    plugin: &std::sync::Arc<LoadedPlugin>,
    csv: &[u8],
    why: &str,
) -> PluginFailure {
    let mut session = host
        .open(plugin, &options(DataFormat::Csv, DataFormat::Json))
        .unwrap();
    session
        .push(csv)
        .map(|_| ())
        .and_then(|()| session.finish().map(|_| ()))
        .expect_err(why)
}

#[test]
fn the_csv_json_plugin_finds_invalid_utf8_anywhere_in_a_long_field() {
    // Valid UTF-8 comes out the same whether a scan stops at its bytes or not; invalid UTF-8
    // shows whether it does: every byte from 0x80 must be checked, in every step of a long run.
    let host = PluginHost::new(PluginLimits::default()).unwrap();
    let plugin = host.load(&plugin_component("csv_json.wasm")).unwrap();
    for quoted in [false, true] {
        for position in 0..100 {
            let mut field = vec![b'a'; 100];
            field[position] = 0xff;
            if quoted {
                field.insert(0, b'"');
                field.push(b'"');
            }
            let mut csv = b"id,note\n1,".to_vec();
            csv.extend_from_slice(&field);
            csv.extend_from_slice(b"\n2,b\n");

            let mut native = CsvToJson::new();
            assert!(native.push(&csv).is_err(), "natively, 0xff at {position}");
            let failure = csv_rejection(&host, &plugin, &csv, "invalid UTF-8 must be rejected");
            let PluginFailure::Rejected { violations, .. } = &failure else {
                panic!("0xff at {position} (quoted: {quoted}): {failure}");
            };
            assert_eq!(violations[0].row, Some(1), "0xff at {position}");
            assert!(
                violations[0].message.contains("not valid UTF-8"),
                "0xff at {position} (quoted: {quoted}): {violations:?}"
            );
        }
    }
}

#[test]
fn a_plugin_built_against_the_1_0_contract_runs_unchanged() {
    // 1.0.0 had no `emit`: the plugin returns its output, and imports `host@1.0.0`, which the
    // host's 1.3.0 interface satisfies (semver: a minor version only adds).
    let host = PluginHost::new(PluginLimits::default()).unwrap();
    let plugin = host.load(&plugin_component("contract_1_0.wasm")).unwrap();
    assert_eq!(plugin.info.name, "contract-1-0");
    let mut session = host
        .open(&plugin, &options(DataFormat::Csv, DataFormat::Csv))
        .unwrap();
    let mut output = Vec::new();
    for chunk in [&b"id,name\n"[..], b"1,ann\n", b"2,bob\n"] {
        let step = session.push(chunk).unwrap();
        assert_eq!(step.output().len(), 1, "the returned bytes, in one piece");
        step.append_output_to(&mut output);
    }
    let step = session.finish().unwrap();
    assert_eq!(step.output_len(), 0);
    assert_eq!(output, b"ID,NAME\n1,ANN\n2,BOB\n");
}

/// Why `host` refuses to load the component `file` (which it must refuse).
fn refusal(host: &PluginHost, file: &str) -> String {
    host.load(&plugin_component(file))
        .expect_err("the component must be refused")
        .to_string()
}

#[test]
fn a_plugin_of_another_major_contract_version_is_refused_naming_both_versions() {
    let host = PluginHost::new(PluginLimits::default()).unwrap();
    let error = refusal(&host, "contract_2_0.wasm");
    assert!(error.contains("unsupported contract"), "{error}");
    assert!(error.contains("export-service:plugin@2.0.0"), "{error}");
    assert!(error.contains("plugins of 1.0 to 1.3.0"), "{error}");
}

#[test]
fn malformed_components_are_refused_with_a_reason() {
    let host = PluginHost::new(PluginLimits::default()).unwrap();
    let error = host.load(b"not wasm at all").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not a valid WebAssembly component"),
        "{error}"
    );
}

/// Runs `csv_json.wasm` on a small CSV to show the host still works.
fn still_converts(host: &PluginHost) {
    let plugin = host.load(&plugin_component("csv_json.wasm")).unwrap();
    let mut session = host
        .open(&plugin, &options(DataFormat::Csv, DataFormat::Json))
        .unwrap();
    let mut output = Vec::new();
    session
        .push(b"a\n1\n")
        .unwrap()
        .append_output_to(&mut output);
    session.finish().unwrap().append_output_to(&mut output);
    assert_eq!(output, br#"[{"a":"1"}]"#);
}

#[test]
fn every_hostile_plugin_is_stopped_within_its_limit_and_the_next_session_works() {
    // Long enough that the other hostile plugins reach their own limit first even on a loaded
    // machine; short enough that the spinning one is stopped quickly.
    let limits = PluginLimits {
        call_timeout: std::time::Duration::from_millis(1500),
        ..PluginLimits::default()
    };
    let host = PluginHost::new(limits.clone()).unwrap();
    let cases: [(&str, &str); 7] = [
        ("hostile_spin.wasm", "exceeded its time limit of 1500 ms"),
        ("hostile_sleeper.wasm", "exceeded its time limit of 1500 ms"),
        (
            "hostile_memory_bomb.wasm",
            "exceeded its memory limit of 32 MiB",
        ),
        (
            "hostile_huge_output.wasm",
            "produced more than 4 MiB from one chunk",
        ),
        (
            "hostile_emit_flood.wasm",
            "emitted more than 4096 pieces of output in one call",
        ),
        ("hostile_panic.wasm", "crashed"),
        ("hostile_deep_recursion.wasm", "crashed"),
    ];
    for (file, expected) in cases {
        let plugin = host.load(&plugin_component(file)).unwrap();
        let mut session = host
            .open(&plugin, &options(DataFormat::Csv, DataFormat::Csv))
            .unwrap();
        let started = std::time::Instant::now();
        let failure = session.push(b"id\n1\n").expect_err(file);
        let message = failure.to_string();
        assert!(message.contains(expected), "{file}: {message}");
        assert!(
            message.contains(&plugin.info.name),
            "the message names the plugin: {message}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(6),
            "{file} took {:?}",
            started.elapsed()
        );
        still_converts(&host);
    }
}

/// The sleeper's session with `config` (`None`: `std::thread::sleep` in `push`).
fn sleeper_options(config: Option<&str>) -> SessionOptions {
    SessionOptions {
        config: config.map(|config| format!("\"{config}\"")),
        ..options(DataFormat::Csv, DataFormat::Csv)
    }
}

#[test]
fn a_plugin_blocked_in_a_wasi_wait_is_stopped_at_the_call_deadline() {
    let deadline = std::time::Duration::from_millis(500);
    let host = PluginHost::new(PluginLimits {
        call_timeout: deadline,
        ..PluginLimits::default()
    })
    .unwrap();
    let plugin = host
        .load(&plugin_component("hostile_sleeper.wasm"))
        .unwrap();
    // An hour's `std::thread::sleep`, or a `poll` on the farthest instant, in `push`; the same
    // sleep in `open`.
    for config in [None, Some("poll"), Some("open")] {
        let started = std::time::Instant::now();
        let failure = host
            .open(&plugin, &sleeper_options(config))
            .and_then(|mut session| session.push(b"id\n1\n").map(|_| ()))
            .expect_err("the wait must be cut");
        let took = started.elapsed();
        eprintln!("sleeper {config:?}: stopped after {took:?} (deadline {deadline:?})");
        assert!(
            matches!(failure, PluginFailure::Timeout { limit_ms: 500, .. }),
            "{config:?}: {failure}"
        );
        assert_eq!(
            failure.to_string(),
            "plugin hostile-sleeper exceeded its time limit of 500 ms"
        );
        assert!(
            took >= deadline,
            "{config:?} stopped before its deadline: {took:?}"
        );
        // Generous: the point is that it ends, not how fast (it would otherwise take an hour).
        assert!(
            took < std::time::Duration::from_secs(5),
            "{config:?} took {took:?}"
        );
        still_converts(&host);
    }
    // A short wait within the deadline is allowed and counts against the call's time.
    let mut session = host.open(&plugin, &sleeper_options(Some("short"))).unwrap();
    let step = session.push(b"id\n1\n").unwrap();
    let mut output = Vec::new();
    step.append_output_to(&mut output);
    assert_eq!(output, b"id\n1\n");
    assert!(session.guest_time() >= std::time::Duration::from_millis(20));
}

#[test]
fn a_wait_past_the_session_deadline_reports_the_session_limit() {
    let host = PluginHost::new(PluginLimits {
        call_timeout: std::time::Duration::from_secs(30),
        session_timeout: std::time::Duration::from_millis(400),
        ..PluginLimits::default()
    })
    .unwrap();
    let plugin = host
        .load(&plugin_component("hostile_sleeper.wasm"))
        .unwrap();
    let started = std::time::Instant::now();
    let mut session = host.open(&plugin, &sleeper_options(Some("poll"))).unwrap();
    let failure = session.push(b"id\n1\n").unwrap_err();
    assert_eq!(
        failure.to_string(),
        "plugin hostile-sleeper exceeded its time limit of 400 ms"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn a_bound_plugin_evicted_from_the_cache_keeps_working_and_is_not_compiled_again() {
    let sizes = PluginHost::new(PluginLimits::default()).unwrap();
    let converter = sizes.load(&plugin_component("csv_json.wasm")).unwrap();
    let other = sizes.load(&plugin_component("hostile_panic.wasm")).unwrap();
    eprintln!(
        "estimated compiled sizes: csv-json {} bytes (wasm {}), hostile-panic {} bytes (wasm {})",
        converter.size_bytes,
        plugin_component("csv_json.wasm").len(),
        other.size_bytes,
        plugin_component("hostile_panic.wasm").len()
    );
    assert!(converter.size_bytes > plugin_component("csv_json.wasm").len());
    // Room for either plugin, not both.
    let host = PluginHost::new(PluginLimits {
        cache_bytes: converter.size_bytes.max(other.size_bytes),
        ..PluginLimits::default()
    })
    .unwrap();
    let bound = host.load(&plugin_component("csv_json.wasm")).unwrap();
    assert_eq!(host.cache_usage(), (1, bound.size_bytes));
    let panic = host.load(&plugin_component("hostile_panic.wasm")).unwrap();
    assert_eq!(
        host.cache_usage(),
        (1, panic.size_bytes),
        "loading the second evicted the first"
    );
    // The evicted plugin still runs sessions for whoever holds it.
    let mut session = host
        .open(&bound, &options(DataFormat::Csv, DataFormat::Json))
        .unwrap();
    let mut output = Vec::new();
    session
        .push(b"a\n1\n")
        .unwrap()
        .append_output_to(&mut output);
    session.finish().unwrap().append_output_to(&mut output);
    assert_eq!(output, br#"[{"a":"1"}]"#);
    // Loading it again finds the same compiled plugin (it is still in use), and keeps it again.
    let again = host.load(&plugin_component("csv_json.wasm")).unwrap();
    assert!(std::sync::Arc::ptr_eq(&again, &bound));
    assert_eq!(host.cache_usage(), (1, bound.size_bytes));
}

#[test]
fn an_emit_outside_push_and_finish_stops_the_plugin() {
    let host = PluginHost::new(PluginLimits::default()).unwrap();
    let plugin = host
        .load(&plugin_component("hostile_emit_flood.wasm"))
        .unwrap();
    let options = SessionOptions {
        config: Some("\"open\"".into()),
        ..options(DataFormat::Csv, DataFormat::Csv)
    };
    let Err(failure) = host.open(&plugin, &options) else {
        panic!("an emit in open must fail the session");
    };
    let failure = failure.to_string();
    assert!(
        failure.contains("hostile-emit-flood crashed: it called emit outside push and finish"),
        "{failure}"
    );
    still_converts(&host);
}

#[test]
fn components_of_the_wrong_world_or_with_ungranted_imports_are_refused() {
    let host = PluginHost::new(PluginLimits::default()).unwrap();
    let wrong = refusal(&host, "hostile_wrong_world.wasm");
    assert!(
        wrong.contains("exports none of the export-service:plugin interfaces `processor`")
            && wrong.contains("`records`")
            && wrong.contains("`record-transforms`"),
        "{wrong}"
    );
    let greedy = refusal(&host, "hostile_capability.wasm");
    assert!(
        greedy.contains("imports something the host does not grant"),
        "{greedy}"
    );
    assert!(
        greedy.contains("backdoor"),
        "the message names the import: {greedy}"
    );
    still_converts(&host);
}

/// Creates an export and returns its id and its sources' ids, in request order.
async fn create_export(
    app: &crate::helpers::TestApp,
    caller: &crate::helpers::Caller,
    request: serde_json::Value,
) -> (String, Vec<String>) {
    let created = app.create(caller, request).await;
    let sources = created["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| source["id"].as_str().unwrap().to_string())
        .collect();
    (created["id"].as_str().unwrap().to_string(), sources)
}

/// A directory binding `exampleApp` to the component `wasm` (from plugins/dist) with `config`.
fn binding_directory(wasm: &str, config: &str) -> std::path::PathBuf {
    let directory =
        std::env::temp_dir().join(format!("exsvc-plugins-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join("exampleApp.wasm"), plugin_component(wasm)).unwrap();
    std::fs::write(directory.join("exampleApp.json"), config).unwrap();
    directory
}

/// Reads the stored file of `source` from an export's archive.
fn archived(archive: &[u8], source: &str, format: &str) -> String {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    let mut stored = String::new();
    std::io::Read::read_to_string(
        &mut zip.by_name(&format!("{source}.{format}")).unwrap(),
        &mut stored,
    )
    .unwrap();
    stored
}

/// A directory binding `exampleApp` to the csv-json plugin and `otherApp` to a hostile one.
fn plugins_directory(hostile: &str) -> std::path::PathBuf {
    let directory =
        std::env::temp_dir().join(format!("exsvc-plugins-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(
        directory.join("exampleApp.wasm"),
        plugin_component("csv_json.wasm"),
    )
    .unwrap();
    std::fs::write(
        directory.join("exampleApp.json"),
        r#"{"note": "config reaches the plugin"}"#,
    )
    .unwrap();
    std::fs::write(directory.join("otherApp.wasm"), plugin_component(hostile)).unwrap();
    directory
}

#[tokio::test]
async fn bound_plugins_run_on_the_upload_path() {
    use crate::helpers::{Caller, TestApp, export_request};
    let directory = plugins_directory("hostile_spin.wasm");
    let app = TestApp::spawn_with(&[
        ("PLUGINS_DIR", directory.to_str().unwrap()),
        ("PLUGIN_CALL_TIMEOUT", "300ms"),
    ])
    .await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = create_export(
        &app,
        &caller,
        export_request(
            "p",
            "json",
            &[("exampleApp", "exampleResource"), ("otherApp", "events")],
        ),
    )
    .await;
    let source = |index: usize| sources[index].clone();

    // The hostile plugin is stopped; the source fails with a message naming it.
    let stopped = app
        .upload(
            &export,
            "otherApp",
            &source(1),
            Some("psk-other"),
            "id\n1\n",
        )
        .await;
    stopped.assert_error_containing(422, "plugin hostile-spin exceeded its time limit of 300 ms");

    // The next upload on the same process goes through the csv-json plugin.
    let reply = app
        .upload(
            &export,
            "exampleApp",
            &source(0),
            Some("psk-example"),
            "id,name\n1,\"x, y\"\n",
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json()["plugin"]["name"], "csv-json");
    let status = app.wait_for_status(&caller, &export, "partial").await;
    assert!(
        status["sources"][1]["message"]
            .as_str()
            .unwrap()
            .contains("hostile-spin")
    );

    let (_, archive) = app.download(&caller, &export).await;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    let mut converted = String::new();
    std::io::Read::read_to_string(
        &mut zip.by_name(&format!("{}.json", source(0))).unwrap(),
        &mut converted,
    )
    .unwrap();
    assert_eq!(converted, r#"[{"id":"1","name":"x, y"}]"#);
    let mut meta = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("meta.json").unwrap(), &mut meta).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["file_meta"][0]["plugin"]["name"], "csv-json");
    assert_eq!(meta["file_meta"][0]["plugin"]["version"], "1.0.0");
    assert_eq!(
        meta["file_meta"][0]["plugin"]["digest"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let _ = std::fs::remove_dir_all(directory);
}

#[tokio::test]
async fn a_plugin_sleeping_on_the_upload_path_is_stopped_and_frees_its_source() {
    use crate::helpers::{Caller, TestApp, export_request};
    let directory = plugins_directory("hostile_sleeper.wasm");
    let app = TestApp::spawn_with(&[
        ("PLUGINS_DIR", directory.to_str().unwrap()),
        ("PLUGIN_CALL_TIMEOUT", "300ms"),
    ])
    .await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = create_export(
        &app,
        &caller,
        export_request(
            "p",
            "json",
            &[("exampleApp", "exampleResource"), ("otherApp", "events")],
        ),
    )
    .await;

    // The sleeper would block its call for an hour; the call's deadline stops it.
    let started = std::time::Instant::now();
    let stopped = app
        .upload(
            &export,
            "otherApp",
            &sources[1],
            Some("psk-other"),
            "id\n1\n",
        )
        .await;
    let took = started.elapsed();
    eprintln!("the sleeping upload was answered after {took:?} (call deadline 300ms)");
    stopped.assert_error_containing(
        422,
        "plugin hostile-sleeper exceeded its time limit of 300 ms",
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "answered after {took:?}"
    );
    let failures = app
        .metric(
            r#"export_service_plugin_failures_total{plugin="hostile-sleeper",reason="timeout",version="0.1.0"}"#,
        )
        .await;
    assert_eq!(failures, Some(1.0), "{}", app.metrics_text().await);
    // The source's hold is released (not renewed by a stuck upload) and the source failed.
    let held: bool = sqlx::query_scalar(
        "SELECT upload_lease_until IS NOT NULL FROM sources WHERE id = $1::uuid",
    )
    .bind(&sources[1])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        !held,
        "the sleeping upload's hold on its source was released"
    );

    // The next upload, to a source bound to a working plugin, goes through.
    let reply = app
        .upload(
            &export,
            "exampleApp",
            &sources[0],
            Some("psk-example"),
            "id,name\n1,x\n",
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let status = app.wait_for_status(&caller, &export, "partial").await;
    assert!(
        status["sources"][1]["message"]
            .as_str()
            .unwrap()
            .contains("hostile-sleeper exceeded its time limit"),
        "{status}"
    );
    let _ = std::fs::remove_dir_all(directory);
}

#[tokio::test]
async fn a_binding_schema_rejects_bad_records_with_row_level_violations() {
    use crate::helpers::{Caller, TestApp, export_request};
    let directory = plugins_directory("hostile_panic.wasm");
    std::fs::write(
        directory.join("exampleApp.json"),
        r#"{"schema": {"type": "object", "required": ["id", "name"],
                       "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}}}}"#,
    )
    .unwrap();
    let app = TestApp::spawn_with(&[("PLUGINS_DIR", directory.to_str().unwrap())]).await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = create_export(
        &app,
        &caller,
        export_request(
            "s",
            "json",
            &[
                ("exampleApp", "exampleResource"),
                ("exampleApp", "anotherExampleResource"),
            ],
        ),
    )
    .await;
    let source = |index: usize| sources[index].clone();

    let rejected = app
        .upload(
            &export,
            "exampleApp",
            &source(0),
            Some("psk-example"),
            "id,name\n1,a\nx2,b\n3,c\nfour,d\n",
        )
        .await;
    rejected.assert_error_containing(
        422,
        "plugin csv-json's JSON Schema rejected the data: 2 violation(s), first: row 2:",
    );
    let violations = rejected.json()["violations"].clone();
    assert_eq!(violations.as_array().unwrap().len(), 2);
    assert_eq!(violations[0]["row"], 2);
    assert_eq!(violations[0]["field"], "id");
    assert_eq!(violations[1]["row"], 4);
    let status = app
        .get(&format!("/api/export/v1/exports/{export}/status"), &caller)
        .await
        .json();
    assert_eq!(status["sources"][0]["status"], "failed");
    assert!(
        status["sources"][0]["message"]
            .as_str()
            .unwrap()
            .contains("row 2")
    );
    assert!(
        app.store
            .list(&format!("org-1/{export}/{}", source(0)))
            .await
            .unwrap()
            .is_empty()
    );

    let accepted = app
        .upload(
            &export,
            "exampleApp",
            &source(1),
            Some("psk-example"),
            "id,name\n1,a\n22,b\n",
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    app.wait_for_status(&caller, &export, "partial").await;
    let _ = std::fs::remove_dir_all(directory);
}

#[tokio::test]
async fn the_schema_validator_plugin_checks_records_inside_the_sandbox() {
    use crate::helpers::{Caller, TestApp, export_request};
    let directory = binding_directory(
        "schema_validator.wasm",
        r#"{"schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}}}}"#,
    );
    let app = TestApp::spawn_with(&[("PLUGINS_DIR", directory.to_str().unwrap())]).await;
    let caller = Caller::user("org-1", "alice");
    let (export, sources) = create_export(
        &app,
        &caller,
        export_request(
            "v",
            "json",
            &[
                ("exampleApp", "exampleResource"),
                ("exampleApp", "anotherExampleResource"),
            ],
        ),
    )
    .await;
    let source = |index: usize| sources[index].clone();

    let rejected = app
        .upload(
            &export,
            "exampleApp",
            &source(0),
            Some("psk-example"),
            "id,name\n1,a\nbad,b\n",
        )
        .await;
    rejected.assert_error_containing(
        422,
        "plugin schema-validator rejected the data: 1 violation(s), first: row 2:",
    );
    assert_eq!(rejected.json()["violations"][0]["field"], "id");

    let good = app
        .upload(
            &export,
            "exampleApp",
            &source(1),
            Some("psk-example"),
            "id,name\n1,\"a, é\"\n2,\"line\nbreak\"\n",
        )
        .await;
    assert_eq!(good.status, 202, "{}", good.text);
    assert_eq!(good.json()["plugin"]["name"], "schema-validator");
    app.wait_for_status(&caller, &export, "partial").await;
    let (_, archive) = app.download(&caller, &export).await;
    assert_eq!(
        archived(&archive, &source(1), "json"),
        r#"[{"id":"1","name":"a, é"},{"id":"2","name":"line\nbreak"}]"#
    );
    let _ = std::fs::remove_dir_all(directory);
}

/// The SDK's example validator (docs/PLUGINS.md): it only checks records, so the service converts
/// what it passes on to the export's format.
#[tokio::test]
async fn a_record_validator_written_with_the_sdk_checks_rows_and_the_service_converts() {
    use crate::helpers::{Caller, TestApp, export_request};
    let directory = binding_directory(
        "required_fields.wasm",
        r#"{"required": ["id", "name"], "numeric": ["amount"]}"#,
    );
    let app = TestApp::spawn_with(&[("PLUGINS_DIR", directory.to_str().unwrap())]).await;
    let caller = Caller::user("org-1", "alice");
    let resources = [
        ("exampleApp", "exampleResource"),
        ("exampleApp", "anotherExampleResource"),
    ];
    let (export, sources) =
        create_export(&app, &caller, export_request("v", "json", &resources)).await;

    let rejected = app
        .upload(
            &export,
            "exampleApp",
            &sources[0],
            Some("psk-example"),
            "id,name,amount\n1,a,2.5\n, b ,3\n3,c,many\n",
        )
        .await;
    rejected.assert_error_containing(
        422,
        "plugin required-fields rejected the data: 2 violation(s), first: row 2:",
    );
    let violations = rejected.json()["violations"].clone();
    assert_eq!(violations[0]["row"], 2);
    assert_eq!(violations[0]["field"], "id");
    assert_eq!(violations[0]["message"], "is required");
    assert_eq!(violations[1]["row"], 3);
    assert_eq!(violations[1]["field"], "amount");
    assert_eq!(violations[1]["message"], "is not a number");

    let good = app
        .upload(
            &export,
            "exampleApp",
            &sources[1],
            Some("psk-example"),
            "id,name,amount\n1,\"a, é\",2.5\n2,b,\n",
        )
        .await;
    assert_eq!(good.status, 202, "{}", good.text);
    assert_eq!(good.json()["plugin"]["name"], "required-fields");
    app.wait_for_status(&caller, &export, "partial").await;
    let (_, archive) = app.download(&caller, &export).await;
    assert_eq!(
        archived(&archive, &sources[1], "json"),
        r#"[{"id":"1","name":"a, é","amount":"2.5"},{"id":"2","name":"b","amount":""}]"#,
        "the CSV upload, validated, is stored as the export's JSON"
    );

    // JSON uploads to a CSV export: validated as JSON records, stored as CSV.
    let (export, sources) =
        create_export(&app, &caller, export_request("c", "csv", &resources[..1])).await;
    let good = app
        .upload(
            &export,
            "exampleApp",
            &sources[0],
            Some("psk-example"),
            r#"{"data": [{"id": 7, "name": "x", "amount": 2.5}]}"#,
        )
        .await;
    assert_eq!(good.status, 202, "{}", good.text);
    app.wait_for_status(&caller, &export, "complete").await;
    let (_, archive) = app.download(&caller, &export).await;
    assert_eq!(
        archived(&archive, &sources[0], "csv"),
        "id,name,amount\n7,x,2.5\n"
    );
    let _ = std::fs::remove_dir_all(directory);
}

/// A binding's JSON Schema applies even when its plugin validates by itself and ignores it.
#[tokio::test]
async fn a_bindings_schema_applies_even_to_a_validator_that_ignores_it() {
    use crate::helpers::{Caller, TestApp, export_request};
    let directory = binding_directory(
        "required_fields.wasm",
        r#"{"required": ["id"], "schema": {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}}}}"#,
    );
    let app = TestApp::spawn_with(&[("PLUGINS_DIR", directory.to_str().unwrap())]).await;
    let caller = Caller::user("org-1", "alice");
    let resources = [
        ("exampleApp", "exampleResource"),
        ("exampleApp", "anotherExampleResource"),
    ];
    let (export, sources) =
        create_export(&app, &caller, export_request("v", "csv", &resources)).await;

    // Every row has its id (the plugin's own check); the second breaks the schema's pattern.
    let rejected = app
        .upload(
            &export,
            "exampleApp",
            &sources[0],
            Some("psk-example"),
            "id,name\n1,a\nx7,b\n",
        )
        .await;
    rejected.assert_error_containing(
        422,
        "plugin required-fields's JSON Schema rejected the data: 1 violation(s), first: row 2: \
         field 'id':",
    );
    assert_eq!(rejected.json()["violations"][0]["field"], "id");
    let status = app
        .get(&format!("/api/export/v1/exports/{export}/status"), &caller)
        .await
        .json();
    let message = status["sources"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("row 2: field 'id':"),
        "the tenant sees the row and the field: {status}"
    );

    let good = app
        .upload(
            &export,
            "exampleApp",
            &sources[1],
            Some("psk-example"),
            "id,name\n1,a\n2,b\n",
        )
        .await;
    assert_eq!(good.status, 202, "{}", good.text);
    let _ = std::fs::remove_dir_all(directory);
}
