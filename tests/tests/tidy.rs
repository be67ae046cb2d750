//! The architecture invariants of ARCHITECTURE.md, checked on the source tree:
//!
//! * stream-core names no broker;
//! * binders hold no settlement policy (no retry decisions, no special outcomes);
//! * no import cycles between the top-level modules of a crate;
//! * every binder crate runs the conformance kit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without comments and without its unit tests.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The binder crates: `crates/binder-*` and the example binders.
fn binder_crates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for parent in ["crates", "examples"] {
        let Ok(entries) = std::fs::read_dir(root().join(parent)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("binder-") || name.ends_with("-binder") {
                v.push(e.path());
            }
        }
    }
    v.sort();
    v
}

/// Architecture Invariant: stream-core never names a broker.
#[test]
fn stream_core_names_no_broker() {
    let mut offenders = Vec::new();
    for f in rust_files(&root().join("crates/stream-core/src")) {
        let c = code(&f).to_lowercase();
        for word in ["rabbit", "rocketmq", "amqp", "kafka", "lapin"] {
            if c.contains(word) {
                offenders.push(format!("{} names `{word}` in code", f.display()));
            }
        }
    }
    let manifest =
        std::fs::read_to_string(root().join("crates/stream-core/Cargo.toml")).unwrap_or_default();
    for dep in ["lapin", "rocketmq"] {
        if manifest.contains(dep) {
            offenders.push(format!("stream-core depends on {dep}"));
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// Architecture Invariant: binders hold no settlement policy: they never look at special
/// outcomes, attempts or retry policies; the core's settlement table decides.
#[test]
fn binders_hold_no_settlement_policy() {
    let mut offenders = Vec::new();
    for krate in binder_crates() {
        for f in rust_files(&krate.join("src")) {
            let c = code(&f);
            for token in [
                "SpecialOutcome::",
                ".special()",
                "max_attempts",
                "RetryPolicy",
                "is_retryable",
            ] {
                if c.contains(token) {
                    offenders.push(format!("{} uses `{token}`", f.display()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// The top-level modules a crate declares in its `lib.rs`.
fn top_modules(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("pub(crate) mod "))
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_owned())
        })
        .collect()
}

/// `crate::<module>` references between a crate's top-level modules.
fn module_edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = top_modules(src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in rust_files(src) {
        let rel = f.strip_prefix(src).unwrap_or(&f);
        let first = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_owned()
            })
            .unwrap_or_default();
        if !modules.contains(&first) {
            continue;
        }
        let c = code(&f);
        for (i, _) in c.match_indices("crate::") {
            let after = &c[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                .collect();
            if modules.contains(&name) && name != first {
                edges.entry(first.clone()).or_default().insert(name);
            }
        }
        // `use crate::{a, b::c}` groups.
        for (i, _) in c.match_indices("crate::{") {
            let group = &c[i + "crate::{".len()..];
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                    .collect();
                if modules.contains(&name) && name != first {
                    edges.entry(first.clone()).or_default().insert(name);
                }
            }
        }
    }
    edges
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|p| p == n) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// Architecture Invariant: no import cycles between the top-level modules of a crate.
#[test]
fn no_import_cycles_between_modules() {
    let mut crates = vec![
        root().join("crates/stream-config"),
        root().join("crates/stream-core"),
    ];
    crates.extend(binder_crates());
    let mut cycles = Vec::new();
    for krate in crates {
        let edges = module_edges(&krate.join("src"));
        if let Some(c) = find_cycle(&edges) {
            cycles.push(format!("{}: {}", krate.display(), c.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "{cycles:#?}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    e.entry("a".into()).or_default().insert("b".into());
    e.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&e), None);
    e.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&e),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

/// Architecture Invariant: every binder crate runs the conformance kit.
#[test]
fn every_binder_crate_runs_the_kit() {
    let crates = binder_crates();
    assert!(crates.len() >= 3, "binder crates found: {crates:?}");
    let mut missing = Vec::new();
    for krate in crates {
        // The kit may be set up in a support module the conformance run uses.
        let test = std::fs::read_to_string(krate.join("tests/conformance.rs")).unwrap_or_default()
            + &std::fs::read_to_string(krate.join("tests/support/mod.rs")).unwrap_or_default();
        let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap_or_default();
        let harness_off =
            manifest.contains("name = \"conformance\"") && manifest.contains("harness = false");
        if !test.contains("Kit::") || !test.contains(".run()") || !harness_off {
            missing.push(krate.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "binder crates without a conformance run: {missing:?}"
    );
}

/// The in-memory binder runs the kit too (from stream-core's own tests).
#[test]
fn the_in_memory_binder_runs_the_kit() {
    let test = std::fs::read_to_string(root().join("crates/stream-core/tests/conformance.rs"))
        .unwrap_or_default();
    assert!(test.contains("InMemoryBinderFactory") && test.contains(".run()"));
}
