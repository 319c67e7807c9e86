//! `plugin new --lang rust|python|js` from an empty directory outside the repository: the
//! printed build command builds a component (toolchains from crates.io, PyPI and npm), and
//! `plugin run` with it rejects the bad sample by row and field and accepts the good one.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_export-service");

fn run(directory: &std::path::Path, program: &str, arguments: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .args(arguments)
        .current_dir(directory)
        // The project must build on its own, not inside this repository's cargo setup.
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap_or_else(|error| panic!("{program}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn new_project_builds_and_runs(language: &str) {
    let root = std::env::temp_dir().join(format!("plugin-new-{language}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&root).unwrap();
    let name = format!("acme-{language}");
    let (ok, printed) = run(&root, BINARY, &["plugin", "new", &name, "--lang", language]);
    assert!(ok, "{printed}");
    let project = root.join(&name);
    assert!(
        project.join("wit/plugin.wit").is_file(),
        "the contract is vendored"
    );
    // The lines after `cd`: the build command, then the `plugin run` to try.
    let lines: Vec<&str> = printed.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|line| line.starts_with("cd "))
        .expect(&printed);
    let build = lines[at + 1];
    let try_it = lines[at + 2]
        .strip_prefix("export-service ")
        .expect("a plugin run command");
    let (ok, built) = run(&project, "sh", &["-c", build]);
    assert!(ok, "{build}:\n{built}");

    let arguments: Vec<&str> = try_it.split_whitespace().collect();
    let (ok, report) = run(&project, BINARY, &arguments);
    assert!(!ok, "the bad sample is rejected: {report}");
    assert!(report.contains("row 2 field name: is required"), "{report}");
    assert!(
        report.contains("row 2 field amount: is not a number"),
        "{report}"
    );
    assert!(report.contains(&name), "{report}");
    let good: Vec<&str> = arguments
        .iter()
        .map(|argument| {
            if *argument == "bad.csv" {
                "sample.csv"
            } else {
                argument
            }
        })
        .collect();
    let (ok, report) = run(&project, BINARY, &good);
    assert!(ok, "the good sample is accepted: {report}");
    assert!(report.contains("rows:        2"), "{report}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn plugin_new_makes_a_python_project_that_builds_and_runs() {
    new_project_builds_and_runs("python");
}

#[test]
fn plugin_new_makes_a_javascript_project_that_builds_and_runs() {
    new_project_builds_and_runs("js");
}

#[test]
fn plugin_new_makes_a_rust_project_that_builds_and_runs() {
    new_project_builds_and_runs("rust");
}

/// The SDK's validator of PLUGINS.md ("Rust, streaming: the SDK"), in a project outside the
/// repository that takes the SDK as a git dependency of this repository: cargo fetches it
/// whole, so nothing needs copying, and the component it builds runs.
#[test]
fn the_streaming_sdk_builds_as_a_git_dependency_outside_the_repository() {
    let repository = env!("CARGO_MANIFEST_DIR");
    let root = std::env::temp_dir().join(format!("sdk-git-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            r#"[package]
name = "acme-streaming"
version = "0.3.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
export-plugin-sdk = {{ git = "file://{repository}" }}
"#
        ),
    )
    .unwrap();
    std::fs::write(root.join("src/lib.rs"), STREAMING_VALIDATOR).unwrap();
    std::fs::write(root.join("bad.csv"), "id,name\n1,a\n2,\n").unwrap();
    std::fs::write(root.join("config.json"), r#"{"required": ["name"]}"#).unwrap();

    let (ok, built) = run(
        &root,
        "cargo",
        &["build", "--release", "--target", "wasm32-wasip2"],
    );
    assert!(ok, "{built}");
    let component = "target/wasm32-wasip2/release/acme_streaming.wasm";
    let (ok, report) = run(
        &root,
        BINARY,
        &[
            "plugin",
            "run",
            component,
            "--input",
            "bad.csv",
            "--from",
            "csv",
            "--to",
            "json",
            "--config",
            "config.json",
        ],
    );
    assert!(!ok, "the bad sample is rejected: {report}");
    assert!(report.contains("row 2 field name: is required"), "{report}");
    assert!(report.contains("acme-streaming 0.3.0"), "{report}");
    let _ = std::fs::remove_dir_all(&root);
}

/// The SDK's reference validator, built here outside its workspace.
const STREAMING_VALIDATOR: &str = include_str!("../../plugins/required-fields/src/lib.rs");
