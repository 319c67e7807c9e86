//! Record mode (contract 1.2.0): the host splits an upload into records with the service's own
//! converter and hands a record-mode plugin batches of them, each record one JSON object as
//! text, so a plugin in any language checks records with its own JSON library and writes no
//! splitter. The plugin reports problems by position in the batch; the host keeps the row
//! numbers.

use export_convert::{ConvertError, Converter, CsvToJson, JsonRecords};

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
