//! Docker resources on a host reached over SSH, through the berth binary:
//! each test runs its own OpenSSH server on 127.0.0.1 and a free port
//! ([`Sshd`]), and the Docker engine berth reaches through it is the local
//! one (so [`DockerCleanup`] removes what a test leaves). Covered: a deploy
//! (network, image built through the tunnel, replicas behind the load
//! balancer, berth's HTTP health check through a direct-tcpip channel) with
//! no local engine configured and one SSH login per berth run; a rolling
//! image change; pinned and first-use host keys refused when they change;
//! a refused client key; a host that comes up late, and one that never
//! does; a host whose sshd will not forward the Docker socket; objects whose
//! configuration is gone, deleted through another resource's `host` block,
//! and never reported as gone when no key is known. Counts, never timings.

use std::sync::{Arc, Mutex};

use crate::common::{DockerCleanup, Sshd, TestEnv, docker, free_port, write_demo_context};

const LB_IMAGE: &str = "berth-test-nginx:latest";

/// The `host` block for `sshd`, with `extra` lines in it.
fn host(port: u16, extra: &str) -> String {
    format!(
        "host {{\n    address     = \"127.0.0.1\"\n    port        = {port}\n    \
         private_key = file(\"client_key\")\n    {extra}\n  }}"
    )
}

/// A test project whose `client_key` file is `sshd`'s authorized key.
fn project(name: &str, sshd: &Sshd) -> TestEnv {
    let t = TestEnv::new(name);
    t.write("client_key", &sshd.client_key());
    t
}

fn network_config(port: u16, extra: &str) -> String {
    format!(
        "resource \"docker_network\" \"n\" {{\n  name = \"berth-it-${{berth.env}}\"\n  {}\n}}\n",
        host(port, extra)
    )
}

/// Runs `args` and returns it with how many SSH logins sshd accepted.
fn logins_during(sshd: &Sshd, t: &TestEnv, args: &[&str]) -> (crate::common::Run, usize) {
    let before = sshd.accepted_logins();
    let run = t.run(args);
    (run, sshd.accepted_logins() - before)
}

fn app_config(port: u16, lb_port: u16, image: &str, extra_images: &str) -> String {
    let host = host(port, "");
    format!(
        r#"
resource "docker_network" "app" {{
  name = "berth-it-${{berth.env}}"
  {host}
}}

resource "docker_image" "v1" {{
  name = "berth-it-${{berth.env}}:v1"
  build {{
    context = "app"
  }}
  {host}
}}
{extra_images}
resource "docker_container" "web" {{
  name     = "berth-it-${{berth.env}}-web"
  image    = {image}
  replicas = 2
  ports {{
    internal = 5000
    external = {lb_port}
    ip       = "127.0.0.1"
  }}
  networks_advanced {{
    name = docker_network.app.name
  }}
  load_balancer {{
    image = "{LB_IMAGE}"
  }}
  # berth's own HTTP check: made from the host, through the SSH connection.
  healthcheck {{
    path = "/api/ping"
  }}
  wait                  = true
  destroy_grace_seconds = 1
  {host}
}}

check "ping" {{
  url      = "http://127.0.0.1:{lb_port}/api/ping"
  contains = "ok"
  timeout  = "30s"
}}
"#
    )
}

fn lb_image_present() {
    let id = docker(&["image", "inspect", "-f", "{{.Id}}", LB_IMAGE]);
    assert!(
        !id.trim().is_empty(),
        "{LB_IMAGE} is missing: run scripts/build-lb-image.sh first (scripts/test.sh does)"
    );
}

fn container_ids(t: &TestEnv) -> Vec<String> {
    let mut ids: Vec<String> = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=berth.env={}", t.env),
        "--filter",
        "label=berth.address=docker_container.web",
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    ids.sort();
    ids
}

#[test]
fn deploys_over_ssh_with_one_connection_per_run() {
    lb_image_present();
    let sshd = Sshd::started();
    let mut t = project("ssh-deploy", &sshd);
    let _cleanup = DockerCleanup { env: t.env.clone() };
    // No local engine: everything must go through the SSH host.
    t.set_env("DOCKER_HOST", "unix:///nonexistent/berth-no-docker.sock");
    write_demo_context(&t);
    let lb_port = free_port();
    t.write_config(&app_config(
        sshd.port,
        lb_port,
        "docker_image.v1.image_id",
        "",
    ));

    let (run, logins) = logins_during(&sshd, &t, &["apply", "--auto-approve"]);
    let run = run.ok();
    assert!(run.stderr.contains("check.ping: passed"), "{}", run.stderr);
    assert_eq!(
        logins,
        1,
        "one SSH connection for the whole run\n{}",
        sshd.log()
    );
    assert!(
        run.stderr.contains("trusting the host key"),
        "first use is reported: {}",
        run.stderr
    );
    assert_eq!(
        container_ids(&t).len(),
        3,
        "two replicas and the load balancer"
    );

    // The host key seen on first use is recorded with every resource.
    let fingerprint = sshd.host_fingerprint();
    for address in [
        "docker_network.app",
        "docker_image.v1",
        "docker_container.web",
    ] {
        let shown = t.run(&["state", "show", address]).ok();
        assert!(
            shown
                .stdout
                .lines()
                .any(|l| l.contains("host_fingerprint") && l.contains(&fingerprint)),
            "{address}: {}",
            shown.stdout
        );
        assert!(
            shown
                .stdout
                .contains(&format!("root@127.0.0.1:{}", sshd.port)),
            "{address}: {}",
            shown.stdout
        );
    }
    let key = sshd.client_key();
    let secret_line = key.lines().nth(1).expect("key body");
    assert!(
        !String::from_utf8_lossy(&t.state_bytes()).contains(secret_line),
        "the private key must never reach the state"
    );

    let (plan, logins) = logins_during(&sshd, &t, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert_eq!(logins, 1, "{}", sshd.log());

    let (run, logins) = logins_during(&sshd, &t, &["destroy", "--auto-approve"]);
    run.ok();
    assert_eq!(logins, 1);
    assert!(container_ids(&t).is_empty());
}

#[test]
fn an_image_change_rolls_over_ssh() {
    lb_image_present();
    let sshd = Sshd::started();
    let t = project("ssh-roll", &sshd);
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    // A second context whose image differs from the first.
    let app = t.path().join("app");
    let app2 = t.path().join("app2");
    std::fs::create_dir_all(&app2).unwrap();
    std::fs::copy(app.join("demo-app"), app2.join("demo-app")).unwrap();
    let dockerfile = std::fs::read_to_string(app.join("Dockerfile")).unwrap();
    std::fs::write(
        app2.join("Dockerfile"),
        format!("{dockerfile}LABEL berth.test.version=\"2\"\n"),
    )
    .unwrap();
    let lb_port = free_port();
    t.write_config(&app_config(sshd.port, lb_port, "docker_image.v1.name", ""));
    t.run(&["apply", "--auto-approve"]).ok();
    let before = container_ids(&t);
    assert_eq!(before.len(), 3);

    let v2 = format!(
        r#"
resource "docker_image" "v2" {{
  name = "berth-it-${{berth.env}}:v2"
  build {{
    context = "app2"
  }}
  {}
}}
"#,
        host(sshd.port, "")
    );
    t.write_config(&app_config(sshd.port, lb_port, "docker_image.v2.name", &v2));
    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("docker_container.web must be replaced")
            && plan.stdout.contains("rolling"),
        "{}",
        plan.stdout
    );
    let (run, logins) = logins_during(&sshd, &t, &["apply", "--auto-approve"]);
    let run = run.ok();
    assert_eq!(logins, 1, "{}", sshd.log());
    assert!(run.stderr.contains("Replacing (rolling)"), "{}", run.stderr);
    assert!(run.stderr.contains("check.ping: passed"), "{}", run.stderr);

    let v2_id = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        &format!("berth-it-{}:v2", t.env),
    ]);
    for k in 1..=2 {
        let name = format!("berth-it-{}-web-{k}", t.env);
        let image = docker(&["inspect", "-f", "{{.Image}}", &name]);
        assert_eq!(image.trim(), v2_id.trim(), "{name} runs v2");
    }
    let after = container_ids(&t);
    assert_eq!(after.len(), 3);
    let replicas_kept = before.iter().filter(|id| after.contains(id)).count();
    assert_eq!(
        replicas_kept, 1,
        "only the load balancer stays: {before:?} {after:?}"
    );
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
}

#[test]
fn a_wrong_pinned_host_key_is_refused_naming_both_fingerprints() {
    let sshd = Sshd::started();
    let t = project("ssh-pin", &sshd);
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    t.write_config(&network_config(
        sshd.port,
        &format!("host_key = \"{wrong}\""),
    ));
    let run = t.run(&["apply", "--auto-approve"]).failed();
    assert!(run.stderr.contains("host key mismatch"), "{}", run.stderr);
    assert!(run.stderr.contains(wrong), "{}", run.stderr);
    assert!(
        run.stderr.contains(&sshd.host_fingerprint()),
        "{}",
        run.stderr
    );
    assert_eq!(sshd.accepted_logins(), 0, "no login to an unverified host");

    // The right pin works.
    t.write_config(&network_config(
        sshd.port,
        &format!("host_key = \"{}\"", sshd.host_fingerprint()),
    ));
    t.run(&["apply", "--auto-approve"]).ok();
}

#[test]
fn a_changed_host_key_is_refused_after_first_use() {
    let mut sshd = Sshd::started();
    let t = project("ssh-tofu", &sshd);
    let _cleanup = DockerCleanup { env: t.env.clone() };
    t.write_config(&network_config(sshd.port, ""));
    t.run(&["apply", "--auto-approve"]).ok();
    let first = sshd.host_fingerprint();
    let shown = t.run(&["state", "show", "docker_network.n"]).ok();
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.contains("host_fingerprint") && l.contains(&first)),
        "{}",
        shown.stdout
    );

    // The host is "rebuilt": same address and port, new key.
    sshd.stop();
    sshd.regenerate_host_key();
    sshd.start();
    let second = sshd.host_fingerprint();
    assert_ne!(first, second);
    let logins = sshd.accepted_logins();
    for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let run = t.run(args).failed();
        assert!(run.stderr.contains("host key mismatch"), "{}", run.stderr);
        assert!(run.stderr.contains(&first), "{}", run.stderr);
        assert!(run.stderr.contains(&second), "{}", run.stderr);
        assert!(
            run.stderr.contains("host_key"),
            "how to accept: {}",
            run.stderr
        );
    }
    assert_eq!(sshd.accepted_logins(), logins, "never logged in");

    // Accepting the new key by pinning it works.
    t.write_config(&network_config(
        sshd.port,
        &format!("host_key = \"{second}\""),
    ));
    t.run(&["apply", "--auto-approve"]).ok();
}

#[test]
fn a_refused_client_key_names_user_and_host() {
    let sshd = Sshd::started();
    let t = project("ssh-auth", &sshd);
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let stranger = crate::common::ssh_keygen(&t.path().join("stranger"), "ed25519");
    t.write("client_key", &stranger);
    t.write_config(&network_config(sshd.port, ""));
    let run = t.run(&["apply", "--auto-approve"]).failed();
    assert!(
        run.stderr.contains(&format!(
            "authentication failed for root@127.0.0.1:{}",
            sshd.port
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("authorized_keys"), "{}", run.stderr);
    let secret_line = stranger.lines().nth(1).expect("key body");
    assert!(!run.stderr.contains(secret_line) && !run.stdout.contains(secret_line));
}

#[test]
fn a_host_that_comes_up_late_is_waited_for() {
    let sshd = Arc::new(Mutex::new(Sshd::new()));
    let (t, port) = {
        let s = sshd.lock().unwrap();
        (project("ssh-late", &s), s.port)
    };
    let _cleanup = DockerCleanup { env: t.env.clone() };
    t.write_config(&network_config(port, "timeout = \"2m\""));
    let starter = {
        let sshd = Arc::clone(&sshd);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            sshd.lock().unwrap().start();
        })
    };
    let run = t.run(&["apply", "--auto-approve", "-v"]);
    starter.join().expect("the thread starting sshd");
    let run = run.ok();
    assert!(
        run.stderr
            .contains(&format!("waiting for root@127.0.0.1:{port} (attempt 1")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("connection refused"), "{}", run.stderr);
    assert_eq!(sshd.lock().unwrap().accepted_logins(), 1);
}

#[test]
fn a_host_that_never_answers_fails_naming_it() {
    let sshd = Sshd::new(); // keys only: never started
    let t = project("ssh-never", &sshd);
    let port = free_port();
    t.write_config(&network_config(port, "timeout = \"3s\""));
    let run = t.run(&["apply", "--auto-approve"]).failed();
    assert!(
        run.stderr.contains(&format!(
            "could not connect to root@127.0.0.1:{port} within 3s"
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("connection refused"), "{}", run.stderr);
}

#[test]
fn a_host_without_a_reachable_docker_engine_says_so() {
    let mut sshd = Sshd::new();
    sshd.forbid_stream_local();
    sshd.start();
    let t = project("ssh-nodocker", &sshd);
    t.write_config(&network_config(sshd.port, ""));
    let run = t.run(&["apply", "--auto-approve"]).failed();
    assert!(
        run.stderr.contains(&format!(
            "no Docker engine reachable on root@127.0.0.1:{}",
            sshd.port
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("AllowStreamLocalForwarding"),
        "{}",
        run.stderr
    );
}

#[test]
fn objects_whose_configuration_is_gone_are_found_through_other_host_blocks() {
    let sshd = Sshd::started();
    let t = project("ssh-orphan", &sshd);
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let two = |keep_b: bool| {
        let mut text = network_config(sshd.port, "");
        if keep_b {
            text.push_str(&format!(
                "resource \"docker_network\" \"b\" {{\n  name = \"berth-it-${{berth.env}}-b\"\n  {}\n}}\n",
                host(sshd.port, "")
            ));
        }
        text
    };
    let networks = || {
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=berth.env={}", t.env),
        ])
        .split_whitespace()
        .count()
    };
    t.write_config(&two(true));
    t.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(networks(), 2);

    // b is gone from the file, host block and all: n's block has the key.
    t.write_config(&two(false));
    let run = t.run(&["apply", "--auto-approve"]).ok();
    assert!(
        run.stdout.contains("docker_network.b will be destroyed"),
        "{}",
        run.stdout
    );
    assert_eq!(networks(), 1);

    // Nothing in the file knows the host any more: refused, not "gone".
    t.write_config("");
    let run = t.run(&["plan"]).failed();
    let host = format!("root@127.0.0.1:{}", sshd.port);
    assert!(
        run.stderr.contains("docker_network.n") && run.stderr.contains(&host),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("host"), "{}", run.stderr);
    assert!(!run.stdout.contains("will be created"), "{}", run.stdout);

    // The provider's default host knows it: destroyed there.
    t.write_config(&format!(
        "provider \"docker\" {{\n  host        = \"ssh://{host}\"\n  private_key = file(\"client_key\")\n}}\n"
    ));
    let run = t.run(&["apply", "--auto-approve"]).ok();
    assert!(
        run.stdout.contains("docker_network.n will be destroyed"),
        "{}",
        run.stdout
    );
    assert_eq!(networks(), 0);
}

#[test]
fn changing_the_host_between_two_ways_to_one_engine_rolls() {
    let a = Sshd::started();
    let b = Sshd::started();
    let t = project("ssh-move", &a);
    t.write("client_key_b", &b.client_key());
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    let config = |port: u16, key: &str| {
        format!(
            r#"
resource "docker_image" "app" {{
  name = "berth-it-${{berth.env}}:v1"
  build {{
    context = "app"
  }}
  {image_host}
}}

resource "docker_container" "web" {{
  name  = "berth-it-${{berth.env}}-web"
  image = docker_image.app.image_id
  ports {{
    internal = 5000
  }}
  healthcheck {{
    path = "/api/ping"
  }}
  wait                  = true
  destroy_grace_seconds = 1
  host {{
    address     = "127.0.0.1"
    port        = {port}
    private_key = file("{key}")
  }}
}}
"#,
            image_host = host(a.port, ""),
        )
    };
    t.write_config(&config(a.port, "client_key"));
    t.run(&["apply", "--auto-approve"]).ok();
    let before = container_ids(&t);
    assert_eq!(before.len(), 1);

    t.write_config(&config(b.port, "client_key_b"));
    let plan = t.run(&["plan"]).ok();
    assert!(plan.stdout.contains("rolling"), "{}", plan.stdout);
    let run = t.run(&["apply", "--auto-approve"]).ok();
    assert!(run.stderr.contains("Replacing (rolling)"), "{}", run.stderr);
    let after = container_ids(&t);
    assert_eq!(after.len(), 1, "the new container runs: {after:?}");
    assert_ne!(before, after);
    let shown = t.run(&["state", "show", "docker_container.web"]).ok();
    assert!(
        shown
            .stdout
            .contains(&format!("\"root@127.0.0.1:{}\"", b.port)),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains(&b.host_fingerprint()),
        "{}",
        shown.stdout
    );
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
}
