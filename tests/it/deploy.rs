//! The deployment artefacts stay in step with the configuration: every environment name that a
//! file under `deploy/` sets (container `env` entries, ConfigMap keys) is a setting the service
//! knows, so a renamed or misspelt setting fails CI instead of being silently ignored.

use export_service::config::KNOWN_SETTINGS;
use serde::Deserialize as _;
use serde_yaml::Value;

/// Collects the environment names `document` sets.
fn environment_names(document: &Value, names: &mut Vec<String>) {
    match document {
        Value::Mapping(mapping) => {
            if mapping.get("kind").and_then(Value::as_str) == Some("ConfigMap")
                && let Some(Value::Mapping(data)) = mapping.get("data")
            {
                names.extend(data.keys().filter_map(Value::as_str).map(str::to_owned));
            }
            if let Some(Value::Sequence(entries)) = mapping.get("env") {
                names.extend(
                    entries
                        .iter()
                        .filter_map(|entry| entry.get("name")?.as_str())
                        .map(str::to_owned),
                );
            }
            for value in mapping.values() {
                environment_names(value, names);
            }
        }
        Value::Sequence(values) => {
            for value in values {
                environment_names(value, names);
            }
        }
        _ => {}
    }
}

/// The names among `names` the service does not know.
fn unknown(names: &[String]) -> Vec<&String> {
    names
        .iter()
        .filter(|name| !KNOWN_SETTINGS.contains(&name.as_str()))
        .collect()
}

fn yaml_files(directory: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(directory).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, files);
        } else if matches!(
            path.extension().and_then(|extension| extension.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
}

#[test]
fn every_environment_name_in_the_manifests_is_a_setting() {
    let mut files = Vec::new();
    yaml_files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"),
        &mut files,
    );
    assert!(!files.is_empty(), "no manifests found");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut names = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{}: {error}", file.display()));
            environment_names(&value, &mut names);
        }
        assert!(names.len() >= 10, "{}: only {names:?}", file.display());
        assert_eq!(
            unknown(&names),
            Vec::<&String>::new(),
            "{} sets names the service does not know",
            file.display()
        );
    }
}

#[test]
fn a_misspelt_setting_is_caught() {
    let document: Value = serde_yaml::from_str(
        "spec: {containers: [{env: [{name: PUBLIC_PORT, value: '8000'}, {name: PUBLIC_PROT, value: '1'}]}]}",
    )
    .unwrap();
    let mut names = Vec::new();
    environment_names(&document, &mut names);
    assert_eq!(names, ["PUBLIC_PORT", "PUBLIC_PROT"]);
    assert_eq!(unknown(&names), ["PUBLIC_PROT"]);
}
