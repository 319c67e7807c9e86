//! The format step of an upload: data already in the export's format passes through byte for
//! byte (as upstream); data in the other format goes through the default CSV↔JSON converter
//! (`export-convert`), one bounded step at a time. The uploaded format is known before (from
//! `Content-Type`, or sniffed by [`super::sniff`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use export_convert::{ConvertError, Converter, CsvToJson, JsonToCsv, MAX_BYTE_EXPANSION};
use tokio::io::{AsyncRead, ReadBuf};

use crate::domain::Format;

/// Carried inside `io::Error` when the data cannot be converted.
#[derive(Debug)]
pub struct Rejected(pub ConvertError);

impl std::fmt::Display for Rejected {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

impl std::error::Error for Rejected {}

/// About the most output one step of conversion holds in memory: the input of a step is cut
/// short where its records could produce more (see [`piece_end`]).
const STEP_OUTPUT: usize = 1024 * 1024;

enum Mode {
    /// Same format: bytes pass through.
    Passthrough,
    /// Other format: bytes are converted; the bytes that may end a record of the input.
    Convert(Box<dyn Converter + Send>, [u8; 2]),
}

/// Reads `inner` and yields the data in `target` format.
pub struct Converting<R> {
    inner: R,
    mode: Mode,
    /// Output not yet handed out, and how much of it was.
    pending: Vec<u8>,
    offset: usize,
    /// The last chunk read, and the part of it not converted yet.
    scratch: Vec<u8>,
    unconverted: std::ops::Range<usize>,
    finished: bool,
}

impl<R> Converting<R> {
    /// Converts `inner`, in `uploaded` format, into `target`.
    pub fn new(inner: R, uploaded: Format, target: Format) -> Self {
        let mode = if uploaded == target {
            Mode::Passthrough
        } else {
            match target {
                // A CSV record ends at a line end; a JSON record at a closing bracket.
                Format::Json => Mode::Convert(Box::new(CsvToJson::new()), [b'\n', b'\r']),
                Format::Csv => Mode::Convert(Box::new(JsonToCsv::new()), [b'}', b']']),
            }
        };
        Self {
            inner,
            mode,
            pending: Vec::new(),
            offset: 0,
            scratch: vec![0; 64 * 1024],
            unconverted: 0..0,
            finished: false,
        }
    }

    /// Runs as much of `input` as one step may take through the current mode into `pending`;
    /// returns how much it took.
    fn process(&mut self, input: &[u8]) -> Result<usize, ConvertError> {
        match &mut self.mode {
            Mode::Passthrough => {
                self.pending.extend_from_slice(input);
                Ok(input.len())
            }
            Mode::Convert(converter, record_ends) => {
                let end = piece_end(input, converter.record_overhead(), *record_ends);
                self.pending
                    .extend_from_slice(converter.push(&input[..end])?);
                Ok(end)
            }
        }
    }

    fn finish(&mut self) -> Result<(), ConvertError> {
        if let Mode::Convert(converter, _) = &mut self.mode {
            self.pending.extend_from_slice(converter.finish()?);
        }
        Ok(())
    }

    /// Records converted, when a converter ran.
    pub fn converted_records(&self) -> Option<u64> {
        match &self.mode {
            Mode::Convert(converter, _) => Some(converter.records()),
            Mode::Passthrough => None,
        }
    }
}

/// Where one step's input ends so that its output stays near [`STEP_OUTPUT`]: a record may add
/// `overhead` bytes besides [`MAX_BYTE_EXPANSION`] per byte (a long CSV header repeated in
/// every JSON record), so the step takes only as many record ends (`record_ends` bytes, which
/// bound the records from above) as that budget allows — one, while the overhead is unknown.
/// Always at least one byte.
pub(crate) fn piece_end(input: &[u8], overhead: Option<usize>, record_ends: [u8; 2]) -> usize {
    let per_record = overhead.map_or(usize::MAX, |overhead| overhead.saturating_add(16));
    let allowed = (STEP_OUTPUT / per_record).max(1);
    let input = &input[..input.len().min(STEP_OUTPUT / MAX_BYTE_EXPANSION)];
    let is_end = |byte: &&u8| record_ends.contains(byte);
    // Counting first is one vectorised pass; most chunks hold fewer record ends than allowed.
    if allowed >= input.len() || input.iter().filter(is_end).count() <= allowed {
        return input.len();
    }
    input
        .iter()
        .enumerate()
        .filter(|(_, byte)| is_end(byte))
        .nth(allowed - 1)
        .map_or(input.len(), |(position, _)| position + 1)
}

impl<R: AsyncRead + Unpin> AsyncRead for Converting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.offset < this.pending.len() {
                let available = &this.pending[this.offset..];
                let count = available.len().min(buffer.remaining());
                buffer.put_slice(&available[..count]);
                this.offset += count;
                if this.offset == this.pending.len() {
                    this.pending.clear();
                    this.offset = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.finished {
                return Poll::Ready(Ok(()));
            }
            let scratch = std::mem::take(&mut this.scratch);
            let result = if this.unconverted.is_empty() {
                let mut scratch = scratch;
                let mut chunk = ReadBuf::new(&mut scratch);
                let polled = Pin::new(&mut this.inner).poll_read(context, &mut chunk);
                let read = chunk.filled().len();
                this.scratch = scratch;
                match polled {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Ready(Ok(())) if read == 0 => {
                        this.finished = true;
                        this.finish()
                    }
                    Poll::Ready(Ok(())) => {
                        this.unconverted = 0..read;
                        Ok(())
                    }
                }
            } else {
                // One step at a time: its output is handed out before the next is converted.
                let processed = this.process(&scratch[this.unconverted.clone()]);
                this.scratch = scratch;
                processed.map(|taken| this.unconverted.start += taken)
            };
            result.map_err(|error| io::Error::new(io::ErrorKind::InvalidData, Rejected(error)))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn convert(input: &[u8], from: Format, to: Format) -> Result<Vec<u8>, io::Error> {
        let mut converting = Converting::new(input, from, to);
        let mut output = Vec::new();
        converting.read_to_end(&mut output).await?;
        Ok(output)
    }

    #[test]
    fn a_step_takes_few_records_when_each_repeats_a_long_header() {
        let rows = b"1\n2\n3\n4\n";
        // Unknown overhead (the header is being read): up to the first record end.
        assert_eq!(piece_end(rows, None, [b'\n', b'\r']), 2);
        // A key of half the budget: two records.
        assert_eq!(
            piece_end(rows, Some(STEP_OUTPUT / 2 - 16), [b'\n', b'\r']),
            4
        );
        // A short header: the whole input (up to the per-byte bound).
        assert_eq!(piece_end(rows, Some(10), [b'\n', b'\r']), rows.len());
        let long = vec![b'x'; STEP_OUTPUT];
        assert_eq!(
            piece_end(&long, Some(10), [b'\n', b'\r']),
            STEP_OUTPUT / MAX_BYTE_EXPANSION
        );
        // A key larger than the budget, no record end in sight: still progress.
        assert_eq!(piece_end(b"xyz", Some(STEP_OUTPUT * 4), [b'\n', b'\r']), 3);
        assert_eq!(piece_end(b"\n\n", Some(STEP_OUTPUT * 4), [b'\n', b'\r']), 1);
    }

    #[tokio::test]
    async fn stepwise_conversion_gives_the_same_bytes() {
        let name = "n".repeat(300_000);
        let mut csv = format!("{name},b\n").into_bytes();
        for row in 0..200 {
            csv.extend_from_slice(format!("{row},x\n").as_bytes());
        }
        let stepwise = convert(&csv, Format::Csv, Format::Json).await.unwrap();
        let whole = export_convert::convert_all(&mut CsvToJson::new(), &csv).unwrap();
        assert_eq!(stepwise, whole);
        let back = convert(&whole, Format::Json, Format::Csv).await.unwrap();
        assert_eq!(back, csv);
        assert_eq!(convert(&csv, Format::Csv, Format::Csv).await.unwrap(), csv);
    }

    #[test]
    fn realistic_records_expand_well_within_the_default_limit() {
        // The default of MAX_STORED_EXPANSION leaves room over what realistic records need:
        // the demo's hosts and events (about 1.8× as JSON).
        for resource in ["exampleResource", "anotherExampleResource"] {
            let data = crate::demo::data::Dataset::generate(resource, uuid::Uuid::nil(), 2000)
                .expect("a demo resource");
            let csv = data.render(Format::Csv);
            let json = export_convert::convert_all(&mut CsvToJson::new(), &csv).unwrap();
            let expansion = json.len() as f64 / csv.len() as f64;
            assert!(
                expansion * 2.0 < crate::config::DEFAULT_STORED_EXPANSION,
                "{resource}: {expansion}"
            );
        }
    }

    #[tokio::test]
    async fn held_output_stays_near_one_step_whatever_the_expansion() {
        // A 1 MiB column name over one-byte rows: each record repeats it.
        let name = "k".repeat(1024 * 1024);
        let mut csv = format!("{name}\n").into_bytes();
        csv.extend(std::iter::repeat_n(*b"1\n", 64).flatten());
        let mut converting = Converting::new(&csv[..], Format::Csv, Format::Json);
        let mut buffer = vec![0; 8192];
        let mut total = 0;
        let mut most_held = 0;
        loop {
            let read = converting.read(&mut buffer).await.unwrap();
            most_held = most_held.max(converting.pending.capacity());
            if read == 0 {
                break;
            }
            total += read;
        }
        assert!(total > 64 * 1024 * 1024, "{total}");
        assert!(
            most_held < 4 * 1024 * 1024,
            "held {most_held} bytes at once"
        );
    }
}
