//! CSV records → JSON.
//!
//! A hand-written RFC 4180 reader (it reads exactly what `csv-core` reads with its defaults, which
//! a differential test checks) that writes each field straight into the JSON output instead of
//! buffering the record. The bytes that need attention are rare, so a field is scanned eight
//! bytes at a time ([`crate::scan`]) and copied in one piece; that keeps the per-byte work small
//! both natively and inside a Wasm sandbox, where every loop iteration also pays for the
//! interruption check. Fields that lie whole in a chunk (nearly all) go through one tight loop
//! ([`CsvToJson::whole_fields`]); the byte-level state machine takes the rest — fields cut by a
//! chunk boundary, and anything it must report as an error.

use std::collections::HashSet;

use crate::out::{Cursor, Out, Sink, to_words};
use crate::scan::{Delimiters, copy_plain, next_special};
use crate::{ConvertError, Converter, MAX_RECORD_BYTES};

/// The room [`CsvToJson::whole_fields`] makes sure the output has before it starts (its cursor
/// cannot grow the buffer).
const FAST_PATH_ROOM: usize = 16 * 1024;

/// Where the reader is within the CSV grammar, kept across chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between records (blank lines are skipped here, as `csv-core` does).
    RecordStart,
    /// At the start of a field, after a delimiter.
    FieldStart,
    /// Inside a field that did not start with a quote.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: a second quote is a literal one.
    QuoteInQuoted,
}

/// A rendered key (see [`CsvToJson::keys`]): its first sixteen bytes (zero-padded), written
/// in one store without a loop (most keys fit), and the words of the rest.
#[derive(Debug)]
struct Key {
    head: [u8; 16],
    tail: Vec<u64>,
    len: usize,
}

impl Key {
    fn new(rendered: &[u8]) -> Self {
        let split = rendered.len().min(16);
        let mut head = [0; 16];
        head[..split].copy_from_slice(&rendered[..split]);
        Self {
            head,
            tail: to_words(&rendered[split..]),
            len: rendered.len(),
        }
    }

    #[inline(always)]
    fn write<S: Sink>(&self, output: &mut S) {
        output.sixteen(&self.head, self.len.min(16));
        if self.len > 16 {
            output.words(&self.tail, self.len - 16);
        }
    }
}

/// Converts CSV to a JSON array of objects (see the crate documentation for the rules).
pub struct CsvToJson {
    state: State,
    /// The header's keys, each rendered once as the JSON that opens its field (`,"name":"`,
    /// without the comma for the first) in words for [`Out::words`]; `None` while reading the
    /// header.
    keys: Option<Vec<Key>>,
    /// The header's names read so far, the same as a set (the duplicate check stays linear in
    /// the number of columns), and the raw bytes of the one being read.
    names: Vec<String>,
    seen: HashSet<String>,
    name: Vec<u8>,
    /// Fields started in the current record.
    fields: usize,
    /// Input bytes of the current record so far (0 between records: the fast path relies on it).
    record_bytes: usize,
    /// Data records begun so far (the array has started once there is one).
    records: u64,
    /// The start of a UTF-8 sequence that the last chunk cut off.
    carry: Vec<u8>,
    /// Bytes read and written so far, to size the output of the next chunk.
    read: u64,
    written: u64,
    /// The most output [`Self::whole_fields`] writes before it lets the buffer grow (tests make
    /// it small, to run the way back to the state machine).
    window: usize,
    /// The output of the last call, in a buffer every call reuses.
    output: Out,
}

impl Default for CsvToJson {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CsvToJson {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CsvToJson")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl CsvToJson {
    /// A converter at the start of a document.
    pub fn new() -> Self {
        Self {
            state: State::RecordStart,
            keys: None,
            names: Vec::new(),
            seen: HashSet::new(),
            name: Vec::new(),
            fields: 0,
            record_bytes: 0,
            records: 0,
            carry: Vec::new(),
            read: 0,
            written: 0,
            window: usize::MAX,
            output: Out::default(),
        }
    }

    /// The record errors are reported against: 0 for the header, else the data record's number.
    fn record_number(&self) -> u64 {
        if self.keys.is_some() { self.records } else { 0 }
    }

    /// Whether the current field's bytes go to the output (not past the header's width).
    fn writing(&self) -> bool {
        self.keys
            .as_ref()
            .is_some_and(|keys| self.fields <= keys.len())
    }

    /// Counts `bytes` more of the current record against the record size limit.
    fn count(&mut self, bytes: usize) -> Result<(), ConvertError> {
        self.record_bytes += bytes;
        if self.record_bytes > MAX_RECORD_BYTES {
            return Err(ConvertError::at(
                self.record_number(),
                format!("is larger than {MAX_RECORD_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// Appends field bytes that need no escaping.
    fn plain(&mut self, output: &mut Out, bytes: &[u8]) -> Result<(), ConvertError> {
        self.count(bytes.len())?;
        if self.keys.is_none() {
            self.name.extend_from_slice(bytes);
        } else if self.writing() {
            output.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Appends one field byte that JSON escapes (a quote, a backslash or a control character).
    fn escaped(&mut self, output: &mut Out, byte: u8) {
        self.record_bytes += 1;
        if self.keys.is_none() {
            self.name.push(byte);
        } else if self.writing() {
            push_escaped(output, byte);
        }
    }

    fn begin_record(&mut self, output: &mut Out) {
        self.fields = 0;
        self.record_bytes = 0;
        if self.keys.is_some() {
            open_record(output, self.records);
            self.records += 1;
        }
    }

    fn begin_field(&mut self, output: &mut Out) {
        self.fields += 1;
        if let Some(keys) = &self.keys
            && let Some(key) = keys.get(self.fields - 1)
        {
            key.write(output);
        }
    }

    fn end_field(&mut self, output: &mut Out) -> Result<(), ConvertError> {
        if self.keys.is_none() {
            let name = String::from_utf8(std::mem::take(&mut self.name))
                .map_err(|_| ConvertError::at(0, "is not valid UTF-8"))?;
            if !self.seen.insert(name.clone()) {
                return Err(ConvertError::at(
                    0,
                    format!("the header has a duplicate column '{name}'"),
                ));
            }
            self.names.push(name);
        } else if self.writing() {
            output.push(b'"');
        }
        Ok(())
    }

    fn end_record(&mut self, output: &mut Out) -> Result<(), ConvertError> {
        let Some(keys) = &self.keys else {
            self.seen = HashSet::new();
            // Each key is escaped once and copied into every record.
            self.keys = Some(
                self.names
                    .drain(..)
                    .enumerate()
                    .map(|(index, name)| {
                        let mut key = if index > 0 { vec![b','] } else { Vec::new() };
                        key.extend(serde_json::to_vec(&name).expect("a string serialises"));
                        key.extend_from_slice(b":\"");
                        Key::new(&key)
                    })
                    .collect(),
            );
            return Ok(());
        };
        if self.fields != keys.len() {
            return Err(ConvertError::at(
                self.records,
                format!("has {} fields, the header has {}", self.fields, keys.len()),
            ));
        }
        output.push(b'}');
        Ok(())
    }

    /// Handles a non-ASCII byte at `input[at]`: validates the UTF-8 sequence it starts and copies
    /// it. Returns where reading goes on, or `None` when the chunk ends inside the sequence (its
    /// start is then kept for the next chunk).
    fn non_ascii(
        &mut self,
        input: &[u8],
        at: usize,
        output: &mut Out,
    ) -> Result<Option<usize>, ConvertError> {
        let width = utf8_width(input[at]);
        let end = at + width;
        if width == 0 || (end <= input.len() && std::str::from_utf8(&input[at..end]).is_err()) {
            return Err(ConvertError::at(self.record_number(), "is not valid UTF-8"));
        }
        if end > input.len() {
            self.carry.extend_from_slice(&input[at..]);
            return Ok(None);
        }
        self.plain(output, &input[at..end])?;
        Ok(Some(end))
    }

    /// Completes a UTF-8 sequence the previous chunk cut off; returns how much of `input` it used.
    fn complete_carry(&mut self, input: &[u8], output: &mut Out) -> Result<usize, ConvertError> {
        let width = utf8_width(self.carry[0]);
        let used = (width - self.carry.len()).min(input.len());
        self.carry.extend_from_slice(&input[..used]);
        if self.carry.len() == width {
            let sequence = std::mem::take(&mut self.carry);
            if std::str::from_utf8(&sequence).is_err() {
                return Err(ConvertError::at(self.record_number(), "is not valid UTF-8"));
            }
            self.plain(output, &sequence)?;
        }
        Ok(used)
    }

    /// Reads `input` (one chunk) through the CSV grammar, writing JSON for every field.
    fn feed(&mut self, input: &[u8], output: &mut Out) -> Result<(), ConvertError> {
        let mut at = 0;
        if !self.carry.is_empty() {
            at = self.complete_carry(input, output)?;
        }
        while at < input.len() {
            if self.keys.is_some() && matches!(self.state, State::RecordStart | State::FieldStart) {
                at = self.whole_fields(input, at, output);
                if at == input.len() {
                    break;
                }
            }
            match self.state {
                State::RecordStart => {
                    if matches!(input[at], b'\n' | b'\r') {
                        at += 1;
                    } else {
                        self.begin_record(output);
                        self.state = State::FieldStart;
                    }
                }
                State::FieldStart => {
                    self.begin_field(output);
                    if input[at] == b'"' {
                        at += 1;
                        self.state = State::Quoted;
                    } else {
                        self.state = State::Unquoted;
                    }
                }
                State::Unquoted | State::Quoted => {
                    let quoted = self.state == State::Quoted;
                    let delimiters = if quoted {
                        Delimiters::Quoted
                    } else {
                        Delimiters::Unquoted
                    };
                    let special = if self.writing() {
                        copy_plain(input, at, delimiters, output)
                    } else {
                        let special = next_special(input, at, delimiters);
                        if self.keys.is_none() {
                            self.name.extend_from_slice(&input[at..special]);
                        }
                        special
                    };
                    self.count(special - at)?;
                    at = special;
                    let Some(&byte) = input.get(at) else { break };
                    match byte {
                        b'"' if quoted => {
                            at += 1;
                            self.state = State::QuoteInQuoted;
                        }
                        b',' | b'\n' | b'\r' if !quoted => {
                            at = self.end_of_field(byte, at, output)?
                        }
                        0x80.. => match self.non_ascii(input, at, output)? {
                            Some(next) => at = next,
                            None => return Ok(()),
                        },
                        _ => {
                            self.escaped(output, byte);
                            at += 1;
                        }
                    }
                }
                State::QuoteInQuoted => match input[at] {
                    b'"' => {
                        self.escaped(output, b'"');
                        at += 1;
                        self.state = State::Quoted;
                    }
                    byte @ (b',' | b'\n' | b'\r') => at = self.end_of_field(byte, at, output)?,
                    // Text after a closing quote is kept, as `csv-core` keeps it.
                    _ => self.state = State::Unquoted,
                },
            }
        }
        Ok(())
    }

    /// The common case in one tight loop: whole fields of data records that lie entirely in
    /// `input`, from `at` (the start of a record or a field). It stops before the first field it
    /// cannot finish here — one that runs past the chunk, has invalid UTF-8 or text after its
    /// closing quote, lies past where its record could reach the size limit, ends its record
    /// with the wrong number of fields, or does not fit in the output's room — and returns
    /// where that field starts, leaving it to [`Self::feed`]'s state machine, which grows the
    /// output and reports any error. What it writes is exactly what the state machine writes
    /// (the differential tests run both).
    ///
    /// The loop's state lives in local variables (the input as a shrinking slice, the record
    /// and field state as the place in the code, not a variable) and the output in a [`Cursor`]
    /// (stored back once, at the end), and it is a function of its own: compiled to Wasm and
    /// then to machine code, as few values as possible compete for registers (docs/PLUGINS.md,
    /// "Making a plugin fast").
    #[inline(never)]
    fn whole_fields(&mut self, input: &[u8], at: usize, output: &mut Out) -> usize {
        let Some(keys) = self.keys.as_deref() else {
            return at;
        };
        output.reserve(FAST_PATH_ROOM);
        let mut out = output.cursor(self.window);
        let mut fields = self.fields;
        let mut record_bytes = self.record_bytes;
        // The input not yet converted, as a slice: its start moves instead of a position
        // beside it (one value less for the loop to keep in a register). It ends where the
        // record limit could be reached, so no field here can break it: the limit needs no test
        // per field (the state machine takes over at that point and counts exactly).
        let end = input
            .len()
            .min(at.saturating_add(MAX_RECORD_BYTES.saturating_sub(record_bytes)));
        let mut rest = &input[at..end];
        // Where the loop stops, the state it leaves: a record or field start. The loop itself
        // has no state variable: where it is in the code says it.
        let state = 'fast: {
            if self.state == State::RecordStart {
                if !begin_data_record(&mut rest, &mut out, &mut self.records) {
                    break 'fast State::RecordStart;
                }
                fields = 0;
                record_bytes = 0;
            }
            loop {
                // A field past the header's width is the state machine's to count and skip.
                let Some(key) = keys.get(fields) else {
                    break 'fast State::FieldStart;
                };
                let mark = out.len();
                key.write(&mut out);
                let Some((end, bytes, ends_record)) = whole_field(rest, &mut out) else {
                    out.truncate(mark);
                    break 'fast State::FieldStart;
                };
                out.push(b'"');
                if ends_record {
                    out.push(b'}');
                }
                if out.is_full() || (ends_record && fields + 1 != keys.len()) {
                    out.truncate(mark);
                    break 'fast State::FieldStart;
                }
                rest = &rest[end + 1..];
                if ends_record {
                    fields = 0;
                    record_bytes = 0;
                    if !begin_data_record(&mut rest, &mut out, &mut self.records) {
                        break 'fast State::RecordStart;
                    }
                } else {
                    record_bytes += bytes;
                    fields += 1;
                }
            }
        };
        let stop = end - rest.len();
        let written = out.len();
        output.advance(written);
        self.state = state;
        self.fields = fields;
        self.record_bytes = record_bytes;
        stop
    }

    /// Ends the field at a delimiter or line end at `input[at]`; returns where reading goes on.
    fn end_of_field(
        &mut self,
        byte: u8,
        at: usize,
        output: &mut Out,
    ) -> Result<usize, ConvertError> {
        self.end_field(output)?;
        if byte == b',' {
            self.state = State::FieldStart;
        } else {
            self.end_record(output)?;
            self.state = State::RecordStart;
            // Between records nothing is counted (see `whole_fields`, which relies on it).
            self.record_bytes = 0;
        }
        Ok(at + 1)
    }

    /// Room for the JSON of `input`, judged by the ratio of output to input so far.
    fn estimate(&self, input: usize) -> usize {
        let ratio = if self.read == 0 {
            2.0
        } else {
            self.written as f64 / self.read as f64
        };
        (input as f64 * ratio) as usize + 1024
    }

    /// Ends the document: closes the last record (a trailing delimiter leaves an empty last
    /// field) and the array.
    fn end(&mut self, output: &mut Out) -> Result<(), ConvertError> {
        if !self.carry.is_empty() {
            return Err(ConvertError::at(self.record_number(), "is not valid UTF-8"));
        }
        match self.state {
            State::RecordStart => {}
            State::Quoted => {
                return Err(ConvertError::at(
                    self.record_number(),
                    "ends inside a quoted field",
                ));
            }
            State::FieldStart => {
                self.begin_field(output);
                self.end_field(output)?;
                self.end_record(output)?;
            }
            State::Unquoted | State::QuoteInQuoted => {
                self.end_field(output)?;
                self.end_record(output)?;
            }
        }
        self.state = State::RecordStart;
        output.extend_from_slice(if self.records > 0 { b"]" } else { b"[]" });
        Ok(())
    }
}

impl CsvToJson {
    /// Runs `write` on the output buffer, emptied, and returns what it wrote. The buffer is
    /// taken out for the call (the reader's methods borrow `self` too) and put back, so its
    /// room — already written once — serves every chunk without zeroing it again.
    fn write_output(
        &mut self,
        write: impl FnOnce(&mut Self, &mut Out) -> Result<(), ConvertError>,
    ) -> Result<&[u8], ConvertError> {
        let mut output = std::mem::take(&mut self.output);
        output.clear();
        let written = write(self, &mut output);
        self.output = output;
        written?;
        Ok(self.output.as_slice())
    }
}

impl Converter for CsvToJson {
    fn push(&mut self, input: &[u8]) -> Result<&[u8], ConvertError> {
        self.write_output(|this, output| {
            output.reserve(this.estimate(input.len()));
            this.feed(input, output)?;
            this.read += input.len() as u64;
            this.written += output.len() as u64;
            Ok(())
        })
    }

    fn finish(&mut self) -> Result<&[u8], ConvertError> {
        self.write_output(Self::end)
    }

    fn records(&self) -> u64 {
        self.records
    }

    fn record_overhead(&self) -> Option<usize> {
        // Each record repeats every key, and adds its braces and a comma.
        let keys = self.keys.as_ref()?;
        Some(keys.iter().map(|key| key.len).sum::<usize>() + 3)
    }
}

/// Opens a data record's object: `[{` for the first record, `,{` after one.
#[inline(always)]
fn open_record<S: Sink>(output: &mut S, records_before: u64) {
    output.push(if records_before > 0 { b',' } else { b'[' });
    output.push(b'{');
}

/// Skips blank lines at the start of `rest` and opens a data record's object (`begin_record`
/// for one); `false`, with nothing written, when the input ends first or the object does not
/// fit.
#[inline(always)]
fn begin_data_record(rest: &mut &[u8], out: &mut Cursor, records: &mut u64) -> bool {
    while let Some((&byte, after)) = rest.split_first()
        && ends_line(byte)
    {
        *rest = after;
    }
    if rest.is_empty() {
        return false;
    }
    let mark = out.len();
    open_record(out, *records);
    if out.is_full() {
        out.truncate(mark);
        return false;
    }
    *records += 1;
    true
}

/// Writes the JSON string content of the field at the start of `input` and returns the
/// position of the delimiter or line end after it, the field's length as the record limit
/// counts it, and whether it ends the record (a line end, not a delimiter); `None` when the
/// field does not end cleanly within `input` (see [`CsvToJson::whole_fields`]).
#[inline(always)]
fn whole_field(input: &[u8], output: &mut Cursor) -> Option<(usize, usize, bool)> {
    let quoted = *input.first()? == b'"';
    let delimiters = if quoted {
        Delimiters::Quoted
    } else {
        Delimiters::Unquoted
    };
    let from = usize::from(quoted);
    let at = copy_plain(input, from, delimiters, output);
    // Most fields end at the first byte that needs attention: no loop for them (in a sandbox,
    // every loop entry and turn checks for interruption). That byte is at hand here, so whether
    // it ends the record is decided without reading it again.
    let byte = *input.get(at)?;
    if !quoted && ends_field(byte) {
        return Some((at, at - from, byte != b','));
    }
    if quoted && byte == b'"' {
        let next = *input.get(at + 1)?;
        if ends_field(next) {
            return Some((at + 1, at - from, next != b','));
        }
    }
    // The cursor goes to the rarer rest by value and comes back: passing its address instead
    // would keep it in memory (not registers) in the hot loop too.
    let (cursor, end) = field_rest(input, at, at - from, delimiters, std::mem::take(output));
    *output = cursor;
    end.map(|(end, bytes)| (end, bytes, input[end] != b','))
}

/// The rest of [`whole_field`] from `input[at]`, a byte that needs attention but does not end
/// the field: escapes, UTF-8 sequences and doubled quotes, then more plain runs. Out of line,
/// so the hot loop stays small (fewer values competing for registers).
#[inline(never)]
fn field_rest<'a>(
    input: &[u8],
    at: usize,
    bytes: usize,
    delimiters: Delimiters,
    mut output: Cursor<'a>,
) -> (Cursor<'a>, Option<(usize, usize)>) {
    let end = field_rest_in(input, at, bytes, delimiters, &mut output);
    (output, end)
}

/// [`field_rest`]'s loop.
#[inline(always)]
fn field_rest_in(
    input: &[u8],
    mut at: usize,
    mut bytes: usize,
    delimiters: Delimiters,
    output: &mut Cursor,
) -> Option<(usize, usize)> {
    let quoted = delimiters == Delimiters::Quoted;
    loop {
        let special = copy_plain(input, at, delimiters, output);
        bytes += special - at;
        at = special;
        let byte = *input.get(at)?;
        match byte {
            b'"' if quoted => match *input.get(at + 1)? {
                b'"' => {
                    push_escaped(output, b'"');
                    bytes += 1;
                    at += 2;
                }
                b',' | b'\n' | b'\r' => return Some((at + 1, bytes)),
                _ => return None,
            },
            b',' | b'\n' | b'\r' if !quoted => return Some((at, bytes)),
            0x80.. => {
                let end = at + utf8_width(byte);
                if end == at || end > input.len() || std::str::from_utf8(&input[at..end]).is_err() {
                    return None;
                }
                output.extend_from_slice(&input[at..end]);
                bytes += end - at;
                at = end;
            }
            _ => {
                push_escaped(output, byte);
                bytes += 1;
                at += 1;
            }
        }
    }
}

/// Whether `byte` ends an unquoted field (a delimiter or a line end).
#[inline(always)]
fn ends_field(byte: u8) -> bool {
    is_one_of(byte, 1 << b',' | 1 << b'\n' | 1 << b'\r')
}

/// Whether `byte` is a line end (blank lines between records are skipped).
#[inline(always)]
fn ends_line(byte: u8) -> bool {
    is_one_of(byte, 1 << b'\n' | 1 << b'\r')
}

/// Whether `byte` (below 64) is in `set`, one bit per byte value, as one bit test: a `match`
/// over several bytes becomes a jump table in Wasm, an indirect jump in the sandbox's hot loop.
#[inline(always)]
fn is_one_of(byte: u8, set: u64) -> bool {
    byte < 64 && (set >> byte) & 1 == 1
}

/// How long the UTF-8 sequence starting with `lead` is; 0 when `lead` cannot start one.
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// Appends `byte` (a quote, a backslash or a control character) as JSON escapes it: one word
/// write, its bytes made by [`escape`] (a separate function, so the sink's address never has to
/// leave the hot loop).
#[inline(always)]
fn push_escaped<S: Sink>(output: &mut S, byte: u8) {
    let (word, len) = escape(byte);
    output.word(word, len);
}

/// JSON's escape of `byte` (a quote, a backslash or a control character) as the little-endian
/// bytes of a word, and their number.
fn escape(byte: u8) -> (u64, usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0x08 => b'b',
        0x0c => b'f',
        _ => {
            let mut bytes = *b"\\u00\0\0\0\0";
            bytes[4] = HEX[usize::from(byte >> 4)];
            bytes[5] = HEX[usize::from(byte & 0xf)];
            return (u64::from_le_bytes(bytes), 6);
        }
    };
    (u64::from_le_bytes([b'\\', short, 0, 0, 0, 0, 0, 0]), 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `input` with `csv-core` (the reference): its records, or `None` for invalid UTF-8.
    fn reference_records(input: &[u8]) -> Option<Vec<Vec<String>>> {
        let mut reader = csv_core::Reader::new();
        let mut records = Vec::new();
        let mut fields = vec![0u8; 1 << 16];
        let mut ends = vec![0usize; 1024];
        let (mut written, mut ended) = (0, 0);
        let mut rest = input;
        loop {
            let (result, consumed, bytes, count) =
                reader.read_record(rest, &mut fields[written..], &mut ends[ended..]);
            rest = &rest[consumed..];
            written += bytes;
            ended += count;
            match result {
                csv_core::ReadRecordResult::Record => {
                    let mut start = 0;
                    let mut record = Vec::new();
                    for &end in &ends[..std::mem::take(&mut ended)] {
                        record.push(String::from_utf8(fields[start..end].to_vec()).ok()?);
                        start = end;
                    }
                    records.push(record);
                    written = 0;
                }
                csv_core::ReadRecordResult::End => return Some(records),
                csv_core::ReadRecordResult::InputEmpty => {}
                _ => panic!("reference buffers are large enough"),
            }
        }
    }

    /// The reference's records as our JSON, or `Err` where the records do not fit the header.
    fn reference(input: &[u8]) -> Result<String, ()> {
        let records = reference_records(input).ok_or(())?;
        let Some((header, rows)) = records.split_first() else {
            return Ok("[]".into());
        };
        let mut objects = Vec::new();
        for row in rows {
            if row.len() != header.len() {
                return Err(());
            }
            let object: serde_json::Map<String, serde_json::Value> = header
                .iter()
                .cloned()
                .zip(row.iter().map(|value| value.clone().into()))
                .collect();
            objects.push(serde_json::Value::Object(object));
        }
        Ok(serde_json::to_string(&objects).unwrap())
    }

    /// Checks that we read `input`, pushed in `sizes`, as the reference does, with the fast
    /// path's output room limited to `window` bytes.
    fn agrees(input: &str, sizes: &[usize], window: usize) {
        let expected = reference(input.as_bytes());
        let ours = chunked_in(input.as_bytes(), sizes, window);
        match (&expected, &ours) {
            // Byte for byte: the same records, and every escape spelt as serde_json spells it.
            (Ok(expected), Ok(ours)) => {
                assert_eq!(ours, expected, "{input:?} in {sizes:?}, window {window}");
            }
            (Err(()), Err(_)) => {}
            // csv-core reads an unterminated quoted field to the end; we refuse it. Closing the
            // quote must then make us agree again.
            (Ok(_), Err(error)) if error.message == "ends inside a quoted field" => {
                agrees(&format!("{input}\""), sizes, window);
            }
            // Duplicate header names are ours to refuse.
            (Ok(_), Err(error)) if error.message.contains("duplicate") => {
                let header = &reference_records(input.as_bytes()).unwrap()[0];
                let mut unique = header.clone();
                unique.sort();
                unique.dedup();
                assert_ne!(unique.len(), header.len(), "{input:?}: {error}");
            }
            _ => panic!("{input:?} in {sizes:?}, window {window}: {expected:?} vs {ours:?}"),
        }
    }

    /// Converts `input` pushed in the given chunk sizes (cycled).
    fn chunked(input: &[u8], sizes: &[usize]) -> Result<String, ConvertError> {
        chunked_in(input, sizes, usize::MAX)
    }

    /// [`chunked`] with the fast path's output room limited to `window` bytes.
    fn chunked_in(input: &[u8], sizes: &[usize], window: usize) -> Result<String, ConvertError> {
        let mut converter = CsvToJson::new();
        converter.window = window;
        let mut output = Vec::new();
        let mut rest = input;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            output.extend_from_slice(converter.push(chunk)?);
            rest = tail;
        }
        output.extend_from_slice(converter.finish()?);
        Ok(String::from_utf8(output).expect("the output is UTF-8"))
    }

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    const PIECES: &[&str] = &[
        "a",
        "bc",
        "12345678901",
        ",",
        "\"",
        "\"\"",
        "\n",
        "\r\n",
        "\r",
        "é",
        "🎉",
        "\\",
        "\t",
        "\u{1}",
        "\u{1b}",
        " ",
        "x\"y",
        "\n\n",
    ];

    #[test]
    fn reads_what_csv_core_reads_whatever_the_chunking() {
        let mut random = Random(0x5eed_1234_abcd_9876);
        for _ in 0..3000 {
            let mut input = String::new();
            for _ in 0..random.below(40) {
                input.push_str(PIECES[random.below(PIECES.len())]);
            }
            let odd = random.below(9) + 1;
            // A small window makes the fast path run out of room (at any byte of a field) and
            // hand over to the state machine.
            let window = random.below(48);
            for sizes in [&[usize::MAX][..], &[1], &[3, 1, 7], &[odd]] {
                agrees(&input, sizes, usize::MAX);
                agrees(&input, sizes, window);
            }
        }
    }

    #[test]
    fn output_is_the_same_as_serde_json_writes() {
        let input = "k,\"q\"\"uote\",back\\slash\n\t1,\"a\u{1}\u{8}\u{c}\u{1f}b\",\"é 🎉\r\n✓\"\n";
        let ours = chunked(input.as_bytes(), &[2]).unwrap();
        assert_eq!(ours, reference(input.as_bytes()).unwrap());
    }

    #[test]
    fn invalid_utf8_is_refused_with_its_record() {
        for (input, record) in [
            (&b"a\n\xff\n"[..], 1),
            (b"a\nok\n\xc3\n", 2),
            (b"\xe2\x82,b\n", 0),
            (b"a\n\xed\xa0\x80\n", 1),
            (b"a\nx\xc3", 1),
        ] {
            for sizes in [&[usize::MAX][..], &[1]] {
                let error = chunked(input, sizes).unwrap_err();
                assert_eq!(error.record, Some(record), "{input:?}");
                assert!(error.message.contains("UTF-8"), "{error}");
            }
        }
    }

    #[test]
    fn oversized_records_are_refused() {
        let mut input = b"a\n".to_vec();
        input.resize(MAX_RECORD_BYTES + 10, b'x');
        input.push(b'\n');
        // In pieces (the state machine counts) and whole (the fast path sees the whole record).
        for sizes in [&[1 << 20][..], &[usize::MAX]] {
            let error = chunked(&input, sizes).unwrap_err();
            assert_eq!(error.record, Some(1));
            assert!(error.message.contains("larger"), "{error}");
        }
    }

    #[test]
    fn the_record_limit_counts_the_same_whatever_the_chunking() {
        // One record of quoted fields, each counting 1024 bytes (its quotes are not counted, a
        // doubled quote counts once): exactly at the limit it converts, one byte more is
        // refused — whole, and in chunks that make the fast path hand its count to the state
        // machine in the middle of the record again and again.
        let fields = MAX_RECORD_BYTES / 1024;
        let header: Vec<String> = (0..fields).map(|field| format!("c{field}")).collect();
        let field = format!("\"{}\"\"{}\"", "x".repeat(500), "y".repeat(523));
        for extra in [0, 1] {
            let mut input = format!("{}\n", header.join(",")).into_bytes();
            for index in 0..fields {
                if index > 0 {
                    input.push(b',');
                }
                input.extend_from_slice(field.as_bytes());
            }
            input.truncate(input.len() - 1);
            input.extend(std::iter::repeat_n(b'z', extra));
            input.extend_from_slice(b"\"\n");
            for sizes in [&[usize::MAX][..], &[65_537], &[1 << 20, 3]] {
                let converted = chunked(&input, sizes);
                match extra {
                    0 => assert!(converted.is_ok(), "{sizes:?}: {converted:?}"),
                    _ => {
                        let error = converted.unwrap_err();
                        assert_eq!(error.record, Some(1), "{sizes:?}");
                        assert!(error.message.contains("larger"), "{sizes:?}: {error}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_chunk_longer_than_the_record_limit_converts_whole() {
        // The fast path stops where a record could reach the limit (here inside a chunk of
        // small records) and the state machine goes on from there.
        let mut input = b"id,name\n".to_vec();
        let mut row = 0;
        while input.len() <= MAX_RECORD_BYTES + 100 {
            input.extend_from_slice(format!("{row},\"n{row}\"\n").as_bytes());
            row += 1;
        }
        let whole = chunked(&input, &[usize::MAX]).unwrap();
        assert_eq!(whole, chunked(&input, &[1 << 20]).unwrap());
        assert!(whole.ends_with(&format!(r#"{{"id":"{}","name":"n{}"}}]"#, row - 1, row - 1)));
    }

    #[test]
    fn wide_records_count_every_field() {
        let error = chunked(b"a,b\n1,2,3,4\n", &[usize::MAX]).unwrap_err();
        assert_eq!(error.message, "has 4 fields, the header has 2");
    }
}
