//! Tree-walking evaluator.

use std::cell::OnceCell;
use std::cmp::Ordering;

use super::EvalError;
use super::parser::{BinOp, Method, Node};
use super::value::Value;
use crate::message::Headers;

/// What the expression's root object is.
pub(super) enum Root<'m> {
    /// A message: `payload` and `headers` are its properties.
    Message {
        payload: &'m [u8],
        headers: &'m Headers,
    },
    /// A plain value (the partition key for a selector expression).
    Value(&'m Value),
}

/// Per-evaluation state: the root and the payload, decoded at most once and only if read.
pub(super) struct Ctx<'m> {
    pub(super) root: Root<'m>,
    pub(super) payload: OnceCell<Value>,
}

/// An intermediate result that can borrow from the message or the decoded payload.
enum Item<'c> {
    Owned(Value),
    Ref(&'c Value),
    Json(&'c serde_json::Value),
    Headers(&'c Headers),
    Message,
}

impl Item<'_> {
    fn into_value(self) -> Result<Value, EvalError> {
        Ok(match self {
            Item::Owned(v) => v,
            Item::Ref(v) => v.clone(),
            Item::Json(j) => Value::from_json_ref(j),
            Item::Headers(h) => {
                let map = h
                    .iter()
                    .map(|(k, v)| {
                        let json = match Value::from_header(v) {
                            Value::Json(j) => j,
                            Value::Null => serde_json::Value::Null,
                            Value::Bool(b) => b.into(),
                            Value::Int(i) => i.into(),
                            Value::Long(i) => i.into(),
                            Value::Double(d) => serde_json::Number::from_f64(d)
                                .map_or(serde_json::Value::Null, serde_json::Value::Number),
                            Value::String(s) => s.into(),
                        };
                        (k.to_owned(), json)
                    })
                    .collect();
                Value::Json(serde_json::Value::Object(map))
            }
            Item::Message => return Err(EvalError::MessageAsValue),
        })
    }

    fn is_null(&self) -> bool {
        match self {
            Item::Owned(v) => v.is_null(),
            Item::Ref(v) => v.is_null(),
            Item::Json(j) => j.is_null(),
            _ => false,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Item::Owned(v) => v.type_name(),
            Item::Ref(v) => v.type_name(),
            Item::Json(serde_json::Value::Object(_)) => "JSON object",
            Item::Json(serde_json::Value::Array(_)) => "JSON array",
            Item::Json(j) => Value::from_json_ref(j).type_name(),
            Item::Headers(_) => "headers",
            Item::Message => "message",
        }
    }
}

/// Whether the bytes are a JSON content type: `application/json` or any `+json` suffix.
fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// Decodes the payload: JSON when the content type says so (or is absent and the bytes parse),
/// else UTF-8 text (lossy).
fn decode_payload(payload: &[u8], headers: &Headers) -> Value {
    let try_json = match headers.get_str(crate::message::names::CONTENT_TYPE) {
        Some(ct) => is_json_content_type(ct),
        None => !headers.contains(crate::message::names::CONTENT_TYPE),
    };
    if try_json && let Ok(json) = serde_json::from_slice::<serde_json::Value>(payload) {
        return Value::from_json(json);
    }
    Value::String(String::from_utf8_lossy(payload).into_owned())
}

impl<'m> Ctx<'m> {
    pub(super) fn eval(&self, node: &Node) -> Result<Value, EvalError> {
        self.item(node)?.into_value()
    }

    fn payload(&self) -> Option<&Value> {
        match self.root {
            Root::Message { payload, headers } => Some(
                self.payload
                    .get_or_init(|| decode_payload(payload, headers)),
            ),
            Root::Value(_) => None,
        }
    }

    fn item<'c>(&'c self, node: &Node) -> Result<Item<'c>, EvalError>
    where
        'm: 'c,
    {
        match node {
            Node::Literal(v) => Ok(Item::Owned(v.clone())),
            Node::Root => Ok(match self.root {
                Root::Message { .. } => Item::Message,
                Root::Value(v) => Item::Ref(v),
            }),
            Node::Property {
                target,
                name,
                safe,
                column,
            } => {
                let target = self.item(target)?;
                if target.is_null() {
                    return if *safe {
                        Ok(Item::Owned(Value::Null))
                    } else {
                        Err(EvalError::NullTarget {
                            access: format!("property `{name}`"),
                            column: *column,
                        })
                    };
                }
                self.property(target, name, *column)
            }
            Node::Index {
                target,
                index,
                column,
            } => {
                let target = self.item(target)?;
                let index = self.eval(index)?;
                if target.is_null() {
                    return Err(EvalError::NullTarget {
                        access: format!("index [{index}]"),
                        column: *column,
                    });
                }
                match index {
                    Value::String(name) => self.property(target, &name, *column),
                    Value::Int(i) => element(target, i.into(), *column),
                    Value::Long(i) => element(target, i, *column),
                    other => Err(EvalError::Index {
                        index: other.to_string(),
                        target: target.type_name(),
                        column: *column,
                    }),
                }
            }
            Node::Call {
                target,
                method,
                args,
                safe,
                column,
            } => {
                let target = self.item(target)?;
                if target.is_null() {
                    return if *safe {
                        Ok(Item::Owned(Value::Null))
                    } else {
                        Err(EvalError::NullTarget {
                            access: format!("method `{}()`", method.name()),
                            column: *column,
                        })
                    };
                }
                let args = args
                    .iter()
                    .map(|a| self.eval(a))
                    .collect::<Result<Vec<_>, _>>()?;
                call(target, *method, &args, *column).map(Item::Owned)
            }
            Node::Neg { operand, column } => {
                let v = self.eval(operand)?;
                Ok(Item::Owned(match v {
                    Value::Int(i) => Value::Int(i.wrapping_neg()),
                    Value::Long(i) => Value::Long(i.wrapping_neg()),
                    Value::Double(d) => Value::Double(-d),
                    other => {
                        return Err(EvalError::Operator {
                            op: "-",
                            left: other.type_name(),
                            right: "",
                            column: *column,
                        });
                    }
                }))
            }
            Node::Not { operand, column } => {
                let b = as_bool(&self.eval(operand)?, *column)?;
                Ok(Item::Owned(Value::Bool(!b)))
            }
            Node::And { lhs, rhs, column } => {
                let v = as_bool(&self.eval(lhs)?, *column)? && as_bool(&self.eval(rhs)?, *column)?;
                Ok(Item::Owned(Value::Bool(v)))
            }
            Node::Or { lhs, rhs, column } => {
                let v = as_bool(&self.eval(lhs)?, *column)? || as_bool(&self.eval(rhs)?, *column)?;
                Ok(Item::Owned(Value::Bool(v)))
            }
            Node::Ternary {
                cond,
                then,
                otherwise,
                column,
            } => {
                if as_bool(&self.eval(cond)?, *column)? {
                    self.item(then)
                } else {
                    self.item(otherwise)
                }
            }
            Node::Elvis { value, fallback } => {
                let v = self.item(value)?;
                let empty = v.is_null()
                    || matches!(&v, Item::Owned(Value::String(s)) if s.is_empty())
                    || matches!(&v, Item::Ref(Value::String(s)) if s.is_empty())
                    || matches!(&v, Item::Json(serde_json::Value::String(s)) if s.is_empty());
                if empty { self.item(fallback) } else { Ok(v) }
            }
            Node::Binary {
                op,
                lhs,
                rhs,
                column,
            } => {
                let l = self.eval(lhs)?;
                let r = self.eval(rhs)?;
                binary(*op, l, r, *column).map(Item::Owned)
            }
        }
    }

    fn property<'c>(
        &'c self,
        target: Item<'c>,
        name: &str,
        column: usize,
    ) -> Result<Item<'c>, EvalError>
    where
        'm: 'c,
    {
        match target {
            Item::Message => match (name, &self.root) {
                ("payload", _) => Ok(self.payload().map_or(Item::Owned(Value::Null), Item::Ref)),
                ("headers", Root::Message { headers, .. }) => Ok(Item::Headers(headers)),
                _ => Err(EvalError::UnknownProperty {
                    property: name.to_owned(),
                    target: "message",
                    column,
                }),
            },
            Item::Headers(h) => Ok(Item::Owned(
                h.get(name).map_or(Value::Null, Value::from_header),
            )),
            Item::Json(serde_json::Value::Object(map))
            | Item::Ref(Value::Json(serde_json::Value::Object(map))) => {
                Ok(map.get(name).map_or(Item::Owned(Value::Null), Item::Json))
            }
            Item::Owned(Value::Json(serde_json::Value::Object(mut map))) => Ok(Item::Owned(
                map.remove(name).map_or(Value::Null, Value::from_json),
            )),
            other => Err(EvalError::UnknownProperty {
                property: name.to_owned(),
                target: other.type_name(),
                column,
            }),
        }
    }
}

fn element(target: Item<'_>, index: i64, column: usize) -> Result<Item<'_>, EvalError> {
    let out_of_bounds = |len: usize| EvalError::Index {
        index: format!("{index} (size {len})"),
        target: "JSON array",
        column,
    };
    match target {
        Item::Json(serde_json::Value::Array(items))
        | Item::Ref(Value::Json(serde_json::Value::Array(items))) => usize::try_from(index)
            .ok()
            .and_then(|i| items.get(i))
            .map(Item::Json)
            .ok_or_else(|| out_of_bounds(items.len())),
        Item::Owned(Value::Json(serde_json::Value::Array(mut items))) => {
            let len = items.len();
            match usize::try_from(index) {
                Ok(i) if i < len => Ok(Item::Owned(Value::from_json(items.swap_remove(i)))),
                _ => Err(out_of_bounds(len)),
            }
        }
        other => Err(EvalError::Index {
            index: index.to_string(),
            target: other.type_name(),
            column,
        }),
    }
}

fn as_bool(v: &Value, column: usize) -> Result<bool, EvalError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(EvalError::NotBoolean {
            found: other.type_name(),
            column,
        }),
    }
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn call(
    target: Item<'_>,
    method: Method,
    args: &[Value],
    column: usize,
) -> Result<Value, EvalError> {
    let target = target.into_value()?;
    let not_applicable = |target: &Value| EvalError::MethodNotApplicable {
        method: method.name(),
        target: target.type_name(),
        column,
    };
    let string_arg = |i: usize| match args.get(i) {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(other) => Err(EvalError::MethodNotApplicable {
            method: method.name(),
            target: other.type_name(),
            column,
        }),
        None => Err(not_applicable(&Value::Null)),
    };
    Ok(match (method, &target) {
        (Method::HashCode, v) => Value::Int(v.java_hash_code()),
        (Method::ToString, v) => Value::String(v.to_string()),
        (Method::Equals, v) => Value::Bool(args.first().is_some_and(|a| java_equals(v, a))),
        (Method::Length, Value::String(s)) => Value::Int(s.encode_utf16().count() as i32),
        (Method::Size, Value::Json(serde_json::Value::Array(a))) => Value::Int(a.len() as i32),
        (Method::Size, Value::Json(serde_json::Value::Object(m))) => Value::Int(m.len() as i32),
        (Method::IsEmpty, Value::String(s)) => Value::Bool(s.is_empty()),
        (Method::IsEmpty, Value::Json(serde_json::Value::Array(a))) => Value::Bool(a.is_empty()),
        (Method::IsEmpty, Value::Json(serde_json::Value::Object(m))) => Value::Bool(m.is_empty()),
        (Method::ToUpperCase, Value::String(s)) => Value::String(s.to_uppercase()),
        (Method::ToLowerCase, Value::String(s)) => Value::String(s.to_lowercase()),
        // Java's trim() removes every char <= U+0020 at both ends.
        (Method::Trim, Value::String(s)) => Value::String(s.trim_matches(|c| c <= ' ').to_owned()),
        (Method::StartsWith, Value::String(s)) => Value::Bool(s.starts_with(string_arg(0)?)),
        (Method::EndsWith, Value::String(s)) => Value::Bool(s.ends_with(string_arg(0)?)),
        (Method::Contains, Value::String(s)) => Value::Bool(s.contains(string_arg(0)?)),
        (Method::Substring, Value::String(s)) => {
            let units = utf16(s);
            let int_arg = |i: usize, default: usize| match args.get(i) {
                None => Ok(default),
                Some(Value::Int(v)) => usize::try_from(*v).map_err(|_| EvalError::Index {
                    index: v.to_string(),
                    target: "String",
                    column,
                }),
                Some(other) => Err(EvalError::MethodNotApplicable {
                    method: method.name(),
                    target: other.type_name(),
                    column,
                }),
            };
            let begin = int_arg(0, 0)?;
            let end = int_arg(1, units.len())?;
            if begin > end || end > units.len() {
                return Err(EvalError::Index {
                    index: format!("{begin}..{end} (length {})", units.len()),
                    target: "String",
                    column,
                });
            }
            Value::String(String::from_utf16_lossy(&units[begin..end]))
        }
        (_, v) => return Err(not_applicable(v)),
    })
}

/// Numeric promotion as in SpEL: Double if either side is, else Long if either is, else Integer.
enum Num {
    Int(i32, i32),
    Long(i64, i64),
    Double(f64, f64),
}

fn promote(l: &Value, r: &Value) -> Option<Num> {
    let as_f64 = |v: &Value| match v {
        Value::Int(i) => Some(f64::from(*i)),
        Value::Long(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        _ => None,
    };
    let as_i64 = |v: &Value| match v {
        Value::Int(i) => Some(i64::from(*i)),
        Value::Long(i) => Some(*i),
        _ => None,
    };
    match (l, r) {
        (Value::Int(a), Value::Int(b)) => Some(Num::Int(*a, *b)),
        (Value::Double(_), _) | (_, Value::Double(_)) => Some(Num::Double(as_f64(l)?, as_f64(r)?)),
        _ => Some(Num::Long(as_i64(l)?, as_i64(r)?)),
    }
}

fn java_equals(l: &Value, r: &Value) -> bool {
    match promote(l, r) {
        Some(Num::Int(a, b)) => a == b,
        Some(Num::Long(a, b)) => a == b,
        Some(Num::Double(a, b)) => a == b,
        None => l == r,
    }
}

fn compare(l: &Value, r: &Value) -> Option<Ordering> {
    match promote(l, r) {
        Some(Num::Int(a, b)) => Some(a.cmp(&b)),
        Some(Num::Long(a, b)) => Some(a.cmp(&b)),
        Some(Num::Double(a, b)) => a.partial_cmp(&b),
        // String.compareTo compares UTF-16 code units.
        None => match (l, r) {
            (Value::String(a), Value::String(b)) => Some(a.encode_utf16().cmp(b.encode_utf16())),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        },
    }
}

fn binary(op: BinOp, l: Value, r: Value, column: usize) -> Result<Value, EvalError> {
    let type_error = |l: &Value, r: &Value| EvalError::Operator {
        op: op.symbol(),
        left: l.type_name(),
        right: r.type_name(),
        column,
    };
    match op {
        BinOp::Eq => return Ok(Value::Bool(java_equals(&l, &r))),
        BinOp::Ne => return Ok(Value::Bool(!java_equals(&l, &r))),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = compare(&l, &r).ok_or_else(|| type_error(&l, &r))?;
            return Ok(Value::Bool(match op {
                BinOp::Lt => ord.is_lt(),
                BinOp::Le => ord.is_le(),
                BinOp::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            }));
        }
        BinOp::Add if matches!(l, Value::String(_)) || matches!(r, Value::String(_)) => {
            return Ok(Value::String(format!("{l}{r}")));
        }
        _ => {}
    }
    let num = promote(&l, &r).ok_or_else(|| type_error(&l, &r))?;
    let zero = || EvalError::DivisionByZero { column };
    Ok(match num {
        // Java int/long arithmetic wraps; `/` and `%` truncate toward zero, the remainder
        // taking the sign of the dividend (Rust's `%` does the same).
        Num::Int(a, b) => Value::Int(match op {
            BinOp::Add => a.wrapping_add(b),
            BinOp::Sub => a.wrapping_sub(b),
            BinOp::Mul => a.wrapping_mul(b),
            BinOp::Div => a
                .checked_div(b)
                .or_else(|| (b == -1).then(|| a.wrapping_neg()))
                .ok_or_else(zero)?,
            _ => a
                .checked_rem(b)
                .or_else(|| (b == -1).then_some(0))
                .ok_or_else(zero)?,
        }),
        Num::Long(a, b) => Value::Long(match op {
            BinOp::Add => a.wrapping_add(b),
            BinOp::Sub => a.wrapping_sub(b),
            BinOp::Mul => a.wrapping_mul(b),
            BinOp::Div => a
                .checked_div(b)
                .or_else(|| (b == -1).then(|| a.wrapping_neg()))
                .ok_or_else(zero)?,
            _ => a
                .checked_rem(b)
                .or_else(|| (b == -1).then_some(0))
                .ok_or_else(zero)?,
        }),
        Num::Double(a, b) => Value::Double(match op {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            _ => a % b,
        }),
    })
}
