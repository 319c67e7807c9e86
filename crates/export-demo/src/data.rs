//! Generated data for the demo source application: a few rows per known resource, rendered as
//! CSV or as the JSON document the upstream's examples use (an object holding a `data` array).
//! The rows carry what conversion must get right: commas, quotes, line breaks, non-ASCII text,
//! empty fields and numbers.

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::Format;

/// The resources the demo source knows, with a one-line description each.
pub const KNOWN_RESOURCES: &[(&str, &str)] = &[
    (
        "exampleResource",
        "inventory-like hosts: id, name, os, cpus, tags",
    ),
    (
        "anotherExampleResource",
        "audit events: id, at, actor, action, detail",
    ),
];

/// Rows for one resource request: an ordered list of field names and one value per field.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    fields: Vec<&'static str>,
    rows: Vec<Vec<Value>>,
}

impl Dataset {
    /// `rows` rows of `resource`, derived from `seed` (the source id) so a redelivered request
    /// produces the same data; `None` when the demo does not know the resource.
    pub fn generate(resource: &str, seed: Uuid, rows: usize) -> Option<Self> {
        let seed = seed.as_u128();
        let make: fn(u128, usize) -> Vec<Value> = match resource {
            "exampleResource" => host_row,
            "anotherExampleResource" => event_row,
            _ => return None,
        };
        let fields = match resource {
            "exampleResource" => vec!["id", "name", "os", "cpus", "tags"],
            _ => vec!["id", "at", "actor", "action", "detail"],
        };
        Some(Self {
            fields,
            rows: (0..rows).map(|index| make(seed, index)).collect(),
        })
    }

    /// How many rows there are.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows rendered in `format`.
    pub fn render(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Csv => self.to_csv(),
            Format::Json => self.to_json(),
        }
    }

    fn to_json(&self) -> Vec<u8> {
        let records: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let record: Map<String, Value> = self
                    .fields
                    .iter()
                    .map(|field| field.to_string())
                    .zip(row.iter().cloned())
                    .collect();
                Value::Object(record)
            })
            .collect();
        serde_json::to_vec(&json!({ "data": records })).expect("JSON values always serialise")
    }

    fn to_csv(&self) -> Vec<u8> {
        let mut out = String::new();
        push_record(&mut out, self.fields.iter().map(|field| field.to_string()));
        for row in &self.rows {
            push_record(
                &mut out,
                row.iter().map(|value| match value {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                }),
            );
        }
        out.into_bytes()
    }
}

/// Appends one CSV record (RFC 4180 quoting where a field needs it).
fn push_record(out: &mut String, fields: impl Iterator<Item = String>) {
    for (index, field) in fields.enumerate() {
        if index > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push('\n');
}

/// A small deterministic mix of `seed` and `index` (SplitMix64's finaliser).
fn mix(seed: u128, index: usize) -> u64 {
    let mut value =
        (seed as u64) ^ ((seed >> 64) as u64) ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

fn pick<'a>(choices: &[&'a str], random: u64) -> &'a str {
    choices[(random % choices.len() as u64) as usize]
}

fn host_row(seed: u128, index: usize) -> Vec<Value> {
    let random = mix(seed, index);
    let tags = [
        "",
        "web",
        "db, primary",
        "edge \"canary\"",
        "größe: groß",
        "multi\nline",
    ];
    vec![
        json!(index + 1),
        json!(format!("host-{:04}.example.com", random % 10_000)),
        json!(pick(&["RHEL 9.4", "RHEL 8.10", "Fedora 41"], random >> 8)),
        json!(1u64 << ((random >> 16) & 0b11)),
        json!(pick(&tags, random >> 24)),
    ]
}

fn event_row(seed: u128, index: usize) -> Vec<Value> {
    let random = mix(seed, index);
    vec![
        json!(index + 1),
        json!(format!(
            "2026-11-{:02}T{:02}:{:02}:00Z",
            1 + random % 28,
            (random >> 8) & 0xF,
            (random >> 16) % 60
        )),
        json!(pick(
            &["alice", "bob", "zoë", "service-account"],
            random >> 24
        )),
        json!(pick(
            &["login", "export.create", "export.download", "delete"],
            random >> 32
        )),
        json!(pick(
            &[
                "",
                "via web console",
                "from 10.0.0.7, \"trusted\"",
                "✓ done"
            ],
            random >> 40
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use export_convert::{CsvToJson, convert_all};

    fn seed() -> Uuid {
        Uuid::parse_str("0b4ed3a4-55e3-4b4c-8a15-5e3f7a0c9a11").unwrap()
    }

    #[test]
    fn every_known_resource_generates_rows_and_unknown_ones_do_not() {
        for (resource, _) in KNOWN_RESOURCES {
            let data = Dataset::generate(resource, seed(), 25).expect("known");
            assert_eq!(data.len(), 25);
        }
        assert!(Dataset::generate("nope", seed(), 5).is_none());
    }

    #[test]
    fn the_same_request_generates_the_same_data() {
        let one = Dataset::generate("exampleResource", seed(), 50).unwrap();
        let two = Dataset::generate("exampleResource", seed(), 50).unwrap();
        assert_eq!(one, two);
        let other = Dataset::generate("exampleResource", Uuid::new_v4(), 50).unwrap();
        assert_ne!(one, other);
    }

    #[test]
    fn json_is_an_object_holding_a_data_array_of_records() {
        let data = Dataset::generate("anotherExampleResource", seed(), 3).unwrap();
        let value: Value = serde_json::from_slice(&data.render(Format::Json)).unwrap();
        let records = value["data"].as_array().unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[2]["id"], 3);
        assert!(records[0]["actor"].is_string());
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_reads_back_as_the_same_records() {
        let data = Dataset::generate("exampleResource", seed(), 200).unwrap();
        let csv = data.render(Format::Csv);
        let text = String::from_utf8(csv.clone()).unwrap();
        assert!(text.starts_with("id,name,os,cpus,tags\n"));
        assert!(text.contains("\"db, primary\""), "{text}");
        // The service's converter reads it back into the records of the JSON rendering
        // (CSV cells are strings, so compare as strings).
        let converted = convert_all(&mut CsvToJson::new(), &csv).unwrap();
        let from_csv: Value = serde_json::from_slice(&converted).unwrap();
        let from_json: Value = serde_json::from_slice(&data.render(Format::Json)).unwrap();
        let as_strings = |record: &Value| -> Vec<String> {
            record
                .as_object()
                .unwrap()
                .values()
                .map(|value| match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect()
        };
        let csv_records = from_csv.as_array().unwrap();
        let json_records = from_json["data"].as_array().unwrap();
        assert_eq!(csv_records.len(), json_records.len());
        for (left, right) in csv_records.iter().zip(json_records) {
            assert_eq!(as_strings(left), as_strings(right));
        }
    }
}
