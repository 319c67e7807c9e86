//! Splits a JSON document into its records as bytes arrive: the objects of a top-level array,
//! or of the array that is the only property of a top-level object.

use crate::{ConvertError, MAX_RECORD_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the document.
    Start,
    /// Inside the top-level object, before its key.
    ObjectKey,
    /// Inside the key string.
    KeyString { escaped: bool },
    /// After the key, before `:`.
    Colon,
    /// After `:`, before the array.
    ArrayValue,
    /// In the records array, before a record or `]`.
    BeforeRecord { first: bool },
    /// Inside a record.
    Record {
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
    /// After a record, before `,` or `]`.
    AfterRecord,
    /// After the records array inside the object, before `}`.
    ObjectEnd,
    /// After the document.
    Done,
}

/// The incremental splitter.
#[derive(Debug, Clone)]
pub struct JsonRecords {
    state: State,
    wrapped: bool,
    record: Vec<u8>,
    records: u64,
}

impl Default for JsonRecords {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonRecords {
    /// A splitter at the start of a document.
    pub fn new() -> Self {
        Self {
            state: State::Start,
            wrapped: false,
            record: Vec::new(),
            records: 0,
        }
    }

    /// Records completed so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Feeds bytes; `on_record` receives each complete record's bytes (an object).
    pub fn push(
        &mut self,
        input: &[u8],
        on_record: &mut dyn FnMut(&[u8]) -> Result<(), ConvertError>,
    ) -> Result<(), ConvertError> {
        for &byte in input {
            let whitespace = matches!(byte, b' ' | b'\t' | b'\n' | b'\r');
            self.state = match self.state {
                State::Start if whitespace => State::Start,
                State::Start => match byte {
                    b'[' => State::BeforeRecord { first: true },
                    b'{' => {
                        self.wrapped = true;
                        State::ObjectKey
                    }
                    _ => return Err(shape_error()),
                },
                State::ObjectKey if whitespace => State::ObjectKey,
                State::ObjectKey => match byte {
                    b'"' => State::KeyString { escaped: false },
                    _ => return Err(shape_error()),
                },
                State::KeyString { escaped: true } => State::KeyString { escaped: false },
                State::KeyString { escaped: false } => match byte {
                    b'\\' => State::KeyString { escaped: true },
                    b'"' => State::Colon,
                    _ => State::KeyString { escaped: false },
                },
                State::Colon if whitespace => State::Colon,
                State::Colon if byte == b':' => State::ArrayValue,
                State::Colon => return Err(invalid_json()),
                State::ArrayValue if whitespace => State::ArrayValue,
                State::ArrayValue if byte == b'[' => State::BeforeRecord { first: true },
                State::ArrayValue => return Err(shape_error()),
                State::BeforeRecord { first } if whitespace => State::BeforeRecord { first },
                State::BeforeRecord { first } => match byte {
                    b'{' => {
                        self.record.clear();
                        self.record.push(byte);
                        State::Record {
                            depth: 1,
                            in_string: false,
                            escaped: false,
                        }
                    }
                    b']' if first => self.after_array(),
                    b']' => return Err(invalid_json()),
                    _ => {
                        return Err(ConvertError::at(self.records + 1, "is not an object"));
                    }
                },
                State::Record {
                    depth,
                    in_string,
                    escaped,
                } => {
                    self.record.push(byte);
                    if self.record.len() > MAX_RECORD_BYTES {
                        return Err(ConvertError::at(
                            self.records + 1,
                            format!("is larger than {MAX_RECORD_BYTES} bytes"),
                        ));
                    }
                    match (in_string, escaped, byte) {
                        (true, true, _) => State::Record {
                            depth,
                            in_string: true,
                            escaped: false,
                        },
                        (true, false, b'\\') => State::Record {
                            depth,
                            in_string: true,
                            escaped: true,
                        },
                        (true, false, b'"') => State::Record {
                            depth,
                            in_string: false,
                            escaped: false,
                        },
                        (true, false, _) => State::Record {
                            depth,
                            in_string: true,
                            escaped: false,
                        },
                        (false, _, b'"') => State::Record {
                            depth,
                            in_string: true,
                            escaped: false,
                        },
                        (false, _, b'{' | b'[') => State::Record {
                            depth: depth + 1,
                            in_string: false,
                            escaped: false,
                        },
                        (false, _, b'}' | b']') if depth == 1 => {
                            self.records += 1;
                            on_record(&self.record)?;
                            State::AfterRecord
                        }
                        (false, _, b'}' | b']') => State::Record {
                            depth: depth - 1,
                            in_string: false,
                            escaped: false,
                        },
                        (false, _, _) => State::Record {
                            depth,
                            in_string: false,
                            escaped: false,
                        },
                    }
                }
                State::AfterRecord if whitespace => State::AfterRecord,
                State::AfterRecord => match byte {
                    b',' => State::BeforeRecord { first: false },
                    b']' => self.after_array(),
                    _ => return Err(invalid_json()),
                },
                State::ObjectEnd if whitespace => State::ObjectEnd,
                State::ObjectEnd => match byte {
                    b'}' => State::Done,
                    b',' => {
                        return Err(ConvertError::whole(
                            "the object may hold only the records array (found another property)",
                        ));
                    }
                    _ => return Err(invalid_json()),
                },
                State::Done if whitespace => State::Done,
                State::Done => {
                    return Err(ConvertError::whole(
                        "unexpected data after the JSON document",
                    ));
                }
            };
        }
        Ok(())
    }

    fn after_array(&self) -> State {
        if self.wrapped {
            State::ObjectEnd
        } else {
            State::Done
        }
    }

    /// Checks that the document ended.
    pub fn finish(&self) -> Result<(), ConvertError> {
        match self.state {
            State::Done => Ok(()),
            State::Start => Err(shape_error()),
            _ => Err(ConvertError::whole("the JSON document ends too early")),
        }
    }
}

fn shape_error() -> ConvertError {
    ConvertError::whole(
        "JSON must be an array of objects, or an object whose only property is such an array",
    )
}

fn invalid_json() -> ConvertError {
    ConvertError::whole("not valid JSON")
}
