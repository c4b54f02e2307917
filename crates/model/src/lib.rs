//! The vocabulary of a unit that both the spec parser (`phoenix-spec`) and the providers
//! (`phoenix-provider-api` and its implementations) speak: health checks, the restart policy,
//! `${...}` substitutions and how they name secrets.
//!
//! It exists so that a provider never depends on the spec parser: the parser produces these
//! types, the engine hands them to providers inside a unit spec, and providers fill in and run
//! them. Nothing here parses YAML or does I/O.

pub mod health;
pub mod secret_ref;
pub mod subst;

pub use health::{Health, HealthCheck, RestartPolicy};
