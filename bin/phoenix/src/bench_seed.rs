//! `phoenix bench-seed FILE` (hidden): writes a fleet into a state store as if it had been
//! applied and observed running, without starting anything. The read side (`phoenix serve`'s
//! API and portal over a 100,000-instance fleet, `bench/api_latency.py`) cannot be measured
//! against a fleet this machine could really run; this gives it the same rows an apply writes.
//!
//! The revision's actor says it was seeded, its units have no process handle, and every
//! instance is recorded `running` at the time of seeding, so that `phoenix serve` shows the
//! observation's age as it would for a real fleet last observed then. Refuses a fleet that
//! already has revisions: seeding never overwrites a real fleet's history.

use crate::deploy_cmd::StateArgs;
use anyhow::{Context as _, bail};
use clap::Args;
use phoenix_engine::{Desired, LockGuard, RevisionDoc, RevisionKind};
use phoenix_state::{
    DesiredState, InstanceState, NewRevision, ObservedState, RevisionOutcome, UnitId, Write,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Instance rows written per transaction.
const BATCH: usize = 5_000;

/// `phoenix bench-seed`.
#[derive(Args, Clone, Debug)]
pub(crate) struct BenchSeedArgs {
    /// Spec files; later files extend earlier ones.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Environment overlay.
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

/// Seeds the fleet; prints how many instances were written.
pub(crate) fn run(args: BenchSeedArgs) -> anyhow::Result<ExitCode> {
    let mut sources = Vec::new();
    for f in &args.files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        sources.push((f.display().to_string(), text));
    }
    let fleet = match phoenix_spec::parse_sources(&sources, args.env.as_deref()) {
        Ok(f) => f,
        Err(d) => {
            eprint!("{}", d.render());
            return Ok(ExitCode::from(1));
        }
    };
    let plan = phoenix_plan::plan(&fleet);
    let desired = Desired::new(&fleet, &plan)?;
    let store: Arc<dyn phoenix_state::StateStore> = Arc::from(
        phoenix_state::open(&args.state.state_dir, args.state.state_url.as_deref())
            .context("opening the state store")?,
    );
    if !store.list_revisions(&fleet.name)?.is_empty() {
        bail!(
            "fleet {} already has revisions in this state store; seed into an empty one",
            fleet.name
        );
    }
    let lock = LockGuard::acquire(
        store.clone(),
        &fleet.name,
        "bench-seed",
        Duration::from_secs(120),
        &*crate::deploy_cmd::this_host_liveness().0,
        &phoenix_engine::RealClock::new(),
    )?;
    let doc = RevisionDoc::new(RevisionKind::Apply, &desired, sources, args.env.clone());
    let placement = serde_json::to_string(
        &desired
            .units
            .values()
            .map(|u| serde_json::json!({"service": u.service, "instance": u.instance, "site": u.spec.site, "host": u.spec.host}))
            .collect::<Vec<_>>(),
    )?;
    let revision = store.create_revision(
        &lock.lease(),
        NewRevision {
            spec_json: doc.to_json(),
            placement_json: placement,
            plan_hash: "seeded".into(),
            actor: "bench-seed (nothing was started)".into(),
        },
    )?;
    let rev = revision.number;
    let rows: Vec<Write> = desired
        .units
        .values()
        .map(|u| {
            Write::UpsertInstance(InstanceState {
                unit: UnitId::new(&u.instance, rev),
                service: u.service.clone(),
                instance: u.instance.clone(),
                revision: rev,
                site: u.spec.site.clone(),
                host: u.spec.host.to_string(),
                endpoint: "seeded://".into(),
                desired: DesiredState::Running,
                observed: ObservedState::Running,
                handle: serde_json::Value::Null,
                ports: serde_json::json!({}),
            })
        })
        .collect();
    let total = rows.len();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let batch: Vec<Write> = rows.by_ref().take(BATCH).collect();
        store.write_atomically(&lock.lease(), batch)?;
    }
    store.set_revision_outcome(&lock.lease(), rev, RevisionOutcome::Applied)?;
    lock.release();
    eprintln!(
        "seeded fleet {} revision {} with {total} instances (nothing was started)",
        fleet.name, rev.0
    );
    Ok(ExitCode::SUCCESS)
}
