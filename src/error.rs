//! The engine's error type: what can stop a command, each variant carrying
//! what the user needs to act (diagnostics with source lines, the resource
//! address with the provider's message, the lock holder).

use berth_provider::ProviderError;
use berth_state::StateError;

use crate::diag::Diagnostics;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration has errors.
    #[error("{0}")]
    Config(Diagnostics),
    /// The state store failed or is locked.
    #[error(transparent)]
    State(#[from] StateError),
    /// A provider failed on a resource.
    #[error("{address}: {source}")]
    Provider {
        /// The resource address (or `provider "NAME"`).
        address: String,
        /// The provider's error.
        source: ProviderError,
    },
    /// The plan cannot be carried out as asked.
    #[error("{0}")]
    Refused(String),
    /// Some resources failed during apply; each was reported as it failed.
    #[error("{failed} resource(s) failed; {skipped} dependent(s) were skipped")]
    Apply {
        /// How many failed.
        failed: usize,
        /// How many were skipped because something they depend on failed.
        skipped: usize,
    },
    /// A signal stopped the apply between steps.
    #[error(
        "interrupted: {done} step(s) finished and were recorded, {not_started} were not started; run the command again to finish"
    )]
    Interrupted {
        /// Steps finished and recorded.
        done: usize,
        /// Steps never started.
        not_started: usize,
    },
    /// A local file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// Which file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Self::Config(d)
    }
}
