//! Rolling replacement and the load balancer, on the real Docker engine
//! through the berth binary: three replicas of the demo app behind the
//! nginx load balancer (the locally built `berth-test-nginx:latest`, made
//! by scripts/build-lb-image.sh) on a free port; an `env` change rolls them
//! while a client keeps requesting through the load balancer, and not one
//! request fails; a rollout whose new replicas never become healthy stops,
//! leaves the old replicas serving and nothing temporary behind; scaling
//! reloads the load balancer; a single container with a health check is
//! replaced without a gap. Behind berth-proxy (the default kind, image
//! `berth-proxy:<version>` from scripts/build-proxy-image.sh), clients that
//! keep their connections open see neither a failed request nor a closed
//! connection during a rollout or a scale-down, also on a host reached over
//! SSH (the sshd of `common::Sshd`). Requests are counted, never timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::common::{
    DockerCleanup, Sshd, TestEnv, containers_with, docker, free_port, http_get, write_demo_context,
};

const LB_IMAGE: &str = "berth-test-nginx:latest";
/// The nginx load balancer block of the tests that use nginx.
const NGINX_LB: &str = r#"load_balancer {
    image = "berth-test-nginx:latest"
  }"#;
/// The image of the default kind, berth-proxy.
const PROXY_IMAGE: &str = concat!("berth-proxy:", env!("CARGO_PKG_VERSION"));
/// Requests the load loop makes at least, whatever the apply's duration.
const MIN_REQUESTS: usize = 200;

fn lb_image_present() {
    let id = docker(&["image", "inspect", "-f", "{{.Id}}", LB_IMAGE]);
    assert!(
        !id.trim().is_empty(),
        "{LB_IMAGE} is missing: run scripts/build-lb-image.sh first (scripts/test.sh does)"
    );
}

fn web_config(port: u16, replicas: u32, instance: &str, healthcheck: &str, extra: &str) -> String {
    balanced_config(port, replicas, instance, healthcheck, NGINX_LB, extra)
}

fn balanced_config(
    port: u16,
    replicas: u32,
    instance: &str,
    healthcheck: &str,
    balancer: &str,
    extra: &str,
) -> String {
    format!(
        r#"
resource "docker_image" "app" {{
  name = "berth-it-${{berth.env}}:latest"
  build {{
    context = "app"
  }}
}}

resource "docker_container" "web" {{
  name     = "berth-it-${{berth.env}}-web"
  image    = docker_image.app.image_id
  replicas = {replicas}
  env      = ["INSTANCE={instance}"]
  ports {{
    internal = 5000
    external = {port}
    ip       = "127.0.0.1"
  }}
  {healthcheck}
  wait                  = true
  destroy_grace_seconds = 2
  {balancer}
  {extra}
}}
"#
    )
}

const HEALTHY: &str = r#"healthcheck {
    test     = ["CMD", "/demo-app", "healthcheck"]
    interval = "1s"
    retries  = 3
  }"#;

/// A health check that can never pass: nothing listens on port 1.
const NEVER_HEALTHY: &str = r#"healthcheck {
    test     = ["CMD", "/demo-app", "healthcheck", "http://127.0.0.1:1/x"]
    interval = "1s"
    retries  = 30
  }
  wait_timeout = 10"#;

/// A thread GETting /api/ping through `port`, one request after the other,
/// until told to stop and at least [`MIN_REQUESTS`] were made.
struct Load {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Tally>,
}

#[derive(Debug, Default)]
struct Tally {
    requests: usize,
    failed: usize,
    not_ok: Vec<u16>,
}

impl Load {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut tally = Tally::default();
            while !(flag.load(Ordering::SeqCst) && tally.requests >= MIN_REQUESTS) {
                tally.requests += 1;
                match http_get(port, "/api/ping") {
                    None => tally.failed += 1,
                    Some((200, _)) => {}
                    Some((status, _)) => tally.not_ok.push(status),
                }
            }
            tally
        });
        Self { stop, handle }
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("the load thread")
    }
}

fn label(t: &TestEnv) -> String {
    format!("berth.env={}", t.env)
}

/// The env of container `name`, one variable a line.
fn env_of(name: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        name,
    ])
}

fn id_of(name: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}}", name])
        .trim()
        .to_owned()
}

/// The load balancer's nginx.conf (`docker cp` writes a tar to stdout).
fn lb_config(t: &TestEnv) -> String {
    docker(&[
        "cp",
        &format!("berth-it-{}-web-lb:/etc/nginx/nginx.conf", t.env),
        "-",
    ])
}

#[test]
fn replicas_roll_behind_the_load_balancer_without_a_failed_request() {
    lb_image_present();
    let t = TestEnv::new("rolling");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    let port = free_port();
    let web = |k: u32| format!("berth-it-{}-web-{k}", t.env);
    let lb = format!("berth-it-{}-web-lb", t.env);

    // Three replicas behind the load balancer, which alone publishes the port.
    t.write_config(&web_config(port, 3, "v1", HEALTHY, ""));
    t.run(&["apply", "--auto-approve"]).ok();
    let mut names = vec![web(1), web(2), web(3), lb.clone()];
    names.sort();
    assert_eq!(containers_with(&label(&t)), names);
    let (status, body) = http_get(port, "/api/ping").expect("the load balancer answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"instance\":\"v1\""), "{body}");
    let published = docker(&["port", &web(1)]);
    assert_eq!(published.trim(), "", "replicas must not publish the port");
    let lb_labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", &lb]);
    assert!(lb_labels.contains("\"berth.role\":\"lb\""), "{lb_labels}");
    assert!(
        lb_labels.contains("\"berth.address\":\"docker_container.web\""),
        "{lb_labels}"
    );
    let listed = t.run(&["state", "show", "docker_container.web"]).ok();
    assert!(listed.stdout.contains("replicas"), "{}", listed.stdout);
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.status, 0,
        "the load balancer is not a replica\n{}\n{}",
        plan.stdout, plan.stderr
    );
    let old_ids: Vec<String> = (1..=3).map(|k| id_of(&web(k))).collect();

    // An env change rolls the replicas while a client keeps asking.
    t.write_config(&web_config(port, 3, "v2", HEALTHY, ""));
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("docker_container.web must be replaced")
            && plan.stdout.contains("rolling"),
        "{}",
        plan.stdout
    );
    let load = Load::start(port);
    let run = t.run(&["apply", "--auto-approve"]);
    let tally = load.finish();
    let run = run.ok();
    assert_eq!(
        (tally.failed, tally.not_ok.len()),
        (0, 0),
        "requests failed during the rollout: {tally:?}\n{}",
        run.stderr
    );
    assert!(tally.requests >= MIN_REQUESTS, "{tally:?}");
    for k in 1..=3 {
        assert!(
            env_of(&web(k)).lines().any(|l| l == "INSTANCE=v2"),
            "{} has the old env",
            web(k)
        );
        assert!(
            !old_ids.contains(&id_of(&web(k))),
            "{} was not replaced",
            web(k)
        );
    }
    assert_eq!(containers_with(&label(&t)), names, "nothing temporary left");
    let (status, body) = http_get(port, "/api/ping").expect("the load balancer answers");
    assert_eq!(status, 200);
    assert!(body.contains("\"instance\":\"v2\""), "{body}");
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);

    // A rollout whose new replicas never become healthy stops; the old
    // replicas keep serving, untouched, and nothing temporary is left.
    let ids_before: Vec<String> = (1..=3).map(|k| id_of(&web(k))).collect();
    t.write_config(&web_config(port, 3, "v3", NEVER_HEALTHY, ""));
    let load = Load::start(port);
    let run = t.run(&["apply", "--auto-approve"]);
    let tally = load.finish();
    let run = run.failed();
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("docker_container.web")
            && run.stderr.contains("rolling replacement stopped"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("log line") && run.stderr.contains("demo-app listening"),
        "the error shows the failed container's log\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("previous ones keep running"),
        "{}",
        run.stderr
    );
    assert_eq!((tally.failed, tally.not_ok.len()), (0, 0), "{tally:?}");
    assert_eq!(
        containers_with(&label(&t)),
        names,
        "no -next- container left"
    );
    assert!(
        containers_with(&label(&t))
            .iter()
            .all(|n| !n.contains("-next-")),
        "{:?}",
        containers_with(&label(&t))
    );
    let ids_after: Vec<String> = (1..=3).map(|k| id_of(&web(k))).collect();
    assert_eq!(
        ids_before, ids_after,
        "the old replicas must stay as they were"
    );
    for k in 1..=3 {
        let running = docker(&["inspect", "-f", "{{.State.Running}}", &web(k)]);
        assert_eq!(running.trim(), "true");
        assert!(env_of(&web(k)).lines().any(|l| l == "INSTANCE=v2"));
    }
    let (status, body) = http_get(port, "/api/ping").expect("still served");
    assert_eq!(status, 200);
    assert!(body.contains("\"instance\":\"v2\""), "{body}");

    // Back to the healthy configuration: scaling 3 -> 4 is an in-place
    // update that adds the replica to the load balancer.
    t.write_config(&web_config(port, 4, "v2", HEALTHY, ""));
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("docker_container.web will be updated in-place"),
        "{}",
        plan.stdout
    );
    t.run(&["apply", "--auto-approve"]).ok();
    let config = lb_config(&t);
    for k in 1..=4 {
        assert!(
            config.contains(&format!("server {}:5000", web(k))),
            "{config}"
        );
    }

    // Scaling down to 2 under load: the replicas leave the load balancer
    // before they stop.
    t.write_config(&web_config(port, 2, "v2", HEALTHY, ""));
    let load = Load::start(port);
    let run = t.run(&["apply", "--auto-approve"]);
    let tally = load.finish();
    run.ok();
    assert_eq!((tally.failed, tally.not_ok.len()), (0, 0), "{tally:?}");
    let config = lb_config(&t);
    assert!(
        config.contains(&format!("server {}:5000", web(2))),
        "{config}"
    );
    assert!(
        !config.contains(&format!("server {}:5000", web(3))),
        "{config}"
    );
    let mut names = vec![web(1), web(2), lb.clone()];
    names.sort();
    assert_eq!(containers_with(&label(&t)), names);

    // The load balancer removed behind berth's back is brought back.
    docker(&["rm", "-f", &lb]);
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 2, "{}\n{}", plan.stdout, plan.stderr);
    t.run(&["apply", "--auto-approve"]).ok();
    let (status, _) = http_get(port, "/api/ping").expect("served again");
    assert_eq!(status, 200);

    // Destroy removes the replicas, the load balancer and its network.
    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(containers_with(&label(&t)).is_empty());
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label={}", label(&t))
        ])
        .trim(),
        ""
    );
    assert!(http_get(port, "/api/ping").is_none(), "the port is closed");
}

#[test]
fn a_single_container_with_a_health_check_is_replaced_without_a_gap() {
    lb_image_present();
    let t = TestEnv::new("rolling-single");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    let port = free_port();
    let web = format!("berth-it-{}-web", t.env);
    let worker = format!("berth-it-{}-worker", t.env);
    // `worker` publishes nothing and has no load balancer: its switch is a
    // rename under the same name.
    let config = |instance: &str| {
        let worker_block = format!(
            r#"
resource "docker_container" "worker" {{
  name  = "berth-it-${{berth.env}}-worker"
  image = docker_image.app.image_id
  env   = ["INSTANCE={instance}"]
  healthcheck {{
    path = "/api/ping"
    port = 5000
  }}
  destroy_grace_seconds = 2
}}
"#
        );
        web_config(port, 1, instance, HEALTHY, "") + &worker_block
    };
    t.write_config(&config("one"));
    t.run(&["apply", "--auto-approve"]).ok();
    let mut names = vec![web.clone(), format!("{web}-lb"), worker.clone()];
    names.sort();
    assert_eq!(containers_with(&label(&t)), names);
    let (status, body) = http_get(port, "/api/ping").expect("answers");
    assert_eq!(status, 200);
    assert!(body.contains("\"instance\":\"one\""), "{body}");
    let web_id = id_of(&web);
    let worker_id = id_of(&worker);

    t.write_config(&config("two"));
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("docker_container.web must be replaced")
            && plan
                .stdout
                .contains("docker_container.worker must be replaced")
            && plan.stdout.contains("rolling"),
        "{}",
        plan.stdout
    );
    let load = Load::start(port);
    let run = t.run(&["apply", "--auto-approve"]);
    let tally = load.finish();
    let run = run.ok();
    assert_eq!(
        (tally.failed, tally.not_ok.len()),
        (0, 0),
        "requests failed during the replacement: {tally:?}\n{}",
        run.stderr
    );
    assert!(tally.requests >= MIN_REQUESTS, "{tally:?}");
    assert_eq!(
        containers_with(&label(&t)),
        names,
        "same names, nothing temporary"
    );
    assert_ne!(id_of(&web), web_id);
    assert_ne!(id_of(&worker), worker_id);
    assert!(env_of(&web).lines().any(|l| l == "INSTANCE=two"));
    assert!(env_of(&worker).lines().any(|l| l == "INSTANCE=two"));
    let (_, body) = http_get(port, "/api/ping").expect("answers");
    assert!(body.contains("\"instance\":\"two\""), "{body}");
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(containers_with(&label(&t)).is_empty());
}

fn proxy_image_present() {
    let id = docker(&["image", "inspect", "-f", "{{.Id}}", PROXY_IMAGE]);
    assert!(
        !id.trim().is_empty(),
        "{PROXY_IMAGE} is missing: run scripts/build-proxy-image.sh first (scripts/test.sh does)"
    );
}

/// What the keep-alive clients saw.
#[derive(Debug, Default)]
struct KeepAliveTally {
    requests: usize,
    not_ok: Vec<u16>,
    /// Requests whose connection failed (closed, reset, unreadable answer).
    connection_errors: Vec<String>,
    /// Connections opened, the first of each client included.
    connections: usize,
}

/// One HTTP/1.1 client that keeps its connection open between requests
/// (as wrk does) and opens a new one only after a connection error.
struct KeepAliveClient {
    port: u16,
    stream: Option<std::io::BufReader<std::net::TcpStream>>,
}

impl KeepAliveClient {
    /// GET /api/ping on the open connection (opening one first if needed,
    /// counted in `tally.connections`); the status, or what went wrong.
    fn ping(&mut self, tally: &mut KeepAliveTally) -> Result<u16, String> {
        use std::io::{BufRead, Read, Write};
        if self.stream.is_none() {
            let stream = std::net::TcpStream::connect(("127.0.0.1", self.port))
                .map_err(|e| format!("connect: {e}"))?;
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            tally.connections += 1;
            self.stream = Some(std::io::BufReader::new(stream));
        }
        let Some(reader) = self.stream.as_mut() else {
            return Err("no connection".into());
        };
        reader
            .get_mut()
            .write_all(b"GET /api/ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if line.is_empty() {
            return Err("read: the connection closed before the answer".into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = None;
        let mut close = false;
        loop {
            let mut header = String::new();
            reader
                .read_line(&mut header)
                .map_err(|e| format!("read: {e}"))?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse::<usize>().ok(),
                "connection" => close = value.trim().eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let length = length.ok_or("an answer without Content-Length")?;
        let mut body = vec![0; length];
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        if close {
            // The server said so: closing is not an error.
            self.stream = None;
        }
        Ok(status)
    }
}

/// Threads each GETting /api/ping through `port` on one keep-alive
/// connection, until told to stop and at least [`MIN_REQUESTS`] were made
/// in all.
struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<KeepAliveTally>>,
}

impl KeepAliveLoad {
    const CLIENTS: usize = 2;

    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..Self::CLIENTS)
            .map(|_| {
                let flag = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut client = KeepAliveClient { port, stream: None };
                    let mut tally = KeepAliveTally::default();
                    let minimum = MIN_REQUESTS.div_ceil(Self::CLIENTS);
                    while !(flag.load(Ordering::SeqCst) && tally.requests >= minimum) {
                        tally.requests += 1;
                        match client.ping(&mut tally) {
                            Ok(200) => {}
                            Ok(status) => tally.not_ok.push(status),
                            Err(e) => {
                                tally.connection_errors.push(e);
                                client.stream = None;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        Self { stop, handles }
    }

    fn finish(self) -> KeepAliveTally {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = KeepAliveTally::default();
        for handle in self.handles {
            let tally = handle.join().expect("a keep-alive client thread");
            all.requests += tally.requests;
            all.not_ok.extend(tally.not_ok);
            all.connection_errors.extend(tally.connection_errors);
            all.connections += tally.connections;
        }
        all
    }
}

/// The proxy's upstream file (`docker cp` writes a tar to stdout).
fn proxy_upstreams(t: &TestEnv) -> String {
    docker(&[
        "cp",
        &format!("berth-it-{}-web-lb:/etc/berth-proxy/upstreams.json", t.env),
        "-",
    ])
}

#[test]
fn keep_alive_clients_see_no_error_while_replicas_roll_behind_berth_proxy() {
    proxy_image_present();
    let t = TestEnv::new("rolling-proxy");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    let port = free_port();
    let web = |k: u32| format!("berth-it-{}-web-{k}", t.env);
    let lb = format!("berth-it-{}-web-lb", t.env);
    // No `load_balancer` block: three replicas get the default kind,
    // berth-proxy, with its default (locally built) image.
    let config =
        |replicas: u32, instance: &str| balanced_config(port, replicas, instance, HEALTHY, "", "");

    t.write_config(&config(3, "v1"));
    t.run(&["apply", "--auto-approve"]).ok();
    let mut names = vec![web(1), web(2), web(3), lb.clone()];
    names.sort();
    assert_eq!(containers_with(&label(&t)), names);
    let image = docker(&["inspect", "-f", "{{.Config.Image}}", &lb]);
    let proxy_id = docker(&["image", "inspect", "-f", "{{.Id}}", PROXY_IMAGE]);
    assert_eq!(
        image.trim(),
        proxy_id.trim(),
        "the load balancer runs berth-proxy"
    );
    let upstreams = proxy_upstreams(&t);
    for k in 1..=3 {
        assert!(
            upstreams.contains(&format!("\"name\":\"{}\"", web(k))),
            "{upstreams}"
        );
    }
    let (status, body) = http_get(port, "/api/ping").expect("the proxy answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"instance\":\"v1\""), "{body}");

    // The rollout, under clients that keep their connections.
    let old_ids: Vec<String> = (1..=3).map(|k| id_of(&web(k))).collect();
    t.write_config(&config(3, "v2"));
    let load = KeepAliveLoad::start(port);
    let run = t.run(&["apply", "--auto-approve"]);
    let tally = load.finish();
    let run = run.ok();
    assert_eq!(
        (tally.not_ok.len(), tally.connection_errors.len()),
        (0, 0),
        "failed requests or connection errors during the rollout: {tally:?}\n{}",
        run.stderr
    );
    assert_eq!(
        tally.connections,
        KeepAliveLoad::CLIENTS,
        "each client kept its one connection: {tally:?}"
    );
    assert!(tally.requests >= MIN_REQUESTS, "{tally:?}");
    for k in 1..=3 {
        assert!(env_of(&web(k)).lines().any(|l| l == "INSTANCE=v2"));
        assert!(
            !old_ids.contains(&id_of(&web(k))),
            "{} was not replaced",
            web(k)
        );
    }
    assert_eq!(containers_with(&label(&t)), names, "nothing temporary left");
    // The proxy knows the replicas by their final names.
    let upstreams = proxy_upstreams(&t);
    assert!(!upstreams.contains("-next-"), "{upstreams}");
    for k in 1..=3 {
        assert!(
            upstreams.contains(&format!("\"name\":\"{}\"", web(k))),
            "{upstreams}"
        );
    }
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);

    // Scaling down under the same load: the replica leaves the proxy and
    // drains before it stops.
    t.write_config(&config(2, "v2"));
    let load = KeepAliveLoad::start(port);
    let run = t.run(&["apply", "--auto-approve"]);
    let tally = load.finish();
    let run = run.ok();
    assert_eq!(
        (tally.not_ok.len(), tally.connection_errors.len()),
        (0, 0),
        "failed requests or connection errors while scaling down: {tally:?}\n{}",
        run.stderr
    );
    assert_eq!(tally.connections, KeepAliveLoad::CLIENTS, "{tally:?}");
    let upstreams = proxy_upstreams(&t);
    assert!(!upstreams.contains(&web(3)), "{upstreams}");

    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(containers_with(&label(&t)).is_empty());
}

#[test]
fn berth_proxy_rolls_replicas_on_a_host_over_ssh_without_a_client_error() {
    proxy_image_present();
    let sshd = Sshd::started();
    let mut t = TestEnv::new("rolling-proxy-ssh");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    t.write("client_key", &sshd.client_key());
    // No local engine: the proxy's upstream file and its admin endpoint
    // (`/applied`, `/drained`) are reached through the SSH connection.
    t.set_env("DOCKER_HOST", "unix:///nonexistent/berth-no-docker.sock");
    write_demo_context(&t);
    let port = free_port();
    let host = format!(
        "host {{\n    address     = \"127.0.0.1\"\n    port        = {}\n    \
         private_key = file(\"client_key\")\n  }}",
        sshd.port
    );
    let config = |instance: &str| {
        balanced_config(port, 3, instance, HEALTHY, "", &host).replace(
            "  build {\n    context = \"app\"\n  }\n",
            &format!("  build {{\n    context = \"app\"\n  }}\n  {host}\n"),
        )
    };
    let web = |k: u32| format!("berth-it-{}-web-{k}", t.env);

    t.write_config(&config("v1"));
    t.run(&["apply", "--auto-approve"]).ok();
    let (status, _) = http_get(port, "/api/ping").expect("the proxy answers");
    assert_eq!(status, 200);

    t.write_config(&config("v2"));
    let load = KeepAliveLoad::start(port);
    let run = t.run(&["apply", "--auto-approve"]);
    let tally = load.finish();
    let run = run.ok();
    assert_eq!(
        (tally.not_ok.len(), tally.connection_errors.len()),
        (0, 0),
        "failed requests or connection errors during the rollout: {tally:?}\n{}",
        run.stderr
    );
    assert_eq!(tally.connections, KeepAliveLoad::CLIENTS, "{tally:?}");
    assert!(
        run.stderr.contains("in effect after") && run.stderr.contains("drained after"),
        "berth asked the proxy through SSH\n{}",
        run.stderr
    );
    for k in 1..=3 {
        assert!(env_of(&web(k)).lines().any(|l| l == "INSTANCE=v2"));
    }
    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(containers_with(&label(&t)).is_empty());
}

/// R7: a new image whose own health check fails stops the rollout behind
/// berth-proxy with the old replicas serving every request; the next apply,
/// with a good image, rolls through.
#[test]
fn a_new_image_that_never_becomes_healthy_leaves_the_old_replicas_serving() {
    proxy_image_present();
    let t = TestEnv::new("rolling-bad-image");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    let dockerfile = t.path().join("app/Dockerfile");
    let good = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    let port = free_port();
    let web = |k: u32| format!("berth-it-{}-web-{k}", t.env);
    // No `healthcheck` block: the image's own HEALTHCHECK decides.
    let config = balanced_config(port, 2, "v1", "wait_timeout = 15", "", "");
    t.write_config(&config);
    t.run(&["apply", "--auto-approve"]).ok();
    let old_ids: Vec<String> = (1..=2).map(|k| id_of(&web(k))).collect();

    // The new image checks a port nothing listens on.
    std::fs::write(
        &dockerfile,
        format!(
            "{good}HEALTHCHECK --interval=1s --retries=2 CMD [\"/demo-app\", \"healthcheck\", \"http://127.0.0.1:1/x\"]\n"
        ),
    )
    .expect("bad Dockerfile");
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("docker_container.web must be replaced (rolling"),
        "{}",
        plan.stdout
    );
    let load = KeepAliveLoad::start(port);
    let run = t.run(&["apply", "--auto-approve"]);
    let tally = load.finish();
    let run = run.failed();
    assert!(
        run.stderr.contains("docker_container.web") && run.stderr.contains("unhealthy"),
        "the failure names the resource and the health state: {}",
        run.stderr
    );
    assert_eq!(
        (tally.not_ok.len(), tally.connection_errors.len()),
        (0, 0),
        "the old replicas kept serving: {tally:?}"
    );
    assert!(tally.requests >= MIN_REQUESTS, "{tally:?}");
    let now: Vec<String> = (1..=2).map(|k| id_of(&web(k))).collect();
    assert_eq!(now, old_ids, "the old replicas are still the ones running");
    assert!(
        containers_with(&label(&t))
            .iter()
            .all(|n| !n.contains("-next-")),
        "the failed new replica was removed"
    );

    // A good image again (a new one: the label changes its id) rolls through.
    std::fs::write(&dockerfile, format!("{good}LABEL fixed=\"1\"\n")).expect("good Dockerfile");
    t.run(&["apply", "--auto-approve"]).ok();
    for (k, old) in (1..=2).zip(&old_ids) {
        assert_ne!(&id_of(&web(k)), old, "{} was replaced", web(k));
    }
    let (status, _) = http_get(port, "/api/ping").expect("the proxy answers");
    assert_eq!(status, 200);
    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(containers_with(&label(&t)).is_empty());
}
