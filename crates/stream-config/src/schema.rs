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
    /// Accepted with anything below it, but without effect here (the doc line says why).
    NoEffect(String),
    /// Not a key anyone reads: every key below is an error that names the real key, which
    /// `target` computes from the rest of the key (canonical, relative to this node).
    Moved {
        /// The real key for the rest of the key.
        target: fn(&str) -> String,
        /// Why (shown with the error).
        note: String,
    },
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

    /// Puts `node` at `path` below `self`, creating open groups on the way; replaces what was
    /// there. A path through a leaf or map is left alone.
    pub(crate) fn graft(&mut self, path: &[String], node: Node) {
        let Some((first, rest)) = path.split_first() else {
            *self = node;
            return;
        };
        let children = match self {
            Node::Group { children, .. } => children,
            Node::Props(_, extra) => extra,
            _ => return,
        };
        match children.iter_mut().find(|(n, _)| n == first) {
            Some((_, child)) => child.graft(rest, node),
            None => {
                let mut child = Node::open(Vec::new());
                child.graft(rest, node);
                children.push((first.clone(), child));
            }
        }
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
                        PropertyKind::NoEffect => Node::NoEffect(d.description.clone()),
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
        Node::NoEffect(_) => Some(if i == n {
            Vec::new()
        } else {
            vec![words[i..].join(".")]
        }),
        Node::Moved { .. } => Some(fallback(&words[i..])),
        Node::Root => walk_env(root, root, words, i),
        _ => {
            if i == n {
                return None;
            }
            let ex = expand(node)?;
            let matches = env_word_matches(&ex.children, words, i);
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

/// Maps the words of an environment variable name (lower-case, split on `_`) to a key, matching
/// known segments (dashes removed, longest first) and letting free segments absorb as few words
/// as needed for the rest to match. Words that fit no known key (a misspelt variable) are matched
/// as far as the known keys go (free segments absorbing the words that leave the fewest unknown
/// ones) and the unknown rest becomes one kebab-case segment, so
/// `SPRING_CLOUD_STREAM_BINDINGS_VALIDATE_IN_0_GRUOP` is
/// `spring.cloud.stream.bindings.validate-in-0.gruop` and validation can suggest `group`. Below an
/// open group that no known child matches: Spring's plain mapping.
pub(crate) fn map_env_words(root: &Node, words: &[String]) -> String {
    match walk_lenient(root, root, words, 0) {
        Some((_, segs)) => segs.iter().fold(String::new(), |acc, s| key::join(&acc, s)),
        None => plain_env_key(words),
    }
}

/// How well words fit: an exact fit (no unknown word) wins, the first found among exact ones
/// (known segments longest first, free segments shortest first); else more known segments, then
/// fewer unknown words.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fit {
    known: usize,
    unknown: usize,
}

impl Fit {
    const EXACT: Fit = Fit {
        known: 0,
        unknown: 0,
    };
    fn better_than(self, other: Fit) -> bool {
        match (self.unknown, other.unknown) {
            (_, 0) => false,
            (0, _) => true,
            _ => {
                (self.known, std::cmp::Reverse(self.unknown))
                    > (other.known, std::cmp::Reverse(other.unknown))
            }
        }
    }
}

fn walk_lenient(
    root: &Node,
    node: &Node,
    words: &[String],
    i: usize,
) -> Option<(Fit, Vec<String>)> {
    let n = words.len();
    // The unknown rest: one kebab-case segment when it is close to a known name here (a
    // misspelt `MAX_ATTEMTPS`), else Spring's plain mapping (an unregistered binder's
    // `OTHER_BINDER_BROKERS`).
    let unknown_here = |names: &[&str]| {
        (i < n).then(|| {
            let joined = words[i..].join("-");
            let compact = joined.replace('-', "");
            let near = names.iter().any(|c| {
                strsim::normalized_damerau_levenshtein(&compact, &c.replace('-', "")) >= 0.7
            });
            let segs = if near {
                vec![joined]
            } else {
                fallback(&words[i..])
            };
            (
                Fit {
                    known: 0,
                    unknown: n - i,
                },
                segs,
            )
        })
    };
    match node {
        Node::Leaf | Node::List => walk_env(root, node, words, i)
            .map(|s| (Fit::EXACT, s))
            .or_else(|| unknown_here(&[])),
        Node::Map | Node::NoEffect(_) | Node::Moved { .. } => {
            walk_env(root, node, words, i).map(|s| (Fit::EXACT, s))
        }
        Node::Root => walk_lenient(root, root, words, i),
        _ => {
            if i == n {
                return None;
            }
            let ex = expand(node)?;
            let mut best: Option<(Fit, Vec<String>)> = None;
            let mut consider = |candidate: Option<(Fit, Vec<String>)>| {
                if let Some(c) = candidate
                    && best.as_ref().is_none_or(|b| c.0.better_than(b.0))
                {
                    best = Some(c);
                }
            };
            let matches = env_word_matches(&ex.children, words, i);
            for (k, name, child) in matches {
                consider(
                    walk_lenient(root, child, words, i + k).map(|(c, mut rest)| {
                        rest.insert(0, name.clone());
                        (
                            Fit {
                                known: c.known + 1,
                                ..c
                            },
                            rest,
                        )
                    }),
                );
            }
            if let Some(free) = ex.free {
                for k in 1..=n - i {
                    consider(walk_lenient(root, free, words, i + k).map(|(c, mut rest)| {
                        rest.insert(0, words[i..i + k].join("-"));
                        (c, rest)
                    }));
                }
            }
            if ex.open {
                // Anything is allowed here; a known child that matched still wins, so a typo
                // below it is reported.
                return best.or_else(|| Some((Fit::EXACT, fallback(&words[i..]))));
            }
            let names: Vec<&str> = ex.children.iter().map(|(c, _)| c.as_str()).collect();
            consider(unknown_here(&names));
            best
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
    /// Extra advice (a moved key says why).
    pub(crate) note: Option<String>,
}

/// What a valid key is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// A key that is read (or a free subtree).
    Read,
    /// A key accepted without effect; the doc line says why.
    NoEffect(String),
}

/// Checks a canonical key against the tree. `has_value` is false for an empty value (so `bindings:`
/// with nothing below it in YAML is fine).
pub(crate) fn validate(root: &Node, canonical: &str, has_value: bool) -> Result<Known, Unknown> {
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
) -> Result<Known, Unknown> {
    let n = segs.len();
    let extra = |path: &str| Unknown {
        parent: path.to_owned(),
        suggestion: Some(path.to_owned()),
        note: None,
    };
    match node {
        Node::Leaf | Node::List => {
            if i == n {
                Ok(Known::Read)
            } else {
                Err(extra(&path))
            }
        }
        Node::Map => Ok(Known::Read),
        Node::NoEffect(why) => Ok(Known::NoEffect(why.clone())),
        Node::Moved { target, note } => {
            let rest = segs[i..]
                .iter()
                .map(seg_text)
                .fold(String::new(), |acc, s| key::join(&acc, &s));
            Err(Unknown {
                parent: path,
                suggestion: Some(target(&rest)),
                note: Some(note.clone()),
            })
        }
        Node::Root => walk_validate(root, root, segs, i, path, has_value),
        _ => {
            if i == n {
                return if has_value {
                    Err(Unknown {
                        parent: path,
                        suggestion: None,
                        note: None,
                    })
                } else {
                    Ok(Known::Read)
                };
            }
            let Some(ex) = expand(node) else {
                return Ok(Known::Read);
            };
            let (name, idx) = &segs[i];
            if let Some((cname, child)) = ex.children.iter().find(|(c, _)| c == name) {
                let index_ok =
                    idx.is_empty() || matches!(child, Node::List | Node::Map | Node::NoEffect(_));
                if !index_ok {
                    return Err(Unknown {
                        parent: path.clone(),
                        suggestion: Some(key::join(&path, cname)),
                        note: None,
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
                return Ok(Known::Read);
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
                note: None,
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

/// The children whose name (dashes removed) is spelt by one or more env-var words from `i`,
/// with how many words each takes, longest first.
fn env_word_matches<'n>(
    children: &'n [(String, Node)],
    words: &[String],
    i: usize,
) -> Vec<(usize, &'n String, &'n Node)> {
    let mut matches: Vec<(usize, &String, &Node)> = Vec::new();
    for (name, child) in children {
        let compact = name.replace('-', "");
        let mut joined = String::new();
        for (k, word) in words.iter().skip(i).enumerate() {
            joined.push_str(word);
            if joined.len() > compact.len() {
                break;
            }
            if joined == compact {
                matches.push((k + 1, name, child));
            }
        }
    }
    matches.sort_by_key(|m| std::cmp::Reverse(m.0));
    matches
}
