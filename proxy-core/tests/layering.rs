//! The dependency graph between proxy-core's top-level modules, read from the source: which
//! module names which (`crate::NAME` outside comments and `#[cfg(test)] mod tests`). It must
//! have no cycle, and every module sits in one of [`LAYERS`] and names only modules of its own
//! layer or below: building blocks at the bottom, then the config, the compiled state, what
//! serves requests with it, and the server that assembles everything. A new module must be
//! given a layer here. docs/architecture.md draws the same picture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, bottom first. `lib` (the table of contents) and `fuzzing` (the fuzz targets'
/// entry points, behind a feature) may name anything.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "building blocks",
        &[
            "access_log",
            "acme",
            "cache",
            "client_ip",
            "compression",
            "errors",
            "exposition",
            "headers",
            "host",
            "listeners",
            "metrics",
            "purge_bus",
            "ratelimit",
            "redis_link",
            "routing",
            "tls",
            "upgrade",
            "upstream",
        ],
    ),
    ("config", &["config"]),
    ("compiled state", &["state"]),
    ("request serving", &["admin", "front", "reload", "service"]),
    ("assembly", &["server"]),
];

/// Modules outside the layering.
const ANYWHERE: &[&str] = &["lib", "fuzzing"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// Every top-level module and the modules its non-test code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect(&src, &mut files);
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&file).expect("readable source");
        let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or("");
        let named = refs.entry(module.clone()).or_default();
        for line in code.lines() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    named.insert(name);
                }
            }
        }
    }
    let modules: BTreeSet<String> = refs.keys().cloned().collect();
    for named in refs.values_mut() {
        named.retain(|n| modules.contains(n));
    }
    refs
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The strongly connected components with more than one module (Tarjan), each sorted.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: BTreeSet<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.g[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.insert(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: BTreeSet::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn no_dependency_cycle() {
    let g = graph();
    assert!(
        g.contains_key("service") && g.contains_key("cache"),
        "{g:?}"
    );
    let edges: Vec<String> = g
        .iter()
        .map(|(m, named)| format!("{m} -> {named:?}"))
        .collect();
    assert_eq!(
        cycles(&g),
        BTreeSet::new(),
        "module cycles; edges now:\n{}",
        edges.join("\n")
    );
}

#[test]
fn every_module_names_only_its_layer_or_below() {
    let g = graph();
    let mut wrong = Vec::new();
    for (module, named) in &g {
        if ANYWHERE.contains(&module.as_str()) {
            continue;
        }
        let Some(mine) = layer_of(module) else {
            wrong.push(format!("{module}: in no layer (add it to LAYERS)"));
            continue;
        };
        for n in named {
            if layer_of(n).is_some_and(|theirs| theirs > mine) {
                wrong.push(format!(
                    "{module} ({}) names {n} ({})",
                    LAYERS[mine].0,
                    LAYERS[layer_of(n).unwrap()].0
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The check itself finds a cycle, and only a cycle.
#[test]
fn the_cycle_finder_finds_cycles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
        ("e", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let want: BTreeSet<Vec<String>> = [vec!["a".to_string(), "b".into(), "c".into()]]
        .into_iter()
        .collect();
    assert_eq!(cycles(&g), want);
}

/// The public surface is deliberate: lib.rs makes every top-level module private except the
/// config's schema, the defaults, the Pingora re-exports and the feature-gated fuzz entry points, and
/// names each public item once at the root. (The `unreachable_pub` and `unnameable_types`
/// lints, denied in CI, keep helpers `pub(crate)` and every reachable type nameable.)
#[test]
fn modules_are_private_but_the_schema_defaults_and_pingora() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs");
    let public: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(['{', ';', ' ']))
        .collect();
    assert_eq!(public, ["config", "fuzzing", "defaults", "pingora"]);
    for lint in ["unreachable_pub", "unnameable_types"] {
        assert!(lib.contains(lint), "lib.rs no longer warns on {lint}");
    }
}
