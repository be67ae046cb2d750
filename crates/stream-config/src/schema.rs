//! The tree of known keys, built from property descriptors. Used to map environment variable names
//! to keys and to validate keys.

use crate::descriptor::{PropertyDescriptor, PropertyKind};
use crate::key;

/// A node of the key tree.
#[derive(Clone)]
pub(crate) enum Node {
    /// A single value.
    Leaf,
    /// A list value (`[i]` allowed).
    List,
    /// Anything below.
    Map,
    /// The fields of a properties struct, plus extra children.
    Props(fn() -> Vec<PropertyDescriptor>, Vec<(String, Node)>),
    /// Fixed children, an optional free segment (e.g. a binding name), and whether unknown children
    /// are allowed.
    Group {
        children: Vec<(String, Node)>,
        free: Option<Box<Node>>,
        open: bool,
    },
    /// Start again at the root (a binder's `environment.*`).
    Root,
}

impl Node {
    /// A closed group of fixed children.
    pub(crate) fn group(children: Vec<(&str, Node)>) -> Node {
        Node::Group {
            children: children
                .into_iter()
                .map(|(n, c)| (n.to_owned(), c))
                .collect(),
            free: None,
            open: false,
        }
    }
    /// An open group (unknown children allowed).
    pub(crate) fn open(children: Vec<(&str, Node)>) -> Node {
        match Node::group(children) {
            Node::Group { children, free, .. } => Node::Group {
                children,
                free,
                open: true,
            },
            other => other,
        }
    }
    /// Any one segment, then `child`.
    pub(crate) fn free(child: Node) -> Node {
        Node::Group {
            children: Vec::new(),
            free: Some(Box::new(child)),
            open: false,
        }
    }
    /// The node for a properties struct.
    pub(crate) fn props(f: fn() -> Vec<PropertyDescriptor>) -> Node {
        Node::Props(f, Vec::new())
    }
}

struct Expanded<'a> {
    children: Vec<(String, Node)>,
    free: Option<&'a Node>,
    open: bool,
}

fn expand(node: &Node) -> Option<Expanded<'_>> {
    match node {
        Node::Props(f, extra) => {
            let mut children: Vec<(String, Node)> = f()
                .into_iter()
                .map(|d| {
                    let n = match d.kind {
                        PropertyKind::Value => Node::Leaf,
                        PropertyKind::List => Node::List,
                        PropertyKind::Map => Node::Map,
                        PropertyKind::Nested(g) => Node::props(g),
                    };
                    (d.name, n)
                })
                .collect();
            children.extend(extra.iter().cloned());
            Some(Expanded {
                children,
                free: None,
                open: false,
            })
        }
        Node::Group {
            children,
            free,
            open,
        } => Some(Expanded {
            children: children.clone(),
            free: free.as_deref(),
            open: *open,
        }),
        _ => None,
    }
}

/// Maps the words of an environment variable name (lower-case, split on `_`) to key segments,
/// matching known segments (dashes removed, longest first) and letting free segments absorb as
/// few words as needed for the rest to match. `None` if the words fit no known key.
pub(crate) fn map_env_words(root: &Node, words: &[String]) -> Option<String> {
    let segs = walk_env(root, root, words, 0)?;
    Some(segs.iter().fold(String::new(), |acc, s| key::join(&acc, s)))
}

fn fallback(words: &[String]) -> Vec<String> {
    words
        .iter()
        .map(|w| {
            if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) {
                format!("[{w}]")
            } else {
                w.clone()
            }
        })
        .collect()
}

fn walk_env(root: &Node, node: &Node, words: &[String], i: usize) -> Option<Vec<String>> {
    let n = words.len();
    match node {
        Node::Leaf => (i == n).then(Vec::new),
        Node::List => {
            if i == n {
                Some(Vec::new())
            } else if i + 1 == n && words[i].bytes().all(|b| b.is_ascii_digit()) {
                Some(vec![format!("[{}]", words[i])])
            } else {
                None
            }
        }
        Node::Map => (i < n).then(|| vec![words[i..].join(".")]),
        Node::Root => walk_env(root, root, words, i),
        _ => {
            if i == n {
                return None;
            }
            let ex = expand(node)?;
            let mut matches: Vec<(usize, &String, &Node)> = Vec::new();
            for (name, child) in &ex.children {
                let compact = name.replace('-', "");
                let mut joined = String::new();
                for k in 1..=n - i {
                    joined.push_str(&words[i + k - 1]);
                    if joined.len() > compact.len() {
                        break;
                    }
                    if joined == compact {
                        matches.push((k, name, child));
                    }
                }
            }
            matches.sort_by_key(|m| std::cmp::Reverse(m.0));
            for (k, name, child) in matches {
                if let Some(mut rest) = walk_env(root, child, words, i + k) {
                    rest.insert(0, name.clone());
                    return Some(rest);
                }
            }
            if let Some(free) = ex.free {
                for k in 1..=n - i {
                    if let Some(mut rest) = walk_env(root, free, words, i + k) {
                        rest.insert(0, words[i..i + k].join("-"));
                        return Some(rest);
                    }
                }
            }
            ex.open.then(|| fallback(&words[i..]))
        }
    }
}

/// Spring Boot's plain mapping of an environment variable name: `_` -> `.`, numbers -> `[n]`.
pub(crate) fn plain_env_key(words: &[String]) -> String {
    fallback(words)
        .iter()
        .fold(String::new(), |acc, s| key::join(&acc, s))
}

/// Why a key is unknown.
#[derive(Debug)]
pub(crate) struct Unknown {
    /// The valid part of the key before the unknown segment.
    pub(crate) parent: String,
    /// The closest valid key.
    pub(crate) suggestion: Option<String>,
}

/// Checks a canonical key against the tree. `has_value` is false for an empty value (so `bindings:`
/// with nothing below it in YAML is fine).
pub(crate) fn validate(root: &Node, canonical: &str, has_value: bool) -> Result<(), Unknown> {
    let segs = key::split_canonical(canonical);
    walk_validate(root, root, &segs, 0, String::new(), has_value)
}

fn seg_text(seg: &(String, Vec<usize>)) -> String {
    let mut s = seg.0.clone();
    for i in &seg.1 {
        s.push_str(&format!("[{i}]"));
    }
    s
}

fn walk_validate(
    root: &Node,
    node: &Node,
    segs: &[(String, Vec<usize>)],
    i: usize,
    path: String,
    has_value: bool,
) -> Result<(), Unknown> {
    let n = segs.len();
    let extra = |path: &str| Unknown {
        parent: path.to_owned(),
        suggestion: Some(path.to_owned()),
    };
    match node {
        Node::Leaf | Node::List => {
            if i == n {
                Ok(())
            } else {
                Err(extra(&path))
            }
        }
        Node::Map => Ok(()),
        Node::Root => walk_validate(root, root, segs, i, path, has_value),
        _ => {
            if i == n {
                return if has_value {
                    Err(Unknown {
                        parent: path,
                        suggestion: None,
                    })
                } else {
                    Ok(())
                };
            }
            let Some(ex) = expand(node) else {
                return Ok(());
            };
            let (name, idx) = &segs[i];
            if let Some((cname, child)) = ex.children.iter().find(|(c, _)| c == name) {
                let index_ok = idx.is_empty() || matches!(child, Node::List | Node::Map);
                if !index_ok {
                    return Err(Unknown {
                        parent: path.clone(),
                        suggestion: Some(key::join(&path, cname)),
                    });
                }
                return walk_validate(
                    root,
                    child,
                    segs,
                    i + 1,
                    key::join(&path, &seg_text(&segs[i])),
                    has_value,
                );
            }
            if let Some(free) = ex.free {
                return walk_validate(
                    root,
                    free,
                    segs,
                    i + 1,
                    key::join(&path, &seg_text(&segs[i])),
                    has_value,
                );
            }
            if ex.open {
                return Ok(());
            }
            let names: Vec<&str> = ex.children.iter().map(|(c, _)| c.as_str()).collect();
            let suggestion = closest(name, &names).map(|best| {
                let mut s = key::join(&path, best);
                for seg in &segs[i + 1..] {
                    s = key::join(&s, &seg_text(seg));
                }
                s
            });
            Err(Unknown {
                parent: path,
                suggestion,
            })
        }
    }
}

/// The candidate closest to `word`, if close enough.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let w = word.replace('-', "");
    candidates
        .iter()
        .map(|c| {
            let cc = c.replace('-', "");
            let lev = strsim::normalized_damerau_levenshtein(&w, &cc);
            let jw = strsim::jaro_winkler(&w, &cc);
            (c, lev.max(jw - 0.1))
        })
        .filter(|(_, score)| *score >= 0.6)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| *c)
}
