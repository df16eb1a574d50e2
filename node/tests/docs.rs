//! The project's Markdown: every relative link and image resolves to a file or folder
//! of the repository, every `#anchor` to a heading of the page it names, and the README
//! stays a newcomer's page (short, the two commands first).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ sits in the repository")
        .to_path_buf()
}

/// Every `.md` file of the repository, outside build output and hidden folders.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name == "target" || name == "test-artifacts" {
            continue;
        }
        if path.is_dir() {
            markdown_files(&path, out);
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// The lines of a page outside fenced code blocks, with inline code removed.
fn prose_lines(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut kept = String::new();
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                kept.push(c);
            }
        }
        lines.push(kept);
    }
    lines
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to
/// hyphens; a repeated heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// The targets of the inline links and images on a line: `[text](target)`.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        out.push(target.to_string());
        rest = &after[end..];
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let root = repo_root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("docs/README.md")),
        "the docs map is missing"
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a Markdown file reads");
        for line in prose_lines(&text) {
            for target in link_targets(&line) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target.as_str(), None),
                };
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().expect("a file has a folder").join(path)
                };
                let shown = file.strip_prefix(&root).unwrap_or(file).display();
                if !dest.exists() {
                    broken.push(format!("{shown}: {target} (no such file)"));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let page = std::fs::read_to_string(&dest).unwrap_or_default();
                    if !anchors(&page).contains(anchor) {
                        broken.push(format!("{shown}: {target} (no such heading)"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 50, "only {checked} links found: is the parser blind?");
}

#[test]
fn the_link_checker_sees_a_broken_link_and_a_missing_heading() {
    let page = "# Title\n\n## Choosing N, R, W\n\n```\n[not a link](nowhere.md)\n```\n";
    assert!(anchors(page).contains("choosing-n-r-w"));
    assert!(anchors(page).contains("title"));
    assert!(
        prose_lines(page).iter().all(|l| link_targets(l).is_empty()),
        "links in code blocks are not links"
    );
    assert_eq!(
        link_targets("see [a](x.md#y) and ![b](img.png \"t\")"),
        vec!["x.md#y", "img.png"]
    );
    assert!(prose_lines("`[x](y)`")[0].is_empty());
}

#[test]
fn readme_is_short_and_opens_with_the_two_commands() {
    let text = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let lines = text.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines; keep it at most 250");
    let first_block: Vec<&str> = text.split("```").nth(1).expect("a code block").lines().collect();
    assert!(
        first_block.iter().any(|l| l.starts_with("scripts/dev"))
            && first_block.iter().any(|l| l.starts_with("scripts/test")),
        "the README's first code block must start a cluster and run the tests: {first_block:?}"
    );
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).expect(".ci/run");
    assert!(ci.contains("scripts/test"), "CI must run the README's test command");
}
