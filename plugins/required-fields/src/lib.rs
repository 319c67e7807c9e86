//! The example validator of docs/PLUGINS.md: every record must fill in the `required` fields and
//! hold numbers in the `numeric` ones. Configuration: `{"required": [...], "numeric": [...]}`.

use export_plugin_sdk::serde_json::{self, Map, Value};
use export_plugin_sdk::{PluginInfo, RecordValidator, Violation, validator_info};

struct RequiredFields {
    required: Vec<String>,
    numeric: Vec<String>,
}

impl RecordValidator for RequiredFields {
    fn describe() -> PluginInfo {
        validator_info(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
    }

    fn open(config: Value) -> Result<Self, String> {
        let names = |key: &str| match config.get(key) {
            None => Ok(Vec::new()),
            Some(names) => serde_json::from_value(names.clone())
                .map_err(|_| format!("\"{key}\" must be a list of field names")),
        };
        Ok(Self {
            required: names("required")?,
            numeric: names("numeric")?,
        })
    }

    fn check(&mut self, row: u64, record: &Map<String, Value>, violations: &mut Vec<Violation>) {
        for field in &self.required {
            let filled = match record.get(field) {
                None | Some(Value::Null) => false,
                Some(Value::String(text)) => !text.trim().is_empty(),
                Some(_) => true,
            };
            if !filled {
                violations.push(Violation::new(
                    Some(row),
                    Some(field.as_str()),
                    "is required",
                ));
            }
        }
        for field in &self.numeric {
            let number = match record.get(field) {
                None | Some(Value::Null | Value::Number(_)) => true,
                Some(Value::String(text)) => text.is_empty() || text.parse::<f64>().is_ok(),
                Some(_) => false,
            };
            if !number {
                violations.push(Violation::new(
                    Some(row),
                    Some(field.as_str()),
                    "is not a number",
                ));
            }
        }
    }
}

export_plugin_sdk::export_validator!(RequiredFields);
