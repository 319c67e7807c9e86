//! Record mode (contract 1.2.0): the host splits an upload into records with the service's own
//! converter and hands a record-mode plugin batches of them, each record one JSON object as
//! text, so a plugin in any language checks records with its own JSON library and writes no
//! splitter. The plugin reports problems by position in the batch; the host keeps the row
//! numbers. A transforming plugin (contract 1.3.0) also returns the records to store, which the
//! host writes in the output format.

use export_convert::{ConvertError, Converter, CsvToJson, JsonRecords, JsonToCsv};
use serde::de::IgnoredAny;

use crate::{DataFormat, RecordViolation, Violation};

/// The most record text one `check` call is given (a single larger record goes alone).
pub const BATCH_BYTES: usize = 1024 * 1024;

/// Splits an upload, chunk by chunk, into batches of records.
pub(crate) struct RecordSplitter {
    /// CSV is converted to a JSON array first (every value a string, keys in header order).
    csv: Option<CsvToJson>,
    records: JsonRecords,
    /// Records split but not handed over yet, in order.
    pending: Vec<String>,
    /// The row of `pending[0]` (data records count from 1).
    next_row: u64,
}

impl RecordSplitter {
    /// A splitter of an upload in `format`.
    pub(crate) fn new(format: DataFormat) -> Self {
        Self {
            csv: matches!(format, DataFormat::Csv).then(CsvToJson::new),
            records: JsonRecords::new(),
            pending: Vec::new(),
            next_row: 1,
        }
    }

    /// Splits the next chunk; its complete records wait for [`next_batch`](Self::next_batch).
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), ConvertError> {
        let Self {
            csv,
            records,
            pending,
            next_row,
        } = self;
        let json = match csv {
            Some(converter) => converter.push(chunk)?,
            None => chunk,
        };
        split(records, pending, *next_row, json)
    }

    /// Ends the upload: the last records wait for [`next_batch`](Self::next_batch).
    pub(crate) fn finish(&mut self) -> Result<(), ConvertError> {
        let Self {
            csv,
            records,
            pending,
            next_row,
        } = self;
        if let Some(converter) = csv {
            let rest = converter.finish()?;
            split(records, pending, *next_row, rest)?;
        }
        records.finish()
    }

    /// The next batch of records (at most [`BATCH_BYTES`] of them, or one larger record) and
    /// the row of its first; `None` when none waits.
    pub(crate) fn next_batch(&mut self) -> Option<(u64, Vec<String>)> {
        if self.pending.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let count = self
            .pending
            .iter()
            .take_while(|record| {
                bytes += record.len();
                bytes <= BATCH_BYTES
            })
            .count()
            .max(1);
        let first = self.next_row;
        self.next_row += count as u64;
        Some((first, self.pending.drain(..count).collect()))
    }
}

/// Writes the records a transforming plugin returns in the session's output format: a JSON
/// array, or CSV through the service's own converter (the first record's keys are the header,
/// as for any JSON converted to CSV).
pub(crate) struct RecordWriter {
    /// CSV is written by converting the JSON array as it grows.
    csv: Option<JsonToCsv>,
    /// Whether the array has been opened.
    opened: bool,
    /// Whether a record has been written (the next one needs a comma).
    any: bool,
    /// Records written so far, to name the one at fault.
    written: u64,
    /// The JSON text of the call in progress (the CSV converter's input).
    json: Vec<u8>,
}

impl RecordWriter {
    /// A writer of records in `format`.
    pub(crate) fn new(format: DataFormat) -> Self {
        Self {
            csv: matches!(format, DataFormat::Csv).then(JsonToCsv::new),
            opened: false,
            any: false,
            written: 0,
            json: Vec::new(),
        }
    }

    /// Appends `records`, each checked to be one JSON object, to `output`. The error, the
    /// plugin's fault rather than the data's, names the first record that is not an object.
    pub(crate) fn write(&mut self, records: &[String], output: &mut Vec<u8>) -> Result<(), String> {
        self.json.clear();
        if !self.opened {
            self.json.push(b'[');
            self.opened = true;
        }
        for record in records {
            self.written += 1;
            if !is_json_object(record) {
                return Err(format!(
                    "record {} it returned is not one JSON object: {}",
                    self.written,
                    excerpt(record)
                ));
            }
            if self.any {
                self.json.push(b',');
            }
            self.any = true;
            self.json.extend_from_slice(record.as_bytes());
        }
        self.hand_on(output, false)
    }

    /// Closes the output (a JSON array's bracket, the CSV converter's rest).
    pub(crate) fn finish(&mut self, output: &mut Vec<u8>) -> Result<(), String> {
        self.json.clear();
        if !self.opened {
            self.json.push(b'[');
            self.opened = true;
        }
        self.json.push(b']');
        self.hand_on(output, true)
    }

    fn hand_on(&mut self, output: &mut Vec<u8>, last: bool) -> Result<(), String> {
        let Some(converter) = &mut self.csv else {
            output.extend_from_slice(&self.json);
            return Ok(());
        };
        let describe = |error: ConvertError| format!("the records it returned {error}");
        output.extend_from_slice(converter.push(&self.json).map_err(describe)?);
        if last {
            output.extend_from_slice(converter.finish().map_err(describe)?);
        }
        Ok(())
    }
}

/// Whether `text` is exactly one JSON object (a valid JSON value that opens with a brace is
/// one), checked without building it.
fn is_json_object(text: &str) -> bool {
    text.trim_start().starts_with('{') && serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// The start of a record, for a message.
fn excerpt(text: &str) -> String {
    let mut end = text.len().min(80);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", &text[..end])
}

fn split(
    records: &mut JsonRecords,
    pending: &mut Vec<String>,
    next_row: u64,
    json: &[u8],
) -> Result<(), ConvertError> {
    records.push(json, &mut |record| {
        let row = next_row + pending.len() as u64;
        let text = String::from_utf8(record.to_vec()).map_err(|_| ConvertError {
            record: Some(row),
            message: "is not valid UTF-8".into(),
        })?;
        pending.push(text);
        Ok(())
    })
}

/// A plugin's violations in a batch whose first record is row `first`, as rows; an index past
/// the batch names no row.
pub(crate) fn with_rows(
    first: u64,
    batch_len: usize,
    found: Vec<RecordViolation>,
) -> impl Iterator<Item = Violation> {
    found.into_iter().map(move |violation| Violation {
        row: ((violation.index as usize) < batch_len).then(|| first + u64::from(violation.index)),
        field: violation.field,
        message: violation.message,
    })
}

/// Why the upload cannot be split, as the violation a tenant sees.
pub(crate) fn unsplittable(error: ConvertError) -> Violation {
    Violation {
        row: error.record,
        field: None,
        message: error.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(splitter: &mut RecordSplitter) -> Vec<(u64, Vec<String>)> {
        std::iter::from_fn(|| splitter.next_batch()).collect()
    }

    #[test]
    fn csv_is_split_into_json_records_across_chunk_boundaries_with_their_rows() {
        let mut splitter = RecordSplitter::new(DataFormat::Csv);
        splitter.push(b"id,name\n1,a").unwrap();
        splitter.push(b"da\n2,\"b,").unwrap();
        assert_eq!(
            batches(&mut splitter),
            vec![(1, vec![r#"{"id":"1","name":"ada"}"#.to_owned()])]
        );
        splitter.push(b"c\"\n3,d\n").unwrap();
        splitter.finish().unwrap();
        assert_eq!(
            batches(&mut splitter),
            vec![(
                2,
                vec![
                    r#"{"id":"2","name":"b,c"}"#.to_owned(),
                    r#"{"id":"3","name":"d"}"#.to_owned()
                ]
            )]
        );
    }

    #[test]
    fn json_records_are_handed_over_as_they_were_and_batches_stay_under_the_bound() {
        let mut splitter = RecordSplitter::new(DataFormat::Json);
        let big = "x".repeat(BATCH_BYTES / 2);
        let input = format!(r#"{{"data": [{{"a": 1}}, {{"b": "{big}"}}, {{"c": "{big}"}}]}}"#);
        splitter.push(input.as_bytes()).unwrap();
        splitter.finish().unwrap();
        let found = batches(&mut splitter);
        assert_eq!(
            found.len(),
            2,
            "two halves and a small record need two batches"
        );
        assert_eq!(found[0].0, 1);
        assert_eq!(found[0].1[0], r#"{"a": 1}"#);
        assert_eq!(found[1].0, 3);
    }

    fn written(format: DataFormat, batches: &[&[&str]]) -> Result<String, String> {
        let mut writer = RecordWriter::new(format);
        let mut output = Vec::new();
        for batch in batches {
            let records: Vec<String> = batch.iter().map(|record| record.to_string()).collect();
            writer.write(&records, &mut output)?;
        }
        writer.finish(&mut output)?;
        Ok(String::from_utf8(output).unwrap())
    }

    #[test]
    fn returned_records_are_written_as_a_json_array_or_as_csv() {
        let batches: &[&[&str]] = &[
            &[r#"{"id":"1","name":"a"}"#],
            &[],
            &[r#" {"id":"2","name":"b,c"}"#],
        ];
        let json = written(DataFormat::Json, batches).unwrap();
        assert_eq!(json, r#"[{"id":"1","name":"a"}, {"id":"2","name":"b,c"}]"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed[1]["name"], "b,c");
        assert_eq!(
            written(DataFormat::Csv, batches).unwrap(),
            "id,name\n1,a\n2,\"b,c\"\n"
        );
        assert_eq!(written(DataFormat::Json, &[]).unwrap(), "[]");
        assert_eq!(written(DataFormat::Csv, &[&[]]).unwrap(), "");
    }

    #[test]
    fn a_returned_record_that_is_not_one_json_object_is_refused_by_position() {
        for bad in [
            r#"[1, 2]"#,
            r#"{"a": 1} {"b": 2}"#,
            r#"{"a": "#,
            "7",
            r#"{"a":1}]"#,
        ] {
            let error = written(DataFormat::Json, &[&[r#"{"a": 0}"#, bad]]).unwrap_err();
            assert!(
                error.starts_with("record 2 it returned is not one JSON object"),
                "{bad}: {error}"
            );
        }
        let error = written(DataFormat::Csv, &[&[r#"{"a": "1"}"#, r#"{"b": "2"}"#]]).unwrap_err();
        assert!(
            error.contains("record 2") && error.contains("'b'"),
            "{error}"
        );
    }

    #[test]
    fn broken_input_is_reported_with_its_record() {
        let mut splitter = RecordSplitter::new(DataFormat::Csv);
        let error = splitter
            .push(b"id,name\n1,a\n2,b,extra\n")
            .expect_err("a record with too many fields");
        assert_eq!(error.record, Some(2));
        let violation = unsplittable(error);
        assert_eq!(violation.row, Some(2));
    }

    #[test]
    fn violations_get_the_row_of_their_record_and_none_past_the_batch() {
        let found = vec![
            RecordViolation {
                index: 0,
                field: Some("id".into()),
                message: "is required".into(),
            },
            RecordViolation {
                index: 9,
                field: None,
                message: "out of range".into(),
            },
        ];
        let rows: Vec<Option<u64>> = with_rows(41, 2, found).map(|v| v.row).collect();
        assert_eq!(rows, vec![Some(41), None]);
    }
}
