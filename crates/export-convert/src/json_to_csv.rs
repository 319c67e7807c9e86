//! JSON records → CSV.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::{ConvertError, Converter, JsonRecords};

/// Converts JSON records to CSV (see the crate documentation for the rules).
#[derive(Debug, Default)]
pub struct JsonToCsv {
    splitter: JsonRecords,
    /// The columns in order, and as a set (the key check stays linear in the record's keys).
    header: Option<(Vec<String>, HashSet<String>)>,
    /// The output of the last call, in a buffer every call reuses.
    output: Vec<u8>,
}

impl JsonToCsv {
    /// A converter at the start of a document.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Converter for JsonToCsv {
    fn push(&mut self, input: &[u8]) -> Result<&[u8], ConvertError> {
        let output = &mut self.output;
        output.clear();
        output.reserve(input.len() + 64);
        let header = &mut self.header;
        let mut record_number = self.splitter.records();
        self.splitter.push(input, &mut |bytes| {
            record_number += 1;
            let record: Map<String, Value> = serde_json::from_slice(bytes).map_err(|error| {
                ConvertError::at(
                    record_number,
                    format!("is not a valid JSON object: {error}"),
                )
            })?;
            let (columns, known) = header.get_or_insert_with(|| {
                let columns: Vec<String> = record.keys().cloned().collect();
                write_row(output, columns.iter().map(String::as_str));
                let known = columns.iter().cloned().collect();
                (columns, known)
            });
            if let Some(extra) = record.keys().find(|key| !known.contains(*key)) {
                return Err(ConvertError::at(
                    record_number,
                    format!("has the key '{extra}', which the first record (the CSV header) lacks"),
                ));
            }
            let cells: Vec<String> = columns
                .iter()
                .map(|column| cell(record.get(column)))
                .collect();
            write_row(output, cells.iter().map(String::as_str));
            Ok(())
        })?;
        Ok(&self.output)
    }

    fn finish(&mut self) -> Result<&[u8], ConvertError> {
        self.splitter.finish()?;
        self.output.clear();
        Ok(&self.output)
    }

    fn records(&self) -> u64 {
        self.splitter.records()
    }

    fn record_overhead(&self) -> Option<usize> {
        // A record may leave every column empty: a comma per column and the line end.
        self.header.as_ref().map(|(columns, _)| columns.len() + 1)
    }
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// Writes one CSV row, quoting fields that hold a comma, a quote or a line break.
pub(crate) fn write_row<'a>(output: &mut Vec<u8>, fields: impl Iterator<Item = &'a str>) {
    for (index, field) in fields.enumerate() {
        if index > 0 {
            output.push(b',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            output.push(b'"');
            output.extend_from_slice(field.replace('"', "\"\"").as_bytes());
            output.push(b'"');
        } else {
            output.extend_from_slice(field.as_bytes());
        }
    }
    output.push(b'\n');
}
