//! The proxy end to end on loopback: upstream servers, the proxy and a
//! keep-alive client, each on 127.0.0.1:0. Changing the upstream set keeps
//! the client's connection and drains the removed upstream; a request whose
//! upstream refuses the connection is retried on another; the admin
//! endpoint answers what berth asks. Requests are counted, never timed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use berth_proxy::forward::{Forwarder, ProxyBody, text};
use berth_proxy::upstreams::{Entry, Table, UpstreamFile};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// An upstream answering `<name>:<request body>`; `/slow` waits for
/// `release` first. Its answers say `Connection: close`, as the demo app's do.
async fn upstream(
    name: &'static str,
    release: Arc<Notify>,
    stop: watch::Receiver<bool>,
) -> SocketAddr {
    let listener = listener().await;
    let addr = listener.local_addr().unwrap();
    let handler = move |req: Request<Incoming>, _peer: SocketAddr| {
        let release = Arc::clone(&release);
        async move {
            let slow = req.uri().path() == "/slow";
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if slow {
                release.notified().await;
            }
            let mut response = text(
                StatusCode::OK,
                format!("{name}:{}", String::from_utf8_lossy(&body)),
            );
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            Ok::<Response<ProxyBody>, Infallible>(response)
        }
    };
    tokio::spawn(berth_proxy::serve(listener, handler, stop));
    addr
}

/// A port nothing listens on (bound, then closed).
async fn dead_port() -> SocketAddr {
    listener().await.local_addr().unwrap()
}

fn file(version: &str, upstreams: &[(&str, SocketAddr)]) -> UpstreamFile {
    UpstreamFile {
        version: version.into(),
        owner: Some("test".into()),
        upstreams: upstreams
            .iter()
            .map(|(name, addr)| Entry {
                name: (*name).into(),
                ip: addr.ip(),
                port: Some(addr.port()),
            })
            .collect(),
    }
}

async fn proxy(table: Arc<Table>, stop: watch::Receiver<bool>) -> SocketAddr {
    let listener = listener().await;
    let addr = listener.local_addr().unwrap();
    let forwarder = Arc::new(Forwarder::new(table, 1));
    tokio::spawn(berth_proxy::serve(
        listener,
        move |req, peer| {
            let forwarder = Arc::clone(&forwarder);
            async move { forwarder.handle(req, peer).await }
        },
        stop,
    ));
    addr
}

async fn admin(table: Arc<Table>, stop: watch::Receiver<bool>) -> SocketAddr {
    let listener = listener().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(berth_proxy::serve(
        listener,
        move |req, _peer| berth_proxy::admin::handle(Arc::clone(&table), req),
        stop,
    ));
    addr
}

/// One keep-alive client connection.
async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends one request on `sender`; the status and body, or the connection
/// error.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: &str,
) -> Result<(StatusCode, String), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "proxy.test")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

async fn get(sender: &mut SendRequest<Full<Bytes>>, path: &str) -> (StatusCode, String) {
    send(sender, Method::GET, path, "").await.unwrap()
}

/// The status of `GET path` on the admin endpoint.
async fn admin_status(addr: SocketAddr, path: &str) -> StatusCode {
    let mut sender = connect(addr).await;
    get(&mut sender, path).await.0
}

#[tokio::test]
async fn changing_the_upstreams_keeps_the_client_connection_and_drains_the_removed_one() {
    let (_stop_tx, stop) = watch::channel(false);
    let release = Arc::new(Notify::new());
    let a = upstream("a", Arc::clone(&release), stop.clone()).await;
    let b = upstream("b", Arc::new(Notify::new()), stop.clone()).await;
    let table = Arc::new(Table::new());
    table.apply(&file("v1", &[("a", a)]));
    let proxy = proxy(Arc::clone(&table), stop.clone()).await;
    let admin = admin(Arc::clone(&table), stop.clone()).await;

    let mut client = connect(proxy).await;
    for _ in 0..3 {
        assert_eq!(get(&mut client, "/").await, (StatusCode::OK, "a:".into()));
    }
    // A slow request to a, in flight while a is removed.
    let mut other = connect(proxy).await;
    let slow = tokio::spawn(async move { get(&mut other, "/slow").await });
    while table.status()["upstreams"][0]["in_flight"] != 1 {
        tokio::task::yield_now().await;
    }

    table.apply(&file("v2", &[("b", b)]));
    assert_eq!(
        admin_status(admin, "/applied?version=v2").await,
        StatusCode::OK
    );
    assert_eq!(
        admin_status(admin, "/applied?version=v1").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        admin_status(admin, "/drained").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a request is still in flight to a"
    );
    // The same client connection goes on, now to b.
    for _ in 0..3 {
        assert_eq!(get(&mut client, "/").await, (StatusCode::OK, "b:".into()));
    }
    // a finishes what it was serving, then counts as drained.
    release.notify_one();
    assert_eq!(slow.await.unwrap(), (StatusCode::OK, "a:".into()));
    let mut rounds = 0;
    while admin_status(admin, "/drained").await != StatusCode::OK {
        rounds += 1;
        assert!(rounds < 10_000, "never drained: {}", table.status());
        tokio::task::yield_now().await;
    }
    assert_eq!(admin_status(admin, "/healthz").await, StatusCode::OK);
}

#[tokio::test]
async fn a_request_whose_upstream_refuses_the_connection_is_retried_on_another() {
    let (_stop_tx, stop) = watch::channel(false);
    let live = upstream("live", Arc::new(Notify::new()), stop.clone()).await;
    let dead = dead_port().await;
    let table = Arc::new(Table::new());
    table.apply(&file("v1", &[("dead", dead), ("live", live)]));
    let proxy = proxy(Arc::clone(&table), stop.clone()).await;

    let mut client = connect(proxy).await;
    for i in 0..10 {
        let answer = get(&mut client, &format!("/get/{i}")).await;
        assert_eq!(answer, (StatusCode::OK, "live:".to_owned()), "GET {i}");
    }
    let dead_failures = &table.status()["upstreams"][0]["failures"];
    assert_eq!(
        dead_failures,
        1,
        "tried once, then avoided: {}",
        table.status()
    );

    // A new set starts its rotation at its first upstream: each POST goes
    // to a dead one first. Nothing was sent to it, so even a POST goes on
    // to the next, its body sent again, whole.
    for i in 0..5 {
        table.apply(&file(
            &format!("p{i}"),
            &[("dead", dead_port().await), ("live", live)],
        ));
        let answer = send(&mut client, Method::POST, "/post", "payload").await;
        assert_eq!(
            answer,
            Ok((StatusCode::OK, "live:payload".to_owned())),
            "POST {i}"
        );
        assert_eq!(
            table.status()["upstreams"][0]["failures"],
            1,
            "{}",
            table.status()
        );
    }
}

#[tokio::test]
async fn with_no_upstream_left_the_client_gets_an_answer_not_a_closed_connection() {
    let (_stop_tx, stop) = watch::channel(false);
    let table = Arc::new(Table::new());
    let proxy = proxy(Arc::clone(&table), stop.clone()).await;
    let mut client = connect(proxy).await;
    assert_eq!(
        get(&mut client, "/").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    table.apply(&file("v1", &[("dead", dead_port().await)]));
    assert_eq!(get(&mut client, "/").await.0, StatusCode::BAD_GATEWAY);
    // Still the same connection.
    assert_eq!(get(&mut client, "/").await.0, StatusCode::BAD_GATEWAY);
}
