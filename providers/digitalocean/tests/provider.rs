//! The DigitalOcean provider driven through the `Provider` trait against
//! the in-process API double (`tests/double`): create, refresh with one
//! paged list per type, in-place updates through actions and tags,
//! adoption of unrecorded objects, deletion, rate limits, auth errors and
//! create timeouts. Every test starts its own double and uses its own
//! ownership, so tests run in parallel.

mod double;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_digitalocean::{DigitalOceanProvider, PollTiming};
use berth_provider::http::RetryPolicy;
use berth_provider::{
    Applied, ApplyRequest, Attrs, DeleteRequest, Ownership, Provider, ProviderContext,
    ProviderError, hash_attrs,
};
use double::{Double, Options};
use serde_json::{Value, json};

const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl berth@test";
const OTHER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq7Dsvy9Ub0qLD1XqYhHf3xmR0nE2xRXJx0sQkq9VfM other@test";

fn owner() -> Ownership {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Ownership {
        env: "test".into(),
        lineage: format!("{}-{n}-{nanos:x}", std::process::id()),
    }
}

fn attrs(v: Value) -> Attrs {
    v.as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn fast() -> PollTiming {
    PollTiming {
        first: Duration::from_millis(5),
        max: Duration::from_millis(40),
    }
}

async fn provider_for(double: &Double) -> DigitalOceanProvider {
    let p = DigitalOceanProvider::new(ProviderContext {
        base_dir: std::env::temp_dir(),
    })
    .with_poll_timing(fast());
    p.configure(&attrs(
        json!({"token": double.token, "api_endpoint": double.base}),
    ))
    .await
    .expect("configure");
    p
}

/// Progress lines collected from a call.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Lines {
    fn push(&self, line: &str) {
        self.0.lock().expect("lines").push(line.to_owned());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().expect("lines").clone()
    }
}

/// `prepare`, then `create`, as the engine does; returns the result and the
/// config hash.
async fn create(
    p: &DigitalOceanProvider,
    owner: &Ownership,
    type_name: &str,
    address: &str,
    config: Value,
    lines: &Lines,
) -> Result<(Applied, String, Attrs), ProviderError> {
    let mut config = attrs(config);
    assert!(
        p.validate(type_name, &config).is_empty(),
        "{:?}",
        p.validate(type_name, &config)
    );
    p.prepare(type_name, &mut config).await?;
    let hash = hash_attrs(&config);
    let progress = |l: &str| lines.push(l);
    let applied = p
        .create(
            ApplyRequest {
                type_name,
                address,
                config: &config,
                prior: None,
                prior_id: None,
                config_hash: &hash,
                owner,
            },
            &progress,
        )
        .await?;
    Ok((applied, hash, config))
}

async fn update(
    p: &DigitalOceanProvider,
    owner: &Ownership,
    type_name: &str,
    address: &str,
    prior: &Applied,
    config: Value,
    lines: &Lines,
) -> Result<(Applied, String), ProviderError> {
    let mut config = attrs(config);
    p.prepare(type_name, &mut config).await?;
    let hash = hash_attrs(&config);
    let progress = |l: &str| lines.push(l);
    let applied = p
        .update(
            ApplyRequest {
                type_name,
                address,
                config: &config,
                prior: Some(&prior.attrs),
                prior_id: Some(&prior.id),
                config_hash: &hash,
                owner,
            },
            &progress,
        )
        .await?;
    Ok((applied, hash))
}

fn droplet_config(name: &str) -> Value {
    json!({
        "name": name,
        "region": "nyc3",
        "size": "s-1vcpu-1gb",
        "image": "ubuntu-24-04-x64",
        "tags": ["web"],
        "monitoring": true,
        "timeouts": {"create": "1m"},
    })
}

fn tags_of(v: &Value) -> Vec<String> {
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn creates_key_droplet_and_firewall_with_computed_attributes() {
    let double = Double::start(Options::default()).await;
    let p = provider_for(&double).await;
    let o = owner();
    let lines = Lines::default();

    let (key, _, _) = create(
        &p,
        &o,
        "digitalocean_ssh_key",
        "digitalocean_ssh_key.deploy",
        json!({"name": "deploy", "public_key": format!("{PUBLIC_KEY}\n")}),
        &lines,
    )
    .await
    .expect("create key");
    assert!(key.id.parse::<u64>().is_ok(), "{}", key.id);
    let fingerprint = key.attrs["fingerprint"].as_str().expect("fingerprint");
    assert_eq!(fingerprint.split(':').count(), 16, "{fingerprint}");
    assert_eq!(key.attrs["public_key"], json!(PUBLIC_KEY), "trimmed");

    let mut config = droplet_config("web-1");
    config["ssh_keys"] = json!([key.id]);
    config["user_data"] = json!("#cloud-config\npackages: [docker.io]\n");
    let (droplet, hash, _) = create(
        &p,
        &o,
        "digitalocean_droplet",
        "digitalocean_droplet.web",
        config,
        &lines,
    )
    .await
    .expect("create droplet");
    let a = &droplet.attrs;
    assert_eq!(a["id"], json!(droplet.id));
    assert_eq!(a["urn"], json!(format!("do:droplet:{}", droplet.id)));
    assert_eq!(a["status"], json!("active"));
    assert!(
        a["ipv4_address"]
            .as_str()
            .expect("public ip")
            .starts_with("203.0.113.")
    );
    assert!(
        a["ipv4_address_private"]
            .as_str()
            .expect("private ip")
            .starts_with("10.10.")
    );
    assert_eq!(a["price_monthly"], json!(6.0));
    assert_eq!(a["vpc_uuid"], json!("760e09ef-dc84-11e8-981e-3cfdfeaae000"));
    assert_eq!(a["tags"], json!(["web"]), "berth's tags stay hidden");
    let all = lines.all();
    assert!(
        all.iter().any(|l| l == "status new, waiting for active"),
        "{all:?}"
    );

    // The droplet carries berth's ownership tags, the config hash in full.
    let remote = double.droplet(&droplet.id).expect("droplet exists");
    let tags = tags_of(&remote);
    assert!(tags.contains(&"web".to_owned()));
    assert!(tags.contains(&"berth-env:test".to_owned()), "{tags:?}");
    assert!(
        tags.contains(&"berth-addr:digitalocean_droplet__web".to_owned()),
        "{tags:?}"
    );
    assert!(tags.contains(&format!("berth-cfg:{hash}")), "{tags:?}");
    assert!(remote["features"].to_string().contains("monitoring"));

    let (fw, _, fw_config) = create(
        &p,
        &o,
        "digitalocean_firewall",
        "digitalocean_firewall.web",
        json!({
            "name": "web-fw",
            "droplet_ids": [droplet.id],
            "inbound_rule": [
                {"protocol": "tcp", "port_range": "443", "source_addresses": ["0.0.0.0/0", "::/0"]},
                {"protocol": "tcp", "port_range": "80", "source_addresses": ["0.0.0.0/0", "::/0"]},
                {"protocol": "icmp", "source_addresses": ["0.0.0.0/0"]}
            ],
            "outbound_rule": [
                {"protocol": "tcp", "port_range": "all", "destination_addresses": ["0.0.0.0/0"]}
            ]
        }),
        &lines,
    )
    .await
    .expect("create firewall");
    let remote_fw = double.firewall(&fw.id).expect("firewall exists");
    assert_eq!(
        remote_fw["droplet_ids"],
        json!([droplet.id.parse::<u64>().unwrap()])
    );
    let fw_tags = tags_of(&remote_fw);
    assert!(
        fw_tags.iter().all(|t| t.starts_with("berth-fw-")),
        "{fw_tags:?}"
    );
    assert!(fw_tags.contains(&"berth-fw-addr:digitalocean_firewall__web".to_owned()));
    assert!(
        remote_fw.to_string().contains(r#""ports":"0""#),
        "all ports is 0"
    );

    // Refresh reads back exactly what was configured: no drift.
    let seen = p
        .refresh("digitalocean_firewall", &o, &[])
        .await
        .expect("refresh firewalls");
    assert_eq!(seen.len(), 1);
    for key in [
        "name",
        "droplet_ids",
        "tags",
        "inbound_rule",
        "outbound_rule",
    ] {
        assert_eq!(seen[0].attrs[key], fw_config[key], "{key}");
    }
    let seen = p
        .refresh("digitalocean_droplet", &o, &[])
        .await
        .expect("refresh droplets");
    assert_eq!(seen.len(), 1);
    for key in ["name", "size", "tags", "monitoring", "backups"] {
        assert_eq!(seen[0].attrs[key], droplet.attrs[key], "{key}");
    }
    // Every route used was checked against the spec, and none broke it.
    assert_eq!(double.unvalidated_routes(), Vec::<String>::new());
    assert!(double.spec_checked() > 10, "{}", double.spec_checked());
    double.assert_spec_clean();
}

#[tokio::test]
async fn refresh_is_one_paged_list_per_type() {
    let double = Double::start(Options::default()).await;
    let p = provider_for(&double).await;
    let o = owner();
    for i in 0..250 {
        double.seed_droplet(
            &format!("node-{i}"),
            &[
                "berth-env:test".to_owned(),
                format!("berth-lineage:{}", o.lineage),
                format!("berth-addr:digitalocean_droplet__node:5b{i}:5d"),
                "berth-cfg:abc".to_owned(),
            ],
        );
    }
    // Someone else's droplets are not listed as ours.
    double.seed_droplet("stranger", &["web".to_owned()]);
    double.seed_droplet(
        "other-env",
        &[
            "berth-env:prod".to_owned(),
            format!("berth-lineage:{}", o.lineage),
            "berth-addr:digitalocean_droplet__x".to_owned(),
        ],
    );

    let seen = p
        .refresh("digitalocean_droplet", &o, &[])
        .await
        .expect("refresh");
    assert_eq!(seen.len(), 250);
    assert!(
        seen.iter()
            .any(|s| s.address == "digitalocean_droplet.node[249]")
    );
    assert!(seen.iter().all(|s| s.config_hash.as_deref() == Some("abc")));
    assert_eq!(
        double.count("GET /v2/droplets"),
        2,
        "one list call, two pages of 200: {:?}",
        double.counts()
    );
    assert_eq!(double.count("GET /v2/droplets/{id}"), 0);

    p.refresh("digitalocean_firewall", &o, &[])
        .await
        .expect("refresh firewalls");
    assert_eq!(double.count("GET /v2/firewalls"), 1);
    p.refresh("digitalocean_ssh_key", &o, &[])
        .await
        .expect("refresh keys");
    assert_eq!(
        double.count("GET /v2/account/keys"),
        0,
        "no recorded key, no call to the 10-a-minute endpoint"
    );
    p.refresh(
        "digitalocean_ssh_key",
        &o,
        &[("digitalocean_ssh_key.k".into(), "1".into())],
    )
    .await
    .expect("refresh keys");
    assert_eq!(double.count("GET /v2/account/keys"), 1);
}

#[tokio::test]
async fn rename_resize_backups_and_tags_update_in_place() {
    let double = Double::start(Options::default()).await;
    let p = provider_for(&double).await;
    let o = owner();
    let lines = Lines::default();
    let address = "digitalocean_droplet.web";
    let (droplet, old_hash, _) = create(
        &p,
        &o,
        "digitalocean_droplet",
        address,
        droplet_config("web-1"),
        &lines,
    )
    .await
    .expect("create");

    // Rename: one action, waited for until completed.
    let mut config = droplet_config("web-2");
    let (renamed, _) = update(
        &p,
        &o,
        "digitalocean_droplet",
        address,
        &droplet,
        config.clone(),
        &lines,
    )
    .await
    .expect("rename");
    assert_eq!(renamed.id, droplet.id, "same droplet");
    assert_eq!(double.droplet(&droplet.id).unwrap()["name"], json!("web-2"));
    assert_eq!(double.count("POST /v2/droplets/{id}/actions"), 1);
    assert!(
        double.count("GET /v2/actions/{id}") >= 2,
        "{:?}",
        double.counts()
    );

    // Tags: tag and untag, berth's config-hash tag moves along.
    config["tags"] = json!(["api", "blue"]);
    let (retagged, new_hash) = update(
        &p,
        &o,
        "digitalocean_droplet",
        address,
        &renamed,
        config.clone(),
        &lines,
    )
    .await
    .expect("retag");
    assert_eq!(retagged.attrs["tags"], json!(["api", "blue"]));
    let tags = tags_of(&double.droplet(&droplet.id).unwrap());
    assert!(tags.contains(&"api".to_owned()) && tags.contains(&"blue".to_owned()));
    assert!(!tags.contains(&"web".to_owned()), "{tags:?}");
    assert!(tags.contains(&format!("berth-cfg:{new_hash}")), "{tags:?}");
    assert!(!tags.contains(&format!("berth-cfg:{old_hash}")), "{tags:?}");
    assert!(tags.contains(&format!("berth-lineage:{}", o.lineage)));
    assert!(double.count("POST /v2/tags/{tag}/resources") >= 3);
    assert!(double.count("DELETE /v2/tags/{tag}/resources") >= 2);
    assert_eq!(
        double.count("POST /v2/droplets/{id}/actions"),
        1,
        "no action for tags"
    );

    // Resize: power off, resize, power on; and backups on.
    config["size"] = json!("s-2vcpu-4gb");
    config["backups"] = json!(true);
    let (resized, _) = update(
        &p,
        &o,
        "digitalocean_droplet",
        address,
        &retagged,
        config,
        &lines,
    )
    .await
    .expect("resize");
    let remote = double.droplet(&droplet.id).unwrap();
    assert_eq!(remote["size_slug"], json!("s-2vcpu-4gb"));
    assert_eq!(remote["status"], json!("active"), "powered on again");
    assert!(remote["features"].to_string().contains("backups"));
    assert_eq!(resized.attrs["status"], json!("active"));
    assert_eq!(double.count("POST /v2/droplets/{id}/actions"), 1 + 3 + 1);
    let all = lines.all();
    assert!(all.iter().any(|l| l.contains("powering off")), "{all:?}");
    assert!(
        all.iter().any(|l| l.contains("renaming web-1 to web-2")),
        "{all:?}"
    );
}

#[tokio::test]
async fn schemas_flag_replacements_like_terraform() {
    let p = DigitalOceanProvider::new(ProviderContext {
        base_dir: std::env::temp_dir(),
    });
    let schema = |t: &str| {
        p.schemas()
            .iter()
            .find(|s| s.type_name == t)
            .cloned()
            .expect("schema")
    };
    let droplet = schema("digitalocean_droplet");
    assert!(droplet.forces_replacement("image"));
    assert!(droplet.forces_replacement("region"));
    assert!(droplet.forces_replacement("user_data"));
    assert!(droplet.forces_replacement("ssh_keys"));
    assert!(!droplet.forces_replacement("tags"));
    assert!(!droplet.forces_replacement("name"));
    assert!(!droplet.forces_replacement("size"));
    assert!(droplet.block("timeouts").is_some());
    let key = schema("digitalocean_ssh_key");
    assert!(key.forces_replacement("public_key"));
    assert!(!key.forces_replacement("name"));
    let fw = schema("digitalocean_firewall");
    for name in [
        "name",
        "droplet_ids",
        "tags",
        "inbound_rule",
        "outbound_rule",
    ] {
        assert!(!fw.forces_replacement(name), "{name}");
    }

    // Reserved tags and bad rules are refused before any call.
    let problems = p.validate(
        "digitalocean_droplet",
        &attrs(json!({"name": "web_1", "tags": ["berth-env:x"], "timeouts": {"create": "soon"}})),
    );
    let named: Vec<&str> = problems.iter().map(|p| p.attribute.as_str()).collect();
    assert_eq!(named, ["name", "tags", "timeouts"], "{problems:?}");
    let problems = p.validate(
        "digitalocean_firewall",
        &attrs(json!({"name": "fw", "inbound_rule": [{"protocol": "tcp"}]})),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[tokio::test]
async fn unrecorded_droplet_is_found_with_address_and_config_hash() {
    let double = Double::start(Options::default()).await;
    let p = provider_for(&double).await;
    let o = owner();
    let lines = Lines::default();
    // The apply created it, then stopped before writing state.
    let (droplet, hash, _) = create(
        &p,
        &o,
        "digitalocean_droplet",
        "module.app.digitalocean_droplet.web[\"eu\"]",
        droplet_config("web-eu"),
        &lines,
    )
    .await
    .expect("create");
    let seen = p
        .refresh("digitalocean_droplet", &o, &[])
        .await
        .expect("refresh");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].address,
        "module.app.digitalocean_droplet.web[\"eu\"]"
    );
    assert_eq!(seen[0].id, droplet.id);
    assert_eq!(seen[0].config_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(hash.len(), 64, "the full hash is stored");
    assert_eq!(seen[0].attrs["ipv4_address"], droplet.attrs["ipv4_address"]);

    // Another environment does not see it.
    let other = Ownership {
        env: "prod".into(),
        ..o.clone()
    };
    assert!(
        p.refresh("digitalocean_droplet", &other, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn key_created_twice_is_adopted_or_refused_with_the_api_message() {
    let double = Double::start(Options::default()).await;
    let p = provider_for(&double).await;
    let o = owner();
    let lines = Lines::default();
    let config = json!({"name": "deploy", "public_key": PUBLIC_KEY});
    let (first, _, _) = create(
        &p,
        &o,
        "digitalocean_ssh_key",
        "digitalocean_ssh_key.a",
        config.clone(),
        &lines,
    )
    .await
    .expect("create");
    // Same name and key: the leftover of an interrupted apply, adopted.
    let (again, _, _) = create(
        &p,
        &o,
        "digitalocean_ssh_key",
        "digitalocean_ssh_key.a",
        config,
        &lines,
    )
    .await
    .expect("adopt");
    assert_eq!(again.id, first.id);
    assert_eq!(double.keys().len(), 1);
    assert!(lines.all().iter().any(|l| l.contains("adopting")));

    // Another name: DigitalOcean's refusal, with its message and request id.
    let err = create(
        &p,
        &o,
        "digitalocean_ssh_key",
        "digitalocean_ssh_key.b",
        json!({"name": "other", "public_key": PUBLIC_KEY}),
        &lines,
    )
    .await
    .expect_err("duplicate key");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "DigitalOcean API: 422 unprocessable_entity: SSH Key is already in use on your account (request id "
        ),
        "{msg}"
    );
    assert!(msg.contains("`deploy`"), "{msg}");

    // Rename in place, then delete (twice: already gone is fine).
    let (renamed, _) = update(
        &p,
        &o,
        "digitalocean_ssh_key",
        "digitalocean_ssh_key.a",
        &first,
        json!({"name": "deploy-2", "public_key": PUBLIC_KEY}),
        &lines,
    )
    .await
    .expect("rename");
    assert_eq!(renamed.id, first.id);
    assert_eq!(double.keys()[0]["name"], json!("deploy-2"));
    let seen = p
        .refresh(
            "digitalocean_ssh_key",
            &o,
            &[("digitalocean_ssh_key.a".into(), first.id.clone())],
        )
        .await
        .expect("refresh");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].attrs["name"], json!("deploy-2"));
    assert_eq!(seen[0].config_hash, None);
    for _ in 0..2 {
        p.delete(
            DeleteRequest {
                type_name: "digitalocean_ssh_key",
                address: "digitalocean_ssh_key.a",
                id: &first.id,
                attrs: &renamed.attrs,
                owner: &o,
            },
            &|_| {},
        )
        .await
        .expect("delete");
    }
    assert!(double.keys().is_empty());
    let _ = OTHER_KEY;
}

#[tokio::test]
async fn firewall_rules_and_droplets_update_in_place() {
    let double = Double::start(Options::default()).await;
    let p = provider_for(&double).await;
    let o = owner();
    let lines = Lines::default();
    let a = double.seed_droplet("a", &[]).to_string();
    let b = double.seed_droplet("b", &[]).to_string();
    let address = "digitalocean_firewall.app";
    let (fw, _, _) = create(
        &p,
        &o,
        "digitalocean_firewall",
        address,
        json!({
            "name": "app",
            "droplet_ids": [a],
            "inbound_rule": [{"protocol": "tcp", "port_range": "8080", "source_addresses": ["0.0.0.0/0"]}]
        }),
        &lines,
    )
    .await
    .expect("create");
    let (updated, hash) = update(
        &p,
        &o,
        "digitalocean_firewall",
        address,
        &fw,
        json!({
            "name": "app",
            "droplet_ids": [b, a],
            "tags": ["frontend"],
            "inbound_rule": [
                {"protocol": "tcp", "port_range": "8080", "source_addresses": ["0.0.0.0/0"]},
                {"protocol": "udp", "port_range": "5353", "source_droplet_ids": [a]}
            ]
        }),
        &lines,
    )
    .await
    .expect("update");
    assert_eq!(updated.id, fw.id);
    assert_eq!(double.count("PUT /v2/firewalls/{id}"), 1);
    let remote = double.firewall(&fw.id).unwrap();
    assert_eq!(remote["inbound_rules"].as_array().unwrap().len(), 2);
    assert_eq!(remote["droplet_ids"].as_array().unwrap().len(), 2);
    let tags = tags_of(&remote);
    assert!(tags.contains(&"frontend".to_owned()));
    assert!(tags.contains(&format!("berth-fw-cfg:{hash}")), "{tags:?}");
    assert!(
        tags.contains(&format!("berth-fw-lineage:{}", o.lineage)),
        "{tags:?}"
    );
    let seen = p.refresh("digitalocean_firewall", &o, &[]).await.unwrap();
    assert_eq!(seen[0].config_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(seen[0].attrs["tags"], json!(["frontend"]));

    p.delete(
        DeleteRequest {
            type_name: "digitalocean_firewall",
            address,
            id: &fw.id,
            attrs: &updated.attrs,
            owner: &o,
        },
        &|_| {},
    )
    .await
    .expect("delete");
    assert!(double.firewall(&fw.id).is_none());
    assert_eq!(double.unvalidated_routes(), Vec::<String>::new());
    double.assert_spec_clean();
}

#[tokio::test]
async fn delete_waits_until_the_droplet_is_gone() {
    let double = Double::start(Options {
        polls_until_gone: 3,
        ..Options::default()
    })
    .await;
    let p = provider_for(&double).await;
    let o = owner();
    let lines = Lines::default();
    let (droplet, _, _) = create(
        &p,
        &o,
        "digitalocean_droplet",
        "digitalocean_droplet.web",
        droplet_config("web"),
        &lines,
    )
    .await
    .expect("create");
    let reads_before = double.count("GET /v2/droplets/{id}");
    p.delete(
        DeleteRequest {
            type_name: "digitalocean_droplet",
            address: "digitalocean_droplet.web",
            id: &droplet.id,
            attrs: &droplet.attrs,
            owner: &o,
        },
        &|l| lines.push(l),
    )
    .await
    .expect("delete");
    assert!(
        double.droplet(&droplet.id).is_none(),
        "gone when delete returns"
    );
    assert_eq!(double.count("DELETE /v2/droplets/{id}"), 1);
    assert_eq!(
        double.count("GET /v2/droplets/{id}") - reads_before,
        4,
        "three reads still found it, the fourth got 404"
    );
    // Deleting again: already gone is fine.
    p.delete(
        DeleteRequest {
            type_name: "digitalocean_droplet",
            address: "digitalocean_droplet.web",
            id: &droplet.id,
            attrs: &droplet.attrs,
            owner: &o,
        },
        &|_| {},
    )
    .await
    .expect("delete again");
}

#[tokio::test]
async fn rate_limited_requests_are_retried() {
    let double = Double::start(Options {
        rate_limit_every: Some(2),
        ..Options::default()
    })
    .await;
    let p = DigitalOceanProvider::new(ProviderContext {
        base_dir: std::env::temp_dir(),
    })
    .with_poll_timing(fast())
    .with_retry_policy(RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
        max_elapsed: Duration::from_secs(30),
    });
    p.configure(&attrs(
        json!({"token": double.token, "api_endpoint": double.base}),
    ))
    .await
    .expect("configure");
    let o = owner();
    let lines = Lines::default();
    // Request 1 (POST) passes, request 2 is a 429; a POST is retried on
    // 429 because the server did not act.
    let (key, _, _) = create(
        &p,
        &o,
        "digitalocean_ssh_key",
        "digitalocean_ssh_key.k",
        json!({"name": "k", "public_key": PUBLIC_KEY}),
        &lines,
    )
    .await
    .expect("create key");
    let seen = p
        .refresh(
            "digitalocean_ssh_key",
            &o,
            &[("digitalocean_ssh_key.k".into(), key.id.clone())],
        )
        .await
        .expect("refresh despite 429");
    assert_eq!(seen.len(), 1);
    assert!(double.rate_limited() >= 1);
    assert_eq!(p.http_retries(), double.rate_limited());
    assert_eq!(
        double.keys().len(),
        1,
        "a retried POST did not create twice"
    );
}

#[tokio::test]
async fn unauthorized_is_clear_and_never_shows_the_token() {
    let double = Double::start(Options::default()).await;
    let secret = "dop_v1_wrong_secret_value_42";
    let p = DigitalOceanProvider::new(ProviderContext {
        base_dir: std::env::temp_dir(),
    })
    .with_poll_timing(fast());
    p.configure(&attrs(
        json!({"token": secret, "api_endpoint": double.base}),
    ))
    .await
    .expect("configure");
    let err = p
        .refresh("digitalocean_droplet", &owner(), &[])
        .await
        .expect_err("401");
    let msg = err.to_string();
    assert!(
        msg.contains("401 unauthorized: Unable to authenticate you"),
        "{msg}"
    );
    assert!(msg.contains("token"), "says which token to check: {msg}");
    assert!(!msg.contains(secret), "{msg}");
    assert!(!format!("{err:?}").contains(secret));
    assert!(!format!("{p:?}").contains(secret));
}

#[tokio::test]
async fn create_times_out_naming_the_droplet() {
    let double = Double::start(Options {
        polls_until_active: None,
        ..Options::default()
    })
    .await;
    let p = provider_for(&double).await;
    let o = owner();
    let lines = Lines::default();
    let mut config = droplet_config("slow-web");
    config["timeouts"] = json!({"create": "2s"});
    let err = create(
        &p,
        &o,
        "digitalocean_droplet",
        "digitalocean_droplet.slow",
        config,
        &lines,
    )
    .await
    .expect_err("timeout");
    let ProviderError::Timeout(msg) = &err else {
        panic!("expected a timeout, got {err:?}");
    };
    assert!(msg.contains("droplet slow-web (id "), "{msg}");
    assert!(msg.contains("timeouts.create"), "{msg}");
    assert!(msg.contains("status new"), "{msg}");
    // It is not lost: the next refresh finds it for adoption.
    let seen = p.refresh("digitalocean_droplet", &o, &[]).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].address, "digitalocean_droplet.slow");
}

#[tokio::test]
async fn the_double_validates_like_the_api() {
    let double = Double::start(Options::default()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/droplets", double.base);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(&url)
        .bearer_auth(&double.token)
        .json(&json!({"name": "a", "size": "s-1vcpu-1gb"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], json!("unprocessable_entity"));
    assert!(body["request_id"].is_string());
    let r = client
        .get(format!("{url}?per_page=500"))
        .bearer_auth(&double.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = client
        .get(format!("{url}/424242"))
        .bearer_auth(&double.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], json!("not_found"));
    // The two wrong requests also break the spec; the double noted them.
    let found = double.take_violations();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].contains("POST /v2/droplets (droplets_create) request")
            && found[0].contains("`image` missing"),
        "{found:#?}"
    );
    assert!(
        found[1].contains("query parameter `per_page` = \"500\"")
            && found[1].contains("above the maximum 200"),
        "{found:#?}"
    );
}

/// The spec check is no rubber stamp: a wrong request body is recorded,
/// and a wrong answer body is caught by the same validator the double runs
/// on every answer.
#[tokio::test]
async fn spec_check_catches_wrong_bodies() {
    let double = Double::start(Options::default()).await;
    let client = reqwest::Client::new();
    let id = double.seed_droplet("web", &["web".to_owned()]);

    // Requests: a key name of the wrong type, an unknown action type.
    client
        .post(format!("{}/v2/account/keys", double.base))
        .bearer_auth(&double.token)
        .json(&json!({"name": 5, "public_key": PUBLIC_KEY}))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{}/v2/droplets/{id}/actions", double.base))
        .bearer_auth(&double.token)
        .json(&json!({"type": "explode"}))
        .send()
        .await
        .unwrap();
    let found = double.take_violations();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].contains("(sshKeys_create) request: body.name: expected string, got integer 5"),
        "{found:#?}"
    );
    assert!(
        found[1].contains("(dropletActions_post) request") && found[1].contains("\"explode\""),
        "{found:#?}"
    );

    // Answers: the double's own answer passes; the same answer with a
    // status the API never sends, an id of the wrong type and no networks
    // does not.
    let r = client
        .get(format!("{}/v2/droplets/{id}", double.base))
        .bearer_auth(&double.token)
        .send()
        .await
        .unwrap();
    let headers: std::collections::BTreeMap<String, String> = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    let mut body: Value = r.json().await.unwrap();
    let segments: Vec<String> = ["v2", "droplets", &id.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (op, _) = double::spec::spec()
        .find("GET", &segments)
        .expect("droplets_get is in the spec");
    assert_eq!(op.id, "droplets_get");
    assert_eq!(
        op.check_response(200, &headers, Some(Ok(&body))),
        Vec::<String>::new()
    );
    body["droplet"]["status"] = json!("running");
    body["droplet"]["id"] = json!(id.to_string());
    body["droplet"].as_object_mut().unwrap().remove("networks");
    let problems = op.check_response(200, &headers, Some(Ok(&body)));
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let all = problems.join("\n");
    assert!(all.contains("body.droplet.id: expected integer"), "{all}");
    assert!(all.contains("\"running\" is not one of"), "{all}");
    assert!(
        all.contains("required property `networks` missing"),
        "{all}"
    );
    // A header the spec documents, missing; a status it does not.
    let mut no_limit = headers.clone();
    no_limit.remove("ratelimit-remaining");
    let problems = op.check_response(200, &no_limit, Some(Ok(&body)));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("header `ratelimit-remaining` missing")),
        "{problems:#?}"
    );

    // Firewalls come from the multi-file sources, `$ref`s resolved.
    let spec = double::spec::spec();
    assert_eq!(
        spec.operations.len(),
        32,
        "15 bundled + 17 firewall and tag operations"
    );
    let segments: Vec<String> = ["v2", "firewalls", "bb4b2611-3d72-467b-8602-280330ecd65c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (op, params) = spec.find("GET", &segments).expect("firewalls_get");
    assert_eq!(op.id, "firewalls_get");
    assert_eq!(
        op.check_request(&params, &Default::default(), None),
        Vec::<String>::new()
    );
    let fw = json!({"firewall": {"id": "bb4b2611-3d72-467b-8602-280330ecd65c", "name": "web",
        "status": "succeeded", "created_at": "2026-01-02T03:04:05Z", "pending_changes": [],
        "droplet_ids": [1], "tags": [],
        "inbound_rules": [{"protocol": "tcp", "ports": "22", "sources": {"addresses": ["0.0.0.0/0"]}}],
        "outbound_rules": []}});
    assert_eq!(
        op.check_response(200, &headers, Some(Ok(&fw))),
        Vec::<String>::new()
    );
    let mut bad = fw.clone();
    bad["firewall"]["inbound_rules"][0]["protocol"] = json!("sctp");
    bad["firewall"]["name"] = json!("-web");
    let problems = op.check_response(200, &headers, Some(Ok(&bad)));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    double.assert_spec_clean();
}

#[tokio::test]
async fn injected_server_errors_are_retried() {
    let double = Double::start(Options {
        fail_every: Some(3),
        ..Options::default()
    })
    .await;
    let p = DigitalOceanProvider::new(ProviderContext {
        base_dir: std::env::temp_dir(),
    })
    .with_poll_timing(fast())
    .with_retry_policy(RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        max_elapsed: Duration::from_secs(30),
    });
    p.configure(&attrs(
        json!({"token": double.token, "api_endpoint": double.base}),
    ))
    .await
    .expect("configure");
    let o = owner();
    let lines = Lines::default();
    let (droplet, _, _) = create(
        &p,
        &o,
        "digitalocean_droplet",
        "digitalocean_droplet.web",
        droplet_config("web"),
        &lines,
    )
    .await
    .expect("create despite 500s");
    assert!(double.injected_failures() >= 1, "{:?}", double.counts());
    assert_eq!(p.http_retries(), double.injected_failures());
    assert_eq!(
        double.droplet_count(),
        1,
        "a retried POST did not create twice"
    );

    // A random rate: a fixed sequence, so the same requests fail each run.
    double.set_fail_every(None);
    double.set_fail_rate(0.3);
    let before = double.injected_failures();
    for _ in 0..5 {
        let seen = p
            .refresh("digitalocean_droplet", &o, &[])
            .await
            .expect("refresh despite 500s");
        assert_eq!(seen[0].id, droplet.id);
    }
    assert!(double.injected_failures() > before);
    double.set_fail_rate(0.0);
    double.assert_spec_clean();
}

#[tokio::test]
async fn latency_is_added_to_every_answer() {
    let double = Double::start(Options {
        latency: Duration::from_millis(50),
        ..Options::default()
    })
    .await;
    let p = provider_for(&double).await;
    let o = owner();
    let started = std::time::Instant::now();
    p.refresh("digitalocean_droplet", &o, &[]).await.unwrap();
    p.refresh("digitalocean_firewall", &o, &[]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    double.set_latency(Duration::ZERO);
    let started = std::time::Instant::now();
    p.refresh("digitalocean_droplet", &o, &[]).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(50));
}
