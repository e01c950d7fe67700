//! `digitalocean_ssh_key`: an SSH public key on the account
//! (`/v2/account/keys`).
//!
//! Attributes as in Terraform: `name` (renamed in place with `PUT`),
//! `public_key` (a change replaces the key); computed `id` and
//! `fingerprint`.
//!
//! SSH keys cannot carry tags, so berth cannot mark them as its own.
//! Instead:
//! - refresh lists the account's keys once (paged, 200 a page; and not at all
//!   when state records no key, as DigitalOcean allows only 10 key listings a
//!   minute) and reports the keys whose ids state records;
//! - a key created but not recorded (berth stopped between the create call
//!   and the state write) is found on the next create: DigitalOcean refuses
//!   the same public key twice (422), so berth then looks the key up by its
//!   public key and adopts it when its name is the configured one. A key of
//!   another name is reported as a conflict, never taken over. Adoption
//!   therefore happens at apply time, not in the plan, and a key with the
//!   same name and public key uploaded by hand is adopted the same way.

use berth_provider::{
    Applied, ApplyRequest, AttrProblem, AttrSchema, AttrType, Attrs, DeleteRequest, Observed,
    Progress, ProviderError, ResourceSchema, Value,
};
use reqwest::Method;
use serde_json::json;

use crate::attrs;
use crate::client::{Api, ApiError};

/// The resource type name.
pub(crate) const TYPE: &str = "digitalocean_ssh_key";

/// The schema of `digitalocean_ssh_key`.
pub(crate) fn schema() -> ResourceSchema {
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            AttrSchema::required("name", AttrType::String),
            AttrSchema::required("public_key", AttrType::String).force_new(),
            AttrSchema::computed("id", AttrType::String),
            AttrSchema::computed("fingerprint", AttrType::String),
        ],
        blocks: vec![],
    }
}

/// The key type and base64 body of an OpenSSH public key line, without
/// the comment: what identifies a key.
fn key_material(public_key: &str) -> Option<(String, String)> {
    let mut fields = public_key.split_whitespace();
    // Skip options such as `restrict,command="..."` that authorized_keys
    // lines may start with: the type is the first field naming a key type.
    loop {
        let field = fields.next()?;
        if field.starts_with("ssh-") || field.starts_with("ecdsa-") || field.starts_with("sk-") {
            let body = fields.next()?;
            return Some((field.to_owned(), body.to_owned()));
        }
    }
}

/// Checks the name and the shape of the public key.
pub(crate) fn validate(config: &Attrs) -> Vec<AttrProblem> {
    let mut problems = Vec::new();
    if let Ok(Some(key)) = attrs::string(config, "public_key")
        && key_material(&key).is_none()
    {
        problems.push(AttrProblem {
            attribute: "public_key".into(),
            message: "must be an OpenSSH public key line (`ssh-ed25519 AAAA... comment`)".into(),
        });
    }
    if let Ok(Some(name)) = attrs::string(config, "name")
        && name.trim().is_empty()
    {
        problems.push(AttrProblem {
            attribute: "name".into(),
            message: "must not be empty".into(),
        });
    }
    problems
}

/// Plan time: trims the public key (a trailing newline from `file()` is
/// not a change, as in Terraform).
pub(crate) fn prepare(config: &mut Attrs) -> Result<(), ProviderError> {
    if let Some(key) = attrs::string(config, "public_key")? {
        config.insert("public_key".into(), Value::from(key.trim()));
    }
    Ok(())
}

fn applied(config: &Attrs, key: &Value) -> Result<Applied, ProviderError> {
    let id = attrs::json_text(key.get("id"))
        .ok_or_else(|| ProviderError::Api("DigitalOcean API: an SSH key without an id".into()))?;
    let mut out = config.clone();
    out.insert("id".into(), Value::from(id.clone()));
    if let Some(fp) = attrs::json_text(key.get("fingerprint")) {
        out.insert("fingerprint".into(), Value::from(fp));
    }
    if let Some(name) = attrs::json_text(key.get("name")) {
        out.insert("name".into(), Value::from(name));
    }
    Ok(Applied { id, attrs: out })
}

/// Creates the key, or adopts the key of the same public key and name left
/// by an interrupted apply.
pub(crate) async fn create(
    api: &Api,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let name = attrs::required_string(req.config, "name")?;
    let public_key = attrs::required_string(req.config, "public_key")?
        .trim()
        .to_owned();
    let body = json!({"name": name, "public_key": public_key});
    let what = format!("create SSH key {name}");
    match api
        .call(
            Method::POST,
            api.url(&["v2", "account", "keys"]),
            Some(&body),
            &what,
        )
        .await
    {
        Ok(answer) => {
            let key = answer.get("ssh_key").ok_or_else(|| {
                ProviderError::Api("DigitalOcean API: the key was created but not returned".into())
            })?;
            applied(req.config, key)
        }
        Err(e) if e.is_unprocessable() => {
            // Most likely "SSH Key is already in use on your account".
            let Some(existing) = find_by_public_key(api, &public_key).await? else {
                return Err(e.context(format!("cannot create SSH key {name}")));
            };
            let existing_name = attrs::json_text(existing.get("name")).unwrap_or_default();
            let existing_id = attrs::json_text(existing.get("id")).unwrap_or_default();
            if existing_name != name {
                return Err(ProviderError::Api(format!(
                    "cannot create SSH key {name}: {e}; the account already has this public key \
                     as `{existing_name}` (id {existing_id}); use that key's id or fingerprint, \
                     or rename or delete it"
                )));
            }
            progress(&format!(
                "the account already has this public key as `{name}` (id {existing_id}); adopting it"
            ));
            applied(req.config, &existing)
        }
        Err(e) => Err(e.context(format!("cannot create SSH key {name}"))),
    }
}

async fn find_by_public_key(api: &Api, public_key: &str) -> Result<Option<Value>, ProviderError> {
    let wanted = key_material(public_key);
    if wanted.is_none() {
        return Ok(None);
    }
    let keys = api
        .list_all(&["v2", "account", "keys"], &[], "ssh_keys", "list SSH keys")
        .await
        .map_err(|e| e.context("cannot list SSH keys"))?;
    Ok(keys.into_iter().find(|k| {
        k.get("public_key")
            .and_then(Value::as_str)
            .and_then(key_material)
            == wanted
    }))
}

/// Renames the key (`PUT /v2/account/keys/{id}`); nothing else is
/// updatable.
pub(crate) async fn update(api: &Api, req: &ApplyRequest<'_>) -> Result<Applied, ProviderError> {
    let id = req
        .prior_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ProviderError::Api("cannot update an SSH key without its id".into()))?;
    let name = attrs::required_string(req.config, "name")?;
    let answer = api
        .call(
            Method::PUT,
            api.url(&["v2", "account", "keys", id]),
            Some(&json!({"name": name})),
            &format!("rename SSH key {id}"),
        )
        .await
        .map_err(|e| e.context(format!("cannot rename SSH key {id} to {name}")))?;
    let key = answer
        .get("ssh_key")
        .ok_or_else(|| ProviderError::Api("DigitalOcean API: the key was not returned".into()))?;
    applied(req.config, key)
}

/// Deletes the key; a key that is already gone is fine.
pub(crate) async fn delete(api: &Api, req: &DeleteRequest<'_>) -> Result<(), ProviderError> {
    let id = if req.id.is_empty() {
        attrs::required_string(req.attrs, "fingerprint")?
    } else {
        req.id.to_owned()
    };
    match api
        .call(
            Method::DELETE,
            api.url(&["v2", "account", "keys", &id]),
            None,
            &format!("delete SSH key {id}"),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.context(format!("cannot delete SSH key {id}"))),
    }
}

/// Reports the recorded keys that still exist, from one paged list.
pub(crate) async fn refresh(
    api: &Api,
    recorded: &[(String, String)],
) -> Result<Vec<Observed>, ProviderError> {
    if recorded.is_empty() {
        return Ok(Vec::new());
    }
    let keys = api
        .list_all(&["v2", "account", "keys"], &[], "ssh_keys", "list SSH keys")
        .await
        .map_err(|e: ApiError| e.context("cannot list SSH keys"))?;
    let mut observed = Vec::new();
    for key in keys {
        let id = attrs::json_text(key.get("id")).unwrap_or_default();
        let fingerprint = attrs::json_text(key.get("fingerprint")).unwrap_or_default();
        let Some((address, _)) = recorded
            .iter()
            .find(|(_, rid)| !rid.is_empty() && (*rid == id || *rid == fingerprint))
        else {
            continue;
        };
        let mut attrs = Attrs::new();
        attrs.insert("id".into(), Value::from(id.clone()));
        attrs.insert("fingerprint".into(), Value::from(fingerprint));
        if let Some(name) = attrs::json_text(key.get("name")) {
            attrs.insert("name".into(), Value::from(name));
        }
        observed.push(Observed {
            address: address.clone(),
            id,
            attrs,
            config_hash: None,
        });
    }
    observed.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_ignores_comments_and_options() {
        let a = key_material("ssh-ed25519 AAAAC3Nz me@host\n");
        let b = key_material("restrict ssh-ed25519 AAAAC3Nz other");
        assert_eq!(a, b);
        assert_eq!(a, Some(("ssh-ed25519".to_owned(), "AAAAC3Nz".to_owned())));
        assert!(key_material("not a key").is_none());
    }
}
