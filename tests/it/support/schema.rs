//! What the kube-apiserver does with a custom resource and its CRD's
//! structural schema on write: prune unknown fields, apply defaults, then
//! validate types, enums, required fields, formats, lengths, patterns and
//! the `x-kubernetes-validations` CEL rules ([`super::cel`]).

use regex::Regex;
use serde_json::{Map, Value};

use super::cel;

/// The outcome of a write.
#[derive(Debug)]
pub struct Admitted {
    /// The object as it would be stored: pruned and defaulted.
    pub stored: Value,
    /// Fields pruning dropped, e.g. `spec.provider.fake.valueMap`.
    pub pruned: Vec<String>,
}

/// Prunes, defaults and validates `object` against `schema` (a version's
/// `openAPIV3Schema`); `Err` lists every violation with its path.
pub fn admit(schema: &Value, object: &Value) -> Result<Admitted, Vec<String>> {
    let mut stored = object.clone();
    let mut pruned = Vec::new();
    if let (Value::Object(map), Some(Value::Object(properties))) =
        (&mut stored, schema.get("properties"))
    {
        // apiVersion, kind and metadata are the apiserver's, never pruned.
        let keep = ["apiVersion", "kind", "metadata"];
        map.retain(|name, _| {
            let known = keep.contains(&name.as_str()) || properties.contains_key(name);
            if !known {
                pruned.push(name.clone());
            }
            known
        });
        // metadata is the apiserver's ObjectMeta, whatever the CRD says.
        for (name, value) in map.iter_mut().filter(|(name, _)| *name != "metadata") {
            if let Some(child) = properties.get(name) {
                prune_and_default(child, value, name, &mut pruned);
            }
        }
    }
    let mut errors = Vec::new();
    if let (Value::Object(map), Some(Value::Object(properties))) =
        (&stored, schema.get("properties"))
    {
        for name in required(schema) {
            if !map.contains_key(name) {
                errors.push(format!("{name}: Required value"));
            }
        }
        for (name, value) in map.iter().filter(|(name, _)| *name != "metadata") {
            if let Some(child) = properties.get(name) {
                validate(child, value, name, &mut errors);
            }
        }
    }
    if errors.is_empty() {
        Ok(Admitted { stored, pruned })
    } else {
        Err(errors)
    }
}

fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn preserves(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

fn nullable(schema: &Value) -> bool {
    schema.get("nullable") == Some(&Value::Bool(true))
}

fn prune_and_default(schema: &Value, value: &mut Value, path: &str, pruned: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|s| s.is_object());
            if let Some(properties) = properties {
                if !preserves(schema) && additional.is_none() {
                    map.retain(|name, _| {
                        let known = properties.contains_key(name);
                        if !known {
                            pruned.push(format!("{path}.{name}"));
                        }
                        known
                    });
                }
                // A null the schema does not allow is dropped, then defaulted.
                map.retain(|name, v| {
                    !(v.is_null() && properties.get(name).is_some_and(|s| !nullable(s)))
                });
                for (name, child) in properties {
                    if let (false, Some(default)) = (map.contains_key(name), child.get("default")) {
                        map.insert(name.clone(), default.clone());
                    }
                }
                for (name, child_value) in map.iter_mut() {
                    if let Some(child) = properties.get(name) {
                        prune_and_default(child, child_value, &format!("{path}.{name}"), pruned);
                    }
                }
            } else if let Some(additional) = additional {
                for (name, child_value) in map.iter_mut() {
                    prune_and_default(additional, child_value, &format!("{path}[{name}]"), pruned);
                }
            } else if !preserves(schema) && schema.get("type") == Some(&json_type("object")) {
                // An object schema without properties keeps nothing.
                for name in map.keys() {
                    pruned.push(format!("{path}.{name}"));
                }
                map.clear();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_and_default(item_schema, item, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

fn json_type(name: &str) -> Value {
    Value::String(name.to_owned())
}

fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if !nullable(schema) {
            errors.push(format!("{path}: must not be null"));
        }
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let type_ok = match (schema.get("type").and_then(Value::as_str), value) {
        _ if int_or_string => value.is_i64() || value.is_u64() || value.is_string(),
        (None, _) => true,
        (Some("object"), Value::Object(_))
        | (Some("array"), Value::Array(_))
        | (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_))
        | (Some("number"), Value::Number(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if !type_ok {
        errors.push(format!(
            "{path}: Invalid value: must be of type {}",
            schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("int-or-string")
        ));
        return;
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: Unsupported value: {value}"));
    }
    match value {
        Value::String(s) => string(schema, s, path, errors),
        Value::Number(n) => {
            if let (Some(min), Some(x)) =
                (schema.get("minimum").and_then(Value::as_f64), n.as_f64())
                && x < min
            {
                errors.push(format!("{path}: must be at least {min}"));
            }
            if let (Some(max), Some(x)) =
                (schema.get("maximum").and_then(Value::as_f64), n.as_f64())
                && x > max
            {
                errors.push(format!("{path}: must be at most {max}"));
            }
        }
        Value::Array(items) => {
            count(schema, "minItems", "maxItems", items.len(), path, errors);
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => object(schema, map, value, path, errors),
        _ => {}
    }
}

fn string(schema: &Value, s: &str, path: &str, errors: &mut Vec<String>) {
    let length = s.chars().count();
    count(schema, "minLength", "maxLength", length, path, errors);
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match Regex::new(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => errors.push(format!("{path}: should match '{pattern}'")),
            Err(e) => errors.push(format!("{path}: pattern {pattern}: {e}")),
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("byte") {
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD.decode(s).is_err() {
            errors.push(format!("{path}: not base64"));
        }
    }
}

fn count(schema: &Value, min: &str, max: &str, n: usize, path: &str, errors: &mut Vec<String>) {
    let bound = |key| schema.get(key).and_then(Value::as_u64).map(|b| b as usize);
    if bound(min).is_some_and(|m| n < m) {
        errors.push(format!("{path}: {min} {}", bound(min).unwrap_or_default()));
    }
    if bound(max).is_some_and(|m| n > m) {
        errors.push(format!("{path}: {max} {}", bound(max).unwrap_or_default()));
    }
}

fn object(
    schema: &Value,
    map: &Map<String, Value>,
    value: &Value,
    path: &str,
    errors: &mut Vec<String>,
) {
    count(
        schema,
        "minProperties",
        "maxProperties",
        map.len(),
        path,
        errors,
    );
    for name in required(schema) {
        if !map.contains_key(name) {
            errors.push(format!("{path}.{name}: Required value"));
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|s| s.is_object());
    for (name, child) in map {
        if let Some(child_schema) = properties.and_then(|p| p.get(name)) {
            validate(child_schema, child, &format!("{path}.{name}"), errors);
        } else if let Some(additional) = additional {
            validate(additional, child, &format!("{path}[{name}]"), errors);
        }
    }
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        match cel::check(text, value) {
            Ok(true) => {}
            Ok(false) => errors.push(format!(
                "{path}: Invalid value: {}",
                rule.get("message").and_then(Value::as_str).unwrap_or(text)
            )),
            Err(e) => errors.push(format!("{path}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::admit;
    use serde_json::json;

    #[test]
    fn prunes_defaults_and_validates_as_the_apiserver_does() {
        let schema = json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "required": ["mode"],
            "properties": {
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "count": {"type": "integer", "minimum": 1},
                "auth": {"type": "object", "properties": {"x": {}, "y": {}},
                    "x-kubernetes-validations": [{"rule": "has(self.x) != has(self.y)", "message": "x or y"}]}
            }
        }}});
        let admitted = admit(
            &schema,
            &json!({"kind": "K", "spec": {"extra": 1, "count": 2}}),
        )
        .unwrap();
        assert_eq!(
            admitted.stored,
            json!({"kind": "K", "spec": {"mode": "a", "count": 2}})
        );
        assert_eq!(admitted.pruned, ["spec.extra"]);
        let errors = admit(
            &schema,
            &json!({"spec": {"mode": "c", "count": 0, "auth": {}}}),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "spec.auth: Invalid value: x or y",
                "spec.count: must be at least 1",
                "spec.mode: Unsupported value: \"c\""
            ]
        );
    }
}
