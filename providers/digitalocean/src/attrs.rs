//! Reading typed values out of an [`Attrs`] map: strings, numbers, bools,
//! lists and nested blocks, treating `null` as absent and reporting a wrong
//! type as [`ProviderError::Config`] naming the attribute (never its value,
//! which may be sensitive). Also the normalisation of set-like lists
//! (sorted, without duplicates) that Terraform models as sets.

use berth_provider::{Attrs, ProviderError, Value};

fn non_null<'a>(attrs: &'a Attrs, key: &str) -> Option<&'a Value> {
    attrs.get(key).filter(|v| !v.is_null())
}

fn type_error(key: &str, expected: &str) -> ProviderError {
    ProviderError::Config(format!("`{key}` must be {expected}"))
}

/// An optional string (numbers and bools are taken as their text).
pub(crate) fn string(attrs: &Attrs, key: &str) -> Result<Option<String>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(type_error(key, "a string")),
    }
}

/// A string that must be present and not empty.
pub(crate) fn required_string(attrs: &Attrs, key: &str) -> Result<String, ProviderError> {
    match string(attrs, key)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ProviderError::Config(format!("`{key}` is required"))),
    }
}

/// An optional string that is treated as absent when empty.
pub(crate) fn non_empty_string(attrs: &Attrs, key: &str) -> Result<Option<String>, ProviderError> {
    Ok(string(attrs, key)?.filter(|s| !s.is_empty()))
}

/// An optional bool (`"true"`/`"false"` strings are accepted too).
pub(crate) fn boolean(attrs: &Attrs, key: &str) -> Result<Option<bool>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(type_error(key, "a bool")),
    }
}

/// An optional list of strings (numbers are taken as their text).
pub(crate) fn string_list(attrs: &Attrs, key: &str) -> Result<Option<Vec<String>>, ProviderError> {
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

/// A list of strings used as a set: sorted (numerically when every item is
/// a whole number, as droplet ids are) and without duplicates. Absent is
/// empty.
pub(crate) fn string_set(attrs: &Attrs, key: &str) -> Result<Vec<String>, ProviderError> {
    Ok(sorted_set(string_list(attrs, key)?.unwrap_or_default()))
}

/// Sorts and de-duplicates `items` the way [`string_set`] does.
pub(crate) fn sorted_set(mut items: Vec<String>) -> Vec<String> {
    let numeric = items
        .iter()
        .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    if numeric {
        items.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    } else {
        items.sort();
    }
    items.dedup();
    items
}

/// A list of strings as a JSON value.
pub(crate) fn list_value(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect())
}

fn object_to_attrs(key: &str, value: &Value) -> Result<Attrs, ProviderError> {
    match value {
        Value::Object(map) => Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        _ => Err(type_error(key, "a block")),
    }
}

/// A `Nesting::List` block: a list of objects (one object is taken as a list
/// of one).
pub(crate) fn blocks(attrs: &Attrs, key: &str) -> Result<Vec<Attrs>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|v| object_to_attrs(key, v)).collect(),
        Some(v @ Value::Object(_)) => Ok(vec![object_to_attrs(key, v)?]),
        Some(_) => Err(type_error(key, "a list of blocks")),
    }
}

/// A `Nesting::Single` block: one object (a list of one is accepted).
pub(crate) fn block(attrs: &Attrs, key: &str) -> Result<Option<Attrs>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(object_to_attrs(key, v)?)),
        Some(Value::Array(items)) if items.is_empty() => Ok(None),
        Some(Value::Array(items)) if items.len() == 1 => Ok(Some(object_to_attrs(key, &items[0])?)),
        Some(_) => Err(type_error(key, "a single block")),
    }
}

/// Whether an address (`digitalocean_droplet.web`,
/// `module.app.digitalocean_droplet.web[0]`) names a resource of
/// `type_name`.
pub(crate) fn address_is_type(address: &str, type_name: &str) -> bool {
    let needle = format!("{type_name}.");
    address.starts_with(&needle) || address.contains(&format!(".{needle}"))
}

/// A JSON value read from an API object as a string: strings as they are,
/// numbers (ids) as their decimal text.
pub(crate) fn json_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The strings of a JSON array read from an API object (numbers as text).
pub(crate) fn json_strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|items| items.iter().filter_map(|i| json_text(Some(i))).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Attrs {
        object_to_attrs("t", &v).unwrap()
    }

    #[test]
    fn sets_are_sorted_and_deduplicated() {
        let a = attrs(json!({"ids": ["10", "9", "10"], "tags": ["web", "app", "web"]}));
        assert_eq!(string_set(&a, "ids").unwrap(), vec!["9", "10"]);
        assert_eq!(string_set(&a, "tags").unwrap(), vec!["app", "web"]);
        assert!(string_set(&a, "missing").unwrap().is_empty());
    }

    #[test]
    fn blocks_accept_single_object() {
        let a = attrs(json!({"rule": {"protocol": "tcp"}, "t": [{"create": "1m"}]}));
        assert_eq!(blocks(&a, "rule").unwrap().len(), 1);
        assert!(block(&a, "t").unwrap().is_some());
    }

    #[test]
    fn addresses_are_matched_by_type() {
        assert!(address_is_type(
            "digitalocean_droplet.web",
            "digitalocean_droplet"
        ));
        assert!(address_is_type(
            "module.a.digitalocean_droplet.web",
            "digitalocean_droplet"
        ));
        assert!(!address_is_type(
            "digitalocean_firewall.web",
            "digitalocean_droplet"
        ));
    }
}
