//! The test harness: a temporary project directory with a `berth.hcl`, a
//! unique environment name per test (so every Docker object a test makes
//! carries a label naming it, and tests run in parallel), a way to run the
//! berth binary, and a guard that removes every labelled object at the end,
//! even when the test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// One test's world.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    /// The environment name: unique per test, and the value of the
    /// `berth.env` label on everything berth creates for it.
    pub env: String,
    extra_env: Vec<(String, String)>,
}

/// What a run of berth printed.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Panics with both streams unless the run exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.status, 0,
            "berth failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the run failed.
    #[track_caller]
    pub fn failed(self) -> Self {
        assert_ne!(
            self.status, 0,
            "berth unexpectedly succeeded\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

fn random_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos)
}

impl TestEnv {
    /// A new temporary project for the test called `name`.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-it-")
            .tempdir()
            .expect("tempdir");
        let env = format!("t-{}-{}", name.replace('_', "-"), random_suffix());
        Self {
            dir,
            env,
            extra_env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `berth.hcl`.
    pub fn write_config(&self, text: &str) {
        self.write("berth.hcl", text);
    }

    pub fn write(&self, name: &str, text: &str) {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    /// Sets an environment variable for every later run.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.push((key.to_owned(), value.to_owned()));
    }

    /// The berth command, in the project directory, for this environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.current_dir(self.path())
            .args(args)
            .env("BERTH_ENV", &self.env)
            .env_remove("CI_ENVIRONMENT_NAME")
            .env_remove("BERTH_FILE")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs berth and waits.
    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.command(args).output().expect("run berth");
        Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Every file under `.berth/`, concatenated, for searching.
    pub fn state_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        collect_bytes(&self.path().join(".berth"), &mut out);
        out
    }
}

fn collect_bytes(dir: &Path, out: &mut Vec<u8>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_bytes(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
}

/// Removes every Docker object labelled with the test's environment when
/// dropped, whatever happened in the test.
pub struct DockerCleanup {
    pub env: String,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let filter = format!("label=berth.env={}", self.env);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        let nets = docker(&["network", "ls", "-q", "--filter", &filter]);
        for id in nets.split_whitespace() {
            docker(&["network", "rm", id]);
        }
        let images = docker(&["images", "-q", "--filter", &filter]);
        for id in images.split_whitespace() {
            docker(&["rmi", "-f", id]);
        }
    }
}

/// Runs the docker CLI and returns stdout ("" on failure).
pub fn docker(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Names of containers carrying `label`.
pub fn containers_with(label: &str) -> Vec<String> {
    let mut names: Vec<String> = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    names.sort();
    names
}

/// The demo app's static binary, built by `scripts/build-demo-image.sh`.
pub fn demo_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/local/app/demo-app");
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-demo-image.sh first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Writes a build context `app/` holding the demo app and a Dockerfile
/// `FROM scratch` into the test's directory.
pub fn write_demo_context(t: &TestEnv) {
    let app = t.path().join("app");
    std::fs::create_dir_all(&app).expect("mkdir app");
    std::fs::copy(demo_binary(), app.join("demo-app")).expect("copy demo-app");
    // The label first makes every layer this test builds its own, so another
    // test's cleanup of an identical image can never remove a layer this
    // test's build is using (tests share one engine and run in parallel).
    std::fs::write(
        app.join("Dockerfile"),
        format!(
            "FROM scratch\nLABEL berth.test-run=\"{}\"\nCOPY demo-app /demo-app\nEXPOSE 5000\nENTRYPOINT [\"/demo-app\"]\n",
            t.env
        ),
    )
    .expect("Dockerfile");
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GET `path` on 127.0.0.1:`port`; the status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Some((status, body))
}

/// Runs `ssh-keygen` to make an unencrypted key of `kind` at `path`
/// (replacing any); returns the private key's text.
pub fn ssh_keygen(path: &Path, kind: &str) -> String {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-C", "berth-it", "-N", "", "-t", kind, "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path).expect("read the key")
}

/// `SHA256:...` of a public key file, as `ssh-keygen -l` prints it.
pub fn ssh_fingerprint(pub_path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-E", "sha256", "-lf"])
        .arg(pub_path)
        .output()
        .expect("run ssh-keygen -l");
    assert!(out.status.success(), "ssh-keygen -l failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_owned()
}

/// An OpenSSH server of the test's own on 127.0.0.1 and a free port, in
/// its own temp dir: an ed25519 host key, one authorized client key
/// ([`Sshd::client_key`]), logins as root only, verbose log in `sshd.log`.
/// Killed by PID when dropped.
pub struct Sshd {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<std::process::Child>,
    stream_local: bool,
}

impl Sshd {
    /// Prepared (host key, client key, config) but not started.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-it-sshd-")
            .tempdir()
            .expect("tempdir");
        let sshd = Sshd {
            dir,
            port: free_port(),
            child: None,
            stream_local: true,
        };
        ssh_keygen(&sshd.path("host_ed25519"), "ed25519");
        ssh_keygen(&sshd.path("client"), "ed25519");
        std::fs::copy(sshd.path("client.pub"), sshd.path("authorized_keys"))
            .expect("authorized_keys");
        sshd
    }

    /// Prepared and started.
    pub fn started() -> Self {
        let mut sshd = Self::new();
        sshd.start();
        sshd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The authorized client key's private text.
    pub fn client_key(&self) -> String {
        std::fs::read_to_string(self.path("client")).expect("client key")
    }

    /// `SHA256:...` of the current host key.
    pub fn host_fingerprint(&self) -> String {
        ssh_fingerprint(&self.path("host_ed25519.pub"))
    }

    /// A new host key (a "rebuilt" host); takes effect on the next start.
    pub fn regenerate_host_key(&self) {
        ssh_keygen(&self.path("host_ed25519"), "ed25519");
    }

    /// Refuse to forward unix sockets (so the Docker socket cannot be
    /// reached); takes effect on the next start.
    pub fn forbid_stream_local(&mut self) {
        self.stream_local = false;
    }

    fn write_config(&self) {
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {pid}\n\
             AuthorizedKeysFile {authorized}\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n\
             AllowStreamLocalForwarding {stream_local}\nLogLevel VERBOSE\n",
            port = self.port,
            host_key = self.path("host_ed25519").display(),
            pid = self.path("sshd.pid").display(),
            authorized = self.path("authorized_keys").display(),
            stream_local = if self.stream_local { "yes" } else { "no" },
        );
        std::fs::write(self.path("sshd_config"), config).expect("sshd_config");
    }

    /// Starts sshd in the foreground (`-D -e`) and waits until it accepts
    /// TCP connections.
    pub fn start(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        assert!(self.child.is_none(), "sshd already runs");
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let _ = std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755));
        self.write_config();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sshd.log"))
            .expect("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn /usr/sbin/sshd");
        self.child = Some(child);
        let begin = std::time::Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("sshd exited with {status}: {}", self.log());
            }
            assert!(
                begin.elapsed() < std::time::Duration::from_secs(20),
                "sshd does not listen: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops sshd (by its PID) if it runs.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// How many logins sshd accepted so far.
    pub fn accepted_logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The moto server: `BERTH_MOTO_SERVER`, else `bin/moto_server` of the
/// venv that `scripts/ensure-test-deps.sh` makes (`BERTH_MOTO_VENV`, default
/// `~/.cache/berth-moto-venv`), else PATH.
pub fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("BERTH_MOTO_VENV").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/berth-moto-venv")
        },
        PathBuf::from,
    );
    let in_venv = venv.join("bin/moto_server");
    if in_venv.exists() {
        return in_venv;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join("moto_server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "no moto_server: run scripts/ensure-test-deps.sh, or point BERTH_MOTO_SERVER at one \
         (looked in {} and PATH)",
        venv.display()
    );
}
