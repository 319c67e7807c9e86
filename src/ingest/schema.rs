//! JSON-Schema validation of the records being stored, in the host (native `jsonschema`, the
//! schema compiled once per binding): every record of the stored output, in the export's format
//! (CSV records are checked as objects of strings), against the binding's schema. Violations
//! (record, field, message) reject the upload when it ends.

use export_convert::{ConvertError, Converter, CsvToJson, JsonRecords};

use super::convert::piece_end;
use crate::domain::Format;
use export_plugin_host::Violation;

/// The most violations kept.
pub const MAX_VIOLATIONS: usize = 100;

/// Checks records as their bytes stream past.
pub struct SchemaCheck {
    /// CSV is read as JSON records (objects of strings).
    csv: Option<CsvToJson>,
    /// JSON made from the CSV so far, and the most there may be (the work of the check grows
    /// with it, not with the stored CSV: a long header is repeated in every record).
    json_bytes: u64,
    max_json_bytes: u64,
    records: RecordCheck,
}

/// The checking of JSON records, and what it found.
struct RecordCheck {
    validator: std::sync::Arc<jsonschema::Validator>,
    records: JsonRecords,
    violations: Vec<Violation>,
    failure: Option<String>,
    /// Whether reading stopped at the violation limit (the rest was not read).
    stopped: bool,
}

impl SchemaCheck {
    /// A check of data in `format` against `validator`.
    pub fn new(validator: std::sync::Arc<jsonschema::Validator>, format: Format) -> Self {
        Self {
            csv: (format == Format::Csv).then(CsvToJson::new),
            json_bytes: 0,
            max_json_bytes: u64::MAX,
            records: RecordCheck {
                validator,
                records: JsonRecords::new(),
                violations: Vec::new(),
                failure: None,
                stopped: false,
            },
        }
    }

    /// Bounds the JSON the check makes of CSV records (the records are refused beyond).
    pub fn limit_json(mut self, max_bytes: u64) -> Self {
        self.max_json_bytes = max_bytes;
        self
    }

    /// Feeds stored bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.records.failure.is_some() {
            return;
        }
        if self.records.violations.len() >= MAX_VIOLATIONS {
            self.records.stopped = true;
            return;
        }
        let Some(converter) = &mut self.csv else {
            self.records.check(Ok(bytes));
            return;
        };
        // In steps, as the upload's own conversion: a long header repeated in every record
        // must not make one chunk's JSON huge.
        let mut rest = bytes;
        while !rest.is_empty() && self.records.failure.is_none() {
            let end = piece_end(rest, converter.record_overhead(), [b'\n', b'\r']);
            let json = converter.push(&rest[..end]);
            if let Ok(json) = json {
                self.json_bytes += json.len() as u64;
                if self.json_bytes > self.max_json_bytes {
                    self.records.failure = Some(format!(
                        "as JSON they would exceed {} bytes (MAX_PAYLOAD_SIZE × \
                         MAX_STORED_EXPANSION)",
                        self.max_json_bytes
                    ));
                    return;
                }
            }
            self.records.check(json);
            rest = &rest[end..];
        }
    }

    /// Ends the data; returns the violations found (empty = valid).
    pub fn finish(&mut self) -> Vec<Violation> {
        let records = &mut self.records;
        if let Some(converter) = &mut self.csv
            && records.failure.is_none()
        {
            records.check(converter.finish());
        }
        // A document that ends early (or is not one) fails the check, unless reading stopped
        // at the violation limit, before its end.
        if records.failure.is_none()
            && !records.stopped
            && let Err(error) = records.records.finish()
        {
            records.failure = Some(error.to_string());
        }
        if let Some(failure) = records.failure.take() {
            records.violations.push(Violation {
                row: None,
                field: None,
                message: format!("the records could not be read for validation: {failure}"),
            });
        }
        std::mem::take(&mut records.violations)
    }
}

impl RecordCheck {
    /// Checks the records `json` completes, adding what is wrong (at most [`MAX_VIOLATIONS`]);
    /// the failure when the bytes cannot be read as records.
    fn check(&mut self, json: Result<&[u8], ConvertError>) {
        let json = match json {
            Ok(json) => json,
            Err(error) => {
                self.failure = Some(error.to_string());
                return;
            }
        };
        let validator = &self.validator;
        let violations = &mut self.violations;
        let mut row = self.records.records();
        let result = self.records.push(json, &mut |record| {
            row += 1;
            let value: serde_json::Value = match serde_json::from_slice(record) {
                Ok(value) => value,
                Err(error) => {
                    if violations.len() < MAX_VIOLATIONS {
                        violations.push(Violation {
                            row: Some(row),
                            field: None,
                            message: format!("not valid JSON: {error}"),
                        });
                    }
                    return Ok(());
                }
            };
            for error in validator.iter_errors(&value) {
                if violations.len() >= MAX_VIOLATIONS {
                    break;
                }
                let path = error.instance_path().to_string();
                violations.push(Violation {
                    row: Some(row),
                    field: (!path.is_empty()).then(|| path.trim_start_matches('/').to_owned()),
                    message: error.to_string(),
                });
            }
            Ok(())
        });
        if let Err(error) = result {
            self.failure = Some(error.to_string());
        }
    }
}

/// Why a document is not a usable JSON Schema.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(#[from] Box<jsonschema::ValidationError<'static>>);

/// Compiles a JSON Schema, with the reason when it is not one.
pub fn compile(schema: &serde_json::Value) -> Result<jsonschema::Validator, SchemaError> {
    jsonschema::validator_for(schema).map_err(|error| SchemaError(Box::new(error)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(format: Format, data: &str) -> Vec<Violation> {
        let schema = json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}}});
        let mut check = SchemaCheck::new(std::sync::Arc::new(compile(&schema).unwrap()), format);
        for byte in data.as_bytes().chunks(3) {
            check.feed(byte);
        }
        check.finish()
    }

    #[test]
    fn json_and_csv_records_are_checked() {
        assert!(check(Format::Json, r#"[{"id": "1"}, {"id": "22"}]"#).is_empty());
        let violations = check(
            Format::Json,
            r#"[{"id": "1"}, {"name": "x"}, {"id": "x7"}]"#,
        );
        assert_eq!(violations.len(), 2);
        assert_eq!(violations[0].row, Some(2));
        assert_eq!(violations[1].row, Some(3));
        assert_eq!(violations[1].field.as_deref(), Some("id"));
        assert!(check(Format::Csv, "id,name\n1,a\n2,b\n").is_empty());
        let csv = check(Format::Csv, "id,name\n1,a\nx,b\n");
        assert_eq!((csv.len(), csv[0].row), (1, Some(2)));
    }

    #[test]
    fn csv_records_are_checked_as_json_within_a_bound() {
        // A long name over short rows: the JSON the check would parse grows with the name
        // times the rows, so it stops at its limit instead of parsing it all.
        let name = "n".repeat(100_000);
        let mut csv = format!("{name}\n").into_bytes();
        csv.extend(std::iter::repeat_n(*b"1\n", 50_000).flatten());
        let schema = json!({"type": "object"});
        let validator = std::sync::Arc::new(compile(&schema).unwrap());
        let mut check = SchemaCheck::new(validator.clone(), Format::Csv).limit_json(1_000_000);
        check.feed(&csv);
        let violations = check.finish();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].message.contains("would exceed 1000000 bytes"),
            "{violations:?}"
        );
        let mut within = SchemaCheck::new(validator, Format::Csv).limit_json(1_000_000);
        within.feed(&csv[..name.len() + 1 + 2 * 8]);
        assert!(within.finish().is_empty());
    }

    #[test]
    fn a_json_document_that_ends_early_fails_the_check() {
        let violations = check(Format::Json, r#"[{"id": "1"}, {"id": "2"}"#);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].row, None);
        assert!(
            violations[0].message.contains("ends too early"),
            "{violations:?}"
        );
    }

    #[test]
    fn violations_stop_at_the_limit_whatever_their_kind() {
        // Each record is an invalid one for serde_json (a lone surrogate escape) or fails the
        // schema: more than the limit of both, in one chunk and in many.
        let records: Vec<String> = (0..150)
            .map(|row| {
                if row % 2 == 0 {
                    r#"{"id": "\ud800"}"#.to_owned()
                } else {
                    r#"{"name": "no id"}"#.to_owned()
                }
            })
            .collect();
        let document = format!("[{}]", records.join(","));
        let schema = json!({"type": "object", "required": ["id"]});
        let validator = std::sync::Arc::new(compile(&schema).unwrap());
        let mut whole = SchemaCheck::new(validator.clone(), Format::Json);
        whole.feed(document.as_bytes());
        assert_eq!(whole.finish().len(), MAX_VIOLATIONS);
        assert_eq!(check(Format::Json, &document).len(), MAX_VIOLATIONS);
    }
}
