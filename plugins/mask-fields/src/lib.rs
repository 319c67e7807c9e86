//! A record-mode transformer (contract 1.3.0, world `record-transform-plugin`): the service
//! splits each upload into records and this plugin returns the records to store in their place.
//! Its binding's configuration says what to do, e.g.
//! `{"mask": ["ssn"], "drop_empty": ["id"], "required": ["name"]}`:
//! - the values of the `mask` fields are replaced by `"***"`;
//! - records that leave a `drop_empty` field empty are left out of what is stored;
//! - records that leave a `required` field empty are reported (the upload is then rejected).

wit_bindgen::generate!({ world: "record-transform-plugin", path: "wit" });

use export_service::plugin::types::{
    Capabilities, PluginError, PluginInfo, RecordViolation, ResourceInfo, SessionOptions, Violation,
};
use exports::export_service::plugin::record_transforms::{
    Guest, GuestTransformer, Transformed, Transformer,
};
use serde_json::{Map, Value};

struct Plugin;

struct MaskFields {
    mask: Vec<String>,
    drop_empty: Vec<String>,
    required: Vec<String>,
}

impl Guest for Plugin {
    type Transformer = MaskFields;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            resources: vec![ResourceInfo {
                name: "*".into(),
                schema: None,
            }],
            capabilities: Capabilities {
                validate: true,
                transform: true,
                convert: false,
            },
        }
    }
}

fn names(config: &Map<String, Value>, key: &str) -> Result<Vec<String>, PluginError> {
    match config.get(key) {
        None => Ok(Vec::new()),
        Some(value) => serde_json::from_value(value.clone()).map_err(|_| {
            PluginError::InvalidConfig(format!("\"{key}\" must be a list of field names"))
        }),
    }
}

fn is_empty(record: &Map<String, Value>, field: &str) -> bool {
    match record.get(field) {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.trim().is_empty(),
        Some(_) => false,
    }
}

impl GuestTransformer for MaskFields {
    fn open(options: SessionOptions) -> Result<Transformer, PluginError> {
        let config: Map<String, Value> = match options.config.as_deref() {
            None => Map::new(),
            Some(text) => serde_json::from_str(text).map_err(|error| {
                PluginError::InvalidConfig(format!("must be a JSON object: {error}"))
            })?,
        };
        Ok(Transformer::new(MaskFields {
            mask: names(&config, "mask")?,
            drop_empty: names(&config, "drop_empty")?,
            required: names(&config, "required")?,
        }))
    }

    fn transform(&self, records: Vec<String>) -> Result<Transformed, PluginError> {
        let mut kept = Vec::with_capacity(records.len());
        let mut violations = Vec::new();
        for (index, text) in records.iter().enumerate() {
            let mut record: Map<String, Value> = serde_json::from_str(text)
                .map_err(|error| PluginError::Failed(format!("not a JSON object: {error}")))?;
            for field in self
                .required
                .iter()
                .filter(|field| is_empty(&record, field))
            {
                violations.push(RecordViolation {
                    index: index as u32,
                    field: Some(field.clone()),
                    message: "is required".into(),
                });
            }
            if self.drop_empty.iter().any(|field| is_empty(&record, field)) {
                continue;
            }
            for field in &self.mask {
                if let Some(value) = record.get_mut(field) {
                    *value = Value::String("***".into());
                }
            }
            kept.push(Value::Object(record).to_string());
        }
        Ok(Transformed {
            records: kept,
            violations,
        })
    }

    fn finish(&self) -> Result<(Vec<String>, Vec<Violation>), PluginError> {
        Ok((Vec::new(), Vec::new()))
    }
}

export!(Plugin);
