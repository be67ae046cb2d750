//! YAML files, flattened to Spring's dotted keys (`a.b`, lists as `a[0]`), with line numbers.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

use super::Entry;
use crate::error::ConfigError;
use crate::origin::Origin;

enum Frame {
    Map {
        path: String,
        key: Option<(String, usize)>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

/// Parses YAML text into flat entries. Several documents are read in order (later ones win);
/// `null`/`~`/empty values and empty collections become empty strings, as in Spring.
pub(crate) fn parse(name: &str, text: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut out = Vec::new();
    let origin = |line: usize| Origin::File {
        name: name.to_owned(),
        line,
    };
    loop {
        let (event, mark) = parser.next_token().map_err(|e| ConfigError::Parse {
            origin: origin(e.marker().line()).to_string(),
            message: e.info().to_owned(),
        })?;
        let line = mark.line();
        match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {}
            Event::Alias(_) => {
                return Err(ConfigError::Parse {
                    origin: origin(line).to_string(),
                    message: "YAML aliases (*name) are not supported; repeat the value".to_owned(),
                });
            }
            Event::Scalar(value, style, _, _) => {
                let is_null = style == TScalarStyle::Plain
                    && matches!(value.as_str(), "~" | "null" | "Null" | "NULL");
                match stack.last_mut() {
                    Some(Frame::Map {
                        key: key @ None, ..
                    }) => *key = Some((value, line)),
                    _ => {
                        let (path, line) = child_path(&mut stack, line);
                        out.push(Entry::new(
                            path,
                            if is_null { String::new() } else { value },
                            origin(line),
                        ));
                    }
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = if stack.is_empty() {
                    (String::new(), line)
                } else {
                    child_path(&mut stack, line)
                };
                // Remember where the collection started so an empty one can be recorded.
                out.push(Entry::new(path.0.clone(), String::new(), origin(path.1)));
                if matches!(event, Event::MappingStart(..)) {
                    stack.push(Frame::Map {
                        path: path.0,
                        key: None,
                    });
                } else {
                    stack.push(Frame::Seq {
                        path: path.0,
                        index: 0,
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
        }
    }
    // Drop the collection markers that got children (and the root's).
    let mut result: Vec<Entry> = Vec::with_capacity(out.len());
    for (i, e) in out.iter().enumerate() {
        if e.raw_key.is_empty() {
            continue;
        }
        let has_child = out[i + 1..].iter().any(|c| {
            c.raw_key.len() > e.raw_key.len()
                && c.raw_key.starts_with(&e.raw_key)
                && matches!(c.raw_key.as_bytes()[e.raw_key.len()], b'.' | b'[')
        });
        if !(has_child && e.value.is_empty()) {
            result.push(e.clone());
        }
    }
    Ok(result)
}

/// The path of the next child of the top frame (and the line to report), advancing the frame.
fn child_path(stack: &mut [Frame], line: usize) -> (String, usize) {
    match stack.last_mut() {
        Some(Frame::Map { path, key }) => match key.take() {
            Some((k, key_line)) => {
                let k = if k.starts_with('[') {
                    k
                } else {
                    format!(".{k}")
                };
                let full = if path.is_empty() {
                    k.trim_start_matches('.').to_owned()
                } else {
                    format!("{path}{k}")
                };
                (full, key_line)
            }
            None => (path.clone(), line),
        },
        Some(Frame::Seq { path, index }) => {
            let p = format!("{path}[{index}]");
            *index += 1;
            (p, line)
        }
        None => (String::new(), line),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn flat(text: &str) -> Vec<(String, String, String)> {
        parse("application.yml", text)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| (e.raw_key, e.value, e.origin.to_string()))
            .collect()
    }

    #[test]
    fn yaml_nested_maps_lists_and_lines() {
        let text = "spring:\n  cloud:\n    stream:\n      bindings:\n        input:\n          destination: orders\n          producer:\n            required-groups:\n              - a\n              - b\n            empty: []\n      instance-index-list: [1, 2]\n      nothing:\n";
        let got = flat(text);
        let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
        assert_eq!(
            got,
            vec![
                s(
                    "spring.cloud.stream.bindings.input.destination",
                    "orders",
                    "application.yml:6"
                ),
                s(
                    "spring.cloud.stream.bindings.input.producer.required-groups[0]",
                    "a",
                    "application.yml:9"
                ),
                s(
                    "spring.cloud.stream.bindings.input.producer.required-groups[1]",
                    "b",
                    "application.yml:10"
                ),
                s(
                    "spring.cloud.stream.bindings.input.producer.empty",
                    "",
                    "application.yml:11"
                ),
                s(
                    "spring.cloud.stream.instance-index-list[0]",
                    "1",
                    "application.yml:12"
                ),
                s(
                    "spring.cloud.stream.instance-index-list[1]",
                    "2",
                    "application.yml:12"
                ),
                s("spring.cloud.stream.nothing", "", "application.yml:13"),
            ]
        );
    }

    #[test]
    fn yaml_dotted_keys_and_list_of_maps() {
        let got = flat("spring.cloud.stream:\n  x:\n    - name: a\n      v: 1\n");
        let keys: Vec<_> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "spring.cloud.stream.x[0].name",
                "spring.cloud.stream.x[0].v"
            ]
        );
    }

    #[test]
    fn yaml_syntax_error_names_file_and_line() {
        let err = parse("application.yml", "a:\n  b: 1\n c: [\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("application.yml:"), "{err}");
    }
}
