//! berth's state: what berth created, per environment.
//!
//! This crate owns the state model ([`Snapshot`], [`ResourceRecord`]), the
//! [`StateBackend`] trait every store implements, the default sled store
//! ([`sled_backend::SledBackend`]), the remote stores
//! ([`http_backend`], [`pg_backend`], [`s3_backend`]), the lock with its
//! holder info ([`LockInfo`]) and the keyed hashes that stand in for secrets
//! ([`StateKey`]). It imports nothing of berth's own: attribute values are
//! plain JSON.
//!
//! [`open_backend`] turns a configuration's `backend "KIND" { ... }` block
//! into a store; [`list_envs`] lists the environments a store holds.

mod fs_util;
pub mod http_backend;
mod key;
mod lock;
pub mod pg_backend;
mod remote;
pub mod s3_backend;
pub mod sled_backend;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use key::StateKey;
pub use lock::LockInfo;

/// Attribute values as stored: JSON, with every sensitive value replaced by
/// its keyed hash (see [`StateKey::redact`]).
pub type Attrs = BTreeMap<String, serde_json::Value>;

/// The whole state of one environment at one serial.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Random id given to the state when it is first created; objects carry
    /// it as a label so berth can tell its own objects from another state's.
    pub lineage: String,
    /// Incremented by every write.
    pub serial: u64,
    /// Resources by address (`docker_container.web`).
    pub resources: BTreeMap<String, ResourceRecord>,
    /// Outputs by name.
    pub outputs: BTreeMap<String, OutputRecord>,
}

/// One resource as berth last recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// Resource type, e.g. `docker_container`.
    pub type_name: String,
    /// The provider's id for the object.
    pub id: String,
    /// Every attribute, sensitive ones as keyed hashes.
    pub attrs: Attrs,
    /// Names of the attributes stored as keyed hashes.
    #[serde(default)]
    pub sensitive: Vec<String>,
    /// Hash of the configuration the object was created or updated from.
    pub config_hash: String,
    /// Addresses this resource depended on when it was applied; destroy
    /// walks these in reverse when the configuration is gone.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// One output as last applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The value, or `None` when the output is sensitive (never stored).
    pub value: Option<serde_json::Value>,
    /// Whether the output is marked sensitive.
    pub sensitive: bool,
}

/// Errors from a state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another process holds the lock.
    #[error("{}", lock::describe_held(holder, *stale))]
    Locked {
        /// The holder's info as it wrote it.
        holder: Box<LockInfo>,
        /// The holder's process is gone (same host, pid not running).
        stale: bool,
    },
    /// `force-unlock` was given an id that is not the current lock's.
    #[error("lock id `{given}` does not match the current lock{}", .current.as_ref().map(|c| format!(" `{c}`")).unwrap_or_else(|| " (the state is not locked)".to_owned()))]
    LockMismatch {
        /// The id that was given.
        given: String,
        /// The id of the lock that is held, if any.
        current: Option<String>,
    },
    /// A write or read was attempted without holding the lock.
    #[error("the state is not locked by this process")]
    NotLocked,
    /// The store could not be read or written.
    #[error("state store at {path}: {message}")]
    Store {
        /// Where the store lives.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A backend's settings are wrong (unknown kind or setting, bad value).
    #[error("backend \"{backend}\": {message}")]
    Config {
        /// The backend kind (`http`, `pg`, ...).
        backend: String,
        /// What is wrong.
        message: String,
    },
    /// Stored data could not be decoded.
    #[error("state record `{key}` is corrupt: {message}")]
    Corrupt {
        /// Which record.
        key: String,
        /// What the decoder said.
        message: String,
    },
}

/// A place state lives: one environment's namespace in a store.
///
/// Every write is durable when the call returns, so a killed apply loses at
/// most the step that was running.
#[async_trait::async_trait]
pub trait StateBackend: Send + Sync {
    /// Takes the lock for this environment, or fails at once with
    /// [`StateError::Locked`] naming the holder.
    async fn lock(&self, info: &LockInfo) -> Result<(), StateError>;

    /// Releases the lock taken with `id`.
    async fn unlock(&self, id: &str) -> Result<(), StateError>;

    /// Removes the lock whatever process holds it, if its id is `id`.
    async fn force_unlock(&self, id: &str) -> Result<(), StateError>;

    /// Reads the environment's state; a new environment gets a fresh
    /// lineage and serial 0. Requires the lock.
    async fn read(&self) -> Result<Snapshot, StateError>;

    /// Records one resource and bumps the serial. Requires the lock.
    async fn put_resource(&self, address: &str, record: &ResourceRecord)
    -> Result<u64, StateError>;

    /// Forgets one resource and bumps the serial. Requires the lock.
    async fn remove_resource(&self, address: &str) -> Result<u64, StateError>;

    /// Replaces all outputs and bumps the serial. Requires the lock.
    async fn put_outputs(
        &self,
        outputs: &BTreeMap<String, OutputRecord>,
    ) -> Result<u64, StateError>;

    /// Replaces the whole state with `snapshot` in one write (`state push`,
    /// migration between backends): its lineage, resources and outputs. The
    /// serial becomes one more than the larger of the two. Requires the lock.
    async fn replace_all(&self, snapshot: &Snapshot) -> Result<u64, StateError>;

    /// The key that hashes this state's secrets.
    fn key(&self) -> &StateKey;

    /// Where the store lives, for messages.
    fn describe(&self) -> String;
}

/// Decodes a state document as the remote stores keep it (and `berth
/// state pull` prints it): `{"version": 1, "lineage", "serial",
/// "resources", "outputs"}`. Anything else is [`StateError::Corrupt`]
/// saying what was found.
pub fn decode_document(bytes: &[u8]) -> Result<Snapshot, StateError> {
    remote::Document::decode(bytes, "state document").map(remote::Document::into_snapshot)
}

/// Decodes one resource record as the sled store keeps it.
pub fn decode_record(bytes: &[u8]) -> Result<ResourceRecord, StateError> {
    sled_backend::decode("record", bytes)
}

/// Decodes a lock's holder as a store keeps it: berth's lock file, or
/// Terraform's lock info (HTTP and S3 stores). `None` when it is neither.
pub fn decode_lock(bytes: &[u8]) -> Option<LockInfo> {
    serde_json::from_slice::<LockInfo>(bytes)
        .ok()
        .or_else(|| remote::TfLockInfo::parse(bytes))
}

/// The backend kinds [`open_backend`] knows.
pub const BACKEND_KINDS: &[&str] = &["local", "http", "pg", "s3"];

/// Settings of the `local` (sled) backend.
pub const LOCAL_SETTINGS: &[&str] = &["path"];

/// Opens the store of kind `kind` (a `backend "KIND" { ... }` block) for
/// environment `env`.
///
/// - `local`: the sled store under `settings.path`, default `local_dir`;
/// - `http`: [`http_backend::HttpBackend`] (Terraform's HTTP protocol,
///   GitLab-managed state);
/// - `pg`: [`pg_backend::PgBackend`] (PostgreSQL);
/// - `s3`: [`s3_backend::S3Backend`] (any S3-compatible store).
///
/// The remote kinds keep their [`StateKey`] in `local_dir` (`state.key`) or
/// take it from `BERTH_STATE_KEY`. An unknown kind or setting is a
/// [`StateError::Config`] naming the valid ones. Nothing is contacted yet:
/// the first request goes out with [`StateBackend::lock`].
pub async fn open_backend(
    kind: &str,
    settings: &BTreeMap<String, String>,
    env: &str,
    local_dir: &Path,
) -> Result<Box<dyn StateBackend>, StateError> {
    check_env(kind, env)?;
    match kind {
        "local" => {
            remote::check_settings(kind, settings, LOCAL_SETTINGS)?;
            let dir = settings.get("path").map_or(local_dir, Path::new);
            Ok(Box::new(sled_backend::SledBackend::open(dir, env)?))
        }
        "http" => Ok(Box::new(http_backend::HttpBackend::open(
            settings, env, local_dir,
        )?)),
        "pg" => Ok(Box::new(pg_backend::PgBackend::open(
            settings, env, local_dir,
        )?)),
        "s3" => Ok(Box::new(s3_backend::S3Backend::open(
            settings, env, local_dir,
        )?)),
        other => Err(unknown_kind(other)),
    }
}

/// The environments that have state in the store of kind `kind`, sorted.
///
/// `local` lists the environment directories, `pg` the rows of its `states`
/// table, `s3` the state objects under the key's prefix. The `http`
/// protocol has no way to list states, so `http` is an error saying so.
pub async fn list_envs(
    kind: &str,
    settings: &BTreeMap<String, String>,
    local_dir: &Path,
) -> Result<Vec<String>, StateError> {
    match kind {
        "local" => {
            remote::check_settings(kind, settings, LOCAL_SETTINGS)?;
            let dir = settings.get("path").map_or(local_dir, Path::new);
            sled_backend::SledBackend::list_envs(dir)
        }
        "http" => {
            remote::check_settings(kind, settings, http_backend::SETTINGS)?;
            Err(StateError::Config {
                backend: kind.to_owned(),
                message: "the HTTP backend protocol cannot list states; each environment's \
                          state has its own address"
                    .to_owned(),
            })
        }
        "pg" => pg_backend::PgBackend::list_envs(settings).await,
        "s3" => s3_backend::S3Backend::list_envs(settings).await,
        other => Err(unknown_kind(other)),
    }
}

fn check_env(kind: &str, env: &str) -> Result<(), StateError> {
    if env.is_empty() {
        return Err(StateError::Config {
            backend: kind.to_owned(),
            message: "the environment name is empty".to_owned(),
        });
    }
    Ok(())
}

fn unknown_kind(kind: &str) -> StateError {
    StateError::Config {
        backend: kind.to_owned(),
        message: format!(
            "unknown backend kind; the kinds are {}",
            BACKEND_KINDS
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
