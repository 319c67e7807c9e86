//! The archive writer (`package::archive`, the `zip` crate's stream writer on a blocking thread)
//! against the least any ZIP writer must do with the same bytes: DEFLATE them, CRC-32 the input
//! and SHA-256 the output, in one loop on one thread. Rounds alternate the two, so a drift of the
//! machine's speed hits both; each round's ratio of throughputs is one sample.
//!
//! Prints, per compression level (1, the service's default, and 0, stored), `<level> <writer
//! MiB/s> <baseline MiB/s> <median ratio> <lower quartile> <upper quartile>` (throughputs from
//! the median times), then `peak-rss-growth <MiB>`: how far the process's peak RSS rose above
//! its size with the input in memory.
//!
//! Usage: `cargo run --release --example archive-writer -- [MIB [ROUNDS]]` (256 MiB over ten
//! entries, 5 rounds by default).

use std::io::Write;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use export_service::package::archive::{self, Feed, Output};
use flate2::Compression;
use flate2::write::DeflateEncoder;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

#[path = "samples.rs"]
#[expect(dead_code, reason = "only the long-field sample is archived")]
mod samples;

const ENTRIES: usize = 10;
/// The size of the pieces a source's body is read in by the packager.
const PIECE: usize = 128 * 1024;

/// Seconds for the service's writer to archive `pieces` as ten entries.
async fn writer(level: u32, pieces: &[Bytes]) -> f64 {
    let started = Instant::now();
    let (feed, feed_receiver) = mpsc::channel(8);
    let (output, mut output_receiver) = mpsc::channel(4);
    let writing = archive::spawn_writer(level, Utc::now(), feed_receiver, output);
    let per_entry = pieces.len().div_ceil(ENTRIES);
    let pieces = pieces.to_vec();
    let feeding = tokio::spawn(async move {
        for (index, entry) in pieces.chunks(per_entry).enumerate() {
            let size_hint = entry.iter().map(|piece| piece.len() as u64).sum();
            let name = format!("source-{index}.csv");
            feed.send(Feed::Entry { name, size_hint }).await.unwrap();
            for piece in entry {
                feed.send(Feed::Data(piece.clone())).await.unwrap();
            }
        }
        feed.send(Feed::Finish).await.unwrap();
    });
    let mut archived = 0usize;
    while let Some(Output::Chunk(chunk)) = output_receiver.recv().await {
        archived += chunk.len();
    }
    feeding.await.unwrap();
    let summary = writing.await.unwrap().unwrap();
    assert_eq!(summary.bytes, archived as u64);
    started.elapsed().as_secs_f64()
}

/// Seconds for the baseline: DEFLATE (or copy, at level 0), CRC-32 and SHA-256 of the same bytes.
fn baseline(level: u32, pieces: &[Bytes]) -> f64 {
    struct Hashing(Sha256);
    impl Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let started = Instant::now();
    let mut crc = crc32fast::Hasher::new();
    let mut out = Hashing(Sha256::new());
    if level == 0 {
        for piece in pieces {
            crc.update(piece);
            out.write_all(piece).unwrap();
        }
    } else {
        let mut encoder = DeflateEncoder::new(&mut out, Compression::new(level));
        for piece in pieces {
            crc.update(piece);
            encoder.write_all(piece).unwrap();
        }
        encoder.finish().unwrap();
    }
    std::hint::black_box((crc.finalize(), out.0.finalize()));
    started.elapsed().as_secs_f64()
}

fn quartiles(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |fraction: f64| values[((values.len() - 1) as f64 * fraction).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[expect(clippy::print_stdout, reason = "the result is the program's output")]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(256, |value| value.parse().expect("MIB"));
    let rounds: usize = args
        .next()
        .map_or(5, |value| value.parse().expect("ROUNDS"));
    // A 16 MiB sample repeated: DEFLATE's 32 KiB window never sees the repetition.
    let sample = Bytes::from(samples::long_fields(16 << 20));
    let pieces: Vec<Bytes> = (0..(mib << 20) / PIECE)
        .map(|index| {
            let at = index * PIECE % (sample.len() - PIECE);
            sample.slice(at..at + PIECE)
        })
        .collect();
    let total = (pieces.len() * PIECE) as f64 / (1 << 20) as f64;
    let resident = status_kib("VmRSS:");
    for level in [1, 0] {
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which side goes first.
            let (a, b) = if round % 2 == 0 {
                let a = writer(level, &pieces).await;
                (a, baseline(level, &pieces))
            } else {
                let b = baseline(level, &pieces);
                (writer(level, &pieces).await, b)
            };
            ours.push(a);
            theirs.push(b);
            ratios.push(b / a);
        }
        let (ratio, low, high) = quartiles(ratios);
        let ours = total / quartiles(ours).0;
        let theirs = total / quartiles(theirs).0;
        println!("{level} {ours:.1} {theirs:.1} {ratio:.3} {low:.3} {high:.3}");
    }
    let grown = status_kib("VmHWM:").saturating_sub(resident);
    println!("peak-rss-growth {:.1}", grown as f64 / 1024.0);
}
