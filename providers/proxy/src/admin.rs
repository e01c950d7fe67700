//! The admin endpoint (its own port, not published): what berth and the
//! container's health check ask the proxy. Every answer is in the status
//! code, so any client that reads a status line (berth's HTTP probe, which
//! also works through SSH) can use it:
//!
//! * `GET /healthz` → 200 while the proxy runs;
//! * `GET /applied?version=V` → 200 once the upstream file of version `V`
//!   is in effect, else 503;
//! * `GET /drained` → 200 when no request is in flight to a removed
//!   upstream, else 503;
//! * `GET /status` → the upstreams and their in-flight requests, as JSON.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::forward::{ProxyBody, text};
use crate::upstreams::Table;

/// Answers one admin request.
pub async fn handle(
    table: Arc<Table>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"));
    }
    let query = req.uri().query().unwrap_or_default();
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/applied" => {
            let wanted = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("version="))
                .unwrap_or_default();
            let version = table.version();
            if !wanted.is_empty() && version == wanted {
                text(StatusCode::OK, format!("version {version}\n"))
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("version {version} in effect, not {wanted}\n"),
                )
            }
        }
        "/drained" => match table.draining_in_flight() {
            0 => text(StatusCode::OK, "drained\n"),
            n => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{n} request(s) in flight to removed upstreams\n"),
            ),
        },
        "/status" => {
            let mut response = text(StatusCode::OK, format!("{}\n", table.status()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}
