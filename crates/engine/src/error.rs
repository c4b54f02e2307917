//! The one error type of the engine.

use phoenix_provider_api::ProviderError;
use phoenix_state::{LockHolder, StateError};

/// Why an engine operation could not be carried out. A failed health gate is not an error: it
/// is an [`crate::ApplyOutcome`] with a report.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The desired state cannot be deployed as specified.
    #[error("cannot deploy this fleet:\n  {}", problems.join("\n  "))]
    InvalidDesired {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// Another apply holds the fleet's deploy lock.
    #[error("fleet {fleet} is being changed by {holder}; try again when it is done")]
    Locked {
        /// The fleet.
        fleet: String,
        /// Who holds the lock.
        holder: Box<LockHolder>,
    },
    /// The deploy lock was taken over while applying; nothing more was written.
    #[error("lost the deploy lock on fleet {fleet}: {reason}")]
    LockLost {
        /// The fleet.
        fleet: String,
        /// What the store said.
        reason: String,
    },
    /// A state store call failed.
    #[error("state store: {0}")]
    State(#[from] StateError),
    /// Observing the provider failed.
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
    /// The revision asked for does not exist or cannot be applied again.
    #[error("{0}")]
    Revision(String),
}
