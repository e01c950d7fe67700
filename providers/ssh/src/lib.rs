//! berth's SSH transport: reaching the hosts that docker resources name in
//! their `host { ... }` block.
//!
//! - [`HostSpec`] says where and how to log in (key text, passphrase) and how
//!   to trust the host ([`verify`]: a pinned fingerprint or known_hosts line,
//!   a known_hosts file, or trust on first use through a
//!   [`KnownHostStore`]; never an unchecked key).
//! - [`SshConnection::connect`] retries with backoff while a new host boots,
//!   then authenticates; [`SshConnection::exec`] runs commands.
//! - [`SshConnection::docker`] gives a [`bollard::Docker`] whose requests go
//!   through `direct-streamlocal@openssh.com` channels to the engine socket:
//!   no Docker CLI on either side.
//! - [`Pool`] keeps one connection per `user@address:port`, shared by every
//!   resource on that host.

#![warn(missing_docs)]

mod connect;
mod docker;
mod error;
mod host;
mod keys;
mod pool;
pub mod verify;

pub use connect::{ExecOutput, SshConnection};
pub use docker::{DEFAULT_DOCKER_SOCKET, DOCKER_TIMEOUT_SECS};
pub use error::SshError;
pub use host::{DEFAULT_PORT, DEFAULT_TIMEOUT, DEFAULT_USER, HostSpec};
pub use keys::{load_private_key, public_fingerprint};
pub use pool::Pool;
pub use verify::{KnownHostStore, MemoryKnownHosts, fingerprint};
