//! The runtime's modules form layers whose imports point one way: this test reads every source
//! file of `src/`, finds each path into the crate (`crate::...`, `super::...`, `self::...`, use
//! trees included) and fails when one points up a layer, goes through the crate root, or closes
//! a cycle between two files. ARCHITECTURE.md draws the same table. It also fails when two types
//! visible across modules share a name (one name per concept).
//!
//! Run it alone with `cargo test -p evoq-runtime --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each layer and the layers it may import directly; what those may import, it may import too.
const LAYERS: &[(&str, &[&str])] = &[
    ("util", &[]),
    ("envelope", &["util"]),
    ("store", &["envelope"]),
    ("event", &["store"]),
    ("error", &["event"]),
    ("aggregate", &["error"]),
    ("host", &["aggregate"]),
    ("dispatch", &["host"]),
    ("delivery", &["aggregate"]),
    ("handler", &["delivery"]),
    ("projection", &["handler"]),
    ("saga", &["projection", "dispatch"]),
    ("config", &["dispatch", "delivery"]),
    ("app", &["config", "saga"]),
];

/// A module path, like `host::actor` (`""` is the crate root).
type Module = String;

/// The source files of the crate, by module.
fn read_sources(root: &Path) -> BTreeMap<Module, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("the source directory is readable")
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .expect("a UTF-8 file name")
                .to_owned();
            if path.is_dir() {
                let mut inner = prefix.to_vec();
                inner.push(name);
                walk(&path, &inner, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut module = prefix.to_vec();
                if stem != "mod" && stem != "lib" {
                    module.push(stem.to_owned());
                }
                let text = std::fs::read_to_string(&path).expect("a readable source file");
                out.insert(module.join("::"), text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &[], &mut out);
    out
}

/// The text without comments (line comments, doc comments and block comments).
fn strip_comments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                in_string = false;
            }
            out.push(' ');
            i += 1;
            continue;
        }
        if text[i..].starts_with("r#\"") && (i == 0 || !is_ident(bytes[i - 1] as char)) {
            let end = text[i + 3..]
                .find("\"#")
                .map_or(bytes.len(), |e| i + 3 + e + 2);
            out.extend(std::iter::repeat_n(' ', end - i));
            i = end;
        } else if c == b'"' && (i == 0 || bytes[i - 1] != b'\'') {
            in_string = true;
            out.push(' ');
            i += 1;
        } else if text[i..].starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if text[i..].starts_with("/*") {
            let end = text[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |e| i + 2 + e + 2);
            i = end;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses the use tree (or plain path) at `text`: every path it names, as segments.
fn parse_tree(text: &str) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut rest = text.trim_start();
    loop {
        let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        segments.push(rest[..len].to_owned());
        rest = &rest[len..];
        if let Some(after) = rest.strip_prefix("::") {
            rest = after.trim_start();
            if let Some(group) = rest.strip_prefix('{') {
                let mut paths = Vec::new();
                let mut depth = 0;
                let mut start = 0;
                for (at, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            for tail in parse_tree(&group[start..at]) {
                                paths.push([segments.clone(), tail].concat());
                            }
                            return paths;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            for tail in parse_tree(&group[start..at]) {
                                paths.push([segments.clone(), tail].concat());
                            }
                            start = at + 1;
                        }
                        _ => {}
                    }
                }
                return paths;
            }
        } else {
            break;
        }
    }
    if segments.is_empty() {
        Vec::new()
    } else {
        vec![segments]
    }
}

/// The inline modules of a file (`mod tests { ... }`): their names and byte ranges.
fn inline_modules(code: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("mod ") {
        let at = from + at;
        from = at + 4;
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[at + 4..];
        let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        let after = rest[len..].trim_start();
        if len == 0 || !after.starts_with('{') {
            continue;
        }
        let open = code.len() - after.len();
        let mut depth = 0;
        let mut close = code.len();
        for (offset, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + offset;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push((rest[..len].to_owned(), open..close));
    }
    found
}

/// Every path into the crate in `text`: (where it is, where it starts from, its segments).
fn crate_paths(text: &str) -> Vec<(usize, &'static str, Vec<String>)> {
    let mut found = Vec::new();
    for anchor in ["crate", "super", "self"] {
        let needle = format!("{anchor}::");
        let mut from = 0;
        while let Some(at) = text[from..].find(&needle) {
            let at = from + at;
            from = at + needle.len();
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == '$' || c == ':') {
                continue;
            }
            let paths = parse_tree(&text[at..]);
            // A macro (`crate::some_macro!`) lives at the root by `#[macro_export]`: not an import.
            let written: usize = text[at..]
                .find(|c: char| !(is_ident(c) || c == ':'))
                .unwrap_or(text.len() - at);
            if text[at + written..].starts_with('!') {
                continue;
            }
            for path in paths {
                found.push((at, anchor, path));
            }
        }
    }
    found
}

/// A problem the check found.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Problem {
    /// `from` imports `to`, a layer it may not import.
    Upward { from: Module, to: Module },
    /// `from` names an item through the crate root instead of its module.
    ThroughRoot { from: Module, path: String },
    /// The files import each other in a cycle.
    Cycle(Vec<Module>),
}

fn layer_of(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

/// The layers each layer may import (the closure of [`LAYERS`]).
fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let direct: BTreeMap<_, _> = LAYERS.iter().copied().collect();
    direct
        .keys()
        .map(|&layer| {
            let mut reach = BTreeSet::new();
            let mut todo: Vec<&str> = direct[layer].to_vec();
            while let Some(next) = todo.pop() {
                if reach.insert(next) {
                    todo.extend(direct[next].iter().copied());
                }
            }
            (layer, reach)
        })
        .collect()
}

/// Checks the sources: every problem found, sorted.
fn check(sources: &BTreeMap<Module, String>) -> Vec<Problem> {
    let allowed = allowed();
    let mut problems = BTreeSet::new();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, text) in sources {
        if module.is_empty() {
            continue; // lib.rs: declarations and re-exports only.
        }
        let code = strip_comments(text);
        let inline = inline_modules(&code);
        for (at, anchor, segments) in crate_paths(&code) {
            // The module the path is written in: the file's, plus any inline `mod x { ... }`.
            let mut scope: Vec<String> = module.split("::").map(str::to_owned).collect();
            scope.extend(
                inline
                    .iter()
                    .filter(|(_, span)| span.contains(&at))
                    .map(|(name, _)| name.clone()),
            );
            let mut base: Vec<String> = match anchor {
                "crate" => Vec::new(),
                "self" => scope.clone(),
                _ => scope[..scope.len() - 1].to_vec(),
            };
            let mut rest = &segments[1..];
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            // The longest prefix that is a module of the crate.
            let mut target = base.join("::");
            for segment in rest {
                let longer = if target.is_empty() {
                    segment.clone()
                } else {
                    format!("{target}::{segment}")
                };
                if sources.contains_key(&longer) {
                    target = longer;
                } else {
                    break;
                }
            }
            if target.is_empty() {
                problems.insert(Problem::ThroughRoot {
                    from: module.clone(),
                    path: segments.join("::"),
                });
                continue;
            }
            if target == *module {
                continue;
            }
            let (from_layer, to_layer) = (layer_of(module), layer_of(&target));
            if from_layer != to_layer
                && !allowed
                    .get(from_layer)
                    .is_some_and(|reach| reach.contains(to_layer))
            {
                problems.insert(Problem::Upward {
                    from: module.clone(),
                    to: target.clone(),
                });
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    // Cycles between files: a depth-first search that reports the first back edge of each.
    fn visit(
        node: &str,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
        problems: &mut BTreeSet<Problem>,
    ) {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = stack.iter().position(|m| m == next).unwrap_or(0);
                    problems.insert(Problem::Cycle(stack[start..].to_vec()));
                }
                Some(_) => {}
                None => visit(next, edges, state, stack, problems),
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node) {
            visit(node, &edges, &mut state, &mut Vec::new(), &mut problems);
        }
    }
    problems.into_iter().collect()
}

fn sources() -> BTreeMap<Module, String> {
    read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn every_import_points_down_a_layer_and_no_files_import_each_other_in_a_cycle() {
    let sources = sources();
    for module in sources.keys().filter(|m| !m.is_empty()) {
        assert!(
            LAYERS.iter().any(|(layer, _)| *layer == layer_of(module)),
            "module `{module}` is in no layer: add its layer to LAYERS here and to ARCHITECTURE.md"
        );
    }
    let problems = check(&sources);
    assert!(
        problems.is_empty(),
        "the runtime's layering is broken:\n{}",
        problems
            .iter()
            .map(|p| format!("  {p:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The types visible across modules (`pub`, `pub(crate)`), by name: where each is defined.
fn shared_type_names(sources: &BTreeMap<Module, String>) -> BTreeMap<String, Vec<Module>> {
    let mut names: BTreeMap<String, Vec<Module>> = BTreeMap::new();
    for (module, text) in sources {
        for line in strip_comments(text).lines() {
            let line = line.trim_start();
            let Some(rest) = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub "))
            else {
                continue;
            };
            for kind in ["struct ", "enum ", "trait ", "type "] {
                if let Some(name) = rest.strip_prefix(kind) {
                    let len = name.find(|c: char| !is_ident(c)).unwrap_or(name.len());
                    names
                        .entry(name[..len].to_owned())
                        .or_default()
                        .push(module.clone());
                }
            }
        }
    }
    names
}

#[test]
fn one_name_per_concept_no_two_shared_types_share_a_name() {
    let twins: Vec<_> = shared_type_names(&sources())
        .into_iter()
        .filter(|(_, modules)| modules.len() > 1)
        .collect();
    assert!(
        twins.is_empty(),
        "types visible across modules share a name (give each concept one name): {twins:?}"
    );
}

#[test]
fn a_second_type_of_a_shared_name_is_found() {
    let mut sources = sources();
    sources
        .get_mut("delivery::state")
        .expect("delivery/state.rs exists")
        .push_str("\npub(crate) struct Registry;\n");
    let names = shared_type_names(&sources);
    assert_eq!(
        names["Registry"],
        vec!["delivery::state".to_owned(), "host::registry".to_owned()]
    );
}

#[test]
fn a_deliberate_upward_import_is_reported() {
    let mut sources = sources();
    sources
        .get_mut("util::time")
        .expect("util/time.rs exists")
        .push_str("\nuse crate::app::evoq::Evoq;\n");
    let problems = check(&sources);
    assert_eq!(
        problems.first(),
        Some(&Problem::Upward {
            from: "util::time".to_owned(),
            to: "app::evoq".to_owned(),
        }),
        "{problems:?}"
    );
}

#[test]
fn an_import_through_the_crate_root_and_a_cycle_are_reported() {
    let mut sources = sources();
    sources
        .get_mut("host::cell")
        .expect("host/cell.rs exists")
        .push_str("\nuse super::{actor::run_in, registry::Registry};\nfn f(_: crate::Evoq) {}\n");
    let problems = check(&sources);
    assert!(
        problems.contains(&Problem::ThroughRoot {
            from: "host::cell".to_owned(),
            path: "crate::Evoq".to_owned(),
        }),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(
            |p| matches!(p, Problem::Cycle(files) if files.contains(&"host::cell".to_owned()))
        ),
        "{problems:?}"
    );
}

#[test]
fn use_trees_are_read_in_full() {
    assert_eq!(
        parse_tree("crate::a::{b::C, d::{self, E}, F};"),
        vec![
            vec!["crate", "a", "b", "C"],
            vec!["crate", "a", "d", "self"],
            vec!["crate", "a", "d", "E"],
            vec!["crate", "a", "F"],
        ]
    );
    let stripped = strip_comments("a // crate::x\nb /* super::y */ c \"self::z\" d");
    assert!(crate_paths(&stripped).is_empty(), "{stripped:?}");
    assert!(stripped.ends_with(" d"), "{stripped:?}");
}
