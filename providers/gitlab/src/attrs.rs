//! Reading typed values out of an [`Attrs`] map, treating `null` as absent.
//! A wrong type is reported as a message naming the attribute, never its
//! value (which may be a secret).

use berth_provider::{Attrs, ProviderError, Value};

fn non_null<'a>(attrs: &'a Attrs, key: &str) -> Option<&'a Value> {
    attrs.get(key).filter(|v| !v.is_null())
}

/// "`key` must be ..." as a config error.
pub(crate) fn type_error(key: &str, expected: &str) -> ProviderError {
    ProviderError::Config(format!("`{key}` must be {expected}"))
}

/// An optional string (numbers and bools are taken as their text, so that
/// `project = 42` works).
pub(crate) fn string(attrs: &Attrs, key: &str) -> Result<Option<String>, ProviderError> {
    match non_null(attrs, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
            _ => n.to_string(),
        })),
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

/// The message of a config error, for an [`berth_provider::AttrProblem`].
pub(crate) fn problem_text(error: &ProviderError) -> String {
    match error {
        ProviderError::Config(message) => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_read_as_strings() {
        let a: Attrs = [("p".to_owned(), json!(42)), ("f".to_owned(), json!(42.0))]
            .into_iter()
            .collect();
        assert_eq!(string(&a, "p").unwrap().as_deref(), Some("42"));
        assert_eq!(string(&a, "f").unwrap().as_deref(), Some("42"));
        assert!(required_string(&a, "missing").is_err());
        assert!(boolean(&a, "p").is_err());
    }
}
