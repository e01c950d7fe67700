//! Forwarding one request: pick an upstream from the [`Table`], send the
//! request with a pooled HTTP/1.1 client, stream the answer back.
//!
//! A request whose upstream fails is sent to another upstream when it can
//! be sent again: its body is held (none, or at most [`MAX_REPLAY_BODY`]
//! bytes), and either the connection failed (nothing was sent; the upstream
//! is then avoided for [`DOWN_FOR`]) or the method is idempotent. Only when
//! no upstream is left does the client see a 502 (503 with no upstream at
//! all). Hop-by-hop headers are dropped both ways, so an upstream's
//! `Connection: close` never closes the client's keep-alive connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::upstreams::{InFlight, Table, Upstream};

/// The body type of everything the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Request bodies up to this size are held so the request can be retried.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;
/// How long an upstream whose connection failed is avoided.
pub const DOWN_FOR: Duration = Duration::from_secs(2);
/// At most this many upstreams are tried for one request.
const MAX_ATTEMPTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Forwards requests of one listener to its upstream port.
#[derive(Clone, Debug)]
pub struct Forwarder {
    table: Arc<Table>,
    client: Client<HttpConnector, ProxyBody>,
    upstream_port: u16,
}

/// A plain-text response of the proxy's own.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), and those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

impl Forwarder {
    /// A forwarder to `upstream_port` of the upstreams in `table`.
    pub fn new(table: Arc<Table>, upstream_port: u16) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            table,
            client,
            upstream_port,
        }
    }

    /// Answers one client request (never an `Err`: failures are 502/503).
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let (parts, body) = req.into_parts();
        // Hold the body when it is small enough to send again.
        let mut streaming = None;
        let replay = if body.is_end_stream() {
            Some(Bytes::new())
        } else if body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MAX_REPLAY_BODY)
        {
            match body.collect().await {
                Ok(collected) => Some(collected.to_bytes()),
                Err(e) => {
                    return Ok(text(
                        StatusCode::BAD_REQUEST,
                        format!("berth-proxy: cannot read the request body: {e}\n"),
                    ));
                }
            }
        } else {
            streaming = Some(body);
            None
        };

        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(previous) => format!("{previous}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded) {
            headers.insert("x-forwarded-for", value);
        }
        if !headers.contains_key("x-forwarded-proto") {
            headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        }
        let path = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .to_owned();

        let attempts = self.table.len().clamp(1, MAX_ATTEMPTS);
        let mut tried: Vec<Arc<Upstream>> = Vec::new();
        let mut last_error = String::new();
        loop {
            let Some(flight) = self.table.pick(&tried) else {
                return Ok(if tried.is_empty() {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "berth-proxy: no upstream\n",
                    )
                } else {
                    text(
                        StatusCode::BAD_GATEWAY,
                        format!("berth-proxy: no upstream answered: {last_error}\n"),
                    )
                });
            };
            let addr = flight.upstream().addr(self.upstream_port);
            let body = match (&replay, streaming.take()) {
                (Some(bytes), _) => Full::new(bytes.clone())
                    .map_err(|never| match never {})
                    .boxed(),
                (None, Some(body)) => body.boxed(),
                (None, None) => {
                    return Ok(text(
                        StatusCode::BAD_GATEWAY,
                        format!("berth-proxy: {last_error}\n"),
                    ));
                }
            };
            let uri: Uri = match format!("http://{addr}{path}").parse() {
                Ok(uri) => uri,
                Err(e) => {
                    return Ok(text(
                        StatusCode::BAD_REQUEST,
                        format!("berth-proxy: bad request target: {e}\n"),
                    ));
                }
            };
            let mut out = Request::new(body);
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = uri;
            *out.version_mut() = Version::HTTP_11;
            *out.headers_mut() = headers.clone();

            match self.client.request(out).await {
                Ok(response) => return Ok(respond(response, flight)),
                Err(e) => {
                    let connect = e.is_connect();
                    if connect {
                        self.table.mark_down(flight.upstream(), DOWN_FOR);
                    }
                    last_error = format!("{} ({addr}): {}", flight.upstream().name(), describe(&e));
                    tried.push(Arc::clone(flight.upstream()));
                    drop(flight);
                    let again = replay.is_some()
                        && (connect || is_idempotent(&parts.method))
                        && tried.len() < attempts;
                    if !again {
                        eprintln!("berth-proxy: {} {path}: {last_error}", parts.method);
                        return Ok(text(
                            StatusCode::BAD_GATEWAY,
                            format!("berth-proxy: {last_error}\n"),
                        ));
                    }
                }
            }
        }
    }
}

/// The error and its causes on one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The upstream's response for the client; the request stays counted in
/// flight until its body has been sent.
fn respond(response: Response<Incoming>, flight: InFlight) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = body
        .map_frame(move |frame| {
            let _counted = &flight;
            frame
        })
        .boxed();
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_the_others_stay() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::HOST, HeaderValue::from_static("example.test"));
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "host"]);
    }

    #[test]
    fn which_methods_are_idempotent() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
