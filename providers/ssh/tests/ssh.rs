//! berth-ssh against a real OpenSSH server: key types and formats, host key
//! policy, retries, and the pool.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_ssh::{HostSpec, KnownHostStore, MemoryKnownHosts, Pool, SshConnection, SshError};
use common::{Progress, Sshd, free_port, keygen, keygen_fingerprint};

fn quiet(_: &str) {}

async fn connect(spec: &HostSpec) -> Result<SshConnection, SshError> {
    SshConnection::connect(spec, &MemoryKnownHosts::new(), &quiet).await
}

async fn assert_echo_hi(spec: &HostSpec) {
    let conn = connect(spec)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let out = conn.exec("echo hi").await.unwrap();
    assert_eq!(out.stdout, "hi\n");
    assert!(out.success(), "{out:?}");
}

#[tokio::test]
async fn key_types_and_formats_log_in() {
    let mut sshd = Sshd::new();
    let keys = [
        ("ed25519", vec!["-t", "ed25519"]),
        ("rsa", vec!["-t", "rsa", "-b", "2048"]),
        ("rsa_pem", vec!["-t", "rsa", "-b", "2048", "-m", "PEM"]),
        ("rsa_pkcs8", vec!["-t", "rsa", "-b", "2048", "-m", "PKCS8"]),
        ("ecdsa", vec!["-t", "ecdsa", "-b", "256"]),
        ("ecdsa384", vec!["-t", "ecdsa", "-b", "384"]),
        ("ecdsa_pem", vec!["-t", "ecdsa", "-m", "PEM"]),
    ];
    let texts: Vec<(String, String)> = keys
        .iter()
        .map(|(name, args)| (name.to_string(), sshd.client_key(name, args, "")))
        .collect();
    sshd.start();
    for (name, text) in texts {
        let conn = connect(&sshd.spec(&text))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = conn.exec("echo hi").await.unwrap();
        assert_eq!(out.stdout, "hi\n", "{name}");
    }
    // CRLF line endings and newlines flattened to `\n` still work.
    let text = sshd.client_key("crlf", &["-t", "ed25519"], "");
    assert_echo_hi(&sshd.spec(&text.replace('\n', "\r\n"))).await;
    assert_echo_hi(&sshd.spec(&text.replace('\n', "\\n"))).await;
}

#[tokio::test]
async fn exec_reports_status_and_stderr() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();
    let conn = connect(&sshd.spec(&key)).await.unwrap();
    let out = conn.exec("echo out; echo err >&2; exit 3").await.unwrap();
    assert_eq!(out.status, Some(3));
    assert!(!out.success());
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(conn.fingerprint(), sshd.host_fingerprint());
}

#[tokio::test]
async fn encrypted_keys_need_the_passphrase() {
    let mut sshd = Sshd::new();
    let openssh = sshd.client_key("enc", &["-t", "ed25519"], "correct horse");
    let pem = sshd.client_key(
        "enc_pem",
        &["-t", "rsa", "-b", "2048", "-m", "PEM"],
        "pem pass",
    );
    sshd.start();

    for text in [&openssh, &pem] {
        let err = connect(&sshd.spec(text)).await.unwrap_err();
        assert!(matches!(err, SshError::Key { .. }), "{err:?}");
        assert!(err.to_string().contains("passphrase"), "{err}");
    }

    let mut wrong = sshd.spec(&openssh);
    wrong.passphrase = Some("wrong".into());
    let err = connect(&wrong).await.unwrap_err();
    assert!(matches!(err, SshError::Key { .. }), "{err:?}");
    assert!(err.to_string().contains("passphrase"), "{err}");

    let mut right = sshd.spec(&openssh);
    right.passphrase = Some("correct horse".into());
    assert_echo_hi(&right).await;
    let mut right = sshd.spec(&pem);
    right.passphrase = Some("pem pass".into());
    assert_echo_hi(&right).await;
}

#[tokio::test]
async fn pinned_fingerprint_must_match() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();

    let mut spec = sshd.spec(&key);
    spec.host_key = Some(sshd.host_fingerprint());
    assert_echo_hi(&spec).await;

    let other = keygen(&sshd.path("other_host"), &["-t", "ed25519"], "");
    drop(other);
    let wrong = keygen_fingerprint(&sshd.path("other_host.pub"));
    spec.host_key = Some(wrong.clone());
    let err = connect(&spec).await.unwrap_err();
    match &err {
        SshError::HostKeyMismatch {
            host,
            expected,
            seen,
            how_to_accept,
        } => {
            assert_eq!(host, &spec.key());
            assert_eq!(expected, &wrong);
            assert_eq!(seen, &sshd.host_fingerprint());
            assert!(how_to_accept.contains(&format!("host_key = \"{seen}\"")));
        }
        other => panic!("expected HostKeyMismatch, got {other:?}"),
    }
    let shown = err.to_string();
    assert!(
        shown.contains(&wrong) && shown.contains(&sshd.host_fingerprint()),
        "{shown}"
    );
}

#[tokio::test]
async fn known_hosts_line_must_match() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();

    let mut spec = sshd.spec(&key);
    spec.host_key = Some(sshd.known_hosts_line());
    assert_echo_hi(&spec).await;
    // A bare `.pub` line works too.
    spec.host_key = Some(sshd.host_pub_line_of("ed25519"));
    assert_echo_hi(&spec).await;

    keygen(&sshd.path("other_host"), &["-t", "ed25519"], "");
    let other_line = format!(
        "[127.0.0.1]:{} {}",
        sshd.port,
        common::pub_line(&sshd.path("other_host.pub"))
    );
    spec.host_key = Some(other_line);
    let err = connect(&spec).await.unwrap_err();
    let SshError::HostKeyMismatch { expected, seen, .. } = &err else {
        panic!("expected HostKeyMismatch, got {err:?}");
    };
    assert!(expected.contains(&keygen_fingerprint(&sshd.path("other_host.pub"))));
    assert_eq!(seen, &sshd.host_fingerprint());
}

#[tokio::test]
async fn pinned_key_type_is_preferred_when_server_has_several() {
    let mut sshd = Sshd::with_host_keys(&["ed25519", "rsa"]);
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();
    let mut spec = sshd.spec(&key);
    spec.host_key = Some(format!(
        "[127.0.0.1]:{} {}",
        sshd.port,
        sshd.host_pub_line_of("rsa")
    ));
    let conn = connect(&spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(conn.fingerprint(), sshd.host_fingerprint_of("rsa"));
}

#[tokio::test]
async fn known_hosts_file_match_mismatch_and_unknown() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();
    let file = sshd.path("known_hosts");
    let mut spec = sshd.spec(&key);
    spec.known_hosts_file = Some(file.clone());

    // Matching entry, plain and then hashed (`ssh-keygen -H`).
    std::fs::write(&file, format!("{}\n", sshd.known_hosts_line())).unwrap();
    assert_echo_hi(&spec).await;
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-H", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("|1|"));
    assert_echo_hi(&spec).await;

    // A different key recorded for this host.
    keygen(&sshd.path("other_host"), &["-t", "ed25519"], "");
    std::fs::write(
        &file,
        format!(
            "[127.0.0.1]:{} {}\n",
            sshd.port,
            common::pub_line(&sshd.path("other_host.pub"))
        ),
    )
    .unwrap();
    let err = connect(&spec).await.unwrap_err();
    let SshError::HostKeyMismatch {
        expected,
        seen,
        how_to_accept,
        ..
    } = &err
    else {
        panic!("expected HostKeyMismatch, got {err:?}");
    };
    assert!(expected.contains(&keygen_fingerprint(&sshd.path("other_host.pub"))));
    assert_eq!(seen, &sshd.host_fingerprint());
    assert!(how_to_accept.contains("ssh-keygen -R"), "{how_to_accept}");

    // The host is not in the file at all.
    std::fs::write(
        &file,
        format!(
            "[127.0.0.1]:{} {}\n",
            free_port(),
            sshd.host_pub_line_of("ed25519")
        ),
    )
    .unwrap();
    let err = connect(&spec).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err:?}");
    assert!(err.to_string().contains("known_hosts"), "{err}");

    // A file that does not exist is a configuration error.
    spec.known_hosts_file = Some(sshd.path("missing_known_hosts"));
    let err = connect(&spec).await.unwrap_err();
    assert!(matches!(err, SshError::Spec { .. }), "{err:?}");
}

#[tokio::test]
async fn trust_on_first_use_then_refuse_a_changed_key() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();
    let spec = sshd.spec(&key);
    let store = MemoryKnownHosts::new();
    let progress = Progress::default();
    let sink = progress.sink();

    let conn = SshConnection::connect(&spec, &store, &sink).await.unwrap();
    let first = sshd.host_fingerprint();
    assert_eq!(
        store.recorded(&spec.host_port()).as_deref(),
        Some(first.as_str())
    );
    // The first-use notice is a warning (tracing), printed at every
    // verbosity; tests/it/ssh.rs reads it in berth's stderr.
    drop(conn);

    // Same key again: accepted silently.
    SshConnection::connect(&spec, &store, &sink).await.unwrap();

    // The host is "rebuilt": same port, new host key.
    sshd.stop();
    sshd.regenerate_host_keys();
    sshd.start();
    let second = sshd.host_fingerprint();
    assert_ne!(first, second);
    let err = SshConnection::connect(&spec, &store, &sink)
        .await
        .unwrap_err();
    let SshError::HostKeyMismatch {
        host,
        expected,
        seen,
        how_to_accept,
    } = &err
    else {
        panic!("expected HostKeyMismatch, got {err:?}");
    };
    assert_eq!(host, &spec.key());
    assert_eq!(expected, &first);
    assert_eq!(seen, &second);
    assert!(
        how_to_accept.contains(&format!("host_key = \"{second}\"")),
        "{how_to_accept}"
    );
    // The recorded key is not replaced behind the user's back.
    assert_eq!(
        store.recorded(&spec.host_port()).as_deref(),
        Some(first.as_str())
    );

    // Pinning the new key, as the message says, is accepted.
    let mut pinned = spec.clone();
    pinned.host_key = Some(second.clone());
    SshConnection::connect(&pinned, &store, &sink)
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_client_key_is_an_auth_error() {
    let mut sshd = Sshd::new();
    sshd.client_key("k", &["-t", "ed25519"], "");
    let stranger = sshd.stranger_key();
    sshd.start();
    let spec = sshd.spec(&stranger);
    let store = MemoryKnownHosts::new();
    let err = SshConnection::connect(&spec, &store, &quiet)
        .await
        .unwrap_err();
    let SshError::Auth { host, user, .. } = &err else {
        panic!("expected Auth, got {err:?}");
    };
    assert_eq!(host, &spec.key());
    assert_eq!(user, "root");
    assert!(
        err.to_string()
            .contains(&format!("root@127.0.0.1:{}", sshd.port)),
        "{err}"
    );
    // Nothing is recorded for a connection that never logged in.
    assert_eq!(store.recorded(&spec.host_port()), None);
}

#[tokio::test]
async fn retries_until_sshd_comes_up() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    let spec = sshd.spec(&key);
    let progress = Progress::default();
    let sink = progress.sink();

    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        sshd.start();
        sshd
    });
    let result = SshConnection::connect(&spec, &MemoryKnownHosts::new(), &sink).await;
    let _sshd = starter.join().expect("sshd starter thread");
    let conn = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(conn.exec("echo hi").await.unwrap().stdout, "hi\n");
    let waits: Vec<String> = progress
        .messages()
        .into_iter()
        .filter(|m| m.starts_with(&format!("waiting for {}", spec.key())))
        .collect();
    assert!(!waits.is_empty(), "{:?}", progress.messages());
    assert!(
        waits[0].contains("attempt 1") && waits[0].contains("connection refused"),
        "{waits:?}"
    );
}

#[tokio::test]
async fn nothing_listening_is_unreachable_after_timeout() {
    let mut spec = HostSpec::new("127.0.0.1", keygen_once());
    spec.port = free_port();
    spec.timeout = Duration::from_secs(3);
    let progress = Progress::default();
    let sink = progress.sink();
    let err = SshConnection::connect(&spec, &MemoryKnownHosts::new(), &sink)
        .await
        .unwrap_err();
    let SshError::Unreachable {
        host,
        attempts,
        message,
        ..
    } = &err
    else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert_eq!(host, &spec.key());
    assert!(*attempts >= 2, "{attempts}");
    assert!(message.contains("connection refused"), "{message}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "could not connect to root@127.0.0.1:{} within",
            spec.port
        )),
        "{shown}"
    );
    assert!(!progress.messages().is_empty());
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let spec = HostSpec::new("127.0.0.1", "");
    let store = MemoryKnownHosts::new();
    let connect = SshConnection::connect(&spec, &store, &quiet);
    assert_send(&connect);
    let pool = Pool::new(Arc::new(MemoryKnownHosts::new()));
    let get = pool.get(&spec, &quiet);
    assert_send(&get);
    fn docker_is_send(conn: &SshConnection) {
        let fut = conn.docker(berth_ssh::DEFAULT_DOCKER_SOCKET);
        assert_send(&fut);
        let exec = conn.exec("true");
        assert_send(&exec);
    }
    let _ = docker_is_send;
}

fn keygen_once() -> String {
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("k"), &["-t", "ed25519"], "")
}

#[tokio::test]
async fn pool_shares_one_connection_per_host() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();
    let spec = sshd.spec(&key);
    let pool = Pool::new(Arc::new(MemoryKnownHosts::new()));

    let (a, b) = tokio::join!(pool.get(&spec, &quiet), pool.get(&spec, &quiet));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.same_connection(&b));
    let c = pool.get(&spec, &quiet).await.unwrap();
    assert!(a.same_connection(&c));
    // Channels on the shared connection work concurrently.
    let (x, y) = tokio::join!(a.exec("echo x"), b.exec("echo y"));
    assert_eq!(
        (x.unwrap().stdout, y.unwrap().stdout),
        ("x\n".into(), "y\n".into())
    );
    assert_eq!(sshd.accepted_logins(), 1, "{}", sshd.log());

    // Another user@host:port is another connection.
    let mut other = spec.clone();
    other.address = "localhost".into();
    let d = pool.get(&other, &quiet).await.unwrap();
    assert!(!a.same_connection(&d));
}

#[tokio::test]
async fn pool_reconnects_after_the_connection_dies() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();
    let mut spec = sshd.spec(&key);
    spec.host_key = Some(sshd.host_fingerprint());
    let pool = Pool::new(Arc::new(MemoryKnownHosts::new()));
    let first = pool.get(&spec, &quiet).await.unwrap();
    // Kill the per-connection sshd process: the session ends.
    let out = first.exec("kill -9 $PPID").await;
    drop(out);
    for _ in 0..500 {
        if first.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(first.is_closed());
    let second = pool.get(&spec, &quiet).await.unwrap();
    assert!(!first.same_connection(&second));
    assert_eq!(second.exec("echo hi").await.unwrap().stdout, "hi\n");
}
