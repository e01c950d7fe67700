//! Rolling replacement through `Provider::replace` against the real Docker
//! engine, for the cases the berth-binary tests (tests/it/rolling.rs) do not
//! drive: a container that publishes its own fixed host port is swapped
//! (old one stopped first) and restored when the new one fails, and
//! `max_parallel` starts several new replicas before any is waited for.
//! Images are the static-busybox one `World` builds; requests are counted,
//! never timed.

mod common;

use std::io::{Read, Write};

use berth_docker::DockerProvider;
use berth_provider::{Attrs, Provider, ProviderContext};
use common::{World, attrs};
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GET `path` on 127.0.0.1:`port`; the status code.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // The body is a binary: read bytes.
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits (bounded by attempts, not time asserts) until the port answers.
async fn answers(port: u16) -> bool {
    for _ in 0..100 {
        if http_status(port, "/bin/busybox") == Some(200) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

async fn container_id(w: &World, name: &str) -> Option<String> {
    w.docker
        .inspect_container(name, None)
        .await
        .ok()
        .and_then(|c| c.id)
}

fn provider_rolls(config: &Attrs) -> bool {
    DockerProvider::new(ProviderContext {
        base_dir: std::env::temp_dir(),
    })
    .replaces_itself("docker_container", config, false)
}

#[tokio::test]
async fn a_container_with_its_own_host_port_is_swapped_and_restored_on_failure() {
    let w = World::new().await;
    let image = w.build_busybox_image().await;
    let image_id = image.attrs["image_id"]
        .as_str()
        .expect("image_id")
        .to_owned();
    let port = free_port();
    let name = w.name("web");
    let config = |env: &str, test: &str| {
        attrs(json!({
            "name": name,
            "image": image_id,
            "env": [format!("VERSION={env}")],
            "ports": [{"internal": 5000, "external": port, "ip": "127.0.0.1"}],
            // berth's HTTP check: busybox httpd serves its own binary.
            "healthcheck": {"test": ["CMD", "/bin/busybox", test], "interval": "1s", "retries": 1,
                            "path": "/bin/busybox"},
            "wait": true,
            "wait_timeout": 15,
            "destroy_grace_seconds": 1,
        }))
    };
    let address = "docker_container.web";
    let v1 = w.prepare("docker_container", config("one", "true")).await;
    assert!(provider_rolls(&v1));
    let first = w.create(address, &v1).await.expect("create");
    assert!(answers(port).await);

    let v2 = w.prepare("docker_container", config("two", "true")).await;
    let second = w.replace(address, &v2, &first).await.expect("swap");
    assert_ne!(second.id, first.id);
    assert_eq!(
        container_id(&w, &name).await.as_deref(),
        Some(second.id.as_str())
    );
    assert!(answers(port).await);
    assert!(
        w.progress_lines()
            .iter()
            .any(|l| l.contains("to free its host ports")),
        "{:?}",
        w.progress_lines()
    );

    // A new container that never gets healthy: removed, the old one runs
    // again on its port.
    let bad = w
        .prepare("docker_container", config("three", "false"))
        .await;
    let err = w
        .replace(address, &bad, &second)
        .await
        .expect_err("the rollout must fail");
    let text = err.to_string();
    assert!(text.contains("rolling replacement stopped"), "{text}");
    assert!(
        text.contains("unhealthy") || text.contains("did not become healthy"),
        "{text}"
    );
    assert_eq!(
        container_id(&w, &name).await.as_deref(),
        Some(second.id.as_str())
    );
    let running = w
        .docker
        .inspect_container(&name, None)
        .await
        .expect("inspect")
        .state
        .and_then(|s| s.running);
    assert_eq!(running, Some(true));
    assert!(answers(port).await);
    let names: Vec<String> = w
        .labelled_containers()
        .await
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect();
    assert_eq!(names, vec![format!("/{name}")], "nothing temporary is left");

    w.delete(address, &second).await.expect("delete");
    assert!(w.labelled_containers().await.is_empty());
}

#[tokio::test]
async fn max_parallel_replaces_replicas_in_batches() {
    let w = World::new().await;
    let image = w.build_busybox_image().await;
    let image_id = image.attrs["image_id"]
        .as_str()
        .expect("image_id")
        .to_owned();
    let name = w.name("work");
    let config = |env: &str| {
        attrs(json!({
            "name": name,
            "image": image_id,
            "replicas": 3,
            "max_parallel": 2,
            "env": [format!("VERSION={env}")],
            "healthcheck": {"test": ["CMD", "/bin/busybox", "true"], "interval": "1s", "retries": 2},
            "destroy_grace_seconds": 1,
        }))
    };
    let address = "docker_container.work";
    let v1 = w.prepare("docker_container", config("one")).await;
    let first = w.create(address, &v1).await.expect("create");
    let v2 = w.prepare("docker_container", config("two")).await;
    let second = w.replace(address, &v2, &first).await.expect("replace");
    let ids: Vec<String> =
        serde_json::from_value(second.attrs["container_ids"].clone()).expect("ids");
    assert_eq!(ids.len(), 3);
    let old: Vec<String> =
        serde_json::from_value(first.attrs["container_ids"].clone()).expect("ids");
    for (k, id) in ids.iter().enumerate() {
        assert!(!old.contains(id));
        assert_eq!(
            container_id(&w, &format!("{name}-{}", k + 1))
                .await
                .as_deref(),
            Some(id.as_str())
        );
    }
    // Replicas 1 and 2 started before either was waited for; 3 came after.
    let lines = w.progress_lines();
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {lines:?}"))
    };
    let second_start = pos(&format!("starting {name}-2-next-"));
    let first_wait = pos("to become healthy");
    let third_start = pos(&format!("starting {name}-3-next-"));
    assert!(second_start < first_wait, "{lines:?}");
    assert!(first_wait < third_start, "{lines:?}");
    assert_eq!(w.labelled_containers().await.len(), 3);

    // Replacing with the very same configuration skips what already runs it.
    let again = w
        .replace(address, &v2, &second)
        .await
        .expect("no-op replace");
    assert_eq!(again.attrs["container_ids"], second.attrs["container_ids"]);
    w.delete(address, &again).await.expect("delete");
    assert!(w.labelled_containers().await.is_empty());
}
