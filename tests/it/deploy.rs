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

/// The names a compose service's `environment` sets (a mapping or a list of `NAME=value`).
fn compose_environment(service: &Value) -> Vec<String> {
    match service.get("environment") {
        Some(Value::Mapping(mapping)) => mapping
            .keys()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::Sequence(entries)) => entries
            .iter()
            .filter_map(Value::as_str)
            .map(|entry| entry.split('=').next().unwrap_or(entry).to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_compose_file_sets_only_settings_the_service_knows() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml");
    let compose: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let services = compose["services"].as_mapping().expect("services");
    for wanted in [
        "postgres",
        "kafka",
        "minio",
        "export-service",
        "demo-source",
    ] {
        assert!(services.contains_key(wanted), "no {wanted} service");
    }
    let service = &services["export-service"];
    let names = compose_environment(service);
    assert!(names.len() >= 15, "{names:?}");
    assert_eq!(unknown(&names), Vec::<&String>::new());
    // The published ports are the service's listeners.
    let ports: Vec<&str> = service["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(ports, ["8000:8000", "10000:10000", "9000:9000"]);
    // Every service running our image runs a command the binary has.
    for (name, service) in services {
        if service["image"].as_str() == Some("export-service:dev")
            && let Some(command) = service["command"].as_sequence()
        {
            let first = command[0].as_str().unwrap();
            assert!(
                ["serve", "demo", "migrate", "clean", "plugin"].contains(&first),
                "{name:?} runs {first}"
            );
        }
    }
}

#[test]
fn a_compose_environment_list_is_read_too() {
    let service: Value =
        serde_yaml::from_str("environment: [PUBLIC_PORT=8000, PUBLIK_PORT=1]").unwrap();
    let names = compose_environment(&service);
    assert_eq!(names, ["PUBLIC_PORT", "PUBLIK_PORT"]);
    assert_eq!(unknown(&names), ["PUBLIK_PORT"]);
}

#[test]
fn the_clowdapp_template_declares_every_parameter_it_uses() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/clowder/clowdapp.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let template: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(template["kind"].as_str(), Some("Template"));
    let app = &template["objects"][0];
    assert_eq!(app["kind"].as_str(), Some("ClowdApp"));
    assert_eq!(
        app["spec"]["kafkaTopics"][0]["topicName"].as_str(),
        Some("platform.export.requests")
    );
    let declared: std::collections::BTreeSet<&str> = template["parameters"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|parameter| parameter["name"].as_str())
        .collect();
    let mut used = std::collections::BTreeSet::new();
    for (index, _) in text.match_indices("${") {
        let rest = text[index + 2..].trim_start_matches('{');
        let end = rest.find('}').unwrap();
        used.insert(&rest[..end]);
    }
    assert_eq!(declared, used, "declared vs used parameters");
}
