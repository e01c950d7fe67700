//! What the reliability tests (R1 `reliability_crash`, R2
//! `reliability_faults`) share:
//!
//! - [`Rng`]: a seeded generator (SplitMix64), so every run repeats;
//! - [`Moto`]: a moto server of the test's own, and [`ec2`] for looking at
//!   it behind berth's back (moto does not check signatures, so the query
//!   carries a well-formed but unsigned `Authorization` header);
//! - [`Proxy`]: a forwarding HTTP/1.1 proxy on `127.0.0.1:0` or a unix
//!   socket in the test's temp dir, in front of a TCP server or a unix
//!   socket (the Docker engine). Every request goes through a [`Policy`]
//!   that forwards it, answers in its place (429 with or without
//!   `Retry-After`, 5xx), resets the connection, stalls, truncates the
//!   answer, or runs a hook once the upstream has acted and never answers
//!   (R1 kills berth there: the object exists, its state record does not);
//! - [`Berth`]: a berth child whose stderr is read line by line and that a
//!   hook may SIGKILL by its PID at any moment.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;

/// `BERTH_RELIABILITY=long`: the long form (scripts/reliability.sh).
pub fn long_form() -> bool {
    std::env::var("BERTH_RELIABILITY").is_ok_and(|v| v == "long")
}

// ------------------------------------------------------------------ rng

/// SplitMix64: small, seeded, good enough to pick kill points and faults.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The seed: `BERTH_RELIABILITY_SEED`, else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("BERTH_RELIABILITY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ----------------------------------------------------------------- moto

/// A moto server on 127.0.0.1 and a free port, killed by its PID when
/// dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Moto {
    pub async fn start() -> Moto {
        let bin = crate::common::moto_server();
        let port = crate::common::free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_AMI_VALIDATION", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            addr: format!("127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited with {status}");
            }
            if let Ok(r) = client
                .get(format!("{}/moto-api/", moto.endpoint))
                .send()
                .await
                && r.status().is_success()
            {
                return moto;
            }
            assert!(Instant::now() < deadline, "moto did not answer in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An EC2 Query call to moto (region us-east-1, access key `testing`),
/// unsigned; the XML answer.
pub async fn ec2(endpoint: &str, params: &[(&str, &str)]) -> String {
    let mut form = vec![("Version", "2016-11-15")];
    form.extend_from_slice(params);
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let r = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, \
             SignedHeaders=host, Signature=0000",
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("moto answers");
    let status = r.status();
    let text = r.text().await.expect("moto's body");
    assert!(status.is_success(), "EC2 {params:?}: {status} {text}");
    text
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of every `<tag>...</tag>` in `xml`, in order.
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].to_owned());
        rest = &after[j + close.len()..];
    }
    out
}

/// The `berth:address` tag of every object in an EC2 answer whose objects
/// are introduced by `<id_tag>` (`instanceId`, `keyPairId`, `groupId`):
/// id -> address ("" when untagged).
pub fn ec2_owned(xml: &str, id_tag: &str) -> BTreeMap<String, String> {
    let open = format!("<{id_tag}>");
    let mut out = BTreeMap::new();
    let chunks: Vec<&str> = xml.split(&open).skip(1).collect();
    for chunk in chunks {
        let id = chunk.split('<').next().unwrap_or_default().to_owned();
        let address = chunk
            .split("<key>berth:address</key>")
            .nth(1)
            .and_then(|rest| xml_values(rest, "value").into_iter().next())
            .unwrap_or_default();
        out.insert(id, address);
    }
    out
}

/// The AMI moto knows as Amazon Linux.
pub async fn amazon_linux_ami(endpoint: &str) -> String {
    let xml = ec2(
        endpoint,
        &[
            ("Action", "DescribeImages"),
            ("Owner.1", "amazon"),
            ("Filter.1.Name", "name"),
            ("Filter.1.Value.1", "amzn-ami-hvm-*"),
        ],
    )
    .await;
    xml_values(&xml, "imageId")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("moto lists no Amazon Linux AMI: {xml:.400}"))
}

// ---------------------------------------------------------------- proxy

/// One request as the proxy saw it.
pub struct Seen<'a> {
    /// The proxy's name (`moto`, `docker`, ...).
    pub service: &'a str,
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

impl Seen<'_> {
    /// The EC2 `Action` of a Query request.
    pub fn ec2_action(&self) -> Option<String> {
        let text = std::str::from_utf8(self.body).ok()?;
        text.split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_owned)
            .or_else(|| {
                self.query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("Action="))
                    .map(str::to_owned)
            })
    }

    /// Whether the request changes something (a create, update, delete,
    /// build or start), whatever the service.
    pub fn mutating(&self) -> bool {
        if let Some(action) = self.ec2_action() {
            return !["Describe", "Get", "List"]
                .iter()
                .any(|p| action.starts_with(p));
        }
        if matches!(*self.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return false;
        }
        // Docker calls that only wait or look.
        !(self.path.ends_with("/wait") || self.path.ends_with("/_ping"))
    }

    /// `SERVICE METHOD PATH [Action]`, for reports.
    pub fn describe(&self) -> String {
        match self.ec2_action() {
            Some(a) => format!("{} {} {}", self.service, self.method, a),
            None => format!("{} {} {}", self.service, self.method, self.path),
        }
    }
}

/// What happens once the upstream has answered.
pub enum After {
    /// Send its answer on.
    Send,
    /// Send the head and half the body, then close.
    Truncate,
    /// Wait, then send the answer (past the client's timeout: it is lost).
    Delay(Duration),
    /// Run the hook, then never answer (R1: SIGKILL berth here).
    Hang(Box<dyn FnOnce() + Send>),
}

/// What the proxy does with one request.
pub enum Action {
    /// Forward, then [`After`].
    Forward(After),
    /// Answer `status` without forwarding, with `Retry-After: secs` if
    /// given.
    Answer {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Close the connection without an answer, without forwarding.
    Reset,
    /// Never answer, never forward (R1: berth was killed before it).
    Hang,
}

/// Decides for every request.
pub trait Policy: Send + Sync + 'static {
    fn decide(&self, seen: &Seen<'_>) -> Action;
}

/// Forwards everything.
pub struct PassThrough;

impl Policy for PassThrough {
    fn decide(&self, _: &Seen<'_>) -> Action {
        Action::Forward(After::Send)
    }
}

/// Where the proxy listens, or where its upstream is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// `127.0.0.1:0` to listen; `HOST:PORT` upstream.
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

/// A running proxy (its tasks live in the runtime that started it).
pub struct Proxy {
    /// `http://127.0.0.1:PORT` or `unix:///path`.
    pub url: String,
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
type Reply = Response<Body>;
type Upstream = Response<Full<Bytes>>;

impl Proxy {
    pub async fn start(
        service: &'static str,
        listen: Endpoint,
        upstream: Endpoint,
        policy: Arc<dyn Policy>,
    ) -> Proxy {
        let upstream = Arc::new(upstream);
        match listen {
            Endpoint::Tcp(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
                let local = listener.local_addr().expect("local addr");
                tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        serve(service, stream, upstream.clone(), policy.clone());
                    }
                });
                Proxy {
                    url: format!("http://{local}"),
                }
            }
            Endpoint::Unix(path) => {
                let _ = std::fs::remove_file(&path);
                let listener = tokio::net::UnixListener::bind(&path).expect("bind unix socket");
                tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        serve(service, stream, upstream.clone(), policy.clone());
                    }
                });
                Proxy {
                    url: format!("unix://{}", path.display()),
                }
            }
        }
    }
}

fn serve<S>(service: &'static str, stream: S, upstream: Arc<Endpoint>, policy: Arc<dyn Policy>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let upstream = upstream.clone();
            let policy = policy.clone();
            async move { handle(service, req, &upstream, policy.as_ref()).await }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    });
}

#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for ResetConnection {}

async fn handle(
    service: &'static str,
    req: Request<Incoming>,
    upstream: &Endpoint,
    policy: &dyn Policy,
) -> Result<Reply, ResetConnection> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let action = policy.decide(&Seen {
        service,
        method: &parts.method,
        path: &path,
        query: &query,
        body: &body,
    });
    let after = match action {
        Action::Forward(after) => after,
        Action::Answer {
            status,
            retry_after,
        } => {
            let mut b = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            if let Some(s) = retry_after {
                b = b.header("retry-after", s.to_string());
            }
            let text = format!(
                "{{\"id\":\"injected\",\"message\":\"injected {status}\",\"error\":\"injected {status}\"}}"
            );
            return Ok(b
                .body(Full::new(Bytes::from(text)).boxed())
                .expect("response"));
        }
        Action::Reset => return Err(ResetConnection),
        Action::Hang => {
            std::future::pending::<()>().await;
            return Err(ResetConnection);
        }
    };
    let answer = match forward(upstream, &parts, body).await {
        Ok(a) => a,
        Err(e) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(format!("proxy: upstream failed: {e}"))).boxed())
                .expect("response"));
        }
    };
    match after {
        After::Send => Ok(answer.map(BodyExt::boxed)),
        After::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(answer.map(BodyExt::boxed))
        }
        After::Truncate => {
            let (mut head, full) = answer.into_parts();
            let bytes = full
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            head.headers.insert(
                hyper::header::CONTENT_LENGTH,
                hyper::header::HeaderValue::from(bytes.len().max(2)),
            );
            // A body of unknown size, so that hyper sends the promised
            // length, then half the bytes, then closes the connection.
            let half = bytes.slice(..bytes.len() / 2);
            let stream = futures_util::stream::once(async move {
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(half))
            });
            Ok(Response::from_parts(
                head,
                http_body_util::StreamBody::new(stream).boxed(),
            ))
        }
        After::Hang(hook) => {
            hook();
            std::future::pending::<()>().await;
            Err(ResetConnection)
        }
    }
}

async fn forward(
    upstream: &Endpoint,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<Upstream, String> {
    let mut builder = Request::builder().method(parts.method.clone()).uri(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
    );
    for (k, v) in &parts.headers {
        if k != hyper::header::TRANSFER_ENCODING && k != hyper::header::CONNECTION {
            builder = builder.header(k, v);
        }
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let response = match upstream {
        Endpoint::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            send(stream, request).await?
        }
        Endpoint::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| format!("connect {}: {e}", path.display()))?;
            send(stream, request).await?
        }
    };
    Ok(response)
}

async fn send<S>(stream: S, request: Request<Full<Bytes>>) -> Result<Upstream, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let (mut head, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    head.headers.remove(hyper::header::TRANSFER_ENCODING);
    head.headers.remove(hyper::header::CONNECTION);
    head.headers.insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(bytes.len()),
    );
    Ok(Response::from_parts(head, Full::new(bytes)))
}

/// A one-worker-thread runtime for doubles and proxies, kept by the test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------- berth

/// A berth child that hooks may SIGKILL (by its PID, once).
pub struct Berth {
    child: Arc<Mutex<Child>>,
    killed: Arc<AtomicBool>,
    /// What the kill interrupted, as the hook described it.
    pub why: Arc<Mutex<String>>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// A handle that SIGKILLs the child (once).
#[derive(Clone)]
pub struct Killer {
    child: Arc<Mutex<Option<Arc<Mutex<Child>>>>>,
    killed: Arc<AtomicBool>,
    /// What the kill interrupted.
    pub why: Arc<Mutex<String>>,
}

impl Default for Killer {
    fn default() -> Self {
        Killer {
            child: Arc::new(Mutex::new(None)),
            killed: Arc::new(AtomicBool::new(false)),
            why: Arc::new(Mutex::new(String::new())),
        }
    }
}

impl Killer {
    /// SIGKILLs the child now (if one runs and was not killed yet).
    pub fn kill(&self, why: String) {
        let Some(child) = self.child.lock().expect("killer").clone() else {
            return;
        };
        if self.killed.swap(true, Ordering::SeqCst) {
            return;
        }
        *self.why.lock().expect("why") = why;
        let _ = child.lock().expect("child").kill();
    }

    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Spawns `cmd` (stderr read line by line; `on_line` sees each line
    /// with this killer) and arms the killer for it.
    pub fn spawn(
        &self,
        mut cmd: Command,
        on_line: impl Fn(&str, &Killer) + Send + 'static,
    ) -> Berth {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn berth");
        let stderr = child.stderr.take().expect("stderr");
        let child = Arc::new(Mutex::new(child));
        self.killed.store(false, Ordering::SeqCst);
        self.why.lock().expect("why").clear();
        *self.child.lock().expect("killer") = Some(child.clone());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = lines.clone();
            let killer = self.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    on_line(&line, &killer);
                    lines.lock().expect("lines").push(line);
                }
            })
        };
        Berth {
            child,
            killed: self.killed.clone(),
            why: self.why.clone(),
            lines,
            reader: Some(reader),
        }
    }

    /// Disarms (after the child was waited for).
    pub fn disarm(&self) {
        *self.child.lock().expect("killer") = None;
    }
}

impl Berth {
    /// Waits for the child (polling, so that hooks can kill it meanwhile);
    /// returns its exit code (`None`: killed by a signal) and stderr.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let begin = Instant::now();
        let status = loop {
            if let Some(s) = self.child.lock().expect("child").try_wait().expect("wait") {
                break s;
            }
            if begin.elapsed() > limit {
                let _ = self.child.lock().expect("child").kill();
                panic!(
                    "berth ran longer than {limit:?}:\n{}",
                    self.lines.lock().expect("lines").join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let log = self.lines.lock().expect("lines").join("\n");
        (status.code(), log)
    }

    pub fn was_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}
