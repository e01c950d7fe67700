//! R3 races (RELIABILITY.md): many `berth apply` processes started at once
//! against one state, for every state backend — sled (local), http (the
//! GitLab state double), pg (a PostgreSQL server of the test's own) and s3
//! (moto). Exactly one must proceed; every other must fail at once with the
//! lock message naming the winner's PID. Then a lock left by a SIGKILLed
//! apply must be reported as stale with its holder, and stay until
//! `force-unlock` (pg excepted: its advisory lock dies with the killed
//! process's connection, so the server itself releases it).
//!
//! The winner holds the lock honestly: its apply manages one GitLab CI
//! variable through a gate (a TCP forwarder in front of the GitLab API
//! double) that holds every connection until the test opens it, so the
//! winner is blocked on its first API call, lock held, while the others try.
//!
//! `BERTH_RELIABILITY=long` runs five rounds per backend instead of one.

#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/gitlab/tests/double/mod.rs"]
mod double;

#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../state/tests/remote/gitlab_fake.rs"]
mod gitlab_fake;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{TestEnv, free_port};

/// Processes per round (the issue's target).
const PROCESSES: usize = 100;

fn rounds() -> usize {
    if std::env::var("BERTH_RELIABILITY").is_ok_and(|v| v == "long") {
        5
    } else {
        1
    }
}

/// A TCP forwarder to `upstream` that holds every connection until opened.
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
}

impl Gate {
    fn start(upstream: std::net::SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind gate");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (o, s, c) = (open.clone(), stop.clone(), connections.clone());
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (o, s) = (o.clone(), s.clone());
                std::thread::spawn(move || {
                    while !o.load(Ordering::SeqCst) {
                        if s.load(Ordering::SeqCst) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(upstream) else {
                        return;
                    };
                    pipe(client, server);
                });
            }
        });
        Gate {
            port,
            open,
            stop,
            connections,
        }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v4", self.port)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies bytes both ways until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    };
    let up = std::thread::spawn(move || copy(a, b2));
    copy(b, a2);
    let _ = up.join();
}

/// A PostgreSQL server of the test's own (initdb in a temp dir, a free
/// port, stopped on drop), as `state/tests/remote/pg.rs` starts one.
struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl PgServer {
    fn start() -> PgServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed: run scripts/ensure-test-deps.sh")
            .filter_map(|e| {
                let e = e.ok()?;
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((v, bin))
            })
            .max()
            .map(|(_, b)| b)
            .expect("no /usr/lib/postgresql/*/bin/initdb: run scripts/ensure-test-deps.sh");
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("berth-it-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        if as_postgres {
            let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
            let (uid, gid) = passwd
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.first() == Some(&"postgres"))
                        .then(|| (f[2].parse().expect("uid"), f[3].parse().expect("gid")))
                })
                .expect("user postgres");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let run = |program: &Path, args: &[&str]| {
            let mut cmd = if as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            };
            cmd.args(args)
                .current_dir(dir.path())
                .output()
                .expect("run")
        };
        let data_s = data.to_str().expect("utf-8 path");
        let out = run(
            &bin.join("initdb"),
            &[
                "-D",
                data_s,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(out.status.success(), "initdb: {out:?}");
        let log = dir.path().join("server.log");
        for _ in 0..5 {
            let port = free_port();
            // Every racer holds a connection at once: room for all of them.
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400",
                dir.path().display()
            );
            let out = run(
                &bin.join("pg_ctl"),
                &[
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    data_s,
                    "-l",
                    log.to_str().expect("utf-8"),
                    "-o",
                    &opts,
                ],
            );
            if out.status.success() {
                return PgServer {
                    bin,
                    data,
                    port,
                    as_postgres,
                    _dir: dir,
                };
            }
        }
        panic!(
            "pg_ctl start failed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let ctl = self.bin.join("pg_ctl");
        let data = self.data.to_str().unwrap_or_default().to_owned();
        let args = ["stop", "-m", "immediate", "-w", "-D", &data];
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&ctl);
            c
        } else {
            Command::new(&ctl)
        };
        let _ = cmd.args(args).output();
    }
}

/// moto's S3 on a free port, killed by PID on drop.
///
/// moto's own `moto_server` serves requests on threads and checks a
/// `PutObject`'s `If-None-Match: *` and then writes without a lock, so two
/// of many concurrent conditional writes can both succeed (seen here: two
/// lock winners out of 100). AWS S3 makes conditional writes atomic. To
/// test berth rather than that gap, the race runs moto's app in one thread
/// (`threaded=False`), which serves one request at a time.
struct Moto {
    child: Child,
    port: u16,
}

const MOTO_ONE_THREAD: &str = "import sys\n\
from werkzeug.serving import run_simple\n\
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app\n\
run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False, request_handler=MotoRequestHandler)\n";

impl Moto {
    fn start() -> Moto {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        let venv = std::env::var_os("BERTH_MOTO_VENV").map_or_else(
            || PathBuf::from(home).join(".cache/berth-moto-venv"),
            PathBuf::from,
        );
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/ensure-test-deps.sh",
            python.display()
        );
        let port = free_port();
        let child = Command::new(&python)
            .args(["-c", MOTO_ONE_THREAD, &port.to_string()])
            .env("MOTO_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let mut moto = Moto { child, port };
        let begin = Instant::now();
        loop {
            if moto.request("GET", "/moto-api/").is_some_and(|s| s == 200) {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited with {status}");
            }
            assert!(
                begin.elapsed() < Duration::from_secs(60),
                "moto does not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An unsigned request (moto does not check signatures by default);
    /// the status code.
    fn request(&self, method: &str, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one round of racing processes did.
struct Round {
    winners: usize,
    refused: usize,
    slowest_refusal: Duration,
}

/// The resource every racer applies: one CI variable behind the gate.
fn config(gate: &Gate, backend: &str) -> String {
    format!(
        r#"{backend}
provider "gitlab" {{
  base_url = "{api}"
  token    = env("TEST_GITLAB_TOKEN")
}}

resource "gitlab_project_variable" "race" {{
  project = 1
  key     = "RACE"
  value   = "won"
}}
"#,
        api = gate.api_url()
    )
}

fn spawn_apply(t: &TestEnv, logs: &Path, i: usize, args: &[&str]) -> Child {
    let out = std::fs::File::create(logs.join(format!("{i}.out"))).expect("log");
    let err = std::fs::File::create(logs.join(format!("{i}.err"))).expect("log");
    t.command(args)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn berth")
}

fn waits_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let begin = Instant::now();
    while !f() {
        assert!(begin.elapsed() < limit, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `n` applies at once with the gate shut; checks that exactly one
/// gets past the lock (it is blocked at the gate) and that every other
/// fails naming it; then opens the gate and lets the winner finish.
fn race(t: &TestEnv, gate: &Gate, n: usize, round: usize, naming: &Naming) -> Round {
    gate.set_open(false);
    let logs = t.path().join(format!("race-{round}"));
    std::fs::create_dir_all(&logs).expect("mkdir");
    let seen_before = gate.connections();
    // Each racer, when it started, and its exit code and time once done.
    type Racer = (Child, Instant, Option<(i32, Duration)>);
    let mut children: Vec<Racer> = (0..n)
        .map(|i| {
            let c = spawn_apply(t, &logs, i, &["apply", "--auto-approve"]);
            (c, Instant::now(), None)
        })
        .collect();
    // Wait until every process has exited but the ones blocked at the gate.
    let begin = Instant::now();
    loop {
        for (child, started, done) in children.iter_mut() {
            if done.is_none()
                && let Ok(Some(status)) = child.try_wait()
            {
                *done = Some((status.code().unwrap_or(-1), started.elapsed()));
            }
        }
        let running = children.iter().filter(|c| c.2.is_none()).count();
        if running == 0 || (running == 1 && gate.connections() > seen_before) {
            break;
        }
        if begin.elapsed() > Duration::from_secs(150) {
            for (child, _, done) in children.iter_mut() {
                if done.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            panic!(
                "round {round}: after 150 s {running} processes still run and the gate saw {} connections",
                gate.connections() - seen_before
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let running: Vec<usize> = (0..n).filter(|&i| children[i].2.is_none()).collect();
    assert_eq!(
        running.len(),
        1,
        "round {round}: exactly one apply must hold the lock; process 0 said:\n{}",
        std::fs::read_to_string(logs.join("0.err")).unwrap_or_default()
    );
    let winner = running[0];
    let winner_pid = children[winner].0.id();
    let needles = naming.held(winner_pid);
    let mut slowest = Duration::ZERO;
    for (i, (_, _, done)) in children.iter().enumerate() {
        let Some((code, took)) = done else { continue };
        let err = std::fs::read_to_string(logs.join(format!("{i}.err"))).unwrap_or_default();
        assert_eq!(*code, 1, "round {round}, process {i}: {err}");
        if !(err.contains("the state is locked by another operation")
            && needles.iter().all(|n| err.contains(n.as_str())))
        {
            let others: Vec<String> = (0..n)
                .filter(|&j| children[j].2.is_some())
                .map(|j| {
                    let e =
                        std::fs::read_to_string(logs.join(format!("{j}.err"))).unwrap_or_default();
                    format!("process {j} (pid {}): {e}", children[j].0.id())
                })
                .filter(|e| !e.contains("the state is locked by another operation"))
                .collect();
            panic!(
                "round {round}, process {i} must name the holder (pid {winner_pid}: {needles:?}):\n{err}\nfailed otherwise:\n{}",
                others.join("\n")
            );
        }
        slowest = slowest.max(*took);
    }
    // The winner finishes once its API answers.
    gate.set_open(true);
    let status = children[winner].0.wait().expect("wait winner");
    let err = std::fs::read_to_string(logs.join(format!("{winner}.err"))).unwrap_or_default();
    assert!(status.success(), "round {round}: the winner failed: {err}");
    Round {
        winners: 1,
        refused: n - 1,
        slowest_refusal: slowest,
    }
}

/// SIGKILLs an apply that holds the lock; the lock must then be reported
/// stale with its holder (pid, operation), survive further applies, refuse
/// a wrong id and go only with `force-unlock <id>`. Returns whether the lock
/// outlived its holder (false for pg, whose lock dies with the connection).
fn killed_holder(t: &TestEnv, gate: &Gate, naming: &Naming) -> bool {
    gate.set_open(false);
    let logs = t.path().join("killed");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let before = gate.connections();
    // A change to apply, so the holder calls the API.
    let mut holder = spawn_apply(t, &logs, 0, &["destroy", "--auto-approve"]);
    waits_until(
        "the holder reaches the API",
        Duration::from_secs(60),
        || gate.connections() > before,
    );
    let pid = holder.id();
    holder.kill().expect("SIGKILL");
    let _ = holder.wait();
    gate.set_open(true);
    if matches!(naming, Naming::ReleasedWithConnection) {
        // pg: the server releases the advisory lock once it sees the
        // connection closed.
        waits_until("pg releases the lock", Duration::from_secs(20), || {
            t.run(&["plan"]).success()
        });
        return false;
    }
    let needles = naming.left_behind(pid);
    for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let run = t.run(args).failed();
        assert!(
            needles.iter().all(|n| run.stderr.contains(n.as_str())),
            "{args:?} must report the left lock with its holder ({needles:?}):\n{}",
            run.stderr
        );
    }
    let run = t.run(&["plan"]).failed();
    let id = run
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("ID:"))
        .map(|s| s.trim().to_owned())
        .expect("lock id in the message");
    t.run(&["force-unlock", "not-the-lock-id"]).failed();
    t.run(&["plan"]).failed();
    t.run(&["force-unlock", &id]).ok();
    t.run(&["apply", "--auto-approve"]).ok();
    true
}

/// How a backend names the holder of a lock.
enum Naming {
    /// The holder's info as it wrote it (sled, s3): its PID and operation;
    /// a dead holder's lock is reported stale.
    Pid,
    /// GitLab keeps only the lock's ID, user and time: the ID as `current`
    /// returns it; whether a holder still runs cannot be told.
    LockId(Box<dyn Fn() -> Option<String>>),
    /// pg: the PID while held; the lock dies with the holder's connection.
    ReleasedWithConnection,
}

impl Naming {
    /// What every refused process must print about the live holder.
    fn held(&self, pid: u32) -> Vec<String> {
        match self {
            Naming::Pid | Naming::ReleasedWithConnection => {
                vec![format!("PID:       {pid}"), "Operation: apply".to_owned()]
            }
            Naming::LockId(current) => vec![format!(
                "ID:        {}",
                current().expect("the winner's lock is on the server")
            )],
        }
    }

    /// What a run must print about the lock a SIGKILLed holder left.
    fn left_behind(&self, pid: u32) -> Vec<String> {
        match self {
            Naming::Pid | Naming::ReleasedWithConnection => vec![
                "no longer running".to_owned(),
                format!("PID:       {pid}"),
                "Operation: destroy".to_owned(),
            ],
            Naming::LockId(current) => vec![
                format!(
                    "ID:        {}",
                    current().expect("the dead holder's lock is on the server")
                ),
                "cannot tell whether it still runs".to_owned(),
                "berth force-unlock".to_owned(),
            ],
        }
    }
}

fn run_races(kind: &str, t: &mut TestEnv, backend_block: &str, naming: &Naming) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let api = runtime.block_on(double::Double::start());
    let upstream: std::net::SocketAddr = api
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches("/api/v4")
        .parse()
        .expect("double address");
    let gate = Gate::start(upstream);
    t.set_env("TEST_GITLAB_TOKEN", double::TOKEN);
    t.write_config(&config(&gate, backend_block));

    let mut total = Round {
        winners: 0,
        refused: 0,
        slowest_refusal: Duration::ZERO,
    };
    for round in 0..rounds() {
        let r = race(t, &gate, PROCESSES, round, naming);
        total.winners += r.winners;
        total.refused += r.refused;
        total.slowest_refusal = total.slowest_refusal.max(r.slowest_refusal);
        // Applied once, never twice: one variable.
        assert_eq!(
            api.vars(1).iter().filter(|v| v.key == "RACE").count(),
            1,
            "round {round}"
        );
    }
    let stale = killed_holder(t, &gate, naming);
    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(api.vars(1).is_empty(), "destroy removed the variable");
    println!(
        "R3 races [{kind}]: {} rounds x {PROCESSES} processes: {} winners, {} refused naming the holder, slowest refusal {:.1} s; SIGKILLed holder's lock {}",
        rounds(),
        total.winners,
        total.refused,
        total.slowest_refusal.as_secs_f64(),
        if stale {
            "reported with its holder and removed only by force-unlock"
        } else {
            "released by the server with its connection"
        }
    );
}

#[test]
fn races_on_the_local_backend() {
    let mut t = TestEnv::new("race-local");
    run_races("local", &mut t, "", &Naming::Pid);
}

#[test]
fn races_on_the_http_backend() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let fake = runtime.block_on(gitlab_fake::FakeGitlab::start(
        "gitlab-ci-token",
        "race-job-token",
    ));
    let mut t = TestEnv::new("race-http");
    t.set_env("BERTH_STATE_KEY", "race-state-key");
    t.set_env("CI_API_V4_URL", &fake.api_url());
    t.set_env("CI_PROJECT_ID", "1");
    t.set_env("CI_JOB_TOKEN", "race-job-token");
    let project = fake.project.clone();
    let env = t.env.clone();
    let current = move || {
        let p = project.lock().ok()?;
        p.locks.get(&env)?["ID"].as_str().map(str::to_owned)
    };
    run_races(
        "http",
        &mut t,
        "backend \"http\" {}\n",
        &Naming::LockId(Box::new(current)),
    );
    let seen = fake.seen();
    let locks = seen
        .iter()
        .filter(|s| s.method == "POST" && s.target.ends_with("/lock"))
        .count();
    assert!(locks >= PROCESSES * rounds(), "{locks} lock requests");
}

#[test]
fn races_on_the_pg_backend() {
    let server = PgServer::start();
    let mut t = TestEnv::new("race-pg");
    t.set_env("BERTH_STATE_KEY", "race-state-key");
    t.set_env(
        "BERTH_PG_CONN_STR",
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            server.port
        ),
    );
    run_races(
        "pg",
        &mut t,
        "backend \"pg\" {}\n",
        &Naming::ReleasedWithConnection,
    );
}

#[test]
fn races_on_the_s3_backend() {
    let moto = Moto::start();
    assert_eq!(
        moto.request("PUT", "/race-state"),
        Some(200),
        "create bucket"
    );
    let mut t = TestEnv::new("race-s3");
    t.set_env("BERTH_STATE_KEY", "race-state-key");
    t.set_env("AWS_ACCESS_KEY_ID", "testing");
    t.set_env("AWS_SECRET_ACCESS_KEY", "testing-secret");
    let block = format!(
        "backend \"s3\" {{\n  bucket   = \"race-state\"\n  endpoint = \"http://127.0.0.1:{}\"\n  region   = \"us-east-1\"\n}}\n",
        moto.port
    );
    run_races("s3", &mut t, &block, &Naming::Pid);
}
