//! Test helpers: a real OpenSSH server on 127.0.0.1 and a free port, in its
//! own temp dir, with host and client keys made by `ssh-keygen`. Killed by
//! PID when dropped.

#![allow(dead_code)]

use std::fs;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_ssh::HostSpec;
use tempfile::TempDir;

/// A port nothing listens on right now (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `ssh-keygen` to make a key at `path`; returns the private key text.
pub fn keygen(path: &Path, args: &[&str], passphrase: &str) -> String {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-C", "berth-test", "-N", passphrase, "-f"])
        .arg(path)
        .args(args)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read_to_string(path).unwrap()
}

/// `SHA256:...` of a public key file, as `ssh-keygen -l` prints it.
pub fn keygen_fingerprint(pub_path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-E", "sha256", "-lf"])
        .arg(pub_path)
        .output()
        .expect("run ssh-keygen -l");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

/// The `type base64` part of a `.pub` file.
pub fn pub_line(pub_path: &Path) -> String {
    let text = fs::read_to_string(pub_path).unwrap();
    let mut parts = text.split_whitespace();
    format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
}

/// A progress sink that keeps the messages.
#[derive(Clone, Default)]
pub struct Progress(pub Arc<Mutex<Vec<String>>>);

impl Progress {
    pub fn messages(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn sink(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let v = self.0.clone();
        move |m: &str| v.lock().unwrap().push(m.to_owned())
    }
}

/// An sshd of our own.
pub struct Sshd {
    dir: TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Host key types, e.g. `["ed25519"]`.
    host_key_types: Vec<&'static str>,
    stream_local: bool,
}

impl Sshd {
    /// Prepared (host key, config, empty authorized_keys) but not started.
    pub fn new() -> Sshd {
        Self::with_host_keys(&["ed25519"])
    }

    /// Like [`Sshd::new`] with these host key types (first is preferred by
    /// nothing; the client chooses).
    pub fn with_host_keys(types: &[&'static str]) -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("berth-ssh-test-")
            .tempdir()
            .unwrap();
        let sshd = Sshd {
            dir,
            port: free_port(),
            child: None,
            host_key_types: types.to_vec(),
            stream_local: true,
        };
        for t in types {
            sshd.make_host_key(t);
        }
        fs::write(sshd.path("authorized_keys"), "").unwrap();
        sshd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn make_host_key(&self, t: &str) {
        keygen(&self.path(&format!("host_{t}")), &["-t", t], "");
    }

    /// Replaces every host key with a new one (a "rebuilt" host).
    pub fn regenerate_host_keys(&self) {
        for t in &self.host_key_types {
            self.make_host_key(t);
        }
    }

    /// Forbid `direct-streamlocal` forwarding (takes effect on next start).
    pub fn forbid_stream_local(&mut self) {
        self.stream_local = false;
    }

    /// `SHA256:...` of the host key of type `t`.
    pub fn host_fingerprint_of(&self, t: &str) -> String {
        keygen_fingerprint(&self.path(&format!("host_{t}.pub")))
    }

    /// `SHA256:...` of the (first) host key.
    pub fn host_fingerprint(&self) -> String {
        self.host_fingerprint_of(self.host_key_types[0])
    }

    /// `ssh-ed25519 AAAA...` of the host key of type `t`.
    pub fn host_pub_line_of(&self, t: &str) -> String {
        pub_line(&self.path(&format!("host_{t}.pub")))
    }

    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA...` for the first host key.
    pub fn known_hosts_line(&self) -> String {
        format!(
            "[127.0.0.1]:{} {}",
            self.port,
            self.host_pub_line_of(self.host_key_types[0])
        )
    }

    /// Generates a client key `name` (extra ssh-keygen args, passphrase),
    /// authorizes it, and returns its private key text.
    pub fn client_key(&self, name: &str, args: &[&str], passphrase: &str) -> String {
        let path = self.path(&format!("client_{name}"));
        let text = keygen(&path, args, passphrase);
        let public = fs::read_to_string(path.with_extension("pub")).unwrap();
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.path("authorized_keys"))
            .unwrap();
        f.write_all(public.as_bytes()).unwrap();
        text
    }

    /// A client key the server does not know.
    pub fn stranger_key(&self) -> String {
        keygen(&self.path("stranger"), &["-t", "ed25519"], "")
    }

    /// A spec for this server logging in as root with `private_key`;
    /// timeout 30 s.
    pub fn spec(&self, private_key: &str) -> HostSpec {
        let mut spec = HostSpec::new("127.0.0.1", private_key);
        spec.port = self.port;
        spec.timeout = Duration::from_secs(30);
        spec
    }

    fn write_config(&self) {
        let mut cfg = format!("Port {}\nListenAddress 127.0.0.1\n", self.port);
        for t in &self.host_key_types {
            cfg += &format!("HostKey {}\n", self.path(&format!("host_{t}")).display());
        }
        cfg += &format!(
            "PidFile {}\nAuthorizedKeysFile {}\n",
            self.path("sshd.pid").display(),
            self.path("authorized_keys").display()
        );
        cfg += "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                Subsystem sftp internal-sftp\nLogLevel VERBOSE\n";
        cfg += if self.stream_local {
            "AllowStreamLocalForwarding yes\n"
        } else {
            "AllowStreamLocalForwarding no\n"
        };
        fs::write(self.path("sshd_config"), cfg).unwrap();
    }

    /// Starts sshd and waits until it accepts TCP connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "sshd already running");
        fs::create_dir_all("/run/sshd").unwrap();
        fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755)).unwrap();
        self.write_config();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sshd.log"))
            .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        self.child = Some(child);
        let begin = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("sshd exited with {status}: {}", self.log());
            }
            assert!(
                begin.elapsed() < Duration::from_secs(20),
                "sshd did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops sshd (by PID) if running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The sshd stderr log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// How many logins sshd accepted.
    pub fn accepted_logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
