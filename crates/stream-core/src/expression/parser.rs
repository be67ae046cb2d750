//! Recursive-descent parser producing the AST, with SpEL's operator precedence.

use super::ExpressionError;
use super::Value;
use super::lexer::{Tok, Token};

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinOp {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
        }
    }
}

/// Methods the subset knows, checked at parse time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    HashCode,
    ToString,
    Length,
    Size,
    IsEmpty,
    ToUpperCase,
    ToLowerCase,
    Trim,
    Substring,
    Equals,
    StartsWith,
    EndsWith,
    Contains,
}

impl Method {
    fn lookup(name: &str) -> Option<(Method, usize, usize)> {
        Some(match name {
            "hashCode" => (Method::HashCode, 0, 0),
            "toString" => (Method::ToString, 0, 0),
            "length" => (Method::Length, 0, 0),
            "size" => (Method::Size, 0, 0),
            "isEmpty" => (Method::IsEmpty, 0, 0),
            "toUpperCase" => (Method::ToUpperCase, 0, 0),
            "toLowerCase" => (Method::ToLowerCase, 0, 0),
            "trim" => (Method::Trim, 0, 0),
            "substring" => (Method::Substring, 1, 2),
            "equals" => (Method::Equals, 1, 1),
            "startsWith" => (Method::StartsWith, 1, 1),
            "endsWith" => (Method::EndsWith, 1, 1),
            "contains" => (Method::Contains, 1, 1),
            _ => return None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Method::HashCode => "hashCode",
            Method::ToString => "toString",
            Method::Length => "length",
            Method::Size => "size",
            Method::IsEmpty => "isEmpty",
            Method::ToUpperCase => "toUpperCase",
            Method::ToLowerCase => "toLowerCase",
            Method::Trim => "trim",
            Method::Substring => "substring",
            Method::Equals => "equals",
            Method::StartsWith => "startsWith",
            Method::EndsWith => "endsWith",
            Method::Contains => "contains",
        }
    }
}

/// Names of the supported methods, for error messages.
const METHODS: &str = "hashCode(), toString(), length(), size(), isEmpty(), toUpperCase(), \
    toLowerCase(), trim(), substring(..), equals(..), startsWith(..), endsWith(..), contains(..)";

/// The AST. `column` fields are 1-based, for evaluation errors.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    Literal(Value),
    /// The root object (`#root`, `#this`, or implicit before a bare name).
    Root,
    Property {
        target: Box<Node>,
        name: String,
        safe: bool,
        column: usize,
    },
    Index {
        target: Box<Node>,
        index: Box<Node>,
        column: usize,
    },
    Call {
        target: Box<Node>,
        method: Method,
        args: Vec<Node>,
        safe: bool,
        column: usize,
    },
    Neg {
        operand: Box<Node>,
        column: usize,
    },
    Not {
        operand: Box<Node>,
        column: usize,
    },
    Binary {
        op: BinOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
        column: usize,
    },
    And {
        lhs: Box<Node>,
        rhs: Box<Node>,
        column: usize,
    },
    Or {
        lhs: Box<Node>,
        rhs: Box<Node>,
        column: usize,
    },
    Ternary {
        cond: Box<Node>,
        then: Box<Node>,
        otherwise: Box<Node>,
        column: usize,
    },
    Elvis {
        value: Box<Node>,
        fallback: Box<Node>,
    },
}

impl Node {
    /// Whether the expression reads a property named `name` of the root (e.g. `payload`).
    pub(super) fn reads_root_property(&self, name: &str) -> bool {
        match self {
            Node::Literal(_) | Node::Root => false,
            Node::Property {
                target, name: n, ..
            } => (**target == Node::Root && n == name) || target.reads_root_property(name),
            Node::Index { target, index, .. } => {
                let direct = **target == Node::Root
                    && matches!(&**index, Node::Literal(Value::String(s)) if s == name);
                direct || target.reads_root_property(name) || index.reads_root_property(name)
            }
            Node::Call { target, args, .. } => {
                target.reads_root_property(name) || args.iter().any(|a| a.reads_root_property(name))
            }
            Node::Neg { operand, .. } | Node::Not { operand, .. } => {
                operand.reads_root_property(name)
            }
            Node::Binary { lhs, rhs, .. }
            | Node::And { lhs, rhs, .. }
            | Node::Or { lhs, rhs, .. } => {
                lhs.reads_root_property(name) || rhs.reads_root_property(name)
            }
            Node::Ternary {
                cond,
                then,
                otherwise,
                ..
            } => {
                cond.reads_root_property(name)
                    || then.reads_root_property(name)
                    || otherwise.reads_root_property(name)
            }
            Node::Elvis { value, fallback } => {
                value.reads_root_property(name) || fallback.reads_root_property(name)
            }
        }
    }
}

/// Parses a token stream (ending with `Eof`) into a [`Node`].
pub(super) fn parse(tokens: Vec<Token>) -> Result<Node, ExpressionError> {
    let mut p = Parser { tokens, pos: 0 };
    if p.peek() == &Tok::Eof {
        return Err(ExpressionError::at(1, "empty expression"));
    }
    let node = p.expression()?;
    let tok = p.current();
    if tok.kind != Tok::Eof {
        return Err(unexpected(tok));
    }
    Ok(node)
}

fn unexpected(tok: &Token) -> ExpressionError {
    ExpressionError::at(
        tok.column,
        format!("unexpected token {}", tok.kind.describe()),
    )
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn current(&self) -> &Token {
        // The stream always ends with Eof and `advance` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek(&self) -> &Tok {
        &self.current().kind
    }

    fn advance(&mut self) -> Token {
        let tok = self.current().clone();
        if tok.kind != Tok::Eof {
            self.pos += 1;
        }
        tok
    }

    fn eat(&mut self, kind: &Tok) -> bool {
        if self.peek() == kind {
            self.advance();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, kind: &Tok, what: &str) -> Result<Token, ExpressionError> {
        if self.peek() == kind {
            Ok(self.advance())
        } else {
            let tok = self.current();
            Err(ExpressionError::at(
                tok.column,
                format!("expected {what} but found {}", tok.kind.describe()),
            ))
        }
    }

    fn expression(&mut self) -> Result<Node, ExpressionError> {
        let cond = self.or()?;
        match self.peek() {
            Tok::Question => {
                let column = self.advance().column;
                let then = self.expression()?;
                self.expect(&Tok::Colon, "`:` of the ternary operator")?;
                let otherwise = self.expression()?;
                Ok(Node::Ternary {
                    cond: Box::new(cond),
                    then: Box::new(then),
                    otherwise: Box::new(otherwise),
                    column,
                })
            }
            Tok::Elvis => {
                self.advance();
                let fallback = self.expression()?;
                Ok(Node::Elvis {
                    value: Box::new(cond),
                    fallback: Box::new(fallback),
                })
            }
            _ => Ok(cond),
        }
    }

    fn or(&mut self) -> Result<Node, ExpressionError> {
        let mut lhs = self.and()?;
        while self.peek() == &Tok::Or {
            let column = self.advance().column;
            let rhs = self.and()?;
            lhs = Node::Or {
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                column,
            };
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<Node, ExpressionError> {
        let mut lhs = self.relational()?;
        while self.peek() == &Tok::And {
            let column = self.advance().column;
            let rhs = self.relational()?;
            lhs = Node::And {
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                column,
            };
        }
        Ok(lhs)
    }

    /// SpEL allows one relational operator per level (`a < b < c` is an error).
    fn relational(&mut self) -> Result<Node, ExpressionError> {
        let lhs = self.additive()?;
        let op = match self.peek() {
            Tok::Eq => BinOp::Eq,
            Tok::Ne => BinOp::Ne,
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            _ => return Ok(lhs),
        };
        let column = self.advance().column;
        let rhs = self.additive()?;
        Ok(Node::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            column,
        })
    }

    fn additive(&mut self) -> Result<Node, ExpressionError> {
        let mut lhs = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => return Ok(lhs),
            };
            let column = self.advance().column;
            let rhs = self.multiplicative()?;
            lhs = Node::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                column,
            };
        }
    }

    fn multiplicative(&mut self) -> Result<Node, ExpressionError> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                Tok::Percent => BinOp::Rem,
                _ => return Ok(lhs),
            };
            let column = self.advance().column;
            let rhs = self.unary()?;
            lhs = Node::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                column,
            };
        }
    }

    fn unary(&mut self) -> Result<Node, ExpressionError> {
        match self.peek() {
            Tok::Minus => {
                let column = self.advance().column;
                let operand = self.unary()?;
                Ok(Node::Neg {
                    operand: Box::new(operand),
                    column,
                })
            }
            Tok::Plus => {
                self.advance();
                self.unary()
            }
            Tok::Not => {
                let column = self.advance().column;
                let operand = self.unary()?;
                Ok(Node::Not {
                    operand: Box::new(operand),
                    column,
                })
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Node, ExpressionError> {
        let mut node = self.primary()?;
        loop {
            match self.peek() {
                Tok::Dot | Tok::SafeDot => {
                    let safe = self.advance().kind == Tok::SafeDot;
                    let tok = self.advance();
                    let Tok::Ident(name) = tok.kind else {
                        return Err(ExpressionError::at(
                            tok.column,
                            format!(
                                "expected a property or method name after `.` but found {}",
                                tok.kind.describe()
                            ),
                        ));
                    };
                    node = self.member(node, name, tok.column, safe)?;
                }
                Tok::LBracket => {
                    let column = self.advance().column;
                    let index = self.expression()?;
                    self.expect(&Tok::RBracket, "`]`")?;
                    node = Node::Index {
                        target: Box::new(node),
                        index: Box::new(index),
                        column,
                    };
                }
                _ => return Ok(node),
            }
        }
    }

    /// `name` or `name(args)` applied to `target`.
    fn member(
        &mut self,
        target: Node,
        name: String,
        column: usize,
        safe: bool,
    ) -> Result<Node, ExpressionError> {
        if self.peek() != &Tok::LParen {
            return Ok(Node::Property {
                target: Box::new(target),
                name,
                safe,
                column,
            });
        }
        self.advance();
        let mut args = Vec::new();
        if !self.eat(&Tok::RParen) {
            loop {
                args.push(self.expression()?);
                if self.eat(&Tok::RParen) {
                    break;
                }
                self.expect(&Tok::Comma, "`,` or `)`")?;
            }
        }
        let Some((method, min, max)) = Method::lookup(&name) else {
            return Err(ExpressionError::at(
                column,
                format!("unknown method `{name}()`; supported: {METHODS}"),
            ));
        };
        if args.len() < min || args.len() > max {
            return Err(ExpressionError::at(
                column,
                format!(
                    "method `{name}` takes {} but was given {}",
                    if min == max {
                        format!("{min} argument(s)")
                    } else {
                        format!("{min} to {max} arguments")
                    },
                    args.len()
                ),
            ));
        }
        Ok(Node::Call {
            target: Box::new(target),
            method,
            args,
            safe,
            column,
        })
    }

    fn primary(&mut self) -> Result<Node, ExpressionError> {
        let tok = self.advance();
        Ok(match tok.kind {
            Tok::Int(v) => Node::Literal(Value::Int(v)),
            Tok::Long(v) => Node::Literal(Value::Long(v)),
            Tok::Double(v) => Node::Literal(Value::Double(v)),
            Tok::Str(s) => Node::Literal(Value::String(s)),
            Tok::LParen => {
                let inner = self.expression()?;
                self.expect(&Tok::RParen, "`)`")?;
                inner
            }
            Tok::LBracket => {
                // `['k']` indexes the root object, as in SpEL.
                let index = self.expression()?;
                self.expect(&Tok::RBracket, "`]`")?;
                Node::Index {
                    target: Box::new(Node::Root),
                    index: Box::new(index),
                    column: tok.column,
                }
            }
            Tok::Var(name) => match name.as_str() {
                "root" | "this" => Node::Root,
                other => {
                    return Err(ExpressionError::at(
                        tok.column,
                        format!(
                            "unknown variable `#{other}`; only `#root` and `#this` are supported"
                        ),
                    ));
                }
            },
            Tok::Ident(name) => {
                if name.eq_ignore_ascii_case("null") {
                    Node::Literal(Value::Null)
                } else if name.eq_ignore_ascii_case("true") {
                    Node::Literal(Value::Bool(true))
                } else if name.eq_ignore_ascii_case("false") {
                    Node::Literal(Value::Bool(false))
                } else {
                    self.member(Node::Root, name, tok.column, false)?
                }
            }
            _ => return Err(unexpected(&tok)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::tokenize;
    use super::*;

    fn parse_str(src: &str) -> Result<Node, ExpressionError> {
        parse(tokenize(src)?)
    }

    fn lit(v: i32) -> Box<Node> {
        Box::new(Node::Literal(Value::Int(v)))
    }

    #[test]
    fn expression_parser_precedence() {
        // 1 + 2 * 3 -> 1 + (2 * 3)
        let node = parse_str("1 + 2 * 3").ok();
        assert_eq!(
            node,
            Some(Node::Binary {
                op: BinOp::Add,
                lhs: lit(1),
                rhs: Box::new(Node::Binary {
                    op: BinOp::Mul,
                    lhs: lit(2),
                    rhs: lit(3),
                    column: 7,
                }),
                column: 3,
            })
        );
        // Unary minus binds tighter than `%`.
        assert_eq!(
            parse_str("-7 % 3").ok(),
            Some(Node::Binary {
                op: BinOp::Rem,
                lhs: Box::new(Node::Neg {
                    operand: lit(7),
                    column: 1
                }),
                rhs: lit(3),
                column: 4,
            })
        );
    }

    #[test]
    fn expression_parser_reports_columns() {
        let cases = [
            ("payload.id)", 11, "unexpected token `)`"),
            ("(1 + 2", 7, "expected `)` but found end of expression"),
            ("headers[", 9, "unexpected token end of expression"),
            ("payload.", 9, "expected a property or method name"),
            ("payload.foo()", 9, "unknown method `foo()`"),
            (
                "hashCode(1)",
                1,
                "method `hashCode` takes 0 argument(s) but was given 1",
            ),
            ("", 1, "empty expression"),
            ("1 < 2 < 3", 7, "unexpected token `<`"),
            ("#foo", 1, "unknown variable `#foo`"),
            ("a ? b", 6, "expected `:`"),
        ];
        for (src, column, message) in cases {
            let err = parse_str(src).err();
            assert_eq!(
                err.as_ref().map(|e| e.column),
                Some(column),
                "{src}: {err:?}"
            );
            assert!(
                err.as_ref().is_some_and(|e| e.message.starts_with(message)),
                "{src}: {err:?}"
            );
        }
    }

    #[test]
    fn expression_parser_tracks_payload_references() {
        let reads = |src: &str| {
            parse_str(src)
                .map(|n| n.reads_root_property("payload"))
                .unwrap_or_default()
        };
        assert!(reads("payload"));
        assert!(reads("headers['a'] + payload.b"));
        assert!(reads("#root['payload']"));
        assert!(!reads("headers['payload']"));
        assert!(!reads("headers.payload"));
        assert!(!reads("'payload'"));
    }
}
