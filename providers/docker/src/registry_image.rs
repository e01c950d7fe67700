//! `docker_registry_image`: pushes a local image to its registry through
//! the Docker engine and keeps track of the digest the registry stores
//! (kreuzwerker/docker's names).
//!
//! ```hcl
//! resource "docker_image" "app" {
//!   name = "registry.example.com/team/app:v1"
//!   build { context = "app" }
//! }
//!
//! resource "docker_registry_image" "app" {
//!   name          = docker_image.app.name   # orders the build before the push
//!   keep_remotely = false                   # destroy deletes the manifest
//! }
//!
//! resource "docker_container" "web" {
//!   name  = "web"
//!   image = "${docker_registry_image.app.name}@${docker_registry_image.app.sha256_digest}"
//! }
//! ```
//!
//! | attribute | |
//! |---|---|
//! | `name` | the full reference `registry/repository:tag`; replace |
//! | `keep_remotely` | default `false`; when true, destroy leaves the image in the registry |
//! | `triggers` | map of strings; any change replaces (pushes again) |
//! | `sha256_digest` | computed: the manifest digest the registry stores |
//! | `image_id` | computed at plan time from the local image; a rebuilt image replaces (pushes again) |
//!
//! **Push.** The local image `name` (built by a `docker_image` of the same
//! name) is pushed with the engine's push API, with `X-Registry-Auth`
//! credentials for its registry from [`registry_credentials`] (the
//! provider's `registry_auth` blocks or GitLab CI's `CI_REGISTRY*`, matched
//! as for pulls). The engine reports failures inside the push stream; they
//! become errors naming the registry (and the user), never the password.
//! An ECR registry (`<account>.dkr.ecr.<region>.amazonaws.com`) that no
//! block gives a username or password for logs in as `AWS` with the AWS
//! provider's `GetAuthorizationToken` (the [`crate::CredentialSource`]
//! berth's binary plugs in). A registry whose block names an `endpoint` is
//! pushed to there: the image is tagged `endpoint/repository:tag` for the
//! push and untagged after it; the name, the id and state keep the
//! registry's address.
//! The digest is read from the stream's final `digest: sha256:...` line,
//! else asked of the registry with a `HEAD`. With a `host` block the push
//! is made by that host's engine (where the `docker_image` was built); the
//! registry calls of refresh and destroy are made from where berth runs.
//!
//! **Plan.** `prepare` inspects the local image: its id goes into
//! `image_id` (so a rebuilt image plans a replacement, i.e. a new push), and
//! the digest its `RepoDigests` hold for this repository goes into
//! `sha256_digest`, which is what the registry should say.
//!
//! **Refresh** asks the registry, not the engine: one
//! `HEAD /v2/<repository>/manifests/<tag>` per recorded image (the id is
//! `registry/repository:tag@sha256:...`, the reference and the pushed
//! digest). A tag that is gone (404) reports nothing, so the plan pushes
//! again; a tag that points elsewhere reports the digest it points at, so
//! the plan shows `sha256_digest` changing and the update pushes again.
//!
//! **Destroy** deletes the manifest by digest
//! (`DELETE /v2/<repository>/manifests/<digest>`: registries refuse deletes
//! by tag), unless `keep_remotely`; a manifest that is already gone is
//! fine. The registry must allow deletes (distribution:
//! `storage.delete.enabled: true`).
//!
//! **Deploying by digest.** A `docker_container` whose `image` is
//! `"${docker_registry_image.app.name}@${docker_registry_image.app.sha256_digest}"`
//! runs exactly what was pushed. When the engine already has an image with
//! that digest (it built and pushed it) nothing is pulled; elsewhere the
//! engine pulls `repository@sha256:...` (the tag in the reference is
//! ignored by the engine) with the same `registry_auth` credentials.

use std::collections::BTreeMap;

use berth_provider::{
    Applied, ApplyRequest, AttrSchema, AttrType, Attrs, DeleteRequest, Observed, Progress,
    ProviderError, ResourceSchema, Value,
};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::ImageInspect;
use bollard::query_parameters::{
    PushImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use crate::attrs;
use crate::client::{is_not_found, message};
use crate::registry::Auths;
use crate::registry_api::{self, Deleted, ImageRef, RegistryCredentials, registry_credentials};

/// The resource type name.
pub(crate) const TYPE: &str = "docker_registry_image";

/// How many registries refresh asks at once.
const REFRESH_CONCURRENCY: usize = 4;

/// The schema of `docker_registry_image`.
pub(crate) fn schema() -> ResourceSchema {
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            AttrSchema::required("name", AttrType::String).force_new(),
            AttrSchema::optional("keep_remotely", AttrType::Bool).default("false"),
            AttrSchema::optional("triggers", AttrType::MapOfString).force_new(),
            AttrSchema::computed("sha256_digest", AttrType::String),
            AttrSchema::computed("image_id", AttrType::String).force_new(),
        ],
        blocks: vec![],
    }
}

fn image_ref(config: &Attrs) -> Result<ImageRef, ProviderError> {
    let name = attrs::required_string(config, "name")?;
    ImageRef::parse(&name).map_err(|m| ProviderError::Config(format!("`name`: {m}")))
}

/// The berth id: the tagged reference and the digest pushed.
fn id_of(image: &ImageRef, digest: &str) -> String {
    format!("{}@{digest}", image.tagged())
}

/// Splits an id back into the reference and the digest.
fn split_id(id: &str) -> Option<(ImageRef, String)> {
    let (reference, digest) = id.rsplit_once('@')?;
    let image = ImageRef::parse(reference).ok()?;
    digest
        .starts_with("sha256:")
        .then(|| (image, digest.to_owned()))
}

/// The digest of `image`'s repository in the local image's `RepoDigests`.
fn local_digest(image: &ImageRef, local: &ImageInspect) -> Option<String> {
    local
        .repo_digests
        .as_ref()?
        .iter()
        .find_map(|d| image.digest_in(d))
}

/// Plan time: the local image's id into `image_id` and the digest it was
/// last pushed to this repository with into `sha256_digest`. Without an
/// engine, or without the image (not built yet), nothing is added.
pub(crate) async fn prepare(
    docker: Option<&Docker>,
    config: &mut Attrs,
) -> Result<(), ProviderError> {
    let image = image_ref(config)?;
    let Some(docker) = docker else {
        return Ok(());
    };
    let name = image.tagged();
    match docker.inspect_image(&name).await {
        Ok(local) => {
            if let Some(id) = local.id.clone() {
                config.insert("image_id".into(), Value::from(id));
            }
            if let Some(digest) = local_digest(&image, &local) {
                config.insert("sha256_digest".into(), Value::from(digest));
            }
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            tracing::debug!(image = %name, "cannot inspect the image at plan time: {}", message(&e))
        }
    }
    Ok(())
}

/// Pushes the local image and records the digest.
pub(crate) async fn create(
    docker: &Docker,
    auths: &Auths,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let image = image_ref(req.config)?.located(auths);
    let (image_id, digest) = push_local(docker, auths, &image, progress).await?;
    let mut attrs = req.config.clone();
    attrs.insert("image_id".into(), Value::from(image_id));
    attrs.insert("sha256_digest".into(), Value::from(digest.clone()));
    Ok(Applied {
        id: id_of(&image, &digest),
        attrs,
    })
}

/// `keep_remotely` changes nothing remotely; a `sha256_digest` that the
/// registry no longer agrees with (the tag was moved) pushes again.
pub(crate) async fn update(
    docker: &Docker,
    auths: &Auths,
    req: &ApplyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let image = image_ref(req.config)?.located(auths);
    let prior = req.prior.cloned().unwrap_or_default();
    let prior_digest = attrs::non_empty_string(&prior, "sha256_digest")?;
    let wanted = attrs::non_empty_string(req.config, "sha256_digest")?;
    let mut attrs = req.config.clone();
    let moved = prior_digest.is_none() || (wanted.is_some() && wanted != prior_digest);
    let digest = if moved {
        let (image_id, digest) = push_local(docker, auths, &image, progress).await?;
        attrs.insert("image_id".into(), Value::from(image_id));
        digest
    } else {
        if !attrs.contains_key("image_id")
            && let Some(id) = prior.get("image_id")
        {
            attrs.insert("image_id".into(), id.clone());
        }
        prior_digest.unwrap_or_default()
    };
    attrs.insert("sha256_digest".into(), Value::from(digest.clone()));
    Ok(Applied {
        id: id_of(&image, &digest),
        attrs,
    })
}

/// Deletes the manifest by digest unless `keep_remotely`.
pub(crate) async fn delete(
    auths: &Auths,
    req: &DeleteRequest<'_>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let from_id = split_id(req.id);
    let image = match attrs::non_empty_string(req.attrs, "name")? {
        Some(name) => {
            ImageRef::parse(&name).map_err(|m| ProviderError::Config(format!("`name`: {m}")))?
        }
        None => match &from_id {
            Some((image, _)) => image.clone(),
            None => return Ok(()),
        },
    }
    .located(auths);
    if attrs::boolean(req.attrs, "keep_remotely")?.unwrap_or(false) {
        progress(&format!(
            "keeping {} in the registry (keep_remotely)",
            image.tagged()
        ));
        return Ok(());
    }
    let digest = match attrs::non_empty_string(req.attrs, "sha256_digest")? {
        Some(d) => d,
        None => match from_id {
            Some((_, d)) => d,
            None => return Ok(()),
        },
    };
    let credentials = registry_credentials(auths, &image.registry).await?;
    match registry_api::delete_manifest(&image, &digest, credentials.as_ref()).await? {
        Deleted::Deleted => progress(&format!(
            "deleted {}@{digest} from the registry {}",
            image.name, image.registry
        )),
        Deleted::AlreadyGone => progress(&format!(
            "{}@{digest} is already gone from the registry {}",
            image.name, image.registry
        )),
    }
    Ok(())
}

/// Asks each recorded image's registry which digest its tag points at:
/// one `HEAD` per image, a few registries at a time. A tag that is gone
/// is not reported.
pub(crate) async fn refresh(
    auths: &Auths,
    recorded: &[(String, String)],
) -> Result<Vec<Observed>, ProviderError> {
    let mut wanted: Vec<(String, ImageRef)> = Vec::new();
    for (address, id) in recorded {
        match split_id(id) {
            Some((image, _)) => wanted.push((address.clone(), image)),
            None => tracing::debug!(%address, %id, "not a registry image id; skipped"),
        }
    }
    let results: Vec<Result<Option<Observed>, ProviderError>> = futures_util::stream::iter(
        wanted
            .into_iter()
            .map(|(address, image)| observe(auths, address, image)),
    )
    .buffer_unordered(REFRESH_CONCURRENCY)
    .collect()
    .await;
    let mut by_address = BTreeMap::new();
    for result in results {
        if let Some(o) = result? {
            by_address.insert(o.address.clone(), o);
        }
    }
    Ok(by_address.into_values().collect())
}

/// One recorded image as its registry shows it: the digest its tag points
/// at, or nothing when the tag is gone.
async fn observe(
    auths: &Auths,
    address: String,
    image: ImageRef,
) -> Result<Option<Observed>, ProviderError> {
    let image = image.located(auths);
    let credentials = registry_credentials(auths, &image.registry).await?;
    let current = registry_api::manifest_digest(&image, &image.tag, credentials.as_ref()).await?;
    Ok(current.map(|digest| Observed {
        address,
        id: id_of(&image, &digest),
        attrs: Attrs::from([("sha256_digest".to_owned(), Value::from(digest))]),
        config_hash: None,
    }))
}

/// Pushes the local image `image`; its id and the pushed digest.
async fn push_local(
    docker: &Docker,
    auths: &Auths,
    image: &ImageRef,
    progress: Progress<'_>,
) -> Result<(String, String), ProviderError> {
    let tagged = image.tagged();
    let local = match docker.inspect_image(&tagged).await {
        Ok(local) => local,
        Err(e) if is_not_found(&e) => {
            return Err(ProviderError::Api(format!(
                "image {tagged} does not exist locally: build it with a docker_image of the \
                 same name (`name = docker_image.<name>.name` also orders the build before \
                 the push)"
            )));
        }
        Err(e) => {
            return Err(ProviderError::Api(format!(
                "cannot inspect image {tagged}: {}",
                message(&e)
            )));
        }
    };
    let credentials = registry_credentials(auths, &image.registry).await?;
    let digest = push(docker, auths, image, credentials.as_ref(), progress).await?;
    Ok((local.id.unwrap_or_default(), digest))
}

/// Pushes `image` through the engine; the digest the registry stored.
async fn push(
    docker: &Docker,
    auths: &Auths,
    image: &ImageRef,
    credentials: Option<&RegistryCredentials>,
    progress: Progress<'_>,
) -> Result<String, ProviderError> {
    let tagged = image.tagged();
    progress(&format!("pushing {tagged}"));
    // The engine wants an X-Registry-Auth header even for anonymous pushes.
    let mut header = credentials
        .map(RegistryCredentials::docker)
        .unwrap_or_else(|| DockerCredentials {
            serveraddress: Some(image.registry.clone()),
            ..Default::default()
        });
    // A registry reached at an endpoint: the engine pushes the image under
    // the endpoint's name (an extra tag, removed again afterwards), with
    // the registry's credentials. The manifest, and so the digest, is the
    // same under either name.
    let push_name = image.push_name();
    let alias = image.endpoint.as_ref().map(|endpoint| {
        header.serveraddress = Some(endpoint.clone());
        format!("{push_name}:{}", image.tag)
    });
    if let Some(alias) = &alias {
        let tag = TagImageOptionsBuilder::new()
            .repo(&push_name)
            .tag(&image.tag)
            .build();
        docker.tag_image(&tagged, Some(tag)).await.map_err(|e| {
            ProviderError::Api(format!(
                "cannot tag {tagged} as {alias} to push it to the registry's endpoint: {}",
                message(&e)
            ))
        })?;
    }
    let streamed = push_stream(
        docker,
        auths,
        image,
        &push_name,
        header,
        credentials,
        progress,
    )
    .await;
    if let Some(alias) = &alias {
        let untag = RemoveImageOptionsBuilder::new().noprune(true).build();
        if let Err(e) = docker.remove_image(alias, Some(untag), None).await {
            tracing::debug!(%alias, "cannot remove the endpoint tag: {}", message(&e));
        }
    }
    if let Some(digest) = streamed? {
        return Ok(digest);
    }
    // No digest line (an engine that words it otherwise): ask the registry.
    registry_api::manifest_digest(image, &image.tag, credentials)
        .await?
        .ok_or_else(|| {
            ProviderError::Api(format!(
                "pushed {tagged}, but the registry {} does not know the tag",
                image.registry
            ))
        })
}

/// Follows the engine's push of `push_name:tag`; the digest of its final
/// line, if it has one.
async fn push_stream(
    docker: &Docker,
    auths: &Auths,
    image: &ImageRef,
    push_name: &str,
    header: DockerCredentials,
    credentials: Option<&RegistryCredentials>,
    progress: Progress<'_>,
) -> Result<Option<String>, ProviderError> {
    let options = PushImageOptionsBuilder::new().tag(&image.tag).build();
    let mut stream = docker.push_image(push_name, Some(options), Some(header));
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| push_error(auths, image, credentials, &message(&e)))?;
        if let Some(detail) = info.error_detail {
            let text = detail.message.unwrap_or_default();
            return Err(push_error(auths, image, credentials, &text));
        }
        let Some(status) = info.status else {
            continue;
        };
        if let Some(d) = digest_in_status(&status) {
            digest = Some(d);
        }
        let in_progress = info
            .progress_detail
            .as_ref()
            .is_some_and(|d| d.current.is_some() || d.total.is_some());
        if !in_progress && !matches!(status.as_str(), "Preparing" | "Waiting") {
            progress(&status);
        }
    }
    Ok(digest)
}

/// The digest in the engine's last push line, `v1: digest: sha256:... size: 527`.
fn digest_in_status(status: &str) -> Option<String> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| digest.to_owned())
}

/// The error for a failed push, from the engine's message: a registry that
/// refused the credentials (or wants some) is named, with what to do about
/// it, and no password appears.
fn push_error(
    auths: &Auths,
    image: &ImageRef,
    credentials: Option<&RegistryCredentials>,
    engine_message: &str,
) -> ProviderError {
    let mut text = auths.scrub(engine_message.trim());
    if let Some(c) = credentials {
        text = c.scrub(&text);
    }
    let lower = text.to_ascii_lowercase();
    let refused = [
        "unauthorized",
        "authentication required",
        "incorrect username or password",
        "no basic auth credentials",
        "denied",
        "401",
        "403",
    ]
    .iter()
    .any(|needle| lower.contains(needle));
    let tagged = image.tagged();
    let registry = &image.registry;
    ProviderError::Api(match (refused, credentials) {
        (true, Some(c)) => format!(
            "pushing image {tagged} failed: the registry {registry} refused the credentials \
             for user `{}` ({}, and that the user may push to {}): {text}",
            c.user(),
            c.advice(),
            image.repository
        ),
        (true, None) => format!(
            "pushing image {tagged} failed: the registry {registry} requires credentials and \
             none are configured for it; add `registry_auth {{ address = \"{registry}\", \
             username = ..., password = ... }}` to provider \"docker\" (or set CI_REGISTRY, \
             CI_REGISTRY_USER and CI_REGISTRY_PASSWORD): {text}"
        ),
        (false, _) => format!("pushing image {tagged} to the registry {registry} failed: {text}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: serde_json::Value) -> Attrs {
        match v {
            serde_json::Value::Object(map) => map.into_iter().collect(),
            _ => unreachable!(),
        }
    }

    const DIGEST: &str = "sha256:24d31e139e4bf115668c1195664c48e983053478c6fe76b5fa3197e9f90b74f5";

    #[test]
    fn the_digest_is_read_from_the_push_stream() {
        assert_eq!(
            digest_in_status(&format!("v1: digest: {DIGEST} size: 524")).as_deref(),
            Some(DIGEST)
        );
        assert_eq!(digest_in_status("Pushed"), None);
        assert_eq!(digest_in_status("v1: digest: sha256:abc size: 1"), None);
    }

    #[test]
    fn ids_hold_the_reference_and_the_digest() {
        let image = ImageRef::parse("127.0.0.1:5000/berth-it/app").unwrap();
        let id = id_of(&image, DIGEST);
        assert_eq!(id, format!("127.0.0.1:5000/berth-it/app:latest@{DIGEST}"));
        let (back, digest) = split_id(&id).unwrap();
        assert_eq!(back, image);
        assert_eq!(digest, DIGEST);
        assert!(split_id("sha256:abc").is_none());
        assert!(split_id("").is_none());
    }

    #[test]
    fn push_errors_name_the_registry_and_user_but_not_the_password() {
        let auths = Auths::from_config(
            &config(json!({"registry_auth": [
                {"address": "127.0.0.1:5000", "username": "ci", "password": "hunter2-secret"}
            ]})),
            |_| None,
        )
        .unwrap();
        let image = ImageRef::parse("127.0.0.1:5000/berth-it/app:v1").unwrap();
        let credentials = RegistryCredentials::new(
            "127.0.0.1:5000",
            Some("ci".into()),
            Some("hunter2-secret".into()),
        );
        let e = push_error(
            &auths,
            &image,
            Some(&credentials),
            "unauthorized: authentication required hunter2-secret",
        )
        .to_string();
        assert!(e.contains("refused the credentials"), "{e}");
        assert!(e.contains("127.0.0.1:5000"), "{e}");
        assert!(e.contains("`ci`"), "{e}");
        assert!(!e.contains("hunter2-secret"), "{e}");

        let e =
            push_error(&Auths::default(), &image, None, "no basic auth credentials").to_string();
        assert!(e.contains("requires credentials"), "{e}");
        let e = push_error(&Auths::default(), &image, None, "EOF").to_string();
        assert_eq!(
            e,
            "pushing image 127.0.0.1:5000/berth-it/app:v1 to the registry 127.0.0.1:5000 failed: EOF"
        );
    }

    #[test]
    fn names_must_be_tag_references() {
        assert!(image_ref(&config(json!({"name": "reg.io/app:v1"}))).is_ok());
        let e = image_ref(&config(json!({"name": format!("reg.io/app@{DIGEST}")})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("digest"), "{e}");
        assert!(image_ref(&config(json!({}))).is_err());
    }

    #[test]
    fn the_schema_replaces_on_a_new_image_and_updates_on_a_moved_tag() {
        let s = schema();
        assert!(s.forces_replacement("name"));
        assert!(s.forces_replacement("triggers"));
        assert!(s.forces_replacement("image_id"));
        assert!(!s.forces_replacement("sha256_digest"));
        assert!(!s.forces_replacement("keep_remotely"));
    }
}
