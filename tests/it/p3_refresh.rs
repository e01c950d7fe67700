//! Benchmark P3 (`scripts/bench-p3.sh`, ignored in normal runs): `berth
//! plan` with 1,000 droplets and 1,000 EC2 instances in state, each API
//! answer 50 ms away, against the per-resource refresh Terraform does (one
//! read per resource, 10 at a time) through the same latency.
//!
//! - DigitalOcean: the in-process API double
//!   (`providers/digitalocean/tests/double`) with its `latency` knob; every
//!   request and answer is also checked against DigitalOcean's OpenAPI spec,
//!   and the run fails on a violation.
//! - EC2: a moto server (found as `providers/aws/tests/moto` finds it:
//!   `BERTH_MOTO_SERVER`, `BERTH_MOTO_VENV` or `~/.cache/berth-moto-venv`,
//!   PATH) behind a small HTTP proxy of this test's that waits the same
//!   latency before forwarding each request and counts requests by
//!   `Action`.
//!
//! The objects are seeded behind berth's back, with the ownership tags
//! berth's refresh filters on (`berth-env:` / `berth-lineage:` /
//! `berth-addr:` / `berth-cfg:` on droplets, `berth:env` / `berth:lineage`
//! / `berth:address` / `berth:config-hash` on instances); a matching state
//! document is pushed with `berth state push`, and a generated `berth.hcl`
//! declares the same resources, so the plan has nothing to do. Three
//! projects share one environment name: droplets only, instances only, and
//! both.
//!
//! Knobs (environment): `BENCH_P3_N` (1000), `BENCH_P3_LATENCY_MS` (50),
//! `BENCH_P3_RUNS` (timed plans per project, 3), `BENCH_P3_PARALLELISM`
//! (the baseline's, 10). The markdown table goes to stdout (run with
//! `--nocapture`).

#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/digitalocean/tests/double/mod.rs"]
mod do_double;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::TestEnv;
use crate::common::moto_server;

const DO_PAGE: usize = 200;
const EC2_PAGE: usize = 1000;
const SIZE: &str = "s-1vcpu-1gb";
const IMAGE: &str = "ubuntu-24-04-x64";
const REGION: &str = "nyc3";
const INSTANCE_TYPE: &str = "t3.micro";
const AWS_KEY: &str = "testing";
const AWS_SECRET: &str = "testing";

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- moto

/// A moto server on 127.0.0.1, killed (by its pid) when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    async fn start() -> Moto {
        let bin = moto_server();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited with {status}");
            }
            if let Ok(r) = client.get(format!("{endpoint}/moto-api/")).send().await
                && r.status().is_success()
            {
                return Moto { child, endpoint };
            }
            assert!(Instant::now() < deadline, "moto did not answer in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Moto {
    /// CPU time moto has used (user + system, all threads), from
    /// `/proc/PID/stat` in clock ticks of 10 ms.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime, fields 14 and 15 of the line: 11 and 12 here.
        Duration::from_millis((ticks(11) + ticks(12)) * 10)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------- SigV4 by hand

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// `YYYYMMDD'T'HHMMSS'Z'` of now.
fn amz_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn uri_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A SigV4-signed EC2 Query call (as berth-aws signs them: POST, form
/// body, `content-type;host;x-amz-date` signed); the status and the XML.
async fn ec2(client: &reqwest::Client, endpoint: &str, params: &[(&str, &str)]) -> (u16, String) {
    let body = params
        .iter()
        .chain(&[("Version", "2016-11-15")])
        .map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let date = amz_date();
    let day = &date[..8];
    let scope = format!("{day}/us-east-1/ec2/aws4_request");
    let canonical = format!(
        "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:{host}\nx-amz-date:{date}\n\n\
         content-type;host;x-amz-date\n{}",
        hex::encode(Sha256::digest(body.as_bytes()))
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{AWS_SECRET}").as_bytes(), day.as_bytes());
    for part in ["us-east-1", "ec2", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={AWS_KEY}/{scope}, \
         SignedHeaders=content-type;host;x-amz-date, Signature={signature}"
    );
    let resp = client
        .post(format!("{endpoint}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-amz-date", &date)
        .header("authorization", auth)
        .body(body)
        .send()
        .await
        .expect("EC2 endpoint answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("a body"))
}

/// The text of every `<tag>` element in `xml`.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(rest[..end].to_owned());
        rest = &rest[end + close.len()..];
    }
    out
}

// ------------------------------------------------- the latency proxy

/// An HTTP proxy on 127.0.0.1 in front of `upstream`: waits `latency`
/// before forwarding each request, and counts requests by EC2 `Action`.
struct Proxy {
    endpoint: String,
    latency_ms: Arc<AtomicU64>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let latency_ms = Arc::new(AtomicU64::new(0));
        let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        let shared = Arc::new(Forwarding {
            client,
            upstream,
            latency_ms: latency_ms.clone(),
            counts: counts.clone(),
        });
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(forward(req, &shared).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy {
            endpoint,
            latency_ms,
            counts,
        }
    }

    fn set_latency(&self, d: Duration) {
        self.latency_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    fn take_counts(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.counts.lock().expect("counts"))
    }
}

/// What the proxy's connections share.
struct Forwarding {
    client: reqwest::Client,
    upstream: String,
    latency_ms: Arc<AtomicU64>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

async fn forward(req: Request<Incoming>, f: &Forwarding) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let action = String::from_utf8_lossy(&body)
        .split('&')
        .find_map(|p| p.strip_prefix("Action=").map(str::to_owned))
        .unwrap_or_else(|| format!("{} {}", parts.method, parts.uri.path()));
    *f.counts.lock().expect("counts").entry(action).or_default() += 1;
    let ms = f.latency_ms.load(Ordering::Relaxed);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let target = format!(
        "{}{}",
        f.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut out = f.client.request(parts.method.clone(), target).body(body);
    for (k, v) in &parts.headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection") {
            out = out.header(k, v);
        }
    }
    match out.send().await {
        Ok(resp) => {
            let mut builder = Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                if !matches!(
                    k.as_str(),
                    "content-length" | "transfer-encoding" | "connection"
                ) {
                    builder = builder.header(k, v);
                }
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            builder.body(Full::new(bytes)).expect("response")
        }
        Err(e) => Response::builder()
            .status(502)
            .body(Full::new(Bytes::from(e.to_string())))
            .expect("response"),
    }
}

// ------------------------------------------------------------ seeding

/// berth-digitalocean's tag value encoding (`ownership::encode`).
fn do_encode(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            'a'..='z' | '0'..='9' | '-' => out.push(c),
            '.' => out.push_str("__"),
            '_' => {
                let touches = |n: Option<&char>| matches!(n, Some('_' | '.'));
                let prev = i.checked_sub(1).and_then(|p| chars.get(p));
                if touches(prev) || touches(chars.get(i + 1)) {
                    out.push_str(":5f");
                } else {
                    out.push('_');
                }
            }
            other => {
                let mut buf = [0u8; 4];
                for byte in other.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!(":{byte:02x}"));
                }
            }
        }
    }
    out
}

struct Seeded {
    /// (address, id) of each droplet.
    droplets: Vec<(String, String)>,
    /// (address, id) of each instance.
    instances: Vec<(String, String)>,
    ami: String,
}

fn droplet_record(id: &str, i: usize, hash: &str) -> Value {
    json!({
        "type_name": "digitalocean_droplet",
        "id": id,
        "attrs": {
            "name": format!("node-{i:04}"), "image": IMAGE, "size": SIZE, "region": REGION,
            "tags": [], "monitoring": false, "ipv6": false, "backups": false,
            "resize_disk": true, "graceful_shutdown": false, "id": id,
        },
        "sensitive": [],
        "config_hash": hash,
        "depends_on": [],
    })
}

fn instance_record(id: &str, ami: &str, hash: &str) -> Value {
    json!({
        "type_name": "aws_instance",
        "id": id,
        "attrs": {
            "ami": ami, "instance_type": INSTANCE_TYPE, "tags": {},
            "user_data_replace_on_change": false, "id": id,
        },
        "sensitive": [],
        "config_hash": hash,
        "depends_on": [],
    })
}

/// One project: its `berth.hcl` and pushed state.
fn project(
    name: &str,
    env: &str,
    lineage: &str,
    seeded: &Seeded,
    do_base: Option<&str>,
    ec2: Option<&str>,
) -> TestEnv {
    let mut t = TestEnv::new(name);
    t.set_env("BERTH_ENV", env);
    let mut hcl = String::new();
    let mut resources = serde_json::Map::new();
    if let Some(base) = do_base {
        hcl.push_str(&format!(
            "provider \"digitalocean\" {{\n  api_endpoint = \"{base}\"\n}}\n\n"
        ));
        for (i, (address, id)) in seeded.droplets.iter().enumerate() {
            let label = address.trim_start_matches("digitalocean_droplet.");
            hcl.push_str(&format!(
                "resource \"digitalocean_droplet\" \"{label}\" {{\n  name   = \"node-{i:04}\"\n  \
                 image  = \"{IMAGE}\"\n  size   = \"{SIZE}\"\n  region = \"{REGION}\"\n}}\n\n"
            ));
            resources.insert(address.clone(), droplet_record(id, i, &hash_of("droplet")));
        }
    }
    if let Some(ec2) = ec2 {
        hcl.push_str(&format!(
            "provider \"aws\" {{\n  region = \"us-east-1\"\n  endpoints {{\n    ec2 = \"{ec2}\"\n  }}\n}}\n\n"
        ));
        for (address, id) in &seeded.instances {
            let label = address.trim_start_matches("aws_instance.");
            hcl.push_str(&format!(
                "resource \"aws_instance\" \"{label}\" {{\n  ami           = \"{}\"\n  \
                 instance_type = \"{INSTANCE_TYPE}\"\n}}\n\n",
                seeded.ami
            ));
            resources.insert(
                address.clone(),
                instance_record(id, &seeded.ami, &hash_of("instance")),
            );
        }
    }
    t.write_config(&hcl);
    let doc = json!({
        "version": 1,
        "lineage": lineage,
        "serial": 1,
        "resources": resources,
        "outputs": {},
    });
    t.write("state.json", &doc.to_string());
    t
}

fn hash_of(what: &str) -> String {
    hex::encode(Sha256::digest(format!("p3-{what}").as_bytes()))
}

async fn run_berth(t: &TestEnv, args: &[&str]) -> (std::process::Output, Duration) {
    let mut cmd = t.command(args);
    cmd.env("DIGITALOCEAN_TOKEN", do_double::Options::default().token)
        .env("AWS_ACCESS_KEY_ID", AWS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_EC2")
        .env_remove("DIGITALOCEAN_API_URL");
    let started = Instant::now();
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .expect("run berth");
    (out, started.elapsed())
}

fn check(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------ measuring

#[derive(Clone, Copy, Debug)]
struct Timing {
    median: Duration,
    min: Duration,
    max: Duration,
}

fn timing(mut runs: Vec<Duration>) -> Timing {
    runs.sort();
    Timing {
        median: runs[runs.len() / 2],
        min: runs[0],
        max: runs[runs.len() - 1],
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The servers' own time: the double's work on requests and moto's CPU.
struct Servers<'a> {
    double: &'a do_double::Double,
    moto: &'a Moto,
}

impl Servers<'_> {
    fn time(&self) -> Duration {
        self.double.busy() + self.moto.cpu()
    }
}

/// What the timed plans of one project showed.
#[derive(Default)]
struct Plans {
    /// Wall time of each plan.
    times: Vec<Duration>,
    /// The API calls of the last run: DigitalOcean routes, `EC2 <Action>`.
    calls: BTreeMap<String, u64>,
    /// Server time (double and moto) in the last run, latency not counted.
    server: Duration,
    /// Whether every plan was empty.
    no_op: bool,
}

impl Plans {
    fn wall(&self) -> Timing {
        timing(self.times.clone())
    }
}

/// One untimed plan of each project with the spec check on; then `runs`
/// rounds of one timed plan of each project in turn, with it off (in turn,
/// so that a server slowing down over time does not weigh on one project).
async fn time_plans(
    projects: &[&TestEnv],
    runs: usize,
    double: &do_double::Double,
    proxy: &Proxy,
    servers: &Servers<'_>,
) -> Vec<Plans> {
    double.set_check_spec(true);
    for t in projects {
        let (out, _) = run_berth(t, &["plan"]).await;
        check(&out, "warm-up plan");
    }
    double.set_check_spec(false);
    let mut plans: Vec<Plans> = projects
        .iter()
        .map(|_| Plans {
            no_op: true,
            ..Plans::default()
        })
        .collect();
    for _ in 0..runs {
        for (t, p) in projects.iter().zip(plans.iter_mut()) {
            double.reset_counts();
            proxy.take_counts();
            let busy = servers.time();
            let (out, took) = run_berth(t, &["plan"]).await;
            check(&out, "plan");
            p.no_op &= String::from_utf8_lossy(&out.stdout).contains("No changes.");
            p.times.push(took);
            p.server = servers.time() - busy;
            p.calls = double.counts();
            for (k, v) in proxy.take_counts() {
                p.calls.insert(format!("EC2 {k}"), v);
            }
        }
    }
    plans
}

/// What one kind of read costs.
enum Read {
    Droplet(String),
    Instance(String),
}

/// Terraform's refresh: one read per resource, `parallelism` at a time;
/// the wall time and the server time (summed over all calls).
async fn per_resource(
    reads: Vec<Read>,
    parallelism: usize,
    double: &do_double::Double,
    proxy: &Proxy,
    servers: &Servers<'_>,
) -> (Duration, Duration) {
    let ec2_endpoint = proxy.endpoint.as_str();
    let busy = servers.time();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(parallelism)
        .build()
        .expect("client");
    let token = double.token.clone();
    let base = double.base.clone();
    let started = Instant::now();
    let results: Vec<Result<(), String>> = futures_util::stream::iter(reads)
        .map(|read| {
            let (client, token, base) = (client.clone(), token.clone(), base.clone());
            async move {
                match read {
                    Read::Droplet(id) => {
                        let r = client
                            .get(format!("{base}/v2/droplets/{id}"))
                            .bearer_auth(&token)
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                        let status = r.status();
                        let body = r.bytes().await.map_err(|e| e.to_string())?;
                        let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                        if status != 200
                            || v["droplet"]["id"].as_u64().map(|i| i.to_string())
                                != Some(id.clone())
                        {
                            return Err(format!("droplet {id}: {status} {v}"));
                        }
                    }
                    Read::Instance(id) => {
                        let (status, xml) = ec2(
                            &client,
                            ec2_endpoint,
                            &[("Action", "DescribeInstances"), ("InstanceId.1", &id)],
                        )
                        .await;
                        if status != 200 || xml_values(&xml, "instanceId") != [id.clone()] {
                            return Err(format!("instance {id}: {status} {xml:.300}"));
                        }
                    }
                }
                Ok(())
            }
        })
        .buffer_unordered(parallelism)
        .collect()
        .await;
    let took = started.elapsed();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.is_empty(),
        "{} reads failed, e.g. {}",
        errors.len(),
        errors[0]
    );
    (took, servers.time() - busy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark P3: run scripts/bench-p3.sh"]
async fn p3_refresh_against_per_resource_reads() {
    let n = knob("BENCH_P3_N", 1000);
    let latency = Duration::from_millis(knob("BENCH_P3_LATENCY_MS", 50) as u64);
    let runs = knob("BENCH_P3_RUNS", 3).max(1);
    let parallelism = knob("BENCH_P3_PARALLELISM", 10).max(1);

    let double = do_double::Double::start(do_double::Options {
        polls_until_active: Some(0),
        ..do_double::Options::default()
    })
    .await;
    let moto = Moto::start().await;
    let proxy = Proxy::start(moto.endpoint.clone()).await;
    let client = reqwest::Client::new();

    let suffix = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let env = format!("p3-{suffix}");
    let lineage = format!("p3-lineage-{suffix}");
    let seeding = Instant::now();

    // Droplets, tagged as berth tags them.
    let mut droplets = Vec::new();
    for i in 0..n {
        let address = format!("digitalocean_droplet.node_{i:04}");
        let tags = vec![
            format!("berth-env:{}", do_encode(&env)),
            format!("berth-lineage:{}", do_encode(&lineage)),
            format!("berth-addr:{}", do_encode(&address)),
            format!("berth-cfg:{}", hash_of("droplet")),
        ];
        let id = double.seed_droplet_with(&format!("node-{i:04}"), SIZE, IMAGE, REGION, &tags);
        droplets.push((address, id.to_string()));
    }

    // Instances: RunInstances in batches with the shared tags, then each
    // instance's address tag.
    let (status, xml) = ec2(
        &client,
        &moto.endpoint,
        &[
            ("Action", "DescribeImages"),
            ("Owner.1", "amazon"),
            ("Filter.1.Name", "name"),
            ("Filter.1.Value.1", "amzn-ami-hvm-*"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{xml:.400}");
    let ami = xml_values(&xml, "imageId")
        .into_iter()
        .next()
        .expect("moto has an Amazon Linux AMI");
    let mut ids = Vec::new();
    let batch = 250;
    while ids.len() < n {
        let count = batch.min(n - ids.len()).to_string();
        let cfg_hash = hash_of("instance");
        let params = [
            ("Action", "RunInstances"),
            ("ImageId", ami.as_str()),
            ("InstanceType", INSTANCE_TYPE),
            ("MinCount", count.as_str()),
            ("MaxCount", count.as_str()),
            ("TagSpecification.1.ResourceType", "instance"),
            ("TagSpecification.1.Tag.1.Key", "berth:env"),
            ("TagSpecification.1.Tag.1.Value", env.as_str()),
            ("TagSpecification.1.Tag.2.Key", "berth:lineage"),
            ("TagSpecification.1.Tag.2.Value", lineage.as_str()),
            ("TagSpecification.1.Tag.3.Key", "berth:config-hash"),
            ("TagSpecification.1.Tag.3.Value", cfg_hash.as_str()),
        ];
        let (status, xml) = ec2(&client, &moto.endpoint, &params).await;
        assert_eq!(status, 200, "RunInstances: {xml:.400}");
        ids.extend(xml_values(&xml, "instanceId"));
    }
    ids.truncate(n);
    let instances: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (format!("aws_instance.node_{i:04}"), id.clone()))
        .collect();
    let tagged: Vec<(u16, String)> = futures_util::stream::iter(instances.iter())
        .map(|(address, id)| {
            let (client, endpoint) = (client.clone(), moto.endpoint.clone());
            async move {
                ec2(
                    &client,
                    &endpoint,
                    &[
                        ("Action", "CreateTags"),
                        ("ResourceId.1", id),
                        ("Tag.1.Key", "berth:address"),
                        ("Tag.1.Value", address),
                    ],
                )
                .await
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    assert!(tagged.iter().all(|(s, _)| *s == 200), "CreateTags failed");
    let seeded = Seeded {
        droplets,
        instances,
        ami,
    };
    eprintln!(
        "seeded {n} droplets and {n} instances in {}",
        secs(seeding.elapsed())
    );

    // Three projects in one environment, each with its state pushed.
    let do_only = project("p3_do", &env, &lineage, &seeded, Some(&double.base), None);
    let ec2_only = project(
        "p3_ec2",
        &env,
        &lineage,
        &seeded,
        None,
        Some(&proxy.endpoint),
    );
    let both = project(
        "p3_both",
        &env,
        &lineage,
        &seeded,
        Some(&double.base),
        Some(&proxy.endpoint),
    );
    for t in [&do_only, &ec2_only, &both] {
        let (out, _) = run_berth(t, &["state", "push", "state.json"]).await;
        check(&out, "state push");
    }

    let servers = Servers {
        double: &double,
        moto: &moto,
    };
    // Everything from here on is 50 ms away.
    double.set_latency(latency);
    proxy.set_latency(latency);
    let mut plans = time_plans(
        &[&do_only, &ec2_only, &both],
        runs,
        &double,
        &proxy,
        &servers,
    )
    .await
    .into_iter();
    let (do_plans, ec2_plans, both_plans) = (
        plans.next().expect("droplet plans"),
        plans.next().expect("instance plans"),
        plans.next().expect("plans of both"),
    );
    let spec_checked = double.spec_checked();

    let droplet_reads = || {
        seeded
            .droplets
            .iter()
            .map(|(_, id)| Read::Droplet(id.clone()))
            .collect::<Vec<_>>()
    };
    let instance_reads = || {
        seeded
            .instances
            .iter()
            .map(|(_, id)| Read::Instance(id.clone()))
            .collect::<Vec<_>>()
    };
    double.reset_counts();
    proxy.take_counts();
    let do_base = per_resource(droplet_reads(), parallelism, &double, &proxy, &servers).await;
    let do_base_calls = double.count("GET /v2/droplets/{id}") as usize;
    let ec2_base = per_resource(instance_reads(), parallelism, &double, &proxy, &servers).await;
    let ec2_base_calls = proxy
        .take_counts()
        .get("DescribeInstances")
        .copied()
        .unwrap_or(0) as usize;
    // Both types through one pool of `parallelism`, as `terraform plan`.
    let mut mixed: Vec<Read> = Vec::new();
    for (d, i) in droplet_reads().into_iter().zip(instance_reads()) {
        mixed.push(d);
        mixed.push(i);
    }
    let both_base = per_resource(mixed, parallelism, &double, &proxy, &servers).await;

    let droplet_list = do_plans.calls.get("GET /v2/droplets").copied().unwrap_or(0);
    let ec2_list = ec2_plans
        .calls
        .get("EC2 DescribeInstances")
        .copied()
        .unwrap_or(0);
    let total = |p: &Plans| p.calls.values().sum::<u64>() as usize;
    let ms = |calls: usize, parallel: usize| {
        secs(latency * u32::try_from(calls.div_ceil(parallel)).unwrap_or(u32::MAX))
    };
    let row = |name: &str,
               p: &Plans,
               target: usize,
               sequential: usize,
               base_calls: usize,
               base: (Duration, Duration)| {
        format!(
            "| {name} | {} ({target}) | {} ({}–{}) | {} | {} | {base_calls} | {} | {} | {} | {:.0}× | {:.1}× |",
            total(p),
            secs(p.wall().median),
            secs(p.wall().min),
            secs(p.wall().max),
            secs(p.server),
            ms(sequential, 1),
            secs(base.0),
            secs(base.1),
            ms(base_calls, parallelism),
            base_calls as f64 / total(p).max(1) as f64,
            base.0.as_secs_f64() / p.wall().median.as_secs_f64(),
        )
    };

    println!();
    println!(
        "P3: `berth plan` with {n} droplets and {n} EC2 instances in state, {} ms latency per \
         API call; per-resource baseline at parallelism {parallelism}. berth: median (min–max) of \
         {runs} plans, whole process (the three projects' plans in turn). Server time: the \
         DigitalOcean double's time on the calls plus moto's CPU time (latency not counted; moto is one Python process, so its \
         CPU time bounds the wall time of everything that reaches it). Latency floor: the calls' \
         latency alone (berth's pages of one type are sequential, the types concurrent; the \
         baseline's reads {parallelism} at a time).",
        latency.as_millis()
    );
    println!();
    println!(
        "| type | berth calls (target) | berth `plan` wall | berth server time | berth latency floor | \
         per-resource calls | per-resource wall | per-resource server time | per-resource latency floor | \
         calls ratio | wall ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "{}",
        row(
            "digitalocean_droplet",
            &do_plans,
            n.div_ceil(DO_PAGE),
            n.div_ceil(DO_PAGE),
            do_base_calls,
            do_base
        )
    );
    println!(
        "{}",
        row(
            "aws_instance",
            &ec2_plans,
            n.div_ceil(EC2_PAGE),
            n.div_ceil(EC2_PAGE),
            ec2_base_calls,
            ec2_base
        )
    );
    println!(
        "{}",
        row(
            "both, one plan",
            &both_plans,
            n.div_ceil(DO_PAGE) + n.div_ceil(EC2_PAGE),
            n.div_ceil(DO_PAGE).max(n.div_ceil(EC2_PAGE)),
            2 * n,
            both_base
        )
    );
    println!();
    println!(
        "berth's calls by route/action (last run): droplets {:?}; instances {:?}; both {:?}",
        do_plans.calls, ec2_plans.calls, both_plans.calls
    );
    println!(
        "plans were no-ops: droplets {}, instances {}, both {}; DigitalOcean requests and \
         answers of the untimed plans checked against the OpenAPI spec: {spec_checked}",
        do_plans.no_op, ec2_plans.no_op, both_plans.no_op
    );

    assert_eq!(
        droplet_list as usize,
        n.div_ceil(DO_PAGE),
        "droplet refresh is ceil(N/200) list calls: {:?}",
        do_plans.calls
    );
    assert_eq!(
        ec2_list as usize,
        n.div_ceil(EC2_PAGE),
        "instance refresh is ceil(N/1000) DescribeInstances: {:?}",
        ec2_plans.calls
    );
    assert!(
        do_plans.no_op && ec2_plans.no_op && both_plans.no_op,
        "the plans should be empty"
    );
    double.assert_spec_clean();
}
