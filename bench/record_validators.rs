//! The reference required-fields validator in Rust (streaming, its SDK splitting the records;
//! and in record mode), Python and JavaScript (record mode: the host splits them), against the
//! same checks done
//! natively (the service's own splitter, `serde_json`, Rust) over the same CSV, measured in one
//! run: per component, its size, the time to compile it and to load its precompiled artefact
//! instead (what every other replica of a fleet, and every restart, pays), the median session
//! start, and records per second with the ratio to native (interleaved rounds, median of the
//! per-round ratios).
//!
//! Prints `<plugin> <MiB> <compile s> <artefact load s> <session start ms> <records/s>
//! <ratio to native>` per component, after `native <records/s>`.
//!
//! Usage: `cargo run --release --example record-validators -- [ROUNDS [MIB]]` (5 rounds over
//! 4 MiB by default; the components come from `scripts/build-plugins.sh`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use export_convert::{Converter, CsvToJson, JsonRecords};
use export_plugin_host::{
    CHUNK_BYTES, DataFormat, LoadedPlugin, PluginHost, PluginLimits, SessionOptions,
};
use serde_json::{Map, Value};

#[path = "samples.rs"]
#[expect(dead_code, reason = "only the short-field sample is checked")]
mod samples;

const CONFIG: &str = r#"{"required": ["id", "name"], "numeric": ["amount"]}"#;

/// Seconds to split `data` and check every record natively; and the records checked.
fn native(data: &[u8]) -> (f64, u64) {
    let started = Instant::now();
    let mut converter = CsvToJson::new();
    let mut records = JsonRecords::new();
    let mut problems = 0_u64;
    let mut check = |record: &[u8]| {
        let record: Map<String, Value> = serde_json::from_slice(record).expect("a JSON object");
        for field in ["id", "name"] {
            if record
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(|text| text.trim().is_empty())
            {
                problems += 1;
            }
        }
        if let Some(Value::String(amount)) = record.get("amount")
            && !amount.is_empty()
            && amount.parse::<f64>().is_err()
        {
            problems += 1;
        }
        Ok(())
    };
    for chunk in data.chunks(CHUNK_BYTES) {
        let json = converter.push(chunk).expect("valid CSV");
        records.push(json, &mut check).expect("records");
    }
    let rest = converter.finish().expect("valid CSV");
    records.push(rest, &mut check).expect("records");
    assert_eq!(problems, 0, "the sample is valid");
    (started.elapsed().as_secs_f64(), records.records())
}

fn options() -> SessionOptions {
    SessionOptions {
        application: "bench".into(),
        resource: "bench".into(),
        input_format: DataFormat::Csv,
        output_format: DataFormat::Csv,
        config: Some(CONFIG.into()),
    }
}

/// Seconds to run `data` through a new session of `plugin`.
fn through(host: &PluginHost, plugin: &Arc<LoadedPlugin>, data: &[u8]) -> f64 {
    let started = Instant::now();
    let mut session = host.open(plugin, &options()).expect("a session opens");
    for chunk in data.chunks(CHUNK_BYTES) {
        let step = session.push(chunk).expect("no failure");
        assert!(step.violations.is_empty(), "the sample is valid");
    }
    assert!(session.finish().expect("no failure").violations.is_empty());
    started.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[expect(clippy::print_stdout, reason = "the result is the program's output")]
fn main() -> anyhow::Result<()> {
    let mut arguments = std::env::args().skip(1);
    let rounds: usize = arguments.next().map_or(Ok(5), |text| text.parse())?;
    let mib: usize = arguments.next().map_or(Ok(4), |text| text.parse())?;
    let data = samples::short_fields(mib * 1024 * 1024);
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist");
    // Interpreters need more than the default 32 MiB for 1 MiB batches of records.
    let limits = PluginLimits {
        memory_bytes: 256 * 1024 * 1024,
        call_timeout: std::time::Duration::from_secs(60),
        ..PluginLimits::default()
    };
    let (_, records) = native(&data);
    let mut natives = Vec::new();
    for _ in 0..rounds {
        natives.push(native(&data).0);
    }
    println!("native {:.0}", records as f64 / median(&mut natives));
    for file in [
        "required_fields.wasm",
        "required_fields_records.wasm",
        "required_fields_py.wasm",
        "required_fields_js.wasm",
    ] {
        let bytes = std::fs::read(dist.join(file)).with_context(|| format!("reading {file}"))?;
        let compiling = PluginHost::new(limits.clone())?;
        let started = Instant::now();
        let plugin = compiling.load(&bytes)?;
        let compile = started.elapsed().as_secs_f64();
        let artefact = plugin.artefact()?;
        let loading = PluginHost::new(limits.clone())?;
        let started = Instant::now();
        let plugin = loading.load_artefact(&plugin.digest, &artefact)?;
        let load = started.elapsed().as_secs_f64();
        let mut starts: Vec<f64> = (0..rounds.max(5))
            .map(|_| {
                let started = Instant::now();
                drop(loading.open(&plugin, &options()).expect("a session opens"));
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        let mut ratios = Vec::new();
        let mut times = Vec::new();
        for _ in 0..rounds {
            let native_time = native(&data).0;
            let wasm_time = through(&loading, &plugin, &data);
            ratios.push(native_time / wasm_time);
            times.push(wasm_time);
        }
        println!(
            "{} {:.1} {compile:.2} {load:.3} {:.1} {:.0} {:.3}",
            plugin.info.name,
            bytes.len() as f64 / (1024.0 * 1024.0),
            median(&mut starts),
            records as f64 / median(&mut times),
            median(&mut ratios)
        );
    }
    Ok(())
}
