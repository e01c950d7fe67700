//! Reading typed values out of an [`Attrs`] map: strings, numbers, bools,
//! lists and nested blocks, treating `null` as absent and reporting a wrong
//! type as [`ProviderError::Config`] naming the attribute (never its value,
//! which may be sensitive). Also the normalisation of set-like lists
//! (sorted, without duplicates) that Terraform models as sets.

pub(crate) use berth_provider::attrs::{
    blocks, boolean, list_value, non_empty_string, required_string, string, string_list,
};
use berth_provider::attrs::{non_null, object_to_attrs, type_error};
use berth_provider::{Attrs, ProviderError, Value};

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
