//! A small value tree that every record renders into, so `crest show` prints
//! all fields of all records the same way as text and as JSON without a JSON
//! library.

use std::fmt::Write as _;

/// A record field's value for display.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An unsigned number.
    U(u64),
    /// A signed number.
    I(i64),
    /// A number best read in hex (addresses, masks).
    Hex(u64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Str(String),
    /// Raw bytes, shown as hex (registers, siginfo).
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// Named fields in order.
    Obj(Vec<(&'static str, Value)>),
    /// No value.
    Null,
}

impl Value {
    /// Bytes that are a path or name: text, invalid UTF-8 replaced.
    pub fn path(b: &[u8]) -> Value {
        Value::Str(String::from_utf8_lossy(b).into_owned())
    }

    /// Appends the JSON form.
    pub fn json(&self, out: &mut String) {
        match self {
            Value::U(v) => {
                let _ = write!(out, "{v}");
            }
            Value::I(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Hex(v) => {
                let _ = write!(out, "\"{v:#x}\"");
            }
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Str(s) => json_str(out, s),
            Value::Bytes(b) => {
                out.push('"');
                hex(out, b);
                out.push('"');
            }
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.json(out);
                }
                out.push(']');
            }
            Value::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_str(out, k);
                    out.push(':');
                    v.json(out);
                }
                out.push('}');
            }
            Value::Null => out.push_str("null"),
        }
    }

    /// Appends a compact one-line text form: `key=value key=value`.
    pub fn text(&self, out: &mut String) {
        match self {
            Value::U(v) => {
                let _ = write!(out, "{v}");
            }
            Value::I(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Hex(v) => {
                let _ = write!(out, "{v:#x}");
            }
            Value::Bool(b) => out.push_str(if *b { "yes" } else { "no" }),
            Value::Str(s) => text_str(out, s),
            Value::Bytes(b) if b.len() > 32 => {
                hex(out, &b[..32]);
                let _ = write!(out, "..({} bytes)", b.len());
            }
            Value::Bytes(b) => hex(out, b),
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.text(out);
                }
                out.push(']');
            }
            Value::Obj(fields) => {
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{k}=");
                    if matches!(v, Value::Obj(_)) {
                        out.push('{');
                        v.text(out);
                        out.push('}');
                    } else {
                        v.text(out);
                    }
                }
            }
            Value::Null => out.push('-'),
        }
    }
}

/// Lowercase hex of `b`.
pub fn hex(out: &mut String, b: &[u8]) {
    for x in b {
        let _ = write!(out, "{x:02x}");
    }
}

/// A JSON string literal.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Text with control characters escaped, so a hostile path cannot forge lines.
pub fn text_str(out: &mut String, s: &str) {
    if s.is_empty() || s.chars().any(|c| c.is_control() || c == ' ' || c == '"') {
        let _ = write!(out, "{s:?}");
    } else {
        out.push_str(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_nests() {
        let v = Value::Obj(vec![
            ("a", Value::U(1)),
            ("p", Value::path(b"x\"\n\x01")),
            (
                "l",
                Value::List(vec![Value::I(-2), Value::Hex(255), Value::Null]),
            ),
            ("b", Value::Bytes(vec![0xde, 0xad])),
        ]);
        let mut s = String::new();
        v.json(&mut s);
        assert_eq!(
            s,
            r#"{"a":1,"p":"x\"\n\u0001","l":[-2,"0xff",null],"b":"dead"}"#
        );
    }

    #[test]
    fn text_is_one_line_even_for_hostile_names() {
        let mut s = String::new();
        Value::Obj(vec![("path", Value::path(b"a\nb")), ("n", Value::U(3))]).text(&mut s);
        assert_eq!(s, r#"path="a\nb" n=3"#);
    }
}
