//! The layers of `node/src`, as ARCHITECTURE.md draws them: a module may import its own
//! layer and those below it. Every `crate::` path in the crate's source is checked; an
//! upward one fails the test unless it is a known exception, and a known exception that
//! no longer occurs fails it too, so the list only shrinks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first: (layer, its top-level modules).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "environment",
        &["clock", "storage", "tls", "metrics", "shutdown_signal"],
    ),
    ("settings", &["config"]),
    (
        "node state",
        &[
            "forest",
            "replica",
            "replica_writer",
            "identity",
            "cluster",
            "transfer",
            "testing",
        ],
    ),
    ("transport", &["transport"]),
    ("shared context", &["local"]),
    ("roles", &["coordinator", "peer", "services"]),
    ("operator surface", &["admin"]),
    ("serving", &["node", "server", "http_server"]),
    ("command line", &["cli", "admin_cli", "dev", "main", "lib"]),
];

/// Upward imports that exist today, as (importing module, imported module). Remove an
/// entry when its import goes; add none.
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer: add it to LAYERS and ARCHITECTURE.md"))
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("node/src reads") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `coordinator/read.rs` → `coordinator`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("a file under node/src");
    let first = rel.components().next().expect("a path").as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a source text names with `crate::`, in code (comments are
/// skipped), including grouped imports: `use crate::{a, b::c}`.
fn imported_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            } else {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// Every (importing module, imported module) pair of node/src, by top-level module.
fn imports() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut edges = BTreeSet::new();
    for file in files {
        let module = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).expect("a source file reads");
        for imported in imported_modules(&text) {
            if imported != module {
                edges.insert((module.clone(), imported));
            }
        }
    }
    edges
}

/// A circle in the import graph, if there is one.
fn find_circle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeSet<(String, String)>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut circle = path[i..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for (_, to) in edges.iter().filter(|(from, _)| from == node) {
            if let Some(c) = visit(to, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for (from, _) in edges {
        if let Some(c) = visit(from, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_import_circle_between_modules() {
    let edges = imports();
    assert!(edges.len() > 20, "only {} imports found", edges.len());
    assert_eq!(find_circle(&edges), None, "an import circle");
    // The check sees one when there is one.
    let mut with_circle = edges.clone();
    with_circle.insert(("clock".into(), "admin".into()));
    with_circle.insert(("admin".into(), "clock".into()));
    assert!(find_circle(&with_circle).is_some());
}

fn upward_imports() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    assert!(files.len() > 30, "found only {} source files", files.len());
    let mut upward = BTreeSet::new();
    for file in files {
        let module = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).expect("a source file reads");
        for imported in imported_modules(&text) {
            // Items of lib.rs itself (`crate::shutdown_signal`) are in LAYERS by name.
            if imported != module && layer_of(&imported) > layer_of(&module) {
                upward.insert((module.clone(), imported));
            }
        }
    }
    upward
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let upward = upward_imports();
    let known: BTreeSet<(String, String)> = KNOWN_EXCEPTIONS
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = upward.difference(&known).collect();
    assert!(
        new.is_empty(),
        "upward imports (module → the higher module it imports): {new:?}; \
         move the shared piece down, or the caller up (see ARCHITECTURE.md)"
    );
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(
        gone.is_empty(),
        "known exceptions that no longer occur, remove them from KNOWN_EXCEPTIONS \
         and ARCHITECTURE.md: {gone:?}"
    );
}

#[test]
fn every_module_has_a_layer_and_the_parser_reads_grouped_imports() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    for file in &files {
        layer_of(&module_of(&src, file));
    }
    let found =
        imported_modules("use crate::{admin::X, local};\n// crate::peer in a comment\nlet x = crate::clock::now();");
    assert_eq!(
        found,
        ["admin", "clock", "local"].iter().map(|s| s.to_string()).collect()
    );
}

/// Lines of a source file before its tests.
fn code_lines(text: &str) -> usize {
    text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).count()
}

#[test]
fn long_files_say_why_at_the_top() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut unexplained = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a source file reads");
        let lines = code_lines(&text);
        let head: String = text.lines().take(40).collect::<Vec<_>>().join("\n");
        if lines > 600 && !head.contains("Why this file is long") {
            unexplained.push(format!(
                "{} ({lines} lines)",
                file.strip_prefix(&src).unwrap().display()
            ));
        }
    }
    assert!(
        unexplained.is_empty(),
        "files over 600 lines of code with no 'Why this file is long' at the top: {unexplained:?}"
    );
    assert_eq!(code_lines("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
}
