//! A registry token service for the tests (distribution's `auth.token`
//! flow, spec `docs/spec/auth/token.md`): `GET /token?service=..&scope=..`
//! with Basic credentials answers `{"token", "access_token", "expires_in"}`
//! holding an RS256 JWT that Debian's `docker-registry` verifies against a
//! self-signed certificate made at test time.
//!
//! - The certificate and key come from
//!   `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=berth-test-issuer`;
//!   the JWT header carries it in `x5c` (base64 DER), and the registry's
//!   `rootcertbundle` is the same file.
//! - Claims: `iss`, `aud` (the service), `sub` (the user), `exp`, `nbf`,
//!   `iat`, `jti` and `access: [{type: "repository", name, actions}]`.
//! - Wrong credentials get 401; no credentials get a token without access
//!   (as Docker Hub answers anonymous requests); the right ones get every
//!   action asked for among `pull`, `push` and `delete`.
//! - Signing is `openssl dgst -sha256 -sign` (RSASSA-PKCS1-v1_5 with
//!   SHA-256, which is RS256), so the tests need no JWT crate.
//!
//! The server listens on a free port of 127.0.0.1 in a thread of the test
//! process and stops when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// The token service's identity and its one user.
#[derive(Clone)]
struct Issuer {
    issuer: String,
    service: String,
    user: String,
    password: String,
    key: PathBuf,
    /// base64 (standard) DER of the certificate, for `x5c`.
    x5c: String,
}

/// A running token service.
pub struct TokenServer {
    pub port: u16,
    issuer: Issuer,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    refused: Arc<AtomicUsize>,
    dir: tempfile::TempDir,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn openssl() -> &'static str {
    assert!(
        std::path::Path::new("/usr/bin/openssl").exists(),
        "/usr/bin/openssl is missing: apt-get install openssl"
    );
    "/usr/bin/openssl"
}

impl TokenServer {
    /// Makes a certificate and starts serving on a free port.
    pub fn start(service: &str, issuer: &str, user: &str, password: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-token-")
            .tempdir()
            .expect("tempdir");
        let key = dir.path().join("token.key");
        let cert = dir.path().join("token.crt");
        let out = Command::new(openssl())
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=berth-test-issuer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .expect("openssl req");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new(openssl())
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .expect("openssl x509");
        assert!(der.status.success(), "openssl x509 failed");
        let issuer = Issuer {
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            key,
            x5c: STANDARD.encode(&der.stdout),
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, issuer, refused) = (stop.clone(), issuer.clone(), refused.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (issuer, refused) = (issuer.clone(), refused.clone());
                    std::thread::spawn(move || serve(stream, &issuer, &refused));
                }
            })
        };
        Self {
            port,
            issuer,
            stop,
            thread: Some(thread),
            refused,
            dir,
        }
    }

    /// The realm the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn service(&self) -> &str {
        &self.issuer.service
    }

    pub fn issuer(&self) -> &str {
        &self.issuer.issuer
    }

    /// The certificate the registry trusts (`rootcertbundle`).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("token.crt")
    }

    /// How many token requests were refused (wrong credentials).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// A token for the test's own registry calls: every action on
    /// `repository`.
    pub fn mint(&self, repository: &str) -> String {
        sign(
            &self.issuer,
            &self.issuer.user,
            &[(
                repository.to_owned(),
                vec!["pull".into(), "push".into(), "delete".into()],
            )],
        )
    }
}

fn serve(mut stream: TcpStream, issuer: &Issuer, refused: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&request).into_owned();
    let mut lines = text.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_owned();
    let authorization = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if path != "/token" {
        return respond(&mut stream, 404, r#"{"error":"not found"}"#);
    }
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    // Who is asking: nobody, the user, or someone with a wrong password.
    let user = match authorization.as_deref() {
        None => None,
        Some(value) => {
            let decoded = value
                .strip_prefix("Basic ")
                .and_then(|b| STANDARD.decode(b.trim()).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if decoded == format!("{}:{}", issuer.user, issuer.password) {
                Some(issuer.user.clone())
            } else {
                refused.fetch_add(1, Ordering::SeqCst);
                return respond(
                    &mut stream,
                    401,
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}"#,
                );
            }
        }
    };
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.as_str());
    if service != Some(issuer.service.as_str()) {
        return respond(&mut stream, 400, r#"{"error":"unknown service"}"#);
    }
    let mut access: Vec<(String, Vec<String>)> = Vec::new();
    if user.is_some() {
        for scope in params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' '))
        {
            let mut parts = scope.splitn(3, ':');
            let (Some("repository"), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let granted: Vec<String> = actions
                .split(',')
                .filter(|a| matches!(*a, "pull" | "push" | "delete"))
                .map(str::to_owned)
                .collect();
            access.push((name.to_owned(), granted));
        }
    }
    let token = sign(issuer, user.as_deref().unwrap_or(""), &access);
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": 300,
    })
    .to_string();
    respond(&mut stream, 200, &body);
}

fn respond(stream: &mut TcpStream, status: u16, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An RS256 JWT for `sub` with `access`, signed by `issuer`'s key.
fn sign(issuer: &Issuer, sub: &str, access: &[(String, Vec<String>)]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [issuer.x5c]});
    let access: Vec<serde_json::Value> = access
        .iter()
        .map(|(name, actions)| {
            serde_json::json!({"type": "repository", "name": name, "actions": actions})
        })
        .collect();
    let claims = serde_json::json!({
        "iss": issuer.issuer,
        "aud": issuer.service,
        "sub": sub,
        "exp": now + 300,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": format!("{:x}-{}", now, JTI.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut child = Command::new(openssl())
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(&issuer.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(signing_input.as_bytes())
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl dgst");
    assert!(
        out.status.success(),
        "openssl dgst failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&out.stdout))
}

static JTI: AtomicUsize = AtomicUsize::new(0);

#[test]
fn query_components_are_decoded() {
    assert_eq!(
        decode("repository%3Aberth-it%2Fapp%3Apull%2Cpush"),
        "repository:berth-it/app:pull,push"
    );
    assert_eq!(decode("a+b%20c"), "a b c");
    assert_eq!(decode("100%"), "100%");
}
