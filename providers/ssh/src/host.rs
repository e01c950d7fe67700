//! [`HostSpec`]: which host to reach and how to trust it, as written in a
//! resource's `host { ... }` block, plus parsing of `ssh://user@host:port`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::SshError;

/// The SSH port used when none is given.
pub const DEFAULT_PORT: u16 = 22;
/// The user logged in as when none is given.
pub const DEFAULT_USER: &str = "root";
/// How long connection attempts are retried when no `timeout` is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// One SSH host: address, login, key material and host key policy.
///
/// `Debug` never prints `private_key` or `passphrase`.
///
/// Host key policy (see [`crate::verify`]): `host_key` (a pinned
/// `SHA256:...` fingerprint, or one or more known_hosts / `.pub` lines) and
/// `known_hosts_file` must match when set; with neither, the key seen on
/// first use is recorded through a [`KnownHostStore`](crate::KnownHostStore)
/// and must match afterwards.
#[derive(Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Host name or IP address (IPv6 without brackets).
    pub address: String,
    /// SSH port, [`DEFAULT_PORT`] unless set.
    pub port: u16,
    /// Login user, [`DEFAULT_USER`] unless set.
    pub user: String,
    /// The private key's text (OpenSSH or PEM; ed25519, RSA or ECDSA), not a
    /// path. Never printed.
    pub private_key: String,
    /// Passphrase for an encrypted private key. Never printed.
    pub passphrase: Option<String>,
    /// A pinned `SHA256:...` fingerprint, or known_hosts lines
    /// (`[host]:port ssh-ed25519 AAAA...`) / a `.pub` line (`ssh-ed25519 AAAA...`).
    pub host_key: Option<String>,
    /// An OpenSSH known_hosts file that must contain the host's key.
    pub known_hosts_file: Option<PathBuf>,
    /// How long to keep retrying while the host is unreachable
    /// ([`DEFAULT_TIMEOUT`] unless set).
    pub timeout: Duration,
}

impl HostSpec {
    /// A spec for `address` with the defaults: port 22, user `root`, no
    /// passphrase, trust on first use, 5 minutes timeout.
    pub fn new(address: impl Into<String>, private_key: impl Into<String>) -> Self {
        HostSpec {
            address: address.into(),
            port: DEFAULT_PORT,
            user: DEFAULT_USER.to_owned(),
            private_key: private_key.into(),
            passphrase: None,
            host_key: None,
            known_hosts_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Parses `ssh://[user@]host[:port]` (the `ssh://` prefix may be
    /// omitted; IPv6 addresses go in brackets: `ssh://root@[::1]:2222`).
    ///
    /// The returned spec has defaults for everything the URL does not say,
    /// and an empty `private_key` the caller must fill in.
    pub fn from_url(url: &str) -> Result<Self, SshError> {
        let trimmed = url.trim();
        let rest = match trimmed.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("ssh") => rest,
            Some((scheme, _)) => {
                return Err(SshError::spec(format!(
                    "`{trimmed}`: unsupported scheme `{scheme}://`, expected ssh://user@host:port"
                )));
            }
            None => trimmed,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(SshError::spec(format!(
                "`{trimmed}`: an SSH URL has no path or query, expected ssh://user@host:port"
            )));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => {
                if user.is_empty() || user.contains(':') {
                    return Err(SshError::spec(format!(
                        "`{trimmed}`: invalid user `{user}` (passwords are not supported; use a private key)"
                    )));
                }
                (user.to_owned(), hostport)
            }
            None => (DEFAULT_USER.to_owned(), rest),
        };
        let (address, port) = split_host_port(hostport).map_err(|why| {
            SshError::spec(format!("`{trimmed}`: {why}, expected ssh://user@host:port"))
        })?;
        let mut spec = HostSpec::new(address, String::new());
        spec.user = user;
        spec.port = port;
        Ok(spec)
    }

    /// `user@address:port` (IPv6 addresses in brackets): the pool key, the
    /// name used in messages, and the key under which first-use host keys are
    /// recorded.
    pub fn key(&self) -> String {
        format!("{}@{}", self.user, self.host_port())
    }

    /// `address:port`, with IPv6 addresses in brackets.
    pub fn host_port(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// Checks the fields that can be checked without connecting.
    pub(crate) fn validate(&self) -> Result<(), SshError> {
        if self.address.trim().is_empty() {
            return Err(SshError::spec("the host `address` is empty"));
        }
        if self.port == 0 {
            return Err(SshError::spec(format!(
                "{}: port 0 is not a valid SSH port",
                self.address
            )));
        }
        if self.user.trim().is_empty() {
            return Err(SshError::spec(format!(
                "{}: the `user` is empty",
                self.address
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSpec")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("private_key", &"<redacted>")
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("host_key", &self.host_key)
            .field("known_hosts_file", &self.known_hosts_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in `{s}`"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected `{after}` after `]`")),
            },
        }
    } else if s.matches(':').count() > 1 {
        // A bare IPv6 address without a port.
        (s, None)
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("no host name".to_owned());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("invalid port `{p}`")),
            Ok(p) => p,
        },
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let s = HostSpec::from_url("ssh://deploy@example.com:2222").unwrap();
        assert_eq!(
            (s.user.as_str(), s.address.as_str(), s.port),
            ("deploy", "example.com", 2222)
        );
        assert_eq!(s.key(), "deploy@example.com:2222");
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn defaults_user_and_port() {
        let s = HostSpec::from_url("ssh://10.0.0.5/").unwrap();
        assert_eq!(s.key(), "root@10.0.0.5:22");
        let s = HostSpec::from_url("admin@host").unwrap();
        assert_eq!(s.key(), "admin@host:22");
    }

    #[test]
    fn parses_ipv6() {
        let s = HostSpec::from_url("ssh://root@[::1]:2200").unwrap();
        assert_eq!(s.address, "::1");
        assert_eq!(s.key(), "root@[::1]:2200");
        let s = HostSpec::from_url("ssh://[fe80::1]").unwrap();
        assert_eq!(s.port, 22);
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "tcp://host:2375",
            "ssh://root@host:99999",
            "ssh://root@host:0",
            "ssh://root@:22",
            "ssh://root:pw@host",
            "ssh://host/path",
            "ssh://[::1",
            "",
        ] {
            let err = HostSpec::from_url(bad).unwrap_err();
            assert!(matches!(err, SshError::Spec { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let mut s = HostSpec::new("h", "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret");
        s.passphrase = Some("hunter2".into());
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }
}
