//! The backend benchmark (ignored by default; `scripts/bench-backends.sh`
//! runs it in release mode): for each store (local sled, the GitLab HTTP
//! double, PostgreSQL, S3 on moto), a fresh environment filled with one
//! `replace_all` of 1,000 `docker_container`-like records, then over
//! `BENCH_RUNS` repetitions (default 20, after one untimed warm-up each):
//!
//! - `lock + unlock`: one lock and its unlock, back to back;
//! - `put_resource`: one record rewritten in the 1,000-resource state, inside
//!   a held lock after a read (the per-step cost during apply);
//! - `read`: a full read in a new session (a newly opened backend, locked
//!   untimed; only the read is timed);
//!
//! and the stored size of the 1,000-resource state in each store. It prints
//! a markdown table (run with `--nocapture`) and, when `BENCH_OUT` is set,
//! writes the results to `$BENCH_OUT/backends.json` (and the table to
//! `backends.md`).
//!
//! Nothing here asserts on speed: a slow run is a number, not a failure.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use berth_state::s3_backend::S3Backend;
use berth_state::sled_backend::SledBackend;
use berth_state::{LockInfo, ResourceRecord, Snapshot, StateBackend, StateKey, open_backend};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::gitlab_fake::FakeGitlab;
use crate::pg::PgServer;
use crate::s3::Moto;

const RESOURCES: usize = 1_000;
const ENV: &str = "bench";
const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

fn runs() -> usize {
    match std::env::var("BENCH_RUNS") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("BENCH_RUNS must be a positive whole number, not `{v}`")),
        _ => 20,
    }
}

fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// 64 hex characters derived from `seed`, like a Docker id or digest.
fn hex64(seed: &str) -> String {
    hex::encode(Sha256::digest(seed.as_bytes()))
}

/// Resource `i` of the benchmark state as an apply would record it: a
/// `docker_container` with 16 attributes, a list of container ids and its
/// environment stored as a keyed hash. `generation` changes the ids and the
/// image, as a replacement would.
fn container(key: &StateKey, i: usize, generation: usize) -> (String, ResourceRecord) {
    let name = format!("app-{i:04}");
    let id = hex64(&format!("container-{i}-{generation}"));
    let container_ids: Vec<String> = (0..3)
        .map(|r| hex64(&format!("replica-{i}-{r}-{generation}")))
        .collect();
    let env = json!([
        format!("INSTANCE={name}"),
        "RUST_LOG=info",
        format!("DATABASE_URL=postgres://app:pw-{i}@db:5432/app"),
        format!("API_TOKEN=tok-{}", &hex64(&format!("token-{i}"))[..32]),
    ]);
    let attrs: BTreeMap<String, Value> = [
        ("name", json!(name)),
        ("image", json!(format!("registry.example.com/app:1.{generation}.{}", i % 7))),
        (
            "image_id",
            json!(format!("sha256:{}", hex64(&format!("image-{generation}-{}", i % 7)))),
        ),
        ("container_ids", json!(container_ids)),
        ("hostname", json!(name)),
        ("command", json!(["/app/server", "--port", "8080", "--workers", "4"])),
        ("entrypoint", json!(["/usr/bin/tini", "--"])),
        ("env", json!(key.hash(&env))),
        (
            "labels",
            json!({
                "berth.lineage": "00000000-0000-4000-8000-000000000000",
                "berth.address": format!("docker_container.c{i:04}"),
                "com.example.team": "platform",
                "com.example.tier": if i.is_multiple_of(3) { "db" } else { "web" },
            }),
        ),
        (
            "ports",
            json!([
                {"internal": 8080, "external": 20000 + i, "ip": "0.0.0.0", "protocol": "tcp"},
                {"internal": 9090, "external": 30000 + i, "ip": "127.0.0.1", "protocol": "tcp"},
            ]),
        ),
        (
            "networks_advanced",
            json!([{
                "name": "app-net",
                "aliases": [name, format!("app-{}", i % 10)],
                "ipv4_address": format!("10.20.{}.{}", i / 250, i % 250 + 2),
            }]),
        ),
        (
            "mounts",
            json!([{"target": "/data", "source": format!("app-data-{i:04}"), "type": "volume", "read_only": false}]),
        ),
        ("restart", json!("unless-stopped")),
        ("memory", json!(536_870_912)),
        (
            "healthcheck",
            json!({"test": ["CMD", "curl", "-fsS", "http://localhost:8080/health"], "interval": "10s", "timeout": "2s", "retries": 3}),
        ),
        ("log_driver", json!("json-file")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let record = ResourceRecord {
        type_name: "docker_container".to_owned(),
        id,
        attrs,
        sensitive: vec!["env".to_owned()],
        config_hash: hex64(&format!("config-{i}-{generation}")),
        depends_on: vec![
            "docker_network.app".to_owned(),
            "docker_image.app".to_owned(),
            format!("docker_volume.data_{i:04}"),
        ],
    };
    (format!("docker_container.c{i:04}"), record)
}

fn snapshot(key: &StateKey) -> Snapshot {
    Snapshot {
        lineage: String::new(),
        serial: 0,
        resources: (0..RESOURCES).map(|i| container(key, i, 0)).collect(),
        outputs: BTreeMap::new(),
    }
}

/// Milliseconds, sorted.
struct Samples(Vec<f64>);

impl Samples {
    fn new(mut ms: Vec<f64>) -> Samples {
        ms.sort_by(f64::total_cmp);
        Samples(ms)
    }

    fn min(&self) -> f64 {
        self.0[0]
    }

    fn median(&self) -> f64 {
        let n = self.0.len();
        if n % 2 == 1 {
            self.0[n / 2]
        } else {
            (self.0[n / 2 - 1] + self.0[n / 2]) / 2.0
        }
    }

    /// Nearest rank: the smallest sample with at least 95% of the samples at
    /// or below it.
    fn p95(&self) -> f64 {
        let rank = (self.0.len() * 95).div_ceil(100).max(1);
        self.0[rank - 1]
    }

    fn cell(&self) -> String {
        format!(
            "{:.2} / {:.2} / {:.2}",
            self.min(),
            self.median(),
            self.p95()
        )
    }

    fn json(&self) -> Value {
        json!({
            "min": round3(self.min()),
            "median": round3(self.median()),
            "p95": round3(self.p95()),
            "samples": self.0.iter().map(|v| round3(*v)).collect::<Vec<_>>(),
        })
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The stored size of the state and how it was measured.
struct Size {
    bytes: u64,
    how: String,
}

struct Result1 {
    backend: &'static str,
    lock: Samples,
    put: Samples,
    read: Samples,
    size: Size,
}

/// Runs the three measurements against a store whose backends `open`
/// makes; `size` measures the stored state right after the fill.
async fn measure<O, S>(backend: &'static str, runs: usize, open: O, size: S) -> Result1
where
    O: AsyncFn() -> Box<dyn StateBackend>,
    S: AsyncFnOnce() -> Size,
{
    // Fill: one replace_all of the whole state, then unlock (which flushes
    // the sled store).
    let b = open().await;
    let info = LockInfo::new("bench-fill", &b.describe());
    b.lock(&info).await.unwrap();
    let fresh = b.read().await.unwrap();
    let mut full = snapshot(b.key());
    full.lineage = fresh.lineage;
    b.replace_all(&full).await.unwrap();
    let back = b.read().await.unwrap();
    assert_eq!(back.resources.len(), RESOURCES, "{backend}: the fill");
    b.unlock(&info.id).await.unwrap();
    let size = size().await;

    // (a) lock + unlock round trip.
    let mut lock = Vec::with_capacity(runs);
    for i in 0..=runs {
        let info = LockInfo::new("bench-lock", &b.describe());
        let t = Instant::now();
        b.lock(&info).await.unwrap();
        b.unlock(&info.id).await.unwrap();
        if i > 0 {
            lock.push(ms(t.elapsed()));
        }
    }

    // (b) one put_resource into the 1,000-resource state, in a held lock
    // after a read, as apply writes each step.
    let info = LockInfo::new("bench-put", &b.describe());
    b.lock(&info).await.unwrap();
    b.read().await.unwrap();
    let mut put = Vec::with_capacity(runs);
    for i in 0..=runs {
        let (address, record) = container(b.key(), (i * 37) % RESOURCES, i + 1);
        let t = Instant::now();
        b.put_resource(&address, &record).await.unwrap();
        if i > 0 {
            put.push(ms(t.elapsed()));
        }
    }
    b.unlock(&info.id).await.unwrap();
    drop(b);

    // (c) a full read in a new session: a new backend, locked untimed.
    let mut read = Vec::with_capacity(runs);
    for i in 0..=runs {
        let r = open().await;
        let info = LockInfo::new("bench-read", &r.describe());
        r.lock(&info).await.unwrap();
        let t = Instant::now();
        let snap = r.read().await.unwrap();
        let took = t.elapsed();
        assert_eq!(snap.resources.len(), RESOURCES, "{backend}: the read");
        r.unlock(&info.id).await.unwrap();
        if i > 0 {
            read.push(ms(took));
        }
    }

    Result1 {
        backend,
        lock: Samples::new(lock),
        put: Samples::new(put),
        read: Samples::new(read),
        size,
    }
}

/// Bytes in the files under `dir` (apparent size) and allocated on disk.
fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (a, b) = dir_size(&entry.path());
            total.0 += a;
            total.1 += b;
        } else {
            total.0 += meta.len();
            total.1 += meta.blocks() * 512;
        }
    }
    total
}

/// A HEAD on `url`, signed with SigV4 with the backend's credentials and
/// region from `s` (moto answers an anonymous request with 403).
async fn signed_head(url: &str, s: &BTreeMap<String, String>) -> reqwest::Response {
    let identity: Identity = Credentials::new(
        s["access_key"].clone(),
        s["secret_key"].clone(),
        None,
        None,
        "bench",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(s["region"].as_str())
        .name("s3")
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let signable =
        SignableRequest::new("HEAD", url, std::iter::empty(), SignableBody::Bytes(&[])).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = reqwest::Client::new().head(url);
    for (k, v) in instructions.headers() {
        req = req.header(k, v);
    }
    req.send().await.unwrap()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

async fn timed<T>(what: &str, f: impl Future<Output = T>) -> T {
    let t = Instant::now();
    let out = f.await;
    eprintln!("bench: {what} done in {:.1} s", t.elapsed().as_secs_f64());
    out
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run scripts/bench-backends.sh"]
async fn bench_backends() {
    let runs = runs();
    let load_before = load_average();
    let mut results = Vec::new();

    // The plain JSON of the state, as the remote stores hold it, for scale.
    let doc_bytes = {
        let key = StateKey::from_bytes([7; 32]);
        let mut s = snapshot(&key);
        s.lineage = "00000000-0000-4000-8000-000000000000".to_owned();
        let doc = json!({"version": 1, "lineage": s.lineage, "serial": 2, "resources": s.resources, "outputs": s.outputs});
        serde_json::to_vec(&doc).unwrap().len() as u64
    };

    // local (sled)
    {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(&[("path", dir.path().to_str().unwrap())]);
        let env_dir = SledBackend::open(dir.path(), ENV)
            .unwrap()
            .env_dir()
            .to_owned();
        let open = async || open_backend("local", &s, ENV, dir.path()).await.unwrap();
        let size = async || {
            let (apparent, allocated) = dir_size(&env_dir);
            Size {
                bytes: apparent,
                how: format!(
                    "files under the env dir after unlock's flush (apparent size; {} allocated)",
                    kib(allocated)
                ),
            }
        };
        results.push(timed("local", measure("local (sled)", runs, open, size)).await);
    }

    // http (the GitLab double, in this process)
    {
        let fake = FakeGitlab::start(USER, PASSWORD).await;
        let dir = tempfile::tempdir().unwrap();
        let s = settings(&[
            ("address", &fake.state_url("{env}")),
            ("username", USER),
            ("password", PASSWORD),
            ("retry_wait_min", "0.01"),
            ("retry_wait_max", "0.05"),
        ]);
        let open = async || open_backend("http", &s, ENV, dir.path()).await.unwrap();
        let size = async || {
            let p = fake.project.lock().unwrap();
            let body = p.states[ENV].values().next_back().unwrap();
            Size {
                bytes: body.len() as u64,
                how: "body of the latest version the double stored".to_owned(),
            }
        };
        results.push(timed("http", measure("http (GitLab double)", runs, open, size)).await);
    }

    // pg
    {
        let server = PgServer::start();
        let dir = tempfile::tempdir().unwrap();
        let s = server.settings("berth");
        let open = async || open_backend("pg", &s, ENV, dir.path()).await.unwrap();
        let size = async || {
            let client = server.client().await;
            let row = client
                .query_one(
                    "SELECT pg_column_size(data)::bigint, length(data::text)::bigint \
                     FROM berth.states WHERE name = $1",
                    &[&ENV],
                )
                .await
                .unwrap();
            let (column, text): (i64, i64) = (row.get(0), row.get(1));
            Size {
                bytes: u64::try_from(column).unwrap(),
                how: format!(
                    "pg_column_size(data), jsonb as stored (TOAST-compressed); length(data::text) = {}",
                    kib(u64::try_from(text).unwrap())
                ),
            }
        };
        results.push(timed("pg", measure("pg (PostgreSQL)", runs, open, size)).await);
    }

    // s3 (moto)
    {
        let moto = Moto::start().await;
        let dir = tempfile::tempdir().unwrap();
        let s = moto.settings("berth-bench", &[]);
        let probe = S3Backend::open(&s, ENV, dir.path()).unwrap();
        probe.create_bucket().await.unwrap();
        let url = format!("{}/berth-bench/{}", moto.endpoint, probe.object_key());
        let open = async || open_backend("s3", &s, ENV, dir.path()).await.unwrap();
        let size = async || {
            let resp = signed_head(&url, &s).await;
            assert!(resp.status().is_success(), "HEAD {url}: {}", resp.status());
            let length = resp
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("HEAD answered without Content-Length");
            Size {
                bytes: length,
                how: "Content-Length of a HEAD on the state object".to_owned(),
            }
        };
        results.push(timed("s3", measure("s3 (moto)", runs, open, size)).await);
    }

    let load_after = load_average();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    let mut md = String::new();
    md.push_str(&format!(
        "State backends, {RESOURCES}-resource state, {runs} runs each (after 1 warm-up); \
         ms as min / median / p95\n\n"
    ));
    md.push_str(
        "| backend | lock + unlock (ms) | put_resource (ms) | read, new session (ms) | stored size |\n",
    );
    md.push_str("|---|---|---|---|---|\n");
    for r in &results {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} ({} B) |\n",
            r.backend,
            r.lock.cell(),
            r.put.cell(),
            r.read.cell(),
            kib(r.size.bytes),
            r.size.bytes
        ));
    }
    md.push_str(&format!(
        "\nThe state as compact JSON: {} ({doc_bytes} B). Stored size measured as:\n\n",
        kib(doc_bytes)
    ));
    for r in &results {
        md.push_str(&format!("- {}: {}\n", r.backend, r.size.how));
    }
    md.push_str(&format!(
        "\nMachine: {cores} cores; load average {load_before} before, {load_after} after.\n"
    ));
    println!("\n{md}");

    if let Some(out) = std::env::var_os("BENCH_OUT").filter(|v| !v.is_empty()) {
        let out = Path::new(&out);
        std::fs::create_dir_all(out).unwrap();
        let doc = json!({
            "benchmark": "state backends",
            "resources": RESOURCES,
            "runs": runs,
            "warmup": 1,
            "unit": "ms",
            "state_json_bytes": doc_bytes,
            "machine": {
                "cores": cores,
                "load_average_before": load_before,
                "load_average_after": load_after,
            },
            "backends": results.iter().map(|r| json!({
                "backend": r.backend,
                "lock_unlock_ms": r.lock.json(),
                "put_resource_ms": r.put.json(),
                "read_new_session_ms": r.read.json(),
                "stored_bytes": r.size.bytes,
                "stored_how": r.size.how,
            })).collect::<Vec<_>>(),
        });
        let path = out.join("backends.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        std::fs::write(out.join("backends.md"), &md).unwrap();
        eprintln!("bench: wrote {}", path.display());
    }
}
