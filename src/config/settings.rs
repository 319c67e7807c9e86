//! The raw settings the typed configuration is built from: environment variables layered over an
//! optional TOML file whose keys are the same variable names.

use std::collections::BTreeMap;
use std::path::Path;

use super::{ConfigError, FileError};

/// Flat `NAME → value` settings. Later layers override earlier ones.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    /// Settings from an iterator of `(name, value)` pairs, e.g. `std::env::vars()`.
    /// Only names the service knows are kept, so unrelated environment never matters.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let values = pairs
            .into_iter()
            .filter(|(name, _)| super::KNOWN_SETTINGS.contains(&name.as_str()))
            .collect();
        Self { values }
    }

    /// Reads a TOML config file whose top-level keys are setting names (`PUBLIC_PORT = 8000`).
    /// Tables and arrays are passed on as JSON text, so `EXPORT_ENABLE_APPS` can be written as a
    /// TOML table. Unknown keys are refused: a typo in a config file should not pass silently.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        super::parse_config_file(path, Self::from_toml_str)
    }

    fn from_toml_str(text: &str) -> Result<Self, FileError> {
        // The parser's message quotes the offending line, which may hold a secret: report where
        // the error is, not what the line says.
        let table: toml::Table = toml::from_str(text).map_err(|error| {
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            FileError::Toml { line }
        })?;
        let mut values = BTreeMap::new();
        for (name, value) in table {
            if !super::KNOWN_SETTINGS.contains(&name.as_str()) {
                return Err(FileError::UnknownSetting(name));
            }
            let text = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Float(number) => number.to_string(),
                toml::Value::Boolean(flag) => flag.to_string(),
                other => toml_to_json(other).to_string(),
            };
            values.insert(name, text);
        }
        Ok(Self { values })
    }

    /// These settings with `overrides` applied on top.
    pub fn overridden_by(mut self, overrides: Settings) -> Self {
        self.values.extend(overrides.values);
        self
    }

    /// These settings without `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.values.remove(name);
        self
    }

    /// The value of `name`, if set and not blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        debug_assert!(
            super::KNOWN_SETTINGS.contains(&name),
            "setting {name} is missing from KNOWN_SETTINGS"
        );
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    }
}

fn toml_to_json(value: toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(text) => serde_json::Value::String(text),
        toml::Value::Integer(number) => number.into(),
        toml::Value::Float(number) => serde_json::Number::from_f64(number)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        toml::Value::Boolean(flag) => flag.into(),
        toml::Value::Datetime(datetime) => datetime.to_string().into(),
        toml::Value::Array(items) => items.into_iter().map(toml_to_json).collect(),
        toml::Value::Table(table) => table
            .into_iter()
            .map(|(key, value)| (key, toml_to_json(value)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_become_strings_and_tables_become_json() {
        let settings = Settings::from_toml_str(
            "PUBLIC_PORT = 8100\nDEBUG = true\n[EXPORT_ENABLE_APPS]\napp = [\"a\", \"b\"]\n",
        )
        .unwrap();
        assert_eq!(settings.get("PUBLIC_PORT"), Some("8100"));
        assert_eq!(settings.get("DEBUG"), Some("true"));
        assert_eq!(
            settings.get("EXPORT_ENABLE_APPS"),
            Some(r#"{"app":["a","b"]}"#)
        );
    }

    #[test]
    fn parse_errors_do_not_quote_the_file() {
        let error = Settings::from_toml_str("PUBLIC_PORT = 1\nPGSQL_PASSWORD = hunter2\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let error = Settings::from_toml_str("PUBLC_PORT = 1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("PUBLC_PORT"), "{error}");
    }

    #[test]
    fn environment_overrides_file_and_ignores_unrelated_names() {
        let file = Settings::from_toml_str("PUBLIC_PORT = 8100\nMETRICS_PORT = 9100").unwrap();
        let env = Settings::from_pairs([
            ("PUBLIC_PORT".to_string(), "8200".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ]);
        let merged = file.overridden_by(env);
        assert_eq!(merged.get("PUBLIC_PORT"), Some("8200"));
        assert_eq!(merged.get("METRICS_PORT"), Some("9100"));
        assert!(!merged.values.contains_key("PATH"));
    }
}
