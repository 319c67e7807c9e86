//! The docs in `docs/` are maps: they say where things are and why. Measurements — dated
//! figures, speed ratios, timings — go stale there; they belong with the benchmarks, in
//! `bench/results/NOTES.md`. This test fails, naming file and line, when a doc holds one.
//!
//! The rule:
//! - in every doc: no date (`20YY-MM-DD`) and no ratio (`0.9×`, `1.7x`, `3 x faster`); a
//!   product written with spaces (`4 × 2 MiB`, as in OPERATIONS.md's sizing) is not a ratio;
//! - in ARCHITECTURE.md and PLUGINS.md: no timing (`412 ms`, `1.3 s`, `24 µs`) unless the line
//!   names a setting or constant (an upper-case name with an underscore, such as
//!   `PLUGIN_CALL_TIMEOUT`): then the figure is a default or a limit, not a measurement. The
//!   other docs (OPERATIONS.md, API-DIFFERENCES.md) state timeouts and limits for operators, so
//!   timings are allowed there.

use std::fs;
use std::path::Path;

/// The docs in which a timing is taken for a measurement.
const MAPS: [&str; 2] = ["ARCHITECTURE.md", "PLUGINS.md"];

/// The units that make a number a timing.
const TIME_UNITS: [&str; 16] = [
    "ns", "µs", "μs", "us", "ms", "s", "sec", "secs", "second", "seconds", "min", "mins", "minute",
    "minutes", "h", "hours",
];

#[test]
fn docs_have_no_measurements() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut paths: Vec<_> = fs::read_dir(&docs)
        .expect("docs/ is readable")
        .map(|entry| entry.expect("docs/ is listable").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "md"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no docs in {}", docs.display());

    let mut problems = Vec::new();
    for path in &paths {
        let name = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let text = fs::read_to_string(path).expect("a doc is UTF-8 text");
        let timings_are_measurements = MAPS.contains(&name.as_str());
        for (index, line) in text.lines().enumerate() {
            for finding in measurements(line, timings_are_measurements) {
                problems.push(format!(
                    "docs/{name}:{}: {finding}: {}",
                    index + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs are maps; move these to bench/results/NOTES.md (keep them dated there):\n{}",
        problems.join("\n")
    );
}

/// What in `line` reads as a measurement: dates, ratios and, when `timings` is set and the line
/// names no setting, timings.
fn measurements(line: &str, timings: bool) -> Vec<String> {
    let mut found = Vec::new();
    for window in line.as_bytes().windows(10) {
        if is_date(window) {
            found.push(format!("a date ({})", String::from_utf8_lossy(window)));
        }
    }
    let timings = timings && !names_a_setting(line);
    for (start, end) in numbers(line) {
        let number = &line[start..end];
        let rest = &line[end..];
        if is_ratio(rest) {
            let sign = rest.split_whitespace().next().unwrap_or_default();
            let sign = sign.trim_end_matches(|c: char| c.is_ascii_punctuation());
            found.push(format!("a ratio ({number}{sign})"));
        } else if timings && is_time_unit(rest) {
            found.push(format!("a timing ({number} {})", unit_of(rest)));
        }
    }
    found
}

/// `20YY-MM-DD`.
fn is_date(window: &[u8]) -> bool {
    window.starts_with(b"20")
        && window.iter().enumerate().all(|(at, byte)| match at {
            4 | 7 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        })
}

/// The byte ranges of the numbers in `line` (`12`, `0.73`) that stand on their own: not part of
/// a word (`x86`, `sha256`, `wasm32`) or of a version's later parts (the `.0` of `1.1.0`).
fn numbers(line: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut previous: Option<char> = None;
    let mut chars = line.char_indices().peekable();
    while let Some((start, first)) = chars.next() {
        let stands_alone = previous
            .is_none_or(|before| !(before.is_alphanumeric() || before == '_' || before == '.'));
        previous = Some(first);
        if !first.is_ascii_digit() || !stands_alone {
            continue;
        }
        let mut end = start + 1;
        let mut seen_point = false;
        while let Some(&(at, next)) = chars.peek() {
            let point_then_digit = next == '.'
                && !seen_point
                && line[at + 1..].starts_with(|after: char| after.is_ascii_digit());
            if !next.is_ascii_digit() && !point_then_digit {
                break;
            }
            seen_point |= next == '.';
            end = at + 1;
            previous = Some(next);
            chars.next();
        }
        ranges.push((start, end));
    }
    ranges
}

/// Whether the text after a number makes it a ratio: `×` right after it, `x` right after it
/// and then no letter or digit, or either one after a space and followed by `faster`/`slower`.
fn is_ratio(rest: &str) -> bool {
    let after_x = rest.strip_prefix('x');
    rest.starts_with('×')
        || after_x.is_some_and(|after| !after.starts_with(|next: char| next.is_alphanumeric()))
        || ["× faster", "× slower", "x faster", "x slower"]
            .iter()
            .any(|words| {
                rest.strip_prefix(' ')
                    .is_some_and(|after_space| after_space.starts_with(*words))
            })
}

/// The word right after a number, past one space: `ms` in `412 ms`.
fn unit_of(rest: &str) -> &str {
    let rest = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('\u{a0}'))
        .unwrap_or(rest);
    let end = rest
        .find(|next: char| !next.is_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

fn is_time_unit(rest: &str) -> bool {
    TIME_UNITS.contains(&unit_of(rest))
}

/// Whether `line` names a setting or constant: an upper-case name with an underscore.
fn names_a_setting(line: &str) -> bool {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| {
            word.contains('_')
                && word.starts_with(|first: char| first.is_ascii_uppercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
}

#[test]
fn the_rule_separates_measurements_from_settings() {
    let found = |line: &str| measurements(line, true);
    assert_eq!(found("Measured 2026-12-03 on a Xeon").len(), 1);
    assert_eq!(found("the plugin ran at 0.90× native").len(), 1);
    assert_eq!(found("1.7x faster than before").len(), 1);
    assert_eq!(found("about 3 x slower").len(), 1);
    assert_eq!(found("a session starts in 24 µs").len(), 1);
    assert_eq!(found("0.73 ms per 16 MiB, and 1.3 s in all").len(), 2);
    assert!(found("| time per call | 2 s | `PLUGIN_CALL_TIMEOUT` |").is_empty());
    assert!(found("MAX_CONCURRENT_UPLOADS 4 × 2 × AWS_UPLOADER_BUFFER_SIZE 5 MiB").is_empty());
    assert!(found("wasm32-wasip2 on x86-64, sha256 digests, contract 1.1.0").is_empty());
    assert!(found("chunks of 256 KiB, 0x1f, 4097th piece").is_empty());
    assert!(measurements("`serve` waits up to about 30 s", false).is_empty());
}
