//! The modules of every crate form a DAG (ARCHITECTURE.md): no module reaches, through
//! `crate::` paths, a module that reaches it back. A `crate::Item` that is not a module
//! counts as a use of the crate root (lib.rs or main.rs), which is where re-exported
//! items live; test modules and comments do not count.

#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates held to it: all of them.
const CRATES: [&str; 7] = [
    "proto",
    "store",
    "fs",
    "replicator",
    "depfs",
    "testkit",
    "bench",
];

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

/// `src` without comments and without what follows its first `#[cfg(test)] mod`.
fn production_code(src: &str) -> String {
    let lines: Vec<&str> = src.lines().collect();
    let mut code = String::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map_or("", |l| l.trim_start());
        if line.trim() == "#[cfg(test)]" && next.starts_with("mod ") {
            break;
        }
        code.push_str(line.split("//").next().unwrap_or(""));
        code.push('\n');
    }
    code
}

/// The names used right after `crate::` in `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    code.split("crate::")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Module name → the modules it uses, for the crate in `dir`.
fn module_graph(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("src")).expect("a src directory") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let stem = path.file_stem().expect("a file name").to_string_lossy();
            let name = if stem == "main" {
                "lib".to_string()
            } else {
                stem.to_string()
            };
            let code = production_code(&std::fs::read_to_string(&path).expect("readable"));
            sources.insert(name, code);
        }
    }
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(name, code)| {
            let uses = crate_paths(code)
                .into_iter()
                .map(|used| {
                    if modules.contains(&used) {
                        used
                    } else {
                        "lib".to_string()
                    }
                })
                .filter(|used| used != name)
                .collect();
            (name.clone(), uses)
        })
        .collect()
}

/// A cycle of `graph`, if it has one, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_of_every_crate_form_a_dag() {
    for krate in CRATES {
        let graph = module_graph(&root().join(krate));
        assert!(graph.contains_key("lib"), "{krate}: no crate root found");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: import cycle {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("lib", vec!["a"]), ("a", vec!["b"]), ("b", vec!["lib"])]
            .into_iter()
            .map(|(n, uses)| (n.to_string(), uses.into_iter().map(String::from).collect()))
            .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(
            vec!["a", "b", "lib", "a"]
                .into_iter()
                .map(String::from)
                .collect()
        )
    );
    let code =
        production_code("use crate::a::X; // crate::b\n#[cfg(test)]\nmod tests { use crate::c; }");
    assert_eq!(crate_paths(&code), BTreeSet::from(["a".to_string()]));
}
