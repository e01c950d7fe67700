//! An ECR repository's whole life through the berth binary: the
//! `aws_ecr_repository` is created in moto, a `docker_image` is built under
//! the repository's URL, and a `docker_registry_image` pushes it with
//! `AWS:<token>` credentials that berth gets from ECR's
//! `GetAuthorizationToken` (no `registry_auth` credentials are given);
//! the next plan is empty; destroy deletes the manifest and the repository
//! (`force_delete`).
//!
//! moto has no registry endpoint, so the "ECR" registry is Debian's
//! `docker-registry` on a free port of 127.0.0.1 whose htpasswd knows one
//! user, `AWS`, with the one password moto's `GetAuthorizationToken` hands
//! out (`<account>-auth-token`): a push can only succeed with the login
//! berth obtained from moto. The image keeps its ECR name
//! (`123456789012.dkr.ecr.us-east-1.amazonaws.com/...`); the provider
//! block's `registry_auth { address = <ECR host>, endpoint = "127.0.0.1:PORT" }`
//! says where that registry is reached, so no traffic leaves loopback.
//!
//! moto and the registry are killed by PID when the test ends, their files
//! live in temporary directories, and everything built carries the test's
//! `berth.env` label.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::moto_server;
use crate::common::{DockerCleanup, TestEnv, docker, free_port, http_get, write_demo_context};
use crate::registry_server::{Registry, basic};

/// moto's account, hence the registry host of its repositories.
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

/// The password moto's `GetAuthorizationToken` returns for `ACCOUNT`
/// (`base64("AWS:<account>-auth-token")`, moto/ecr/responses.py).
fn moto_token() -> String {
    format!("{ACCOUNT}-auth-token")
}

fn ecr_host() -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com")
}

/// A `moto_server` on 127.0.0.1 and a free port, killed by PID on drop.
/// Found as `providers/aws/tests/moto` finds it: `BERTH_MOTO_SERVER`, the
/// venv `scripts/ensure-test-deps.sh` makes (`BERTH_MOTO_VENV`, default
/// `~/.cache/berth-moto-venv`), or PATH.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Self {
        let bin = moto_server();
        let port = free_port();
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited with {status}");
            }
            if let Some((200, _)) = http_get(port, "/moto-api/") {
                return Self { child, port };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("moto_server did not answer within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The names of the ECR repositories moto holds (`DescribeRepositories`;
    /// moto does not check signatures, it reads the service and region from
    /// the `Authorization` header's credential scope).
    fn repositories(&self) -> Vec<String> {
        use std::io::{Read, Write};
        let body = "{}";
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("moto");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.DescribeRepositories\r\n\
             Content-Type: application/x-amz-json-1.1\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/ecr/aws4_request, \
             SignedHeaders=host, Signature=0\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n{body}",
            port = self.port,
            len = body.len()
        )
        .expect("send");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "{response:.500}");
        let body = dechunk(body);
        let data: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("DescribeRepositories: {e}: {body:.300}"));
        let mut names: Vec<String> = data["repositories"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|r| r["repositoryName"].as_str())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chunked HTTP/1.1 body, joined (a body without chunking is returned
/// as is).
fn dechunk(body: &str) -> String {
    if body.trim_start().starts_with(['{', '[']) {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn config(moto: &Moto, registry: &Registry) -> String {
    format!(
        r#"
provider "aws" {{
  region     = "{REGION}"
  access_key = "testing"
  secret_key = "testing"
  endpoints {{
    ecr = "{moto}"
  }}
}}

provider "docker" {{
  # No username or password: berth logs in to ECR with GetAuthorizationToken.
  # The endpoint says where this "ECR" registry is reached (a local stand-in).
  registry_auth {{
    address  = "{ecr}"
    endpoint = "{endpoint}"
  }}
}}

resource "aws_ecr_repository" "app" {{
  name         = "berth-it/${{berth.env}}"
  force_delete = true
}}

resource "docker_image" "app" {{
  name = "${{aws_ecr_repository.app.repository_url}}:v1"
  build {{
    context = "app"
  }}
}}

resource "docker_registry_image" "app" {{
  name = docker_image.app.name
}}

output "digest" {{
  value = docker_registry_image.app.sha256_digest
}}
"#,
        moto = moto.endpoint(),
        ecr = ecr_host(),
        endpoint = registry.address(),
    )
}

#[test]
fn an_ecr_repository_is_created_pushed_to_with_its_token_and_destroyed() {
    let t = TestEnv::new("ecr");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let moto = Moto::start();
    let token = moto_token();
    // The registry knows only ECR's user and moto's token.
    let registry = Registry::start_htpasswd("AWS", &token);
    let auth = basic("AWS", &token);
    write_demo_context(&t);
    t.write_config(&config(&moto, &registry));
    let name = format!("berth-it/{}", t.env);
    let reference = format!("{}/{name}:v1", ecr_host());

    let plan = t.run(&["plan"]).ok();
    assert!(
        plan.stdout
            .contains("Plan: 3 to add, 0 to change, 0 to destroy."),
        "{}",
        plan.stdout
    );
    let apply = t.run(&["-v", "apply", "--auto-approve"]).ok();
    let mut seen = format!(
        "{}{}{}{}",
        plan.stdout, plan.stderr, apply.stdout, apply.stderr
    );

    // The repository exists in moto, under the name state records.
    assert_eq!(moto.repositories(), vec![name.clone()]);
    let shown = t
        .run(&["state", "show", "aws_ecr_repository.app"])
        .ok()
        .stdout;
    assert!(shown.contains(&format!("{}/{name}", ecr_host())), "{shown}");

    // Pushed with the login from GetAuthorizationToken: the registry has the
    // tag at the digest state records.
    let digest = t.run(&["output", "digest", "--raw"]).ok().stdout;
    let digest = digest.trim();
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(
        registry.digest(&name, "v1", &auth).as_deref(),
        Some(digest),
        "{}",
        registry.log()
    );
    // The local image keeps its ECR name only (the endpoint's tag is gone).
    assert!(
        !docker(&["image", "inspect", "-f", "{{.Id}}", &reference])
            .trim()
            .is_empty()
    );
    let endpoint_tag = format!("{}/{name}:v1", registry.address());
    assert!(
        docker(&["image", "inspect", "-f", "{{.Id}}", &endpoint_tag])
            .trim()
            .is_empty(),
        "{endpoint_tag} was left behind"
    );

    // Nothing to do: refresh logs in again and the registry agrees.
    let plan = t.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("No changes."), "{}", plan.stdout);
    seen += &plan.stdout;
    seen += &plan.stderr;

    // Destroy: the manifest is deleted by digest, and the repository (with
    // force_delete) from moto.
    let destroy = t.run(&["destroy", "--auto-approve"]).ok();
    seen += &destroy.stdout;
    seen += &destroy.stderr;
    assert_eq!(registry.digest(&name, "v1", &auth), None);
    assert_eq!(registry.digest(&name, digest, &auth), None);
    assert!(moto.repositories().is_empty(), "{:?}", moto.repositories());

    // The token is a password: never shown, never stored.
    assert!(!seen.contains(&token), "the ECR token leaked:\n{seen}");
    let state = t.state_bytes();
    assert!(
        !state.windows(token.len()).any(|w| w == token.as_bytes()),
        "the ECR token is in the state store"
    );
}

/// Without the AWS login (an explicit `registry_auth` password wins over
/// the credential source), the stand-in registry refuses the push: the
/// successful push above could only have used moto's token.
#[test]
fn an_explicit_registry_auth_password_wins_over_the_ecr_login() {
    let t = TestEnv::new("ecr-explicit");
    let _cleanup = DockerCleanup { env: t.env.clone() };
    let moto = Moto::start();
    let registry = Registry::start_htpasswd("AWS", &moto_token());
    write_demo_context(&t);
    let text = config(&moto, &registry).replace(
        &format!("    endpoint = \"{}\"", registry.address()),
        &format!(
            "    endpoint = \"{}\"\n    username = \"AWS\"\n    password = \"Not-the-token-4b2e\"",
            registry.address()
        ),
    );
    assert!(text.contains("Not-the-token-4b2e"));
    t.write_config(&text);
    let run = t.run(&["apply", "--auto-approve"]).failed();
    assert!(
        run.stderr.contains("docker_registry_image.app")
            && run.stderr.contains("refused the credentials")
            && run.stderr.contains(&ecr_host()),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Not-the-token-4b2e"), "{}", run.stderr);
    t.run(&["destroy", "--auto-approve"]).ok();
    assert!(moto.repositories().is_empty());
}
