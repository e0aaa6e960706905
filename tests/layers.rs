//! The modules of each crate form layers: no module uses (through a
//! `crate::` path) a module that uses it back, directly or through others.
//! Comments and test code do not count (a test may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The workspace's crates (the `members` of the root Cargo.toml).
const CRATES: [&str; 9] = [
    ".", "store", "reactor", "bench", "fsproto", "cpg", "ipc", "rrd", "testkit",
];

/// `crate::<module>` names used in `text` outside comments and outside
/// the test module at the end of a file.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        let code = match code.find("//") {
            Some(comment) => &code[..comment],
            None => code,
        };
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let name: String = rest[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = &rest[at + 7..];
        }
    }
    found
}

/// Top-level module → the top-level modules it uses, for one crate.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, src: &Path, graph: &mut BTreeMap<String, BTreeSet<String>>) {
        for entry in std::fs::read_dir(dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, src, graph);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs")
                || path.file_stem().is_some_and(|stem| stem == "tests")
            {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let top = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|name| name.trim_end_matches(".rs").to_string())
                .expect("module name");
            if top == "lib" || top == "main" || top == "bin" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            let used = uses(&text);
            let deps = graph.entry(top.clone()).or_default();
            deps.extend(used.into_iter().filter(|name| *name != top));
        }
    }
    let mut graph = BTreeMap::new();
    walk(src, src, &mut graph);
    graph
}

/// Every cycle found by a depth-first search (each as the path around it).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if !graph.contains_key(next) {
                continue;
            }
            match state.get(next) {
                Some(1) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    found.push(cycle);
                }
                Some(_) => {}
                None => visit(next, graph, state, stack, found),
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            visit(node, graph, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[test]
fn no_module_of_a_crate_uses_one_that_uses_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for name in CRATES {
        let graph = graph(&root.join(name).join("src"));
        if name == "fsproto" {
            // The walk sees the modules (a single-file crate has none).
            assert!(graph.len() >= 10, "fsproto: {:?}", graph.keys());
        }
        for cycle in cycles(&graph) {
            problems.push(format!("{name}: {}", cycle.join(" -> ")));
        }
    }
    assert!(
        problems.is_empty(),
        "import cycles:\n{}",
        problems.join("\n")
    );
}

/// The check itself finds a cycle, and only a real one.
#[test]
fn the_cycle_check_sees_uses_and_ignores_comments_and_tests() {
    let text = "use crate::b::X;\n// crate::c in a comment\nlet y = crate::d::f(); // crate::e\n#[cfg(test)]\nmod tests { use crate::g; }\n";
    let found: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(found, ["b", "d"]);
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c", "a"]]);
    graph.insert("c".to_string(), BTreeSet::new());
    assert!(cycles(&graph).is_empty());
}
