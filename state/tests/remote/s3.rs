//! The S3 backend against moto (`moto_server` on 127.0.0.1, started per test
//! and killed by pid): the common behaviour with keys that need escaping,
//! bucket creation with a signed request, the lock object refused with 412
//! and the holder read back, unlock and force-unlock by id, Terraform's
//! `env:/` layout, listing, and a write refused because the object changed
//! since it was read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use berth_state::s3_backend::S3Backend;
use berth_state::{Attrs, LockInfo, StateBackend, StateError, list_envs, open_backend};

use crate::common::{conformance, record};

/// Where scripts/ensure-test-deps.sh puts moto.
fn default_venv() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/berth-moto-venv")
}

static INSTALL: Mutex<()> = Mutex::new(());

/// `moto_server`: `BERTH_MOTO_SERVER`, the project's venv, or PATH; when
/// none exists, the venv is created as scripts/ensure-test-deps.sh does.
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

/// A moto server of this test's own.
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
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
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

    pub fn settings(&self, bucket: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut s: BTreeMap<String, String> = [
            ("bucket", bucket),
            ("endpoint", &self.endpoint),
            ("access_key", "testing"),
            ("secret_key", "testing-secret"),
            ("region", "eu-west-1"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        s.retain(|_, v| !v.is_empty());
        s
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An IAM Query API call to moto, signed (moto picks the service from the
/// credential scope); returns the XML answer.
async fn iam(endpoint: &str, params: &[(&str, &str)]) -> String {
    let body = params
        .iter()
        .chain(&[("Version", "2010-05-08")])
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let identity: Identity = Credentials::new("testing", "testing", None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("iam")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let url = format!("{endpoint}/");
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = reqwest::Client::new().post(&url).body(body.clone());
    for (k, v) in headers.iter().copied().chain(instructions.headers()) {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "IAM {status}: {text}");
    text
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn xml_field(xml: &str, tag: &str) -> String {
    let start = xml.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>")).unwrap();
    xml[start..start + end].to_owned()
}

fn backend(moto: &Moto, bucket: &str, env: &str, dir: &Path) -> S3Backend {
    S3Backend::open(&moto.settings(bucket, &[]), env, dir).unwrap()
}

#[tokio::test]
async fn s3_round_trip_lock_object_and_listing() {
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();

    // The bucket is missing at first, and the error says so.
    let b = backend(&moto, "berth-state", "prod", dir.path());
    let e = b.lock(&LockInfo::new("apply", "x")).await.unwrap_err();
    assert!(e.to_string().contains("NoSuchBucket"), "{e}");
    b.create_bucket().await.unwrap();
    b.create_bucket().await.unwrap(); // already ours: fine

    let s = moto.settings("berth-state", &[]);
    conformance(async || {
        open_backend("s3", &s, "review/feat x", dir.path())
            .await
            .unwrap()
    })
    .await;
    conformance(async || open_backend("s3", &s, "prod", dir.path()).await.unwrap()).await;

    // The lock object: a second PutObject with If-None-Match: * gets 412
    // (moto honours it), and the holder is read from the object.
    let first = backend(&moto, "berth-state", "prod", dir.path());
    let info = LockInfo::new("apply", &first.describe());
    first.lock(&info).await.unwrap();
    assert_eq!(first.lock_object_key(), "berth/prod.json.tflock");
    let second = backend(&moto, "berth-state", "prod", dir.path());
    match second.lock(&LockInfo::new("plan", "x")).await.unwrap_err() {
        StateError::Locked { holder, stale } => {
            assert_eq!(*holder, info, "the holder as it wrote itself");
            assert!(!stale);
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(second.lock_holder().await.unwrap(), Some(info.clone()));
    assert!(matches!(
        second.force_unlock("wrong").await,
        Err(StateError::LockMismatch { current: Some(c), .. }) if c == info.id
    ));
    first.unlock(&info.id).await.unwrap();
    assert_eq!(second.lock_holder().await.unwrap(), None);
    let mine = LockInfo::new("apply", "x");
    second.lock(&mine).await.unwrap();
    assert_eq!(second.read().await.unwrap().serial, 7);
    second.unlock(&mine.id).await.unwrap();

    // Terraform's workspace layout when the key has no {env}.
    let tf = moto.settings("berth-state", &[("key", "app/terraform.tfstate")]);
    let t = open_backend("s3", &tf, "staging", dir.path())
        .await
        .unwrap();
    let tinfo = LockInfo::new("apply", "x");
    t.lock(&tinfo).await.unwrap();
    t.put_resource("a.a", &record("x", Attrs::new()))
        .await
        .unwrap();
    t.unlock(&tinfo.id).await.unwrap();
    assert!(
        t.describe().contains("env:/staging/app/terraform.tfstate"),
        "{}",
        t.describe()
    );

    assert_eq!(
        list_envs("s3", &s, dir.path()).await.unwrap(),
        ["prod", "review/feat x"]
    );
    assert_eq!(list_envs("s3", &tf, dir.path()).await.unwrap(), ["staging"]);
}

#[tokio::test]
async fn s3_write_after_a_force_unlock_is_refused() {
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = backend(&moto, "berth-second", "prod", dir.path());
    first.create_bucket().await.unwrap();
    let info = LockInfo::new("apply", "x");
    first.lock(&info).await.unwrap();
    first.read().await.unwrap();
    assert_eq!(
        first
            .put_resource("a.a", &record("x", Attrs::new()))
            .await
            .unwrap(),
        1
    );

    // Someone force-unlocks and writes while `first` still runs.
    let second = backend(&moto, "berth-second", "prod", dir.path());
    second.force_unlock(&info.id).await.unwrap();
    let mine = LockInfo::new("apply", "x");
    second.lock(&mine).await.unwrap();
    second.read().await.unwrap();
    assert_eq!(
        second
            .put_resource("a.b", &record("y", Attrs::new()))
            .await
            .unwrap(),
        2
    );

    // `first` writes with If-Match on the version it read: refused.
    let e = first
        .put_resource("a.c", &record("z", Attrs::new()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("changed since berth read it"), "{e}");
    // And its unlock says the lock is no longer its own.
    assert!(matches!(
        first.unlock(&info.id).await,
        Err(StateError::LockMismatch { current: Some(c), .. }) if c == mine.id
    ));
    let snap = second.read().await.unwrap();
    assert_eq!(snap.serial, 2);
    assert!(!snap.resources.contains_key("a.c"));
    second.unlock(&mine.id).await.unwrap();

    // Errors never show the secret key.
    let bad = moto.settings("no-such-bucket-here", &[("secret_key", "the-secret-value")]);
    let b = S3Backend::open(&bad, "prod", dir.path()).unwrap();
    let e = b.lock(&LockInfo::new("apply", "x")).await.unwrap_err();
    assert!(!e.to_string().contains("the-secret-value"), "{e}");
    assert!(!format!("{b:?}").contains("the-secret-value"));
}

#[tokio::test]
async fn s3_signatures_pass_motos_verification() {
    // With INITIAL_NO_AUTH_ACTION_COUNT moto checks every request after the
    // first three: the access key must exist in its IAM and the SigV4
    // signature must match. The three free calls make that key.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]).await;
    iam(
        &moto.endpoint,
        &[("Action", "CreateUser"), ("UserName", "berth")],
    )
    .await;
    let policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    iam(
        &moto.endpoint,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "berth"),
            ("PolicyName", "all"),
            ("PolicyDocument", policy),
        ],
    )
    .await;
    let key = iam(
        &moto.endpoint,
        &[("Action", "CreateAccessKey"), ("UserName", "berth")],
    )
    .await;
    let (ak, sk) = (
        xml_field(&key, "AccessKeyId"),
        xml_field(&key, "SecretAccessKey"),
    );

    let dir = tempfile::tempdir().unwrap();
    let s = moto.settings("signed-bucket", &[("access_key", &ak), ("secret_key", &sk)]);
    S3Backend::open(&s, "x", dir.path())
        .unwrap()
        .create_bucket()
        .await
        .unwrap();
    // Keys that need escaping, conditional headers and a listing query, all
    // signed.
    conformance(async || {
        open_backend("s3", &s, "review/feat x+y", dir.path())
            .await
            .unwrap()
    })
    .await;
    assert_eq!(
        list_envs("s3", &s, dir.path()).await.unwrap(),
        ["review/feat x+y"]
    );

    // A wrong secret is refused by the signature check, and not shown.
    let wrong = moto.settings(
        "signed-bucket",
        &[("access_key", &ak), ("secret_key", "wrong-secret-value")],
    );
    let b = S3Backend::open(&wrong, "x", dir.path()).unwrap();
    let text = b
        .lock(&LockInfo::new("apply", "x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("SignatureDoesNotMatch") && text.contains("check the credentials"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret-value"), "{text}");
}
