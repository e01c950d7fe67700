//! R2 faults (issue #7): applies through APIs that fail. A fault-injecting
//! [`Proxy`] sits in front of moto (EC2), the DigitalOcean double and the
//! GitLab double; at a seeded rate (5 % to 50 %) it answers 429 with and
//! without `Retry-After`, 500, 502 or 503 in the server's place, resets
//! the connection, holds the answer past berth's request timeout
//! (`BERTH_HTTP_TIMEOUT=2`; the server did act), or cuts the body short
//! (the server did act). The doubles' own knobs add theirs: the
//! DigitalOcean double's 429 every 7th request (`Retry-After: 1`) and 500s
//! at half the rate, the GitLab double's 429 bursts.
//!
//! Each phase adds resources and updates existing ones in place (nothing
//! is replaced, so no state record may disappear). With faults on, the
//! apply must either converge or fail with errors that each name a
//! resource of the file; every address state recorded before is still
//! recorded after. With faults off, the next apply must converge, a plan
//! must be empty, and the objects counted by tags must be exactly the
//! configured ones (no duplicate from a retried or lost create, no
//! orphan). Faults per kind, retries (berth's `retrying` log lines) and
//! outcomes are printed (run with `--nocapture`) and recorded in
//! RELIABILITY.md.
//!
//! Short form (CI): rates 5 %, 20 %, 50 %. `BERTH_RELIABILITY=long`: 5 %,
//! 10 %, 20 %, 30 %, 40 %, 50 %, twice each.

#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/digitalocean/tests/double/mod.rs"]
mod do_double;
#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/gitlab/tests/double/mod.rs"]
mod gl_double;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::TestEnv;
use crate::reliability_support::{
    Action, After, Endpoint, Moto, Policy, Proxy, Rng, Seen, amazon_linux_ami, ec2, long_form,
    runtime, seed, xml_values,
};

/// berth's request timeout in this test (seconds), and how long a "slow"
/// answer is held: past it.
const TIMEOUT_SECS: u64 = 2;
const SLOW: Duration = Duration::from_millis(2600);

const KINDS: [&str; 9] = [
    "429 Retry-After",
    "429",
    "500",
    "502",
    "503",
    "reset",
    "slow",
    "truncated",
    // Weighs the answers a server gives when it is overloaded.
    "503",
];

/// Injects faults at a rate, counting them by kind.
struct Faults {
    rate: Mutex<f64>,
    rng: Mutex<Rng>,
    injected: Mutex<BTreeMap<String, u64>>,
    requests: Mutex<u64>,
}

impl Policy for Faults {
    fn decide(&self, seen: &Seen<'_>) -> Action {
        *self.requests.lock().expect("requests") += 1;
        let rate = *self.rate.lock().expect("rate");
        let (hit, pick, wait) = {
            let mut rng = self.rng.lock().expect("rng");
            (
                rng.unit() < rate,
                rng.below(KINDS.len() as u64),
                rng.below(2),
            )
        };
        if !hit {
            return Action::Forward(After::Send);
        }
        let kind = KINDS[pick as usize];
        *self
            .injected
            .lock()
            .expect("injected")
            .entry(format!("{kind} ({})", seen.service))
            .or_default() += 1;
        match kind {
            "429 Retry-After" => Action::Answer {
                status: 429,
                retry_after: Some(wait),
            },
            "429" => Action::Answer {
                status: 429,
                retry_after: None,
            },
            "500" | "502" | "503" => Action::Answer {
                status: kind.parse().unwrap_or(500),
                retry_after: None,
            },
            "reset" => Action::Reset,
            "slow" => Action::Forward(After::Delay(SLOW)),
            _ => Action::Forward(After::Truncate),
        }
    }
}

struct Ports {
    digitalocean: String,
    ec2: String,
    gitlab: String,
    ami: String,
}

/// Phase `g` (from 1): `2g` droplets, `g + 1` instances, `3g` variables,
/// a key pair and a security group; every phase updates the earlier ones
/// in place (droplet tags, instance tags, variable values).
fn config(p: &Ports, g: usize) -> String {
    let mut hcl = format!(
        r#"
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

resource "aws_key_pair" "deploy" {{
  key_name   = "deploy-${{berth.env}}"
  public_key = file("client_key.pub")
}}

resource "aws_security_group" "web" {{
  name        = "web-${{berth.env}}"
  description = "fault test"
  ingress {{
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["10.0.0.0/8"]
  }}
}}
"#,
        digitalocean = p.digitalocean,
        ec2 = p.ec2,
        gitlab = p.gitlab,
    );
    for i in 0..2 * g {
        hcl.push_str(&format!(
            r#"
resource "digitalocean_droplet" "d{i}" {{
  name   = "d{i}-${{berth.env}}"
  image  = "ubuntu-24-04-x64"
  size   = "s-1vcpu-1gb"
  region = "nyc3"
  tags   = ["phase-{g}"]
}}
"#
        ));
    }
    for i in 0..=g {
        hcl.push_str(&format!(
            r#"
resource "aws_instance" "i{i}" {{
  ami                    = "{ami}"
  instance_type          = "t3.micro"
  key_name               = aws_key_pair.deploy.key_name
  vpc_security_group_ids = [aws_security_group.web.id]
  tags = {{
    Phase = "{g}"
  }}
}}
"#,
            ami = p.ami
        ));
    }
    for i in 0..3 * g {
        hcl.push_str(&format!(
            r#"
resource "gitlab_project_variable" "v{i}" {{
  project = {project}
  key     = "V{i}"
  value   = "phase-{g}"
}}
"#,
            project = 1 + i % 2
        ));
    }
    hcl
}

fn expected(g: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in 0..2 * g {
        out.insert(format!("do droplet digitalocean_droplet__d{i}"), 1);
    }
    for i in 0..=g {
        out.insert(format!("ec2 instance aws_instance.i{i}"), 1);
    }
    out.insert("ec2 key-pair aws_key_pair.deploy".into(), 1);
    out.insert("ec2 security-group aws_security_group.web".into(), 1);
    for i in 0..3 * g {
        out.insert(format!("gitlab {}|V{i}|*", 1 + i % 2), 1);
    }
    out
}

struct World {
    do_double: do_double::Double,
    gitlab: gl_double::Double,
    moto: Moto,
    runtime: tokio::runtime::Runtime,
}

/// The objects found, by kind and berth address (straight to the servers,
/// not through the proxies).
fn reality(w: &World) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    let mut add = |k: String| *out.entry(k).or_default() += 1;
    w.runtime.block_on(async {
        let droplets: Value = reqwest::Client::new()
            .get(format!("{}/v2/droplets?per_page=200", w.do_double.base))
            .bearer_auth(&w.do_double.token)
            .send()
            .await
            .expect("DO double")
            .json()
            .await
            .expect("json");
        for d in droplets["droplets"].as_array().into_iter().flatten() {
            let addr = d["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find_map(|t| t.strip_prefix("berth-addr:"))
                .unwrap_or("");
            add(format!("do droplet {addr}"));
        }
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
        let address: BTreeMap<String, String> = xml_values(&tags, "resourceId")
            .into_iter()
            .zip(xml_values(&tags, "value"))
            .collect();
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
        let ids: BTreeSet<String> = xml_values(&live, "instanceId").into_iter().collect();
        for id in ids {
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
        let gids: BTreeSet<String> = xml_values(&groups, "groupId").into_iter().collect();
        for id in gids {
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

fn state_addresses(t: &TestEnv) -> BTreeSet<String> {
    let run = t.run(&["state", "list"]).ok();
    run.stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How many `retrying` lines berth logged.
fn retries(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains("retrying")).count()
}

#[test]
fn faults_from_5_to_50_percent_converge_or_fail_naming_the_resource_and_lose_nothing() {
    let begin = Instant::now();
    let base_seed = seed(0x5eed_0002);
    let rates: Vec<f64> = if long_form() {
        [0.05, 0.1, 0.2, 0.3, 0.4, 0.5]
            .iter()
            .flat_map(|r| [*r, *r])
            .collect()
    } else {
        vec![0.05, 0.2, 0.5]
    };
    let rt = runtime();
    let mut t = TestEnv::new("r2-faults");
    let key = t.path().join("client_key");
    crate::common::ssh_keygen(&key, "ed25519");
    let (do_double, gitlab, moto) = rt.block_on(async {
        (
            do_double::Double::start(do_double::Options {
                polls_until_active: Some(0),
                polls_until_gone: 0,
                action_polls: 0,
                ..do_double::Options::default()
            })
            .await,
            gl_double::Double::start().await,
            Moto::start().await,
        )
    });
    let ami = rt.block_on(amazon_linux_ami(&moto.endpoint));
    let faults = Arc::new(Faults {
        rate: Mutex::new(0.0),
        rng: Mutex::new(Rng::new(base_seed)),
        injected: Mutex::new(BTreeMap::new()),
        requests: Mutex::new(0),
    });
    let policy: Arc<dyn Policy> = faults.clone();
    let tcp = || Endpoint::Tcp("127.0.0.1:0".into());
    let host = |base: &str| {
        Endpoint::Tcp(
            base.trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let (do_proxy, ec2_proxy, gl_proxy) = rt.block_on(async {
        (
            Proxy::start("digitalocean", tcp(), host(&do_double.base), policy.clone()).await,
            Proxy::start(
                "moto",
                tcp(),
                Endpoint::Tcp(moto.addr.clone()),
                policy.clone(),
            )
            .await,
            Proxy::start("gitlab", tcp(), host(&gitlab.base_url), policy.clone()).await,
        )
    });
    let ports = Ports {
        digitalocean: do_proxy.url.clone(),
        ec2: ec2_proxy.url.clone(),
        gitlab: format!("{}/api/v4", gl_proxy.url),
        ami,
    };
    t.set_env("DIGITALOCEAN_TOKEN", &do_double.token);
    t.set_env("TEST_GITLAB_TOKEN", gl_double::TOKEN);
    t.set_env("AWS_ACCESS_KEY_ID", "testing");
    t.set_env("AWS_SECRET_ACCESS_KEY", "testing");
    t.set_env("BERTH_HTTP_TIMEOUT", &TIMEOUT_SECS.to_string());
    t.set_env("BERTH_LOG", "warn,berth_provider=info");
    let world = World {
        do_double,
        gitlab,
        moto,
        runtime: rt,
    };

    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total_retries = 0usize;
    let mut lines = Vec::new();
    let mut double_faults = 0u64;
    for (phase, rate) in rates.iter().enumerate() {
        let g = phase + 1;
        t.write_config(&config(&ports, g));
        let before = state_addresses(&t);

        *faults.rate.lock().expect("rate") = *rate;
        world.do_double.set_fail_rate(rate / 2.0);
        world.do_double.set_rate_limit_every(Some(7));
        world.gitlab.throttle(2);
        let injected_before: u64 = faults.injected.lock().expect("i").values().sum();
        let do_before = world.do_double.injected_failures() + world.do_double.rate_limited();
        let faulted = t.run(&["apply", "--auto-approve"]);
        *faults.rate.lock().expect("rate") = 0.0;
        world.do_double.set_fail_rate(0.0);
        world.do_double.set_rate_limit_every(None);
        world.gitlab.throttle(0);
        let injected_now: u64 = faults.injected.lock().expect("i").values().sum();
        let from_double =
            world.do_double.injected_failures() + world.do_double.rate_limited() - do_before;
        double_faults += from_double;
        let retried = retries(&faulted.stderr);
        total_retries += retried;

        let outcome = if faulted.success() {
            "converged"
        } else {
            // Every error names a resource of the file (an address, or the
            // type whose refresh failed), or is the count of failures.
            let errors: Vec<&str> = faulted
                .stderr
                .lines()
                .filter(|l| l.starts_with("Error:"))
                .collect();
            assert!(
                !errors.is_empty(),
                "a failure without an error:\n{}",
                faulted.stderr
            );
            for e in &errors {
                let named = e.contains("resource(s) failed")
                    || [
                        "digitalocean_droplet",
                        "aws_instance",
                        "aws_key_pair",
                        "aws_security_group",
                        "gitlab_project_variable",
                    ]
                    .iter()
                    .any(|ty| e.contains(ty));
                assert!(
                    named,
                    "an error that names no resource: {e}\n{}",
                    faulted.stderr
                );
            }
            assert!(!faulted.stderr.contains("panicked"), "{}", faulted.stderr);
            "failed naming the resource"
        };
        *outcomes.entry(outcome).or_default() += 1;

        // Nothing recorded is lost.
        let after = state_addresses(&t);
        let lost: Vec<&String> = before.difference(&after).collect();
        assert!(lost.is_empty(), "phase {phase}: records lost: {lost:?}");

        // Faults off: the next apply converges, to exactly the file.
        let rerun = t.run(&["apply", "--auto-approve"]);
        assert!(
            rerun.success(),
            "phase {phase}: the apply after the faults does not converge\n{}\n{}",
            rerun.stdout,
            rerun.stderr
        );
        let noop = t.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(
            noop.status, 0,
            "phase {phase}: {}\n{}",
            noop.stdout, noop.stderr
        );
        let found = reality(&world);
        assert_eq!(found, expected(g), "phase {phase}: duplicates or orphans");
        let line = format!(
            "phase {phase} at {:.0} %: {} faults injected by the proxy, {from_double} by the \
             doubles, {retried} retries; {outcome}{}",
            rate * 100.0,
            injected_now - injected_before,
            if faulted.success() {
                String::new()
            } else {
                format!(
                    " ({})",
                    faulted
                        .stderr
                        .lines()
                        .find(|l| l.starts_with("Error:") && !l.contains("resource(s) failed"))
                        .unwrap_or("")
                        .chars()
                        .take(240)
                        .collect::<String>()
                )
            }
        );
        eprintln!("R2 {line}");
        lines.push(line);
    }
    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(reality(&world).is_empty(), "destroy left objects");
    world.do_double.assert_spec_clean();

    println!("R2 faults: seed {base_seed:#x}");
    for l in &lines {
        println!("  {l}");
    }
    println!(
        "R2: {} requests through the proxies; injected {:?}; {double_faults} by the doubles' \
         knobs; {total_retries} retries; outcomes {outcomes:?}; {:.0} s",
        faults.requests.lock().expect("requests"),
        faults.injected.lock().expect("injected"),
        begin.elapsed().as_secs_f64()
    );
}
