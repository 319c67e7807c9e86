//! The format step of an upload: data already in the export's format passes through byte for
//! byte (as upstream); data in the other format goes through the default CSV↔JSON converter
//! (`export-convert`), one bounded step at a time. The uploaded format is known before (from
//! `Content-Type`, or sniffed by [`super::sniff`]).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use export_convert::{ConvertError, Converter, CsvToJson, JsonToCsv, MAX_BYTE_EXPANSION};
use futures::Stream;

use super::IngestError;
use crate::domain::Format;

/// About the most output one step of conversion holds in memory: the input of a step is cut
/// short where its records could produce more (see [`piece_end`]).
const STEP_OUTPUT: usize = 1024 * 1024;

enum Mode {
    /// Same format: bytes pass through.
    Passthrough,
    /// Other format: bytes are converted; the bytes that may end a record of the input.
    Convert(Box<dyn Converter + Send>, [u8; 2]),
}

/// The chunks of `inner`, in `target` format.
pub struct Converting<S> {
    inner: S,
    mode: Mode,
    /// Output of the current step, handed out as one chunk.
    pending: Vec<u8>,
    /// The part of the last chunk read not converted yet.
    unconverted: Bytes,
    finished: bool,
}

impl<S> Converting<S> {
    /// Converts `inner`, in `uploaded` format, into `target`.
    pub fn new(inner: S, uploaded: Format, target: Format) -> Self {
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
            unconverted: Bytes::new(),
            finished: false,
        }
    }

    /// The stage this one reads from.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The stage this one reads from, to take it back.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Runs as much of the unconverted input as one step may take through the converter into
    /// `pending`.
    fn step(&mut self) -> Result<(), ConvertError> {
        if let Mode::Convert(converter, record_ends) = &mut self.mode {
            let end = piece_end(&self.unconverted, converter.record_overhead(), *record_ends);
            let piece = self.unconverted.split_to(end);
            self.pending.extend_from_slice(converter.push(&piece)?);
        }
        Ok(())
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

impl<S> Stream for Converting<S>
where
    S: Stream<Item = Result<Bytes, IngestError>> + Unpin,
{
    type Item = Result<Bytes, IngestError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                return Poll::Ready(Some(Ok(Bytes::from(std::mem::take(&mut this.pending)))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            let converted = if this.unconverted.is_empty() {
                match ready!(Pin::new(&mut this.inner).poll_next(context)) {
                    Some(Ok(chunk)) if matches!(this.mode, Mode::Passthrough) => {
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    Some(Ok(chunk)) => {
                        this.unconverted = chunk;
                        Ok(())
                    }
                    Some(Err(error)) => {
                        this.finished = true;
                        return Poll::Ready(Some(Err(error)));
                    }
                    None => {
                        this.finished = true;
                        this.finish()
                    }
                }
            } else {
                // One step at a time: its output is handed out before the next is converted.
                this.step()
            };
            if let Err(error) = converted {
                this.finished = true;
                return Poll::Ready(Some(Err(IngestError::Rejected(error))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// `input` in chunks of 64 KiB, as a body arrives.
    fn chunked(input: &[u8]) -> impl Stream<Item = Result<Bytes, IngestError>> + Unpin + use<> {
        let chunks: Vec<_> = input
            .chunks(64 * 1024)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        futures::stream::iter(chunks)
    }

    async fn convert(input: &[u8], from: Format, to: Format) -> Result<Vec<u8>, IngestError> {
        let mut converting = Converting::new(chunked(input), from, to);
        let mut output = Vec::new();
        while let Some(chunk) = converting.next().await {
            output.extend_from_slice(&chunk?);
        }
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
            let data = export_demo::data::Dataset::generate(resource, uuid::Uuid::nil(), 2000)
                .expect("a demo resource");
            let csv = data.render(export_demo::Format::Csv);
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
        let mut converting = Converting::new(chunked(&csv), Format::Csv, Format::Json);
        let mut total = 0;
        let mut most_held = 0;
        while let Some(chunk) = converting.next().await {
            let chunk = chunk.unwrap();
            most_held = most_held.max(chunk.len());
            total += chunk.len();
        }
        assert!(total > 64 * 1024 * 1024, "{total}");
        assert!(
            most_held < 4 * 1024 * 1024,
            "held {most_held} bytes at once"
        );
    }
}
