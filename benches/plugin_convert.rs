#![cfg_attr(
    not(test),
    expect(
        missing_docs,
        reason = "criterion's macros generate undocumented items"
    )
)]
//! The same CSV→JSON converter, native and as the `csv-json` Wasm plugin, on the same data in the
//! same 1 MiB chunks the service pushes; and the cost of starting one plugin session.
//!
//! Run `scripts/build-plugins.sh` first, then `cargo bench --bench plugin_convert`.
//! Targets (docs/ARCHITECTURE.md): Wasm ≥ 0.7 × native throughput; instantiation median ≤ 1 ms.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use export_convert::{Converter, CsvToJson};
use export_service::plugin_host::{DataFormat, PluginHost, PluginLimits, SessionOptions};

const CHUNK: usize = 1024 * 1024;

fn sample_csv(bytes: usize) -> Vec<u8> {
    let mut data = b"id,name,amount,comment\n".to_vec();
    let mut row = 0u64;
    while data.len() < bytes {
        data.extend_from_slice(
            format!(
                "{row},name-{row},{}.{:02},\"a comment, with a comma\"\n",
                row * 7 % 1000,
                row % 100
            )
            .as_bytes(),
        );
        row += 1;
    }
    data
}

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
    let data = sample_csv(16 * 1024 * 1024);
    let component =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/csv_json.wasm");
    let bytes = std::fs::read(&component).unwrap_or_else(|error| {
        panic!(
            "{}: {error} (run scripts/build-plugins.sh)",
            component.display()
        )
    });
    let host = PluginHost::new(PluginLimits::default()).expect("plugin host");
    let plugin = host.load(&bytes).expect("the csv-json plugin loads");

    let mut group = criterion.benchmark_group("csv_to_json");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("native", |bencher| {
        bencher.iter(|| {
            let mut converter = CsvToJson::new();
            let mut produced = 0;
            for chunk in data.chunks(CHUNK) {
                produced += converter.push(chunk).unwrap().len();
            }
            produced + converter.finish().unwrap().len()
        })
    });
    group.bench_function("wasm", |bencher| {
        bencher.iter(|| {
            let mut session = host.open(&plugin, &options()).unwrap();
            let mut produced = 0;
            for chunk in data.chunks(CHUNK) {
                produced += session.push(chunk).unwrap().output.len();
            }
            produced + session.finish().unwrap().output.len()
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
