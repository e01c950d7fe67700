//! Reading typed values out of an [`Attrs`] map, as every provider does:
//! strings, bools, lists and nested blocks, treating `null` as absent and
//! reporting a wrong type as [`ProviderError::Config`] naming the attribute
//! (never its value, which may be sensitive).

use crate::{Attrs, ProviderError, Value};

/// The value at `key`, unless absent or `null`.
pub fn non_null<'a>(attrs: &'a Attrs, key: &str) -> Option<&'a Value> {
    attrs.get(key).filter(|v| !v.is_null())
}

/// The error for a value of the wrong type.
pub fn type_error(key: &str, expected: &str) -> ProviderError {
    ProviderError::Config(format!("`{key}` must be {expected}"))
}

/// An optional string (numbers and bools are taken as their text).
pub fn string(attrs: &Attrs, key: &str) -> Result<Option<String>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(type_error(key, "a string")),
    }
}

/// A string that must be present and not empty.
pub fn required_string(attrs: &Attrs, key: &str) -> Result<String, ProviderError> {
    match string(attrs, key)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ProviderError::Config(format!("`{key}` is required"))),
    }
}

/// An optional string that is treated as absent when empty.
pub fn non_empty_string(attrs: &Attrs, key: &str) -> Result<Option<String>, ProviderError> {
    Ok(string(attrs, key)?.filter(|s| !s.is_empty()))
}

/// An optional bool (`"true"`/`"false"` strings are accepted too).
pub fn boolean(attrs: &Attrs, key: &str) -> Result<Option<bool>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(type_error(key, "a bool")),
    }
}

/// An optional list of strings (numbers are taken as their text).
pub fn string_list(attrs: &Attrs, key: &str) -> Result<Option<Vec<String>>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(type_error(key, "a list of strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(type_error(key, "a list of strings")),
    }
}

/// A `Nesting::List` block: a list of objects (one object is taken as a list
/// of one).
pub fn blocks(attrs: &Attrs, key: &str) -> Result<Vec<Attrs>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|v| object_to_attrs(key, v)).collect(),
        Some(v @ Value::Object(_)) => Ok(vec![object_to_attrs(key, v)?]),
        Some(_) => Err(type_error(key, "a list of blocks")),
    }
}

/// A list of strings as a JSON value.
pub fn list_value(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect())
}

/// One block object as attributes.
pub fn object_to_attrs(key: &str, value: &Value) -> Result<Attrs, ProviderError> {
    match value {
        Value::Object(map) => Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        _ => Err(type_error(key, "a block")),
    }
}
