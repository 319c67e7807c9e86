//! The nesting depth of a JSON document, checked as its bytes stream past: one pass, constant
//! memory and no recursion, so a document of nothing but `[` costs no more than any other.

use crate::ConvertError;

/// The deepest nesting of arrays and objects accepted in uploaded JSON, counting the document's
/// own (so a record of `[{…}]` may nest 62 more levels, of `{"data": [{…}]}` 61). Well under
/// `serde_json`'s own recursion limit (128), so a record that passes is always parsed.
pub const MAX_JSON_DEPTH: u32 = 64;

/// Checks that a JSON document nests no deeper than a limit. It reads only strings and brackets;
/// whether the document is valid JSON is for the reader that parses it.
#[derive(Debug, Clone)]
pub struct JsonDepth {
    limit: u32,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Whether the top-level value is an object (its first array holds the records).
    top_is_object: bool,
    /// The depth of the records array while it is open.
    records_depth: Option<u32>,
    /// Whether the records array was found (and closed) already.
    records_done: bool,
    /// Records begun in the records array.
    records: u64,
    /// In the records array, before a record.
    expecting_record: bool,
}

impl Default for JsonDepth {
    fn default() -> Self {
        Self::new(MAX_JSON_DEPTH)
    }
}

impl JsonDepth {
    /// A check of a document from its start, refusing more than `limit` levels.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            depth: 0,
            in_string: false,
            escaped: false,
            top_is_object: false,
            records_depth: None,
            records_done: false,
            records: 0,
            expecting_record: false,
        }
    }

    /// Feeds the next bytes; the error names the record (when the excess is inside one) and the
    /// limit.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ConvertError> {
        let mut at = 0;
        while at < bytes.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    at += 1;
                    continue;
                }
                // The rest of a string in one step: only its end or an escape matter.
                match bytes[at..]
                    .iter()
                    .position(|&byte| byte == b'"' || byte == b'\\')
                {
                    None => return Ok(()),
                    Some(offset) => {
                        at += offset;
                        if bytes[at] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                        }
                        at += 1;
                        continue;
                    }
                }
            }
            let byte = bytes[at];
            at += 1;
            if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                continue;
            }
            if self.expecting_record && Some(self.depth) == self.records_depth && byte != b']' {
                self.records += 1;
                self.expecting_record = false;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > self.limit {
                        return Err(self.too_deep());
                    }
                    if self.depth == 1 {
                        self.top_is_object = byte == b'{';
                    }
                    let wanted = if self.top_is_object { 2 } else { 1 };
                    if byte == b'['
                        && self.records_depth.is_none()
                        && !self.records_done
                        && self.depth == wanted
                    {
                        self.records_depth = Some(self.depth);
                        self.expecting_record = true;
                    }
                }
                b'}' | b']' => {
                    if Some(self.depth) == self.records_depth {
                        self.records_depth = None;
                        self.records_done = true;
                        self.expecting_record = false;
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                b',' if Some(self.depth) == self.records_depth => self.expecting_record = true,
                _ => {}
            }
        }
        Ok(())
    }

    fn too_deep(&self) -> ConvertError {
        let message = format!(
            "nests deeper than {} levels of arrays and objects (the limit, counting the \
             document's own)",
            self.limit
        );
        match self.records_depth {
            Some(records_depth) if self.depth > records_depth && self.records > 0 => {
                ConvertError::at(self.records, message)
            }
            _ => ConvertError::whole(format!("the JSON document {message}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(limit: u32, text: &str) -> Result<(), ConvertError> {
        // Byte by byte and whole: chunk boundaries must not matter.
        let mut bytewise = JsonDepth::new(limit);
        let mut first_error = None;
        for byte in text.as_bytes() {
            if let Err(error) = bytewise.feed(std::slice::from_ref(byte)) {
                first_error = Some(error);
                break;
            }
        }
        let whole = JsonDepth::new(limit).feed(text.as_bytes());
        assert_eq!(whole.clone().err(), first_error, "{text}");
        whole
    }

    #[test]
    fn depth_within_the_limit_passes() {
        assert!(check(3, r#"[{"a": [1, {"b": 2}]}]"#).is_err());
        assert!(check(4, r#"[{"a": [1, {"b": 2}]}]"#).is_ok());
        // Brackets inside strings (and escaped quotes) do not count.
        assert!(check(2, r#"[{"a": "[[[[{{{{\"[[[["}]"#).is_ok());
        assert!(check(2, r#"{"data": [{"s": "\\"}, {"t": "]]"}]}"#).is_err());
        assert!(check(3, r#"{"data": [{"s": "\\"}, {"t": "]]"}]}"#).is_ok());
    }

    #[test]
    fn the_error_names_the_record_and_the_limit() {
        let error = check(3, r#"[{"a": 1}, {"b": [2]}, {"c": [[3]]}]"#).unwrap_err();
        assert_eq!(error.record, Some(3));
        assert!(error.message.contains("deeper than 3 levels"), "{error}");
        let wrapped = check(4, r#"{"data": [{}, {"x": {"y": [1]}}]}"#).unwrap_err();
        assert_eq!(wrapped.record, Some(2));
        // Outside the records: the document as a whole.
        let outside = check(2, r#"{"meta": {"x": [1]}, "data": []}"#).unwrap_err();
        assert_eq!(outside.record, None);
        assert!(
            outside
                .message
                .starts_with("the JSON document nests deeper than 2")
        );
    }

    #[test]
    fn a_megabyte_of_open_brackets_is_refused_at_the_limit() {
        let brackets = vec![b'['; 1024 * 1024];
        let mut depth = JsonDepth::default();
        let error = depth.feed(&brackets).unwrap_err();
        assert_eq!(error.record, Some(1), "the first element of the top array");
        assert!(error.message.contains("deeper than 64 levels"), "{error}");
        let mut objects = JsonDepth::default();
        let deep = r#"{"a":"#.repeat(200_000);
        assert_eq!(objects.feed(deep.as_bytes()).unwrap_err().record, None);
    }

    #[test]
    fn exactly_the_limit_passes() {
        let limit = MAX_JSON_DEPTH as usize;
        let deepest = format!("{}{}", "[".repeat(limit), "]".repeat(limit));
        assert!(JsonDepth::default().feed(deepest.as_bytes()).is_ok());
        let one_more = format!("[{deepest}]");
        assert!(JsonDepth::default().feed(one_more.as_bytes()).is_err());
    }
}
