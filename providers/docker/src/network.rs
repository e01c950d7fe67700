//! `docker_network`: the schema, and create / refresh / delete of
//! user-defined Docker networks. Every attribute forces replacement, so there
//! is no real update.

use std::collections::{BTreeMap, HashMap};

use berth_provider::{
    Applied, ApplyRequest, AttrSchema, AttrType, Attrs, BlockSchema, DeleteRequest, Nesting,
    Observed, Ownership, ProviderError, ResourceSchema, Value, labels,
};
use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListNetworksOptionsBuilder;

use crate::attrs;
use crate::client::{self, api, api_ctx, is_not_found};

/// The resource type name.
pub(crate) const TYPE: &str = "docker_network";

const DEFAULT_DRIVER: &str = "bridge";

/// The schema of `docker_network`.
pub(crate) fn schema() -> ResourceSchema {
    ResourceSchema {
        type_name: TYPE,
        attributes: vec![
            AttrSchema::required("name", AttrType::String).force_new(),
            AttrSchema::optional("driver", AttrType::String)
                .and_computed()
                .force_new(),
            AttrSchema::optional("internal", AttrType::Bool)
                .and_computed()
                .force_new(),
            AttrSchema::computed("id", AttrType::String),
        ],
        blocks: vec![labels_block()],
    }
}

/// The `labels { label = "...", value = "..." }` block shared by networks
/// and containers.
pub(crate) fn labels_block() -> BlockSchema {
    BlockSchema {
        name: "labels",
        nesting: Nesting::List,
        force_new: true,
        attributes: vec![
            AttrSchema::required("label", AttrType::String),
            AttrSchema::required("value", AttrType::String),
        ],
        blocks: vec![],
    }
}

/// Plan time: fills the defaults of `driver` and `internal`, so that the
/// refreshed values compare against real ones.
pub(crate) fn prepare(config: &mut Attrs) -> Result<(), ProviderError> {
    if config.get("driver").is_none_or(Value::is_null) {
        config.insert("driver".into(), Value::from(DEFAULT_DRIVER));
    }
    if config.get("internal").is_none_or(Value::is_null) {
        config.insert("internal".into(), Value::from(false));
    }
    Ok(())
}

struct Spec {
    name: String,
    driver: String,
    internal: bool,
    labels: BTreeMap<String, String>,
}

impl Spec {
    fn parse(config: &Attrs) -> Result<Self, ProviderError> {
        Ok(Self {
            name: attrs::required_string(config, "name")?,
            driver: attrs::non_empty_string(config, "driver")?
                .unwrap_or_else(|| DEFAULT_DRIVER.to_owned()),
            internal: attrs::boolean(config, "internal")?.unwrap_or(false),
            labels: attrs::user_labels(config)?,
        })
    }

    fn applied(&self, config: &Attrs, id: String) -> Applied {
        let mut attrs = config.clone();
        attrs.insert("driver".into(), Value::from(self.driver.clone()));
        attrs.insert("internal".into(), Value::from(self.internal));
        attrs.insert("id".into(), Value::from(id.clone()));
        Applied { id, attrs }
    }
}

/// Creates the network. An existing network of the same name that belongs
/// to the same address and owner is reused when it was created from the same
/// configuration and replaced otherwise; any other network of that name is
/// a conflict.
pub(crate) async fn create(
    docker: &Docker,
    req: &ApplyRequest<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let mut labels = spec.labels.clone();
    labels.extend(req.owner.labels(req.address, req.config_hash));

    // Engines before API 1.44 allow duplicate network names unless asked not
    // to, and bollard no longer sends CheckDuplicate: look first.
    let filters = HashMap::from([("name".to_owned(), vec![spec.name.clone()])]);
    let existing = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(api_ctx(format!("cannot list networks named {}", spec.name)))?;
    for network in existing
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(&spec.name))
    {
        let id = network.id.clone().unwrap_or_default();
        let theirs = network.labels.clone().unwrap_or_default();
        let ours = theirs.get(labels::ADDRESS).map(String::as_str) == Some(req.address)
            && theirs.get(labels::ENV) == Some(&req.owner.env)
            && theirs.get(labels::LINEAGE) == Some(&req.owner.lineage);
        if !ours {
            return Err(ProviderError::Api(format!(
                "a network named {} already exists ({}) and is not managed by {} in this berth \
                 environment; remove it or choose another name",
                spec.name,
                short(&id),
                req.address
            )));
        }
        let same_config = theirs.get(labels::CONFIG_HASH).map(String::as_str)
            == Some(req.config_hash)
            && network.driver.as_deref() == Some(spec.driver.as_str())
            && network.internal.unwrap_or(false) == spec.internal;
        if same_config {
            tracing::info!(address = req.address, network = %spec.name, "reusing existing network");
            return Ok(spec.applied(req.config, id));
        }
        tracing::info!(address = req.address, network = %spec.name, "replacing leftover network");
        match docker.remove_network(&id).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(api_ctx(format!(
                    "cannot remove leftover network {}",
                    spec.name
                ))(e));
            }
        }
    }

    let response = docker
        .create_network(NetworkCreateRequest {
            name: spec.name.clone(),
            driver: Some(spec.driver.clone()),
            internal: Some(spec.internal),
            labels: Some(labels.into_iter().collect()),
            ..Default::default()
        })
        .await
        .map_err(api_ctx(format!("cannot create network {}", spec.name)))?;
    Ok(spec.applied(req.config, response.id))
}

/// Nothing about a network is updatable in place; re-reads the network so
/// that state stays right.
pub(crate) async fn update(
    docker: &Docker,
    req: &ApplyRequest<'_>,
) -> Result<Applied, ProviderError> {
    let spec = Spec::parse(req.config)?;
    let id = req.prior_id.unwrap_or(&spec.name).to_owned();
    let network = docker
        .inspect_network(
            &id,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .map_err(api_ctx(format!("cannot inspect network {}", spec.name)))?;
    Ok(spec.applied(req.config, network.id.unwrap_or(id)))
}

/// Deletes the network; a network that is already gone is fine.
pub(crate) async fn delete(docker: &Docker, req: &DeleteRequest<'_>) -> Result<(), ProviderError> {
    let target = if req.id.is_empty() {
        attrs::required_string(req.attrs, "name")?
    } else {
        req.id.to_owned()
    };
    match docker.remove_network(&target).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api_ctx(format!("cannot remove network {target}"))(e)),
    }
}

/// Lists the owner's networks with one call.
pub(crate) async fn refresh(
    docker: &Docker,
    owner: &Ownership,
) -> Result<Vec<Observed>, ProviderError> {
    let filters = client::label_filters(owner, &[]);
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(api)?;
    let mut observed = Vec::new();
    for network in networks {
        let labels = network.labels.unwrap_or_default();
        let Some(address) = labels
            .get(labels::ADDRESS)
            .filter(|a| attrs::address_is_type(a, TYPE))
        else {
            continue;
        };
        let id = network.id.unwrap_or_default();
        let mut attrs = Attrs::new();
        attrs.insert("id".into(), Value::from(id.clone()));
        if let Some(name) = network.name {
            attrs.insert("name".into(), Value::from(name));
        }
        if let Some(driver) = network.driver {
            attrs.insert("driver".into(), Value::from(driver));
        }
        attrs.insert(
            "internal".into(),
            Value::from(network.internal.unwrap_or(false)),
        );
        observed.push(Observed {
            address: address.clone(),
            id,
            attrs,
            config_hash: labels.get(labels::CONFIG_HASH).cloned(),
        });
    }
    observed.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(observed)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
