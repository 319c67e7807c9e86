//! CSV records → JSON.

use csv_core::{ReadRecordResult, Reader};

use crate::{ConvertError, Converter, MAX_RECORD_BYTES};

/// Converts CSV to a JSON array of objects (see the crate documentation for the rules).
pub struct CsvToJson {
    reader: Reader,
    fields: Vec<u8>,
    ends: Vec<usize>,
    used: usize,
    ends_used: usize,
    /// The header's keys, each already rendered as `"name":`.
    header: Option<Vec<Vec<u8>>>,
    records: u64,
    started: bool,
    /// Quote characters seen: an odd count at the end means an unterminated quoted field.
    quotes: u64,
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
            reader: Reader::new(),
            fields: vec![0; 4096],
            ends: vec![0; 64],
            used: 0,
            ends_used: 0,
            header: None,
            records: 0,
            started: false,
            quotes: 0,
        }
    }

    /// Runs the CSV reader over `input` (empty = end of input), emitting JSON for every record.
    fn feed(&mut self, mut input: &[u8], output: &mut Vec<u8>) -> Result<(), ConvertError> {
        loop {
            let (result, consumed, written, ends) = self.reader.read_record(
                input,
                &mut self.fields[self.used..],
                &mut self.ends[self.ends_used..],
            );
            input = &input[consumed..];
            // Field ends are positions within the whole record (the reader tracks them across
            // calls), so they need no adjusting.
            self.used += written;
            self.ends_used += ends;
            match result {
                ReadRecordResult::InputEmpty => return Ok(()),
                ReadRecordResult::OutputFull => {
                    if self.fields.len() >= MAX_RECORD_BYTES {
                        return Err(ConvertError::at(
                            self.records + 1,
                            format!("is larger than {MAX_RECORD_BYTES} bytes"),
                        ));
                    }
                    let grown = self.fields.len() * 2;
                    self.fields.resize(grown, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let grown = self.ends.len() * 2;
                    self.ends.resize(grown, 0);
                }
                ReadRecordResult::Record => {
                    self.record(output)?;
                    self.used = 0;
                    self.ends_used = 0;
                }
                ReadRecordResult::End => return Ok(()),
            }
        }
    }

    fn record(&mut self, output: &mut Vec<u8>) -> Result<(), ConvertError> {
        let record_number = self.records + u64::from(self.header.is_some());
        let Some(keys) = &self.header else {
            let mut names: Vec<String> = Vec::with_capacity(self.ends_used);
            let mut start = 0;
            for &end in &self.ends[..self.ends_used] {
                let name = std::str::from_utf8(&self.fields[start..end])
                    .map_err(|_| ConvertError::at(0, "is not valid UTF-8"))?;
                if names.iter().any(|existing| existing == name) {
                    return Err(ConvertError::at(
                        0,
                        format!("the header has a duplicate column '{name}'"),
                    ));
                }
                names.push(name.to_owned());
                start = end;
            }
            // Each key is escaped once, as `"name":`, and copied into every record.
            self.header = Some(
                names
                    .iter()
                    .map(|name| {
                        let mut key = serde_json::to_vec(name).expect("a string serialises");
                        key.push(b':');
                        key
                    })
                    .collect(),
            );
            return Ok(());
        };
        self.records += 1;
        if self.ends_used != keys.len() {
            return Err(ConvertError::at(
                self.records,
                format!(
                    "has {} fields, the header has {}",
                    self.ends_used,
                    keys.len()
                ),
            ));
        }
        output.push(if self.started { b',' } else { b'[' });
        self.started = true;
        output.push(b'{');
        let mut start = 0;
        for (index, (key, &end)) in keys.iter().zip(&self.ends[..self.ends_used]).enumerate() {
            if index > 0 {
                output.push(b',');
            }
            output.extend_from_slice(key);
            let value = std::str::from_utf8(&self.fields[start..end])
                .map_err(|_| ConvertError::at(record_number, "is not valid UTF-8"))?;
            write_json_string(output, value);
            start = end;
        }
        output.push(b'}');
        Ok(())
    }
}

impl Converter for CsvToJson {
    fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, ConvertError> {
        let mut output = Vec::with_capacity(input.len() * 2 + 64);
        if !input.is_empty() {
            self.quotes += input.iter().filter(|byte| **byte == b'"').count() as u64;
            self.feed(input, &mut output)?;
        }
        Ok(output)
    }

    fn finish(&mut self) -> Result<Vec<u8>, ConvertError> {
        if self.quotes % 2 == 1 {
            return Err(ConvertError::at(
                self.records + 1,
                "ends inside a quoted field",
            ));
        }
        let mut output = Vec::new();
        self.feed(&[], &mut output)?;
        if self.used > 0 || self.ends_used > 0 {
            return Err(ConvertError::at(
                self.records + 1,
                "ends inside a quoted field",
            ));
        }
        output.extend_from_slice(if self.started { b"]" } else { b"[]" });
        Ok(output)
    }

    fn records(&self) -> u64 {
        self.records
    }
}

/// Appends `value` as a JSON string: quotes, and escapes only where JSON requires them.
fn write_json_string(output: &mut Vec<u8>, value: &str) {
    output.push(b'"');
    let bytes = value.as_bytes();
    let mut plain_from = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                output.extend_from_slice(&bytes[plain_from..index]);
                output.extend_from_slice(format!("\\u{byte:04x}").as_bytes());
                plain_from = index + 1;
                continue;
            }
            _ => continue,
        };
        output.extend_from_slice(&bytes[plain_from..index]);
        output.extend_from_slice(escape);
        plain_from = index + 1;
    }
    output.extend_from_slice(&bytes[plain_from..]);
    output.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::write_json_string;

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        for text in [
            "plain",
            "quote \" and \\ back",
            "tab\tnew\nline\r",
            "\u{1}\u{8}\u{c}\u{1f} ctrl",
            "é 🎉 ✓",
            "",
        ] {
            let mut ours = Vec::new();
            write_json_string(&mut ours, text);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(text).unwrap()
            );
        }
    }
}
