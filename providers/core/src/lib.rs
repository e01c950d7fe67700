//! The seam between berth's engine and its providers.
//!
//! This crate owns what every provider shares: the [`Provider`] trait, the
//! resource [`schema`] types the engine validates configuration against, the
//! attribute [`Attrs`] map resources are described by, the [`Ownership`]
//! labels that let refresh find berth's objects in one list call, and the
//! [`ProviderError`] type. It imports nothing of berth's own.

pub mod attrs;
pub mod duration;
pub mod http;
pub mod schema;

use std::collections::BTreeMap;
use std::fmt;

pub use schema::{AttrSchema, AttrType, BlockSchema, Nesting, ResourceSchema};

/// An attribute value. Configuration, state and provider observations all
/// speak JSON values; unknown values never reach a provider.
pub type Value = serde_json::Value;

/// A resource's attributes by name. Nested blocks are attributes too: a list
/// of objects, or one object for a [`Nesting::Single`] block.
pub type Attrs = BTreeMap<String, Value>;

/// Label keys berth puts on every object it creates.
pub mod labels {
    /// The resource address, e.g. `docker_container.web`.
    pub const ADDRESS: &str = "berth.address";
    /// The environment name (`--env`).
    pub const ENV: &str = "berth.env";
    /// The lineage of the state the object belongs to.
    pub const LINEAGE: &str = "berth.lineage";
    /// A hash of the configuration the object was created from.
    pub const CONFIG_HASH: &str = "berth.config-hash";
}

/// Who owns an object: the labels berth stamps on everything it creates and
/// filters on when it lists what exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// Environment name.
    pub env: String,
    /// Lineage of the state.
    pub lineage: String,
}

impl Ownership {
    /// The labels for the object at `address` created from a configuration
    /// whose hash is `config_hash`.
    pub fn labels(&self, address: &str, config_hash: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::ADDRESS.to_owned(), address.to_owned()),
            (labels::ENV.to_owned(), self.env.clone()),
            (labels::LINEAGE.to_owned(), self.lineage.clone()),
            (labels::CONFIG_HASH.to_owned(), config_hash.to_owned()),
        ])
    }

    /// `key=value` filters that select this owner's objects.
    pub fn filters(&self) -> Vec<String> {
        vec![
            format!("{}={}", labels::ENV, self.env),
            format!("{}={}", labels::LINEAGE, self.lineage),
        ]
    }
}

/// One object as the real world shows it, found by a refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The resource address read from the object's labels.
    pub address: String,
    /// The provider's id for the object (container id, network id, ...).
    pub id: String,
    /// The attributes the provider could read back. These use the same names
    /// as the schema; the engine compares them with state to see drift.
    /// A sensitive attribute reported as `null` is one the provider cannot
    /// read back (GitLab's hidden variables): the plan says so.
    pub attrs: Attrs,
    /// The `berth.config-hash` label, if the object has one.
    pub config_hash: Option<String>,
}

/// What the engine asks a provider to create or update.
#[derive(Clone, Debug)]
pub struct ApplyRequest<'a> {
    /// Resource type, e.g. `docker_container`.
    pub type_name: &'a str,
    /// Full address, e.g. `docker_container.web`.
    pub address: &'a str,
    /// Fully known desired attributes (sensitive values in plain text: the
    /// provider must not log them).
    pub config: &'a Attrs,
    /// The prior attributes from state, for updates (sensitive values are
    /// keyed hashes here, never plain text).
    pub prior: Option<&'a Attrs>,
    /// The prior id, for updates.
    pub prior_id: Option<&'a str>,
    /// A stable hash of `config`, to be stored as the config-hash label.
    pub config_hash: &'a str,
    /// The owner labels to stamp on created objects.
    pub owner: &'a Ownership,
}

/// The result of a create or update: the id and every attribute the object
/// now has, including computed ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The provider's id.
    pub id: String,
    /// The attributes after the change, computed ones included.
    pub attrs: Attrs,
}

/// What the engine asks a provider to delete.
#[derive(Clone, Debug)]
pub struct DeleteRequest<'a> {
    /// Resource type.
    pub type_name: &'a str,
    /// Full address.
    pub address: &'a str,
    /// Id of the object.
    pub id: &'a str,
    /// Attributes from state (sensitive ones hashed).
    pub attrs: &'a Attrs,
    /// The owner labels.
    pub owner: &'a Ownership,
}

/// A problem with one attribute's value, found by [`Provider::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrProblem {
    /// The top-level attribute (or block) name.
    pub attribute: String,
    /// What is wrong, without the value itself (it may be a secret).
    pub message: String,
}

/// What every provider is constructed with.
#[derive(Clone, Debug)]
pub struct ProviderContext {
    /// The directory of the configuration file: relative paths in resource
    /// attributes (build contexts, files) are resolved against it.
    pub base_dir: std::path::PathBuf,
}

/// Progress a provider reports while it works (pull and build output, waits).
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// A provider: one family of resource types (`docker_*`, `digitalocean_*`).
///
/// The engine owns configuration, planning and state; a provider only knows
/// how to list, create, update and delete its objects.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name as used in `provider "NAME"` blocks.
    fn name(&self) -> &'static str;

    /// The schemas of every resource type this provider serves.
    fn schemas(&self) -> &[ResourceSchema];

    /// Takes the evaluated `provider "NAME"` block (empty when the file has
    /// none) and connects. Called once before any other async call.
    async fn configure(&self, config: &Attrs) -> Result<(), ProviderError>;

    /// Checks known attribute values before any API call (e.g. GitLab's
    /// masking rules). Each problem names the top-level attribute it is
    /// about, so the engine can point at its `file:line:col`.
    fn validate(&self, type_name: &str, config: &Attrs) -> Vec<AttrProblem> {
        let _ = (type_name, config);
        Vec::new()
    }

    /// Adds derived attributes to a desired configuration at plan time, such
    /// as the content hash of a build context, so that a change in them
    /// shows in the plan. `config` is fully known when this is called.
    async fn prepare(&self, type_name: &str, config: &mut Attrs) -> Result<(), ProviderError> {
        let _ = (type_name, config);
        Ok(())
    }

    /// Tells the provider, before [`Provider::refresh`], what is known of one
    /// resource: its configuration as far as it can be evaluated from state
    /// (unknown attributes left out; sensitive values in plain text), and
    /// its recorded attributes. Providers whose objects live in several
    /// places (Docker hosts reached over SSH) learn here where to look.
    fn hint(
        &self,
        type_name: &str,
        address: &str,
        config: Option<&Attrs>,
        recorded: Option<&Attrs>,
    ) {
        let _ = (type_name, address, config, recorded);
    }

    /// Lists every object of `type_name` that carries `owner`'s labels, with
    /// as few API calls as the remote allows (one list call where possible).
    /// `recorded` holds the (address, id) pairs state has for the type, so a
    /// provider can also look up objects that cannot carry labels (an image
    /// that was pulled rather than built, say).
    async fn refresh(
        &self,
        type_name: &str,
        owner: &Ownership,
        recorded: &[(String, String)],
    ) -> Result<Vec<Observed>, ProviderError>;

    /// Creates the object.
    async fn create(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError>;

    /// Updates the object in place; only called when every changed
    /// attribute is updatable in place according to the schema.
    async fn update(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError>;

    /// Whether the provider replaces this object itself, piece by piece
    /// (a rolling update of container replicas), instead of the engine's
    /// destroy-then-create. `config` is the desired configuration, fully
    /// known. When true, the engine calls [`Provider::replace`] once.
    ///
    /// `create_before_destroy` is the resource's lifecycle setting: a
    /// provider whose objects have fixed names (a container) should take the
    /// replacement over then, since creating the new object first would
    /// clash with the old one's name.
    fn replaces_itself(
        &self,
        type_name: &str,
        config: &Attrs,
        create_before_destroy: bool,
    ) -> bool {
        let _ = (type_name, config, create_before_destroy);
        false
    }

    /// Replaces the object described by `request.prior` with one built from
    /// `request.config`, keeping the old one serving until the new one is
    /// ready. Only called when [`Provider::replaces_itself`] said so.
    async fn replace(
        &self,
        request: ApplyRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<Applied, ProviderError> {
        let _ = progress;
        Err(ProviderError::Config(format!(
            "{} cannot be replaced in place",
            request.type_name
        )))
    }

    /// Deletes the object. Deleting an object that is already gone succeeds.
    async fn delete(
        &self,
        request: DeleteRequest<'_>,
        progress: Progress<'_>,
    ) -> Result<(), ProviderError>;
}

/// An error from a provider, with the provider's own message. The engine adds
/// the resource address when it reports it.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not reach its remote (engine down, socket missing).
    #[error("cannot reach {what}: {message}")]
    Unreachable {
        /// What could not be reached, e.g. `the Docker engine at unix:///var/run/docker.sock`.
        what: String,
        /// The underlying message.
        message: String,
    },
    /// The remote refused or failed the request.
    #[error("{0}")]
    Api(String),
    /// The configuration is valid HCL but the provider cannot use it.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A wait (healthy, running) ran out of time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl ProviderError {
    /// Shorthand for [`ProviderError::Api`].
    pub fn api(message: impl fmt::Display) -> Self {
        Self::Api(message.to_string())
    }
}

/// A stable hex SHA-256 of a set of attributes (keys sorted, JSON encoded),
/// used for the config-hash label.
pub fn hash_attrs(attrs: &Attrs) -> String {
    use sha2::Digest;
    // BTreeMap keys are sorted, and serde_json writes them in order.
    let bytes = serde_json::to_vec(attrs).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&bytes))
}
