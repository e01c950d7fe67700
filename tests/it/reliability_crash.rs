//! R1 crash safety (issue #7): berth is SIGKILLed at seeded points spread
//! over applies of a 32-resource file across every provider, and the next
//! apply must converge with no duplicated and no orphaned object.
//!
//! The world: the local Docker engine behind a unix-socket proxy of the
//! test's (a network, an image built here, four containers of two
//! replicas), the same engine through a real sshd (a network and three
//! containers, labelled `test.via=ssh`), the DigitalOcean double (an
//! SSH key, six droplets, a firewall), moto (a key pair, a security group,
//! four instances) and the GitLab double (eight project variables). Every
//! HTTP service sits behind a [`Proxy`] whose [`KillPlan`] counts the
//! mutating requests (creates, updates, deletes, builds, starts) of one
//! berth run across all services and, at the Nth, SIGKILLs berth either
//! before forwarding the request or after the upstream has acted and
//! before the answer reaches berth (the object exists; its state record
//! cannot). A third kind of kill point waits for an SSH step to start
//! (those calls go through sshd straight to the engine's socket) and kills
//! a seeded few milliseconds later.
//!
//! Every round changes a generation variable that replaces part of each
//! provider's objects (container `env`, droplet and instance `user_data`, a
//! variable's key) and updates others, so each round creates, updates and
//! deletes everywhere. After each kill: the stale lock is reported as
//! such (`plan` fails naming the dead holder) and removed with the
//! documented `berth force-unlock ID`; then `apply` must succeed, a plan
//! must be empty (`--detailed-exitcode` 0: state matches reality), and
//! the objects counted on the engine by labels and in the doubles and
//! moto by tags must be exactly the configured ones. At the end `destroy`
//! must leave nothing anywhere.
//!
//! Short form (CI): 20 kills. `BERTH_RELIABILITY=long`: 60 kills (seed
//! `BERTH_RELIABILITY_SEED`). The figures are printed (run with
//! `--nocapture`) and recorded in RELIABILITY.md.

#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/digitalocean/tests/double/mod.rs"]
mod do_double;
#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/gitlab/tests/double/mod.rs"]
mod gl_double;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{DockerCleanup, Sshd, TestEnv, docker, write_demo_context};
use crate::reliability_support::{
    Action, After, Endpoint, Killer, Moto, Policy, Proxy, Rng, Seen, amazon_linux_ami, ec2,
    long_form, runtime, seed, xml_values,
};

/// How a kill point is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// At the Nth mutating request, before it is forwarded.
    Before,
    /// At the Nth mutating request, after the upstream acted, before
    /// berth sees the answer: between the API call and the state record.
    AfterUpstream,
    /// A few milliseconds after an SSH step starts.
    SshStep,
}

/// Counts the mutating requests of one berth run across every proxy and
/// kills at the Nth of the chosen kind (every mutation, or only the
/// creates of one service).
struct KillPlan {
    killer: Killer,
    /// Matching requests seen in this run.
    seen: AtomicU64,
    target: AtomicU64,
    mode: Mutex<Mode>,
    /// Only the creates of this service count; `None`: every mutation.
    service: Mutex<Option<&'static str>>,
    /// Mutations and creates per service, this round.
    round: Mutex<BTreeMap<String, (u64, u64)>>,
    /// Mutations per service, all rounds.
    total: Mutex<BTreeMap<String, u64>>,
}

impl KillPlan {
    fn arm(&self, target: u64, mode: Mode, service: Option<&'static str>) {
        self.seen.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
        *self.mode.lock().expect("mode") = mode;
        *self.service.lock().expect("service") = service;
        self.round.lock().expect("round").clear();
    }

    fn disarm(&self) {
        self.target.store(0, Ordering::SeqCst);
    }

    /// Mutations and creates of `service` (all services: `None`) this round.
    fn made(&self, service: Option<&str>) -> (u64, u64) {
        self.round
            .lock()
            .expect("round")
            .iter()
            .filter(|(s, _)| service.is_none_or(|x| x == s.as_str()))
            .fold((0, 0), |(m, c), (_, (dm, dc))| (m + dm, c + dc))
    }
}

/// Whether the request creates an object (rather than changing or
/// deleting one).
fn creates(seen: &Seen<'_>) -> bool {
    if let Some(action) = seen.ec2_action() {
        return matches!(
            action.as_str(),
            "RunInstances" | "ImportKeyPair" | "CreateSecurityGroup"
        );
    }
    if seen.method != hyper::Method::POST {
        return false;
    }
    match seen.service {
        "docker" => {
            seen.path.ends_with("/containers/create")
                || seen.path.ends_with("/networks/create")
                || seen.path.ends_with("/build")
        }
        "digitalocean" => {
            matches!(
                seen.path,
                "/v2/droplets" | "/v2/firewalls" | "/v2/account/keys"
            )
        }
        "gitlab" => seen.path.ends_with("/variables"),
        _ => false,
    }
}

impl Policy for KillPlan {
    fn decide(&self, seen: &Seen<'_>) -> Action {
        if !seen.mutating() {
            return Action::Forward(After::Send);
        }
        let create = creates(seen);
        {
            let mut round = self.round.lock().expect("round");
            let entry = round.entry(seen.service.to_owned()).or_default();
            entry.0 += 1;
            entry.1 += u64::from(create);
            *self
                .total
                .lock()
                .expect("total")
                .entry(seen.service.to_owned())
                .or_default() += 1;
        }
        let mode = *self.mode.lock().expect("mode");
        let service = *self.service.lock().expect("service");
        let counts = match service {
            None => true,
            Some(s) => s == seen.service && create,
        };
        if !counts || mode == Mode::SshStep {
            return Action::Forward(After::Send);
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n != self.target.load(Ordering::SeqCst) {
            return Action::Forward(After::Send);
        }
        let what = seen.describe();
        match mode {
            Mode::Before => {
                self.killer.kill(format!("before {what}"));
                Action::Hang
            }
            _ => {
                let killer = self.killer.clone();
                Action::Forward(After::Hang(Box::new(move || {
                    killer.kill(format!("after {what} acted, before berth saw the answer"));
                })))
            }
        }
    }
}

const DROPLETS: usize = 6;
const INSTANCES: usize = 4;
const CONTAINERS: usize = 4;
const SSH_CONTAINERS: usize = 3;
const VARIABLES: usize = 8;

struct Ports {
    docker: String,
    ssh_port: u16,
    digitalocean: String,
    ec2: String,
    gitlab: String,
    ami: String,
}

/// How many containers and droplets each generation replaces: one of each
/// in the short form, two in the long one.
fn churn() -> usize {
    if long_form() { 2 } else { 1 }
}

/// The configuration of generation `gen`: 32 resources.
fn config(p: &Ports, generation: u64) -> String {
    let g = generation;
    let ssh_port = p.ssh_port;
    let mut hcl = format!(
        r#"
provider "docker" {{
  host = "{docker}"
}}

provider "digitalocean" {{
  api_endpoint = "{digitalocean}"
}}

provider "aws" {{
  region = "us-east-1"
  endpoints {{
    ec2 = "{ec2}"
  }}
}}

provider "gitlab" {{
  base_url = "{gitlab}"
  token    = env("TEST_GITLAB_TOKEN")
}}

resource "docker_network" "net" {{
  name = "berth-it-${{berth.env}}"
}}

resource "docker_image" "app" {{
  name = "berth-it-${{berth.env}}:app"
  build {{
    context = "app"
  }}
}}

resource "docker_network" "ssh_net" {{
  name = "berth-it-${{berth.env}}-ssh"
  labels {{
    label = "test.via"
    value = "ssh"
  }}
  host {{
    address     = "127.0.0.1"
    port        = {ssh_port}
    private_key = file("client_key")
  }}
}}

resource "digitalocean_ssh_key" "deploy" {{
  name       = "deploy-${{berth.env}}"
  public_key = file("client_key.pub")
}}

resource "digitalocean_firewall" "fw" {{
  name        = "fw-{g}"
  droplet_ids = [{droplet_ids}]
  inbound_rule {{
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = ["0.0.0.0/0"]
  }}
}}

resource "aws_key_pair" "deploy" {{
  key_name   = "deploy-${{berth.env}}"
  public_key = file("client_key.pub")
}}

resource "aws_security_group" "sg" {{
  name        = "web-${{berth.env}}"
  description = "crash test"
  ingress {{
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["10.0.0.0/8"]
  }}
}}
"#,
        docker = p.docker,
        digitalocean = p.digitalocean,
        ec2 = p.ec2,
        gitlab = p.gitlab,
        droplet_ids = (0..DROPLETS)
            .map(|i| format!("digitalocean_droplet.d{i}.id"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for i in 0..CONTAINERS {
        // The first one or two are replaced every generation.
        let churn = if i < churn() { g } else { 0 };
        hcl.push_str(&format!(
            r#"
resource "docker_container" "web{i}" {{
  name     = "berth-it-${{berth.env}}-web{i}"
  image    = docker_image.app.image_id
  replicas = 2
  env      = ["GEN={churn}"]
  networks_advanced {{
    name = docker_network.net.name
  }}
  destroy_grace_seconds = 1
}}
"#
        ));
    }
    for i in 0..SSH_CONTAINERS {
        let churn = if i < 1 { g } else { 0 };
        hcl.push_str(&format!(
            r#"
resource "docker_container" "ssh{i}" {{
  name  = "berth-it-${{berth.env}}-ssh{i}"
  image = docker_image.app.image_id
  env   = ["GEN={churn}"]
  labels {{
    label = "test.via"
    value = "ssh"
  }}
  networks_advanced {{
    name = docker_network.ssh_net.name
  }}
  destroy_grace_seconds = 1
  host {{
    address     = "127.0.0.1"
    port        = {ssh_port}
    private_key = file("client_key")
  }}
}}
"#
        ));
    }
    for i in 0..DROPLETS {
        let churn = if i < churn() { g } else { 0 };
        hcl.push_str(&format!(
            r#"
resource "digitalocean_droplet" "d{i}" {{
  name      = "d{i}-${{berth.env}}"
  image     = "ubuntu-24-04-x64"
  size      = "s-1vcpu-1gb"
  region    = "nyc3"
  ssh_keys  = [digitalocean_ssh_key.deploy.fingerprint]
  user_data = "gen-{churn}"
}}
"#
        ));
    }
    for i in 0..INSTANCES {
        let churn = if i < 1 { g } else { 0 };
        hcl.push_str(&format!(
            r#"
resource "aws_instance" "i{i}" {{
  ami                         = "{ami}"
  instance_type               = "t3.micro"
  key_name                    = aws_key_pair.deploy.key_name
  vpc_security_group_ids      = [aws_security_group.sg.id]
  user_data                   = "gen-{churn}"
  user_data_replace_on_change = true
  tags = {{
    Name = "i{i}"
  }}
}}
"#,
            ami = p.ami
        ));
    }
    for i in 0..VARIABLES {
        // Variable 0 changes its key (replaced), 1 to 3 their value
        // (updated in place), the rest stay.
        let key = if i == 0 {
            format!("V0_GEN{g}")
        } else {
            format!("V{i}")
        };
        let value = if (1..4).contains(&i) {
            format!("value-{i}-{g}")
        } else {
            format!("value-{i}")
        };
        let project = 1 + i % 2;
        hcl.push_str(&format!(
            r#"
resource "gitlab_project_variable" "v{i}" {{
  project = {project}
  key     = "{key}"
  value   = "{value}"
}}
"#
        ));
    }
    hcl
}

/// What the configuration of generation `gen` should leave in the world:
/// object kind and berth address (with the replica) -> 1.
fn expected(env: &str, generation: u64) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut put = |k: String| {
        out.insert(k, 1);
    };
    put("docker network docker_network.net".into());
    put("docker network docker_network.ssh_net".into());
    put("docker image docker_image.app".into());
    for i in 0..CONTAINERS {
        // Replicas are numbered from 1; a single container has no number.
        for r in 1..=2 {
            put(format!("docker container docker_container.web{i}#{r}"));
        }
    }
    for i in 0..SSH_CONTAINERS {
        put(format!("docker container docker_container.ssh{i}#"));
    }
    put(format!("do ssh key deploy-{env}"));
    put("do firewall digitalocean_firewall__fw".into());
    for i in 0..DROPLETS {
        put(format!("do droplet digitalocean_droplet__d{i}"));
    }
    put("ec2 key-pair aws_key_pair.deploy".into());
    put("ec2 security-group aws_security_group.sg".into());
    for i in 0..INSTANCES {
        put(format!("ec2 instance aws_instance.i{i}"));
    }
    for i in 0..VARIABLES {
        let key = if i == 0 {
            format!("V0_GEN{generation}")
        } else {
            format!("V{i}")
        };
        put(format!("gitlab {}|{key}|*", 1 + i % 2));
    }
    out
}

struct World {
    do_double: do_double::Double,
    gitlab: gl_double::Double,
    moto: Moto,
    runtime: tokio::runtime::Runtime,
}

/// Every object of the test found in the world, by kind and address.
fn reality(w: &World, env: &str) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    let mut add = |k: String| *out.entry(k).or_default() += 1;
    let filter = format!("label=berth.env={env}");
    for line in docker(&[
        "ps",
        "-a",
        "--filter",
        &filter,
        "--format",
        "{{.Label \"berth.address\"}}#{{.Label \"berth.replica\"}}",
    ])
    .lines()
    {
        add(format!("docker container {line}"));
    }
    for line in docker(&[
        "network",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Label \"berth.address\"}}",
    ])
    .lines()
    {
        add(format!("docker network {line}"));
    }
    for id in docker(&["images", "-q", "--no-trunc", "--filter", &filter]).lines() {
        let address = docker(&[
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"berth.address\"}}",
            id,
        ]);
        add(format!("docker image {}", address.trim()));
    }
    w.runtime.block_on(async {
        let client = reqwest::Client::new();
        let get = |path: &str| {
            let req = client
                .get(format!("{}{path}", w.do_double.base))
                .bearer_auth(&w.do_double.token);
            async move {
                req.send()
                    .await
                    .expect("DO double")
                    .json::<Value>()
                    .await
                    .expect("json")
            }
        };
        let droplets = get("/v2/droplets?per_page=200").await;
        for d in droplets["droplets"].as_array().into_iter().flatten() {
            let addr = tag_value(&d["tags"], "berth-addr:");
            add(format!("do droplet {addr}"));
        }
        let firewalls = get("/v2/firewalls?per_page=200").await;
        for f in firewalls["firewalls"].as_array().into_iter().flatten() {
            let addr = tag_value(&f["tags"], "berth-fw-addr:");
            add(format!("do firewall {addr}"));
        }
        let keys = get("/v2/account/keys?per_page=200").await;
        for k in keys["ssh_keys"].as_array().into_iter().flatten() {
            add(format!("do ssh key {}", k["name"].as_str().unwrap_or("")));
        }

        // EC2: what is alive, and the berth:address tag of each.
        let e = &w.moto.endpoint;
        let tags = ec2(
            e,
            &[
                ("Action", "DescribeTags"),
                ("Filter.1.Name", "key"),
                ("Filter.1.Value.1", "berth:address"),
                ("MaxResults", "1000"),
            ],
        )
        .await;
        let ids = xml_values(&tags, "resourceId");
        let values = xml_values(&tags, "value");
        let address: BTreeMap<String, String> = ids.into_iter().zip(values).collect();
        let live = ec2(
            e,
            &[
                ("Action", "DescribeInstances"),
                ("Filter.1.Name", "instance-state-name"),
                ("Filter.1.Value.1", "pending"),
                ("Filter.1.Value.2", "running"),
                ("Filter.1.Value.3", "stopping"),
                ("Filter.1.Value.4", "stopped"),
            ],
        )
        .await;
        let mut instances = xml_values(&live, "instanceId");
        instances.sort();
        instances.dedup();
        for id in instances {
            add(format!(
                "ec2 instance {}",
                address.get(&id).map_or("", String::as_str)
            ));
        }
        let keys = ec2(e, &[("Action", "DescribeKeyPairs")]).await;
        for id in xml_values(&keys, "keyPairId") {
            add(format!(
                "ec2 key-pair {}",
                address.get(&id).map_or("", String::as_str)
            ));
        }
        let groups = ec2(e, &[("Action", "DescribeSecurityGroups")]).await;
        let mut gids = xml_values(&groups, "groupId");
        gids.sort();
        gids.dedup();
        for id in gids {
            // The VPC's default group is moto's, not berth's.
            if let Some(a) = address.get(&id) {
                add(format!("ec2 security-group {a}"));
            }
        }
    });
    for project in [1, 2] {
        for v in w.gitlab.vars(project) {
            add(format!(
                "gitlab {project}|{}|{}",
                v.key, v.environment_scope
            ));
        }
    }
    out
}

fn tag_value(tags: &Value, prefix: &str) -> String {
    tags.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|t| t.strip_prefix(prefix))
        .unwrap_or("")
        .to_owned()
}

/// Duplicates (extra objects of a configured address) and orphans
/// (objects of no configured address), and the missing ones.
fn compare(
    expected: &BTreeMap<String, usize>,
    found: &BTreeMap<String, usize>,
) -> (usize, usize, Vec<String>) {
    let mut duplicates = 0;
    let mut orphans = 0;
    let mut problems = Vec::new();
    for (k, n) in found {
        match expected.get(k) {
            Some(want) if n > want => {
                duplicates += n - want;
                problems.push(format!("duplicated x{n}: {k}"));
            }
            Some(_) => {}
            None => {
                orphans += n;
                problems.push(format!("orphaned x{n}: {k}"));
            }
        }
    }
    for k in expected.keys() {
        if !found.contains_key(k) {
            problems.push(format!("missing: {k}"));
        }
    }
    (duplicates, orphans, problems)
}

/// The local engine's socket: `DOCKER_HOST` if it is a `unix://` one, else
/// Docker's default.
fn engine_socket() -> std::path::PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(std::path::PathBuf::from))
        .unwrap_or_else(|| {
            berth_docker::DEFAULT_HOST
                .trim_start_matches("unix://")
                .into()
        })
}

/// `berth destroy`, which must succeed; on failure the panic shows what is
/// still attached to the test's networks.
fn destroy(t: &TestEnv) {
    let run = t.run(&["destroy", "--auto-approve"]);
    if !run.success() {
        let attached = docker(&[
            "network",
            "inspect",
            "--format",
            "{{.Name}}: {{range $id, $c := .Containers}}{{$c.Name}} {{end}}",
            &format!("berth-it-{}", t.env),
            &format!("berth-it-{}-ssh", t.env),
        ]);
        let all = docker(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}} {{.Status}} {{.Labels}}",
            "--filter",
            &format!("name={}", t.env),
        ]);
        panic!(
            "destroy failed\n--- stderr ---\n{}\n--- attached ---\n{attached}\n--- containers ---\n{all}",
            run.stderr
        );
    }
}

/// After a SIGKILL the lock is the dead apply's: `plan` must refuse,
/// naming it as stale, and `force-unlock` with its id must remove it.
fn unlock_stale(t: &TestEnv) {
    let run = t.run(&["plan"]);
    assert_ne!(
        run.status, 0,
        "a killed apply left no lock:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("no longer running"),
        "the lock is reported as stale: {}",
        run.stderr
    );
    let id = run
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("ID:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("the lock id in the message: {}", run.stderr));
    t.run(&["force-unlock", &id]).ok();
}

#[test]
fn sigkill_at_twenty_points_leaves_no_duplicate_and_no_orphan() {
    let begin = Instant::now();
    let kills_wanted: usize = if long_form() { 60 } else { 20 };
    let mut rng = Rng::new(seed(0x5eed_0001));

    let rt = runtime();
    let mut sshd = Sshd::started();
    let mut t = TestEnv::new("r1-crash");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    write_demo_context(&t);
    t.write("client_key", &sshd.client_key());
    t.write(
        "client_key.pub",
        &std::fs::read_to_string(sshd.path("client.pub")).expect("client.pub"),
    );

    let do_options = do_double::Options {
        polls_until_active: Some(0),
        polls_until_gone: 0,
        action_polls: 0,
        ..do_double::Options::default()
    };
    let (do_double, gitlab, moto) = rt.block_on(async {
        (
            do_double::Double::start(do_options).await,
            gl_double::Double::start().await,
            Moto::start().await,
        )
    });
    let ami = rt.block_on(amazon_linux_ami(&moto.endpoint));
    let plan = Arc::new(KillPlan {
        killer: Killer::default(),
        seen: AtomicU64::new(0),
        target: AtomicU64::new(0),
        mode: Mutex::new(Mode::Before),
        service: Mutex::new(None),
        round: Mutex::new(BTreeMap::new()),
        total: Mutex::new(BTreeMap::new()),
    });
    let sockets = tempfile::Builder::new()
        .prefix("berth-it-sock-")
        .tempdir()
        .expect("tempdir");
    let tcp = || Endpoint::Tcp("127.0.0.1:0".into());
    let upstream = |base: &str| {
        Endpoint::Tcp(
            base.trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let policy: Arc<dyn Policy> = plan.clone();
    let (docker_proxy, do_proxy, ec2_proxy, gl_proxy) = rt.block_on(async {
        (
            Proxy::start(
                "docker",
                Endpoint::Unix(sockets.path().join("docker.sock")),
                Endpoint::Unix(engine_socket()),
                policy.clone(),
            )
            .await,
            Proxy::start(
                "digitalocean",
                tcp(),
                upstream(&do_double.base),
                policy.clone(),
            )
            .await,
            Proxy::start(
                "moto",
                tcp(),
                Endpoint::Tcp(moto.addr.clone()),
                policy.clone(),
            )
            .await,
            Proxy::start("gitlab", tcp(), upstream(&gitlab.base_url), policy.clone()).await,
        )
    });
    let ports = Ports {
        docker: docker_proxy.url.clone(),
        ssh_port: sshd.port,
        digitalocean: do_proxy.url.clone(),
        ec2: ec2_proxy.url.clone(),
        gitlab: format!("{}/api/v4", gl_proxy.url),
        ami,
    };
    t.set_env("DIGITALOCEAN_TOKEN", &do_double.token);
    t.set_env("TEST_GITLAB_TOKEN", gl_double::TOKEN);
    t.set_env("AWS_ACCESS_KEY_ID", "testing");
    t.set_env("AWS_SECRET_ACCESS_KEY", "testing");
    let world = World {
        do_double,
        gitlab,
        moto,
        runtime: rt,
    };

    // Kill points aimed at creates rotate over the HTTP services; the
    // others count every mutation. How many matching requests a round
    // makes is learnt as rounds run (first guesses measured once).
    const SERVICES: [&str; 4] = ["docker", "digitalocean", "moto", "gitlab"];
    let mut estimates: BTreeMap<(bool, Option<&str>), u64> = BTreeMap::from([
        ((true, None), 46),
        ((false, None), 28),
        ((true, Some("docker")), 13),
        ((false, Some("docker")), 3),
        ((true, Some("digitalocean")), 8),
        ((false, Some("digitalocean")), 1),
        ((true, Some("moto")), 6),
        ((false, Some("moto")), 1),
        ((true, Some("gitlab")), 9),
        ((false, Some("gitlab")), 1),
    ]);
    let mut kills = 0usize;
    let mut aimed = 0usize;
    let mut report: Vec<String> = Vec::new();
    let mut by_mode: BTreeMap<String, usize> = BTreeMap::new();
    let (mut duplicates, mut orphans) = (0usize, 0usize);
    let mut rounds = 0u64;
    while kills < kills_wanted {
        rounds += 1;
        assert!(
            rounds <= 3 * kills_wanted as u64,
            "too many rounds without a kill"
        );
        // Every tenth round starts from nothing, so that kills also land
        // on the creates of objects that later rounds only keep.
        let scratch = rounds % 10 == 1;
        if scratch && rounds > 1 {
            destroy(&t);
            let left = reality(&world, &t.env);
            assert!(left.is_empty(), "destroy left: {left:?}");
        }
        let round_began = Instant::now();
        let generation = rounds;
        t.write_config(&config(&ports, generation));
        let mode = match rng.below(10) {
            0..=4 => Mode::AfterUpstream,
            5..=7 => Mode::Before,
            _ => Mode::SshStep,
        };
        let service = if mode == Mode::AfterUpstream {
            aimed += 1;
            Some(SERVICES[aimed % SERVICES.len()])
        } else {
            None
        };
        let estimate = estimates.get(&(scratch, service)).copied().unwrap_or(1);
        let target = 1 + rng.below(estimate.max(1));
        let ssh_delay = Duration::from_millis(rng.below(400));
        plan.arm(target, mode, service);
        let run = plan.killer.spawn(
            t.command(&["apply", "--auto-approve"]),
            move |line: &str, killer: &Killer| {
                if mode == Mode::SshStep
                    && line.starts_with("docker_container.ssh")
                    && (line.contains("Creating...") || line.contains("Destroying..."))
                    && !killer.killed()
                {
                    let killer = killer.clone();
                    let step = line.to_owned();
                    std::thread::spawn(move || {
                        std::thread::sleep(ssh_delay);
                        killer.kill(format!("{} ms into `{step}`", ssh_delay.as_millis()));
                    });
                }
            },
        );
        let (code, log) = run.wait(Duration::from_secs(300));
        let killed = plan.killer.killed();
        let why = plan.killer.why.lock().expect("why").clone();
        plan.killer.disarm();
        plan.disarm();
        let aim = service.map_or("any mutation".to_owned(), |s| format!("{s} create"));
        if killed {
            kills += 1;
            *by_mode.entry(format!("{mode:?}")).or_default() += 1;
            report.push(format!(
                "kill {kills:2} (round {rounds}{}, {aim} #{target}): {why}",
                if scratch { ", from nothing" } else { "" }
            ));
            unlock_stale(&t);
        } else {
            assert_eq!(code, Some(0), "an apply that was not killed failed:\n{log}");
        }
        let converge = t.run(&["apply", "--auto-approve"]);
        assert!(
            converge.success(),
            "round {rounds}: the apply after `{why}` does not converge\n--- stdout ---\n{}\n--- stderr ---\n{}",
            converge.stdout,
            converge.stderr
        );
        let (made, _) = plan.made(None);
        let (_, created) = plan.made(service);
        estimates.insert(
            (scratch, service),
            if service.is_some() { created } else { made },
        );
        eprintln!(
            "R1 round {rounds} ({:.1} s): {made} mutating requests, {created} of them {aim}; {}",
            round_began.elapsed().as_secs_f64(),
            if killed { why.as_str() } else { "not killed" }
        );
        let noop = t.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(
            noop.status, 0,
            "round {rounds}: state does not match reality after `{why}`:\n{}\n{}",
            noop.stdout, noop.stderr
        );
        let found = reality(&world, &t.env);
        let (d, o, problems) = compare(&expected(&t.env, generation), &found);
        duplicates += d;
        orphans += o;
        assert!(
            problems.is_empty(),
            "round {rounds} after `{why}`:\n{}",
            problems.join("\n")
        );
    }

    destroy(&t);
    let left = reality(&world, &t.env);
    assert!(left.is_empty(), "destroy left: {left:?}");
    sshd.stop();

    let services = plan.total.lock().expect("counts").clone();
    println!("R1 crash safety: seed {:#x}", seed(0x5eed_0001));
    for line in &report {
        println!("  {line}");
    }
    println!(
        "R1: {kills} kills survived in {rounds} rounds ({by_mode:?}); {duplicates} duplicated, \
         {orphans} orphaned; mutating requests seen {services:?}; {:.0} s",
        begin.elapsed().as_secs_f64()
    );
}
