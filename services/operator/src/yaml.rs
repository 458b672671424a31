//! A small YAML writer for everything the operator prints (CRDs, rendered objects, the
//! `collections.yaml` it serves). It quotes every string a YAML 1.1 reader could take for
//! something else — kubectl and PyYAML read `on`, `yes`, `off` as booleans, and the serde YAML
//! writer (`yaml_serde`, like the `serde_yaml` it forks) writes them bare — and sorts mapping
//! keys, so the output means the same to every YAML reader and is the same in every build.

use serde::Serialize;
use serde_json::Value;

/// Serializes `value` as a block-style YAML document (no leading `---`).
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    let mut out = String::new();
    match &value {
        Value::Object(map) if !map.is_empty() => write_mapping(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => write_sequence(items, 0, &mut out),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    Ok(out)
}

/// A mapping's entries in sorted key order: the output must not depend on whether some other
/// crate in the build enabled `serde_json/preserve_order` (Cargo unifies features across the
/// workspace, so `cargo test --workspace` and `-p courier-operator` would disagree otherwise).
fn sorted(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn write_mapping(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (key, value) in sorted(map) {
        push_indent(indent, out);
        out.push_str(&scalar_string(key));
        out.push(':');
        write_value_after_key(value, indent, out);
    }
}

/// Writes what follows `key:` (or `- `): an inline scalar, a literal block or a nested block.
fn write_value_after_key(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_mapping(map, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            // kubectl style: a sequence under a key sits at the key's indentation.
            write_sequence(items, indent, out);
        }
        Value::String(s) if literal_block_ok(s) => {
            out.push_str(if s.ends_with('\n') { " |\n" } else { " |-\n" });
            for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
                if !line.is_empty() {
                    push_indent(indent + 2, out);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

fn write_sequence(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        push_indent(indent, out);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key shares the dash's line; the rest align under it.
                let mut first = true;
                for (key, value) in sorted(map) {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        push_indent(indent + 2, out);
                    }
                    out.push_str(&scalar_string(key));
                    out.push(':');
                    write_value_after_key(value, indent + 2, out);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_sequence(inner, indent + 2, out);
            }
            other => write_value_after_key(other, indent, out),
        }
    }
}

fn push_indent(indent: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_string(s),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A multi-line string that reads back exactly from a `|` / `|-` block.
fn literal_block_ok(s: &str) -> bool {
    let body = s.strip_suffix('\n').unwrap_or(s);
    s.contains('\n')
        && !body.is_empty()
        && !body.ends_with('\n')
        && !body.trim_start_matches('\n').starts_with([' ', '\t'])
        && body.split('\n').all(|line| !line.ends_with([' ', '\t']) && !line.contains(['\r', '\t']))
        && body.chars().all(|c| !c.is_control() || c == '\n')
}

/// A string written bare when that is unambiguous in YAML 1.1 and 1.2, else double-quoted
/// (JSON string syntax is a valid YAML double-quoted scalar).
fn scalar_string(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_owned()
    } else {
        serde_json::to_string(s).expect("strings always serialize")
    }
}

fn is_plain_safe(s: &str) -> bool {
    const YAML11_WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
    ];
    let Some(first) = s.chars().next() else { return false };
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && !YAML11_WORDS.contains(&s)
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.contains(" #")
        && s.chars().all(|c| c.is_ascii_alphanumeric() || " _./-()=,".contains(c))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn round_trip(value: Value) {
        let text = to_string(&value).unwrap();
        let back: Value = yaml_serde::from_str(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
        assert_eq!(back, value, "YAML was:\n{text}");
    }

    #[test]
    fn yaml_11_booleans_are_quoted() {
        let text =
            to_string(&json!({"on": ["create", "update"], "yes": "no", "plain": "word"})).unwrap();
        assert!(text.contains("\"on\":"), "{text}");
        assert!(text.contains("\"yes\": \"no\""), "{text}");
        assert!(text.contains("plain: word"), "{text}");
    }

    #[test]
    fn numbers_dates_and_indicators_stay_strings() {
        for s in [
            "1",
            "0.5",
            "-age",
            "2024-01-01",
            "1:20",
            ".inf",
            "@x",
            "`code`",
            "a: b",
            "a #b",
            "",
            " x",
            "x ",
        ] {
            let text = to_string(&json!({ "k": s })).unwrap();
            assert!(text.contains('"'), "{s:?} must be quoted: {text}");
            round_trip(json!({ "k": s }));
        }
    }

    #[test]
    fn nested_structures_round_trip() {
        round_trip(json!({
            "apiVersion": "apps/v1",
            "metadata": {"name": "x", "labels": {"app.kubernetes.io/name": "courier"}, "annotations": {}},
            "spec": {
                "replicas": 3,
                "ratio": 1.5,
                "flag": false,
                "none": null,
                "empty": [],
                "list": [
                    {"name": "a", "value": "1", "nested": [{"x": 1}, {"y": [1, 2]}]},
                    "plain",
                    ["inner", "seq"],
                    {}
                ],
                "text": "line one\nline two\n",
                "text_no_newline": "line one\n\nline three",
                "text_trailing_blank": "a\n\n",
                "text_indented": "  starts with spaces\nsecond",
                "text_blank_then_indented": "\n  indented after a blank line",
                "description": "Uses `backticks`, \"quotes\" and: colons"
            }
        }));
    }
}
