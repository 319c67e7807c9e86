//! The CSV↔JSON converter as a plugin: the same code the service runs natively
//! (`export-convert`), so the two can be compared byte for byte and in speed.

use export_convert::{ConvertError, Converter, CsvToJson, JsonToCsv};
use export_plugin_sdk::{
    Capabilities, DataFormat, Plugin, PluginError, PluginInfo, ResourceInfo, Session,
    SessionOptions, StepOutput, Violation,
};

struct CsvJson;

/// Passes data through unchanged, or converts it.
enum Conversion {
    Same,
    Convert(Box<dyn Converter>),
}

impl Plugin for CsvJson {
    type Session = Conversion;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "csv-json".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            resources: vec![ResourceInfo {
                name: "*".into(),
                schema: None,
            }],
            capabilities: Capabilities {
                validate: false,
                transform: false,
                convert: true,
            },
        }
    }

    fn open(options: SessionOptions) -> Result<Conversion, PluginError> {
        Ok(match (options.input_format, options.output_format) {
            (DataFormat::Csv, DataFormat::Json) => Conversion::Convert(Box::new(CsvToJson::new())),
            (DataFormat::Json, DataFormat::Csv) => Conversion::Convert(Box::new(JsonToCsv::new())),
            _ => Conversion::Same,
        })
    }
}

fn rejected(error: ConvertError) -> PluginError {
    PluginError::Rejected(vec![Violation::new(error.record, None, error.message)])
}

impl Session for Conversion {
    /// The output is the converter's own buffer (or the chunk itself): handed to the host as it
    /// is, without a copy.
    fn push<'a>(&'a mut self, chunk: &'a [u8]) -> Result<StepOutput<'a>, PluginError> {
        match self {
            Conversion::Same => Ok(StepOutput::borrowed(chunk)),
            Conversion::Convert(converter) => converter
                .push(chunk)
                .map(StepOutput::borrowed)
                .map_err(rejected),
        }
    }

    fn finish(&mut self) -> Result<StepOutput<'_>, PluginError> {
        match self {
            Conversion::Same => Ok(StepOutput::nothing()),
            Conversion::Convert(converter) => converter
                .finish()
                .map(StepOutput::borrowed)
                .map_err(rejected),
        }
    }
}

export_plugin_sdk::export_plugin!(CsvJson);
