//! What a YAML scalar means, and how to write one back.
//!
//! Plain scalars resolve as the Kubernetes YAML reader (go-yaml v2 behind
//! `sigs.k8s.io/yaml`) reads them, so a value means here what the apiserver
//! would store: `y`, `yes`, `on` are booleans, `012` is octal, `0x1F` is hex,
//! and a float with an integral value is the integer Go's JSON encoder would
//! print. Newly written scalars are quoted whenever a plain form could be
//! read as anything but the string.

use granit_parser::{ScalarStyle, Tag};
use serde_json::{Number, Value};

/// The JSON value of a scalar as written.
pub(crate) fn resolve(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag {
        return resolve_tagged(text, tag);
    }
    match style {
        ScalarStyle::Plain => resolve_plain(text),
        _ => Value::String(text.to_owned()),
    }
}

fn resolve_tagged(text: &str, tag: &Tag) -> Value {
    let core = |suffix| tag.is_yaml_core_schema_tag(suffix);
    if core("null") {
        Value::Null
    } else if core("bool") {
        boolean(text).map_or_else(|| Value::String(text.to_owned()), Value::Bool)
    } else if core("int") {
        integer(text).map_or_else(|| Value::String(text.to_owned()), Value::Number)
    } else if core("float") {
        float(text)
            .or_else(|| integer(text))
            .map_or_else(|| Value::String(text.to_owned()), Value::Number)
    } else {
        Value::String(text.to_owned())
    }
}

fn resolve_plain(text: &str) -> Value {
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if let Some(b) = boolean(text) {
        return Value::Bool(b);
    }
    if text.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '-' | '+' | '.'))
        && let Some(n) = integer(text).or_else(|| float(text))
    {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

fn boolean(text: &str) -> Option<bool> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` after dropping `_`, as go-yaml v2 does:
/// `0x`, `0o`, `0b` prefixes and a leading `0` for octal.
fn integer(text: &str) -> Option<Number> {
    let cleaned = text.replace('_', "");
    let (negative, digits) = match cleaned.as_bytes().first()? {
        b'-' => (true, &cleaned[1..]),
        b'+' => (false, &cleaned[1..]),
        _ => (false, cleaned.as_str()),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).ok()?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value)
        .ok()
        .map(Number::from)
        .or_else(|| u64::try_from(value).ok().map(Number::from))
}

/// A YAML float, as go-yaml v2 accepts it; integral values become integers,
/// as Go's JSON encoder writes them. `.inf` and `.nan` have no JSON form and
/// stay strings.
fn float(text: &str) -> Option<Number> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let shape_ok = digits(whole)
        && digits(fraction)
        && (!whole.is_empty() || !fraction.is_empty())
        && exponent.is_none_or(|e| {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        });
    if !shape_ok {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() < EXACT {
        // Integral and exactly representable: the cast cannot truncate.
        return Some(Number::from(value as i64));
    }
    Number::from_f64(value)
}

/// How a string scalar was written, to write its replacement alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quoting {
    /// Plain where that reads back as the same string, else single-quoted.
    Plain,
    /// Single-quoted.
    Single,
    /// Double-quoted, JSON escapes.
    Double,
}

/// `value` as one line of YAML (a scalar, or JSON for a container, which is
/// valid YAML flow).
pub(crate) fn inline(value: &Value, quoting: Quoting) -> String {
    match value {
        Value::String(s) => string(s, quoting),
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // Serializing a `Value` to JSON cannot fail.
        Value::Array(_) | Value::Object(_) => serde_json::to_string(value).unwrap_or_default(),
    }
}

/// A mapping key.
pub(crate) fn key(text: &str, quoting: Quoting) -> String {
    string(text, quoting)
}

fn string(s: &str, quoting: Quoting) -> String {
    let printable = !s.chars().any(|c| c.is_control());
    match quoting {
        Quoting::Plain if is_plain_safe(s) => s.to_owned(),
        Quoting::Plain | Quoting::Single if printable => format!("'{}'", s.replace('\'', "''")),
        // JSON string escapes are valid YAML double-quoted escapes.
        _ => Value::String(s.to_owned()).to_string(),
    }
}

/// Whether `s` written plain reads back as the string `s` in every YAML
/// reader: conservative on purpose, anything unusual gets quotes.
fn is_plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/' || first == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-'))
        && resolve_plain(s) == Value::String(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plain(text: &str) -> Value {
        resolve(text, ScalarStyle::Plain, None)
    }

    #[test]
    fn plain_scalars_read_as_the_apiserver_reads_them() {
        assert_eq!(plain("y"), json!(true));
        assert_eq!(plain("Off"), json!(false));
        assert_eq!(plain("~"), Value::Null);
        assert_eq!(plain("012"), json!(10));
        assert_eq!(plain("0x1F"), json!(31));
        assert_eq!(plain("0b101"), json!(5));
        assert_eq!(plain("1_000"), json!(1000));
        assert_eq!(plain("-42"), json!(-42));
        assert_eq!(plain("1e3"), json!(1000));
        assert!(plain("1e3").is_i64(), "an integral float is an integer");
        assert_eq!(plain("2.5"), json!(2.5));
        assert_eq!(plain(".inf"), json!(".inf"));
        assert_eq!(plain("1h30m"), json!("1h30m"));
        assert_eq!(plain("v1"), json!("v1"));
        assert_eq!(plain("2023-08-12"), json!("2023-08-12"));
        assert_eq!(
            resolve("012", ScalarStyle::SingleQuoted, None),
            json!("012")
        );
    }

    #[test]
    fn strings_are_quoted_unless_plain_reads_back_the_same() {
        assert_eq!(inline(&json!("v2"), Quoting::Plain), "v2");
        assert_eq!(inline(&json!("y"), Quoting::Plain), "'y'");
        assert_eq!(inline(&json!("012"), Quoting::Plain), "'012'");
        assert_eq!(inline(&json!("a: b"), Quoting::Plain), "'a: b'");
        assert_eq!(inline(&json!("it's"), Quoting::Single), "'it''s'");
        assert_eq!(inline(&json!("a\nb"), Quoting::Plain), "\"a\\nb\"");
        assert_eq!(inline(&json!("x"), Quoting::Double), "\"x\"");
        assert_eq!(inline(&json!(300), Quoting::Plain), "300");
    }
}
