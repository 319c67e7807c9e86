#![cfg_attr(
    not(test),
    expect(
        missing_docs,
        reason = "criterion's macros generate undocumented items"
    )
)]
//! The same CSV→JSON converter, native and as the `csv-json` Wasm plugin, on the same data in the
//! same chunks the service pushes (`plugin_host::CHUNK_BYTES`) — CSV of short fields and CSV of
//! long ones; where JSON-Schema validation runs; and the cost of starting one plugin session.
//!
//! Run `scripts/build-plugins.sh` first, then `cargo bench --bench plugin_convert`.
//! Targets (docs/ARCHITECTURE.md): Wasm ≥ 0.7 × native throughput; instantiation median ≤ 1 ms.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use export_convert::{Converter, CsvToJson};
use export_plugin_host::{CHUNK_BYTES, DataFormat, PluginHost, PluginLimits, SessionOptions};
use export_service::domain::Format;
use export_service::ingest::schema::SchemaCheck;

#[path = "../bench/samples.rs"]
mod samples;

fn options() -> SessionOptions {
    SessionOptions {
        application: "bench".into(),
        resource: "bench".into(),
        input_format: DataFormat::Csv,
        output_format: DataFormat::Json,
        config: None,
    }
}

fn benchmarks(criterion: &mut Criterion) {
    let data = samples::short_fields(16 * 1024 * 1024);
    let component =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/csv_json.wasm");
    let bytes = std::fs::read(&component).unwrap_or_else(|error| {
        panic!(
            "{}: {error} (run scripts/build-plugins.sh)",
            component.display()
        )
    });
    // PLUGIN_PERF_MAP=1 names the plugins' functions for `perf record` (docs/PLUGINS.md).
    let host = if std::env::var_os("PLUGIN_PERF_MAP").is_some() {
        PluginHost::with_perf_map(PluginLimits::default())
    } else {
        PluginHost::new(PluginLimits::default())
    }
    .expect("plugin host");
    let plugin = host.load(&bytes).expect("the csv-json plugin loads");

    // Short fields (ids, names, amounts, a short quoted comment) and long ones.
    let long = samples::long_fields(16 * 1024 * 1024);
    for (name, data) in [("csv_to_json", &data), ("csv_to_json_long_fields", &long)] {
        let mut group = criterion.benchmark_group(name);
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.sample_size(10);
        group.bench_function("native", |bencher| {
            bencher.iter(|| {
                let mut converter = CsvToJson::new();
                let mut produced = 0;
                for chunk in data.chunks(CHUNK_BYTES) {
                    produced += converter.push(chunk).unwrap().len();
                }
                produced + converter.finish().unwrap().len()
            })
        });
        group.bench_function("wasm", |bencher| {
            bencher.iter(|| {
                let mut session = host.open(&plugin, &options()).unwrap();
                let mut produced = 0;
                for chunk in data.chunks(CHUNK_BYTES) {
                    produced += session.push(chunk).unwrap().output_len();
                }
                produced + session.finish().unwrap().output_len()
            })
        });
        group.finish();
    }

    // Where JSON-Schema validation runs: natively in the host, or inside the schema-validator
    // plugin, on the same CSV records (checked as objects of strings).
    let schema = serde_json::json!({"type": "object", "required": ["id", "name"],
        "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}, "name": {"type": "string", "maxLength": 64}}});
    let validator = std::sync::Arc::new(export_service::ingest::schema::compile(&schema).unwrap());
    let validator_component =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/schema_validator.wasm");
    let validating = host
        .load(&std::fs::read(&validator_component).expect("run scripts/build-plugins.sh"))
        .expect("the schema-validator plugin loads");
    let validating_options = SessionOptions {
        output_format: DataFormat::Csv,
        config: Some(serde_json::json!({ "schema": schema }).to_string()),
        ..options()
    };
    let mut group = criterion.benchmark_group("validate_csv");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("host", |bencher| {
        bencher.iter(|| {
            let mut check = SchemaCheck::new(validator.clone(), Format::Csv);
            for chunk in data.chunks(CHUNK_BYTES) {
                check.feed(chunk);
            }
            assert!(check.finish().is_empty());
        })
    });
    group.bench_function("guest", |bencher| {
        bencher.iter(|| {
            let mut session = host.open(&validating, &validating_options).unwrap();
            for chunk in data.chunks(CHUNK_BYTES) {
                assert!(session.push(chunk).unwrap().violations.is_empty());
            }
            session.finish().unwrap().output_len()
        })
    });
    group.finish();

    let mut group = criterion.benchmark_group("plugin_session");
    group.bench_function("instantiate_and_open", |bencher| {
        bencher.iter(|| host.open(&plugin, &options()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, benchmarks);
criterion_main!(benches);
