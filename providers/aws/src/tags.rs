//! berth's ownership marks as AWS tags, and keeping tags in sync.
//!
//! Every instance, key pair, security group and ECR repository berth
//! creates carries four tags, set atomically at creation
//! (`TagSpecification` on EC2, `tags` of `CreateRepository`):
//!
//! | tag | value |
//! |---|---|
//! | `berth:address` | the resource address, e.g. `aws_instance.web` |
//! | `berth:env` | the environment |
//! | `berth:lineage` | the state's lineage |
//! | `berth:config-hash` | the full hash of the configuration it was made from |
//!
//! (berth's labels `berth.address`, ... with `:` for `.`, the separator AWS
//! users expect.) EC2 refresh lists by `tag:berth:lineage` and
//! `tag:berth:env` filters. Tag keys starting with `berth:` are reserved
//! (refused in configurations) and, like AWS's own `aws:` tags, hidden from
//! `tags`.
//!
//! EC2 accepts any character in tag values. ECR allows only letters,
//! digits, spaces and `+ - = . _ : / @`, so for ECR a value with anything
//! else (an address like `aws_ecr_repository.app["web"]`) is stored as
//! `b64:` and its unpadded URL-safe base64.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_provider::http::Idempotency;
use berth_provider::{Ownership, ProviderError};

use crate::client::{Api, Params};

/// The address tag.
pub(crate) const ADDRESS: &str = "berth:address";
/// The environment tag.
pub(crate) const ENV: &str = "berth:env";
/// The lineage tag.
pub(crate) const LINEAGE: &str = "berth:lineage";
/// The configuration hash tag.
pub(crate) const CONFIG_HASH: &str = "berth:config-hash";

/// The prefix of berth's reserved tag keys.
const RESERVED: &str = "berth:";
/// AWS's own tag prefix (read-only for users).
const AWS_PREFIX: &str = "aws:";
/// AWS's per-resource tag limit.
const MAX_TAGS: usize = 50;
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 256;
const ECR_ENCODED: &str = "b64:";

fn has_prefix(key: &str, prefix: &str) -> bool {
    key.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Whether `key` is one of berth's tags or AWS's own.
pub(crate) fn is_system_key(key: &str) -> bool {
    has_prefix(key, RESERVED) || has_prefix(key, AWS_PREFIX)
}

/// berth's four tags for the object at `address` made from a configuration
/// hashed to `config_hash`.
pub(crate) fn berth_tags(
    owner: &Ownership,
    address: &str,
    config_hash: &str,
) -> Result<BTreeMap<String, String>, ProviderError> {
    let tags = BTreeMap::from([
        (ADDRESS.to_owned(), address.to_owned()),
        (ENV.to_owned(), owner.env.clone()),
        (LINEAGE.to_owned(), owner.lineage.clone()),
        (CONFIG_HASH.to_owned(), config_hash.to_owned()),
    ]);
    for (k, v) in &tags {
        if v.chars().count() > MAX_VALUE {
            return Err(ProviderError::Config(format!(
                "cannot record `{address}` in the AWS tag `{k}`: the value is longer than \
                 {MAX_VALUE} characters"
            )));
        }
    }
    Ok(tags)
}

/// The configured tags plus berth's.
pub(crate) fn all_tags(
    user: &BTreeMap<String, String>,
    owner: &Ownership,
    address: &str,
    config_hash: &str,
) -> Result<BTreeMap<String, String>, ProviderError> {
    let mut tags = user.clone();
    tags.extend(berth_tags(owner, address, config_hash)?);
    Ok(tags)
}

/// The filters that select `owner`'s objects.
pub(crate) fn owner_filters(params: &mut Params, owner: &Ownership) {
    params
        .filter(&format!("tag:{LINEAGE}"), &[owner.lineage.as_str()])
        .filter(&format!("tag:{ENV}"), &[owner.env.as_str()]);
}

/// `TagSpecification.N` for a resource type (`instance`, `key-pair`,
/// `security-group`).
pub(crate) fn tag_specification(
    params: &mut Params,
    n: usize,
    resource_type: &str,
    tags: &BTreeMap<String, String>,
) {
    params.set(format!("TagSpecification.{n}.ResourceType"), resource_type);
    for (i, (k, v)) in tags.iter().enumerate() {
        params.set(
            format!("TagSpecification.{n}.Tag.{}.Key", i + 1),
            k.as_str(),
        );
        params.set(
            format!("TagSpecification.{n}.Tag.{}.Value", i + 1),
            v.as_str(),
        );
    }
}

/// What berth's tags on an object say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Marks {
    pub(crate) address: String,
    pub(crate) config_hash: Option<String>,
}

/// berth's marks on an object with `tags`, if it belongs to `owner`.
pub(crate) fn marks(owner: &Ownership, tags: &BTreeMap<String, String>) -> Option<Marks> {
    if tags.get(ENV) != Some(&owner.env) || tags.get(LINEAGE) != Some(&owner.lineage) {
        return None;
    }
    Some(Marks {
        address: tags.get(ADDRESS).filter(|a| !a.is_empty())?.clone(),
        config_hash: tags.get(CONFIG_HASH).cloned(),
    })
}

/// The tags a user set: without berth's and AWS's own.
pub(crate) fn user_tags(tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    tags.iter()
        .filter(|(k, _)| !is_system_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Problems with configured tags.
pub(crate) fn check_user_tags(tags: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (k, v) in tags {
        if has_prefix(k, RESERVED) {
            problems.push(format!(
                "tag `{k}` is in berth's reserved `{RESERVED}` namespace"
            ));
        } else if has_prefix(k, AWS_PREFIX) {
            problems.push(format!(
                "tag `{k}`: the `{AWS_PREFIX}` prefix is reserved by AWS"
            ));
        } else if k.is_empty() || k.chars().count() > MAX_KEY {
            problems.push(format!(
                "tag keys must have 1 to {MAX_KEY} characters (`{k}`)"
            ));
        } else if v.chars().count() > MAX_VALUE {
            problems.push(format!(
                "the value of tag `{k}` is longer than {MAX_VALUE} characters"
            ));
        }
    }
    if tags.len() + 4 > MAX_TAGS {
        problems.push(format!(
            "{} tags plus berth's 4 is more than AWS's {MAX_TAGS} per resource",
            tags.len()
        ));
    }
    problems
}

fn ecr_allowed(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c)
}

/// A tag value as ECR can store it (see the module docs).
pub(crate) fn ecr_encode(value: &str) -> String {
    if value.chars().all(ecr_allowed) && !value.starts_with(ECR_ENCODED) {
        value.to_owned()
    } else {
        format!("{ECR_ENCODED}{}", URL_SAFE_NO_PAD.encode(value.as_bytes()))
    }
}

/// Reads back what [`ecr_encode`] stored.
pub(crate) fn ecr_decode(value: &str) -> String {
    value
        .strip_prefix(ECR_ENCODED)
        .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| value.to_owned())
}

/// Brings the tags of EC2 resource `id` from `current` to `wanted` with
/// `CreateTags` (new and changed ones, berth's included) and then
/// `DeleteTags` (the rest, never AWS's own), so the object never stops
/// carrying berth's marks. Returns the changed user tag keys, for progress.
pub(crate) async fn sync_ec2(
    api: &Api,
    id: &str,
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Result<Vec<String>, ProviderError> {
    let set: Vec<(&String, &String)> = wanted
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .collect();
    let remove: Vec<&String> = current
        .keys()
        .filter(|k| !wanted.contains_key(*k) && !has_prefix(k, AWS_PREFIX))
        .collect();
    let mut changed: Vec<String> = set
        .iter()
        .map(|(k, _)| (*k).clone())
        .chain(remove.iter().map(|k| (*k).clone()))
        .filter(|k| !is_system_key(k))
        .collect();
    changed.sort();
    if !set.is_empty() {
        let mut p = Params::new();
        p.set("ResourceId.1", id);
        for (i, (k, v)) in set.iter().enumerate() {
            p.set(format!("Tag.{}.Key", i + 1), k.as_str());
            p.set(format!("Tag.{}.Value", i + 1), v.as_str());
        }
        api.ec2_text("CreateTags", &p, Idempotency::Safe)
            .await
            .map_err(|e| e.context(format!("cannot tag {id}")))?;
    }
    if !remove.is_empty() {
        let mut p = Params::new();
        p.set("ResourceId.1", id);
        for (i, k) in remove.iter().enumerate() {
            p.set(format!("Tag.{}.Key", i + 1), k.as_str());
        }
        api.ec2_text("DeleteTags", &p, Idempotency::Safe)
            .await
            .map_err(|e| e.context(format!("cannot untag {id}")))?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Ownership {
        Ownership {
            env: "prod".into(),
            lineage: "4f1c-9a".into(),
        }
    }

    #[test]
    fn marks_need_env_and_lineage() {
        let o = owner();
        let mut tags = berth_tags(&o, "aws_instance.web", "ab12").unwrap();
        tags.insert("Name".into(), "web".into());
        tags.insert("aws:cloudformation:stack-name".into(), "x".into());
        let m = marks(&o, &tags).unwrap();
        assert_eq!(m.address, "aws_instance.web");
        assert_eq!(m.config_hash.as_deref(), Some("ab12"));
        let other = Ownership {
            env: "dev".into(),
            ..o.clone()
        };
        assert!(marks(&other, &tags).is_none());
        assert_eq!(
            user_tags(&tags),
            BTreeMap::from([("Name".to_owned(), "web".to_owned())])
        );
    }

    #[test]
    fn reserved_and_oversized_tags_are_refused() {
        let t = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert_eq!(check_user_tags(&t("Berth:x", "1")).len(), 1);
        assert_eq!(check_user_tags(&t("aws:x", "1")).len(), 1);
        assert_eq!(check_user_tags(&t("k", &"v".repeat(300))).len(), 1);
        assert!(check_user_tags(&t("Name", "web")).is_empty());
        let many: BTreeMap<String, String> =
            (0..47).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(check_user_tags(&many).len(), 1);
    }

    #[test]
    fn ecr_values_round_trip() {
        for v in [
            "aws_ecr_repository.app",
            "aws_ecr_repository.app[\"web\"]",
            "b64:literal",
            "module.x.aws_ecr_repository.y[0]",
        ] {
            let e = ecr_encode(v);
            assert!(e.chars().all(ecr_allowed), "{e}");
            assert_eq!(ecr_decode(&e), v);
        }
        assert_eq!(
            ecr_encode("aws_ecr_repository.app"),
            "aws_ecr_repository.app"
        );
    }

    #[test]
    fn tag_specifications_are_numbered() {
        let mut p = Params::new();
        let tags = berth_tags(&owner(), "aws_key_pair.k", "h").unwrap();
        tag_specification(&mut p, 1, "key-pair", &tags);
        assert_eq!(p.get("TagSpecification.1.ResourceType"), Some("key-pair"));
        assert_eq!(p.get("TagSpecification.1.Tag.1.Key"), Some("berth:address"));
        assert_eq!(p.get("TagSpecification.1.Tag.4.Value"), Some("4f1c-9a"));
    }
}
