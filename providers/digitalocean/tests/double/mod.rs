//! An in-process double of the DigitalOcean API v2, for the provider's
//! tests: a hyper server on `127.0.0.1:0` that keeps droplets, actions, SSH
//! keys, firewalls and tags in memory and answers as the official OpenAPI
//! spec (`shared/specs/digitalocean` beside the checkout) describes the operations berth
//! uses:
//!
//! - droplets: create (202 with `links.actions`; `name`, `size`, `image`
//!   required, else 422), list (`tag_name`, `name`, `page`, `per_page` 1 to
//!   200, `links.pages`, `meta.total`), get, delete (204); a new droplet
//!   goes `new` → `active` after a configurable number of reads and then has
//!   a public and a private IPv4 (the public one settable, `public_ipv4`, so
//!   an end-to-end test can point it at a server of its own on loopback); a deleted one answers reads for a few more
//!   polls before 404;
//! - droplet actions (201 with an action that goes `in-progress` →
//!   `completed` over a few polls of `GET /v2/actions/{id}`, taking effect
//!   when it completes; `resize` needs the droplet off);
//! - SSH keys: create (201; the same public key twice is 422
//!   `unprocessable_entity` "SSH Key is already in use on your account"),
//!   list, get / update / delete by id or fingerprint;
//! - firewalls: create (202), list, get, update (`PUT`, the whole
//!   firewall), delete; the tags a firewall names must exist;
//! - tags: create (201, also for an existing tag), tag and untag droplets;
//! - bearer auth (401 `unauthorized`), unknown ids (404 `not_found`),
//!   optional rate limiting (every Nth request is a 429 with `Retry-After:
//!   1` and `ratelimit-remaining: 0`), `ratelimit-limit` /
//!   `ratelimit-remaining` / `ratelimit-reset` on every answer, and request
//!   counters per route;
//! - injected faults: `500 server_error` on every Nth request
//!   (`fail_every`) or on a share of them from a fixed-seed generator
//!   (`fail_rate`), neither acted on; and a pause before every answer
//!   (`latency`, e.g. 50 ms for benchmarks). All three can be changed while
//!   the double runs.
//!
//! The contract check (module [`spec`]): every request (path and query
//! parameters, JSON body) and every answer (status, JSON body, documented
//! headers) is validated against the operation in DigitalOcean's OpenAPI
//! spec. Violations are recorded; a [`Double`] dropped with unexamined
//! violations fails the test, and tests that send wrong requests on purpose
//! take them with [`Double::take_violations`]. Routes the spec lacks are
//! listed by [`Double::unvalidated_routes`] (none of those berth uses).

#![allow(dead_code)]

pub mod spec;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// How the double behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// The only bearer token accepted.
    pub token: String,
    /// Reads of a new droplet before it is active; `None`: never.
    pub polls_until_active: Option<u32>,
    /// Reads of a deleted droplet that still find it.
    pub polls_until_gone: u32,
    /// Reads of an action before it completes.
    pub action_polls: u32,
    /// Every Nth request is answered 429.
    pub rate_limit_every: Option<u64>,
    /// A pause before every answer (the API's round trip), e.g. 50 ms.
    pub latency: Duration,
    /// Every Nth request (after authentication and rate limiting) is
    /// answered `500 server_error` without being acted on.
    pub fail_every: Option<u64>,
    /// The share of requests (0.0 to 1.0) answered `500 server_error`,
    /// drawn from a fixed-seed generator so runs repeat.
    pub fail_rate: f64,
    /// Check every request and answer against the OpenAPI spec (module
    /// `spec`); a [`Double`] with violations fails the test when it is
    /// dropped, unless they were taken with [`Double::take_violations`].
    pub check_spec: bool,
    /// The public IPv4 address every droplet reports once active; `None`:
    /// `203.0.113.N` (a documentation range) from the droplet's id. An
    /// end-to-end test sets `127.0.0.1` to reach an sshd of its own.
    pub public_ipv4: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: "dop_v1_test_token_0123456789".to_owned(),
            polls_until_active: Some(2),
            polls_until_gone: 2,
            action_polls: 2,
            rate_limit_every: None,
            latency: Duration::ZERO,
            fail_every: None,
            fail_rate: 0.0,
            check_spec: true,
            public_ipv4: None,
        }
    }
}

#[derive(Clone, Debug)]
enum Effect {
    Rename(String),
    Resize(String),
    Status(&'static str),
    Backups(bool),
    Ipv6,
}

#[derive(Debug)]
struct Action {
    json: Value,
    polls: u32,
    droplet: u64,
    effect: Effect,
}

#[derive(Debug)]
struct Droplet {
    json: Value,
    polls: u32,
    /// Reads left before a deleted droplet is gone.
    deleted: Option<u32>,
}

#[derive(Debug, Default)]
struct State {
    base: String,
    next_id: u64,
    requests: u64,
    rate_limited: u64,
    failed: u64,
    /// The state of the generator behind `fail_rate`.
    rng: u64,
    counts: BTreeMap<String, u64>,
    droplets: BTreeMap<u64, Droplet>,
    actions: BTreeMap<u64, Action>,
    keys: BTreeMap<u64, Value>,
    firewalls: BTreeMap<String, Value>,
    tags: Vec<String>,
}

/// A running double.
pub struct Double {
    /// `http://127.0.0.1:PORT`, for `api_endpoint`.
    pub base: String,
    /// The accepted token.
    pub token: String,
    shared: Arc<Shared>,
}

/// What the server task and the test share.
struct Shared {
    options: Mutex<Options>,
    state: Mutex<State>,
    violations: Mutex<Violations>,
    /// Nanoseconds spent working on requests (see [`Double::busy`]).
    busy_ns: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Violations {
    /// `METHOD /path (operationId) request|response: problem`.
    found: Vec<String>,
    /// Routes (`GET /v2/...` with `{id}`s) the spec has no operation for.
    unvalidated: std::collections::BTreeSet<String>,
    /// Checked requests and answers.
    checked: u64,
}

impl Shared {
    fn add_busy(&self, d: Duration) {
        self.busy_ns
            .fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn record(&self, route: &str, op: &str, what: &str, problems: Vec<String>) {
        let mut v = self.violations.lock().expect("violations");
        v.checked += 1;
        for p in problems {
            v.found.push(format!("{route} ({op}) {what}: {p}"));
        }
    }
}

type Reply = Response<Full<Bytes>>;

impl Double {
    /// Starts a double on a free port of 127.0.0.1.
    pub async fn start(options: Options) -> Double {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let base = format!("http://{addr}");
        if options.check_spec {
            // Load (and so check) the spec before the first request.
            let _ = spec::spec();
        }
        let token = options.token.clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                base: base.clone(),
                next_id: 1000,
                rng: 0x9e37_79b9_7f4a_7c15,
                ..State::default()
            }),
            options: Mutex::new(options),
            violations: Mutex::new(Violations::default()),
            busy_ns: std::sync::atomic::AtomicU64::new(0),
        });
        let server = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Double {
            base,
            token,
            shared,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().expect("double state")
    }

    fn options(&self) -> MutexGuard<'_, Options> {
        self.shared.options.lock().expect("options")
    }

    /// Spec violations found so far (requests and answers), removed from
    /// the double so that dropping it does not fail the test. Tests that
    /// send wrong requests on purpose take them and look at them.
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.shared.violations.lock().expect("violations").found)
    }

    /// Panics, listing them, if the spec was violated.
    #[track_caller]
    pub fn assert_spec_clean(&self) {
        let found = self.take_violations();
        assert!(
            found.is_empty(),
            "the DigitalOcean double saw {} spec violation(s):\n{}",
            found.len(),
            found.join("\n")
        );
    }

    /// Requests and answers checked against the spec.
    pub fn spec_checked(&self) -> u64 {
        self.shared.violations.lock().expect("violations").checked
    }

    /// Routes served that the loaded spec has no operation for (so were
    /// not checked).
    pub fn unvalidated_routes(&self) -> Vec<String> {
        self.shared
            .violations
            .lock()
            .expect("violations")
            .unvalidated
            .iter()
            .cloned()
            .collect()
    }

    /// Turns the spec check on or off (e.g. off for timing runs).
    pub fn set_check_spec(&self, on: bool) {
        self.options().check_spec = on;
    }

    /// Time spent working on requests: routing, state, the spec check; not
    /// the injected latency.
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(
            self.shared
                .busy_ns
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Changes the pause before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.options().latency = latency;
    }

    /// Changes the public IPv4 address droplets report once active (see
    /// [`Options::public_ipv4`]); droplets already active keep theirs.
    pub fn set_public_ipv4(&self, address: Option<&str>) {
        self.options().public_ipv4 = address.map(str::to_owned);
    }

    /// Changes the every-Nth 500 injection.
    pub fn set_fail_every(&self, every: Option<u64>) {
        self.options().fail_every = every;
    }

    /// Changes the random 500 injection rate (0.0 to 1.0).
    pub fn set_fail_rate(&self, rate: f64) {
        self.options().fail_rate = rate;
    }

    /// Requests answered with an injected 500.
    pub fn injected_failures(&self) -> u64 {
        self.state().failed
    }

    /// All requests served.
    pub fn requests(&self) -> u64 {
        self.state().requests
    }

    /// Zeroes the request counters (per route, total, 429s and 500s).
    pub fn reset_counts(&self) {
        let mut st = self.state();
        st.counts.clear();
        st.rate_limited = 0;
        st.failed = 0;
    }

    /// Requests made to `route`, e.g. `GET /v2/droplets` or
    /// `POST /v2/droplets/{id}/actions` (429 answers included).
    pub fn count(&self, route: &str) -> u64 {
        self.state().counts.get(route).copied().unwrap_or(0)
    }

    /// All counters.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state().counts.clone()
    }

    /// Requests answered 429.
    pub fn rate_limited(&self) -> u64 {
        self.state().rate_limited
    }

    /// Changes the rate limiting.
    pub fn set_rate_limit_every(&self, every: Option<u64>) {
        self.options().rate_limit_every = every;
    }

    /// A droplet as the API would show it (deleted ones included until
    /// they are gone).
    pub fn droplet(&self, id: &str) -> Option<Value> {
        let id: u64 = id.parse().ok()?;
        self.state().droplets.get(&id).map(|d| d.json.clone())
    }

    /// The number of droplets that exist.
    pub fn droplet_count(&self) -> usize {
        self.state()
            .droplets
            .values()
            .filter(|d| d.deleted.is_none())
            .count()
    }

    /// A firewall as the API would show it.
    pub fn firewall(&self, id: &str) -> Option<Value> {
        self.state().firewalls.get(id).cloned()
    }

    /// Every droplet that exists (not the deleted ones still answering
    /// reads), as the API would show it.
    pub fn droplets(&self) -> Vec<Value> {
        self.state()
            .droplets
            .values()
            .filter(|d| d.deleted.is_none())
            .map(|d| d.json.clone())
            .collect()
    }

    /// Every firewall, as the API would show it.
    pub fn firewalls(&self) -> Vec<Value> {
        self.state().firewalls.values().cloned().collect()
    }

    /// The SSH keys on the account.
    pub fn keys(&self) -> Vec<Value> {
        self.state().keys.values().cloned().collect()
    }

    /// Adds an active droplet directly (no request counted), as if another
    /// apply had created it.
    pub fn seed_droplet(&self, name: &str, tags: &[String]) -> u64 {
        self.seed_droplet_with(name, "s-1vcpu-1gb", "ubuntu-24-04-x64", "nyc3", tags)
    }

    /// [`Double::seed_droplet`] with the size, image and region slugs.
    pub fn seed_droplet_with(
        &self,
        name: &str,
        size: &str,
        image: &str,
        region: &str,
        tags: &[String],
    ) -> u64 {
        let mut st = self.state();
        st.next_id += 1;
        let id = st.next_id;
        let tags: Vec<String> = tags.iter().map(|t| ensure_tag(&mut st, t)).collect();
        let mut json = droplet_json(id, name, size, image, region, &tags);
        let public_ipv4 = self.options().public_ipv4.clone();
        activate(&mut json, id, false, public_ipv4.as_deref());
        st.droplets.insert(
            id,
            Droplet {
                json,
                polls: 0,
                deleted: None,
            },
        );
        id
    }
}

fn request_id(st: &State) -> String {
    format!("4d9d8375-3c56-4925-a3e7-{:012x}", st.requests)
}

fn reply(st: &State, status: StatusCode, body: Option<Value>) -> Reply {
    let remaining = 5000u64.saturating_sub(st.requests);
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 3600)
        .unwrap_or(0);
    let builder = Response::builder()
        .status(status)
        .header("ratelimit-limit", "5000")
        .header("ratelimit-remaining", remaining.to_string())
        .header("rateLimit-reset", reset.to_string());
    match body {
        Some(b) => builder
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(Bytes::from(b.to_string()))),
        // As the API: a 204 still names a content type.
        None => builder
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::new())),
    }
    .expect("response")
}

fn error(st: &State, status: StatusCode, id: &str, message: &str) -> Reply {
    reply(
        st,
        status,
        Some(json!({"id": id, "message": message, "request_id": request_id(st)})),
    )
}

fn not_found(st: &State) -> Reply {
    error(
        st,
        StatusCode::NOT_FOUND,
        "not_found",
        "The resource you were accessing could not be found.",
    )
}

fn unprocessable(st: &State, message: &str) -> Reply {
    error(
        st,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable_entity",
        message,
    )
}

fn bad_request(st: &State, message: &str) -> Reply {
    error(st, StatusCode::BAD_REQUEST, "bad_request", message)
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 255
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_'))
}

/// The canonical spelling of an existing tag (tags are case-insensitive).
fn find_tag(st: &State, t: &str) -> Option<String> {
    st.tags.iter().find(|x| x.eq_ignore_ascii_case(t)).cloned()
}

fn ensure_tag(st: &mut State, t: &str) -> String {
    match find_tag(st, t) {
        Some(existing) => existing,
        None => {
            st.tags.push(t.to_owned());
            t.to_owned()
        }
    }
}

fn droplet_json(
    id: u64,
    name: &str,
    size: &str,
    image: &str,
    region: &str,
    tags: &[String],
) -> Value {
    json!({
        "id": id,
        "name": name,
        "memory": 1024,
        "vcpus": 1,
        "disk": 25,
        "locked": false,
        "status": "new",
        "kernel": null,
        "created_at": "2026-01-02T03:04:05Z",
        "features": ["private_networking"],
        "backup_ids": [],
        "next_backup_window": null,
        "snapshot_ids": [],
        "image": {"id": 63663980, "name": "24.04 (LTS) x64", "distribution": "Ubuntu", "slug": image, "public": true},
        "volume_ids": [],
        "size": {"slug": size, "memory": 1024, "vcpus": 1, "disk": 25, "transfer": 1.0,
                 "price_monthly": 6.0, "price_hourly": 0.00893, "available": true,
                 "regions": [region], "description": "Basic"},
        "size_slug": size,
        "networks": {"v4": [], "v6": []},
        "region": {"name": "New York 3", "slug": region, "features": ["backups", "ipv6"], "available": true, "sizes": [size]},
        "tags": tags,
        "vpc_uuid": "760e09ef-dc84-11e8-981e-3cfdfeaae000",
    })
}

fn activate(json: &mut Value, id: u64, ipv6: bool, public_ipv4: Option<&str>) {
    json["status"] = json!("active");
    let n = id % 250 + 1;
    let public = public_ipv4.map_or_else(|| format!("203.0.113.{n}"), str::to_owned);
    json["networks"] = json!({
        "v4": [
            {"ip_address": format!("10.10.0.{n}"), "netmask": "255.255.0.0", "gateway": "nil", "type": "private"},
            {"ip_address": public, "netmask": "255.255.255.0", "gateway": "203.0.113.254", "type": "public"}
        ],
        "v6": if ipv6 {
            json!([{"ip_address": format!("2604:A880:0:1010::{n:x}"), "netmask": 64, "gateway": "2604:a880:0:1010::1", "type": "public"}])
        } else { json!([]) }
    });
}

fn set_feature(json: &mut Value, feature: &str, on: bool) {
    let mut features: Vec<String> = json["features"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    features.retain(|f| f != feature);
    if on {
        features.push(feature.to_owned());
    }
    json["features"] = json!(features);
}

/// Pages `items` as the API does, with absolute `links.pages` URLs.
fn paged(
    st: &State,
    key: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    items: Vec<Value>,
) -> Reply {
    let per_page = match query.get("per_page").map(|p| p.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=200).contains(&n) => n,
        Some(_) => return unprocessable(st, "per_page must be between 1 and 200"),
    };
    let page = match query.get("page").map(|p| p.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return unprocessable(st, "page must be at least 1"),
    };
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let chunk: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let link = |p: usize| {
        let mut q: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| k.as_str() != "page")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        q.push(("page".into(), p.to_string()));
        let qs = form_encode(&q);
        format!("{}{path}?{qs}", st.base)
    };
    let mut pages = serde_json::Map::new();
    if page > 1 {
        pages.insert("first".into(), json!(link(1)));
        pages.insert("prev".into(), json!(link(page - 1)));
    }
    if page < last {
        pages.insert("next".into(), json!(link(page + 1)));
        pages.insert("last".into(), json!(link(last)));
    }
    reply(
        st,
        StatusCode::OK,
        Some(json!({key: chunk, "links": {"pages": pages}, "meta": {"total": total}})),
    )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fingerprint(public_key: &str) -> Option<String> {
    let blob = public_key.split_whitespace().nth(1)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .ok()?;
    let digest = md5(&bytes);
    Some(
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

fn key_material(public_key: &str) -> Option<String> {
    public_key.split_whitespace().nth(1).map(str::to_owned)
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: BTreeMap<String, String> = req.uri().query().map(form_decode).unwrap_or_default();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body_bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let parsed: Option<Result<Value, ()>> = if body_bytes.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&body_bytes).map_err(|_| ()))
    };
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let started = std::time::Instant::now();
    let options = shared.options.lock().expect("options").clone();
    let operation = options
        .check_spec
        .then(|| spec::spec().find(method.as_str(), &segments))
        .flatten();
    let route = format!("{method} {path}");
    if let Some((op, path_params)) = &operation {
        let problems = op.check_request(
            path_params,
            &query,
            parsed.as_ref().map(|r| r.as_ref().map_err(|_| ())),
        );
        shared.record(&route, &op.id, "request", problems);
    } else if options.check_spec {
        shared
            .violations
            .lock()
            .expect("violations")
            .unvalidated
            .insert(route_of(&method, &segments));
    }
    let mut worked = started.elapsed();
    if !options.latency.is_zero() {
        tokio::time::sleep(options.latency).await;
    }
    let started = std::time::Instant::now();
    let body = match &parsed {
        None => Value::Null,
        Some(Ok(v)) => v.clone(),
        Some(Err(())) => Value::String("<invalid json>".into()),
    };
    let reply = respond(
        &shared.state,
        &options,
        &method,
        &path,
        &segments,
        &query,
        auth.as_deref(),
        &body,
    );
    let Some((op, _)) = &operation else {
        worked += started.elapsed();
        shared.add_busy(worked);
        return reply;
    };
    let (parts, full) = reply.into_parts();
    let bytes = full
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let sent: Option<Result<Value, ()>> = if bytes.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&bytes).map_err(|_| ()))
    };
    let problems = op.check_response(
        parts.status.as_u16(),
        &headers,
        sent.as_ref().map(|r| r.as_ref().map_err(|_| ())),
    );
    shared.record(&route, &op.id, "response", problems);
    worked += started.elapsed();
    shared.add_busy(worked);
    Response::from_parts(parts, Full::new(bytes))
}

#[expect(clippy::too_many_arguments)]
fn respond(
    state: &Mutex<State>,
    options: &Options,
    method: &Method,
    path: &str,
    segments: &[String],
    query: &BTreeMap<String, String>,
    auth: Option<&str>,
    body: &Value,
) -> Reply {
    let path = path.to_owned();
    let mut st = state.lock().expect("double state");
    st.requests += 1;
    let route = route_of(method, segments);
    *st.counts.entry(route).or_default() += 1;

    if auth != Some(&format!("Bearer {}", options.token)) {
        return error(
            &st,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unable to authenticate you",
        );
    }
    if let Some(every) = options.rate_limit_every
        && every > 0
        && st.requests.is_multiple_of(every)
    {
        st.rate_limited += 1;
        let mut r = error(
            &st,
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "API rate limit exceeded.",
        );
        r.headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
        r.headers_mut().insert(
            "ratelimit-remaining",
            hyper::header::HeaderValue::from_static("0"),
        );
        return r;
    }
    if inject_failure(&mut st, options) {
        st.failed += 1;
        return error(
            &st,
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "Unexpected server-side error",
        );
    }
    if *body == Value::String("<invalid json>".into()) {
        return bad_request(&st, "the request body is not valid JSON");
    }

    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method, seg.as_slice()) {
        (&Method::GET, ["v2", "droplets"]) => list_droplets(&st, &path, query),
        (&Method::POST, ["v2", "droplets"]) => create_droplet(&mut st, options, body),
        (&Method::GET, ["v2", "droplets", id]) => get_droplet(&mut st, options, id),
        (&Method::DELETE, ["v2", "droplets", id]) => delete_droplet(&mut st, options, id),
        (&Method::POST, ["v2", "droplets", id, "actions"]) => {
            droplet_action(&mut st, options, id, body)
        }
        (&Method::GET, ["v2", "actions", id]) => get_action(&mut st, options, id),
        (&Method::GET, ["v2", "account", "keys"]) => {
            let keys = st.keys.values().cloned().collect();
            paged(&st, "ssh_keys", &path, query, keys)
        }
        (&Method::POST, ["v2", "account", "keys"]) => create_key(&mut st, body),
        (m, ["v2", "account", "keys", id]) => key_by_id(&mut st, m, id, body),
        (&Method::GET, ["v2", "firewalls"]) => {
            let fws = st.firewalls.values().cloned().collect();
            paged(&st, "firewalls", &path, query, fws)
        }
        (&Method::POST, ["v2", "firewalls"]) => put_firewall(&mut st, None, body),
        (&Method::GET, ["v2", "firewalls", id]) => match st.firewalls.get(*id) {
            Some(fw) => reply(&st, StatusCode::OK, Some(json!({"firewall": fw}))),
            None => not_found(&st),
        },
        (&Method::PUT, ["v2", "firewalls", id]) => {
            if !st.firewalls.contains_key(*id) {
                return not_found(&st);
            }
            put_firewall(&mut st, Some(id), body)
        }
        (&Method::DELETE, ["v2", "firewalls", id]) => match st.firewalls.remove(*id) {
            Some(_) => reply(&st, StatusCode::NO_CONTENT, None),
            None => not_found(&st),
        },
        (&Method::POST, ["v2", "tags"]) => {
            let name = body["name"].as_str().unwrap_or("").to_owned();
            if !valid_tag(&name) {
                return bad_request(
                    &st,
                    "name may only contain letters, numbers, colons, dashes and underscores (max 255)",
                );
            }
            let name = ensure_tag(&mut st, &name);
            reply(
                &st,
                StatusCode::CREATED,
                Some(
                    json!({"tag": {"name": name, "resources": {"count": 0, "droplets": {"count": 0}}}}),
                ),
            )
        }
        (m @ (&Method::POST | &Method::DELETE), ["v2", "tags", tag, "resources"]) => {
            tag_resources(&mut st, *m == Method::POST, tag, body)
        }
        _ => not_found(&st),
    }
}

/// The counter key of a request: ids replaced by `{id}` / `{tag}`.
fn route_of(method: &Method, segments: &[String]) -> String {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let path = match s.as_slice() {
        ["v2", "droplets", _] => "/v2/droplets/{id}".to_owned(),
        ["v2", "droplets", _, "actions"] => "/v2/droplets/{id}/actions".to_owned(),
        ["v2", "actions", _] => "/v2/actions/{id}".to_owned(),
        ["v2", "account", "keys", _] => "/v2/account/keys/{id}".to_owned(),
        ["v2", "firewalls", _] => "/v2/firewalls/{id}".to_owned(),
        ["v2", "tags", _, "resources"] => "/v2/tags/{tag}/resources".to_owned(),
        other => format!("/{}", other.join("/")),
    };
    format!("{method} {path}")
}

fn list_droplets(st: &State, path: &str, query: &BTreeMap<String, String>) -> Reply {
    let tag = query.get("tag_name");
    let name = query.get("name");
    if tag.is_some() && (name.is_some() || query.contains_key("type")) {
        return unprocessable(st, "tag_name cannot be combined with name or type");
    }
    let items = st
        .droplets
        .values()
        .filter(|d| d.deleted.is_none())
        .filter(|d| {
            tag.is_none_or(|t| {
                strings(&d.json["tags"])
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(t))
            })
        })
        .filter(|d| {
            name.is_none_or(|n| {
                d.json["name"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(n))
            })
        })
        .map(|d| d.json.clone())
        .collect();
    paged(st, "droplets", path, query, items)
}

fn valid_droplet_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

fn create_droplet(st: &mut State, options: &Options, body: &Value) -> Reply {
    for field in ["name", "size", "image"] {
        let present = match &body[field] {
            Value::String(s) => !s.is_empty(),
            Value::Number(_) => field == "image",
            _ => false,
        };
        if !present {
            return unprocessable(st, &format!("You must specify a {field}."));
        }
    }
    let name = body["name"].as_str().unwrap_or("").to_owned();
    if !valid_droplet_name(&name) {
        return unprocessable(st, "Name is not a valid hostname.");
    }
    if body
        .get("user_data")
        .and_then(Value::as_str)
        .is_some_and(|u| u.len() > 64 * 1024)
    {
        return unprocessable(st, "user_data is too long (maximum is 64 KiB).");
    }
    let tags = strings(&body["tags"]);
    if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
        return unprocessable(st, &format!("Tag name `{bad}` is invalid."));
    }
    for key in strings(&body["ssh_keys"]) {
        let known = st.keys.values().any(|k| {
            k["id"].as_u64().is_some_and(|i| key.parse() == Ok(i))
                || k["fingerprint"].as_str() == Some(key.as_str())
        });
        if !known {
            return unprocessable(st, &format!("ssh_key {key} is not found on your account."));
        }
    }
    let tags: Vec<String> = tags.iter().map(|t| ensure_tag(st, t)).collect();
    st.next_id += 1;
    let id = st.next_id;
    let image = match &body["image"] {
        Value::Number(n) => n.to_string(),
        v => v.as_str().unwrap_or("").to_owned(),
    };
    let region = body["region"].as_str().map(|r| {
        if r.len() == 3 {
            format!("{r}1")
        } else {
            r.to_owned()
        }
    });
    let mut json = droplet_json(
        id,
        &name,
        body["size"].as_str().unwrap_or(""),
        &image,
        region.as_deref().unwrap_or("nyc3"),
        &tags,
    );
    if let Some(vpc) = body["vpc_uuid"].as_str() {
        json["vpc_uuid"] = json!(vpc);
    }
    for feature in ["monitoring", "backups", "ipv6"] {
        if body[feature].as_bool() == Some(true) {
            set_feature(&mut json, feature, true);
        }
    }
    if options.polls_until_active == Some(0) {
        activate(
            &mut json,
            id,
            body["ipv6"].as_bool() == Some(true),
            options.public_ipv4.as_deref(),
        );
    }
    st.droplets.insert(
        id,
        Droplet {
            json: json.clone(),
            polls: 0,
            deleted: None,
        },
    );
    st.next_id += 1;
    let action_id = st.next_id;
    let href = format!("{}/v2/actions/{action_id}", st.base);
    reply(
        st,
        StatusCode::ACCEPTED,
        Some(
            json!({"droplet": json, "links": {"actions": [{"id": action_id, "rel": "create", "href": href}]}}),
        ),
    )
}

fn get_droplet(st: &mut State, options: &Options, id: &str) -> Reply {
    let Ok(id) = id.parse::<u64>() else {
        return not_found(st);
    };
    let Some(d) = st.droplets.get_mut(&id) else {
        return not_found(st);
    };
    if let Some(left) = d.deleted {
        if left == 0 {
            st.droplets.remove(&id);
            return not_found(st);
        }
        d.deleted = Some(left - 1);
    } else {
        d.polls += 1;
        if d.json["status"] == "new" && options.polls_until_active.is_some_and(|n| d.polls >= n) {
            let ipv6 = strings(&d.json["features"]).iter().any(|f| f == "ipv6");
            activate(&mut d.json, id, ipv6, options.public_ipv4.as_deref());
        }
    }
    let json = d.json.clone();
    reply(st, StatusCode::OK, Some(json!({"droplet": json})))
}

fn delete_droplet(st: &mut State, options: &Options, id: &str) -> Reply {
    let Ok(id) = id.parse::<u64>() else {
        return not_found(st);
    };
    match st.droplets.get_mut(&id) {
        Some(d) if d.deleted.is_none() => {
            if options.polls_until_gone == 0 {
                st.droplets.remove(&id);
            } else {
                d.deleted = Some(options.polls_until_gone);
            }
            reply(st, StatusCode::NO_CONTENT, None)
        }
        _ => not_found(st),
    }
}

fn droplet_action(st: &mut State, options: &Options, id: &str, body: &Value) -> Reply {
    let Ok(droplet_id) = id.parse::<u64>() else {
        return not_found(st);
    };
    let Some(d) = st.droplets.get(&droplet_id).filter(|d| d.deleted.is_none()) else {
        return not_found(st);
    };
    let status = d.json["status"].as_str().unwrap_or("").to_owned();
    let kind = body["type"].as_str().unwrap_or("").to_owned();
    let effect = match kind.as_str() {
        "rename" => match body["name"].as_str() {
            Some(n) if valid_droplet_name(n) => Effect::Rename(n.to_owned()),
            _ => return unprocessable(st, "Name is not a valid hostname."),
        },
        "resize" => {
            let Some(size) = body["size"].as_str() else {
                return unprocessable(st, "You must specify a size.");
            };
            if status != "off" {
                return unprocessable(
                    st,
                    "Droplet is currently on. Please power it off to run this event.",
                );
            }
            Effect::Resize(size.to_owned())
        }
        "power_off" | "shutdown" => Effect::Status("off"),
        "power_on" => Effect::Status("active"),
        "enable_backups" => Effect::Backups(true),
        "disable_backups" => Effect::Backups(false),
        "enable_ipv6" => Effect::Ipv6,
        other => return unprocessable(st, &format!("Action type `{other}` is not supported.")),
    };
    st.next_id += 1;
    let action_id = st.next_id;
    let json = json!({
        "id": action_id, "status": "in-progress", "type": kind,
        "started_at": "2026-01-02T03:04:05Z", "completed_at": null,
        "resource_id": droplet_id, "resource_type": "droplet", "region_slug": "nyc3"
    });
    let mut action = Action {
        json,
        polls: 0,
        droplet: droplet_id,
        effect,
    };
    if options.action_polls == 0 {
        complete(st, &mut action);
    }
    let json = action.json.clone();
    st.actions.insert(action_id, action);
    reply(st, StatusCode::CREATED, Some(json!({"action": json})))
}

fn complete(st: &mut State, action: &mut Action) {
    action.json["status"] = json!("completed");
    action.json["completed_at"] = json!("2026-01-02T03:05:05Z");
    let Some(d) = st.droplets.get_mut(&action.droplet) else {
        return;
    };
    match &action.effect {
        Effect::Rename(n) => d.json["name"] = json!(n),
        Effect::Resize(s) => {
            d.json["size_slug"] = json!(s);
            d.json["size"]["slug"] = json!(s);
        }
        Effect::Status(s) => d.json["status"] = json!(s),
        Effect::Backups(on) => set_feature(&mut d.json, "backups", *on),
        Effect::Ipv6 => set_feature(&mut d.json, "ipv6", true),
    }
}

fn get_action(st: &mut State, options: &Options, id: &str) -> Reply {
    let Some(mut action) = id.parse::<u64>().ok().and_then(|id| st.actions.remove(&id)) else {
        return not_found(st);
    };
    action.polls += 1;
    if action.json["status"] == "in-progress" && action.polls >= options.action_polls {
        complete(st, &mut action);
    }
    let json = action.json.clone();
    if let Ok(id) = id.parse::<u64>() {
        st.actions.insert(id, action);
    }
    reply(st, StatusCode::OK, Some(json!({"action": json})))
}

fn create_key(st: &mut State, body: &Value) -> Reply {
    let name = body["name"].as_str().unwrap_or("").to_owned();
    let public_key = body["public_key"].as_str().unwrap_or("").to_owned();
    if name.is_empty() {
        return unprocessable(st, "Name can't be blank");
    }
    let Some(fp) = fingerprint(&public_key) else {
        return unprocessable(
            st,
            "Key invalid type, we support 'ssh-rsa', 'ssh-dss', 'ecdsa-sha2-nistp', or 'ssh-ed25519'",
        );
    };
    let material = key_material(&public_key);
    if st
        .keys
        .values()
        .any(|k| k["public_key"].as_str().and_then(key_material) == material)
    {
        return unprocessable(st, "SSH Key is already in use on your account");
    }
    st.next_id += 1;
    let id = st.next_id;
    let key = json!({"id": id, "fingerprint": fp, "public_key": public_key, "name": name});
    st.keys.insert(id, key.clone());
    reply(st, StatusCode::CREATED, Some(json!({"ssh_key": key})))
}

fn key_by_id(st: &mut State, method: &Method, id: &str, body: &Value) -> Reply {
    let found = st
        .keys
        .iter()
        .find(|(k, v)| k.to_string() == id || v["fingerprint"].as_str() == Some(id))
        .map(|(k, _)| *k);
    let Some(key_id) = found else {
        return not_found(st);
    };
    match *method {
        Method::GET => {
            let key = st.keys[&key_id].clone();
            reply(st, StatusCode::OK, Some(json!({"ssh_key": key})))
        }
        Method::PUT => {
            if let Some(name) = body["name"].as_str()
                && let Some(k) = st.keys.get_mut(&key_id)
            {
                k["name"] = json!(name);
            }
            let key = st.keys[&key_id].clone();
            reply(st, StatusCode::OK, Some(json!({"ssh_key": key})))
        }
        Method::DELETE => {
            st.keys.remove(&key_id);
            reply(st, StatusCode::NO_CONTENT, None)
        }
        _ => not_found(st),
    }
}

fn valid_firewall_name(name: &str) -> bool {
    name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

fn put_firewall(st: &mut State, id: Option<&str>, body: &Value) -> Reply {
    let name = body["name"].as_str().unwrap_or("");
    if !valid_firewall_name(name) {
        return bad_request(st, "name is invalid");
    }
    let inbound = body["inbound_rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let outbound = body["outbound_rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if inbound.is_empty() && outbound.is_empty() {
        return bad_request(st, "must specify at least one inbound or outbound rule");
    }
    for (rules, target) in [(&inbound, "sources"), (&outbound, "destinations")] {
        for rule in rules {
            let protocol = rule["protocol"].as_str().unwrap_or("");
            if !matches!(protocol, "tcp" | "udp" | "icmp") {
                return bad_request(st, "protocol must be one of tcp, udp, icmp");
            }
            if rule["ports"].as_str().is_none() {
                return bad_request(st, "ports is required");
            }
            if !rule[target].is_object() {
                return bad_request(st, &format!("{target} is required"));
            }
        }
    }
    let mut tags = Vec::new();
    for t in strings(&body["tags"]) {
        match find_tag(st, &t) {
            Some(canonical) => tags.push(canonical),
            None => return bad_request(st, &format!("tag {t} does not exist")),
        }
    }
    let droplet_ids: Vec<Value> = match body["droplet_ids"].as_array() {
        Some(ids) => ids.clone(),
        None => Vec::new(),
    };
    if let Some(bad) = droplet_ids.iter().find(|d| !d.is_u64()) {
        return bad_request(st, &format!("droplet id {bad} is not an integer"));
    }
    let creating = id.is_none();
    let (id, status, created) = match id {
        Some(id) => (
            id.to_owned(),
            "succeeded",
            st.firewalls[id]["created_at"].clone(),
        ),
        None => {
            st.next_id += 1;
            (
                format!("bb4b2611-3d72-467b-8602-{:012x}", st.next_id),
                "waiting",
                json!("2026-01-02T03:04:05Z"),
            )
        }
    };
    let fw = json!({
        "id": id, "name": name, "status": status, "created_at": created,
        "pending_changes": [], "droplet_ids": droplet_ids, "tags": tags,
        "inbound_rules": inbound, "outbound_rules": outbound,
    });
    st.firewalls.insert(id.clone(), fw.clone());
    let code = if creating {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    reply(st, code, Some(json!({"firewall": fw})))
}

fn tag_resources(st: &mut State, add: bool, tag: &str, body: &Value) -> Reply {
    let Some(canonical) = find_tag(st, tag) else {
        return not_found(st);
    };
    let Some(resources) = body["resources"].as_array() else {
        return bad_request(st, "resources is required");
    };
    for r in resources {
        if r["resource_type"] != "droplet" {
            return bad_request(st, "only droplets are supported by this double");
        }
        let id = r["resource_id"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok());
        let Some(d) = id.and_then(|id| st.droplets.get_mut(&id)) else {
            return not_found(st);
        };
        let mut tags = strings(&d.json["tags"]);
        tags.retain(|t| !t.eq_ignore_ascii_case(&canonical));
        if add {
            tags.push(canonical.clone());
        }
        d.json["tags"] = json!(tags);
    }
    reply(st, StatusCode::NO_CONTENT, None)
}

impl Drop for Double {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let found = self.take_violations();
        assert!(
            found.is_empty(),
            "the DigitalOcean double saw {} spec violation(s) (take_violations() to expect them):\n{}",
            found.len(),
            found.join("\n")
        );
    }
}

/// Whether this request gets an injected 500 (`fail_every`, `fail_rate`).
fn inject_failure(st: &mut State, options: &Options) -> bool {
    if let Some(every) = options.fail_every
        && every > 0
        && st.requests.is_multiple_of(every)
    {
        return true;
    }
    if options.fail_rate > 0.0 {
        // xorshift64*: a fixed sequence, so a failing run can be repeated.
        let mut x = st.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        st.rng = x;
        let draw = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        return draw < options.fail_rate;
    }
    false
}

/// `%XX` (and, for query strings, `+`) decoded; bad escapes kept as text.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An `application/x-www-form-urlencoded` query string as pairs (the last
/// of a repeated key wins).
fn form_decode(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Pairs as an `application/x-www-form-urlencoded` query string.
fn form_encode(pairs: &[(String, String)]) -> String {
    let enc = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// MD5 (RFC 1321), for SSH key fingerprints; written out so that the
/// double needs no crate beyond what the workspace's test targets share.
fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) = (
        0x6745_2301u32,
        0xefcd_ab89u32,
        0x98ba_dcfeu32,
        0x1032_5476u32,
    );
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, w) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod helper_tests {
    use super::*;

    #[test]
    fn md5_and_form_encoding() {
        let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            hex(md5(b"The quick brown fox jumps over the lazy dog")),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        let q = form_decode("tag_name=berth-lineage%3Aab&per_page=200&x=a+b");
        assert_eq!(q["tag_name"], "berth-lineage:ab");
        assert_eq!(q["x"], "a b");
        assert_eq!(
            form_encode(&[("tag_name".into(), "berth-lineage:ab c".into())]),
            "tag_name=berth-lineage%3Aab+c"
        );
        assert_eq!(percent_decode("a%2Fb%zz", false), "a/b%zz");
    }
}
