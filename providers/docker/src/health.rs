//! Readiness of a container: Docker's own health status, and berth's HTTP
//! check (`healthcheck { path, port }`), a GET of
//! `http://<container IP>:<port><path>` that passes on any 2xx answer.
//!
//! The HTTP check is made from wherever the container's bridge IP is
//! reachable: the Docker host. With a local engine that is the machine
//! running berth ([`DirectHttpProbe`]); with a host reached over SSH the GET
//! goes through that connection ([`SshHttpProbe`]). Other transports can
//! bring their own [`HttpProbe`] (see
//! [`crate::DockerProvider::with_http_probe`]).

use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Makes berth's HTTP readiness check: one GET, the status code of the
/// answer. Errors are short human-readable reasons ("connection refused").
#[async_trait]
pub trait HttpProbe: Send + Sync {
    /// GET `http://{ip}:{port}{path}`, giving up after `timeout`.
    async fn get(&self, ip: &str, port: u16, path: &str, timeout: Duration) -> Result<u16, String>;
}

/// [`HttpProbe`] over a direct TCP connection from this machine, for an
/// engine whose containers' bridge IPs are reachable from here (the local
/// engine).
#[derive(Clone, Copy, Debug, Default)]
pub struct DirectHttpProbe;

#[async_trait]
impl HttpProbe for DirectHttpProbe {
    async fn get(&self, ip: &str, port: u16, path: &str, timeout: Duration) -> Result<u16, String> {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect((ip, port))
                .await
                .map_err(|e| e.to_string())?;
            request_status(stream, ip, port, path).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}s", timeout.as_secs_f32())),
        }
    }
}

/// [`HttpProbe`] through an SSH connection to the Docker host: each GET
/// goes through a `direct-tcpip` channel, so the host itself connects to
/// the container's bridge IP (which only it can reach).
#[derive(Clone, Debug)]
pub struct SshHttpProbe {
    conn: berth_ssh::SshConnection,
}

impl SshHttpProbe {
    /// A probe through `conn`.
    pub fn new(conn: berth_ssh::SshConnection) -> Self {
        Self { conn }
    }
}

#[async_trait]
impl HttpProbe for SshHttpProbe {
    async fn get(&self, ip: &str, port: u16, path: &str, timeout: Duration) -> Result<u16, String> {
        let attempt = async {
            let stream = self.conn.open_tcp(ip, port).await.map_err(|e| match e {
                berth_ssh::SshError::Channel { message, .. } => message,
                other => other.to_string(),
            })?;
            request_status(stream, ip, port, path).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {}s (through SSH to {})",
                timeout.as_secs_f32(),
                self.conn.host()
            )),
        }
    }
}

/// Sends a minimal HTTP/1.1 GET over `stream` and reads the status line.
async fn request_status<S>(mut stream: S, ip: &str, port: u16, path: &str) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let host = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berth-healthcheck\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    // The status line is all that is needed.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head)
}

/// The status code of `HTTP/1.x NNN reason`.
pub(crate) fn parse_status_line(head: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err("the connection closed without an answer".to_owned());
    }
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|s| s.parse::<u16>().ok()),
    ) {
        (Some(version), Some(status)) if version.starts_with("HTTP/") => Ok(status),
        _ => Err(format!(
            "not an HTTP answer: {:?}",
            line.chars().take(60).collect::<String>()
        )),
    }
}

/// `healthcheck { path, port }`: berth's own HTTP check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpCheck {
    /// Request path, starting with `/`.
    pub path: String,
    /// Container port.
    pub port: u16,
}

impl HttpCheck {
    /// A human-readable URL for messages.
    pub(crate) fn url(&self, ip: &str) -> String {
        format!("http://{ip}:{}{}", self.port, self.path)
    }
}

/// The timeout of one HTTP check attempt.
pub(crate) const HTTP_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503 Busy\r\nX: y"), Ok(503));
        assert!(parse_status_line(b"").is_err());
        assert!(parse_status_line(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    #[tokio::test]
    async fn direct_probe_reads_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = socket.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            socket
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            request
        });
        let status = DirectHttpProbe
            .get("127.0.0.1", port, "/up?x=1", Duration::from_secs(5))
            .await;
        assert_eq!(status, Ok(204));
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /up?x=1 HTTP/1.1\r\n"), "{request}");
    }

    #[tokio::test]
    async fn direct_probe_reports_refusals() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let result = DirectHttpProbe
            .get("127.0.0.1", port, "/", Duration::from_secs(5))
            .await;
        assert!(result.is_err());
    }
}
