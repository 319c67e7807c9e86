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
