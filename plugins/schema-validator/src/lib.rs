//! Validates every record of an upload against the JSON Schema in the binding's configuration
//! (`{"schema": {...}}`), inside the plugin, and converts CSV↔JSON when the formats differ.
//! CSV records are validated as objects of strings.

use std::borrow::Cow;

use export_convert::{Converter, CsvToJson, JsonRecords, JsonToCsv};
use export_plugin_sdk::{
    Capabilities, DataFormat, Plugin, PluginError, PluginInfo, ResourceInfo, Session,
    SessionOptions, StepOutput, Violation,
};

struct SchemaValidator;

struct Validating {
    validator: jsonschema::Validator,
    /// CSV input is turned into JSON records for validation (and is the output for JSON exports).
    csv_to_json: Option<CsvToJson>,
    /// JSON input going to a CSV export.
    json_to_csv: Option<JsonToCsv>,
    records: JsonRecords,
    input_is_output: bool,
}

impl Plugin for SchemaValidator {
    type Session = Validating;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "schema-validator".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            resources: vec![ResourceInfo {
                name: "*".into(),
                schema: None,
            }],
            capabilities: Capabilities {
                validate: true,
                transform: false,
                convert: true,
            },
        }
    }

    fn open(options: SessionOptions) -> Result<Validating, PluginError> {
        let config: serde_json::Value =
            serde_json::from_str(options.config.as_deref().unwrap_or("{}"))
                .map_err(|error| PluginError::InvalidConfig(format!("not JSON: {error}")))?;
        let schema = config
            .get("schema")
            .ok_or_else(|| PluginError::InvalidConfig("needs a \"schema\"".into()))?;
        let validator = jsonschema::validator_for(schema).map_err(|error| {
            PluginError::InvalidConfig(format!("\"schema\" is not a JSON Schema: {error}"))
        })?;
        let csv_input = options.input_format == DataFormat::Csv;
        Ok(Validating {
            validator,
            csv_to_json: csv_input.then(CsvToJson::new),
            json_to_csv: (!csv_input && options.output_format == DataFormat::Csv)
                .then(JsonToCsv::new),
            records: JsonRecords::new(),
            input_is_output: options.input_format == options.output_format,
        })
    }
}

impl Validating {
    fn step<'a>(&'a mut self, input: &'a [u8], last: bool) -> Result<StepOutput<'a>, PluginError> {
        let rejected = |error: export_convert::ConvertError| {
            PluginError::Rejected(vec![Violation::new(error.record, None, error.message)])
        };
        let json = match &mut self.csv_to_json {
            Some(converter) => converter.convert_chunk(input, last).map_err(rejected)?,
            None => Cow::Borrowed(input),
        };
        let mut violations = Vec::new();
        let validator = &self.validator;
        let mut row = self.records.records();
        self.records
            .push(&json, &mut |record| {
                row += 1;
                match serde_json::from_slice::<serde_json::Value>(record) {
                    Ok(value) => {
                        violations.extend(validator.iter_errors(&value).take(10).map(|error| {
                            let path = error.instance_path().to_string();
                            Violation::new(
                                Some(row),
                                (!path.is_empty()).then_some(path.trim_start_matches('/')),
                                error.to_string(),
                            )
                        }))
                    }
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
        let output = if self.input_is_output {
            Cow::Borrowed(input)
        } else if let Some(converter) = &mut self.json_to_csv {
            converter.convert_chunk(input, last).map_err(rejected)?
        } else {
            json
        };
        Ok(StepOutput { output, violations })
    }
}

impl Session for Validating {
    fn push<'a>(&'a mut self, chunk: &'a [u8]) -> Result<StepOutput<'a>, PluginError> {
        self.step(chunk, false)
    }

    fn finish(&mut self) -> Result<StepOutput<'_>, PluginError> {
        self.step(&[], true)
    }
}

export_plugin_sdk::export_plugin!(SchemaValidator);
