//! `export-service plugin new`: a record-mode validator project in Rust, Python or JavaScript
//! that builds outside this repository. The contract is vendored into it (`wit/plugin.wit`), and
//! it comes with a sample, a configuration and test cases for `plugin push --test tests`. The
//! validator is the reference one of `plugins/` (required and numeric fields), for the author
//! to change.

use std::path::{Path, PathBuf};

/// The languages a project can be made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Rust with `wit-bindgen`, built by cargo for `wasm32-wasip2`.
    Rust,
    /// Python, built by componentize-py (PyPI).
    Python,
    /// JavaScript, built by componentize-js (npm).
    JavaScript,
}

impl std::str::FromStr for Language {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "rust" => Ok(Self::Rust),
            "python" | "py" => Ok(Self::Python),
            "js" | "javascript" => Ok(Self::JavaScript),
            other => Err(format!("'{other}' is not rust, python or js")),
        }
    }
}

/// The componentize-py version projects pin (the one `scripts/build-plugins.sh` uses).
pub const COMPONENTIZE_PY: &str = "0.25.0";

/// A project to write: its files, and how to build and try it.
#[derive(Debug, Clone)]
pub struct Project {
    /// Files, by path relative to the project's directory.
    pub files: Vec<(PathBuf, String)>,
    /// The shell command that builds the component, run in the project's directory.
    pub build: String,
    /// Where the build leaves the component, relative to the project's directory.
    pub component: PathBuf,
}

/// Why a project cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot name a plugin.
    #[error(
        "'{0}' cannot name a plugin: use 1 to 64 lowercase letters, digits and '-', starting with a letter"
    )]
    BadName(String),
    /// The directory holds files already.
    #[error("{0} exists and is not empty; name a new directory")]
    NotEmpty(PathBuf),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

const WIT: &str = include_str!("../../wit/plugin.wit");
const PYTHON_APP: &str = include_str!("../../plugins/python/required-fields/app.py");
const PYTHON_RECORDS: &str = include_str!("../../plugins/python/required-fields/records.py");
const JS_APP: &str = include_str!("../../plugins/js/required-fields/app.js");
const RUST_LIB: &str = include_str!("rust_lib.rs.txt");
const CARGO_TOML: &str = include_str!("Cargo.toml.txt");
const PACKAGE_JSON: &str = include_str!("package.json.txt");

const SAMPLE: &str = "id,name,amount\n1,Ada,12.5\n2,Grace,7\n";
const BAD: &str = "id,name,amount\n1,Ada,12.5\n2,,seven\n";
const CONFIG: &str = "{\"required\": [\"id\", \"name\"], \"numeric\": [\"amount\"]}\n";

fn plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The project of a validator named `name` in `language`.
pub fn project(language: Language, name: &str) -> Result<Project, ScaffoldError> {
    if !plain_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let file = name.replace('-', "_");
    let config: serde_json::Value = serde_json::from_str(CONFIG).expect("a JSON object");
    let case = |expect: serde_json::Value, input: &str| {
        let case = serde_json::json!({
            "input_file": format!("../{input}"),
            "from": "csv",
            "to": "json",
            "config": config,
            "expect": expect,
        });
        format!("{case:#}\n")
    };
    let mut files = vec![
        ("wit/plugin.wit".into(), WIT.to_owned()),
        ("sample.csv".into(), SAMPLE.to_owned()),
        ("bad.csv".into(), BAD.to_owned()),
        ("config.json".into(), CONFIG.to_owned()),
        (
            "tests/accepts-the-sample.json".into(),
            case(serde_json::json!({"outcome": "accepted"}), "sample.csv"),
        ),
        (
            "tests/rejects-bad-rows.json".into(),
            case(
                serde_json::json!({"outcome": "violations", "violations": [
                    {"row": 2, "field": "name"}, {"row": 2, "field": "amount"}
                ]}),
                "bad.csv",
            ),
        ),
    ];
    let (build, component) = match language {
        Language::Rust => {
            files.push(("Cargo.toml".into(), CARGO_TOML.replace("__NAME__", name)));
            files.push(("src/lib.rs".into(), RUST_LIB.replace("__NAME__", name)));
            files.push((".gitignore".into(), "target/\n".into()));
            (
                "cargo build --release --target wasm32-wasip2 --target-dir target".to_owned(),
                PathBuf::from(format!("target/wasm32-wasip2/release/{file}.wasm")),
            )
        }
        Language::Python => {
            let named = |source: &str| source.replace("required-fields-py", name);
            files.push(("app.py".into(), named(PYTHON_APP)));
            files.push(("records.py".into(), named(PYTHON_RECORDS)));
            files.push((".gitignore".into(), ".venv/\n__pycache__/\n*.wasm\n".into()));
            (
                format!(
                    "python3 -m venv .venv && .venv/bin/pip install -q componentize-py=={COMPONENTIZE_PY} \
                     && .venv/bin/componentize-py -d wit -w record-plugin componentize app -o {file}.wasm"
                ),
                PathBuf::from(format!("{file}.wasm")),
            )
        }
        Language::JavaScript => {
            files.push(("app.js".into(), JS_APP.replace("required-fields-js", name)));
            files.push((
                "package.json".into(),
                PACKAGE_JSON
                    .replace("__NAME__", name)
                    .replace("__FILE__", &file),
            ));
            files.push((".gitignore".into(), "node_modules/\n*.wasm\n".into()));
            (
                "npm install --no-audit --no-fund && npm run build".to_owned(),
                PathBuf::from(format!("{file}.wasm")),
            )
        }
    };
    let readme = format!(
        "# {name}\n\nA record-mode export-service validator: the service splits each upload into \
         records and this plugin reports the rows that leave a `required` field empty or put a \
         non-number in a `numeric` one (see `config.json`).\n\n```sh\n{build}\n\
         export-service plugin run {component} --input bad.csv --to json --config config.json\n\
         export-service plugin push {component} --test tests\n```\n\n`wit/plugin.wit` is the \
         contract this project was made against.\n",
        component = component.display()
    );
    files.push(("README.md".into(), readme));
    Ok(Project {
        files,
        build,
        component,
    })
}

/// Writes `project` into `directory` (created; refused when it holds files already).
pub fn write(project: &Project, directory: &Path) -> Result<(), ScaffoldError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ScaffoldError::Write { path, source }
    };
    if std::fs::read_dir(directory).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::NotEmpty(directory.to_owned()));
    }
    for (relative, contents) in &project.files {
        let path = directory.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_error(parent))?;
        }
        std::fs::write(&path, contents).map_err(write_error(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain() {
        for bad in [
            "",
            "Upper",
            "9lives",
            "with space",
            "../up",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(project(Language::Rust, bad), Err(ScaffoldError::BadName(_))),
                "{bad}"
            );
        }
        assert!(project(Language::Python, "my-check-2").is_ok());
    }

    #[test]
    fn every_project_vendors_the_contract_and_names_its_plugin() {
        for (language, source) in [
            (Language::Rust, "Cargo.toml"),
            (Language::Python, "app.py"),
            (Language::JavaScript, "app.js"),
        ] {
            let project = project(language, "acme-check").unwrap();
            let file = |name: &str| {
                project
                    .files
                    .iter()
                    .find(|(path, _)| path == Path::new(name))
                    .map(|(_, text)| text.clone())
                    .unwrap_or_else(|| panic!("{language:?} has no {name}"))
            };
            assert_eq!(file("wit/plugin.wit"), WIT);
            assert!(file(source).contains("acme-check"), "{language:?}");
            let world_named = project.build.contains("record-plugin")
                || project.files.iter().any(|(path, text)| {
                    path != Path::new("wit/plugin.wit") && text.contains("record-plugin")
                });
            assert!(world_named, "{language:?} builds the record-plugin world");
            let case: serde_json::Value =
                serde_json::from_str(&file("tests/rejects-bad-rows.json")).unwrap();
            assert_eq!(case["expect"]["violations"][0]["row"], 2);
        }
    }

    #[test]
    fn a_directory_with_files_is_not_written_into() {
        let directory = std::env::temp_dir().join(format!("scaffold-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join("keep.txt"), "mine").unwrap();
        let project = project(Language::Python, "x").unwrap();
        assert!(matches!(
            write(&project, &directory),
            Err(ScaffoldError::NotEmpty(_))
        ));
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
