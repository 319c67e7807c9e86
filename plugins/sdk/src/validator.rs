//! Record validators: the SDK turns the upload into records (JSON objects; a CSV record is an
//! object of strings keyed by the header) and asks the validator about each one.

use std::borrow::Cow;
use std::marker::PhantomData;

use export_convert::{ConvertError, Converter, CsvToJson, JsonRecords};
use serde_json::{Map, Value};

use crate::{
    Capabilities, DataFormat, Plugin, PluginError, PluginInfo, Session, SessionOptions, StepOutput,
    Violation,
};

/// The most violations one upload reports (the first ones; the service keeps at most as many).
const MAX_VIOLATIONS: usize = 100;

/// A plugin that checks records one at a time and never changes the data.
pub trait RecordValidator: Sized + 'static {
    /// Who the plugin is (see [`validator_info`]).
    fn describe() -> PluginInfo;

    /// Builds the validator for one upload from the binding's configuration (`null` when there
    /// is none). An `Err` says what is wrong with the configuration.
    fn open(config: Value) -> Result<Self, String>;

    /// Checks one record (`row` counts data records from 1) and adds what is wrong with it.
    fn check(&mut self, row: u64, record: &Map<String, Value>, violations: &mut Vec<Violation>);
}

/// What a record validator says about itself: its name and version, every resource, `validate`
/// capability.
pub fn validator_info(name: &str, version: &str) -> PluginInfo {
    crate::info_for_every_resource(
        name,
        version,
        Capabilities {
            validate: true,
            transform: false,
            convert: false,
        },
    )
}

/// A [`RecordValidator`] as a [`Plugin`] (what [`crate::export_validator!`] exports).
pub struct ValidatorPlugin<V>(PhantomData<V>);

/// One upload through a [`RecordValidator`].
pub struct ValidatorSession<V> {
    validator: V,
    /// CSV uploads are read as JSON records.
    csv: Option<CsvToJson>,
    records: JsonRecords,
    violations: usize,
}

impl<V: RecordValidator> Plugin for ValidatorPlugin<V> {
    type Session = ValidatorSession<V>;

    fn describe() -> PluginInfo {
        V::describe()
    }

    fn open(options: SessionOptions) -> Result<ValidatorSession<V>, PluginError> {
        let config = match options.config.as_deref() {
            None => Value::Null,
            Some(text) => serde_json::from_str(text)
                .map_err(|error| PluginError::InvalidConfig(format!("not JSON: {error}")))?,
        };
        Ok(ValidatorSession {
            validator: V::open(config).map_err(PluginError::InvalidConfig)?,
            csv: (options.input_format == DataFormat::Csv).then(CsvToJson::new),
            records: JsonRecords::new(),
            violations: 0,
        })
    }
}

fn rejected(error: ConvertError) -> PluginError {
    PluginError::Rejected(vec![Violation::new(error.record, None, error.message)])
}

impl<V: RecordValidator> ValidatorSession<V> {
    /// Reads `chunk` (the end of the upload when `last`) and checks the records it completes;
    /// the chunk itself is the output (the data passes on unchanged).
    fn step<'a>(&mut self, chunk: &'a [u8], last: bool) -> Result<StepOutput<'a>, PluginError> {
        let json = match &mut self.csv {
            Some(csv) => csv.convert_chunk(chunk, last).map_err(rejected)?,
            None => Cow::Borrowed(chunk),
        };
        let mut violations = Vec::new();
        let mut row = self.records.records();
        let validator = &mut self.validator;
        self.records
            .push(&json, &mut |record| {
                row += 1;
                match serde_json::from_slice::<Value>(record) {
                    Ok(Value::Object(record)) => validator.check(row, &record, &mut violations),
                    Ok(_) => violations.push(Violation::new(Some(row), None, "is not an object")),
                    Err(error) => {
                        violations.push(Violation::new(Some(row), None, error.to_string()))
                    }
                }
                Ok(())
            })
            .map_err(rejected)?;
        if last {
            self.records.finish().map_err(rejected)?;
        }
        violations.truncate(MAX_VIOLATIONS.saturating_sub(self.violations));
        self.violations += violations.len();
        Ok(StepOutput {
            output: Cow::Borrowed(chunk),
            violations,
        })
    }
}

impl<V: RecordValidator> Session for ValidatorSession<V> {
    fn push<'a>(&'a mut self, chunk: &'a [u8]) -> Result<StepOutput<'a>, PluginError> {
        self.step(chunk, false)
    }

    fn finish(&mut self) -> Result<StepOutput<'_>, PluginError> {
        self.step(&[], true)
    }
}
