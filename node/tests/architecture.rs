//! The layers of `node/src`, as ARCHITECTURE.md draws them: a module may import its own
//! layer and those below it. Every `crate::` path in the crate's source is checked; an
//! upward one fails the test unless it is a known exception, and a known exception that
//! no longer occurs fails it too, so the list only shrinks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first: (layer, its folder or module under `node/src`). The folder tree is the
/// architecture: every entry of `node/src` is one layer, except `main.rs` and `lib.rs`.
const LAYERS: &[(&str, &str)] = &[
    ("environment", "env"),
    ("settings", "config"),
    ("node state", "state"),
    ("transport", "transport"),
    ("shared context", "local"),
    ("roles", "roles"),
    ("operator surface", "admin"),
    ("serving", "serve"),
    ("command line", "cli"),
    ("the crate's roots", "main"),
    ("the crate's roots", "lib"),
];

/// Layer folders whose files are modules in their own right (`state/replica.rs` is the
/// module `state::replica`): circles are looked for between these too.
const GROUPS: &[&str] = &["env", "state", "roles", "serve", "cli"];

/// Upward imports that exist today, as (importing module, imported module). Remove an
/// entry when its import goes; add none.
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS
        .iter()
        .position(|(_, folder)| *folder == top)
        .unwrap_or_else(|| panic!("`{top}` is in no layer: add it to LAYERS and ARCHITECTURE.md"))
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

/// The module a file belongs to: `roles/coordinator/read.rs` → `roles::coordinator`,
/// `transport/port.rs` → `transport`, `config.rs` → `config`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("a file under node/src");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [group, sub, ..] if GROUPS.contains(&group.as_str()) && sub != "mod" => {
            format!("{group}::{sub}")
        }
        [first, ..] => first.clone(),
        [] => unreachable!("a file has a name"),
    }
}

/// The module a `crate::` path names, by the same rule as [`module_of`].
fn module_named(path: &str) -> String {
    let mut segments = path.split("::").map(|s| {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect::<String>()
    });
    let first = segments.next().unwrap_or_default();
    match segments.next() {
        Some(sub) if GROUPS.contains(&first.as_str()) && !sub.is_empty() => {
            format!("{first}::{sub}")
        }
        _ => first,
    }
}

/// The modules a source text names with `crate::`, in code (comments are skipped),
/// including grouped imports: `use crate::{a, b::c}`.
fn imported_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let path_of = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect()
    };
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name = module_named(&path_of(item));
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            } else {
                let name = module_named(&path_of(rest));
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
        for imported in imported_modules(&text)
            .into_iter()
            .chain(sibling_modules(&src, &file, &text))
        {
            if imported != module {
                edges.insert((module.clone(), imported));
            }
        }
    }
    edges
}

/// The sibling modules a file of a layer folder names with `super::` (in
/// `cli/api.rs`, `super::client::x` is `cli::client`).
fn sibling_modules(src: &Path, file: &Path, text: &str) -> BTreeSet<String> {
    let rel: Vec<String> = file
        .strip_prefix(src)
        .expect("a file under node/src")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let group = match rel.as_slice() {
        [group, name] if GROUPS.contains(&group.as_str()) && name != "mod.rs" => group.clone(),
        _ => return BTreeSet::new(),
    };
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for part in code.split("super::").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            // `super::*` (a test module's) and items of the group's mod.rs are no siblings.
            if !name.is_empty() && std::path::Path::new(&src.join(&group).join(format!("{name}.rs"))).is_file() {
                out.insert(format!("{group}::{name}"));
            }
        }
    }
    out
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
    with_circle.insert(("env::clock".into(), "admin".into()));
    with_circle.insert(("admin".into(), "env::clock".into()));
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
    let found = imported_modules(
        "use crate::{admin::X, local};\n// crate::roles::peer in a comment\nlet x = crate::env::clock::now();\nuse crate::state::replica::{A, B};",
    );
    assert_eq!(
        found,
        ["admin", "env::clock", "local", "state::replica"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(
        module_of(&src, &src.join("roles/coordinator/read.rs")),
        "roles::coordinator"
    );
    assert_eq!(module_of(&src, &src.join("roles/mod.rs")), "roles");
    assert_eq!(module_of(&src, &src.join("transport/port.rs")), "transport");
    assert_eq!(
        sibling_modules(
            &src,
            &src.join("cli/api.rs"),
            "use super::client::Target;\nuse super::*;"
        ),
        ["cli::client".to_string()].into_iter().collect()
    );
}

/// The folder tree, LAYERS and ARCHITECTURE.md's layer table agree: every layer's folder
/// or file exists, every entry of `node/src` is a layer, and the table names each layer
/// with its folder in the same order.
#[test]
fn the_tree_and_architecture_md_agree_with_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).expect("node/src reads") {
        let name = entry.expect("an entry").file_name().to_string_lossy().to_string();
        layer_of(name.trim_end_matches(".rs"));
    }
    for (_, folder) in LAYERS {
        assert!(
            src.join(folder).is_dir() || src.join(format!("{folder}.rs")).is_file(),
            "layer folder or file `{folder}` is missing from node/src"
        );
    }
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md reads");
    let mut at = 0;
    for (number, (layer, folder)) in LAYERS.iter().filter(|(_, f)| *f != "main" && *f != "lib").enumerate() {
        let shown = if src.join(folder).is_dir() {
            format!("`{folder}/`")
        } else {
            format!("`{folder}.rs`")
        };
        let row = format!("| {number} | {layer} | {shown} |");
        let found = doc[at..]
            .find(&row)
            .unwrap_or_else(|| panic!("ARCHITECTURE.md's layer table has no row starting `{row}` (in this order)"));
        at += found + row.len();
    }
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

/// The HTTP edge's error stays at the edge: no module below the roles names `ApiError`
/// (the state refuses with its own errors, the transport carries `WireError`, and
/// `roles/edge.rs` maps them), and the pure crates carry no HTTP status.
#[test]
fn http_errors_stay_at_the_edge() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let below_roles = LAYERS.iter().take_while(|(_, folder)| *folder != "roles");
    let mut offenders = Vec::new();
    for (_, folder) in below_roles {
        let mut files = Vec::new();
        if src.join(folder).is_dir() {
            source_files(&src.join(folder), &mut files);
        } else {
            files.push(src.join(format!("{folder}.rs")));
        }
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file reads");
            if text
                .lines()
                .any(|l| l.split("//").next().unwrap_or("").contains("ApiError"))
            {
                offenders.push(file.strip_prefix(&src).unwrap().display().to_string());
            }
        }
    }
    assert!(offenders.is_empty(), "ApiError below the roles: {offenders:?}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["ring", "crdt", "antientropy"] {
        let mut files = Vec::new();
        source_files(&root.join(krate).join("src"), &mut files);
        assert!(!files.is_empty(), "{krate} has sources");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file reads");
            for needle in ["StatusCode", "status: u16", "http::", "axum"] {
                assert!(!text.contains(needle), "{} names {needle}", file.display());
            }
        }
    }
}
