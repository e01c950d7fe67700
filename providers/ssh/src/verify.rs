//! Host key policy: a pinned `SHA256:...` fingerprint or known_hosts line
//! (`host_key`), a known_hosts file (`known_hosts_file`), or trust on first
//! use through a [`KnownHostStore`]. There is deliberately no way to turn
//! host key checking off: every path either proves the key or refuses it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use russh::keys::{Algorithm, HashAlg, PublicKey};

use crate::error::SshError;
use crate::host::HostSpec;

/// Where first-use host keys are remembered; the engine implements it over
/// its state.
///
/// `host` is the spec's [`HostSpec::host_port`] (`address:port`, IPv6 in
/// brackets): host keys belong to the machine, not to the login user.
/// `fingerprint` is `SHA256:...` as printed by `ssh-keygen -l`.
pub trait KnownHostStore: Send + Sync {
    /// The fingerprint recorded for `host`, if any.
    fn recorded(&self, host: &str) -> Option<String>;
    /// Remembers `fingerprint` for `host` (called once, after the first
    /// successful login to a host with neither `host_key` nor
    /// `known_hosts_file`).
    fn record(&self, host: &str, fingerprint: &str);
}

/// A [`KnownHostStore`] in memory, for tests and one-shot tools.
#[derive(Debug, Default)]
pub struct MemoryKnownHosts {
    map: Mutex<HashMap<String, String>>,
}

impl MemoryKnownHosts {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl KnownHostStore for MemoryKnownHosts {
    fn recorded(&self, host: &str) -> Option<String> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
    }

    fn record(&self, host: &str, fingerprint: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_owned(), fingerprint.to_owned());
    }
}

/// The `SHA256:...` fingerprint of a public key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// What `host_key` pins.
#[derive(Debug, Clone)]
enum Pinned {
    /// A `SHA256:...` fingerprint.
    Fingerprint(String),
    /// Keys from known_hosts or `.pub` lines; any of them may match.
    Keys(Vec<PublicKey>),
}

/// The outcome of a successful check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The key matched a pin, the known_hosts file or the recorded key.
    Trusted,
    /// No policy and nothing recorded: trusted on first use; the caller
    /// records it once logged in.
    FirstUse,
}

/// The host key policy of one [`HostSpec`], validated before connecting.
#[derive(Debug, Clone)]
pub(crate) struct HostKeyPolicy {
    /// `user@address:port`, for messages.
    name: String,
    /// `address:port`, the [`KnownHostStore`] key.
    store_key: String,
    address: String,
    port: u16,
    pinned: Option<Pinned>,
    known_hosts_file: Option<PathBuf>,
}

impl HostKeyPolicy {
    /// Parses `host_key` and checks that `known_hosts_file` exists.
    pub(crate) fn from_spec(spec: &HostSpec) -> Result<Self, SshError> {
        let pinned = match spec.host_key.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_host_key(text).map_err(|why| {
                SshError::spec(format!("{}: invalid `host_key`: {why}", spec.key()))
            })?),
        };
        if let Some(path) = &spec.known_hosts_file
            && !path.is_file()
        {
            return Err(SshError::spec(format!(
                "{}: known_hosts_file {} does not exist or is not a file",
                spec.key(),
                path.display()
            )));
        }
        Ok(HostKeyPolicy {
            name: spec.key(),
            store_key: spec.host_port(),
            address: spec.address.clone(),
            port: spec.port,
            pinned,
            known_hosts_file: spec.known_hosts_file.clone(),
        })
    }

    /// The key under which a first-use fingerprint is recorded.
    pub(crate) fn store_key(&self) -> &str {
        &self.store_key
    }

    /// Host key algorithms to offer, most preferred first, when the policy
    /// knows the key types to expect (so a server holding several host keys
    /// presents the one we can check, as OpenSSH does). `None`: defaults.
    pub(crate) fn preferred_algorithms(&self) -> Option<Vec<Algorithm>> {
        let mut known: Vec<Algorithm> = Vec::new();
        if let Some(Pinned::Keys(keys)) = &self.pinned {
            known.extend(keys.iter().map(PublicKey::algorithm));
        }
        if let Some(path) = &self.known_hosts_file
            && let Ok(entries) =
                russh::keys::known_hosts::known_host_keys_path(&self.address, self.port, path)
        {
            known.extend(entries.iter().map(|(_, k)| k.algorithm()));
        }
        if known.is_empty() {
            return None;
        }
        let defaults = russh::Preferred::DEFAULT.key;
        let mut out: Vec<Algorithm> = Vec::new();
        for alg in &known {
            for d in defaults.iter() {
                if same_key_type(alg, d) && !out.contains(d) {
                    out.push(d.clone());
                }
            }
        }
        for d in defaults.iter() {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        Some(out)
    }

    /// Checks the key the server presented against the pin, the
    /// known_hosts file, or else `recorded` (the store's fingerprint for
    /// [`store_key`](Self::store_key), read before connecting). Never accepts
    /// a key that contradicts any of them.
    pub(crate) fn check(
        &self,
        key: &PublicKey,
        recorded: Option<&str>,
    ) -> Result<Verdict, SshError> {
        let seen = fingerprint(key);
        let kind = key.algorithm().as_str().to_owned();
        let mut checked = false;

        if let Some(pinned) = &self.pinned {
            checked = true;
            match pinned {
                Pinned::Fingerprint(expected) => {
                    if !same_fingerprint(expected, &seen) {
                        return Err(self.mismatch(
                            expected.clone(),
                            &seen,
                            format!(
                                "If the host was rebuilt on purpose, pin its new {kind} key: host_key = \"{seen}\"."
                            ),
                        ));
                    }
                }
                Pinned::Keys(keys) => {
                    if !keys.iter().any(|k| k.key_data() == key.key_data()) {
                        let expected = keys
                            .iter()
                            .map(|k| format!("{} ({})", fingerprint(k), k.algorithm().as_str()))
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(self.mismatch(
                            expected,
                            &seen,
                            format!(
                                "If the host was rebuilt on purpose, replace `host_key` with its new {kind} key \
                                 (host_key = \"{seen}\", or the line `ssh-keyscan -p {} {}` prints).",
                                self.port, self.address
                            ),
                        ));
                    }
                }
            }
        }

        if let Some(path) = &self.known_hosts_file {
            checked = true;
            self.check_file(path, key, &seen, &kind)?;
        }

        if checked {
            return Ok(Verdict::Trusted);
        }

        match recorded {
            Some(expected) if same_fingerprint(expected, &seen) => Ok(Verdict::Trusted),
            Some(expected) => Err(self.mismatch(
                expected.to_owned(),
                &seen,
                format!(
                    "The first key seen for {} was recorded in state. If the host was rebuilt on purpose, \
                     accept its new {kind} key by setting host_key = \"{seen}\" in its host block.",
                    self.store_key
                ),
            )),
            None => Ok(Verdict::FirstUse),
        }
    }

    fn check_file(
        &self,
        path: &Path,
        key: &PublicKey,
        seen: &str,
        kind: &str,
    ) -> Result<(), SshError> {
        let pattern = if self.port == 22 {
            self.address.clone()
        } else {
            format!("[{}]:{}", self.address, self.port)
        };
        match russh::keys::check_known_hosts_path(&self.address, self.port, key, path) {
            Ok(true) => Ok(()),
            Ok(false) => Err(SshError::HostKeyUnknown {
                host: self.name.clone(),
                seen: format!("{seen} ({kind})"),
                message: format!(
                    "{pattern} has no {kind} key in known_hosts_file {}; after checking the fingerprint, \
                     add it (`ssh-keyscan -p {} {} >> {}`) or pin host_key = \"{seen}\"",
                    path.display(),
                    self.port,
                    self.address,
                    path.display()
                ),
            }),
            Err(russh::keys::Error::KeyChanged { line }) => {
                let expected =
                    russh::keys::known_hosts::known_host_keys_path(&self.address, self.port, path)
                        .ok()
                        .and_then(|entries| entries.into_iter().find(|(l, _)| *l == line))
                        .map(|(_, k)| fingerprint(&k))
                        .unwrap_or_else(|| format!("the key on line {line}"));
                Err(self.mismatch(
                    format!("{expected} ({}:{line})", path.display()),
                    seen,
                    format!(
                        "If the host was rebuilt on purpose, remove the old entry \
                         (`ssh-keygen -R '{pattern}' -f {}`) and add the new {kind} key.",
                        path.display()
                    ),
                ))
            }
            Err(e) => Err(SshError::spec(format!(
                "{}: cannot read known_hosts_file {}: {e}",
                self.name,
                path.display()
            ))),
        }
    }

    fn mismatch(&self, expected: String, seen: &str, how_to_accept: String) -> SshError {
        SshError::HostKeyMismatch {
            host: self.name.clone(),
            expected,
            seen: seen.to_owned(),
            how_to_accept,
        }
    }
}

fn same_fingerprint(a: &str, b: &str) -> bool {
    a.trim().trim_end_matches('=') == b.trim().trim_end_matches('=')
}

fn same_key_type(a: &Algorithm, b: &Algorithm) -> bool {
    match (a, b) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        _ => a == b,
    }
}

/// Parses `host_key`: a `SHA256:` fingerprint (alone or inside
/// `ssh-keygen -l` output) or one or more known_hosts / `.pub` lines.
fn parse_host_key(text: &str) -> Result<Pinned, String> {
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            return Err(format!(
                "`{}` markers are not supported; give the host's own key",
                line.split_whitespace().next().unwrap_or("@")
            ));
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let at = tokens
            .iter()
            .position(|t| Algorithm::new(t).is_ok_and(|a| !matches!(a, Algorithm::Other(_))));
        if let Some(at) = at {
            let b64 = tokens
                .get(at + 1)
                .ok_or_else(|| format!("no key data after `{}`", tokens[at]))?;
            let key = russh::keys::parse_public_key_base64(b64)
                .map_err(|e| format!("cannot parse the `{}` key: {e}", tokens[at]))?;
            keys.push(key);
            continue;
        }
        if let Some(fp) = tokens.iter().find(|t| t.starts_with("SHA256:")) {
            let body = fp["SHA256:".len()..].trim_end_matches('=');
            if body.len() != 43
                || !body
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
            {
                return Err(format!("`{fp}` is not a SHA256 fingerprint"));
            }
            if keys.is_empty() && text.lines().filter(|l| !l.trim().is_empty()).count() == 1 {
                return Ok(Pinned::Fingerprint(format!("SHA256:{body}")));
            }
            return Err("mix of fingerprints and keys; give one fingerprint or key lines".into());
        }
        if line.starts_with("MD5:") || line.matches(':').count() == 15 {
            return Err(
                "MD5 fingerprints are not supported; use the SHA256 one (`ssh-keygen -lf KEY.pub -E sha256`)".into(),
            );
        }
        return Err(
            "expected a `SHA256:...` fingerprint or a known_hosts line such as `[host]:2222 ssh-ed25519 AAAA...`"
                .into(),
        );
    }
    if keys.is_empty() {
        return Err("it is empty".into());
    }
    Ok(Pinned::Keys(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    #[test]
    fn parses_fingerprints() {
        let fp = "SHA256:/7czEv0LOm4Zo5G2ZyNN6TQHR3Ue8gAcBE0Gh2GYr8k";
        assert!(matches!(parse_host_key(fp), Ok(Pinned::Fingerprint(f)) if f == fp));
        let keygen = format!("256 {fp} root@host (ED25519)");
        assert!(matches!(parse_host_key(&keygen), Ok(Pinned::Fingerprint(f)) if f == fp));
        assert!(parse_host_key("SHA256:short").is_err());
        assert!(parse_host_key("MD5:aa:bb").is_err());
        assert!(parse_host_key("hello").is_err());
    }

    #[test]
    fn parses_key_lines() {
        for line in [
            format!("[127.0.0.1]:2222 ssh-ed25519 {ED}"),
            format!("example.com ssh-ed25519 {ED} comment"),
            format!("ssh-ed25519 {ED}"),
            format!("# keyscan\nh1,h2 ssh-ed25519 {ED}\n"),
        ] {
            match parse_host_key(&line) {
                Ok(Pinned::Keys(k)) => assert_eq!(k.len(), 1, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        assert!(parse_host_key("host ssh-ed25519 !!!").is_err());
        assert!(parse_host_key(&format!("@cert-authority * ssh-ed25519 {ED}")).is_err());
    }

    #[test]
    fn fingerprint_compare_ignores_padding() {
        assert!(same_fingerprint("SHA256:abc=", "SHA256:abc"));
        assert!(!same_fingerprint("SHA256:abc", "SHA256:abd"));
    }

    #[test]
    fn memory_store_round_trips() {
        let s = MemoryKnownHosts::new();
        assert_eq!(s.recorded("h:22"), None);
        s.record("h:22", "SHA256:x");
        assert_eq!(s.recorded("h:22").as_deref(), Some("SHA256:x"));
    }
}
