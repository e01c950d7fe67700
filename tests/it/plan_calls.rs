//! How many Docker API requests a no-op `berth plan` makes: berth talks to
//! the engine through a counting proxy of this test's (a unix socket in a
//! temp dir that forwards to the real engine's and records every HTTP
//! request line it passes on). Six containers of two images need one
//! container list call and one image look-up per image, not one per
//! container (issue #3's "one list call per host"; the same cache serves
//! engines reached over SSH, see `scripts/bench-ssh-noop.sh`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::{DockerCleanup, TestEnv, containers_with, write_demo_context};

/// A unix socket that forwards to the Docker engine's and counts the
/// requests going through it.
struct CountingProxy {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

/// The engine's socket, as the docker CLI would find it.
fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// `METHOD /path` (query dropped) of every HTTP request line in `text`.
fn request_lines(text: &str) -> Vec<String> {
    text.split("\r\n")
        .filter_map(|line| {
            let mut words = line.split(' ');
            let method = words.next()?;
            let target = words.next()?;
            let version = words.next()?;
            let known = matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "DELETE");
            (known && target.starts_with('/') && version.starts_with("HTTP/1.")).then(|| {
                let path = target.split('?').next().unwrap_or(target);
                format!("{method} {path}")
            })
        })
        .collect()
}

impl CountingProxy {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-it-proxy-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("bind the proxy socket");
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(engine) = UnixStream::connect(engine_socket()) else {
                    continue;
                };
                let (Ok(mut client_r), Ok(mut engine_w)) = (client.try_clone(), engine.try_clone())
                else {
                    continue;
                };
                let seen = Arc::clone(&seen);
                // Requests: client → engine, counted. Each read is scanned
                // with what is left of the previous one's last line.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    let mut carry = String::new();
                    while let Ok(n) = client_r.read(&mut buf) {
                        if n == 0 || engine_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        carry.push_str(&String::from_utf8_lossy(&buf[..n]));
                        // Complete lines are scanned; the last, partial one
                        // waits for the next read (a request line is short:
                        // a long run without a line end is a body, dropped).
                        let end = carry.rfind("\r\n").map_or(0, |i| i + 2);
                        let rest = carry.split_off(end);
                        seen.lock().expect("requests").extend(request_lines(&carry));
                        carry = if rest.len() > 4096 {
                            String::new()
                        } else {
                            rest
                        };
                    }
                    let _ = engine_w.shutdown(std::net::Shutdown::Write);
                });
                // Answers: engine → client, as they are.
                let (mut engine_r, mut client_w) = (engine, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut engine_r, &mut client_w);
                    let _ = client_w.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self {
            _dir: dir,
            socket,
            requests,
            stop,
        }
    }

    /// The requests seen so far, by `METHOD /path`, and forgets them.
    fn take(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in std::mem::take(&mut *self.requests.lock().expect("requests")) {
            *counts.entry(r).or_insert(0) += 1;
        }
        counts
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = UnixStream::connect(&self.socket);
    }
}

#[test]
fn request_lines_are_found_in_a_stream() {
    let text = "GET /v1.47/containers/json?all=true HTTP/1.1\r\nHost: x\r\n\r\n\
                POST /v1.47/images/create?fromImage=a HTTP/1.1\r\n\r\n{\"GET\": 1}\r\n";
    assert_eq!(
        request_lines(text),
        vec![
            "GET /v1.47/containers/json".to_owned(),
            "POST /v1.47/images/create".to_owned()
        ]
    );
}

#[test]
fn a_no_op_plan_lists_containers_once_and_looks_each_image_up_once() {
    let proxy = CountingProxy::start();
    let mut t = TestEnv::new("plan-calls");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    t.set_env("DOCKER_HOST", &format!("unix://{}", proxy.socket.display()));
    write_demo_context(&t);
    // Two tags of the demo image, labelled so that the cleanup removes them.
    let (a, b) = (
        format!("berth-it-{}:a", t.env),
        format!("berth-it-{}:b", t.env),
    );
    let built = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--label"])
        .arg(format!("berth.env={}", t.env))
        .args(["-t", &a, "-t", &b])
        .arg(t.path().join("app"))
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut config = String::new();
    for i in 0..6 {
        let image = if i < 4 { &a } else { &b };
        config.push_str(&format!(
            "resource \"docker_container\" \"c{i}\" {{\n  \
             name  = \"berth-it-${{berth.env}}-c{i}\"\n  image = \"{image}\"\n  \
             destroy_grace_seconds = 1\n}}\n\n"
        ));
    }
    t.write_config(&config);
    t.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(containers_with(&format!("berth.env={}", t.env)).len(), 6);
    proxy.take();

    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    let counts = proxy.take();
    let matching = |f: &dyn Fn(&str) -> bool| -> usize {
        counts.iter().filter(|(r, _)| f(r)).map(|(_, n)| n).sum()
    };
    let lists = matching(&|r| r.starts_with("GET ") && r.ends_with("/containers/json"));
    let image_lookups =
        matching(&|r| r.starts_with("GET ") && r.contains("/images/") && r.ends_with("/json"));
    let inspects = matching(&|r| r.contains("/containers/") && !r.ends_with("/containers/json"));
    assert_eq!(lists, 1, "{counts:#?}");
    assert_eq!(
        image_lookups, 2,
        "one per image, not per container: {counts:#?}"
    );
    assert_eq!(inspects, 0, "{counts:#?}");
    let total: usize = counts.values().sum();
    assert!(
        total <= 5,
        "list + 2 image look-ups + ping/version at most: {counts:#?}"
    );

    t.run(&["destroy", "--auto-approve"]).ok();
    assert_eq!(
        containers_with(&format!("berth.env={}", t.env)),
        Vec::<String>::new()
    );
}
