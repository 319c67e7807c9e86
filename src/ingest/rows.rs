//! Counting data rows while bytes stream past, without parsing or buffering: CSV records after
//! the header (quote-aware, so newlines inside quoted fields do not count), and the elements of
//! a JSON document's top-level array — or of the first array inside a top-level object (the
//! upstream's example is `{"data": [...]}`).

use crate::domain::Format;

/// A streaming row counter.
#[derive(Debug, Clone)]
pub enum RowCounter {
    /// The format is not known yet: it is sniffed from the first non-blank byte.
    Undecided,
    /// CSV records.
    Csv(CsvRows),
    /// JSON array elements.
    Json(JsonRows),
}

impl RowCounter {
    /// A counter for data in `format`, or for data whose format is sniffed (`None`).
    pub fn new(format: Option<Format>) -> Self {
        match format {
            None => Self::Undecided,
            Some(Format::Csv) => Self::Csv(CsvRows::default()),
            Some(Format::Json) => Self::Json(JsonRows::default()),
        }
    }

    /// Feeds the next bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if let Self::Undecided = self {
            match bytes.iter().find(|byte| !byte.is_ascii_whitespace()) {
                None => return,
                Some(first) => *self = Self::new(Some(sniff(*first))),
            }
        }
        match self {
            Self::Undecided => {}
            Self::Csv(counter) => counter.feed(bytes),
            Self::Json(counter) => counter.feed(bytes),
        }
    }

    /// The number of rows, once every byte was fed (`None` when the JSON has no array).
    pub fn finish(&self) -> Option<u64> {
        match self {
            Self::Undecided => Some(0),
            Self::Csv(counter) => Some(counter.finish()),
            Self::Json(counter) => counter.finish(),
        }
    }
}

/// The format of data starting with `first` (its first non-blank byte): JSON documents start
/// with `{` or `[`, anything else is taken as CSV.
pub fn sniff(first: u8) -> Format {
    match first {
        b'{' | b'[' => Format::Json,
        _ => Format::Csv,
    }
}

/// The format a `Content-Type` names, if it names one.
pub fn format_of_content_type(content_type: &str) -> Option<Format> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(Format::Json),
        "text/csv" | "application/csv" => Some(Format::Csv),
        _ => None,
    }
}

/// CSV records, excluding the header line.
#[derive(Debug, Clone, Default)]
pub struct CsvRows {
    lines: u64,
    in_quotes: bool,
    line_has_content: bool,
}

impl CsvRows {
    /// Jumps between the bytes that matter (quotes, and outside quotes newlines) with `memchr`,
    /// which scans a word or vector at a time: the byte-at-a-time loop it replaces was the
    /// service's hottest symbol during a large CSV upload (`bench/results/NOTES.md`).
    fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.in_quotes {
                // Everything up to the closing quote is field content, newlines included; the
                // opening quote already marked the line as having content.
                let Some(at) = memchr::memchr(b'"', rest) else {
                    return;
                };
                self.in_quotes = false;
                rest = &rest[at + 1..];
                continue;
            }
            let at = memchr::memchr2(b'"', b'\n', rest);
            let before = &rest[..at.unwrap_or(rest.len())];
            // A line of nothing but carriage returns is blank.
            if !self.line_has_content && before.iter().any(|&byte| byte != b'\r') {
                self.line_has_content = true;
            }
            let Some(at) = at else {
                return;
            };
            if rest[at] == b'"' {
                self.in_quotes = true;
                self.line_has_content = true;
            } else {
                if self.line_has_content {
                    self.lines += 1;
                }
                self.line_has_content = false;
            }
            rest = &rest[at + 1..];
        }
    }

    fn finish(&self) -> u64 {
        let lines = self.lines + u64::from(self.line_has_content);
        lines.saturating_sub(1)
    }
}

/// Elements of the counted JSON array.
#[derive(Debug, Clone, Default)]
pub struct JsonRows {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Depth of the array being counted, once found.
    target: Option<u32>,
    /// Whether the top-level value is an object (then the first array at depth 2 counts).
    top_is_object: bool,
    elements: u64,
    expecting_element: bool,
    done: bool,
}

impl JsonRows {
    fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            if byte.is_ascii_whitespace() {
                continue;
            }
            if self.expecting_element && Some(self.depth) == self.target && byte != b']' {
                self.elements += 1;
                self.expecting_element = false;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == 1 {
                        self.top_is_object = byte == b'{';
                    }
                    let wanted = if self.top_is_object { 2 } else { 1 };
                    if byte == b'[' && self.target.is_none() && !self.done && self.depth == wanted {
                        self.target = Some(self.depth);
                        self.expecting_element = true;
                    }
                }
                b'}' | b']' => {
                    if Some(self.depth) == self.target && byte == b']' {
                        self.target = None;
                        self.done = true;
                        self.expecting_element = false;
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                b',' if Some(self.depth) == self.target => self.expecting_element = true,
                _ => {}
            }
        }
    }

    fn finish(&self) -> Option<u64> {
        (self.done || self.target.is_some()).then_some(self.elements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(format: Format, text: &str) -> Option<u64> {
        // Feed byte by byte to prove chunk boundaries do not matter.
        let mut counter = RowCounter::new(Some(format));
        for byte in text.as_bytes() {
            counter.feed(std::slice::from_ref(byte));
        }
        counter.finish()
    }

    #[test]
    fn csv_records() {
        assert_eq!(count(Format::Csv, "a,b\n1,2\n3,4\n"), Some(2));
        assert_eq!(count(Format::Csv, "a,b\r\n1,2\r\n3,4"), Some(2));
        assert_eq!(count(Format::Csv, "a,b\n\"multi\nline\",2\n"), Some(1));
        assert_eq!(count(Format::Csv, "a,b\n"), Some(0));
        assert_eq!(count(Format::Csv, ""), Some(0));
        assert_eq!(count(Format::Csv, "a\n\n1\n\n"), Some(1));
    }

    /// The plain definition the scanning counter must agree with: one byte at a time.
    fn csv_rows_byte_by_byte(text: &[u8]) -> u64 {
        let (mut lines, mut in_quotes, mut line_has_content) = (0u64, false, false);
        for &byte in text {
            match byte {
                b'"' => {
                    in_quotes = !in_quotes;
                    line_has_content = true;
                }
                b'\n' if !in_quotes => {
                    lines += u64::from(line_has_content);
                    line_has_content = false;
                }
                b'\r' if !in_quotes => {}
                _ => line_has_content = true,
            }
        }
        (lines + u64::from(line_has_content)).saturating_sub(1)
    }

    #[test]
    fn csv_rows_agree_with_the_byte_by_byte_definition_whatever_the_chunks() {
        // A small linear congruential generator: the cases are the same on every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % bound
        };
        let alphabet = b"ab,\"\n\r";
        for case in 0..2_000 {
            let length = next(200);
            let text: Vec<u8> = (0..length)
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let mut counter = RowCounter::new(Some(Format::Csv));
            let mut rest = text.as_slice();
            while !rest.is_empty() {
                let take = 1 + next(rest.len().min(40));
                counter.feed(&rest[..take]);
                rest = &rest[take..];
            }
            assert_eq!(
                counter.finish(),
                Some(csv_rows_byte_by_byte(&text)),
                "case {case}: {:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn sniffing_and_content_types() {
        let mut counter = RowCounter::new(None);
        counter.feed(b"  \n");
        counter.feed(b" [1, 2, 3]");
        assert_eq!(counter.finish(), Some(3));
        let mut counter = RowCounter::new(None);
        counter.feed(b"a,b\n1,2\n");
        assert_eq!(counter.finish(), Some(1));
        assert_eq!(
            format_of_content_type("text/csv; charset=utf-8"),
            Some(Format::Csv)
        );
        assert_eq!(
            format_of_content_type("Application/JSON"),
            Some(Format::Json)
        );
        assert_eq!(format_of_content_type("application/csv"), Some(Format::Csv));
        assert_eq!(format_of_content_type("application/octet-stream"), None);
    }

    #[test]
    fn json_elements() {
        assert_eq!(count(Format::Json, r#"[{"a":1},{"a":[1,2]},3]"#), Some(3));
        assert_eq!(
            count(
                Format::Json,
                r#"{"meta":{"x":[1,2]},"data":[{"s":"],\"["},{}]}"#
            ),
            Some(2)
        );
        assert_eq!(count(Format::Json, r#"{"data": []}"#), Some(0));
        assert_eq!(count(Format::Json, "[ ]"), Some(0));
        assert_eq!(count(Format::Json, r#"{"a": 1}"#), None);
        assert_eq!(count(Format::Json, r#""text""#), None);
    }
}
