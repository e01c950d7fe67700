//! The Docker Engine API through the SSH tunnel, against the real sshd and
//! the real dockerd on this machine: ping, version, build, create, start,
//! wait, logs, list and remove, plus the missing-socket and refused-forwarding
//! diagnostics.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_ssh::{DEFAULT_DOCKER_SOCKET, MemoryKnownHosts, SshConnection, SshError};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use common::Sshd;
use futures_util::TryStreamExt;

fn quiet(_: &str) {}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// Removes the test's containers (by label) and image (by tag) with the
/// local Docker CLI when dropped, so a failing test leaves nothing behind.
struct Cleanup {
    label: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label={}", self.label)])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// A build context: `FROM scratch` + the static busybox.
fn context_tar(label: &str) -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox must be a static binary: apt-get install -y busybox-static");
    let dockerfile =
        format!("FROM scratch\nCOPY busybox /busybox\nLABEL {label}\nENTRYPOINT [\"/busybox\"]\n");
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("busybox", busybox.as_slice(), 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    }
    builder.into_inner().unwrap()
}

async fn build(docker: &Docker, tag: &str, label: &str) {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let body = bollard::body_full(bytes::Bytes::from(context_tar(label)));
    let infos: Vec<_> = docker
        .build_image(options, None, Some(body))
        .try_collect()
        .await
        .expect("build through the tunnel");
    for info in infos {
        assert!(info.error_detail.is_none(), "build failed: {info:?}");
    }
}

#[tokio::test]
async fn docker_api_through_the_ssh_tunnel() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();
    let mut spec = sshd.spec(&key);
    spec.host_key = Some(sshd.host_fingerprint());
    let conn = SshConnection::connect(&spec, &MemoryKnownHosts::new(), &quiet)
        .await
        .unwrap();

    let docker = conn
        .docker(DEFAULT_DOCKER_SOCKET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(docker.ping().await.unwrap(), "OK");
    let version = docker.version().await.unwrap();
    assert!(version.api_version.is_some(), "{version:?}");
    // The client negotiated down to the engine's API version.
    assert_eq!(
        docker.client_version().to_string(),
        version.api_version.clone().unwrap()
    );

    let id = unique();
    let label_key = "berth-ssh-test";
    let label = format!("{label_key}={id}");
    let image = format!("berth-ssh-test:{id}");
    let _cleanup = Cleanup {
        label: label.clone(),
        image: image.clone(),
    };
    build(&docker, &image, &label).await;

    let name = format!("berth-ssh-test-{id}");
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(vec!["echo".into(), "hello over ssh".into()]),
                labels: Some(HashMap::from([(label_key.to_owned(), id.clone())])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&name, None).await.unwrap();
    let waited: Vec<_> = docker
        .wait_container(&name, None)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(waited.last().map(|w| w.status_code), Some(0));
    let logs: Vec<_> = docker
        .logs(
            &name,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        )
        .try_collect()
        .await
        .unwrap();
    let text: String = logs.iter().map(ToString::to_string).collect();
    assert_eq!(text, "hello over ssh\n");

    let listed = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&HashMap::from([("label", vec![label.as_str()])]))
                .build(),
        ))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id.as_deref(), Some(created.id.as_str()));

    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .unwrap();
    docker
        .remove_image(
            &image,
            Some(RemoveImageOptionsBuilder::default().force(true).build()),
            None,
        )
        .await
        .unwrap();
    let err = docker.inspect_container(&name, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }
        ),
        "{err:?}"
    );

    // The Docker client keeps the SSH connection alive on its own.
    drop(conn);
    assert_eq!(docker.ping().await.unwrap(), "OK");
}

#[tokio::test]
async fn missing_socket_is_no_docker_naming_the_host() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();
    let spec = sshd.spec(&key);
    let conn = SshConnection::connect(&spec, &MemoryKnownHosts::new(), &quiet)
        .await
        .unwrap();
    let missing = sshd.path("no-such-docker.sock");
    let err = conn.docker(missing.to_str().unwrap()).await.unwrap_err();
    let SshError::NoDocker { host, message } = &err else {
        panic!("expected NoDocker, got {err:?}");
    };
    assert_eq!(host, &spec.key());
    assert!(message.contains("no-such-docker.sock"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(err.to_string().contains(&spec.key()), "{err}");
    // The connection is still usable.
    assert_eq!(conn.exec("echo hi").await.unwrap().stdout, "hi\n");
}

#[tokio::test]
async fn refused_forwarding_is_no_docker() {
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.forbid_stream_local();
    sshd.start();
    let spec = sshd.spec(&key);
    let conn = SshConnection::connect(&spec, &MemoryKnownHosts::new(), &quiet)
        .await
        .unwrap();
    let err = conn.docker(DEFAULT_DOCKER_SOCKET).await.unwrap_err();
    let SshError::NoDocker { host, message } = &err else {
        panic!("expected NoDocker, got {err:?}");
    };
    assert_eq!(host, &spec.key());
    assert!(message.contains("AllowStreamLocalForwarding"), "{message}");
}

#[tokio::test]
async fn a_socket_that_is_not_docker_is_no_docker() {
    // Something listens on the socket but does not speak the Docker API.
    let mut sshd = Sshd::new();
    let key = sshd.client_key("k", &["-t", "ed25519"], "");
    sshd.start();
    let sock = sshd.path("not-docker.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"SSH-2.0-nope\r\n").await;
        }
    });
    let spec = sshd.spec(&key);
    let conn = SshConnection::connect(&spec, &MemoryKnownHosts::new(), &quiet)
        .await
        .unwrap();
    let err = conn.docker(sock.to_str().unwrap()).await.unwrap_err();
    server.abort();
    assert!(matches!(err, SshError::NoDocker { .. }), "{err:?}");
    assert!(err.to_string().contains("/_ping"), "{err}");
}
