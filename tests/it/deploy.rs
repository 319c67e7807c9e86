//! The deployment artefacts stay in step with the service: every environment name that a file
//! under `deploy/` sets (container `env` entries, ConfigMap keys) is a setting the service knows,
//! so a renamed or misspelt setting fails CI instead of being silently ignored; each listener has
//! its own Service and NetworkPolicy behind a default deny; the worst-case memory of the settings
//! the manifests give fits their container's memory limit; and the Grafana dashboard queries only
//! metrics the service exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use export_service::config::{Config, KNOWN_SETTINGS, MemoryBudget, Settings};
use export_service::metrics::Metrics;
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
        "demo-tenant",
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
    // Every service running our image runs a binary the image installs (the entrypoint, the
    // service's, unless it names another) with a subcommand that binary has.
    let dockerfile = std::fs::read_to_string(repository_path("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("ENTRYPOINT [\"{SERVICE_BINARY}\"]")),
        "the image's entrypoint is not {SERVICE_BINARY}"
    );
    for (name, service) in services {
        if service["image"].as_str() != Some("export-service:dev") {
            continue;
        }
        let binary = service["entrypoint"][0].as_str().unwrap_or(SERVICE_BINARY);
        let (_, subcommands) = IMAGE_BINARIES
            .iter()
            .find(|(path, _)| *path == binary)
            .unwrap_or_else(|| panic!("{name:?} runs {binary}, which the image does not have"));
        let file = binary.rsplit('/').next().unwrap();
        assert!(
            dockerfile.contains(&format!("target/release/{file}")),
            "the Dockerfile does not take {file} from the build"
        );
        assert!(
            dockerfile
                .lines()
                .any(|line| line.starts_with("COPY --from=build ")
                    && line.ends_with(&format!(" {binary}"))),
            "the Dockerfile does not install {binary}"
        );
        if let Some(command) = service["command"].as_sequence() {
            let first = command[0].as_str().unwrap();
            assert!(
                subcommands.contains(&first),
                "{name:?} runs {binary} {first}"
            );
        }
    }
    // The demo services run the demo's two roles.
    for (name, role) in [("demo-source", "source"), ("demo-tenant", "export")] {
        let service = &services[name];
        assert_eq!(
            service["entrypoint"][0].as_str(),
            Some(DEMO_BINARY),
            "{name}"
        );
        assert_eq!(service["command"][0].as_str(), Some(role), "{name}");
    }
}

/// Where the image installs the service's binary, its entrypoint.
const SERVICE_BINARY: &str = "/usr/local/bin/export-service";
/// Where the image installs the demo's binary (crates/export-demo).
const DEMO_BINARY: &str = "/usr/local/bin/export-demo";

/// The binaries of our image and their subcommands.
const IMAGE_BINARIES: [(&str, &[&str]); 2] = [
    (SERVICE_BINARY, &["serve", "migrate", "clean", "plugin"]),
    (DEMO_BINARY, &["source", "export"]),
];

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

const MIB: u64 = 1024 * 1024;

fn repository_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The documents of a multi-document YAML file.
fn documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repository_path(relative)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|object| object["kind"].as_str() == Some(kind))
        .collect()
}

/// Whether `selector` (a `matchLabels` mapping) selects a pod labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(wanted) = selector.as_mapping() else {
        return false;
    };
    !wanted.is_empty()
        && wanted
            .iter()
            .all(|(key, value)| labels.get(key).is_some_and(|label| label == value))
}

/// A container's ports: name → number.
fn container_ports(container: &Value) -> BTreeMap<String, u64> {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|port| {
            (
                port["name"].as_str().unwrap().to_owned(),
                port["containerPort"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The container port a Service or NetworkPolicy port refers to, by name or number.
fn resolve(port: &Value, ports: &BTreeMap<String, u64>) -> Option<u64> {
    match port {
        Value::String(name) => ports.get(name).copied(),
        Value::Number(number) => number.as_u64().filter(|n| ports.values().any(|p| p == n)),
        _ => None,
    }
}

/// Checks that each of `ports` is reachable only through a NetworkPolicy of its own that selects
/// the pod, names the port and its sources, behind a policy that denies everything else.
fn assert_one_policy_per_port(
    policies: &[&Value],
    pod_labels: &Value,
    ports: &BTreeMap<String, u64>,
) {
    let selecting: Vec<&&Value> = policies
        .iter()
        .filter(|policy| selects(&policy["spec"]["podSelector"]["matchLabels"], pod_labels))
        .collect();
    let deny_all = selecting.iter().any(|policy| {
        let spec = &policy["spec"];
        spec["policyTypes"]
            .as_sequence()
            .is_some_and(|types| types.iter().any(|kind| kind.as_str() == Some("Ingress")))
            && spec["ingress"].as_sequence().is_none_or(Vec::is_empty)
    });
    assert!(deny_all, "no policy denies ingress by default");
    let mut covered = BTreeMap::<u64, Vec<String>>::new();
    for policy in &selecting {
        let name = policy["metadata"]["name"].as_str().unwrap();
        for rule in policy["spec"]["ingress"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            // A rule without sources admits every peer; without ports, every port.
            let sources = rule["from"].as_sequence().map_or(0, Vec::len);
            assert!(sources > 0, "{name}: a rule admits every peer");
            let rule_ports = rule["ports"].as_sequence().map_or(&[][..], Vec::as_slice);
            assert!(!rule_ports.is_empty(), "{name}: a rule opens every port");
            for port in rule_ports {
                let number = resolve(&port["port"], ports)
                    .unwrap_or_else(|| panic!("{name}: {:?} is not a pod port", port["port"]));
                covered.entry(number).or_default().push(name.to_owned());
            }
        }
    }
    let expected: BTreeSet<u64> = ports.values().copied().collect();
    assert_eq!(
        covered.keys().copied().collect::<BTreeSet<_>>(),
        expected,
        "ports with a policy"
    );
    for (port, names) in &covered {
        assert_eq!(names.len(), 1, "port {port} is opened by {names:?}");
    }
    let distinct: BTreeSet<&String> = covered.values().flatten().collect();
    assert_eq!(
        distinct.len(),
        ports.len(),
        "one policy per port: {covered:?}"
    );
}

#[test]
fn each_listener_has_its_own_service_and_network_policy() {
    let objects = documents("deploy/kubernetes/export-service.yaml");
    let deployment = of_kind(&objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    let ports = container_ports(&pod["spec"]["containers"][0]);
    assert_eq!(
        ports.values().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([8000, 9000, 10000])
    );

    let services = of_kind(&objects, "Service");
    assert_eq!(services.len(), 3, "one Service per listener");
    let mut exposed = BTreeSet::new();
    for service in &services {
        let name = service["metadata"]["name"].as_str().unwrap();
        assert!(
            selects(&service["spec"]["selector"], pod_labels),
            "{name} does not select the pods"
        );
        let service_ports = service["spec"]["ports"].as_sequence().unwrap();
        assert_eq!(service_ports.len(), 1, "{name} exposes more than one port");
        let target = resolve(&service_ports[0]["targetPort"], &ports)
            .unwrap_or_else(|| panic!("{name}: its target is not a pod port"));
        assert_eq!(service_ports[0]["port"].as_u64(), Some(target), "{name}");
        exposed.insert(target);
    }
    assert_eq!(exposed, ports.values().copied().collect());

    assert_one_policy_per_port(&of_kind(&objects, "NetworkPolicy"), pod_labels, &ports);
}

#[test]
fn the_clowder_template_restricts_each_port_of_clowders_service() {
    let template = &documents("deploy/clowder/clowdapp.yaml")[0];
    let objects = template["objects"].as_sequence().unwrap();
    let app = &objects[0];
    let deployment = &app["spec"]["deployments"][0];
    let web = &deployment["webServices"];
    for listener in ["public", "private", "metrics"] {
        assert_eq!(web[listener]["enabled"].as_bool(), Some(true), "{listener}");
    }
    // Clowder labels the pods `pod: <app>-<deployment>` and names the ports `web`, `private`
    // and `metrics` (its web and metrics providers).
    let pod = format!(
        "{}-{}",
        app["metadata"]["name"].as_str().unwrap(),
        deployment["name"].as_str().unwrap()
    );
    let pod_labels: Value = serde_yaml::from_str(&format!("{{pod: {pod}}}")).unwrap();
    let ports = BTreeMap::from([
        ("web".to_owned(), 8000),
        ("private".to_owned(), 10000),
        ("metrics".to_owned(), 9000),
    ]);
    assert_one_policy_per_port(&of_kind(objects, "NetworkPolicy"), &pod_labels, &ports);
}

#[test]
fn a_policy_that_admits_every_peer_or_misses_a_port_is_caught() {
    let ports = BTreeMap::from([("public".to_owned(), 8000), ("metrics".to_owned(), 9000)]);
    let labels: Value = serde_yaml::from_str("{app: x}").unwrap();
    let policy = |text: &str| -> Value { serde_yaml::from_str(text).unwrap() };
    let deny = policy(
        "{metadata: {name: deny}, spec: {podSelector: {matchLabels: {app: x}}, policyTypes: [Ingress]}}",
    );
    let public = policy(
        "{metadata: {name: public}, spec: {podSelector: {matchLabels: {app: x}}, ingress: [{from: [{namespaceSelector: {}}], ports: [{port: public}]}]}}",
    );
    let open = policy(
        "{metadata: {name: open}, spec: {podSelector: {matchLabels: {app: x}}, ingress: [{ports: [{port: 9000}]}]}}",
    );
    let metrics = policy(
        "{metadata: {name: metrics}, spec: {podSelector: {matchLabels: {app: x}}, ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 9000}]}]}}",
    );
    let check = |policies: Vec<&Value>| {
        std::panic::catch_unwind(|| assert_one_policy_per_port(&policies, &labels, &ports)).is_ok()
    };
    assert!(check(vec![&deny, &public, &metrics]));
    assert!(!check(vec![&public, &metrics]), "no default deny");
    assert!(!check(vec![&deny, &public]), "metrics without a policy");
    assert!(
        !check(vec![&deny, &public, &open]),
        "a rule without sources"
    );
    let every_port = policy(
        "{metadata: {name: every-port}, spec: {podSelector: {matchLabels: {app: x}}, ingress: [{from: [{namespaceSelector: {}}]}]}}",
    );
    assert!(
        !check(vec![&deny, &public, &metrics, &every_port]),
        "a rule without ports"
    );
    let twice = policy(
        "{metadata: {name: twice}, spec: {podSelector: {matchLabels: {app: x}}, ingress: [{from: [{podSelector: {}}], ports: [{port: 8000}]}]}}",
    );
    assert!(
        !check(vec![&deny, &public, &metrics, &twice]),
        "a port opened by two policies"
    );
}

/// Bytes of a Kubernetes quantity such as `512Mi` or `1Gi`.
fn quantity_bytes(quantity: &str) -> u64 {
    let units = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1u64 << 40),
    ];
    for (suffix, factor) in units {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<u64>().unwrap() * factor;
        }
    }
    quantity.parse().unwrap()
}

/// The settings a container's environment gives: its ConfigMaps' data, then its `env` values
/// (credentials from Secrets do not bear on memory and are left out).
fn container_settings(container: &Value, config_maps: &[&Value]) -> Vec<(String, String)> {
    let mut settings = Vec::new();
    for source in container["envFrom"].as_sequence().into_iter().flatten() {
        let name = source["configMapRef"]["name"].as_str().unwrap();
        let map = config_maps
            .iter()
            .find(|map| map["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no ConfigMap {name}"));
        for (key, value) in map["data"].as_mapping().unwrap() {
            settings.push((
                key.as_str().unwrap().to_owned(),
                value.as_str().unwrap().to_owned(),
            ));
        }
    }
    for entry in container["env"].as_sequence().into_iter().flatten() {
        if let Some(value) = entry["value"].as_str() {
            settings.push((entry["name"].as_str().unwrap().to_owned(), value.to_owned()));
        }
    }
    settings
}

/// Fails unless the worst case of `settings` leaves a tenth of `limit` to spare.
fn assert_fits(what: &str, settings: Vec<(String, String)>, limit: u64) {
    let config = Config::from_settings(&Settings::from_pairs(settings))
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    let budget = MemoryBudget::worst_case(&config);
    let rows: Vec<String> = budget
        .terms
        .iter()
        .map(|term| format!("{}: {} = {} MiB", term.what, term.formula, term.bytes / MIB))
        .collect();
    assert!(
        budget.total() * 10 <= limit * 9,
        "{what}: the worst case, {} MiB, leaves less than a tenth of the {} MiB limit:\n{}",
        budget.total() / MIB,
        limit / MIB,
        rows.join("\n")
    );
}

#[test]
fn the_worst_case_memory_of_each_manifest_fits_its_container() {
    let objects = documents("deploy/kubernetes/export-service.yaml");
    let config_maps = of_kind(&objects, "ConfigMap");
    let container =
        &of_kind(&objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    let limit = quantity_bytes(container["resources"]["limits"]["memory"].as_str().unwrap());
    assert_fits(
        "deploy/kubernetes",
        container_settings(container, &config_maps),
        limit,
    );

    // The Clowder template with its parameters' defaults.
    let template = &documents("deploy/clowder/clowdapp.yaml")[0];
    let parameters: BTreeMap<&str, &str> = template["parameters"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|parameter| Some((parameter["name"].as_str()?, parameter["value"].as_str()?)))
        .collect();
    let substitute = |text: &str| {
        let mut text = text.to_owned();
        for (name, value) in &parameters {
            text = text.replace(&format!("${{{name}}}"), value);
        }
        text
    };
    let pod_spec = &template["objects"][0]["spec"]["deployments"][0]["podSpec"];
    let settings = container_settings(pod_spec, &[])
        .into_iter()
        .map(|(name, value)| (name, substitute(&value)))
        .collect();
    let limit = quantity_bytes(&substitute(
        pod_spec["resources"]["limits"]["memory"].as_str().unwrap(),
    ));
    assert_fits("deploy/clowder", settings, limit);
}

#[test]
fn the_defaults_fit_the_smallest_container_the_manifests_give() {
    // The manifests leave the sizing settings at their defaults; raising one must fail here even
    // if a manifest were to pin the old value.
    assert_fits("defaults", Vec::new(), 512 * MIB);
}

#[test]
fn raising_a_default_sizing_setting_past_the_limit_is_caught() {
    let result = std::panic::catch_unwind(|| {
        assert_fits(
            "more slots",
            vec![("MAX_CONCURRENT_UPLOADS".into(), "16".into())],
            512 * MIB,
        );
    });
    assert!(result.is_err());
}

#[test]
fn the_operations_guide_shows_the_default_sum() {
    let config = Config::from_settings(&Settings::default()).unwrap();
    let budget = MemoryBudget::worst_case(&config);
    let guide = std::fs::read_to_string(repository_path("docs/OPERATIONS.md")).unwrap();
    for term in &budget.terms {
        let row = format!(
            "| {} | {} | {} MiB |",
            term.what,
            term.formula,
            term.bytes / MIB
        );
        assert!(
            guide.contains(&row),
            "docs/OPERATIONS.md lacks the row\n{row}"
        );
    }
    let total = format!("| **worst case** | | **{} MiB** |", budget.total() / MIB);
    assert!(guide.contains(&total), "docs/OPERATIONS.md lacks\n{total}");
}

/// The metric names a PromQL expression reads: identifiers that are not functions, keywords,
/// label names or matchers, grouping labels, durations or dashboard variables.
fn metric_names(expression: &str) -> BTreeSet<String> {
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
    let characters: Vec<char> = expression.chars().collect();
    let skip_to = |start: usize, close: char| {
        let mut index = start + 1;
        while index < characters.len() && characters[index] != close {
            if matches!(characters[index], '"' | '\'' | '`') {
                let quote = characters[index];
                index += 1;
                while index < characters.len() && characters[index] != quote {
                    index += if characters[index] == '\\' { 2 } else { 1 };
                }
            }
            index += 1;
        }
        index + 1
    };
    let is_word =
        |character: char| character.is_ascii_alphanumeric() || matches!(character, '_' | ':');
    let mut names = BTreeSet::new();
    let mut index = 0;
    while index < characters.len() {
        let character = characters[index];
        if matches!(character, '"' | '\'' | '`') {
            index = skip_to(index, character);
        } else if character == '{' {
            index = skip_to(index, '}');
        } else if character == '[' {
            index = skip_to(index, ']');
        } else if character == '$' || character.is_ascii_digit() || character == '.' {
            // A variable (`$job`, `$__rate_interval`, `${name}`) or a number or duration.
            index += 1;
            if characters.get(index) == Some(&'{') {
                index = skip_to(index, '}');
            }
            while index < characters.len() && is_word(characters[index]) {
                index += 1;
            }
        } else if is_word(character) {
            let start = index;
            while index < characters.len() && is_word(characters[index]) {
                index += 1;
            }
            let word: String = characters[start..index].iter().collect();
            let mut next = index;
            while next < characters.len() && characters[next].is_whitespace() {
                next += 1;
            }
            let following: String = characters[next..]
                .iter()
                .take_while(|character| is_word(**character))
                .collect();
            // `sum by (x) (…)`: an aggregation with its grouping first.
            let called = characters.get(next) == Some(&'(')
                || (matches!(following.as_str(), "by" | "without")
                    && !GROUPING.contains(&word.as_str()));
            if GROUPING.contains(&word.as_str()) && called {
                index = skip_to(next, ')');
            } else if word == "label_values" && called {
                // Grafana's `label_values(metric, label)`: only the first argument is a metric.
                index = skip_to(next, ')');
                let arguments: String = characters[next + 1..index - 1].iter().collect();
                if let Some((metric, _label)) = arguments.rsplit_once(',') {
                    names.extend(metric_names(metric));
                }
            } else if !called && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            index += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"sum by (le, code) (rate(a_bucket{job=~"$job", x="}{[b]"}[$__rate_interval])) / on (job) group_left (x) b_total offset 5m > bool 0.5 or vector($memory_limit) + label_values(c, job) - 1e3"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["a_bucket".to_owned(), "b_total".to_owned(), "c".to_owned()])
    );
}

/// Every query of the dashboard: panel targets (rows included) and templating queries.
fn dashboard_queries(value: &serde_json::Value, queries: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(object) => {
            for key in ["expr", "definition"] {
                if let Some(serde_json::Value::String(query)) = object.get(key) {
                    queries.push(query.clone());
                }
            }
            for value in object.values() {
                dashboard_queries(value, queries);
            }
        }
        serde_json::Value::Array(values) => {
            for value in values {
                dashboard_queries(value, queries);
            }
        }
        _ => {}
    }
}

/// The names the service's `/metrics` exposes, with every labelled metric touched once.
fn exported_metric_names() -> BTreeSet<String> {
    let metrics = Metrics::new();
    metrics
        .http_requests
        .with_label_values(&["200", "GET"])
        .inc();
    metrics
        .http_response_time
        .with_label_values(&["GET"])
        .observe(0.1);
    metrics.exports_created.with_label_values(&["csv"]).inc();
    metrics.kafka_produced.with_label_values(&["t"]).inc();
    metrics
        .kafka_produce_failures
        .with_label_values(&["t"])
        .inc();
    metrics
        .publish_seconds
        .with_label_values(&["t"])
        .observe(0.1);
    metrics.internal_requests.with_label_values(&["/app"]).inc();
    metrics
        .upload_sizes
        .with_label_values(&["app"])
        .observe(1.0);
    metrics
        .plugin_invocations
        .with_label_values(&["p", "1"])
        .inc();
    metrics
        .plugin_failures
        .with_label_values(&["p", "1", "crashed"])
        .inc();
    metrics
        .plugin_seconds
        .with_label_values(&["p", "1"])
        .observe(0.1);
    metrics
        .plugin_binding_info
        .with_label_values(&["a", "r", "application", "p", "1"])
        .set(1);
    metrics
        .plugin_load_failures
        .with_label_values(&["p", "1"])
        .inc();
    metrics.refusals.with_label_values(&["upload_slots"]).inc();
    metrics
        .upload_slots_in_use
        .with_label_values(&["app"])
        .set(1);
    metrics.store_retries.with_label_values(&["put"]).inc();
    metrics
        .render()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_dashboard_queries_only_metrics_the_service_exports() {
    let text =
        std::fs::read_to_string(repository_path("deploy/grafana/export-service.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Importable: the data source is an input, and every panel and query uses it.
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    let mut ids = BTreeSet::new();
    for panel in &panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(
                target["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{}",
                panel["title"]
            );
        }
    }

    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|query| metric_names(query))
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .map_or(name.clone(), str::to_owned)
        })
        .collect();
    let exported = exported_metric_names();
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries {unknown:?}, which the service does not export"
    );

    // Each fault the operator must see has a panel.
    for wanted in [
        "export_service_outbox_pending",
        "export_service_outbox_oldest_age_seconds",
        "export_service_kafka_produce_failures",
        "export_service_packaging_retries_total",
        "export_service_packaging_failures_total",
        "export_service_packaging_oldest_waiting_seconds",
        "export_service_store_retries_total",
        "export_service_upload_slots_in_use",
        "export_service_plugin_failures_total",
        "export_service_refusals_total",
        "export_service_http_requests_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(wanted), "no panel shows {wanted}");
    }
}
