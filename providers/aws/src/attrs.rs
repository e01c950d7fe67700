//! Reading typed values out of an [`Attrs`] map (strings, numbers, bools,
//! lists, maps and nested blocks), treating `null` as absent and reporting a
//! wrong type as [`ProviderError::Config`] naming the attribute, never its
//! value (it may be a secret). Also the set normalisation Terraform applies
//! to set-typed lists, and the merge of a configuration with what only AWS
//! knows into [`berth_provider::Applied`] attributes.

pub(crate) use berth_provider::attrs::{
    blocks, boolean, list_value, non_empty_string, required_string, string, string_list,
};
use berth_provider::attrs::{non_null, object_to_attrs, type_error};
use std::collections::BTreeMap;

use berth_provider::{Attrs, ProviderError, ResourceSchema, Value};

/// An optional whole number (`22`, `22.0` and `"22"` alike).
pub(crate) fn integer(attrs: &Attrs, key: &str) -> Result<Option<i64>, ProviderError> {
    let bad = || type_error(key, "a whole number");
    match non_null(attrs, key) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
            _ => Err(bad()),
        },
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// A list of strings used as a set: sorted and without duplicates. Absent
/// is empty.
pub(crate) fn string_set(attrs: &Attrs, key: &str) -> Result<Vec<String>, ProviderError> {
    Ok(sorted_set(string_list(attrs, key)?.unwrap_or_default()))
}

/// Sorts and de-duplicates `items`.
pub(crate) fn sorted_set(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items.dedup();
    items
}

/// An optional map of strings (`tags`). Absent is empty.
pub(crate) fn string_map(
    attrs: &Attrs,
    key: &str,
) -> Result<BTreeMap<String, String>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                _ => Err(type_error(key, "a map of strings")),
            })
            .collect(),
        Some(_) => Err(type_error(key, "a map of strings")),
    }
}

/// A map of strings as a JSON value.
pub(crate) fn map_value(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    )
}

/// A `Nesting::Single` block: one object (a list of one is accepted, as the
/// provider block's nested blocks arrive that way).
pub(crate) fn block(attrs: &Attrs, key: &str) -> Result<Option<Attrs>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(object_to_attrs(key, v)?)),
        Some(Value::Array(items)) if items.is_empty() => Ok(None),
        Some(Value::Array(items)) if items.len() == 1 => Ok(Some(object_to_attrs(key, &items[0])?)),
        Some(_) => Err(type_error(key, "a single block")),
    }
}

/// Whether an address (`aws_instance.web`, `module.app.aws_instance.web[0]`)
/// names a resource of `type_name`.
pub(crate) fn address_is_type(address: &str, type_name: &str) -> bool {
    let needle = format!("{type_name}.");
    address.starts_with(&needle) || address.contains(&format!(".{needle}"))
}

/// The configuration plus what only AWS knows: every computed attribute of
/// `seen` that the configuration does not set (computed-only ones always,
/// optional-and-computed ones when left out).
pub(crate) fn merge_applied(schema: &ResourceSchema, config: &Attrs, seen: Attrs) -> Attrs {
    let mut out = config.clone();
    for (k, v) in seen {
        let Some(attr) = schema.attribute(&k) else {
            continue;
        };
        let computed_only = attr.computed && !attr.optional && !attr.required;
        let fills_gap = attr.computed && config.get(&k).is_none_or(Value::is_null);
        if computed_only || fills_gap {
            out.insert(k, v);
        }
    }
    out
}

/// A name for an object whose configuration gives none (or only a
/// prefix): the prefix (default `berth-`) and 20 hex digits of a hash of
/// the owner's lineage and the address, so it is the same on every attempt
/// and unique per state and address.
pub(crate) fn generated_name(prefix: Option<&str>, lineage: &str, address: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{lineage}\0{address}").as_bytes());
    let hex = hex::encode(digest);
    format!("{}{}", prefix.unwrap_or("berth-"), &hex[..20])
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
        let a = attrs(json!({"ids": ["sg-b", "sg-a", "sg-b"]}));
        assert_eq!(string_set(&a, "ids").unwrap(), vec!["sg-a", "sg-b"]);
        assert!(string_set(&a, "missing").unwrap().is_empty());
    }

    #[test]
    fn integers_accept_floats_and_text() {
        let a = attrs(json!({"a": 22, "b": 22.0, "c": "-1", "d": 1.5, "e": true}));
        assert_eq!(integer(&a, "a").unwrap(), Some(22));
        assert_eq!(integer(&a, "b").unwrap(), Some(22));
        assert_eq!(integer(&a, "c").unwrap(), Some(-1));
        assert!(integer(&a, "d").is_err());
        assert!(integer(&a, "e").is_err());
        assert_eq!(integer(&a, "missing").unwrap(), None);
    }

    #[test]
    fn maps_and_blocks() {
        let a =
            attrs(json!({"tags": {"a": "1", "n": 2}, "e": [{"ec2": "x"}], "t": {"create": "1m"}}));
        let tags = string_map(&a, "tags").unwrap();
        assert_eq!(tags["n"], "2");
        assert!(block(&a, "e").unwrap().is_some());
        assert!(block(&a, "t").unwrap().is_some());
        assert_eq!(blocks(&a, "t").unwrap().len(), 1);
    }

    #[test]
    fn generated_names_are_stable() {
        let a = generated_name(None, "l", "aws_key_pair.k");
        assert_eq!(a, generated_name(None, "l", "aws_key_pair.k"));
        assert_ne!(a, generated_name(None, "m", "aws_key_pair.k"));
        assert!(a.starts_with("berth-") && a.len() == 26, "{a}");
        assert!(generated_name(Some("web-"), "l", "x").starts_with("web-"));
    }

    #[test]
    fn addresses_are_matched_by_type() {
        assert!(address_is_type("aws_instance.web", "aws_instance"));
        assert!(address_is_type(
            "module.a.aws_instance.web[0]",
            "aws_instance"
        ));
        assert!(!address_is_type("aws_instance_x.web", "aws_instance"));
    }
}
