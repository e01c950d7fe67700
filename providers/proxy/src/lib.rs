//! berth-proxy: the load balancer berth puts in front of a container's
//! replicas (`load_balancer { kind = "berth-proxy" }`).
//!
//! An HTTP/1.1 reverse proxy (hyper) with keep-alive on both sides. Its set
//! of upstreams comes from a small JSON file that berth replaces through
//! Docker's archive API (which works the same over SSH); the proxy polls it
//! ([`watch_file`]). Changing the set never closes a client connection:
//! removed upstreams get no new request and finish the ones they serve,
//! which berth waits for through the admin endpoint ([`admin`]) before it
//! stops them. A request whose upstream cannot be reached is retried on
//! another ([`forward`]).
//!
//! Modules: [`upstreams`] (the file and the table), [`forward`] (one
//! request), [`admin`] (health, applied version, drained).

pub mod admin;
pub mod forward;
pub mod upstreams;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::forward::ProxyBody;
use crate::upstreams::{Table, UpstreamFile};

/// How long open connections get to finish after a stop signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on `listener` with `handler` until `stop` turns true,
/// then lets the open connections finish their requests (at most
/// [`SHUTDOWN_GRACE`]).
pub async fn serve<H, F>(listener: TcpListener, handler: H, mut stop: watch::Receiver<bool>)
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and the like: keep serving the others.
                        eprintln!("berth-proxy: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let service = service_fn(move |req| handler(req, peer));
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    // A client that goes away is not worth a log line.
                    let _ = conn.await;
                });
            }
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here.
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

/// Reads the upstream file at `path` into `table` once; a missing or
/// unreadable file leaves the table as it is (and says why).
pub fn load_file(path: &Path, table: &Table) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file = UpstreamFile::parse(&bytes)
        .map_err(|e| format!("{} is not an upstream file: {e}", path.display()))?;
    log_change(&file, table);
    Ok(())
}

fn log_change(file: &UpstreamFile, table: &Table) {
    let change = table.apply(file);
    if !change.is_empty() {
        eprintln!(
            "berth-proxy: upstreams version {}: added [{}], removed [{}], {} active",
            file.version,
            change.added.join(", "),
            change.removed.join(", "),
            table.len()
        );
    }
}

/// Polls the upstream file every `interval` and applies it whenever its
/// content changes and parses (a half-written file is skipped until it is
/// whole), until `stop` turns true.
pub async fn watch_file(
    path: PathBuf,
    table: Arc<Table>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen: Option<Vec<u8>> = None;
    let mut complained: Option<String> = None;
    loop {
        match tokio::fs::read(&path).await {
            Ok(bytes) if seen.as_ref() != Some(&bytes) => match UpstreamFile::parse(&bytes) {
                Ok(file) => {
                    log_change(&file, &table);
                    seen = Some(bytes);
                    complained = None;
                }
                Err(e) => {
                    let message = format!("{} is not an upstream file (yet): {e}", path.display());
                    if complained.as_ref() != Some(&message) {
                        eprintln!("berth-proxy: {message}");
                        complained = Some(message);
                    }
                }
            },
            Ok(_) => {}
            Err(e) => {
                let message = format!("cannot read {}: {e}", path.display());
                if complained.as_ref() != Some(&message) {
                    eprintln!("berth-proxy: {message}");
                    complained = Some(message);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}
