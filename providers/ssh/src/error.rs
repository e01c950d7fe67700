//! [`SshError`]: every way reaching a host can fail, each naming the host
//! (`user@address:port`) and saying what to do about it.

use std::time::Duration;

/// An error from the SSH transport.
///
/// Every variant that concerns a host carries its [`HostSpec::key`]
/// (`user@address:port`) in `host`, so messages can be shown as they are.
/// The type is `Clone` so that callers sharing one connection attempt
/// (see [`Pool`]) all receive the same error.
///
/// [`HostSpec::key`]: crate::HostSpec::key
/// [`Pool`]: crate::Pool
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The host spec or URL is invalid (bad port, unknown scheme, malformed
    /// `host_key`, ...). Detected before any connection attempt.
    #[error("invalid SSH host: {message}")]
    Spec {
        /// What is wrong and how to fix it.
        message: String,
    },

    /// No SSH session could be established before the spec's `timeout`.
    /// Only connection-level failures (refused, timed out, reset, DNS) lead
    /// here; they were retried with backoff.
    #[error(
        "could not connect to {host} within {} ({attempts} attempt{}): {message}",
        crate::connect::human_duration(*elapsed),
        if *attempts == 1 { "" } else { "s" }
    )]
    Unreachable {
        /// `user@address:port`.
        host: String,
        /// How many connection attempts were made.
        attempts: u32,
        /// Time spent trying.
        elapsed: Duration,
        /// The last attempt's failure, e.g. `connection refused`.
        message: String,
    },

    /// The server presented a host key other than the trusted one. Never
    /// retried and never accepted silently.
    #[error(
        "host key mismatch for {host}: expected {expected}, but the server presented {seen}. \
         This may be a man-in-the-middle attack, or the host was rebuilt. {how_to_accept}"
    )]
    HostKeyMismatch {
        /// `user@address:port`.
        host: String,
        /// The fingerprint (or description) of the trusted key.
        expected: String,
        /// The `SHA256:...` fingerprint (and type) of the key the server sent.
        seen: String,
        /// What to change to accept the new key, if it is legitimate.
        how_to_accept: String,
    },

    /// The host is not in the configured `known_hosts_file`, so its key
    /// cannot be verified. Never accepted silently.
    #[error("host key for {host} cannot be verified: {message}")]
    HostKeyUnknown {
        /// `user@address:port`.
        host: String,
        /// The `SHA256:...` fingerprint (and type) of the key the server sent.
        seen: String,
        /// Why, and how to trust it.
        message: String,
    },

    /// The server refused our private key.
    #[error("authentication failed for {host}: {message}")]
    Auth {
        /// `user@address:port`.
        host: String,
        /// The user we tried to log in as.
        user: String,
        /// What happened, with the client key's fingerprint.
        message: String,
    },

    /// The private key could not be used: unparseable, unsupported, encrypted
    /// without a `passphrase`, or a wrong passphrase.
    #[error("{message}")]
    Key {
        /// What is wrong with the key. Never contains key material.
        message: String,
    },

    /// The host has no reachable Docker engine socket (missing, or the SSH
    /// server refused to forward to it), or the engine did not answer.
    #[error("no Docker engine reachable on {host}: {message}")]
    NoDocker {
        /// `user@address:port`.
        host: String,
        /// What failed and what to check.
        message: String,
    },

    /// An SSH-level failure after or during the handshake that is neither an
    /// authentication nor a host key problem: a channel could not be opened,
    /// the connection dropped, no common algorithm, ...
    #[error("SSH error on {host}: {message}")]
    Channel {
        /// `user@address:port`.
        host: String,
        /// What failed.
        message: String,
    },
}

impl SshError {
    /// The `user@address:port` this error concerns, if any.
    pub fn host(&self) -> Option<&str> {
        match self {
            SshError::Unreachable { host, .. }
            | SshError::HostKeyMismatch { host, .. }
            | SshError::HostKeyUnknown { host, .. }
            | SshError::Auth { host, .. }
            | SshError::NoDocker { host, .. }
            | SshError::Channel { host, .. } => Some(host),
            SshError::Spec { .. } | SshError::Key { .. } => None,
        }
    }

    pub(crate) fn spec(message: impl Into<String>) -> Self {
        SshError::Spec {
            message: message.into(),
        }
    }

    pub(crate) fn key(message: impl Into<String>) -> Self {
        SshError::Key {
            message: message.into(),
        }
    }

    pub(crate) fn channel(host: &str, message: impl Into<String>) -> Self {
        SshError::Channel {
            host: host.to_owned(),
            message: message.into(),
        }
    }
}
