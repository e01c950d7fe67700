//! `aws_key_pair`: an SSH public key imported into EC2 (`ImportKeyPair`).
//!
//! | attribute | change |
//! |---|---|
//! | `key_name`, `key_name_prefix`, `public_key` | replace |
//! | `tags` | in place: `CreateTags` / `DeleteTags` on the key pair id |
//!
//! Computed: `id` (the key name, as in Terraform), `key_pair_id`,
//! `fingerprint`, `key_type`, `tags_all` (equal to `tags`: berth has no
//! `default_tags`), and `key_name` when left out.
//!
//! Where berth differs from Terraform:
//! - a key without `key_name` or `key_name_prefix` is named `berth-` and 20
//!   hex digits derived from the state's lineage and the address (Terraform:
//!   `terraform-` and a timestamp), so a retried create asks for the same
//!   name; with `key_name_prefix` the prefix is followed by those digits.
//! - `public_key` is not read back: drift in it is not detected (the key
//!   cannot change without a new name anyway).
//!
//! Ownership: the key pair carries berth's tags from its creation
//! (`TagSpecification` of type `key-pair`), refresh is one
//! `DescribeKeyPairs` filtered by them (the API has no paging), and a key
//! left by an interrupted apply is adopted in the plan. If `ImportKeyPair`
//! answers `InvalidKeyPair.Duplicate`, the existing key is adopted when its
//! tags name the same owner and address, and refused otherwise.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_provider::http::Idempotency;
use berth_provider::{
    Applied, ApplyRequest, AttrProblem, AttrSchema, AttrType, Attrs, DeleteRequest, Observed,
    Ownership, Progress, ProviderError, ResourceSchema, Value,
};
use serde::Deserialize;

use crate::attrs;
use crate::client::{Api, Params};
use crate::tags;
use crate::xml::{Items, Tag, tag_map};

/// The resource type name.
pub(crate) const TYPE: &str = "aws_key_pair";

/// The schema of `aws_key_pair`.
pub(crate) fn schema() -> ResourceSchema {
    use AttrType::*;
    let o = AttrSchema::optional;
    let c = AttrSchema::computed;
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            o("key_name", String).and_computed().force_new(),
            o("key_name_prefix", String).force_new(),
            AttrSchema::required("public_key", String).force_new(),
            o("tags", MapOfString).default("{}"),
            c("id", String),
            c("key_pair_id", String),
            c("fingerprint", String),
            c("key_type", String),
            c("tags_all", MapOfString),
        ],
        blocks: vec![],
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct KeyPairXml {
    key_name: String,
    key_pair_id: String,
    key_fingerprint: String,
    key_type: Option<String>,
    tag_set: Items<Tag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct DescribeKeyPairs {
    key_set: Items<KeyPairXml>,
}

/// The key type of an OpenSSH public key line, as EC2 names it.
fn key_type_of(public_key: &str) -> Option<&'static str> {
    let kind = public_key.split_whitespace().next()?;
    match kind {
        "ssh-rsa" => Some("rsa"),
        "ssh-ed25519" => Some("ed25519"),
        _ => None,
    }
}

/// Checks known values before any call.
pub(crate) fn validate(config: &Attrs) -> Vec<AttrProblem> {
    let mut problems = Vec::new();
    let mut problem = |attribute: &str, message: String| {
        problems.push(AttrProblem {
            attribute: attribute.to_owned(),
            message,
        })
    };
    if let Ok(Some(key)) = attrs::string(config, "public_key") {
        if key.contains("PRIVATE KEY") {
            problem(
                "public_key",
                "is a private key; give the public key (the `.pub` file)".to_owned(),
            );
        } else if key.trim().is_empty() {
            problem("public_key", "must not be empty".to_owned());
        }
    }
    for key in ["key_name", "key_name_prefix"] {
        if let Ok(Some(name)) = attrs::string(config, key)
            && (name.is_empty() || name.len() > 255 || !name.is_ascii())
        {
            problem(key, "must be 1 to 255 ASCII characters".to_owned());
        }
    }
    if config.get("key_name").is_some_and(|v| !v.is_null())
        && config.get("key_name_prefix").is_some_and(|v| !v.is_null())
    {
        problem(
            "key_name_prefix",
            "conflicts with `key_name`; set one of them".to_owned(),
        );
    }
    match attrs::string_map(config, "tags") {
        Ok(t) => tags::check_user_tags(&t)
            .into_iter()
            .for_each(|p| problem("tags", p)),
        Err(e) => problem("tags", e.to_string()),
    }
    problems
}

/// Plan time: trims the public key (a trailing newline from `file()` is
/// not a change, as in Terraform) and fills `tags`.
pub(crate) fn prepare(config: &mut Attrs) -> Result<(), ProviderError> {
    if let Some(key) = attrs::string(config, "public_key")? {
        config.insert("public_key".into(), Value::from(key.trim()));
    }
    let t = attrs::string_map(config, "tags")?;
    config.insert("tags".into(), attrs::map_value(&t));
    Ok(())
}

fn read_back(kp: &KeyPairXml) -> Attrs {
    let mut a = Attrs::new();
    let user = tags::user_tags(&tag_map(&kp.tag_set));
    a.insert("id".into(), Value::from(kp.key_name.as_str()));
    a.insert("key_name".into(), Value::from(kp.key_name.as_str()));
    a.insert("key_pair_id".into(), Value::from(kp.key_pair_id.as_str()));
    a.insert(
        "fingerprint".into(),
        Value::from(kp.key_fingerprint.as_str()),
    );
    if let Some(t) = kp.key_type.as_deref().filter(|t| !t.is_empty()) {
        a.insert("key_type".into(), Value::from(t));
    }
    a.insert("tags".into(), attrs::map_value(&user));
    a.insert("tags_all".into(), attrs::map_value(&user));
    a
}

fn applied(config: &Attrs, kp: &KeyPairXml) -> Applied {
    let mut seen = read_back(kp);
    if !seen.contains_key("key_type")
        && let Some(t) = attrs::string(config, "public_key")
            .ok()
            .flatten()
            .as_deref()
            .and_then(key_type_of)
    {
        seen.insert("key_type".into(), Value::from(t));
    }
    Applied {
        id: kp.key_name.clone(),
        attrs: attrs::merge_applied(&schema(), config, seen),
    }
}

fn key_name(req: &ApplyRequest<'_>) -> Result<String, ProviderError> {
    if let Some(name) = attrs::non_empty_string(req.config, "key_name")? {
        return Ok(name);
    }
    let prefix = attrs::non_empty_string(req.config, "key_name_prefix")?;
    Ok(attrs::generated_name(
        prefix.as_deref(),
        &req.owner.lineage,
        req.address,
    ))
}

async fn describe_by_name(api: &Api, name: &str) -> Result<Option<KeyPairXml>, ProviderError> {
    let mut p = Params::new();
    p.set("KeyName.1", name);
    match api
        .ec2::<DescribeKeyPairs>("DescribeKeyPairs", &p, Idempotency::Safe)
        .await
    {
        Ok(r) => Ok(r.key_set.item.into_iter().next()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.context(format!("cannot read key pair {name}"))),
    }
}

/// Imports the key with berth's tags, or adopts the key of the same name
/// that an interrupted apply of this address left.
pub(crate) async fn create(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let name = key_name(req)?;
    let public_key = attrs::required_string(req.config, "public_key")?;
    let user = attrs::string_map(req.config, "tags")?;
    let wanted = tags::all_tags(&user, req.owner, req.address, req.config_hash)?;
    let mut p = Params::new();
    p.set("KeyName", name.as_str())
        .set("PublicKeyMaterial", STANDARD.encode(public_key.trim()));
    tags::tag_specification(&mut p, 1, "key-pair", &wanted);
    match api
        .ec2::<KeyPairXml>("ImportKeyPair", &p, Idempotency::Unsafe)
        .await
    {
        Ok(kp) => {
            let mut kp = kp;
            if kp.key_name.is_empty() {
                kp.key_name = name;
            }
            kp.tag_set = Items {
                item: wanted
                    .iter()
                    .map(|(k, v)| Tag {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            };
            Ok(applied(req.config, &kp))
        }
        Err(e) if e.is("InvalidKeyPair.Duplicate") => {
            let Some(existing) = describe_by_name(api, &name).await? else {
                return Err(e.context(format!("cannot import key pair {name}")));
            };
            let current = tag_map(&existing.tag_set);
            let ours = tags::marks(req.owner, &current).is_some_and(|m| m.address == req.address);
            if !ours {
                return Err(ProviderError::Api(format!(
                    "cannot import key pair {name}: {e}; a key pair of that name exists and was \
                     not created by berth for {} in this state (delete or rename it, or choose \
                     another `key_name`)",
                    req.address
                )));
            }
            progress(&format!(
                "key pair {name} ({}) was created by an interrupted apply; adopting it",
                existing.key_pair_id
            ));
            tags::sync_ec2(api, &existing.key_pair_id, &current, &wanted).await?;
            let mut adopted = existing;
            adopted.tag_set = Items {
                item: wanted
                    .iter()
                    .map(|(k, v)| Tag {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            };
            Ok(applied(req.config, &adopted))
        }
        Err(e) => Err(e.context(format!("cannot import key pair {name}"))),
    }
}

/// Updates the tags (nothing else of a key pair can change in place).
pub(crate) async fn update(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let name = req
        .prior_id
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::Api("cannot update a key pair without its name".into()))?;
    let Some(mut current) = describe_by_name(api, &name).await? else {
        return Err(ProviderError::Api(format!(
            "key pair {name} no longer exists; run plan again to create it"
        )));
    };
    let user = attrs::string_map(req.config, "tags")?;
    let wanted = tags::all_tags(&user, req.owner, req.address, req.config_hash)?;
    let changed = tags::sync_ec2(
        api,
        &current.key_pair_id,
        &tag_map(&current.tag_set),
        &wanted,
    )
    .await?;
    if !changed.is_empty() {
        progress(&format!("tags updated: {}", changed.join(", ")));
    }
    current.tag_set = Items {
        item: wanted
            .iter()
            .map(|(k, v)| Tag {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
    };
    Ok(applied(req.config, &current))
}

/// Deletes the key pair; one that is already gone is fine.
pub(crate) async fn delete(api: &Api, req: &DeleteRequest<'_>) -> Result<(), ProviderError> {
    // By name, the id (as Terraform does; moto only knows this form).
    let mut p = Params::new();
    match attrs::non_empty_string(req.attrs, "key_pair_id")? {
        _ if !req.id.is_empty() => p.set("KeyName", req.id),
        Some(id) => p.set("KeyPairId", id),
        None => {
            return Err(ProviderError::Api(
                "cannot delete a key pair without its name".into(),
            ));
        }
    };
    match api.ec2_text("DeleteKeyPair", &p, Idempotency::Safe).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.context(format!("cannot delete key pair {}", req.id))),
    }
}

/// The owner's key pairs: one `DescribeKeyPairs` filtered by berth's tags.
pub(crate) async fn refresh(api: &Api, owner: &Ownership) -> Result<Vec<Observed>, ProviderError> {
    let mut p = Params::new();
    tags::owner_filters(&mut p, owner);
    let answer: DescribeKeyPairs = api
        .ec2("DescribeKeyPairs", &p, Idempotency::Safe)
        .await
        .map_err(|e| e.context("cannot list key pairs"))?;
    let mut observed = Vec::new();
    for kp in answer.key_set.item {
        let Some(marks) = tags::marks(owner, &tag_map(&kp.tag_set)) else {
            continue;
        };
        if !attrs::address_is_type(&marks.address, TYPE) || kp.key_name.is_empty() {
            continue;
        }
        observed.push(Observed {
            address: marks.address,
            id: kp.key_name.clone(),
            attrs: read_back(&kp),
            config_hash: marks.config_hash,
        });
    }
    observed.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replacement_follows_terraform() {
        let s = schema();
        for name in ["key_name", "key_name_prefix", "public_key"] {
            assert!(s.forces_replacement(name), "{name}");
        }
        assert!(!s.forces_replacement("tags"));
    }

    #[test]
    fn private_keys_are_refused() {
        let config: Attrs = [(
            "public_key".to_owned(),
            json!("-----BEGIN OPENSSH PRIVATE KEY-----\nabc"),
        )]
        .into();
        assert_eq!(validate(&config).len(), 1);
    }

    #[test]
    fn replies_are_read() {
        let kp: KeyPairXml = crate::xml::parse(
            r#"<ImportKeyPairResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><requestId>r</requestId><keyName>k1</keyName><keyFingerprint>d4:89</keyFingerprint><keyPairId>key-1</keyPairId><tagSet><item><key>berth:env</key><value>e</value></item></tagSet></ImportKeyPairResponse>"#,
        )
        .unwrap();
        assert_eq!(kp.key_pair_id, "key-1");
        let a = read_back(&kp);
        assert_eq!(a["id"], json!("k1"));
        assert_eq!(a["tags"], json!({}));
        assert_eq!(key_type_of("ssh-ed25519 AAAA x"), Some("ed25519"));
    }
}
