//! The docker provider against the real Docker engine, through the
//! `Provider` trait: networks, images and containers are created, refreshed,
//! updated and deleted. Every test has its own env/lineage and cleans up
//! everything it labelled in `World`'s Drop.

mod common;

use std::collections::HashMap;

use berth_docker::{DockerProvider, REPLICA_LABEL};
use berth_provider::{Attrs, Provider, ProviderContext, ProviderError};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::CreateContainerOptionsBuilder;
use common::{RUN_LABEL, World, attrs};
use serde_json::json;

#[tokio::test]
async fn an_engine_that_does_not_answer_is_unreachable() {
    let provider = DockerProvider::new(ProviderContext {
        base_dir: std::env::temp_dir(),
    });
    let config = attrs(json!({
        "host": "unix:///nonexistent/berth-test/docker.sock",
        "registry_auth": [{"address": "example.invalid"}],
    }));
    // The local engine is reached lazily: configure succeeds, the first
    // call that needs the engine names it.
    provider
        .configure(&config)
        .await
        .expect("configure is lazy");
    let network = attrs(json!({ "name": "berth-unreachable" }));
    let owner = berth_provider::Ownership {
        env: "unreachable".to_owned(),
        lineage: "unreachable".to_owned(),
    };
    let request = berth_provider::ApplyRequest {
        type_name: "docker_network",
        address: "docker_network.unreachable",
        config: &network,
        prior: None,
        prior_id: None,
        config_hash: "0",
        owner: &owner,
    };
    match provider.create(request, &|_: &str| {}).await {
        Err(ProviderError::Unreachable { what, message }) => {
            assert!(
                what.contains("/nonexistent/berth-test/docker.sock"),
                "{what}"
            );
            assert!(message.contains("dockerd"), "{message}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn network_create_refresh_delete() {
    let w = World::new().await;
    let name = w.name("net");
    let config = w
        .prepare(
            "docker_network",
            attrs(json!({"name": name, "labels": [{"label": "team", "value": "qa"}]})),
        )
        .await;
    assert_eq!(config["driver"], json!("bridge"));
    assert_eq!(config["internal"], json!(false));

    let net = w
        .create("docker_network.app", &config)
        .await
        .expect("create");
    assert_eq!(net.attrs["id"], json!(net.id));
    assert_eq!(net.attrs["name"], json!(name));

    let inspected = w
        .docker
        .inspect_network(&net.id, None)
        .await
        .expect("inspect");
    let labels = inspected.labels.unwrap_or_default();
    assert_eq!(labels["berth.address"], "docker_network.app");
    assert_eq!(labels["team"], "qa");

    let observed = w.refresh("docker_network").await;
    assert_eq!(observed.len(), 1);
    assert_eq!(observed[0].address, "docker_network.app");
    assert_eq!(observed[0].id, net.id);
    assert_eq!(observed[0].attrs["name"], json!(name));
    assert_eq!(observed[0].attrs["driver"], json!("bridge"));
    assert_eq!(observed[0].attrs["internal"], json!(false));
    assert_eq!(
        observed[0].config_hash.as_deref(),
        Some(berth_provider::hash_attrs(&config).as_str())
    );

    // Creating the same resource again (state lost) adopts the network.
    let again = w
        .create("docker_network.app", &config)
        .await
        .expect("re-create");
    assert_eq!(again.id, net.id);

    // Another resource cannot take the name.
    let err = w
        .create("docker_network.other", &config)
        .await
        .expect_err("name conflict");
    assert!(err.to_string().contains("already exists"), "{err}");

    w.delete("docker_network.app", &net).await.expect("delete");
    assert!(w.refresh("docker_network").await.is_empty());
    w.delete("docker_network.app", &net)
        .await
        .expect("deleting a deleted network succeeds");
}

#[tokio::test]
async fn image_build_hash_build_refresh_delete() {
    let w = World::new().await;
    let context = w.write_busybox_context();
    std::fs::write(context.join(".dockerignore"), "notes.txt\n").expect("dockerignore");
    std::fs::write(context.join("notes.txt"), "one").expect("notes");
    let image_name = format!("{}:latest", w.name("img"));
    let raw = attrs(json!({
        "name": image_name,
        "build": {"context": "app", "build_args": {"VERSION": "1"}},
    }));

    let config = w.prepare("docker_image", raw.clone()).await;
    let hash = config["build_hash"]
        .as_str()
        .expect("build_hash")
        .to_owned();
    assert_eq!(hash.len(), 64);
    assert_eq!(
        w.prepare("docker_image", raw.clone()).await["build_hash"],
        json!(hash)
    );

    std::fs::write(context.join("notes.txt"), "two").expect("notes");
    assert_eq!(
        w.prepare("docker_image", raw.clone()).await["build_hash"],
        json!(hash),
        "a .dockerignore'd file does not count"
    );
    std::fs::write(context.join("version.txt"), "2").expect("version");
    let changed = w.prepare("docker_image", raw.clone()).await;
    assert_ne!(changed["build_hash"], json!(hash), "a context change shows");

    let image = w.create("docker_image.app", &changed).await.expect("build");
    let image_id = image.attrs["image_id"]
        .as_str()
        .expect("image_id")
        .to_owned();
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    assert_eq!(image.id, image_id);
    assert_eq!(image.attrs["build_hash"], changed["build_hash"]);
    assert!(image.attrs.contains_key("repo_digest"));
    assert!(
        w.progress_lines().iter().any(|l| l.starts_with("Step ")),
        "build output is reported: {:?}",
        w.progress_lines()
    );

    let inspected = w.docker.inspect_image(&image_name).await.expect("inspect");
    assert_eq!(inspected.id.as_deref(), Some(image_id.as_str()));
    let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels["berth.address"], "docker_image.app");
    assert_eq!(labels["berth.lineage"], w.owner.lineage);

    let observed = w.refresh("docker_image").await;
    assert_eq!(observed.len(), 1);
    assert_eq!(observed[0].address, "docker_image.app");
    assert_eq!(observed[0].attrs["image_id"], json!(image_id));

    // Without `build`, an image that exists locally is used as it is, and
    // `keep_locally` leaves it in place on delete.
    let existing = attrs(json!({"name": image_name, "keep_locally": true}));
    let existing_state = w
        .create("docker_image.existing", &existing)
        .await
        .expect("use the local image");
    assert_eq!(existing_state.attrs["image_id"], json!(image_id));
    w.delete("docker_image.existing", &existing_state)
        .await
        .expect("delete keeping the image");
    assert!(
        w.docker.inspect_image(&image_id).await.is_ok(),
        "kept locally"
    );

    // A missing image is pulled; its registry is a loopback port where
    // nothing listens (a name without a registry would send the engine to
    // Docker Hub), and the pull's error is reported.
    let missing = attrs(json!({"name": format!("127.0.0.1:1/{}:latest", w.name("missing"))}));
    let err = w
        .create("docker_image.missing", &missing)
        .await
        .expect_err("nothing to pull");
    assert!(err.to_string().contains("pulling image"), "{err}");

    w.delete("docker_image.app", &image).await.expect("delete");
    assert!(
        w.docker.inspect_image(&image_id).await.is_err(),
        "image removed"
    );
    assert!(w.refresh("docker_image").await.is_empty());
    w.delete("docker_image.app", &image)
        .await
        .expect("deleting a deleted image succeeds");
}

#[tokio::test]
async fn image_build_failure_reports_the_build_error() {
    let w = World::new().await;
    let context = w.write_busybox_context();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"false\"]\n",
    )
    .expect("Dockerfile");
    let config = w
        .prepare(
            "docker_image",
            attrs(
                json!({"name": format!("{}:latest", w.name("bad")), "build": {"context": "app"}}),
            ),
        )
        .await;
    let err = w
        .create("docker_image.bad", &config)
        .await
        .expect_err("the build fails");
    let text = err.to_string();
    assert!(text.contains("returned a non-zero code"), "{text}");
}

fn web_config(w: &World, image_id: &str, network: &str, replicas: u32) -> Attrs {
    attrs(json!({
        "name": w.name("web"),
        "image": image_id,
        "replicas": replicas,
        "ports": [{"internal": 5000}],
        "labels": [{"label": "team", "value": "qa"}],
        "networks_advanced": [{"name": network, "aliases": ["web"]}],
        "healthcheck": {"test": ["CMD", "/bin/busybox", "true"], "interval": "1s", "retries": 3},
        "wait": true,
        "wait_timeout": 60,
        "destroy_grace_seconds": 1,
        "env": ["BERTH_TEST_SECRET=s3cr3t-value"],
    }))
}

#[tokio::test]
async fn container_replicas_scale_heal_and_delete() {
    let w = World::new().await;
    let image = w.build_busybox_image().await;
    let image_id = image.attrs["image_id"]
        .as_str()
        .expect("image_id")
        .to_owned();
    let network = w
        .create(
            "docker_network.app",
            &w.prepare("docker_network", attrs(json!({"name": w.name("net")})))
                .await,
        )
        .await
        .expect("network");
    let net_name = w.name("net");
    let address = "docker_container.web";
    let name = w.name("web");

    // Two replicas, named and labelled by index.
    let config = w
        .prepare("docker_container", web_config(&w, &image_id, &net_name, 2))
        .await;
    assert_eq!(
        config["image_id"],
        json!(image_id),
        "prepare resolves the image"
    );
    assert_eq!(config["must_run"], json!(true));
    assert_eq!(config["restart"], json!("no"));
    let web = w.create(address, &config).await.expect("create");
    assert_eq!(web.attrs["replicas"], json!(2));
    assert_eq!(web.attrs["image_id"], json!(image_id));
    let ids: Vec<String> = serde_json::from_value(web.attrs["container_ids"].clone()).expect("ids");
    assert_eq!(ids.len(), 2);
    assert_eq!(web.id, ids[0]);
    for (k, id) in ids.iter().enumerate() {
        let c = w.docker.inspect_container(id, None).await.expect("inspect");
        assert_eq!(
            c.name.as_deref(),
            Some(format!("/{name}-{}", k + 1).as_str())
        );
        assert_eq!(c.image.as_deref(), Some(image_id.as_str()));
        let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
        assert_eq!(labels[REPLICA_LABEL], (k + 1).to_string());
        assert_eq!(labels["berth.address"], address);
        assert_eq!(labels["berth.env"], w.owner.env);
        assert_eq!(labels["team"], "qa");
        let state = c.state.expect("state");
        assert_eq!(state.running, Some(true));
        let settings = c.network_settings.expect("network settings");
        let ports = settings.ports.expect("ports");
        let binding = ports["5000/tcp"].as_ref().expect("5000/tcp is published");
        assert!(!binding[0].host_port.as_deref().unwrap_or("").is_empty());
        let networks = settings.networks.expect("networks");
        let endpoint = &networks[&net_name];
        assert!(
            endpoint
                .aliases
                .clone()
                .unwrap_or_default()
                .contains(&"web".to_owned()),
            "{endpoint:?}"
        );
    }
    assert!(
        w.progress_lines()
            .iter()
            .all(|l| !l.contains("s3cr3t-value")),
        "env values are never reported"
    );

    let observed = w.refresh("docker_container").await;
    assert_eq!(observed.len(), 1);
    assert_eq!(observed[0].address, address);
    assert_eq!(observed[0].id, ids[0]);
    assert_eq!(observed[0].attrs["replicas"], json!(2));
    assert_eq!(observed[0].attrs["container_ids"], json!(ids));
    assert_eq!(observed[0].attrs["image_id"], json!(image_id));
    assert!(!observed[0].attrs.contains_key("must_run"));

    // Scale up in place.
    let config3 = w
        .prepare("docker_container", web_config(&w, &image_id, &net_name, 3))
        .await;
    let web3 = w.update(address, &config3, &web).await.expect("scale to 3");
    let ids3: Vec<String> =
        serde_json::from_value(web3.attrs["container_ids"].clone()).expect("ids");
    assert_eq!(ids3.len(), 3);
    assert_eq!(ids3[..2], ids[..], "existing replicas are kept");
    assert_eq!(
        w.refresh("docker_container").await[0].attrs["replicas"],
        json!(3)
    );

    // A replica removed behind berth's back shows as a lower count...
    w.docker
        .remove_container(
            &format!("{name}-2"),
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .build(),
            ),
        )
        .await
        .expect("remove replica 2");
    let observed = w.refresh("docker_container").await;
    assert_eq!(observed[0].attrs["replicas"], json!(2));
    // ...and an update recreates it.
    let healed = w.update(address, &config3, &web3).await.expect("heal");
    let healed_ids: Vec<String> =
        serde_json::from_value(healed.attrs["container_ids"].clone()).expect("ids");
    assert_eq!(healed_ids.len(), 3);
    assert_eq!(healed_ids[0], ids3[0]);
    assert_ne!(healed_ids[1], ids3[1]);
    assert_eq!(
        w.refresh("docker_container").await[0].attrs["replicas"],
        json!(3)
    );

    // A stopped replica shows as must_run = false; an update starts it.
    w.docker
        .stop_container(
            &format!("{name}-3"),
            Some(
                bollard::query_parameters::StopContainerOptionsBuilder::new()
                    .t(1)
                    .build(),
            ),
        )
        .await
        .expect("stop replica 3");
    assert_eq!(
        w.refresh("docker_container").await[0].attrs["must_run"],
        json!(false)
    );
    let started = w.update(address, &config3, &healed).await.expect("start");
    assert!(
        !w.refresh("docker_container").await[0]
            .attrs
            .contains_key("must_run")
    );

    // Restart policy, memory and CPU shares in place; scale down to one
    // container named exactly `name`.
    let mut config1 = web_config(&w, &image_id, &net_name, 1);
    config1.insert("restart".into(), json!("unless-stopped"));
    config1.insert("memory".into(), json!(64));
    config1.insert("cpu_shares".into(), json!(512));
    let config1 = w.prepare("docker_container", config1).await;
    let single = w
        .update(address, &config1, &started)
        .await
        .expect("scale to 1");
    assert_eq!(single.attrs["replicas"], json!(1));
    let c = w
        .docker
        .inspect_container(&name, None)
        .await
        .expect("single container");
    assert_eq!(c.id.as_deref(), Some(single.id.as_str()));
    let host = c.host_config.expect("host config");
    assert_eq!(
        host.restart_policy
            .and_then(|p| p.name)
            .map(|n| n.to_string()),
        Some("unless-stopped".to_owned())
    );
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.cpu_shares, Some(512));
    let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
    assert!(!labels.contains_key(REPLICA_LABEL));
    let remaining = w.labelled_containers().await;
    assert_eq!(remaining.len(), 1, "the numbered replicas are gone");

    // Updating restart/memory on an existing container in place.
    let mut config1b = config1.clone();
    config1b.insert("restart".into(), json!("always"));
    config1b.insert("memory".into(), json!(128));
    let updated = w
        .update(address, &config1b, &single)
        .await
        .expect("update in place");
    assert_eq!(updated.id, single.id, "updated in place, not replaced");
    let host = w
        .docker
        .inspect_container(&single.id, None)
        .await
        .expect("inspect")
        .host_config
        .expect("host config");
    assert_eq!(host.memory, Some(128 * 1024 * 1024));
    assert_eq!(
        host.restart_policy
            .and_then(|p| p.name)
            .map(|n| n.to_string()),
        Some("always".to_owned())
    );

    w.delete(address, &updated).await.expect("delete");
    assert!(w.labelled_containers().await.is_empty());
    assert!(w.refresh("docker_container").await.is_empty());
    w.delete(address, &updated)
        .await
        .expect("deleting deleted containers succeeds");

    w.delete("docker_network.app", &network)
        .await
        .expect("network delete");
    w.delete("docker_image.app", &image)
        .await
        .expect("image delete");
    assert!(w.refresh("docker_image").await.is_empty());
}

#[tokio::test]
async fn container_name_conflicts() {
    let w = World::new().await;
    let image = w.build_busybox_image().await;
    let image_id = image.attrs["image_id"]
        .as_str()
        .expect("image_id")
        .to_owned();

    // A container that is not berth's holds the name: an error naming it.
    let foreign = w.name("foreign");
    w.docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&foreign).build()),
            ContainerCreateBody {
                image: Some(image_id.clone()),
                labels: Some(HashMap::from([(RUN_LABEL.to_owned(), w.id.clone())])),
                ..Default::default()
            },
        )
        .await
        .expect("foreign container");
    let config = w
        .prepare(
            "docker_container",
            attrs(json!({"name": foreign, "image": image_id})),
        )
        .await;
    let err = w
        .create("docker_container.foreign", &config)
        .await
        .expect_err("the name is taken");
    let text = err.to_string();
    assert!(
        text.contains(&foreign) && text.contains("not managed by berth"),
        "{text}"
    );

    // A leftover of the same resource (state lost) is replaced.
    let config = w
        .prepare(
            "docker_container",
            attrs(json!({"name": w.name("mine"), "image": image_id, "destroy_grace_seconds": 1})),
        )
        .await;
    let first = w
        .create("docker_container.mine", &config)
        .await
        .expect("create");
    let second = w
        .create("docker_container.mine", &config)
        .await
        .expect("re-create over the leftover");
    assert_ne!(first.id, second.id);
    let observed = w.refresh("docker_container").await;
    assert_eq!(observed.len(), 1);
    assert_eq!(observed[0].attrs["container_ids"], json!([second.id]));
    w.delete("docker_container.mine", &second)
        .await
        .expect("delete");

    // The image is still used by the foreign container: deleting the image
    // resource succeeds and leaves the image to Docker.
    w.delete("docker_image.app", &image)
        .await
        .expect("an image in use is left in place");
    assert!(w.docker.inspect_image(&image_id).await.is_ok());
}

#[tokio::test]
async fn failed_creates_leave_nothing_behind() {
    let w = World::new().await;
    let image = w.build_busybox_image().await;
    let image_id = image.attrs["image_id"]
        .as_str()
        .expect("image_id")
        .to_owned();

    // Unhealthy: the error carries the container's last log lines.
    let config = w
        .prepare(
            "docker_container",
            attrs(json!({
                "name": w.name("sick"),
                "image": image_id,
                "replicas": 2,
                "command": ["/bin/busybox", "sh", "-c",
                            "echo booting-berth-test; exec /bin/busybox httpd -f -p 5000"],
                "env": ["BERTH_TEST_SECRET=s3cr3t-value"],
                "healthcheck": {"test": ["CMD", "/bin/busybox", "false"],
                                "interval": "1s", "retries": 1},
                "wait": true,
                "wait_timeout": 60,
            })),
        )
        .await;
    let err = w
        .create("docker_container.sick", &config)
        .await
        .expect_err("never healthy");
    let text = err.to_string();
    assert!(text.contains("unhealthy"), "{text}");
    assert!(
        text.contains("booting-berth-test"),
        "logs are included: {text}"
    );
    assert!(
        !text.contains("s3cr3t-value"),
        "env values stay out of errors"
    );
    assert!(w.labelled_containers().await.is_empty(), "rolled back");

    // A replica that cannot start: the ones created before it go too.
    let config = w
        .prepare(
            "docker_container",
            attrs(json!({
                "name": w.name("broken"),
                "image": image_id,
                "replicas": 2,
                "command": ["/does-not-exist"],
            })),
        )
        .await;
    let err = w
        .create("docker_container.broken", &config)
        .await
        .expect_err("cannot start");
    assert!(err.to_string().contains("cannot start container"), "{err}");
    assert!(w.labelled_containers().await.is_empty(), "rolled back");
}
