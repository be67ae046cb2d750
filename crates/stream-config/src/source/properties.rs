//! `.properties` files, parsed as `java.util.Properties` does.

use super::Entry;
use crate::error::ConfigError;
use crate::origin::Origin;

/// Parses `.properties` text: `key=value`, `key: value`, `key value`, `#`/`!` comments, `\`
/// line continuations and escapes (`\t`, `\n`, `\r`, `\f`, `\uXXXX`, `\<any>`).
pub(crate) fn parse(name: &str, text: &str) -> Result<Vec<Entry>, ConfigError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start_line = i + 1;
        let first = lines[i].trim_start_matches([' ', '\t', '\u{c}']);
        i += 1;
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        // Join continuation lines (an odd number of trailing backslashes).
        let mut logical = String::from(first);
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.get(i) {
                Some(next) => {
                    logical.push_str(next.trim_start_matches([' ', '\t', '\u{c}']));
                    i += 1;
                }
                None => break,
            }
        }
        let origin = Origin::File {
            name: name.to_owned(),
            line: start_line,
        };
        let (raw_key, raw_value) = split_key_value(&logical);
        let key = unescape(raw_key).map_err(|m| parse_error(&origin, m))?;
        let value = unescape(raw_value).map_err(|m| parse_error(&origin, m))?;
        out.push(Entry::new(key, value, origin));
    }
    Ok(out)
}

fn parse_error(origin: &Origin, message: String) -> ConfigError {
    ConfigError::Parse {
        origin: origin.to_string(),
        message,
    }
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// Splits at the first unescaped `=`, `:` or whitespace (then one `=`/`:` after whitespace).
fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' => {
                return (
                    &line[..i],
                    line[i + 1..].trim_start_matches([' ', '\t', '\u{c}']),
                );
            }
            b' ' | b'\t' | b'\x0c' => {
                let rest = line[i..].trim_start_matches([' ', '\t', '\u{c}']);
                let rest = rest.strip_prefix(['=', ':']).unwrap_or(rest);
                return (&line[..i], rest.trim_start_matches([' ', '\t', '\u{c}']));
            }
            _ => i += 1,
        }
    }
    (line, "")
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| format!("malformed \\uXXXX escape `\\u{hex}`"))?;
                // Surrogate pairs (\uD83D\uDE00) form one character.
                if (0xD800..0xDC00).contains(&code) {
                    let save = chars.clone();
                    let low = (chars.next() == Some('\\') && chars.next() == Some('u'))
                        .then(|| chars.by_ref().take(4).collect::<String>())
                        .and_then(|h| u32::from_str_radix(&h, 16).ok())
                        .filter(|l| (0xDC00..0xE000).contains(l));
                    match low {
                        Some(low) => {
                            let cp = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                        }
                        None => {
                            chars = save;
                            out.push('\u{fffd}');
                        }
                    }
                } else {
                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn kv(text: &str) -> Vec<(String, String, usize)> {
        parse("t.properties", text)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| {
                let line = match e.origin {
                    crate::Origin::File { line, .. } => line,
                    _ => 0,
                };
                (e.raw_key, e.value, line)
            })
            .collect()
    }

    #[test]
    fn properties_separators_comments_escapes_and_continuations() {
        let text = "# comment\n! also comment\n  a=1\nb: 2\nc 3\nd = spaced value  \nlong=one, \\\n    two, \\\n    three\nesc=tab\\there\\nnl \\u0041\\u00e9 \\\\ back\nkey\\ with\\ spaces=v\\=x\nempty\nemoji=\\uD83D\\uDE00\nafter=ok\n";
        let got = kv(text);
        let want: Vec<(String, String, usize)> = vec![
            ("a", "1", 3),
            ("b", "2", 4),
            ("c", "3", 5),
            ("d", "spaced value  ", 6),
            ("long", "one, two, three", 7),
            ("esc", "tab\there\nnl A\u{e9} \\ back", 10),
            ("key with spaces", "v=x", 11),
            ("empty", "", 12),
            ("emoji", "\u{1F600}", 13),
            ("after", "ok", 14),
        ]
        .into_iter()
        .map(|(k, v, l)| (k.to_owned(), v.to_owned(), l))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn bad_unicode_escape_names_file_and_line() {
        let err = parse("app.properties", "ok=1\nbad=\\u12G4\n")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("app.properties:2"), "{err}");
        assert!(err.contains("\\uXXXX"), "{err}");
    }
}
