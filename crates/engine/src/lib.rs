//! The Phoenix deploy engine: makes a fleet spec true through a [`Provider`], wave by wave,
//! with health gates, rollout strategies, automatic rollback, write-ahead intents, a leased
//! deploy lock and an audit record of every step.
//!
//! Two halves, after the house rule "the engine decides, providers do":
//!
//! - **The decision core** ([`decide`](mod@decide)): pure functions. [`Desired::new`] turns a
//!   validated fleet and the planner's placement into desired units; [`decide::decide`] compares
//!   them with the observed units ([`ObservedUnit`]: the provider's list, one health probe,
//!   the spec each unit runs from its revision) and returns a [`Decision`]: cleanup of
//!   duplicates, creates and replacements phase by phase and wave by wave, removals of what is
//!   no longer desired. [`decide::resolve_intent`] says how an open intent of a dead apply is
//!   resolved. [`status::status`] computes drift.
//! - **The executor** ([`Engine::apply`]): takes the deploy lock (renewed in the background; a
//!   lease of a dead holder on this host is taken over), resolves open intents, observes,
//!   decides, asks for confirmation, records a revision, then runs the decision: waves in
//!   order, services of a wave in parallel, each with its strategy (rolling with
//!   `max_unavailable`/`max_surge`, blue-green, canary with an analysis window), at most
//!   `parallelism` steps in flight. Every start, stop, snapshot and restore is announced by
//!   an intent before it happens and closed after. A failed gate stops the run and rolls the
//!   changed instances back (stop new units, restore backups, restart the replaced units).
//!   The run itself is a pure state machine ([`rollout::Rollout`]: `step(input, now) ->
//!   effects`, ADR 011) carried out by a driver ([`driver`]) on a pool of worker threads, with
//!   time from an injected [`Clock`] ([`ApplyOptions::clock`]; [`VirtualClock`] in tests).
//!
//! ```
//! use phoenix_engine::{ApplyOptions, Desired, Engine, RevisionDoc, RevisionKind};
//! use phoenix_provider_api::fake::FakeProvider;
//! use std::sync::Arc;
//!
//! let yaml = "phoenix: 1\nname: demo\nsites: [{name: local, tier: core, capacity: {cpu: 4, memory: 8Gi, storage: 10G}}]\n\
//!             services: [{name: web, replicas: 2, command: [run, '${port}'], ports: [port]}]\n";
//! let fleet = phoenix_spec::parse_sources(&[("demo.yaml".into(), yaml.into())], None).unwrap();
//! let desired = Desired::new(&fleet, &phoenix_plan::plan(&fleet))?;
//! let engine = Engine {
//!     provider: Arc::new(FakeProvider::new()),
//!     store: Arc::new(phoenix_state::SqliteStore::open_in_memory()?),
//!     recorder: Arc::new(phoenix_audit::MemoryRecorder::new()),
//!     actor: "alice@host".into(),
//! };
//! let doc = RevisionDoc::new(RevisionKind::Apply, &desired, vec![], None);
//! let report = engine.apply(&desired, &doc, &ApplyOptions::default(), &|_| true, &|_| {})?;
//! assert!(report.outcome.is_success());
//! assert_eq!(report.decision.counts(), (2, 0, 0));
//! # Ok::<(), phoenix_engine::EngineError>(())
//! ```
//!
//! Architecture Invariant: the engine never touches processes, files or the network itself;
//! it talks to the provider, the state store and the recorder through their traits, so every
//! test can run against fakes and every provider is driven by the same code.
//!
//! [`Provider`]: phoenix_provider_api::Provider

pub mod address;
pub mod clock;
pub mod decide;
mod desired;
pub mod driver;
mod error;
mod events;
mod exec;
pub mod intent;
pub mod lock;
pub mod rollback;
pub mod rollout;
pub mod status;

pub use clock::{Clock, ClockRef, RealClock, VirtualClock};
pub use decide::{Decision, DiffLine, ObservedUnit};
pub use desired::{
    Desired, DesiredUnit, JobLast, RevisionDoc, RevisionKind, Scope, ServiceInfo, fingerprint,
    latest_job_runs, same_job_inputs, sha256_hex,
};
pub use error::{EngineError, ExecError};
pub use events::{Event, EventSink};
pub use exec::{ApplyOptions, ApplyOutcome, ApplyReport, Engine, Failure, preview};
pub use lock::{HolderLiveness, Liveness, LockGuard};
pub use status::{ExtraUnit, InstanceStatus, JobStatus, StatusReport};
