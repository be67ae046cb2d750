//! Tokenizer for the SpEL subset.

use super::ExpressionError;

/// A token with the 1-based column (in characters) where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Token {
    pub(super) kind: Tok,
    pub(super) column: usize,
}

/// Token kinds.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    /// `#root` / `#this` and other `#name` variables.
    Var(String),
    Int(i32),
    Long(i64),
    Double(f64),
    Str(String),
    Dot,
    SafeDot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Not,
    And,
    Or,
    Question,
    Elvis,
    Colon,
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Var(s) => format!("`#{s}`"),
            Tok::Int(v) => format!("`{v}`"),
            Tok::Long(v) => format!("`{v}L`"),
            Tok::Double(v) => format!("`{v}`"),
            Tok::Str(s) => format!("string literal '{s}'"),
            Tok::Eof => "end of expression".to_owned(),
            other => format!("`{}`", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::Dot => ".",
            Tok::SafeDot => "?.",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Not => "!",
            Tok::And => "&&",
            Tok::Or => "||",
            Tok::Question => "?",
            Tok::Elvis => "?:",
            Tok::Colon => ":",
            _ => "",
        }
    }
}

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub(super) fn tokenize(src: &str) -> Result<Vec<Token>, ExpressionError> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let peek = chars.get(i + 1).copied();
        let (kind, len) = match c {
            '.' => (Tok::Dot, 1),
            '[' => (Tok::LBracket, 1),
            ']' => (Tok::RBracket, 1),
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '+' => (Tok::Plus, 1),
            '-' => (Tok::Minus, 1),
            '*' => (Tok::Star, 1),
            '/' => (Tok::Slash, 1),
            '%' => (Tok::Percent, 1),
            ':' => (Tok::Colon, 1),
            '?' => match peek {
                Some('.') => (Tok::SafeDot, 2),
                Some(':') => (Tok::Elvis, 2),
                _ => (Tok::Question, 1),
            },
            '=' if peek == Some('=') => (Tok::Eq, 2),
            '!' if peek == Some('=') => (Tok::Ne, 2),
            '!' => (Tok::Not, 1),
            '<' if peek == Some('=') => (Tok::Le, 2),
            '<' => (Tok::Lt, 1),
            '>' if peek == Some('=') => (Tok::Ge, 2),
            '>' => (Tok::Gt, 1),
            '&' if peek == Some('&') => (Tok::And, 2),
            '|' if peek == Some('|') => (Tok::Or, 2),
            '\'' | '"' => {
                let (s, len) = lex_string(&chars, i)?;
                (Tok::Str(s), len)
            }
            '#' => {
                let len = ident_len(&chars, i + 1);
                if len == 0 {
                    return Err(ExpressionError::at(
                        column,
                        "expected a variable name after `#`",
                    ));
                }
                let name: String = chars[i + 1..i + 1 + len].iter().collect();
                (Tok::Var(name), len + 1)
            }
            c if c.is_ascii_digit() => lex_number(&chars, i)?,
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let len = ident_len(&chars, i);
                let word: String = chars[i..i + len].iter().collect();
                (keyword(word), len)
            }
            '=' => {
                return Err(ExpressionError::at(
                    column,
                    "assignment `=` is not supported (use `==` to compare)",
                ));
            }
            other => {
                return Err(ExpressionError::at(
                    column,
                    format!("unexpected character `{other}`"),
                ));
            }
        };
        tokens.push(Token { kind, column });
        i += len;
    }
    tokens.push(Token {
        kind: Tok::Eof,
        column: chars.len() + 1,
    });
    Ok(tokens)
}

/// SpEL's textual operators (`and`, `or`, `not`, `div`, `mod`, `eq`, ...), in any case, are
/// operators wherever they appear, as in SpEL's tokenizer.
fn keyword(word: String) -> Tok {
    match word.to_ascii_lowercase().as_str() {
        "and" => Tok::And,
        "or" => Tok::Or,
        "not" => Tok::Not,
        "div" => Tok::Slash,
        "mod" => Tok::Percent,
        "eq" => Tok::Eq,
        "ne" => Tok::Ne,
        "lt" => Tok::Lt,
        "le" => Tok::Le,
        "gt" => Tok::Gt,
        "ge" => Tok::Ge,
        _ => Tok::Ident(word),
    }
}

fn ident_len(chars: &[char], start: usize) -> usize {
    chars[start.min(chars.len())..]
        .iter()
        .take_while(|c| c.is_alphanumeric() || **c == '_' || **c == '$')
        .count()
}

/// A quoted literal; the quote character is doubled to escape it (`'it''s'`).
fn lex_string(chars: &[char], start: usize) -> Result<(String, usize), ExpressionError> {
    let quote = chars[start];
    let mut out = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(ExpressionError::at(
                    start + 1,
                    "unterminated string literal",
                ));
            }
            Some(&c) if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    out.push(quote);
                    i += 2;
                } else {
                    return Ok((out, i + 1 - start));
                }
            }
            Some(&c) => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// Integer (`42`, `42L`, `0x2A`), and real (`1.5`, `1e3`, `2.5d`) literals, as SpEL reads them:
/// an integer literal without `L` must fit a Java `int`.
fn lex_number(chars: &[char], start: usize) -> Result<(Tok, usize), ExpressionError> {
    let column = start + 1;
    let digits_from = |from: usize, radix: u32| {
        chars[from.min(chars.len())..]
            .iter()
            .take_while(|c| c.is_digit(radix))
            .count()
    };
    let is_long_suffix = |i: usize| matches!(chars.get(i), Some('l' | 'L'));

    // Hexadecimal.
    if chars[start] == '0' && matches!(chars.get(start + 1), Some('x' | 'X')) {
        let n = digits_from(start + 2, 16);
        if n == 0 {
            return Err(ExpressionError::at(
                column,
                "expected hex digits after `0x`",
            ));
        }
        let text: String = chars[start + 2..start + 2 + n].iter().collect();
        let mut len = 2 + n;
        let value = u64::from_str_radix(&text, 16).map_err(|_| {
            ExpressionError::at(column, format!("hex literal `0x{text}` is too large"))
        })?;
        if is_long_suffix(start + len) {
            len += 1;
            // Java reads hex literals as two's complement bit patterns.
            return Ok((Tok::Long(value as i64), len));
        }
        let value = u32::try_from(value).map_err(|_| {
            ExpressionError::at(
                column,
                format!("the value `0x{text}` cannot be parsed as an int (add `L` for a long)"),
            )
        })?;
        return Ok((Tok::Int(value as i32), len));
    }

    let int_len = digits_from(start, 10);
    let mut len = int_len;
    let mut real = false;
    if chars.get(start + len) == Some(&'.')
        && chars.get(start + len + 1).is_some_and(char::is_ascii_digit)
    {
        real = true;
        len += 1 + digits_from(start + len + 1, 10);
    }
    if matches!(chars.get(start + len), Some('e' | 'E')) {
        let mut exp = start + len + 1;
        if matches!(chars.get(exp), Some('+' | '-')) {
            exp += 1;
        }
        let n = digits_from(exp, 10);
        if n > 0 {
            real = true;
            len = exp + n - start;
        }
    }
    let text: String = chars[start..start + len].iter().collect();
    match chars.get(start + len) {
        Some('f' | 'F') => {
            return Err(ExpressionError::at(
                column,
                "float literals (`f` suffix) are not supported; use a double",
            ));
        }
        Some('d' | 'D') => real = true,
        _ => {}
    }
    if real {
        if matches!(chars.get(start + len), Some('d' | 'D')) {
            len += 1;
        }
        let v: f64 = text
            .parse()
            .map_err(|_| ExpressionError::at(column, format!("invalid number `{text}`")))?;
        return Ok((Tok::Double(v), len));
    }
    if is_long_suffix(start + len) {
        let v: i64 = text.parse().map_err(|_| {
            ExpressionError::at(
                column,
                format!("the value `{text}` cannot be parsed as a long"),
            )
        })?;
        return Ok((Tok::Long(v), len + 1));
    }
    let v: i32 = text.parse().map_err(|_| {
        ExpressionError::at(
            column,
            format!("the value `{text}` cannot be parsed as an int (add `L` for a long)"),
        )
    })?;
    Ok((Tok::Int(v), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        tokenize(src)
            .map(|t| t.into_iter().map(|t| t.kind).collect())
            .unwrap_or_default()
    }

    #[test]
    fn expression_lexes_literals_and_operators() {
        assert_eq!(
            kinds("payload.id + 'it''s' - 3L*2.5 % 0x10 ?: #root"),
            vec![
                Tok::Ident("payload".into()),
                Tok::Dot,
                Tok::Ident("id".into()),
                Tok::Plus,
                Tok::Str("it's".into()),
                Tok::Minus,
                Tok::Long(3),
                Tok::Star,
                Tok::Double(2.5),
                Tok::Percent,
                Tok::Int(16),
                Tok::Elvis,
                Tok::Var("root".into()),
                Tok::Eof,
            ]
        );
        assert_eq!(
            kinds(r#""say ""hi""" 1e3 7d a?.b"#),
            vec![
                Tok::Str("say \"hi\"".into()),
                Tok::Double(1000.0),
                Tok::Double(7.0),
                Tok::Ident("a".into()),
                Tok::SafeDot,
                Tok::Ident("b".into()),
                Tok::Eof,
            ]
        );
        assert_eq!(kinds("a AND b mod 2")[1], Tok::And);
    }

    #[test]
    fn expression_lexer_reports_columns() {
        let err = tokenize("payload + 'abc").err();
        assert_eq!(err.map(|e| e.column), Some(11));
        let err = tokenize("1 + 3000000000").err();
        assert_eq!(err.as_ref().map(|e| e.column), Some(5));
        assert!(err.is_some_and(|e| e.message.contains("cannot be parsed as an int")));
        assert_eq!(kinds("3000000000L")[0], Tok::Long(3_000_000_000));
        assert_eq!(tokenize("a ; b").err().map(|e| e.column), Some(3));
    }
}
