//! The format step of an upload: data already in the export's format passes through byte for
//! byte (as upstream); data in the other format goes through the default CSV↔JSON converter
//! (`export-convert`). The uploaded format comes from `Content-Type`, or is sniffed from the
//! first non-blank byte when the header says nothing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use export_convert::{ConvertError, Converter, CsvToJson, JsonToCsv};
use tokio::io::{AsyncRead, ReadBuf};

use super::rows::sniff;
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

enum Mode {
    /// Waiting for the first non-blank byte to sniff the format.
    Undecided,
    /// Same format: bytes pass through.
    Passthrough,
    /// Other format: bytes are converted.
    Convert(Box<dyn Converter + Send>),
}

/// Reads `inner` and yields the data in `target` format.
pub struct Converting<R> {
    inner: R,
    declared: Option<Format>,
    target: Format,
    mode: Mode,
    /// Output not yet handed out, and how much of it was.
    pending: Vec<u8>,
    offset: usize,
    scratch: Vec<u8>,
    finished: bool,
    /// The format the upload turned out to be in, once known.
    pub uploaded: Option<Format>,
}

impl<R> Converting<R> {
    /// Converts `inner`, declared as `declared` (sniffed when `None`), into `target`.
    pub fn new(inner: R, declared: Option<Format>, target: Format) -> Self {
        let mut converting = Self {
            inner,
            declared,
            target,
            mode: Mode::Undecided,
            pending: Vec::new(),
            offset: 0,
            scratch: vec![0; 64 * 1024],
            finished: false,
            uploaded: None,
        };
        if let Some(format) = declared {
            converting.decide(format);
        }
        converting
    }

    fn decide(&mut self, uploaded: Format) {
        self.uploaded = Some(uploaded);
        self.mode = if uploaded == self.target {
            Mode::Passthrough
        } else {
            match self.target {
                Format::Json => Mode::Convert(Box::new(CsvToJson::new())),
                Format::Csv => Mode::Convert(Box::new(JsonToCsv::new())),
            }
        };
    }

    /// Runs `input` through the current mode into `pending`.
    fn process(&mut self, input: &[u8]) -> Result<(), ConvertError> {
        let mut input = input;
        if let Mode::Undecided = self.mode {
            // Blank bytes before the first character are kept: they pass through unchanged.
            match input.iter().position(|byte| !byte.is_ascii_whitespace()) {
                None => {
                    self.pending.extend_from_slice(input);
                    return Ok(());
                }
                Some(first) => {
                    let format = sniff(input[first]);
                    self.decide(format);
                    if let Mode::Convert(_) = self.mode {
                        // Leading blanks mean nothing to a converter.
                        self.pending.clear();
                        input = &input[first..];
                    }
                }
            }
        }
        match &mut self.mode {
            Mode::Undecided => unreachable!("decided above"),
            Mode::Passthrough => self.pending.extend_from_slice(input),
            Mode::Convert(converter) => self.pending.extend_from_slice(converter.push(input)?),
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConvertError> {
        if let Mode::Convert(converter) = &mut self.mode {
            self.pending.extend_from_slice(converter.finish()?);
        }
        Ok(())
    }

    /// Records converted, when a converter ran.
    pub fn converted_records(&self) -> Option<u64> {
        match &self.mode {
            Mode::Convert(converter) => Some(converter.records()),
            _ => None,
        }
    }

    /// The reader being converted.
    pub fn inner_ref(&self) -> &R {
        &self.inner
    }

    /// Whether the upload was declared (rather than sniffed).
    pub fn was_declared(&self) -> bool {
        self.declared.is_some()
    }
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
            let mut scratch = std::mem::take(&mut this.scratch);
            let mut chunk = ReadBuf::new(&mut scratch);
            let polled = Pin::new(&mut this.inner).poll_read(context, &mut chunk);
            let read = chunk.filled().len();
            let result = match polled {
                Poll::Pending => {
                    this.scratch = scratch;
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => {
                    this.scratch = scratch;
                    return Poll::Ready(Err(error));
                }
                Poll::Ready(Ok(())) if read == 0 => {
                    this.finished = true;
                    this.finish()
                }
                Poll::Ready(Ok(())) => this.process(&scratch[..read]),
            };
            this.scratch = scratch;
            result.map_err(|error| io::Error::new(io::ErrorKind::InvalidData, Rejected(error)))?;
        }
    }
}
