//! `docker_image`: the schema, the plan-time `build_hash` of a build
//! context, building (or finding / pulling) an image, refresh of the images
//! berth built, and removal. Also the image resolution that
//! `docker_container` shares: turning a reference into an image id, pulling
//! it when it is missing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use berth_provider::{
    Applied, ApplyRequest, AttrSchema, AttrType, Attrs, BlockSchema, DeleteRequest, Nesting,
    Observed, Ownership, Progress, ProviderError, ResourceSchema, Value, labels,
};
use bollard::Docker;
use bollard::models::ImageInspect;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, ListImagesOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;

use crate::attrs;
use crate::client::{self, api, api_ctx, is_conflict, is_not_found, message};
use crate::context::BuildSpec;
use crate::registry::Auths;

/// The resource type name.
pub(crate) const TYPE: &str = "docker_image";

/// The schema of `docker_image`.
pub(crate) fn schema() -> ResourceSchema {
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            AttrSchema::required("name", AttrType::String).force_new(),
            AttrSchema::optional("keep_locally", AttrType::Bool),
            AttrSchema::optional("triggers", AttrType::MapOfString).force_new(),
            AttrSchema::computed("image_id", AttrType::String),
            AttrSchema::computed("repo_digest", AttrType::String),
            AttrSchema::computed("build_hash", AttrType::String).force_new(),
        ],
        blocks: vec![BlockSchema {
            name: "build",
            nesting: Nesting::Single,
            force_new: true,
            attributes: vec![
                AttrSchema::required("context", AttrType::String),
                AttrSchema::optional("dockerfile", AttrType::String),
                AttrSchema::optional("build_args", AttrType::MapOfString),
                AttrSchema::optional("target", AttrType::String),
            ],
            blocks: vec![],
        }],
    }
}

/// The `build` block, with the context resolved against `base_dir`.
fn build_spec(config: &Attrs, base_dir: &Path) -> Result<Option<BuildSpec>, ProviderError> {
    let Some(build) = attrs::block(config, "build")? else {
        return Ok(None);
    };
    let context = attrs::required_string(&build, "context")
        .map_err(|_| ProviderError::Config("`build.context` is required".to_owned()))?;
    Ok(Some(BuildSpec {
        dir: base_dir.join(context),
        dockerfile: attrs::non_empty_string(&build, "dockerfile")?
            .unwrap_or_else(|| "Dockerfile".to_owned()),
        build_args: attrs::string_map(&build, "build_args")?.unwrap_or_default(),
        target: attrs::non_empty_string(&build, "target")?,
    }))
}

async fn hash_of(spec: BuildSpec) -> Result<String, ProviderError> {
    tokio::task::spawn_blocking(move || spec.hash())
        .await
        .map_err(|e| ProviderError::Api(format!("hashing the build context failed: {e}")))?
}

/// Plan time: puts the `build_hash` of the build context into `config`.
pub(crate) async fn prepare(config: &mut Attrs, base_dir: &Path) -> Result<(), ProviderError> {
    if let Some(spec) = build_spec(config, base_dir)? {
        let hash = hash_of(spec).await?;
        config.insert("build_hash".into(), Value::from(hash));
    }
    Ok(())
}

/// Builds the image (with a `build` block) or makes sure it exists locally,
/// pulling it when missing.
pub(crate) async fn create(
    docker: &Docker,
    auths: &Auths,
    req: &ApplyRequest<'_>,
    base_dir: &Path,
    progress: Progress<'_>,
) -> Result<Applied, ProviderError> {
    let name = attrs::required_string(req.config, "name")?;
    let mut attrs = req.config.clone();
    if let Some(spec) = build_spec(req.config, base_dir)? {
        if !attrs.contains_key("build_hash") {
            attrs.insert(
                "build_hash".into(),
                Value::from(hash_of(spec.clone()).await?),
            );
        }
        let labels: HashMap<String, String> = req
            .owner
            .labels(req.address, req.config_hash)
            .into_iter()
            .collect();
        build(docker, &name, &spec, &labels, progress).await?;
    } else {
        ensure_image(docker, auths, &name, progress).await?;
    }
    let image = docker
        .inspect_image(&name)
        .await
        .map_err(api_ctx(format!("cannot inspect image {name}")))?;
    fill_computed(&mut attrs, &image);
    Ok(Applied {
        id: image.id.unwrap_or_default(),
        attrs,
    })
}

fn fill_computed(attrs: &mut Attrs, image: &ImageInspect) {
    attrs.insert(
        "image_id".into(),
        Value::from(image.id.clone().unwrap_or_default()),
    );
    let digest = image
        .repo_digests
        .as_ref()
        .and_then(|d| d.first().cloned())
        .unwrap_or_default();
    attrs.insert("repo_digest".into(), Value::from(digest));
}

async fn build(
    docker: &Docker,
    name: &str,
    spec: &BuildSpec,
    labels: &HashMap<String, String>,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let tar = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || spec.tar())
            .await
            .map_err(|e| ProviderError::Api(format!("packing the build context failed: {e}")))??
    };
    let mut options = BuildImageOptionsBuilder::new()
        .dockerfile(&spec.dockerfile)
        .t(name)
        .labels(labels)
        .rm(true)
        .forcerm(true);
    if !spec.build_args.is_empty() {
        let args: HashMap<String, String> = spec.build_args.clone().into_iter().collect();
        options = options.buildargs(&args);
    }
    if let Some(target) = &spec.target {
        options = options.target(target);
    }
    progress(&format!("building {name}"));
    let mut stream =
        docker.build_image(options.build(), None, Some(bollard::body_full(tar.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            ProviderError::Api(format!("building image {name} failed: {}", message(&e)))
        })?;
        if let Some(detail) = info.error_detail {
            return Err(ProviderError::Api(format!(
                "building image {name} failed: {}",
                detail.message.unwrap_or_default().trim()
            )));
        }
        if let Some(text) = info.stream {
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                progress(line);
            }
        }
    }
    Ok(())
}

/// Splits an image reference into the `fromImage` and `tag` parameters of a
/// pull (a tag-less reference means `latest`; a digest goes in `tag`).
fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    let name_start = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    match reference[name_start..].rfind(':') {
        Some(colon) => (
            &reference[..name_start + colon],
            &reference[name_start + colon + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// Pulls `reference` with the credentials `auths` has for its registry
/// (sent as `X-Registry-Auth`), reporting the pull's status lines. The
/// engine reports some failures as an HTTP error and others inside the
/// progress stream: every item is checked.
pub(crate) async fn pull(
    docker: &Docker,
    auths: &Auths,
    reference: &str,
    progress: Progress<'_>,
) -> Result<(), ProviderError> {
    let (repo, tag) = split_reference(reference);
    progress(&format!("pulling {reference}"));
    let options = CreateImageOptionsBuilder::new()
        .from_image(repo)
        .tag(tag)
        .build();
    let credentials = crate::registry_api::pull_credentials(auths, reference).await?;
    let mut stream = docker.create_image(Some(options), None, credentials);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| auths.pull_error(reference, &message(&e)))?;
        if let Some(detail) = info.error_detail {
            let text = detail.message.unwrap_or_default();
            return Err(auths.pull_error(reference, &text));
        }
        let in_progress = info
            .progress_detail
            .as_ref()
            .is_some_and(|d| d.current.is_some() || d.total.is_some());
        if let (Some(status), false) = (info.status, in_progress) {
            match info.id {
                Some(id) => progress(&format!("{id}: {status}")),
                None => progress(&status),
            }
        }
    }
    Ok(())
}

/// Inspects `reference`, pulling it first when it is not present locally.
pub(crate) async fn ensure_image(
    docker: &Docker,
    auths: &Auths,
    reference: &str,
    progress: Progress<'_>,
) -> Result<ImageInspect, ProviderError> {
    match docker.inspect_image(reference).await {
        Ok(image) => return Ok(image),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(api_ctx(format!("cannot inspect image {reference}"))(e)),
    }
    if reference.starts_with("sha256:") {
        return Err(ProviderError::Api(format!(
            "image {reference} does not exist locally (an image id cannot be pulled)"
        )));
    }
    pull(docker, auths, reference, progress).await?;
    docker
        .inspect_image(reference)
        .await
        .map_err(api_ctx(format!("cannot inspect image {reference}")))
}

/// The id `reference` resolves to locally, if it exists (no pull).
pub(crate) async fn local_id(
    docker: &Docker,
    reference: &str,
) -> Result<Option<String>, ProviderError> {
    match docker.inspect_image(reference).await {
        Ok(image) => Ok(image.id),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(api(e)),
    }
}

/// Only `keep_locally` is updatable, and it matters only at delete time:
/// keeps the computed attributes.
pub(crate) async fn update(
    docker: &Docker,
    req: &ApplyRequest<'_>,
) -> Result<Applied, ProviderError> {
    let name = attrs::required_string(req.config, "name")?;
    let mut attrs = req.config.clone();
    let prior = req.prior.cloned().unwrap_or_default();
    for key in ["image_id", "repo_digest", "build_hash"] {
        if let (false, Some(value)) = (attrs.contains_key(key), prior.get(key)) {
            attrs.insert(key.into(), value.clone());
        }
    }
    let target = attrs::non_empty_string(&attrs, "image_id")?.unwrap_or(name.clone());
    let image = docker
        .inspect_image(&target)
        .await
        .map_err(api_ctx(format!("cannot inspect image {name}")))?;
    fill_computed(&mut attrs, &image);
    Ok(Applied {
        id: image.id.unwrap_or_default(),
        attrs,
    })
}

/// Removes the image unless `keep_locally`: first the `name` tag if it still
/// points at this image, then the image by id. An image that is gone is
/// fine. An image still in use by a container (409) is left in place with a
/// warning and the delete succeeds: its tag has been removed or moved to a
/// newer image already, so it no longer stands for this resource, and
/// Docker's own garbage collection (`docker image prune`) reclaims it once
/// the container is gone.
pub(crate) async fn delete(docker: &Docker, req: &DeleteRequest<'_>) -> Result<(), ProviderError> {
    if attrs::boolean(req.attrs, "keep_locally")?.unwrap_or(false) {
        return Ok(());
    }
    let id = match attrs::non_empty_string(req.attrs, "image_id")? {
        Some(id) => id,
        None if !req.id.is_empty() => req.id.to_owned(),
        None => return Ok(()),
    };
    let options = || {
        Some(
            RemoveImageOptionsBuilder::new()
                .force(false)
                .noprune(false)
                .build(),
        )
    };
    if let Some(name) = attrs::non_empty_string(req.attrs, "name")?
        && local_id(docker, &name).await?.as_deref() == Some(id.as_str())
    {
        match docker.remove_image(&name, options(), None).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) if is_conflict(&e) => {
                tracing::warn!(image = %name, "image is in use, leaving it: {}", message(&e));
                return Ok(());
            }
            Err(e) => return Err(api_ctx(format!("cannot remove image {name}"))(e)),
        }
    }
    match docker.remove_image(&id, options(), None).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) if is_conflict(&e) => {
            tracing::warn!(image = %id, "image is in use or still tagged elsewhere, leaving it: {}", message(&e));
            Ok(())
        }
        Err(e) => Err(api_ctx(format!("cannot remove image {id}"))(e)),
    }
}

/// Lists the owner's images (the ones berth built: pulled images carry no
/// labels) with one call. Untagged images are skipped: a build whose tag
/// moved on no longer stands for its resource.
pub(crate) async fn refresh(
    docker: &Docker,
    owner: &Ownership,
    recorded: &[(String, String)],
) -> Result<Vec<Observed>, ProviderError> {
    let filters = client::label_filters(owner, &[]);
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(api)?;
    let mut by_address: BTreeMap<String, bollard::models::ImageSummary> = BTreeMap::new();
    for image in images {
        let tagged = image.repo_tags.iter().any(|t| t != "<none>:<none>");
        let Some(address) = image
            .labels
            .get(labels::ADDRESS)
            .filter(|a| attrs::address_is_type(a, TYPE))
            .cloned()
        else {
            continue;
        };
        if !tagged {
            continue;
        }
        match by_address.get(&address) {
            Some(seen) if seen.created >= image.created => {}
            _ => {
                by_address.insert(address, image);
            }
        }
    }
    let mut observed: Vec<Observed> = by_address
        .into_iter()
        .map(|(address, image)| Observed {
            address,
            id: image.id.clone(),
            attrs: Attrs::from([("image_id".to_owned(), Value::from(image.id))]),
            config_hash: image.labels.get(labels::CONFIG_HASH).cloned(),
        })
        .collect();
    // Images berth did not build (pulled, or already there) carry no labels:
    // look those up by the id state recorded, one inspect each.
    for (address, id) in recorded {
        if observed.iter().any(|o| &o.address == address) || id.is_empty() {
            continue;
        }
        match docker.inspect_image(id).await {
            Ok(image) => {
                let image_id = image.id.unwrap_or_else(|| id.clone());
                observed.push(Observed {
                    address: address.clone(),
                    id: image_id.clone(),
                    attrs: Attrs::from([("image_id".to_owned(), Value::from(image_id))]),
                    config_hash: None,
                });
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(api(e)),
        }
    }
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_reference("localhost:5000/app:v1"),
            ("localhost:5000/app", "v1")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app", "sha256:abc"));
    }
}
