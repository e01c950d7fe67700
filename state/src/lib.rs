//! berth's state: what berth created, per environment.
//!
//! This crate owns the state model ([`Snapshot`], [`ResourceRecord`]), the
//! [`StateBackend`] trait every store implements, the default sled store
//! ([`sled_backend::SledBackend`]), the lock with its holder info
//! ([`LockInfo`]) and the keyed hashes that stand in for secrets
//! ([`StateKey`]). It imports nothing of berth's own: attribute values are
//! plain JSON.

mod fs_util;
mod key;
mod lock;
pub mod sled_backend;

use std::collections::BTreeMap;

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

    /// The key that hashes this state's secrets.
    fn key(&self) -> &StateKey;

    /// Where the store lives, for messages.
    fn describe(&self) -> String;
}
