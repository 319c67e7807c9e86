//! In-process CSV→JSON conversion of a file with the service's converter, in the 1 MiB chunks
//! the upload path uses, output discarded: the baseline of bench/'s "end-to-end ingest with
//! conversion" figure. Prints `<bytes> <seconds>` on stdout.
//!
//! Usage: `cargo run --release --example convert-file -- FILE [REPEAT]`

use std::io::Read as _;
use std::time::Instant;

use export_convert::{Converter, CsvToJson};

#[expect(clippy::print_stdout, reason = "the result is the program's output")]
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: convert-file FILE [REPEAT]"))?;
    let repeat: usize = args.next().map_or(Ok(1), |text| text.parse())?;
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut bytes = 0u64;
    let started = Instant::now();
    for _ in 0..repeat {
        let mut file = std::fs::File::open(&path)?;
        let mut converter = CsvToJson::new();
        let mut produced = 0usize;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            bytes += read as u64;
            produced += converter.push(&buffer[..read])?.len();
        }
        produced += converter.finish()?.len();
        std::hint::black_box(produced);
    }
    println!("{bytes} {:.6}", started.elapsed().as_secs_f64());
    Ok(())
}
