//! The Docker Engine API over SSH: bollard with a custom transport whose
//! every HTTP connection is a `direct-streamlocal@openssh.com` channel to
//! the engine's unix socket on the host. No Docker CLI is needed on either
//! side, and trust comes from the SSH connection's host key check.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use russh::client::Msg;
use russh::{ChannelOpenFailure, ChannelStream};

use crate::connect::SshConnection;
use crate::error::SshError;

/// The engine's socket path on a standard Linux host.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Seconds bollard waits for a response's headers (as the docker provider
/// does for the local socket); change with [`Docker::with_timeout`].
pub const DOCKER_TIMEOUT_SECS: u64 = 120;

impl SshConnection {
    /// A Docker client talking to the engine at `socket` (usually
    /// [`DEFAULT_DOCKER_SOCKET`]) on this connection's host.
    ///
    /// Checks that the socket can be forwarded and answers `/_ping`, then
    /// negotiates the API version. A missing socket, refused forwarding or
    /// a silent engine gives [`SshError::NoDocker`] naming the host. The
    /// client keeps the SSH connection alive for as long as it exists.
    pub async fn docker(&self, socket: &str) -> Result<Docker, SshError> {
        let no_docker = |message: String| SshError::NoDocker {
            host: self.host().to_owned(),
            message,
        };

        // Probe the socket first: the channel-open failure says precisely
        // what is wrong, which a failed HTTP request would bury.
        match self.handle().channel_open_direct_streamlocal(socket).await {
            Ok(channel) => {
                let _ = channel.close().await;
            }
            Err(e) => return Err(no_docker(self.describe_open_failure(socket, &e).await)),
        }

        let connector = StreamLocal {
            conn: self.clone(),
            socket: socket.into(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let docker = Docker::connect_with_custom_transport(
            move |req: BollardRequest| {
                let client = client.clone();
                async move {
                    client
                        .request(req)
                        .await
                        .map_err(bollard::errors::Error::from)
                }
            },
            Some("http://docker.invalid"),
            DOCKER_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        )
        .map_err(|e| no_docker(format!("cannot set up the Docker client: {e}")))?;

        docker.ping().await.map_err(|e| {
            no_docker(format!(
                "{socket} accepted a connection but GET /_ping failed: {}",
                chain(&e)
            ))
        })?;
        docker.negotiate_version().await.map_err(|e| {
            no_docker(format!(
                "the engine at {socket} answered /_ping but GET /version failed: {}",
                chain(&e)
            ))
        })
    }

    /// Explains why a streamlocal channel to `socket` could not be opened.
    /// OpenSSH answers "connect failed" both for a missing socket and for
    /// forbidden forwarding, so look at the socket with a shell command to
    /// tell which.
    async fn describe_open_failure(&self, socket: &str, e: &russh::Error) -> String {
        let forbidden = format!(
            "the SSH server refused to forward {socket}: it needs `AllowStreamLocalForwarding yes` \
             (and no `DisableForwarding yes`) in its sshd_config"
        );
        match e {
            russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed) => {}
            russh::Error::ChannelOpenFailure(ChannelOpenFailure::AdministrativelyProhibited) => {
                return forbidden;
            }
            russh::Error::ChannelOpenFailure(other) => {
                return format!("the SSH server could not open a channel to {socket}: {other:?}");
            }
            other => return format!("cannot open a channel to {socket}: {other}"),
        }
        let q = shell_quote(socket);
        let probe = format!(
            "if [ ! -e {q} ]; then echo missing; elif [ ! -S {q} ]; then echo not-a-socket; \
             elif [ ! -w {q} ]; then echo denied; else echo present; fi"
        );
        let user = self.user();
        match self.exec(&probe).await.map(|o| o.stdout.trim().to_owned()) {
            Ok(s) if s == "missing" => {
                format!("{socket} does not exist: is Docker installed and running there?")
            }
            Ok(s) if s == "not-a-socket" => format!(
                "{socket} exists but is not a unix socket: is that the Docker engine's socket?"
            ),
            Ok(s) if s == "denied" => format!(
                "`{user}` may not use {socket}: log in as root or add `{user}` to the `docker` group"
            ),
            Ok(s) if s == "present" => forbidden,
            _ => format!(
                "the SSH server could not connect to {socket}: is Docker installed and running there, \
                 may `{user}` use the socket (root or the `docker` group), and does sshd allow \
                 forwarding (`AllowStreamLocalForwarding yes`)?"
            ),
        }
    }
}

/// `'...'` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// An error with its sources, `outer: inner: innermost`.
fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The hyper connector: each connection is a new streamlocal channel.
#[derive(Clone)]
struct StreamLocal {
    conn: SshConnection,
    socket: std::sync::Arc<str>,
}

impl tower_service::Service<hyper::Uri> for StreamLocal {
    type Response = SshIo;
    type Error = russh::Error;
    type Future = Pin<Box<dyn Future<Output = Result<SshIo, russh::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let (conn, socket) = (self.conn.clone(), self.socket.clone());
        Box::pin(async move {
            let channel = conn
                .handle()
                .channel_open_direct_streamlocal(&*socket)
                .await?;
            Ok(SshIo(TokioIo::new(channel.into_stream())))
        })
    }
}

/// A streamlocal channel as a hyper connection.
struct SshIo(TokioIo<ChannelStream<Msg>>);

impl Connection for SshIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for SshIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SshIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
