//! A moto server of each test's own (`moto_server` on 127.0.0.1 and a free
//! port, killed by pid on drop), found as state/tests/remote/s3.rs finds it:
//! `BERTH_MOTO_SERVER`, the venv scripts/ensure-test-deps.sh makes
//! (`BERTH_MOTO_VENV`, default `~/.cache/berth-moto-venv`), or PATH; when
//! none exists the venv is created the same way. A test fails with a clear
//! message, never skips, when moto cannot be had.
//!
//! moto runs with `MOTO_ENABLE_AMI_VALIDATION=true`, so an unknown AMI is
//! refused as on AWS.
//!
//! Also: a SigV4-signed raw EC2 call for what the tests look at behind the
//! provider's back (`DescribeImages`, `DescribeInstances`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

fn default_venv() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/berth-moto-venv")
}

static INSTALL: Mutex<()> = Mutex::new(());

fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_MOTO_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "BERTH_MOTO_SERVER={} does not exist",
            p.display()
        );
        return p;
    }
    let venv = std::env::var_os("BERTH_MOTO_VENV").map_or_else(default_venv, PathBuf::from);
    let in_venv = venv.join("bin/moto_server");
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if in_venv.exists() {
        return in_venv;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("moto_server");
            let runs = Command::new(&candidate)
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if runs {
                return candidate;
            }
        }
    }
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "moto[server]>=5.1,<6",
            ])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        made && in_venv.exists(),
        "moto is not installed and installing it into {} failed: run scripts/ensure-test-deps.sh, \
         or point BERTH_MOTO_SERVER at a moto_server",
        venv.display()
    );
    in_venv
}

/// A running moto server.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start() -> Moto {
        Moto::start_with(&[]).await
    }

    /// moto with extra environment variables (e.g. to turn on its
    /// authentication).
    pub async fn start_with(env: &[(&str, &str)]) -> Moto {
        let bin = moto_server();
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .expect("a free port")
                .local_addr()
                .expect("its address")
                .port();
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_ENABLE_AMI_VALIDATION", "true")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let endpoint = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(60);
            let client = reqwest::Client::new();
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!("moto_server exited with {status}");
                    break;
                }
                if let Ok(r) = client.get(format!("{endpoint}/moto-api/")).send().await
                    && r.status().is_success()
                {
                    return Moto { child, endpoint };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "moto_server did not answer within 60 s".to_owned();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("cannot start moto ({}): {last_err}", bin.display());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A signed EC2 Query call; returns the status and the XML answer.
pub async fn ec2_raw(endpoint: &str, params: &[(&str, &str)]) -> (u16, String) {
    let body = params
        .iter()
        .chain(&[("Version", "2016-11-15")])
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let identity: Identity = Credentials::new("testing", "testing", None, None, "test").into();
    let signing = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("ec2")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let url = format!("{endpoint}/");
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &signing).expect("signed").into_parts();
    let mut req = reqwest::Client::new().post(&url).body(body.clone());
    for (k, v) in headers.iter().copied().chain(instructions.headers()) {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("moto answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("a body"))
}

/// The text of every `<tag>` element in `xml`, in order.
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(rest[..end].to_owned());
        rest = &rest[end + close.len()..];
    }
    out
}

/// An Amazon Linux AMI from moto's built-in images.
pub async fn amazon_linux_ami(endpoint: &str) -> String {
    let (status, xml) = ec2_raw(
        endpoint,
        &[
            ("Action", "DescribeImages"),
            ("Owner.1", "amazon"),
            ("Filter.1.Name", "name"),
            ("Filter.1.Value.1", "amzn-ami-hvm-*"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    xml_values(&xml, "imageId")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("moto lists no Amazon Linux AMI: {xml:.400}"))
}
