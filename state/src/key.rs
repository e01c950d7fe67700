//! The per-state secret ([`StateKey`]) and the keyed hashes that stand in
//! for sensitive values in the state.
//!
//! State never holds a secret itself: a sensitive attribute is stored as
//! `hmac-sha256:<hex>` of its canonical JSON encoding, keyed with 32 random
//! bytes that live beside the state (`state.key`, mode 0600) or come from
//! `BERTH_STATE_KEY`. Whoever reads the state alone cannot brute-force short
//! secrets from it, and berth can still tell whether a secret changed.

use std::fmt;
use std::io::{self, Write as _};
use std::path::Path;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Attrs, StateError};

type HmacSha256 = Hmac<Sha256>;

/// Prefix of every keyed hash.
const PREFIX: &str = "hmac-sha256:";

/// Name of the environment variable that overrides the key file.
pub const KEY_ENV: &str = "BERTH_STATE_KEY";

/// Name of the key file inside the state directory.
pub const KEY_FILE: &str = "state.key";

/// The secret that keys the hashes of sensitive values: 32 random bytes.
///
/// Its [`Debug`] output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct StateKey {
    bytes: [u8; 32],
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

impl StateKey {
    /// A key made of the given bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> StateKey {
        StateKey { bytes }
    }

    /// A fresh random key.
    pub fn generate() -> StateKey {
        StateKey {
            bytes: rand::random(),
        }
    }

    /// The key from `BERTH_STATE_KEY` when it is set and not empty (64 hex
    /// characters are taken as the bytes, any other string is hashed with
    /// SHA-256), else the one in `dir/state.key`, created with 32 random
    /// bytes and mode 0600 when missing.
    pub fn load_or_create(dir: &Path) -> Result<StateKey, StateError> {
        load_or_create_with(dir, std::env::var(KEY_ENV).ok())
    }

    /// The keyed hash of `value`: `hmac-sha256:<hex>` over its canonical JSON
    /// encoding (object keys sorted, no whitespace).
    pub fn hash(&self, value: &Value) -> String {
        format!(
            "{PREFIX}{}",
            hex::encode(self.mac(value).finalize().into_bytes())
        )
    }

    /// `attrs` with every top-level attribute named in `sensitive` replaced by
    /// its keyed hash. Names that are missing or null are left alone.
    pub fn redact(&self, attrs: &Attrs, sensitive: &[String]) -> Attrs {
        let mut out = attrs.clone();
        for name in sensitive {
            if let Some(v) = out.get_mut(name)
                && !v.is_null()
            {
                *v = Value::String(self.hash(v));
            }
        }
        out
    }

    /// Whether `stored` is the keyed hash of `value` (compared in constant
    /// time).
    pub fn matches(&self, value: &Value, stored: &Value) -> bool {
        let Some(digest) = stored
            .as_str()
            .and_then(|s| s.strip_prefix(PREFIX))
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        self.mac(value).verify_slice(&digest).is_ok()
    }

    fn mac(&self, value: &Value) -> HmacSha256 {
        // HMAC takes keys of any length; 32 bytes cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.bytes) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        let mut canonical = Vec::new();
        write_canonical(value, &mut canonical);
        mac.update(&canonical);
        mac
    }
}

/// [`StateKey::load_or_create`] with the environment variable's value passed
/// in, so tests need not touch the process environment.
pub(crate) fn load_or_create_with(
    dir: &Path,
    from_env: Option<String>,
) -> Result<StateKey, StateError> {
    if let Some(s) = from_env.filter(|s| !s.is_empty()) {
        return Ok(StateKey::from_bytes(parse_or_derive(&s)));
    }
    let path = dir.join(KEY_FILE);
    let store_err = |message: String| StateError::Store {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return parse_hex(&text).map(StateKey::from_bytes).ok_or_else(|| {
                store_err(format!(
                    "the key file is not 64 hex characters; restore it, or set {KEY_ENV}"
                ))
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(store_err(format!("cannot read the key file: {e}"))),
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| store_err(format!("cannot create the state directory: {e}")))?;
    let key = StateKey::generate();
    let mut text = hex::encode(key.bytes);
    text.push('\n');
    match crate::fs_util::create_exclusive(&path, text.as_bytes(), 0o600) {
        Ok(()) => Ok(key),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| store_err(format!("cannot read the key file: {e}")))?;
            parse_hex(&text)
                .map(StateKey::from_bytes)
                .ok_or_else(|| store_err("the key file is not 64 hex characters".to_owned()))
        }
        Err(e) => Err(store_err(format!("cannot create the key file: {e}"))),
    }
}

/// 64 hex characters as bytes, else SHA-256 of the string.
fn parse_or_derive(s: &str) -> [u8; 32] {
    parse_hex(s).unwrap_or_else(|| Sha256::digest(s.as_bytes()).into())
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let mut out = [0u8; 32];
    (s.len() == 64 && hex::decode_to_slice(s, &mut out).is_ok()).then_some(out)
}

/// Writes `value` as JSON with object keys sorted bytewise and no whitespace,
/// whatever order the map keeps (serde_json's `preserve_order` may be on
/// elsewhere in the build).
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar JSON value into a Vec cannot fail; fall back to its
    // Display form (the same text) rather than panic.
    if serde_json::to_writer(&mut *out, value).is_err() {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_is_keyed_and_canonical() {
        let k1 = StateKey::from_bytes([1; 32]);
        let k2 = StateKey::from_bytes([2; 32]);
        let v = json!({"b": 1, "a": [true, null, "x"]});
        let h = k1.hash(&v);
        assert!(h.starts_with("hmac-sha256:"));
        assert_eq!(h.len(), PREFIX.len() + 64);
        assert_ne!(h, k2.hash(&v));
        assert_eq!(h, k1.hash(&json!({"a": [true, null, "x"], "b": 1})));
        let mut canonical = Vec::new();
        write_canonical(&v, &mut canonical);
        assert_eq!(canonical, br#"{"a":[true,null,"x"],"b":1}"#);
    }

    #[test]
    fn matches_only_the_same_value_and_key() {
        let k = StateKey::from_bytes([7; 32]);
        let stored = Value::String(k.hash(&json!("hunter2")));
        assert!(k.matches(&json!("hunter2"), &stored));
        assert!(!k.matches(&json!("hunter3"), &stored));
        assert!(!StateKey::from_bytes([8; 32]).matches(&json!("hunter2"), &stored));
        assert!(!k.matches(&json!("hunter2"), &json!("hunter2")));
        assert!(!k.matches(&json!("hunter2"), &json!("hmac-sha256:zz")));
        assert!(!k.matches(&json!("hunter2"), &json!(null)));
    }

    #[test]
    fn redact_replaces_only_named_present_values() {
        let k = StateKey::from_bytes([3; 32]);
        let attrs: Attrs = [
            ("password".to_owned(), json!("s3cret")),
            ("name".to_owned(), json!("web")),
            ("token".to_owned(), Value::Null),
        ]
        .into_iter()
        .collect();
        let sensitive = ["password", "token", "missing"].map(String::from);
        let out = k.redact(&attrs, &sensitive);
        assert_eq!(out["password"], Value::String(k.hash(&json!("s3cret"))));
        assert_eq!(out["name"], json!("web"));
        assert_eq!(out["token"], Value::Null);
        assert!(!out.contains_key("missing"));
        assert!(k.matches(&json!("s3cret"), &out["password"]));
    }

    #[test]
    fn debug_hides_the_key() {
        let k = StateKey::from_bytes([0xab; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let k1 = load_or_create_with(&nested, None).unwrap();
        let k2 = load_or_create_with(&nested, None).unwrap();
        assert_eq!(k1, k2);
        let text = std::fs::read_to_string(nested.join(KEY_FILE)).unwrap();
        assert_eq!(text.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(nested.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(&nested)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
    }

    #[test]
    fn env_value_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let hex64 = "11".repeat(32);
        let k = load_or_create_with(dir.path(), Some(hex64)).unwrap();
        assert_eq!(k, StateKey::from_bytes([0x11; 32]));
        let derived = load_or_create_with(dir.path(), Some("correct horse".into())).unwrap();
        assert_eq!(
            derived,
            StateKey::from_bytes(Sha256::digest(b"correct horse").into())
        );
        // The environment path never writes a key file.
        assert!(!dir.path().join(KEY_FILE).exists());
        // An empty value counts as unset.
        let from_file = load_or_create_with(dir.path(), Some(String::new())).unwrap();
        assert!(dir.path().join(KEY_FILE).exists());
        assert_eq!(from_file, load_or_create_with(dir.path(), None).unwrap());
    }

    #[test]
    fn bad_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "not hex").unwrap();
        let err = load_or_create_with(dir.path(), None).unwrap_err();
        assert!(matches!(err, StateError::Store { .. }), "{err}");
    }
}
