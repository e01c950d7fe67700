//! The AWS provider driven through the `Provider` trait against a real moto
//! server (one per test, on 127.0.0.1 and a free port): key pairs, security
//! groups and instances created, read back, updated in place and deleted;
//! refresh as one paged list call (25 instances over several pages);
//! adoption of an instance that was created but never recorded; a repeated
//! create that starts one instance; ECR repositories and registry
//! credentials; AWS errors and bad credentials. Every test uses its own
//! ownership (a fresh lineage), so tests are isolated and run in parallel.

mod moto;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_aws::{AwsProvider, PollTiming, is_ecr_registry};
use berth_provider::{
    Applied, ApplyRequest, Attrs, DeleteRequest, Observed, Ownership, Provider, ProviderContext,
    ProviderError, hash_attrs,
};
use moto::{Moto, amazon_linux_ami, ec2_raw, xml_values};
use serde_json::{Value, json};

const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl berth@test";
const SECRET: &str = "moto-secret-key-9f3b";

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

fn provider_config(moto: &Moto) -> Attrs {
    attrs(json!({
        "region": "us-east-1",
        "access_key": "testing",
        "secret_key": SECRET,
        "endpoints": [{"ec2": moto.endpoint, "ecr": moto.endpoint}],
    }))
}

async fn provider_for(moto: &Moto, page_size: Option<u32>) -> AwsProvider {
    let mut p = AwsProvider::new(ProviderContext {
        base_dir: std::env::temp_dir(),
    })
    .with_env(BTreeMap::new())
    .with_poll_timing(PollTiming {
        first: Duration::from_millis(5),
        max: Duration::from_millis(40),
    });
    if let Some(n) = page_size {
        p = p.with_page_size(n);
    }
    p.configure(&provider_config(moto))
        .await
        .expect("configure");
    p
}

/// Progress lines collected from calls.
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

/// `validate`, `prepare`, then `create`, as the engine does; returns the
/// result, the config hash and the prepared config.
async fn create(
    p: &AwsProvider,
    owner: &Ownership,
    type_name: &str,
    address: &str,
    config: Value,
    lines: &Lines,
) -> Result<(Applied, String, Attrs), ProviderError> {
    let mut config = attrs(config);
    let problems = p.validate(type_name, &config);
    assert!(problems.is_empty(), "{problems:?}");
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
    p: &AwsProvider,
    owner: &Ownership,
    type_name: &str,
    address: &str,
    prior: &Applied,
    config: Value,
    lines: &Lines,
) -> Result<(Applied, String, Attrs), ProviderError> {
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
    Ok((applied, hash, config))
}

async fn delete(
    p: &AwsProvider,
    owner: &Ownership,
    type_name: &str,
    address: &str,
    applied: &Applied,
    lines: &Lines,
) -> Result<(), ProviderError> {
    let progress = |l: &str| lines.push(l);
    p.delete(
        DeleteRequest {
            type_name,
            address,
            id: &applied.id,
            attrs: &applied.attrs,
            owner,
        },
        &progress,
    )
    .await
}

/// The requests made by `f`, by action.
fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn find<'a>(observed: &'a [Observed], address: &str) -> &'a Observed {
    observed
        .iter()
        .find(|o| o.address == address)
        .unwrap_or_else(|| panic!("{address} not observed in {observed:?}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[tokio::test]
async fn key_pair_security_group_and_instance_lifecycle() {
    let moto = Moto::start().await;
    let p = provider_for(&moto, None).await;
    let o = owner();
    let lines = Lines::default();
    let ami = amazon_linux_ami(&moto.endpoint).await;

    // Key pair.
    let key_name = format!("berth-{}", o.lineage);
    let (key, key_hash, _) = create(
        &p,
        &o,
        "aws_key_pair",
        "aws_key_pair.deployer",
        json!({"key_name": key_name, "public_key": format!("{PUBLIC_KEY}\n"), "tags": {"Team": "ops"}}),
        &lines,
    )
    .await
    .expect("key pair");
    assert_eq!(key.id, key_name, "the id is the key name, as in Terraform");
    assert!(s(&key.attrs["key_pair_id"]).starts_with("key-"), "{key:?}");
    assert!(!s(&key.attrs["fingerprint"]).is_empty());
    assert_eq!(
        key.attrs["public_key"],
        json!(PUBLIC_KEY),
        "trimmed at plan time"
    );

    // Security group: SSH in, nothing out (AWS's default egress goes).
    let (sg, sg_hash, sg_config) = create(
        &p,
        &o,
        "aws_security_group",
        "aws_security_group.web",
        json!({
            "name": format!("web-{}", o.lineage),
            "description": "web servers",
            "ingress": [{"from_port": 22, "to_port": 22, "protocol": "tcp", "cidr_blocks": ["10.0.0.0/8"], "description": "ssh"}],
        }),
        &lines,
    )
    .await
    .expect("security group");
    assert!(sg.id.starts_with("sg-"), "{sg:?}");
    assert!(s(&sg.attrs["arn"]).ends_with(&format!("security-group/{}", sg.id)));
    assert_eq!(s(&sg.attrs["owner_id"]), "123456789012");
    assert!(
        s(&sg.attrs["vpc_id"]).starts_with("vpc-"),
        "filled in: {sg:?}"
    );
    assert_eq!(sg.attrs["egress"], json!([]));

    // Instance.
    let instance_config = |tags: Value, instance_type: &str, groups: Vec<&str>| {
        json!({
            "ami": ami,
            "instance_type": instance_type,
            "key_name": key_name,
            "vpc_security_group_ids": groups,
            "user_data": "#!/bin/sh\necho hello\n",
            "tags": tags,
            "timeouts": {"create": "2m"},
        })
    };
    let before = p.request_counts();
    let (web, web_hash, _) = create(
        &p,
        &o,
        "aws_instance",
        "aws_instance.web",
        instance_config(json!({"Name": "web"}), "t3.micro", vec![sg.id.as_str()]),
        &lines,
    )
    .await
    .expect("instance");
    let made = diff(&before, &p.request_counts());
    assert_eq!(made.get("RunInstances"), Some(&1), "{made:?}");
    assert!(web.id.starts_with("i-"), "{web:?}");
    for key in ["public_ip", "private_ip", "public_dns", "private_dns"] {
        assert!(!s(&web.attrs[key]).is_empty(), "{key} in {web:?}");
    }
    assert_eq!(web.attrs["instance_state"], json!("running"));
    assert_eq!(
        s(&web.attrs["arn"]),
        format!("arn:aws:ec2:us-east-1:123456789012:instance/{}", web.id)
    );
    assert_eq!(web.attrs["vpc_security_group_ids"], json!([sg.id]));
    assert!(s(&web.attrs["subnet_id"]).starts_with("subnet-"));
    assert!(
        lines
            .all()
            .iter()
            .any(|l| l.contains("waiting for running")),
        "{:?}",
        lines.all()
    );

    // Refresh finds all three, with the hashes the engine compares.
    let recorded = |a: &str, id: &str| vec![(a.to_owned(), id.to_owned())];
    let keys = p
        .refresh(
            "aws_key_pair",
            &o,
            &recorded("aws_key_pair.deployer", &key.id),
        )
        .await
        .expect("refresh keys");
    let k = find(&keys, "aws_key_pair.deployer");
    assert_eq!(k.config_hash.as_deref(), Some(key_hash.as_str()));
    assert_eq!(
        k.attrs["tags"],
        json!({"Team": "ops"}),
        "berth's tags are hidden"
    );
    let groups = p
        .refresh("aws_security_group", &o, &[])
        .await
        .expect("refresh groups");
    let g = find(&groups, "aws_security_group.web");
    assert_eq!(g.config_hash.as_deref(), Some(sg_hash.as_str()));
    assert_eq!(
        g.attrs["ingress"], sg_config["ingress"],
        "read back in canonical form"
    );
    assert_eq!(g.attrs["egress"], json!([]));
    let before = p.request_counts();
    let instances = p
        .refresh("aws_instance", &o, &[])
        .await
        .expect("refresh instances");
    assert_eq!(
        diff(&before, &p.request_counts()),
        BTreeMap::from([("DescribeInstances".to_owned(), 1)])
    );
    assert_eq!(instances.len(), 1);
    let i = find(&instances, "aws_instance.web");
    assert_eq!(i.id, web.id);
    assert_eq!(i.config_hash.as_deref(), Some(web_hash.as_str()));
    for key in [
        "ami",
        "instance_type",
        "key_name",
        "public_ip",
        "vpc_security_group_ids",
        "tags",
    ] {
        assert_eq!(i.attrs[key], web.attrs[key], "{key}");
    }

    // Tags change in place.
    let before = p.request_counts();
    let (web, web_hash, _) = update(
        &p,
        &o,
        "aws_instance",
        "aws_instance.web",
        &web,
        instance_config(
            json!({"Name": "web-1", "Team": "ops"}),
            "t3.micro",
            vec![sg.id.as_str()],
        ),
        &lines,
    )
    .await
    .expect("tags");
    let made = diff(&before, &p.request_counts());
    assert!(made.contains_key("CreateTags"), "{made:?}");
    assert!(
        !made.contains_key("RunInstances") && !made.contains_key("StopInstances"),
        "{made:?}"
    );
    let i = p.refresh("aws_instance", &o, &[]).await.expect("refresh");
    let i = find(&i, "aws_instance.web");
    assert_eq!(i.attrs["tags"], json!({"Name": "web-1", "Team": "ops"}));
    assert_eq!(
        i.config_hash.as_deref(),
        Some(web_hash.as_str()),
        "the hash tag follows"
    );

    // Removing a tag deletes it.
    let before = p.request_counts();
    let (web, _, _) = update(
        &p,
        &o,
        "aws_instance",
        "aws_instance.web",
        &web,
        instance_config(json!({"Name": "web-1"}), "t3.micro", vec![sg.id.as_str()]),
        &lines,
    )
    .await
    .expect("untag");
    assert!(diff(&before, &p.request_counts()).contains_key("DeleteTags"));
    assert_eq!(web.attrs["tags"], json!({"Name": "web-1"}));

    // The instance type changes by stop, modify, start, as in Terraform.
    let (sg2, _, _) = create(
        &p,
        &o,
        "aws_security_group",
        "aws_security_group.extra",
        json!({"name_prefix": "extra-", "egress": [{"from_port": 0, "to_port": 0, "protocol": "-1", "cidr_blocks": ["0.0.0.0/0"]}]}),
        &lines,
    )
    .await
    .expect("second group");
    assert!(s(&sg2.attrs["name"]).starts_with("extra-"), "{sg2:?}");
    let before = p.request_counts();
    let (web, _, _) = update(
        &p,
        &o,
        "aws_instance",
        "aws_instance.web",
        &web,
        instance_config(
            json!({"Name": "web-1"}),
            "t3.small",
            vec![sg.id.as_str(), sg2.id.as_str()],
        ),
        &lines,
    )
    .await
    .expect("resize and regroup");
    let made = diff(&before, &p.request_counts());
    for action in ["StopInstances", "StartInstances", "ModifyInstanceAttribute"] {
        assert!(made.contains_key(action), "{action} in {made:?}");
    }
    assert!(!made.contains_key("RunInstances"), "{made:?}");
    assert_eq!(web.attrs["instance_type"], json!("t3.small"));
    let mut both = vec![sg.id.clone(), sg2.id.clone()];
    both.sort();
    assert_eq!(web.attrs["vpc_security_group_ids"], json!(both));
    assert_eq!(web.attrs["instance_state"], json!("running"));
    assert!(lines.all().iter().any(|l| l.contains("stopping instance")));

    // The schema makes an AMI change a replacement.
    let schema = p
        .schemas()
        .iter()
        .find(|s| s.type_name == "aws_instance")
        .expect("schema");
    assert!(schema.forces_replacement("ami"));
    assert!(!schema.forces_replacement("tags"));

    // Terminate waits for `terminated`; refresh no longer sees it.
    let before = p.request_counts();
    delete(&p, &o, "aws_instance", "aws_instance.web", &web, &lines)
        .await
        .expect("terminate");
    let made = diff(&before, &p.request_counts());
    assert_eq!(made.get("TerminateInstances"), Some(&1), "{made:?}");
    assert!(
        made.get("DescribeInstances").is_some_and(|n| *n >= 1),
        "waited: {made:?}"
    );
    assert!(
        lines.all().iter().any(|l| l.contains("is terminated")),
        "{:?}",
        lines.all()
    );
    let (_, xml) = ec2_raw(
        &moto.endpoint,
        &[("Action", "DescribeInstances"), ("InstanceId.1", &web.id)],
    )
    .await;
    assert!(xml.contains("<name>terminated</name>"), "{xml:.300}");
    assert!(
        p.refresh("aws_instance", &o, &[])
            .await
            .expect("refresh")
            .is_empty()
    );

    // Groups and key go; deleting again is fine.
    for (t, a, applied) in [
        ("aws_security_group", "aws_security_group.web", &sg),
        ("aws_security_group", "aws_security_group.extra", &sg2),
        ("aws_key_pair", "aws_key_pair.deployer", &key),
    ] {
        delete(&p, &o, t, a, applied, &lines).await.expect("delete");
        delete(&p, &o, t, a, applied, &lines)
            .await
            .expect("delete again");
    }
    assert!(
        p.refresh("aws_security_group", &o, &[])
            .await
            .expect("refresh")
            .is_empty()
    );
    assert!(
        p.refresh("aws_key_pair", &o, &[])
            .await
            .expect("refresh")
            .is_empty()
    );
}

#[tokio::test]
async fn security_group_rules_change_in_place() {
    let moto = Moto::start().await;
    let p = provider_for(&moto, None).await;
    let o = owner();
    let lines = Lines::default();
    let rule = |port: u16, cidr: &str| json!({"from_port": port, "to_port": port, "protocol": "tcp", "cidr_blocks": [cidr]});
    let (sg, _, _) = create(
        &p,
        &o,
        "aws_security_group",
        "aws_security_group.app",
        json!({"ingress": [rule(22, "10.0.0.0/8"), rule(80, "0.0.0.0/0")], "tags": {"Name": "app"}}),
        &lines,
    )
    .await
    .expect("create");
    assert!(
        s(&sg.attrs["name"]).starts_with("berth-"),
        "generated: {sg:?}"
    );

    // 22 goes, 443 comes, 80 stays; an egress rule is added.
    let before = p.request_counts();
    let (sg2, hash, config) = update(
        &p,
        &o,
        "aws_security_group",
        "aws_security_group.app",
        &sg,
        json!({
            "ingress": [rule(80, "0.0.0.0/0"), rule(443, "0.0.0.0/0")],
            "egress": [{"from_port": 0, "to_port": 0, "protocol": "all", "cidr_blocks": ["0.0.0.0/0"]}],
            "tags": {"Name": "app"},
        }),
        &lines,
    )
    .await
    .expect("update");
    let made = diff(&before, &p.request_counts());
    assert_eq!(sg2.id, sg.id, "same group");
    for action in [
        "RevokeSecurityGroupIngress",
        "AuthorizeSecurityGroupIngress",
        "AuthorizeSecurityGroupEgress",
    ] {
        assert_eq!(made.get(action), Some(&1), "{action} in {made:?}");
    }
    assert!(!made.contains_key("CreateSecurityGroup") && !made.contains_key("DeleteSecurityGroup"));
    let seen = p
        .refresh("aws_security_group", &o, &[])
        .await
        .expect("refresh");
    let g = find(&seen, "aws_security_group.app");
    assert_eq!(g.attrs["ingress"], config["ingress"]);
    assert_eq!(g.attrs["egress"], config["egress"]);
    assert_eq!(g.config_hash.as_deref(), Some(hash.as_str()));
    let ports: Vec<i64> = g.attrs["ingress"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["from_port"].as_i64())
        .collect();
    assert_eq!(ports, vec![80, 443]);

    // Nothing to do: no rule calls.
    let before = p.request_counts();
    update(
        &p,
        &o,
        "aws_security_group",
        "aws_security_group.app",
        &sg2,
        json!({
            "ingress": [rule(443, "0.0.0.0/0"), rule(80, "0.0.0.0/0")],
            "egress": [{"from_port": 0, "to_port": 0, "protocol": "-1", "cidr_blocks": ["0.0.0.0/0"]}],
            "tags": {"Name": "app"},
        }),
        &lines,
    )
    .await
    .expect("no-op update");
    let made = diff(&before, &p.request_counts());
    assert!(
        made.keys()
            .all(|k| !k.contains("SecurityGroupIngress") && !k.contains("SecurityGroupEgress")),
        "{made:?}"
    );
    delete(
        &p,
        &o,
        "aws_security_group",
        "aws_security_group.app",
        &sg2,
        &lines,
    )
    .await
    .expect("delete");
}

#[tokio::test]
async fn refresh_lists_25_instances_with_one_paged_call() {
    let moto = Moto::start().await;
    let p = provider_for(&moto, None).await;
    let o = owner();
    let lines = Lines::default();
    let ami = amazon_linux_ami(&moto.endpoint).await;
    let mut made = Vec::new();
    for n in 0..25 {
        let (applied, _, _) = create(
            &p,
            &o,
            "aws_instance",
            &format!("aws_instance.fleet[{n}]"),
            json!({"ami": ami, "instance_type": "t3.nano", "tags": {"n": n.to_string()}}),
            &lines,
        )
        .await
        .expect("instance");
        made.push(applied);
    }
    // Someone else's instance, on the same server.
    let stranger = owner();
    create(
        &p,
        &stranger,
        "aws_instance",
        "aws_instance.fleet[0]",
        json!({"ami": ami, "instance_type": "t3.nano"}),
        &lines,
    )
    .await
    .expect("other owner's instance");

    // moto pages by reservation (one per instance here): 25 = 20 + 5, and
    // 5 pages of 5. Either way one list call, followed page by page, and
    // nothing per instance.
    for (page_size, pages) in [(20, 2), (5, 5)] {
        let paged = provider_for(&moto, Some(page_size)).await;
        let before = paged.request_counts();
        let seen = paged
            .refresh("aws_instance", &o, &[])
            .await
            .expect("refresh");
        assert_eq!(
            diff(&before, &paged.request_counts()),
            BTreeMap::from([("DescribeInstances".to_owned(), pages)]),
            "page size {page_size}"
        );
        assert_eq!(seen.len(), 25);
        for (n, applied) in made.iter().enumerate() {
            let o = find(&seen, &format!("aws_instance.fleet[{n}]"));
            assert_eq!(o.id, applied.id);
            assert_eq!(o.attrs["tags"], json!({"n": n.to_string()}));
        }
    }

    // A terminated instance is not observed.
    delete(
        &p,
        &o,
        "aws_instance",
        "aws_instance.fleet[3]",
        &made[3],
        &lines,
    )
    .await
    .expect("terminate");
    let seen = p.refresh("aws_instance", &o, &[]).await.expect("refresh");
    assert_eq!(seen.len(), 24);
    assert!(seen.iter().all(|s| s.address != "aws_instance.fleet[3]"));
}

#[tokio::test]
async fn unrecorded_objects_are_found_for_adoption_and_creates_are_idempotent() {
    let moto = Moto::start().await;
    let p = provider_for(&moto, None).await;
    let o = owner();
    let lines = Lines::default();
    let ami = amazon_linux_ami(&moto.endpoint).await;
    let config = json!({"ami": ami, "instance_type": "t3.micro", "tags": {"Name": "api"}});

    // berth "crashes" after the create: state records nothing.
    let (first, hash, _) = create(
        &p,
        &o,
        "aws_instance",
        "aws_instance.api",
        config.clone(),
        &lines,
    )
    .await
    .expect("create");
    let seen = p.refresh("aws_instance", &o, &[]).await.expect("refresh");
    let found = find(&seen, "aws_instance.api");
    assert_eq!(found.id, first.id);
    assert_eq!(
        found.config_hash.as_deref(),
        Some(hash.as_str()),
        "the full hash, so the engine adopts it"
    );

    // The same create again (a retry) takes that instance.
    let before = p.request_counts();
    let (second, _, _) = create(
        &p,
        &o,
        "aws_instance",
        "aws_instance.api",
        config.clone(),
        &lines,
    )
    .await
    .expect("create again");
    assert_eq!(second.id, first.id);
    let made = diff(&before, &p.request_counts());
    assert!(!made.contains_key("RunInstances"), "{made:?}");
    assert!(
        lines.all().iter().any(|l| l.contains("taking it")),
        "{:?}",
        lines.all()
    );
    let (_, xml) = ec2_raw(
        &moto.endpoint,
        &[
            ("Action", "DescribeInstances"),
            ("Filter.1.Name", "tag:berth:lineage"),
            ("Filter.1.Value.1", &o.lineage),
        ],
    )
    .await;
    assert_eq!(
        xml_values(&xml, "instanceId").len(),
        1,
        "one instance: {xml:.300}"
    );
    let tokens = xml_values(&xml, "clientToken");
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        tokens[0].len(),
        64,
        "the deterministic ClientToken: {tokens:?}"
    );
    assert!(tokens[0].bytes().all(|b| b.is_ascii_hexdigit()));

    // A different configuration is another instance.
    let (third, _, _) = create(
        &p,
        &o,
        "aws_instance",
        "aws_instance.api",
        json!({"ami": ami, "instance_type": "t3.large"}),
        &lines,
    )
    .await
    .expect("create other");
    assert_ne!(third.id, first.id);

    // Key pairs and security groups are found for adoption the same way.
    let (_, key_hash, _) = create(
        &p,
        &o,
        "aws_key_pair",
        "aws_key_pair.k",
        json!({"public_key": PUBLIC_KEY}),
        &lines,
    )
    .await
    .expect("key");
    let keys = p
        .refresh("aws_key_pair", &o, &[])
        .await
        .expect("refresh keys");
    assert_eq!(
        find(&keys, "aws_key_pair.k").config_hash.as_deref(),
        Some(key_hash.as_str())
    );
    // Importing it again (its name is derived from lineage and address)
    // adopts it instead of failing as a duplicate.
    let (again, _, _) = create(
        &p,
        &o,
        "aws_key_pair",
        "aws_key_pair.k",
        json!({"public_key": PUBLIC_KEY}),
        &lines,
    )
    .await
    .expect("key again");
    assert_eq!(again.id, find(&keys, "aws_key_pair.k").id);
    // ...but a key of that name belonging to another address is refused.
    let e = create(
        &p,
        &o,
        "aws_key_pair",
        "aws_key_pair.other",
        json!({"public_key": PUBLIC_KEY, "key_name": again.id}),
        &lines,
    )
    .await
    .expect_err("conflict");
    assert!(e.to_string().contains("InvalidKeyPair.Duplicate"), "{e}");
    assert!(
        e.to_string()
            .contains("not created by berth for aws_key_pair.other"),
        "{e}"
    );
}

#[tokio::test]
async fn ecr_repository_and_registry_credentials() {
    let moto = Moto::start().await;
    let p = provider_for(&moto, None).await;
    let o = owner();
    let lines = Lines::default();
    let name = format!("app-{}/web", o.lineage.to_ascii_lowercase());
    let address = "aws_ecr_repository.web[\"main\"]";
    let (repo, _, _) = create(
        &p,
        &o,
        "aws_ecr_repository",
        address,
        json!({"name": name, "image_tag_mutability": "IMMUTABLE", "tags": {"Team": "ops"}}),
        &lines,
    )
    .await
    .expect("create");
    assert_eq!(repo.id, name);
    let url = s(&repo.attrs["repository_url"]).to_owned();
    assert_eq!(
        url,
        format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/{name}")
    );
    assert_eq!(repo.attrs["registry_id"], json!("123456789012"));
    assert!(s(&repo.attrs["arn"]).starts_with("arn:aws:ecr:us-east-1:123456789012:repository/"));

    // Refresh: nothing recorded, nothing asked.
    let before = p.request_counts();
    assert!(
        p.refresh("aws_ecr_repository", &o, &[])
            .await
            .expect("refresh")
            .is_empty()
    );
    assert!(diff(&before, &p.request_counts()).is_empty());
    let recorded = vec![(address.to_owned(), name.clone())];
    let before = p.request_counts();
    let seen = p
        .refresh("aws_ecr_repository", &o, &recorded)
        .await
        .expect("refresh");
    assert_eq!(
        diff(&before, &p.request_counts()),
        BTreeMap::from([("DescribeRepositories".to_owned(), 1)])
    );
    let r = find(&seen, address);
    assert_eq!(r.attrs["image_tag_mutability"], json!("IMMUTABLE"));
    assert_eq!(r.attrs["repository_url"], json!(url));
    assert_eq!(
        r.attrs["image_scanning_configuration"],
        json!([{"scan_on_push": false}])
    );

    // In place: mutability, scanning, tags.
    let before = p.request_counts();
    let (repo, _, _) = update(
        &p,
        &o,
        "aws_ecr_repository",
        address,
        &repo,
        json!({"name": name, "image_scanning_configuration": [{"scan_on_push": true}], "tags": {"Team": "web"}}),
        &lines,
    )
    .await
    .expect("update");
    let made = diff(&before, &p.request_counts());
    for action in [
        "PutImageTagMutability",
        "PutImageScanningConfiguration",
        "TagResource",
    ] {
        assert!(made.contains_key(action), "{action} in {made:?}");
    }
    let seen = p
        .refresh("aws_ecr_repository", &o, &recorded)
        .await
        .expect("refresh");
    let r = find(&seen, address);
    assert_eq!(r.attrs["image_tag_mutability"], json!("MUTABLE"));
    assert_eq!(
        r.attrs["image_scanning_configuration"],
        json!([{"scan_on_push": true}])
    );

    // A create repeated after a crash adopts the repository (its tags name
    // this owner and address); another address may not take it.
    let (again, _, _) = create(
        &p,
        &o,
        "aws_ecr_repository",
        address,
        json!({"name": name, "tags": {"Team": "web"}}),
        &lines,
    )
    .await
    .expect("adopt");
    assert_eq!(again.attrs["arn"], repo.attrs["arn"]);
    let e = create(
        &p,
        &o,
        "aws_ecr_repository",
        "aws_ecr_repository.other",
        json!({"name": name}),
        &lines,
    )
    .await
    .expect_err("conflict");
    assert!(
        e.to_string().contains("RepositoryAlreadyExistsException"),
        "{e}"
    );

    // Registry login.
    let host = url.split('/').next().expect("host");
    assert!(is_ecr_registry(host));
    let (user, password) = p.ecr_credentials(host).await.expect("credentials");
    assert_eq!(user, "AWS");
    assert!(!password.is_empty());
    assert!(p.request_counts().contains_key("GetAuthorizationToken"));
    let e = p
        .ecr_credentials("registry.gitlab.com")
        .await
        .expect_err("not ECR");
    assert!(e.to_string().contains("not an ECR registry"), "{e}");

    // Delete, twice.
    delete(&p, &o, "aws_ecr_repository", address, &repo, &lines)
        .await
        .expect("delete");
    delete(&p, &o, "aws_ecr_repository", address, &repo, &lines)
        .await
        .expect("delete again");
    assert!(
        p.refresh("aws_ecr_repository", &o, &recorded)
            .await
            .expect("refresh")
            .is_empty()
    );
}

#[tokio::test]
async fn aws_errors_carry_code_and_message_but_no_secret() {
    let moto = Moto::start().await;
    let p = provider_for(&moto, None).await;
    let o = owner();
    let lines = Lines::default();
    let e = create(
        &p,
        &o,
        "aws_instance",
        "aws_instance.web",
        json!({"ami": "ami-00000001", "instance_type": "t3.micro"}),
        &lines,
    )
    .await
    .expect_err("unknown AMI");
    let text = e.to_string();
    assert!(
        text.contains(
            "EC2 API: InvalidAMIID.NotFound: The image id '[ami-00000001]' does not exist"
        ),
        "{text}"
    );
    assert!(text.contains("request id"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(!format!("{p:?}").contains(SECRET));

    let e = p
        .update(
            ApplyRequest {
                type_name: "aws_security_group",
                address: "aws_security_group.gone",
                config: &attrs(json!({"ingress": [], "egress": [], "tags": {}})),
                prior: None,
                prior_id: Some("sg-00000000000000000"),
                config_hash: "h",
                owner: &o,
            },
            &|_| {},
        )
        .await
        .expect_err("no such group");
    assert!(e.to_string().contains("no longer exists"), "{e}");
}

#[tokio::test]
async fn bad_credentials_are_reported_with_a_hint() {
    // moto checks credentials from the first request on.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).await;
    let p = provider_for(&moto, None).await;
    let o = owner();
    let e = p
        .refresh("aws_instance", &o, &[])
        .await
        .expect_err("refused");
    let text = e.to_string();
    assert!(text.contains("EC2 API: AuthFailure"), "{text}");
    assert!(
        text.contains("check the credentials (access key testing from `access_key`"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
    let e = p
        .ecr_credentials("123456789012.dkr.ecr.us-east-1.amazonaws.com")
        .await
        .expect_err("refused");
    assert!(
        e.to_string().contains("InvalidClientTokenId") || e.to_string().contains("AuthFailure"),
        "{e}"
    );
    assert!(!e.to_string().contains(SECRET));
}
