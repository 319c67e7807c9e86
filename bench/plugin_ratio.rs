//! The Wasm/native throughput ratio of the CSV→JSON converter, measured in interleaved pairs:
//! each round converts the same 16 MiB natively and then through the `csv-json` plugin (a fresh
//! session, the service's 256 KiB chunks, the output read where each side leaves it), and the
//! ratio of that round's two times is one sample. A drift of the machine's speed (frequency,
//! neighbours) between criterion's separate runs moves its ratio; here it hits both sides of a
//! pair alike. Prints, per shape of data, `<shape> <native MiB/s> <wasm MiB/s> <median ratio>
//! <lower quartile> <upper quartile>` (throughputs from the median times).
//!
//! Usage: `cargo run --release --example plugin-ratio -- [ROUNDS [COMPONENT [BASELINE]]]` (101
//! rounds by default; the component is `plugins/dist/csv_json.wasm`, from
//! `scripts/build-plugins.sh`, unless another build of a CSV→JSON plugin is named). With a
//! BASELINE, another build of the plugin, each round also converts through it (the two plugins
//! in alternating order), and a second line per shape, `<shape>-vs-baseline <baseline MiB/s>
//! <median speed-up> <lower quartile> <upper quartile>`, compares the component with it pair by
//! pair: on a machine whose speed comes in spells that move the plugin more than native code, two
//! plugin builds compare far more steadily against each other than through their ratios to
//! native.

use std::time::Instant;

use export_convert::{Converter, CsvToJson};
use export_plugin_host::{
    CHUNK_BYTES, DataFormat, LoadedPlugin, PluginHost, PluginLimits, SessionOptions,
};

#[path = "samples.rs"]
mod samples;

/// Seconds to convert `data` natively.
fn native(data: &[u8]) -> f64 {
    let started = Instant::now();
    let mut converter = CsvToJson::new();
    let mut produced = 0;
    for chunk in data.chunks(CHUNK_BYTES) {
        produced += converter.push(chunk).expect("valid CSV").len();
    }
    produced += converter.finish().expect("valid CSV").len();
    std::hint::black_box(produced);
    started.elapsed().as_secs_f64()
}

/// Seconds to convert `data` through a new session of `plugin`.
fn wasm(host: &PluginHost, plugin: &std::sync::Arc<LoadedPlugin>, data: &[u8]) -> f64 {
    let options = SessionOptions {
        application: "bench".into(),
        resource: "bench".into(),
        input_format: DataFormat::Csv,
        output_format: DataFormat::Json,
        config: None,
    };
    let started = Instant::now();
    let mut session = host.open(plugin, &options).expect("a session opens");
    let mut produced = 0;
    for chunk in data.chunks(CHUNK_BYTES) {
        produced += session.push(chunk).expect("valid CSV").output_len();
    }
    produced += session.finish().expect("valid CSV").output_len();
    std::hint::black_box(produced);
    started.elapsed().as_secs_f64()
}

/// The value at `fraction` (0 to 1) of `values`, sorted.
fn quantile(values: &mut [f64], fraction: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * fraction).round() as usize]
}

/// `<median> <lower quartile> <upper quartile>` of `values`.
fn quartiles(values: &mut [f64]) -> String {
    format!(
        "{:.3} {:.3} {:.3}",
        quantile(values, 0.5),
        quantile(values, 0.25),
        quantile(values, 0.75)
    )
}

/// The CSV→JSON plugin at `path`, loaded into `host`.
fn load(host: &PluginHost, path: &std::path::Path) -> anyhow::Result<std::sync::Arc<LoadedPlugin>> {
    let bytes = std::fs::read(path).map_err(|error| {
        anyhow::anyhow!("{}: {error} (run scripts/build-plugins.sh)", path.display())
    })?;
    Ok(host.load(&bytes)?)
}

#[expect(clippy::print_stdout, reason = "the result is the program's output")]
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(Ok(101), |text| text.parse())?;
    anyhow::ensure!(rounds > 0, "ROUNDS must be at least 1");
    let component = args.next().map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/csv_json.wasm"),
        std::path::PathBuf::from,
    );
    // PLUGIN_PERF_MAP=1 names the plugin's functions for `perf record` (docs/PLUGINS.md).
    let host = if std::env::var_os("PLUGIN_PERF_MAP").is_some() {
        PluginHost::with_perf_map(PluginLimits::default())?
    } else {
        PluginHost::new(PluginLimits::default())?
    };
    let plugin = load(&host, &component)?;
    let baseline = args
        .next()
        .map(|path| load(&host, std::path::Path::new(&path)))
        .transpose()?;
    let size = 16 * 1024 * 1024;
    for (shape, data) in [
        ("short", samples::short_fields(size)),
        ("long", samples::long_fields(size)),
    ] {
        // One pair first, unmeasured: page faults and caches of the first conversion.
        native(&data);
        wasm(&host, &plugin, &data);
        if let Some(baseline) = &baseline {
            wasm(&host, baseline, &data);
        }
        let (mut natives, mut wasms, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut baselines, mut speedups) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let native = native(&data);
            let (wasm, base) = match &baseline {
                None => (wasm(&host, &plugin, &data), None),
                Some(baseline) if round % 2 == 0 => {
                    let time = wasm(&host, &plugin, &data);
                    (time, Some(wasm(&host, baseline, &data)))
                }
                Some(baseline) => {
                    let base = wasm(&host, baseline, &data);
                    (wasm(&host, &plugin, &data), Some(base))
                }
            };
            natives.push(native);
            wasms.push(wasm);
            ratios.push(native / wasm);
            if let Some(base) = base {
                baselines.push(base);
                speedups.push(base / wasm);
            }
        }
        let mib = data.len() as f64 / (1024.0 * 1024.0);
        println!(
            "{shape} {:.1} {:.1} {}",
            mib / quantile(&mut natives, 0.5),
            mib / quantile(&mut wasms, 0.5),
            quartiles(&mut ratios),
        );
        if !speedups.is_empty() {
            println!(
                "{shape}-vs-baseline {:.1} {}",
                mib / quantile(&mut baselines, 0.5),
                quartiles(&mut speedups),
            );
        }
    }
    Ok(())
}
