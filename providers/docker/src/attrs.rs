//! Reading typed values out of an [`Attrs`] map: strings, numbers, bools,
//! lists, maps and nested blocks, treating `null` as absent and reporting a
//! wrong type as [`ProviderError::Config`] naming the attribute (never its
//! value, which may be sensitive).

use std::collections::BTreeMap;

use berth_provider::{Attrs, ProviderError, Value};

// The readers every provider shares; this module adds Docker's own below.
pub(crate) use berth_provider::attrs::{
    blocks, boolean, non_empty_string, non_null, object_to_attrs, required_string, string,
    string_list, type_error,
};

/// An optional whole number (JSON numbers may arrive as floats; numeric
/// strings are accepted too).
pub(crate) fn int(attrs: &Attrs, key: &str) -> Result<Option<i64>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                    _ => Err(type_error(key, "a whole number")),
                }
            }
        }
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| type_error(key, "a whole number")),
        Some(_) => Err(type_error(key, "a whole number")),
    }
}

/// An optional map of strings.
pub(crate) fn string_map(
    attrs: &Attrs,
    key: &str,
) -> Result<Option<BTreeMap<String, String>>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(None),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                _ => Err(type_error(key, "a map of strings")),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Some),
        Some(_) => Err(type_error(key, "a map of strings")),
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

/// The `labels { label = ..., value = ... }` blocks as a map; keys in
/// berth's own `berth.` namespace are refused.
pub(crate) fn user_labels(attrs: &Attrs) -> Result<BTreeMap<String, String>, ProviderError> {
    let mut labels = BTreeMap::new();
    for block in blocks(attrs, "labels")? {
        let label = required_string(&block, "label")
            .map_err(|_| ProviderError::Config("`labels.label` is required".to_owned()))?;
        if label.starts_with("berth.") {
            return Err(ProviderError::Config(format!(
                "label `{label}` is in berth's reserved `berth.` namespace"
            )));
        }
        let value = string(&block, "value")?.unwrap_or_default();
        labels.insert(label, value);
    }
    Ok(labels)
}

/// Whether a `berth.address` label names a resource of `type_name`
/// (`docker_container.web`, `module.app.docker_container.web`). Containers
/// inherit the labels of the image they run, so a container started from a
/// berth-built image carries a `docker_image.*` address that must be
/// ignored.
pub(crate) fn address_is_type(address: &str, type_name: &str) -> bool {
    let needle = format!("{type_name}.");
    address.starts_with(&needle) || address.contains(&format!(".{needle}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Attrs {
        object_to_attrs("t", &v).unwrap()
    }

    #[test]
    fn numbers_accept_floats_and_strings() {
        let a = attrs(json!({"a": 5.0, "b": "7", "c": 1.5, "d": null}));
        assert_eq!(int(&a, "a").unwrap(), Some(5));
        assert_eq!(int(&a, "b").unwrap(), Some(7));
        assert!(int(&a, "c").is_err());
        assert_eq!(int(&a, "d").unwrap(), None);
        assert_eq!(int(&a, "missing").unwrap(), None);
    }

    #[test]
    fn blocks_accept_single_object() {
        let a = attrs(json!({"ports": {"internal": 80}, "hc": [{"test": []}]}));
        assert_eq!(blocks(&a, "ports").unwrap().len(), 1);
        assert!(block(&a, "hc").unwrap().is_some());
    }

    #[test]
    fn addresses_are_matched_by_type() {
        assert!(address_is_type("docker_container.web", "docker_container"));
        assert!(address_is_type(
            "module.a.docker_container.web",
            "docker_container"
        ));
        assert!(!address_is_type("docker_image.web", "docker_container"));
        assert!(!address_is_type(
            "docker_containers.web",
            "docker_container"
        ));
    }

    #[test]
    fn reserved_labels_are_refused() {
        let a = attrs(json!({"labels": [{"label": "berth.env", "value": "x"}]}));
        assert!(user_labels(&a).is_err());
        let a = attrs(json!({"labels": [{"label": "team", "value": "x"}]}));
        assert_eq!(user_labels(&a).unwrap()["team"], "x");
    }
}
