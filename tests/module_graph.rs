//! The service's top-level modules (`src/<module>` or `src/<module>.rs`) depend on each other
//! one way: this test reads every `crate::…` path in `src/` and fails on a cycle, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level modules: every entry of `src/` except the crate roots.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .expect("src/ is readable")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir() || path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "lib" && name != "main")
        .collect()
}

/// The first identifiers after each `crate::` in `line`, including those of a `crate::{a, b}`
/// group (nested groups name items, not modules, so only the group's top level counts).
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(ch);
                }
            }
            found.push(item);
        } else {
            found.push(rest.to_owned());
        }
    }
    found
        .into_iter()
        .map(|path| {
            path.trim_start()
                .chars()
                .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                .collect()
        })
        .collect()
}

/// Edges `module → module it names`, read from the code (comment lines skipped: doc links
/// are not dependencies).
fn module_graph(src: &Path) -> Graph {
    let modules = top_level_modules(src);
    let mut graph = Graph::new();
    for entry in walkdir(src) {
        let relative = entry.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let from = Path::new(first)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if !modules.contains(&from) {
            continue;
        }
        let text = std::fs::read_to_string(&entry).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for to in crate_paths(line) {
                if to != from && modules.contains(&to) {
                    graph.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    graph
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walkdir(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// A cycle in `graph` as the list of modules along it (first = last), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|n| n == node).unwrap();
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for (from, to) in edges {
        graph
            .entry((*from).to_owned())
            .or_default()
            .insert((*to).to_owned());
    }
    graph
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    // The scanner sees the layering it guards: the edge calls the use case, which uses the
    // domain. An empty graph would pass vacuously.
    assert!(graph["http"].contains("delivery"), "{graph:#?}");
    assert!(graph["delivery"].contains("domain"), "{graph:#?}");
    assert!(
        !graph.contains_key("domain"),
        "domain imports nothing from the service: {:?}",
        graph.get("domain")
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "top-level modules import each other in a cycle: {}\nfull graph: {graph:#?}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let acyclic = graph_of(&[
        ("http", "delivery"),
        ("delivery", "domain"),
        ("db", "domain"),
    ]);
    assert_eq!(find_cycle(&acyclic), None);
    let cyclic = graph_of(&[
        ("http", "delivery"),
        ("delivery", "ingest"),
        ("ingest", "plugin_host"),
        ("plugin_host", "ingest"),
    ]);
    assert_eq!(
        find_cycle(&cyclic).unwrap(),
        ["ingest", "plugin_host", "ingest"]
    );
    let long = graph_of(&[("a", "b"), ("b", "c"), ("c", "a")]);
    assert_eq!(find_cycle(&long).unwrap(), ["a", "b", "c", "a"]);
}

#[test]
fn crate_paths_reads_single_and_grouped_imports() {
    assert_eq!(crate_paths("use crate::db::{DbError, X};"), ["db"]);
    assert_eq!(
        crate_paths("use crate::{config::Settings, domain::{Id, Other}, metrics};"),
        ["config", "domain", "metrics"]
    );
    assert_eq!(
        crate_paths("let x = crate::retry::pause(crate::worker::X);"),
        ["retry", "worker"]
    );
    assert!(crate_paths("no paths here").is_empty());
}
