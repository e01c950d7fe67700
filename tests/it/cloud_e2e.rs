//! One `berth apply`, host and app (issue #4's end-to-end case), through
//! the berth binary: an SSH key, a droplet and a firewall on the
//! DigitalOcean API double (`providers/digitalocean/tests/double`, every
//! request and answer checked against DigitalOcean's OpenAPI spec), whose
//! droplet reports `127.0.0.1` as its public address, where this test's own
//! sshd ([`Sshd`]) listens; the demo app's image is built and its container
//! run through that sshd on the real Docker engine, in the same apply that
//! creates the droplet. Then a no-op plan and a destroy that removes all of
//! it. A second case starts sshd only once berth has been refused by the
//! droplet's address, so the SSH retries are what carries the deploy (and
//! berth says so at the default verbosity).
//!
//! Also: the examples beside the code (`examples/digitalocean`, `aws`,
//! `ssh-host`, `gitlab-pipeline`) pass `berth validate` with the variables
//! and environment their READMEs give.

#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/digitalocean/tests/double/mod.rs"]
mod do_double;

use std::io::BufRead;
use std::path::Path;
use std::sync::mpsc;

use serde_json::Value;

use crate::common::{DockerCleanup, Sshd, TestEnv, docker, free_port, http_get, ssh_keygen};

/// The double and the runtime serving it.
struct Cloud {
    double: do_double::Double,
    _runtime: tokio::runtime::Runtime,
}

/// A DigitalOcean double whose droplets turn active on their first read
/// and report `127.0.0.1` as their public IPv4 address.
fn cloud() -> Cloud {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let double = runtime.block_on(do_double::Double::start(do_double::Options {
        polls_until_active: Some(1),
        polls_until_gone: 1,
        action_polls: 1,
        public_ipv4: Some("127.0.0.1".to_owned()),
        ..do_double::Options::default()
    }));
    Cloud {
        double,
        _runtime: runtime,
    }
}

/// A project for `sshd` and the double: the client key pair in
/// `client_key` / `client_key.pub`, the demo app's build context in `app/`,
/// the token in the environment and no local Docker engine (everything
/// Docker must go through the droplet's address).
fn project(name: &str, sshd: &Sshd, cloud: &Cloud) -> TestEnv {
    let mut t = TestEnv::new(name);
    t.write("client_key", &sshd.client_key());
    t.write(
        "client_key.pub",
        &std::fs::read_to_string(sshd.path("client.pub")).expect("client.pub"),
    );
    crate::common::write_demo_context(&t);
    t.set_env("DIGITALOCEAN_TOKEN", &cloud.double.token);
    t.set_env("DOCKER_HOST", "unix:///nonexistent/berth-no-docker.sock");
    t
}

/// The seed's whole deployment: key, droplet, firewall, the app's image
/// built on the droplet and its container published on `app_port`.
fn config(api: &str, ssh_port: u16, host_key: &str, app_port: u16) -> String {
    let host = format!(
        "host {{\n    address     = digitalocean_droplet.web.ipv4_address\n    \
         port        = {ssh_port}\n    private_key = file(\"client_key\")\n    \
         host_key    = \"{host_key}\"\n    timeout     = \"2m\"\n  }}"
    );
    format!(
        r#"
provider "digitalocean" {{
  api_endpoint = "{api}"
}}

resource "digitalocean_ssh_key" "deploy" {{
  name       = "deploy-${{berth.env}}"
  public_key = file("client_key.pub")
}}

resource "digitalocean_droplet" "web" {{
  name     = "web-${{berth.env}}"
  region   = "nyc3"
  size     = "s-1vcpu-1gb"
  image    = "docker-20-04"
  ssh_keys = [digitalocean_ssh_key.deploy.fingerprint]
  tags     = ["web"]
}}

resource "digitalocean_firewall" "web" {{
  name        = "web-${{berth.env}}"
  droplet_ids = [digitalocean_droplet.web.id]

  inbound_rule {{
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = ["0.0.0.0/0", "::/0"]
  }}

  inbound_rule {{
    protocol         = "tcp"
    port_range       = "{app_port}"
    source_addresses = ["0.0.0.0/0", "::/0"]
  }}

  outbound_rule {{
    protocol              = "tcp"
    port_range            = "all"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }}
}}

resource "docker_image" "app" {{
  name = "berth-it-${{berth.env}}:v1"
  build {{
    context = "app"
  }}
  {host}
}}

resource "docker_container" "app" {{
  name  = "berth-it-${{berth.env}}-app"
  image = docker_image.app.image_id
  ports {{
    internal = 5000
    external = {app_port}
    ip       = "127.0.0.1"
  }}
  healthcheck {{
    path = "/api/ping"
  }}
  wait                  = true
  destroy_grace_seconds = 1
  {host}

  depends_on = [digitalocean_firewall.web]
}}

check "ping" {{
  url      = "http://${{digitalocean_droplet.web.ipv4_address}}:{app_port}/api/ping"
  contains = "ok"
  timeout  = "30s"
}}
"#
    )
}

/// Names of the running containers of this test's app.
fn app_containers(t: &TestEnv) -> Vec<String> {
    docker(&[
        "ps",
        "--filter",
        &format!("label=berth.env={}", t.env),
        "--filter",
        "label=berth.address=docker_container.app",
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What the double holds after the apply: one droplet with berth's
/// ownership tags and the user's, its key, a firewall on it.
fn assert_created(t: &TestEnv, cloud: &Cloud) -> Value {
    let d = &cloud.double;
    let droplets = d.droplets();
    assert_eq!(droplets.len(), 1, "{droplets:#?}");
    let droplet = droplets[0].clone();
    assert_eq!(droplet["status"], "active");
    assert_eq!(droplet["name"], format!("web-{}", t.env));
    let tags = strings(&droplet["tags"]);
    for wanted in [
        "web".to_owned(),
        format!("berth-env:{}", t.env),
        "berth-addr:digitalocean_droplet__web".to_owned(),
    ] {
        assert!(tags.contains(&wanted), "no tag {wanted} in {tags:?}");
    }
    for prefix in ["berth-lineage:", "berth-cfg:"] {
        assert!(
            tags.iter().any(|t| t.starts_with(prefix)),
            "no {prefix} tag in {tags:?}"
        );
    }
    let keys = d.keys();
    assert_eq!(keys.len(), 1, "{keys:#?}");
    assert_eq!(keys[0]["name"], format!("deploy-{}", t.env));
    let firewalls = d.firewalls();
    assert_eq!(firewalls.len(), 1, "{firewalls:#?}");
    assert_eq!(
        firewalls[0]["droplet_ids"],
        serde_json::json!([droplet["id"]])
    );
    droplet
}

/// Destroys everything and checks the double and the engine are empty.
fn destroy_and_check(t: &TestEnv, cloud: &Cloud) {
    let run = t.run(&["destroy", "--auto-approve"]).ok();
    assert!(
        run.stdout.contains("Destroy complete!") || run.stderr.contains("Destroy complete!"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    let d = &cloud.double;
    assert_eq!(d.droplets(), Vec::<Value>::new());
    assert_eq!(d.keys(), Vec::<Value>::new());
    assert_eq!(d.firewalls(), Vec::<Value>::new());
    assert_eq!(app_containers(t), Vec::<String>::new());
    d.assert_spec_clean();
}

#[test]
fn one_apply_creates_the_droplet_and_deploys_the_app_onto_it() {
    let cloud = cloud();
    let sshd = Sshd::started();
    let t = project("cloud-e2e", &sshd, &cloud);
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let app_port = free_port();
    t.write_config(&config(
        &cloud.double.base,
        sshd.port,
        &sshd.host_fingerprint(),
        app_port,
    ));

    // The droplet's address is not known until it exists.
    let plan = t.run(&["plan"]).ok();
    let unknown_hosts = plan
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("+ host") && l.ends_with("= (known after apply)"))
        .count();
    assert_eq!(unknown_hosts, 2, "{}", plan.stdout);
    assert!(
        plan.stdout
            .contains("Plan: 5 to add, 0 to change, 0 to destroy."),
        "{}",
        plan.stdout
    );
    assert_eq!(cloud.double.droplets(), Vec::<Value>::new());

    let apply = t.run(&["apply", "--auto-approve"]).ok();
    assert!(
        apply
            .stdout
            .contains("Apply complete! Resources: 5 added, 0 changed, 0 destroyed."),
        "{}\n{}",
        apply.stdout,
        apply.stderr
    );
    assert_created(&t, &cloud);
    // The image was built and the container run through the droplet's
    // address: there is no local engine (DOCKER_HOST points nowhere).
    assert_eq!(app_containers(&t), vec![format!("berth-it-{}-app", t.env)]);
    let (status, body) = http_get(app_port, "/api/ping").expect("the app answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ok"), "{body}");
    assert!(sshd.accepted_logins() >= 1, "{}", sshd.log());

    // Nothing to do the second time: the droplet, key and firewall found
    // by their tags and names, the image and container over SSH.
    let again = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.status, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("No changes."), "{}", again.stdout);

    destroy_and_check(&t, &cloud);
}

#[test]
fn the_deploy_waits_for_sshd_on_a_droplet_that_is_active_before_it_listens() {
    let cloud = cloud();
    let mut sshd = Sshd::new(); // keys and port only: started below
    let t = project("cloud-e2e-late", &sshd, &cloud);
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let app_port = free_port();
    let port = sshd.port;
    t.write_config(&config(
        &cloud.double.base,
        port,
        &sshd.host_fingerprint(),
        app_port,
    ));

    let mut child = t
        .command(&["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run berth");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    // sshd starts once berth has been refused at the droplet's address
    // (the provider's first line for a resource is shown without -v).
    let (refused_tx, refused_rx) = mpsc::channel();
    let waiting = format!("waiting for root@127.0.0.1:{port} (attempt 1");
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(&waiting) {
                let _ = refused_tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let refused = refused_rx.recv_timeout(std::time::Duration::from_secs(120));
    if refused.is_ok() {
        // The droplet is active (its address is known) and sshd is not up.
        assert_eq!(cloud.double.droplets()[0]["status"], "active");
        assert_eq!(sshd.accepted_logins(), 0);
        sshd.start();
    } else {
        let _ = child.kill();
    }
    let status = child.wait().expect("berth exits");
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    assert!(
        refused.is_ok(),
        "berth never reported waiting for the host\n{stdout}\n{stderr}"
    );
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert_created(&t, &cloud);
    assert_eq!(http_get(app_port, "/api/ping").map(|r| r.0), Some(200));

    destroy_and_check(&t, &cloud);
}

// ------------------------------------------------------------ examples

fn example_dir(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// Runs `berth validate ARGS` in `examples/NAME` with `env`; the output.
fn validate_example(name: &str, args: &[&str], env: &[(&str, &str)]) -> crate::common::Run {
    let t = TestEnv::new(&format!("example-{name}"));
    let mut cmd = t.command(&["validate"]);
    cmd.current_dir(example_dir(name)).args(args);
    for var in [
        "DIGITALOCEAN_TOKEN",
        "DIGITALOCEAN_ACCESS_TOKEN",
        "SSH_KEY",
        "SSH_PUBLIC_KEY",
        "GITLAB_TOKEN",
        "GITLAB_BASE_URL",
        "CI_API_V4_URL",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run berth validate");
    crate::common::Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_cloud_ssh_and_pipeline_examples_validate() {
    let keys = tempfile::Builder::new()
        .prefix("berth-it-example-keys-")
        .tempdir()
        .expect("tempdir");
    let key_path = keys.path().join("deploy");
    let private = ssh_keygen(&key_path, "ed25519");
    let public = std::fs::read_to_string(key_path.with_extension("pub")).expect("deploy.pub");
    let key_file = key_path.to_str().expect("a UTF-8 path");
    let ssh_env = [
        ("SSH_KEY", private.as_str()),
        ("SSH_PUBLIC_KEY", public.trim()),
    ];
    let image = "-var=app_image=registry.gitlab.com/acme/shop:1.4.2";
    let cases: [(&str, Vec<&str>); 4] = [
        ("digitalocean", vec![image]),
        ("aws", vec![image, "-var=ami=ami-0123456789abcdef0"]),
        (
            "ssh-host",
            vec![
                "-var=host=203.0.113.10",
                "-var=host_key=SHA256:ZPQO1Ao0n2DFlTbQf0bnUZbgd0i4rZtuVFjd2aKQJLs",
            ],
        ),
        (
            "gitlab-pipeline",
            vec![
                "-var=gitlab_project=group/project",
                "-var=image_repository=group/project/app",
                "-var=registry_user=deployer",
                "-var=registry_password=Example-Passw0rd-123",
            ],
        ),
    ];
    for (name, args) in cases {
        let key_var = format!("-var=ssh_key_file={key_file}");
        let mut args = args;
        if name == "gitlab-pipeline" {
            args.push(&key_var);
        }
        let run = validate_example(name, &args, &ssh_env);
        assert!(
            run.success() && run.stdout.contains("The configuration is valid."),
            "examples/{name}: berth validate failed\n{}\n{}",
            run.stdout,
            run.stderr
        );
        // Without the SSH key, the same file says which variable is missing.
        if name != "gitlab-pipeline" {
            let run = validate_example(name, &args, &[]);
            assert!(!run.success(), "examples/{name} validated without SSH_KEY");
            assert!(run.stderr.contains("SSH_KEY"), "{}", run.stderr);
        }
    }
}
