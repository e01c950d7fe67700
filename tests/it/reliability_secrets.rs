//! R5 secrets (RELIABILITY.md): distinctive secret values seeded into every
//! sensitive place at once — sensitive variables, the GitLab, DigitalOcean
//! and AWS provider credentials, a registry password, GitLab CI variable
//! values, an encrypted SSH private key and its passphrase, the remote
//! state's password and the state's HMAC key — then every byte berth
//! writes or prints is searched: stdout and stderr at the most verbose log
//! level (`-vv`, `BERTH_LOG=trace`), JSON output, the saved plan file, the
//! local state directory, every state body the remote store received, and
//! the errors of API calls made to fail (401 for wrong credentials, 500
//! from the server, unreachable stores). The figure is the number of hits:
//! it must be 0.

#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/gitlab/tests/double/mod.rs"]
mod gl_double;

#[allow(clippy::duplicate_mod, unused_imports)]
#[path = "../../providers/digitalocean/tests/double/mod.rs"]
mod do_double;

#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../state/tests/remote/gitlab_fake.rs"]
mod gitlab_fake;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{DockerCleanup, Sshd, TestEnv, free_port};

const VAR_SECRET: &str = "R5-sensitive-variable-6d1f0a";
const CI_VALUE: &str = "R5-ci-variable-value-0b77e2";
const DO_TOKEN: &str = "dop_v1_R5-digitalocean-token-9c4e";
const AWS_SECRET: &str = "R5-aws-secret-access-key-51aa7d";
const REGISTRY_PASSWORD: &str = "R5-registry-password-e2c9";
const STATE_PASSWORD: &str = "R5-remote-state-password-31f8";
const STATE_KEY: &str = "R5-state-hmac-key-7a0c55d2";
const PASSPHRASE: &str = "R5-ssh-key-passphrase-48be";
const WRONG_GITLAB: &str = "glpat-R5-wrong-gitlab-token-aa01";
const WRONG_DO: &str = "dop_v1_R5-wrong-do-token-bb02";
const PG_PASSWORD: &str = "R5-pg-password-cc03";
const S3_SECRET: &str = "R5-s3-secret-key-dd04";

/// moto's `moto_server` on a free port, killed by PID on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        let bin = std::env::var_os("BERTH_MOTO_SERVER").map_or_else(
            || PathBuf::from(home).join(".cache/berth-moto-venv/bin/moto_server"),
            PathBuf::from,
        );
        assert!(
            bin.exists(),
            "{} is missing: run scripts/ensure-test-deps.sh",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let begin = Instant::now();
        while crate::common::http_get(port, "/moto-api/").is_none_or(|(s, _)| s != 200) {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited with {status}");
            }
            assert!(begin.elapsed() < Duration::from_secs(60), "moto is silent");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything berth printed or wrote, and where it came from.
#[derive(Default)]
struct Seen {
    parts: Vec<(String, Vec<u8>)>,
}

impl Seen {
    fn add(&mut self, what: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.parts.push((what.into(), bytes.into()));
    }

    /// Runs berth, keeps both streams; returns the run.
    fn run(&mut self, t: &TestEnv, args: &[&str]) -> crate::common::Run {
        let begin = Instant::now();
        let run = t.run(args);
        // Arguments may carry a secret: label runs by their first two.
        let label = args.iter().take(2).copied().collect::<Vec<_>>().join(" ");
        println!(
            "R5 `{label}`: exit {} in {:.1} s{}",
            run.status,
            begin.elapsed().as_secs_f64(),
            if run.status == 0 {
                String::new()
            } else {
                format!(
                    ": {}",
                    run.stderr
                        .lines()
                        .filter(|l| l.starts_with("Error"))
                        .collect::<Vec<_>>()
                        .join(" | ")
                )
            }
        );
        self.add(format!("stdout of `{label}`"), run.stdout.clone());
        self.add(format!("stderr of `{label}`"), run.stderr.clone());
        run
    }

    /// Every (secret, place) where a secret occurs.
    fn hits(&self, secrets: &[&str]) -> Vec<String> {
        let mut hits = Vec::new();
        for secret in secrets {
            for (what, bytes) in &self.parts {
                let n = bytes
                    .windows(secret.len())
                    .filter(|w| *w == secret.as_bytes())
                    .count();
                if n > 0 {
                    let text = String::from_utf8_lossy(bytes);
                    let at = text.find(secret).unwrap_or(0);
                    let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
                    hits.push(format!(
                        "{secret} x{n} in {what}, in the line starting {:?}",
                        &text[from..at]
                    ));
                }
            }
        }
        hits
    }

    fn bytes(&self) -> usize {
        self.parts.iter().map(|(_, b)| b.len()).sum()
    }
}

fn all_files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
}

/// An encrypted ed25519 key at `path` (with `.pub`); its private text.
fn encrypted_key(path: &Path) -> String {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = Command::new("ssh-keygen")
        .args([
            "-q", "-C", "berth-r5", "-t", "ed25519", "-N", PASSPHRASE, "-f",
        ])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    std::fs::read_to_string(path).expect("key")
}

fn config(gitlab: &str, digitalocean: &str, ec2: &str, sshd_port: u16, host_key: &str) -> String {
    format!(
        r#"
backend "http" {{}}

variable "db_password" {{
  type      = string
  sensitive = true
}}

variable "ci_value" {{
  type      = string
  sensitive = true
}}

variable "registry_password" {{
  type      = string
  sensitive = true
}}

variable "ssh_key" {{
  type      = string
  sensitive = true
}}

variable "ssh_passphrase" {{
  type      = string
  sensitive = true
}}

provider "gitlab" {{
  base_url = "{gitlab}"
  token    = env("R5_GITLAB_TOKEN")
}}

provider "digitalocean" {{
  api_endpoint = "{digitalocean}"
  token        = env("R5_DO_TOKEN")
}}

provider "aws" {{
  region     = "eu-west-1"
  access_key = "AKIAR5TESTACCESSKEY"
  secret_key = env("R5_AWS_SECRET")
  endpoints {{
    ec2 = "{ec2}"
  }}
}}

provider "docker" {{
  registry_auth {{
    address  = "registry.invalid:5000"
    username = "r5-user"
    password = var.registry_password
  }}
}}

resource "gitlab_project_variable" "password" {{
  project   = 1
  key       = "DB_PASSWORD"
  value     = var.db_password
  masked    = true
  protected = true
}}

resource "gitlab_project_variable" "value" {{
  project = 1
  key     = "CI_VALUE"
  value   = var.ci_value
  hidden  = true
}}

resource "gitlab_project_variable" "deploy_key" {{
  project       = 1
  key           = "DEPLOY_KEY"
  value         = var.ssh_key
  variable_type = "file"
}}

resource "digitalocean_ssh_key" "deploy" {{
  name       = "r5-${{berth.env}}"
  public_key = file("deploy_key.pub")
}}

resource "aws_key_pair" "deploy" {{
  key_name   = "r5-${{berth.env}}"
  public_key = file("deploy_key.pub")
}}

resource "docker_network" "remote" {{
  name = "berth-it-${{berth.env}}"
  host {{
    address     = "127.0.0.1"
    port        = {sshd_port}
    user        = "root"
    private_key = var.ssh_key
    passphrase  = var.ssh_passphrase
    host_key    = "{host_key}"
  }}
}}

output "db_password" {{
  value     = var.db_password
  sensitive = true
}}
"#
    )
}

#[test]
fn seeded_secrets_appear_in_no_byte_berth_writes_or_prints() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let gl = runtime.block_on(gl_double::Double::start());
    let digitalocean = runtime.block_on(do_double::Double::start(do_double::Options {
        token: DO_TOKEN.to_owned(),
        ..do_double::Options::default()
    }));
    let state = runtime.block_on(gitlab_fake::FakeGitlab::start("r5-user", STATE_PASSWORD));
    let moto = Moto::start();

    let mut t = TestEnv::new("r5-secrets");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    // An sshd that accepts only the encrypted key.
    let mut sshd = Sshd::new();
    let key = encrypted_key(&sshd.path("client"));
    std::fs::copy(sshd.path("client.pub"), sshd.path("authorized_keys")).expect("authorize");
    sshd.start();
    std::fs::copy(sshd.path("client.pub"), t.path().join("deploy_key.pub")).expect("pub");
    let key_lines: Vec<String> = key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect();

    t.set_env("BERTH_LOG", "trace");
    t.set_env("BERTH_VAR_db_password", VAR_SECRET);
    t.set_env("BERTH_VAR_ci_value", CI_VALUE);
    t.set_env("BERTH_VAR_registry_password", REGISTRY_PASSWORD);
    t.set_env("BERTH_VAR_ssh_key", &key);
    t.set_env("BERTH_VAR_ssh_passphrase", PASSPHRASE);
    t.set_env("R5_GITLAB_TOKEN", gl_double::TOKEN);
    t.set_env("R5_DO_TOKEN", DO_TOKEN);
    t.set_env("R5_AWS_SECRET", AWS_SECRET);
    t.set_env("BERTH_HTTP_ADDRESS", &state.state_url("{env}"));
    t.set_env("BERTH_HTTP_USERNAME", "r5-user");
    t.set_env("BERTH_HTTP_PASSWORD", STATE_PASSWORD);
    t.set_env("BERTH_STATE_KEY", STATE_KEY);
    t.write_config(&config(
        &gl.base_url,
        &digitalocean.base,
        &moto.endpoint,
        sshd.port,
        &sshd.host_fingerprint(),
    ));

    let mut seen = Seen::default();
    let plan = seen.run(&t, &["-vv", "plan", "--out", "plan.bin"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("Plan: 6 to add"), "{}", plan.stdout);
    seen.run(&t, &["-vv", "plan", "--json"]);
    seen.run(&t, &["show", "--json", "plan.bin"]);
    seen.add(
        "the saved plan file",
        std::fs::read(t.path().join("plan.bin")).expect("plan file"),
    );
    let apply = seen.run(&t, &["-vv", "apply", "plan.bin"]);
    assert_eq!(apply.status, 0, "{}\n{}", apply.stdout, apply.stderr);
    assert!(
        apply.stderr.contains("TRACE") || apply.stderr.contains("DEBUG"),
        "the most verbose level logs"
    );
    for args in [
        &["-vv", "plan", "--detailed-exitcode"][..],
        &["state", "show", "gitlab_project_variable.password"],
        &["state", "show", "docker_network.remote"],
        &["state", "pull"],
        &["show"],
        &["show", "--json"],
        &["output"],
        &["output", "--json"],
    ] {
        let run = seen.run(&t, args);
        assert_eq!(run.status, 0, "{args:?}: {}", run.stderr);
    }
    // The secrets did reach where they were sent.
    assert_eq!(
        gl.var(1, "DB_PASSWORD", "*").expect("DB_PASSWORD").value,
        VAR_SECRET
    );
    assert_eq!(gl.var(1, "DEPLOY_KEY", "*").expect("DEPLOY_KEY").value, key);

    // Failing API calls: wrong credentials (401) and server errors (500).
    t.set_env("R5_GITLAB_TOKEN", WRONG_GITLAB);
    let run = seen.run(&t, &["-vv", "plan"]);
    assert_eq!(run.status, 1, "a wrong GitLab token fails: {}", run.stderr);
    t.set_env("R5_GITLAB_TOKEN", gl_double::TOKEN);
    t.set_env("R5_DO_TOKEN", WRONG_DO);
    let run = seen.run(&t, &["-vv", "plan"]);
    assert_eq!(run.status, 1, "a wrong DO token fails: {}", run.stderr);
    t.set_env("R5_DO_TOKEN", DO_TOKEN);
    digitalocean.set_fail_every(Some(1));
    let run = seen.run(&t, &["-vv", "destroy", "--auto-approve"]);
    assert_eq!(run.status, 1, "500s fail the destroy: {}", run.stderr);
    digitalocean.set_fail_every(None);
    t.set_env("BERTH_HTTP_PASSWORD", "R5-wrong-state-password-ee05");
    let run = seen.run(&t, &["-vv", "plan"]);
    assert_eq!(
        run.status, 1,
        "a wrong state password fails: {}",
        run.stderr
    );
    t.set_env("BERTH_HTTP_PASSWORD", STATE_PASSWORD);

    // Unreachable state stores with credentials in their settings.
    let closed = free_port();
    let other = TestEnv::new("r5-s3");
    other.write_config(&format!(
        "backend \"s3\" {{\n  bucket     = \"r5\"\n  endpoint   = \"http://127.0.0.1:{closed}\"\n  access_key = \"AKIAR5\"\n  secret_key = \"{S3_SECRET}\"\n}}\n"
    ));
    let s3 = seen.run(&other, &["-vv", "plan"]);
    assert_eq!(s3.status, 1, "{}", s3.stderr);
    other.write_config(&format!(
        "backend \"pg\" {{\n  conn_str = \"host=127.0.0.1 port={closed} user=berth password={PG_PASSWORD}\"\n}}\n"
    ));
    let pg = seen.run(&other, &["-vv", "plan"]);
    assert_eq!(pg.status, 1, "{}", pg.stderr);
    other.write_config("backend \"pg\" {}\n");
    let pg = seen.run(
        &other,
        &[
            "-vv",
            "plan",
            "--backend-config",
            &format!("conn_str=postgres://berth:{PG_PASSWORD}@127.0.0.1:{closed}/berth"),
        ],
    );
    assert_eq!(pg.status, 1, "{}", pg.stderr);

    let destroy = seen.run(&t, &["-vv", "destroy", "--auto-approve"]);
    assert_eq!(destroy.status, 0, "{}\n{}", destroy.stdout, destroy.stderr);

    // Every state body the remote store received, and the local files.
    {
        let p = state.project.lock().expect("fake");
        for (name, versions) in &p.states {
            for (serial, body) in versions {
                seen.add(
                    format!("remote state `{name}` serial {serial}"),
                    body.clone(),
                );
            }
        }
        for (name, lock) in &p.locks {
            seen.add(format!("remote lock `{name}`"), lock.to_string());
        }
    }
    let mut files = Vec::new();
    all_files(t.path(), &mut files);
    all_files(other.path(), &mut files);
    for (path, bytes) in files {
        let name = Path::new(&path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        // The inputs berth was given, not what it wrote.
        if name == "berth.hcl" || name.starts_with("deploy_key") {
            continue;
        }
        seen.add(path, bytes);
    }

    let mut secrets = vec![
        VAR_SECRET,
        CI_VALUE,
        DO_TOKEN,
        AWS_SECRET,
        REGISTRY_PASSWORD,
        STATE_PASSWORD,
        STATE_KEY,
        PASSPHRASE,
        gl_double::TOKEN,
        WRONG_GITLAB,
        WRONG_DO,
        "R5-wrong-state-password-ee05",
        PG_PASSWORD,
        S3_SECRET,
    ];
    secrets.extend(key_lines.iter().map(String::as_str));
    let hits = seen.hits(&secrets);
    println!(
        "R5 secrets: {} secret values searched in {} outputs and files ({} bytes): {} hits",
        secrets.len(),
        seen.parts.len(),
        seen.bytes(),
        hits.len()
    );
    assert!(hits.is_empty(), "secrets leaked:\n{}", hits.join("\n"));
}
