//! Streaming conversion of export records between CSV and JSON, with bounded memory: bytes are
//! pushed in chunks of any size and converted bytes come out as they are ready.
//!
//! The shapes (documented for tenants and plugin authors in `docs/PLUGINS.md`):
//!
//! - **CSV**: RFC 4180. The first record is the header; its names must be unique. Every record
//!   has as many fields as the header. `\n` or `\r\n` line ends; quoted fields may hold commas,
//!   quotes (doubled) and line breaks.
//! - **JSON**: an array of objects (`[{…}, {…}]`), or an object whose only property is such an
//!   array (`{"data": [{…}]}`, the upstream's example). Each object is one record.
//! - **CSV → JSON**: an array of objects, keys in header order, every value a string (CSV has no
//!   types, so nothing is guessed: `007` stays `"007"`, an empty field is `""`).
//! - **JSON → CSV**: the header is the first record's keys in their order. A later record may
//!   omit keys (empty cells) but not add new ones. Strings are written as they are; numbers and
//!   booleans as their JSON text; `null` as an empty field; nested arrays and objects as compact
//!   JSON text in the cell.
//!
//! - **Bounds**: a record is at most [`MAX_RECORD_BYTES`]. The service refuses uploaded JSON that
//!   nests deeper than [`MAX_JSON_DEPTH`] levels, checked by [`JsonDepth`] as the bytes stream
//!   in, before anything parses them.
//!
//! So CSV → JSON → CSV gives back the same records exactly, and JSON → CSV → JSON gives back the
//! same records with every value as a string.

use std::borrow::Cow;

mod csv_to_json;
mod depth;
mod json_records;
mod json_to_csv;
mod out;
mod scan;

pub use csv_to_json::CsvToJson;
pub use depth::{JsonDepth, MAX_JSON_DEPTH};
pub use json_records::JsonRecords;
pub use json_to_csv::JsonToCsv;

/// The largest single record (a JSON object or a CSV row) accepted, so memory stays bounded
/// whatever the input.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Why data could not be converted. `record` counts data records from 1 (the CSV header is 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    /// The record at fault, if the problem is in one.
    pub record: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl ConvertError {
    fn at(record: u64, message: impl Into<String>) -> Self {
        Self {
            record: Some(record),
            message: message.into(),
        }
    }

    fn whole(message: impl Into<String>) -> Self {
        Self {
            record: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.record {
            Some(record) => write!(formatter, "record {record}: {}", self.message),
            None => formatter.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConvertError {}

/// A streaming converter. Its output lives in a buffer the converter keeps and reuses, so a
/// stream of chunks costs no allocation (nor zeroing) per chunk: what a call returns is valid
/// until the next call, and a caller that keeps it copies it.
pub trait Converter {
    /// Converts the next chunk; returns the output ready so far.
    fn push(&mut self, input: &[u8]) -> Result<&[u8], ConvertError>;
    /// Ends the input; returns the rest of the output.
    fn finish(&mut self) -> Result<&[u8], ConvertError>;
    /// Converts a chunk, and ends the input too when it is the `last`: the converter's own
    /// buffer for a chunk, the outputs of both calls in one new buffer for the last.
    fn convert_chunk(&mut self, input: &[u8], last: bool) -> Result<Cow<'_, [u8]>, ConvertError> {
        if !last {
            return self.push(input).map(Cow::Borrowed);
        }
        let mut output = self.push(input)?.to_vec();
        output.extend_from_slice(self.finish()?);
        Ok(Cow::Owned(output))
    }
    /// Data records converted so far.
    fn records(&self) -> u64;
    /// The most output one record may add beyond six bytes per input byte (the keys a CSV
    /// record repeats in JSON, the empty cells a JSON record leaves in CSV), once it is known
    /// (after the header, or the first record); `None` before. A caller that must bound its
    /// memory feeds few records per call when this is large.
    fn record_overhead(&self) -> Option<usize>;
}

/// The most output an input byte gives besides its record's overhead (a control character in a
/// CSV field becomes `\u00XX` in JSON).
pub const MAX_BYTE_EXPANSION: usize = 6;

/// Converts a whole input at once (tests and small payloads).
pub fn convert_all(converter: &mut dyn Converter, input: &[u8]) -> Result<Vec<u8>, ConvertError> {
    converter.convert_chunk(input, true).map(Cow::into_owned)
}

#[cfg(test)]
mod round_trip_tests {
    use super::*;

    fn csv_to_json(input: &str) -> Result<String, ConvertError> {
        convert_all(&mut CsvToJson::new(), input.as_bytes())
            .map(|bytes| String::from_utf8(bytes).unwrap())
    }

    fn json_to_csv(input: &str) -> Result<String, ConvertError> {
        convert_all(&mut JsonToCsv::new(), input.as_bytes())
            .map(|bytes| String::from_utf8(bytes).unwrap())
    }

    /// Pushes one byte at a time: chunk boundaries must not matter.
    fn bytewise(converter: &mut dyn Converter, input: &str) -> String {
        let mut output = Vec::new();
        for byte in input.as_bytes() {
            output.extend_from_slice(converter.push(std::slice::from_ref(byte)).unwrap());
        }
        output.extend_from_slice(converter.finish().unwrap());
        String::from_utf8(output).unwrap()
    }

    const TRICKY_CSV: &str = "id,name,note,empty\r\n1,\"Smith, Jane\",\"said \"\"hi\"\"\",\n2,Zoë 🎉,\"two\nlines\",\n007,,plain,x\n";

    #[test]
    fn csv_json_csv_is_exact() {
        let json = csv_to_json(TRICKY_CSV).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value[0]["name"], "Smith, Jane");
        assert_eq!(value[0]["note"], "said \"hi\"");
        assert_eq!(value[1]["name"], "Zoë 🎉");
        assert_eq!(value[1]["note"], "two\nlines");
        assert_eq!(value[2]["id"], "007", "no type guessing");
        assert_eq!(value[2]["name"], "");
        let back = json_to_csv(&json).unwrap();
        assert_eq!(back, TRICKY_CSV.replace("\r\n", "\n"));
        assert_eq!(bytewise(&mut CsvToJson::new(), TRICKY_CSV), json);
    }

    #[test]
    fn json_csv_json_keeps_records_as_strings() {
        let json = r#"{"data": [{"id": 1, "ok": true, "tags": ["a", "b"], "none": null, "text": "x,y"}, {"id": 2.5, "text": "line\nbreak"}]}"#;
        let csv = json_to_csv(json).unwrap();
        assert_eq!(
            csv,
            "id,ok,tags,none,text\n1,true,\"[\"\"a\"\",\"\"b\"\"]\",,\"x,y\"\n2.5,,,,\"line\nbreak\"\n"
        );
        assert_eq!(bytewise(&mut JsonToCsv::new(), json), csv);
        let again: serde_json::Value = serde_json::from_str(&csv_to_json(&csv).unwrap()).unwrap();
        assert_eq!(again[0]["tags"], r#"["a","b"]"#);
        assert_eq!(again[1]["id"], "2.5");
        assert_eq!(again[1]["ok"], "");
    }

    #[test]
    fn bad_shapes_are_refused_with_the_record() {
        assert_eq!(json_to_csv(r#"{"a": 1}"#).unwrap_err().record, None);
        assert!(
            json_to_csv("[1, 2]")
                .unwrap_err()
                .message
                .contains("not an object")
        );
        assert_eq!(
            json_to_csv(r#"[{"a": 1}, {"a": 2, "b": 3}]"#)
                .unwrap_err()
                .record,
            Some(2)
        );
        assert!(json_to_csv(r#"{"data": [], "more": []}"#).is_err());
        assert!(json_to_csv(r#"[{"a": 1}"#).is_err(), "truncated");
        assert!(json_to_csv(r#"[{"a": 1}] [2]"#).is_err(), "trailing data");
        assert_eq!(csv_to_json("a,b\n1\n").unwrap_err().record, Some(1));
        assert!(
            csv_to_json("a,a\n1,2\n")
                .unwrap_err()
                .message
                .contains("duplicate")
        );
        assert!(csv_to_json("a\n\"open\n").is_err(), "unterminated quote");
    }

    /// The header and key checks are linear: 50 000 columns (or keys) take one pass, not
    /// 50 000 × 50 000 comparisons, and still find what is wrong.
    #[test]
    fn fifty_thousand_columns_convert_and_duplicates_are_still_found() {
        let columns = 50_000;
        let names: Vec<String> = (0..columns).map(|index| format!("c{index}")).collect();
        let csv = format!("{}\n{}\n", names.join(","), vec!["1"; columns].join(","));
        let json = csv_to_json(&csv).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value[0].as_object().unwrap().len(), columns);
        assert_eq!(json_to_csv(&json).unwrap(), csv);
        // Many records over the wide header: the per-record key check is linear too.
        let records = format!(
            "[{}]",
            vec![json[1..json.len() - 1].to_owned(); 20].join(",")
        );
        assert_eq!(json_to_csv(&records).unwrap().lines().count(), 21);

        let mut duplicated = names.clone();
        duplicated[columns - 1] = "c7".into();
        let error = csv_to_json(&format!("{}\n", duplicated.join(","))).unwrap_err();
        assert_eq!(error.record, Some(0));
        assert_eq!(error.message, "the header has a duplicate column 'c7'");
        // The first duplicate in header order is the one named.
        let error = csv_to_json("a,b,c,b,a\n").unwrap_err();
        assert_eq!(error.message, "the header has a duplicate column 'b'");

        let extra = format!(
            "[{{{}}}, {{\"c49999\": 1, \"new\": 2}}]",
            names
                .iter()
                .map(|name| format!("\"{name}\": 0"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let error = json_to_csv(&extra).unwrap_err();
        assert_eq!(error.record, Some(2));
        assert!(error.message.contains("has the key 'new'"), "{error}");
    }

    #[test]
    fn record_overhead_is_known_once_the_header_is() {
        let mut csv = CsvToJson::new();
        assert_eq!(csv.record_overhead(), None);
        csv.push(b"id,na").unwrap();
        assert_eq!(csv.record_overhead(), None);
        csv.push(b"me\n").unwrap();
        // `"id":"` and `,"name":"`, then `{`, `}` and `,`.
        assert_eq!(csv.record_overhead(), Some(6 + 9 + 3));
        let mut json = JsonToCsv::new();
        assert_eq!(json.record_overhead(), None);
        json.push(br#"[{"a": 1, "b": 2, "c": 3}"#).unwrap();
        assert_eq!(json.record_overhead(), Some(4));
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(json_to_csv("[]").unwrap(), "");
        assert_eq!(csv_to_json("a,b\n").unwrap(), "[]");
        assert_eq!(csv_to_json("").unwrap(), "[]");
    }
}
