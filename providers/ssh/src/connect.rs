//! [`SshConnection`]: one authenticated SSH session to a host, established
//! with retries and exponential backoff while the host boots, and
//! [`SshConnection::exec`] to run commands on it.
//!
//! Only connection-level failures (DNS, refused, timed out, reset, closed
//! during the handshake) are retried. Host key and authentication failures
//! end the attempt at once.

use std::fmt::Write as _;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Preferred};
use tokio::net::TcpStream;

use crate::error::SshError;
use crate::host::HostSpec;
use crate::keys::{load_private_key, public_fingerprint};
use crate::verify::{HostKeyPolicy, KnownHostStore, Verdict, fingerprint};

/// First delay between connection attempts.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest a single attempt (TCP connect, handshake, login) may take.
const MAX_ATTEMPT: Duration = Duration::from_secs(30);
/// Shortest time given to a single attempt, even at the deadline.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// Keepalive interval on established connections.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The result of [`SshConnection::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit status, `None` if the command died from a signal or the
    /// server sent none.
    pub status: Option<u32>,
    /// The signal that killed the command, if any (e.g. `KILL`).
    pub signal: Option<String>,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl ExecOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// An authenticated SSH connection to one host. Cheap to clone: clones
/// share the same session (an `Arc` inside), which closes when the last
/// clone, and the last [`bollard::Docker`] made from it, is dropped.
#[derive(Clone)]
pub struct SshConnection {
    inner: Arc<Inner>,
}

struct Inner {
    handle: client::Handle<ClientHandler>,
    name: String,
    user: String,
    fingerprint: String,
}

impl std::fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConnection")
            .field("host", &self.inner.name)
            .field("fingerprint", &self.inner.fingerprint)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl SshConnection {
    /// Connects to `spec`'s host, verifies its host key, and logs in with
    /// its private key.
    ///
    /// Connection-level failures are retried with exponential backoff (1 s
    /// doubling up to 10 s) until `spec.timeout`; each failed attempt is
    /// reported through `progress` ("waiting for root@10.0.0.5:22 (attempt
    /// 3, 7s elapsed): connection refused"). A first-use host key is
    /// recorded in `store` after a successful login, and reported through
    /// `progress` too.
    pub async fn connect(
        spec: &HostSpec,
        store: &dyn KnownHostStore,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<SshConnection, SshError> {
        spec.validate()?;
        let key = Arc::new(load_private_key(
            &spec.private_key,
            spec.passphrase.as_deref(),
        )?);
        let policy = Arc::new(HostKeyPolicy::from_spec(spec)?);
        let mut config = client::Config {
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: 4,
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        };
        if let Some(algs) = policy.preferred_algorithms() {
            config.preferred = Preferred {
                key: algs.into(),
                ..Preferred::DEFAULT
            };
        }
        let config = Arc::new(config);
        let name = spec.key();

        let start = Instant::now();
        let deadline = start + spec.timeout;
        let mut delay = INITIAL_BACKOFF;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let budget = deadline
                .saturating_duration_since(Instant::now())
                .clamp(MIN_ATTEMPT, MAX_ATTEMPT);
            let recorded = store.recorded(policy.store_key());
            let outcome = tokio::time::timeout(
                budget,
                try_once(spec, &name, &config, &policy, recorded, &key),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Attempt::Retry(format!(
                    "timed out after {}",
                    human_duration(budget)
                )))
            });
            let message = match outcome {
                Ok((conn, verdict)) => {
                    if verdict == Verdict::FirstUse {
                        store.record(policy.store_key(), &conn.inner.fingerprint);
                        // A warning, not a progress line: it is printed
                        // at every verbosity and never throttled away.
                        tracing::warn!(
                            "trusting the host key of {} on first use: {} (recorded; a different key later will be refused)",
                            policy.store_key(),
                            conn.inner.fingerprint
                        );
                    }
                    tracing::debug!(host = %name, attempt, "SSH connection established");
                    return Ok(conn);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(message)) => message,
            };
            let elapsed = start.elapsed();
            let now = Instant::now();
            if now >= deadline {
                return Err(SshError::Unreachable {
                    host: name,
                    attempts: attempt,
                    elapsed,
                    message,
                });
            }
            tracing::debug!(host = %name, attempt, %message, "SSH connection attempt failed");
            progress(&format!(
                "waiting for {name} (attempt {attempt}, {}s elapsed): {message}",
                elapsed.as_secs()
            ));
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// The `SHA256:...` fingerprint of the host key the server presented.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// `user@address:port` of this connection.
    pub fn host(&self) -> &str {
        &self.inner.name
    }

    /// Whether the session has ended (the server went away or the
    /// connection broke). A [`Pool`](crate::Pool) reconnects in that case.
    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed()
    }

    /// Whether `self` and `other` are clones of the same SSH session.
    pub fn same_connection(&self, other: &SshConnection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Runs `command` through the user's login shell on the host and
    /// collects its exit status and output. A non-zero exit is not an
    /// error: check [`ExecOutput::success`].
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, SshError> {
        let name = &self.inner.name;
        let channel = self
            .inner
            .handle
            .channel_open_session()
            .await
            .map_err(|e| SshError::channel(name, format!("cannot open a session channel: {e}")))?;
        let mut channel = channel;
        channel
            .exec(true, command)
            .await
            .map_err(|e| SshError::channel(name, format!("cannot run `{command}`: {e}")))?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let (mut status, mut signal) = (None, None);
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::ExitSignal {
                    signal_name,
                    error_message,
                    ..
                } => {
                    let mut s = format!("{signal_name:?}");
                    if !error_message.is_empty() {
                        let _ = write!(s, " ({error_message})");
                    }
                    signal = Some(s);
                }
                ChannelMsg::Failure => {
                    return Err(SshError::channel(
                        name,
                        format!("the server refused to run `{command}`"),
                    ));
                }
                _ => {}
            }
        }
        Ok(ExecOutput {
            status,
            signal,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// A TCP connection from the host to `address:port` (a `direct-tcpip`
    /// channel, what `ssh -L` uses): for reaching what only the host can
    /// reach, such as a container's bridge IP. The stream reads and writes
    /// like a socket; dropping it closes the channel.
    ///
    /// A refused or unreachable target gives [`SshError::Channel`] whose
    /// message says so (`connection refused by 172.17.0.2:5000`, as relayed
    /// by the SSH server).
    pub async fn open_tcp(
        &self,
        address: &str,
        port: u16,
    ) -> Result<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static, SshError>
    {
        let name = &self.inner.name;
        let target = if address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        let channel = self
            .inner
            .handle
            .channel_open_direct_tcpip(address, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| {
                let why = match e {
                    russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::ConnectFailed) => {
                        format!("connection refused by {target} (or {target} is unreachable from the host)")
                    }
                    russh::Error::ChannelOpenFailure(
                        russh::ChannelOpenFailure::AdministrativelyProhibited,
                    ) => format!(
                        "the SSH server refused to forward to {target}: it needs `AllowTcpForwarding yes` \
                         (and no `DisableForwarding yes`) in its sshd_config"
                    ),
                    other => format!("cannot open a channel to {target}: {other}"),
                };
                SshError::channel(name, why)
            })?;
        Ok(channel.into_stream())
    }

    /// The session handle, for opening channels (crate-internal).
    pub(crate) fn handle(&self) -> &client::Handle<ClientHandler> {
        &self.inner.handle
    }

    /// The login user.
    pub(crate) fn user(&self) -> &str {
        &self.inner.user
    }
}

/// How one attempt failed.
enum Attempt {
    /// A connection-level failure worth retrying, described for humans.
    Retry(String),
    /// A failure retrying cannot fix.
    Fatal(SshError),
}

/// One attempt: resolve, TCP connect, handshake with host key check, login.
async fn try_once(
    spec: &HostSpec,
    name: &str,
    config: &Arc<client::Config>,
    policy: &Arc<HostKeyPolicy>,
    recorded: Option<String>,
    key: &Arc<PrivateKey>,
) -> Result<(SshConnection, Verdict), Attempt> {
    let addrs: Vec<_> = tokio::net::lookup_host((spec.address.as_str(), spec.port))
        .await
        .map_err(|e| Attempt::Retry(format!("cannot resolve {}: {e}", spec.address)))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(Attempt::Retry(describe_io(&e))),
        (None, None) => {
            return Err(Attempt::Retry(format!(
                "{} resolved to no address",
                spec.address
            )));
        }
    };
    let _ = stream.set_nodelay(true);

    let outcome: CheckSlot = Arc::new(Mutex::new(None));
    let handler = ClientHandler {
        policy: policy.clone(),
        recorded,
        outcome: outcome.clone(),
    };
    let handshake = client::connect_stream(config.clone(), stream, handler).await;
    let host_check = outcome.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (mut handle, seen, verdict) = match (handshake, host_check) {
        (_, Some(Err(e))) | (Err(HandshakeError::Rejected(e)), _) => {
            return Err(Attempt::Fatal(e));
        }
        (Err(HandshakeError::Ssh(e)), _) => {
            return Err(classify(name, "during the SSH handshake", e));
        }
        (Ok(_), None) => {
            // Cannot happen with russh (the check runs before the handshake
            // completes), but never use a connection whose key was not checked.
            return Err(Attempt::Fatal(SshError::channel(
                name,
                "the server's host key was not checked; refusing the connection",
            )));
        }
        (Ok(handle), Some(Ok((seen, verdict)))) => (handle, seen, verdict),
    };

    let hash = if key.algorithm().is_rsa() {
        match handle.best_supported_rsa_hash().await {
            Ok(Some(hash)) => hash,
            Ok(None) => Some(HashAlg::Sha512),
            Err(e) => return Err(classify(name, "while logging in", e)),
        }
    } else {
        None
    };
    let auth = handle
        .authenticate_publickey(
            spec.user.clone(),
            PrivateKeyWithHashAlg::new(key.clone(), hash),
        )
        .await
        .map_err(|e| classify(name, "while logging in", e))?;
    if !auth.success() {
        return Err(Attempt::Fatal(SshError::Auth {
            host: name.to_owned(),
            user: spec.user.clone(),
            message: format!(
                "the server refused the private key {} ({}); is its public key in ~{}/.ssh/authorized_keys on the host?",
                public_fingerprint(key),
                key.algorithm().as_str(),
                spec.user
            ),
        }));
    }
    let conn = SshConnection {
        inner: Arc::new(Inner {
            handle,
            name: name.to_owned(),
            user: spec.user.clone(),
            fingerprint: seen,
        }),
    };
    Ok((conn, verdict))
}

/// Classifies a russh error: transport failures are retried, the rest is fatal.
fn classify(name: &str, phase: &str, e: russh::Error) -> Attempt {
    match e {
        russh::Error::IO(io) => {
            Attempt::Retry(format!("connection lost {phase}: {}", describe_io(&io)))
        }
        russh::Error::HUP
        | russh::Error::Disconnect
        | russh::Error::ConnectionTimeout
        | russh::Error::Elapsed(_)
        | russh::Error::SendError
        | russh::Error::RecvError
        | russh::Error::Version => Attempt::Retry(format!("connection closed {phase} ({e})")),
        other => Attempt::Fatal(SshError::channel(name, format!("{phase}: {other}"))),
    }
}

/// A short, lowercase description of a socket error.
fn describe_io(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        K::ConnectionReset => "connection reset".to_owned(),
        K::ConnectionAborted => "connection aborted".to_owned(),
        K::TimedOut => "connection timed out".to_owned(),
        K::HostUnreachable => "host unreachable".to_owned(),
        K::NetworkUnreachable => "network unreachable".to_owned(),
        K::UnexpectedEof => "connection closed by the server".to_owned(),
        K::BrokenPipe => "connection closed (broken pipe)".to_owned(),
        _ => e.to_string(),
    }
}

/// `5m`, `1m30s`, `45s` (rounded to the second), or `0.4s` below a second.
pub(crate) fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let secs = d.as_secs() + u64::from(d.subsec_millis() >= 500);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || out.is_empty() {
        let _ = write!(out, "{s}s");
    }
    out
}

/// Errors the handler returns to russh.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// A protocol or transport error from russh.
    Ssh(russh::Error),
    /// The host key was refused by policy.
    Rejected(SshError),
}

impl From<russh::Error> for HandshakeError {
    fn from(e: russh::Error) -> Self {
        HandshakeError::Ssh(e)
    }
}

/// The russh client handler: checks the server's host key against the policy.
pub(crate) struct ClientHandler {
    policy: Arc<HostKeyPolicy>,
    recorded: Option<String>,
    /// The check's outcome: the fingerprint seen and the verdict, or why it
    /// was refused.
    outcome: CheckSlot,
}

/// The host key check's outcome, shared between the handler and [`try_once`].
type CheckSlot = Arc<Mutex<Option<Result<(String, Verdict), SshError>>>>;

impl client::Handler for ClientHandler {
    type Error = HandshakeError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = server_key.public_key();
        let result = self
            .policy
            .check(&key, self.recorded.as_deref())
            .map(|verdict| (fingerprint(&key), verdict));
        let mut slot = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            // A re-key presenting a key: it must be the one already accepted.
            if let Some(Ok((first, _))) = slot.as_ref()
                && *first == fingerprint(&key)
            {
                return Ok(true);
            }
            return Ok(false);
        }
        *slot = Some(result.clone());
        match result {
            Ok(_) => Ok(true),
            Err(e) => Err(HandshakeError::Rejected(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations() {
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_millis(3200)), "3s");
        assert_eq!(human_duration(Duration::from_millis(300_400)), "5m");
        assert_eq!(human_duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
    }
}
