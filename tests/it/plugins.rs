//! The plugin host running the reference plugins built by scripts/build-plugins.sh.

use export_convert::{Converter, CsvToJson};
use export_service::plugin_host::{DataFormat, PluginHost, PluginLimits, SessionOptions};

fn plugin_bytes(name: &str) -> Vec<u8> {
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
    let plugin = host.load(&plugin_bytes("csv_json.wasm")).unwrap();
    assert_eq!(plugin.info.name, "csv-json");
    assert!(plugin.info.capabilities.convert);
    assert_eq!(plugin.digest.len(), 64);
    // Loading the same bytes again hits the cache.
    assert!(std::sync::Arc::ptr_eq(
        &plugin,
        &host.load(&plugin_bytes("csv_json.wasm")).unwrap()
    ));

    let csv: String = std::iter::once("id,name,note\n".to_string())
        .chain((0..5000).map(|n| format!("{n},\"name {n}\",\"line\nbreak, é\"\n")))
        .collect();
    let mut session = host
        .open(&plugin, &options(DataFormat::Csv, DataFormat::Json))
        .unwrap();
    let mut wasm_output = Vec::new();
    for chunk in csv.as_bytes().chunks(7777) {
        wasm_output.extend(session.push(chunk).unwrap().output);
    }
    wasm_output.extend(session.finish().unwrap().output);
    assert!(session.peak_memory() > 0);

    let mut native = CsvToJson::new();
    let mut native_output = native.push(csv.as_bytes()).unwrap();
    native_output.extend(native.finish().unwrap());
    assert_eq!(wasm_output, native_output);

    // Rejected data comes back as violations.
    let mut bad = host
        .open(&plugin, &options(DataFormat::Csv, DataFormat::Json))
        .unwrap();
    let failure = bad
        .push(b"a,b\n1\n")
        .and_then(|_| bad.finish())
        .expect_err("a short row must be rejected");
    assert!(
        failure.to_string().contains("csv-json rejected the data"),
        "{failure}"
    );
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
    let plugin = host.load(&plugin_bytes("csv_json.wasm")).unwrap();
    let mut session = host
        .open(&plugin, &options(DataFormat::Csv, DataFormat::Json))
        .unwrap();
    let mut output = session.push(b"a\n1\n").unwrap().output;
    output.extend(session.finish().unwrap().output);
    assert_eq!(output, br#"[{"a":"1"}]"#);
}

#[test]
fn every_hostile_plugin_is_stopped_within_its_limit_and_the_next_session_works() {
    let limits = PluginLimits {
        call_timeout: std::time::Duration::from_millis(500),
        ..PluginLimits::default()
    };
    let host = PluginHost::new(limits.clone()).unwrap();
    let cases: [(&str, &str); 5] = [
        ("hostile_spin.wasm", "exceeded its time limit of 500 ms"),
        (
            "hostile_memory_bomb.wasm",
            "exceeded its memory limit of 64 MiB",
        ),
        (
            "hostile_huge_output.wasm",
            "produced more than 16 MiB from one chunk",
        ),
        ("hostile_panic.wasm", "crashed"),
        ("hostile_deep_recursion.wasm", "crashed"),
    ];
    for (file, expected) in cases {
        let plugin = host.load(&plugin_bytes(file)).unwrap();
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
            started.elapsed() < std::time::Duration::from_secs(5),
            "{file} took {:?}",
            started.elapsed()
        );
        still_converts(&host);
    }
}

#[test]
fn components_of_the_wrong_world_or_with_ungranted_imports_are_refused() {
    let host = PluginHost::new(PluginLimits::default()).unwrap();
    let wrong = host
        .load(&plugin_bytes("hostile_wrong_world.wasm"))
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains("does not export the export-service:plugin/processor interface"),
        "{wrong}"
    );
    let greedy = host
        .load(&plugin_bytes("hostile_capability.wasm"))
        .unwrap_err()
        .to_string();
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
