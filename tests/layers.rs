//! The layer rule, enforced: reads `src/` and fails when a module names a module of a higher
//! layer, or when a layer-0 (pure) module names I/O (`std::fs`, `tokio::net`, `hyper`,
//! `rusqlite`, ...) or reads the clock.
//!
//! The layer list lives in one place: the table between the `layers:begin` and `layers:end`
//! markers in ARCHITECTURE.md, which this test parses. Every module under `src/` must be in
//! it (a module belongs to the longest listed prefix of its path).
//!
//! Test code (`#[cfg(test)]` modules) is exempt: a pure module's tests may write files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed read is a failed test"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Paths a pure module must not name: I/O and the clock.
const PURE_FORBIDDEN: &[(&str, &str)] = &[
    ("std::fs", "file I/O"),
    ("std::net::TcpStream", "network I/O"),
    ("std::net::TcpListener", "network I/O"),
    ("std::net::UdpSocket", "network I/O"),
    ("std::process", "processes"),
    ("std::env", "the environment"),
    ("tokio::net", "network I/O"),
    ("tokio::fs", "file I/O"),
    ("tokio::time", "the clock"),
    ("tokio::process", "processes"),
    ("hyper", "HTTP"),
    ("rusqlite", "a database"),
    ("tokio_postgres", "a database"),
    ("sqlx", "a database"),
    ("zbus", "D-Bus"),
    ("SystemTime::now", "the clock"),
    ("Instant::now", "the clock"),
    ("OffsetDateTime::now_utc", "the clock"),
];

/// The layer table from ARCHITECTURE.md: module path (`renew::policy`) → layer.
fn layer_table(architecture: &str) -> BTreeMap<String, u8> {
    let begin = architecture
        .find("<!-- layers:begin -->")
        .expect("ARCHITECTURE.md has no <!-- layers:begin --> marker");
    let end = architecture
        .find("<!-- layers:end -->")
        .expect("ARCHITECTURE.md has no <!-- layers:end --> marker");
    let mut table = BTreeMap::new();
    for line in architecture[begin..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | 0 | pure | `vocab`, `der`, ... |
        if cells.len() < 4 {
            continue;
        }
        let Ok(layer) = cells[1].parse::<u8>() else {
            continue;
        };
        for module in cells[3].split(',') {
            let module = module.trim().trim_matches('`');
            if !module.is_empty() {
                assert!(
                    table.insert(module.to_owned(), layer).is_none(),
                    "module {module} is listed twice in ARCHITECTURE.md"
                );
            }
        }
    }
    assert!(
        !table.is_empty(),
        "the layer table in ARCHITECTURE.md is empty"
    );
    table
}

/// The module path of a file under `src/`: `src/renew/engine/mod.rs` → `renew::engine`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_owned();
        if last == "mod" {
            parts.pop();
        }
    }
    parts.join("::")
}

/// The layer of a module: that of the longest listed prefix.
fn layer_of(table: &BTreeMap<String, u8>, module: &str) -> Option<u8> {
    let mut path = module.to_owned();
    loop {
        if let Some(layer) = table.get(&path) {
            return Some(*layer);
        }
        let (parent, _) = path.rsplit_once("::")?;
        path = parent.to_owned();
    }
}

/// The source without comments, string and char literals and `#[cfg(test)]` items, so only
/// code the module runs in production is scanned.
fn production_code(source: &str) -> String {
    without_test_items(&without_literals(source))
}

/// Drops every `#[cfg(test)]` item: the attribute and what follows up to the matching
/// closing brace, or up to a `;` for an item without a body. Runs on text without literals,
/// so every brace counted is code.
fn without_test_items(code: &str) -> String {
    const ATTR: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find(ATTR) {
        out.push_str(&rest[..at]);
        let item = &rest[at + ATTR.len()..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, b) in item.bytes().enumerate() {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The source without comments, with string literals as `""` and char literals as `' '`.
fn without_literals(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            i += raw.find("\"#").map_or(rest.len(), |e| e + 5);
            out.push_str("\"\"");
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            i += (j + 1).min(rest.len());
            out.push_str("\"\"");
        } else if let Some(lit) = rest.strip_prefix('\'') {
            // A char literal ('x', '"', '\'', '\u{..}') is skipped whole; a lifetime ('a)
            // is kept.
            let mut chars = lit.char_indices();
            let len = match chars.next() {
                Some((_, '\\')) => lit[2..].find('\'').map(|e| e + 3),
                Some((_, c)) if lit[c.len_utf8()..].starts_with('\'') => Some(c.len_utf8() + 1),
                _ => None,
            };
            match len {
                Some(len) => {
                    out.push_str("' '");
                    i += 1 + len;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Every path the code names, with `use` trees expanded: `use std::{fs, io::Read};` names
/// `std::fs` and `std::io::Read`.
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    // `use` statements, expanded.
    let mut rest = code;
    while let Some(start) = find_keyword(rest, "use") {
        let after = &rest[start + 3..];
        let end = after.find(';').unwrap_or(after.len());
        // Aliases (`x as y`) become `x@y`, then white space goes.
        let tree = after[..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" as ", "@")
            .replace(' ', "");
        expand_use_tree(&tree, "", &mut paths);
        rest = &after[end..];
    }
    // Paths in expressions and types: runs of identifiers joined by `::`.
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_alphabetic() || chars[i] == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric()
                    || chars[i] == '_'
                    || (chars[i] == ':' && chars.get(i + 1) == Some(&':')))
            {
                i += if chars[i] == ':' { 2 } else { 1 };
            }
            let preceded = start > 0 && (chars[start - 1] == ':');
            let path: String = chars[start..i].iter().collect();
            if !preceded && path.contains("::") {
                paths.push(path.trim_end_matches(':').to_owned());
            }
        } else {
            i += 1;
        }
    }
    paths
}

fn find_keyword(text: &str, keyword: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = text[from..].find(keyword) {
        let at = from + pos;
        let before = text[..at].chars().next_back();
        let after = text[at + keyword.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if boundary(before) && after.is_some_and(char::is_whitespace) {
            return Some(at);
        }
        from = at + keyword.len();
    }
    None
}

fn expand_use_tree(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let join = |p: &str, s: &str| {
        if p.is_empty() {
            s.to_owned()
        } else {
            format!("{p}::{s}")
        }
    };
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use_tree(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use_tree(&inner[start..], &base, out);
    } else if !tree.is_empty() {
        let path = tree.split('@').next().unwrap_or(tree);
        if path == "self" {
            out.push(prefix.to_owned());
        } else {
            out.push(join(prefix, path.trim_end_matches("::*")));
        }
    }
}

/// `path` names `forbidden` if it is that path or goes below it (`std::fs::File` names
/// `std::fs`); `SystemTime::now` also matches `std::time::SystemTime::now`.
fn names(path: &str, forbidden: &str) -> bool {
    path == forbidden
        || path.starts_with(&format!("{forbidden}::"))
        || path.ends_with(&format!("::{forbidden}"))
        || path.contains(&format!("::{forbidden}::"))
}

/// Violations of the layer rule in one file of `module` (at `layer`).
fn violations(table: &BTreeMap<String, u8>, module: &str, layer: u8, source: &str) -> Vec<String> {
    let code = production_code(source);
    let mut found = Vec::new();
    for path in named_paths(&code) {
        if let Some(inner) = path.strip_prefix("crate::") {
            let target = inner.split("::").next().unwrap_or(inner);
            // The layer of the deepest listed module the path names.
            let mut named = target.to_owned();
            let mut best = layer_of(table, target);
            for part in inner.split("::").skip(1) {
                named = format!("{named}::{part}");
                if let Some(l) = table.get(&named) {
                    best = Some(*l);
                }
            }
            if let Some(l) = best
                && l > layer
            {
                found.push(format!("{module} (layer {layer}) names {path} (layer {l})"));
            }
        }
        if layer == 0 {
            for (forbidden, what) in PURE_FORBIDDEN {
                if names(&path, forbidden) {
                    found.push(format!("{module} (layer 0, pure) names {path}: {what}"));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn table() -> BTreeMap<String, u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    layer_table(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap())
}

#[test]
fn every_module_keeps_to_its_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let table = table();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut scanned = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        if rel == Path::new("lib.rs") || rel.starts_with("bin") {
            continue;
        }
        let module = module_of(rel);
        let Some(layer) = layer_of(&table, &module) else {
            problems.push(format!(
                "{} (module {module}) is in no layer: add it to the table in ARCHITECTURE.md",
                rel.display()
            ));
            continue;
        };
        scanned += 1;
        let source = std::fs::read_to_string(file).unwrap();
        problems.extend(violations(&table, &module, layer, &source));
    }
    assert!(scanned > 30, "only {scanned} files scanned");
    assert!(
        problems.is_empty(),
        "layer violations:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_listed_module_exists() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for module in table().keys() {
        let rel: PathBuf = module.split("::").collect();
        let exists =
            src.join(&rel).with_extension("rs").exists() || src.join(&rel).join("mod.rs").exists();
        assert!(
            exists,
            "ARCHITECTURE.md lists {module}, which is not in src/"
        );
    }
}

/// The scanner itself: it must find each kind of violation planted in a snippet, and
/// nothing in comments, strings or test code.
#[test]
fn the_scanner_finds_planted_violations() {
    let table = layer_table(
        "<!-- layers:begin -->\n\
         | layer | kind | modules |\n\
         |---|---|---|\n\
         | 0 | pure | `vocab`, `renew::policy` |\n\
         | 1 | adapters | `keys` |\n\
         | 2 | applications | `config`, `renew` |\n\
         <!-- layers:end -->",
    );
    assert_eq!(layer_of(&table, "renew::policy"), Some(0));
    assert_eq!(layer_of(&table, "renew::engine::host"), Some(2));
    assert_eq!(layer_of(&table, "keys::tpm::session"), Some(1));
    assert_eq!(layer_of(&table, "unlisted"), None);

    let planted = r#"
        use std::{collections::BTreeMap, fs::{self, File}};
        use crate::config::Settings;
        use crate::renew::engine::Engine;
        fn f() -> std::time::SystemTime {
            let _ = hyper::Request::builder();
            let _ = tokio::net::TcpListener::bind("x");
            std::time::SystemTime::now()
        }
    "#;
    let found = violations(&table, "vocab", 0, planted);
    let expect = [
        "names std::fs: file I/O",
        "names std::fs::File: file I/O",
        "names crate::config::Settings (layer 2)",
        "names crate::renew::engine::Engine (layer 2)",
        "names hyper::Request::builder: HTTP",
        "names tokio::net::TcpListener::bind: network I/O",
        "names std::time::SystemTime::now: the clock",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.contains(e)),
            "the scanner missed {e:?}; found {found:?}"
        );
    }
    // A layer-1 module may do I/O but must not name layer 2; it may name layer 0 below
    // a layer-2 prefix (`renew::policy`).
    let adapter = "use std::fs; use crate::renew::policy::next; use crate::config::X;";
    let found = violations(&table, "keys", 1, adapter);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("crate::config::X"));

    // Comments, strings and test modules are not production code.
    let clean = r#"
        // use std::fs;
        /* crate::config */
        const DOC: &str = "std::fs and SystemTime::now()";
        const QUOTE: char = '"';
        const ESCAPED: [char; 2] = ['\\', '\''];
        fn lifetime<'a>(s: &'a str) -> &'a str { s }
        pub fn pure(now: std::time::SystemTime) -> std::time::SystemTime { now }
        #[cfg(test)]
        mod tests {
            use std::fs;
            fn t() { let _ = std::time::SystemTime::now(); crate::config::load(); }
        }
    "#;
    assert_eq!(violations(&table, "vocab", 0, clean), Vec::<String>::new());
    // A quote in a char literal does not hide the code after it.
    let quoted = "const Q: char = '\"'; fn f() { crate::config::load(); }";
    assert_eq!(violations(&table, "vocab", 0, quoted).len(), 1);
}
