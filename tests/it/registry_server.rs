//! Debian's `docker-registry` (distribution 2.8) for the tests: started on
//! a free port of 127.0.0.1 (which dockerd treats as an insecure registry,
//! so no TLS) with its own temporary directory, deletes enabled, and either
//! htpasswd (bcrypt) basic auth or `auth.token` pointing at a
//! [`TokenServer`]; killed by PID when dropped. Also a minimal HTTP client
//! for the tests' own look-ups and changes behind berth's back (`HEAD` a
//! manifest, `DELETE` one by digest, move a tag).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;

use crate::common::{free_port, http_get};
use crate::token_server::TokenServer;

/// A `docker-registry serve` process, killed when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tool(path: &str, package: &str) -> PathBuf {
    let p = Path::new(path);
    assert!(
        p.exists(),
        "{path} is missing: apt-get install {package} (scripts/ensure-test-deps.sh does)"
    );
    p.to_owned()
}

/// The manifest types asked for, as berth and dockerd ask.
const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.oci.image.index.v1+json";

/// One answer of [`Registry::request`].
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Registry {
    /// A registry with htpasswd basic auth for `user`.
    pub fn start_htpasswd(user: &str, password: &str) -> Self {
        let htpasswd = tool("/usr/bin/htpasswd", "apache2-utils");
        let dir = Self::dir();
        let out = Command::new(htpasswd)
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.path().join("htpasswd"), &out.stdout).expect("htpasswd file");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            dir.path().join("htpasswd").display()
        );
        Self::start(dir, &auth)
    }

    /// A registry whose clients get tokens from `tokens`.
    pub fn start_token(tokens: &TokenServer) -> Self {
        let dir = Self::dir();
        let auth = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    \
             issuer: {issuer}\n    rootcertbundle: {cert}\n",
            realm = tokens.realm(),
            service = tokens.service(),
            issuer = tokens.issuer(),
            cert = tokens.cert_path().display(),
        );
        Self::start(dir, &auth)
    }

    fn dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("tempdir")
    }

    fn start(dir: tempfile::TempDir, auth: &str) -> Self {
        let registry = tool("/usr/bin/docker-registry", "docker-registry");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let port = free_port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-only\n\
             {auth}",
            data = dir.path().join("data").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("config.yml");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(registry)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Self { child, port, dir };
        // Ready when /v2/ asks for credentials.
        for _ in 0..300 {
            if let Some((401, _)) = http_get(port, "/v2/") {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "docker-registry did not come up on 127.0.0.1:{port}\n{}",
            registry.log()
        );
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `method path` with `authorization` (a whole header value), asking
    /// for manifests as berth does.
    pub fn request(&self, method: &str, path: &str, authorization: &str) -> Answer {
        self.send(method, path, authorization, None)
    }

    /// Like [`Registry::request`], with a body of type `content_type`.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        authorization: &str,
        body: Option<(&str, &[u8])>,
    ) -> Answer {
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to registry");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        let (content_type, bytes) = body.unwrap_or(("application/octet-stream", &[]));
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: {ACCEPT}\r\n\
             Authorization: {authorization}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.address(),
            bytes.len()
        )
        .into_bytes();
        request.extend_from_slice(bytes);
        stream.write_all(&request).expect("send");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(response.len());
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let body = response.get(split + 4..).unwrap_or_default().to_vec();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {head}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The digest `repository:reference` points at, `None` on 404.
    pub fn digest(&self, repository: &str, reference: &str, authorization: &str) -> Option<String> {
        let answer = self.request(
            "HEAD",
            &format!("/v2/{repository}/manifests/{reference}"),
            authorization,
        );
        match answer.status {
            200 => Some(
                answer
                    .header("Docker-Content-Digest")
                    .expect("Docker-Content-Digest")
                    .to_owned(),
            ),
            404 => None,
            other => panic!(
                "HEAD {repository}:{reference} answered {other}\n{}",
                self.log()
            ),
        }
    }

    /// Points `tag` at a new manifest for the same image: the manifest
    /// `tag` has now, written out again with other whitespace (a digest is
    /// over the exact bytes). The new digest.
    pub fn move_tag(&self, repository: &str, tag: &str, authorization: &str) -> String {
        let path = format!("/v2/{repository}/manifests/{tag}");
        let current = self.request("GET", &path, authorization);
        assert_eq!(current.status, 200, "GET {path}\n{}", self.log());
        let media_type = current
            .header("Content-Type")
            .expect("Content-Type")
            .to_owned();
        let manifest: serde_json::Value =
            serde_json::from_slice(&current.body).expect("a JSON manifest");
        let mut rewritten = serde_json::to_vec(&manifest).expect("manifest");
        if rewritten == current.body {
            rewritten = serde_json::to_vec_pretty(&manifest).expect("manifest");
        }
        let put = self.send("PUT", &path, authorization, Some((&media_type, &rewritten)));
        assert_eq!(put.status, 201, "PUT {path}\n{}", self.log());
        put.header("Docker-Content-Digest")
            .expect("Docker-Content-Digest")
            .to_owned()
    }

    /// Deletes a manifest by digest; the status (202 when deleted).
    pub fn delete(&self, repository: &str, digest: &str, authorization: &str) -> u16 {
        self.request(
            "DELETE",
            &format!("/v2/{repository}/manifests/{digest}"),
            authorization,
        )
        .status
    }
}

/// An `Authorization` header value for basic credentials.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
