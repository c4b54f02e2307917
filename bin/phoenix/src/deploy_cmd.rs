//! `phoenix apply`, `status`, `rollback`, `destroy`, `history`, `up`, `logs` and `agent`: load
//! the spec, wire the engine to the local provider, the state store and the audit log, print.

mod render;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use phoenix_audit::{Recorder, StoreChain};
use phoenix_engine::{
    ApplyOptions, ApplyOutcome, ApplyReport, Decision, Desired, Engine, Event, RevisionDoc,
    RevisionKind, Scope, StatusReport, rollback, status,
};
use phoenix_provider_api::Provider;
use phoenix_provider_local::LocalProvider;
use phoenix_state::StateStore;
use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The demo fleet of `phoenix up`, built into the binary so that it works from any directory.
pub(crate) const LOCAL_DEMO: &str = include_str!("../../../examples/local-demo.yaml");

/// Where state lives.
#[derive(Args, Clone, Debug)]
pub(crate) struct StateArgs {
    /// State directory: SQLite state, audit log, the local agent, unit logs and data.
    #[arg(long, default_value = ".phoenix", env = "PHOENIX_STATE_DIR")]
    pub state_dir: PathBuf,
    /// PostgreSQL URL for the state store (`postgres://...`) instead of SQLite in the state dir.
    #[arg(long, env = "PHOENIX_STATE_URL")]
    pub state_url: Option<String>,
    /// Your operator key, which signs the audit records your commands write (default
    /// `~/.config/phoenix/operator.key`, created on first use).
    #[arg(long, env = "PHOENIX_OPERATOR_KEY")]
    pub operator_key: Option<PathBuf>,
}

/// Output of commands that change things.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum RunFormat {
    /// Progress bars on a terminal, plain lines otherwise.
    #[default]
    Table,
    /// One JSON event per line (NDJSON), for CI.
    Json,
}

/// Output of commands that report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum ReportFormat {
    /// A table for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}

/// Options shared by the commands that change a fleet.
#[derive(Args, Clone, Debug)]
pub(crate) struct ChangeArgs {
    /// Do not ask; required when there is no terminal.
    #[arg(short, long)]
    pub yes: bool,
    /// Instance steps (start + health gate, stop) in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub parallelism: u32,
    /// Output: progress for people, or one JSON event per line.
    #[arg(short, long, value_enum, default_value_t = RunFormat::Table)]
    pub output: RunFormat,
    /// Apply the sites that can be reached and report the others as drift, instead of
    /// refusing when a site's provider cannot be reached.
    #[arg(long)]
    pub allow_unreachable: bool,
    #[command(flatten)]
    pub ledger: crate::ledger_link::LedgerArgs,
    #[command(flatten)]
    pub secrets: crate::secret_cmd::KeyArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

/// `phoenix apply`.
#[derive(Args, Clone, Debug)]
pub(crate) struct ApplyArgs {
    /// Spec files; later files extend earlier ones.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Environment overlay.
    #[arg(long)]
    pub env: Option<String>,
    /// Only these services (and what they depend on); repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,
    /// Leave these services alone; repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// On a failed health gate, leave the changed instances as they are.
    #[arg(long)]
    pub no_rollback: bool,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// `phoenix rollback`.
#[derive(Args, Clone, Debug)]
pub(crate) struct RollbackArgs {
    /// Spec files naming the fleet.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The revision to return to (`3` or `r3`); default: the applied revision before the
    /// current one.
    #[arg(long)]
    pub to: Option<String>,
    /// Roll back to `--to` even if that revision was never applied (it failed or was rolled
    /// back), which is refused otherwise.
    #[arg(long, requires = "to")]
    pub force: bool,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// `phoenix destroy`.
#[derive(Args, Clone, Debug)]
pub(crate) struct DestroyArgs {
    /// Spec files naming the fleet.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also remove what outlives the units: the per-instance volumes of docker sites.
    #[arg(long)]
    pub purge: bool,
    /// Environment overlay (its sites are the ones reached).
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// `phoenix status`.
#[derive(Args, Clone, Debug)]
pub(crate) struct StatusArgs {
    /// Spec files: the desired state.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Environment overlay.
    #[arg(long)]
    pub env: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ReportFormat::Table)]
    pub output: ReportFormat,
    /// Exit 0 when in sync (also for a destroyed fleet), 2 on drift, 1 on error (without it:
    /// 0 whether or not there is drift).
    #[arg(long)]
    pub detailed_exitcode: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

/// `phoenix history`.
#[derive(Args, Clone, Debug)]
pub(crate) struct HistoryArgs {
    /// Spec files naming the fleet.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Check the audit log's hash chain (and its anchor in the state store); exit 1 if any
    /// record was edited or removed.
    #[arg(long)]
    pub verify: bool,
    /// Send the ledger every record of the fleet's chain it lacks, and every instance's
    /// lifecycle (needs --ledger and --ledger-key).
    #[arg(long, requires = "ledger_key")]
    pub sync: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ReportFormat::Table)]
    pub output: ReportFormat,
    #[command(flatten)]
    pub ledger: crate::ledger_link::LedgerArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

/// `phoenix run-job`.
#[derive(Args, Clone, Debug)]
pub(crate) struct RunJobArgs {
    /// Spec files (later files extend earlier ones), then the job to run: `FILE... JOB`.
    #[arg(required = true, num_args = 2.., value_names = ["FILE", "JOB"])]
    pub args: Vec<String>,
    /// Environment overlay.
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// `phoenix up`.
#[derive(Args, Clone, Debug)]
pub(crate) struct UpArgs {
    /// Output: progress for people, or one JSON event per line.
    #[arg(short, long, value_enum, default_value_t = RunFormat::Table)]
    pub output: RunFormat,
    #[command(flatten)]
    pub state: StateArgs,
}

/// `phoenix logs`.
#[derive(Args, Clone, Debug)]
pub(crate) struct LogsArgs {
    /// Service (`web`) or instance (`web-0`).
    pub service: String,
    /// Keep printing new lines (and new revisions' logs) until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Fleet; default: the only fleet in the state store, or the one applied last.
    #[arg(long)]
    pub fleet: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

/// Set by Ctrl-C.
static CANCEL: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
/// Whether an operation that must be stopped cleanly is running (otherwise Ctrl-C exits at once).
static EXECUTING: AtomicBool = AtomicBool::new(false);

fn cancel_flag() -> Arc<AtomicBool> {
    CANCEL
        .get_or_init(|| {
            let flag = Arc::new(AtomicBool::new(false));
            let f = flag.clone();
            let _ = ctrlc::set_handler(move || {
                if !EXECUTING.load(Ordering::SeqCst) || f.swap(true, Ordering::SeqCst) {
                    // Nothing in flight, or a second Ctrl-C: leave now. A held deploy lock is
                    // taken over by the next apply (its holder is dead).
                    std::process::exit(130);
                }
                // Say what the engine does (ApplyOptions::cancel): a gate in flight runs to its
                // end, which can take up to its health timeout.
                eprintln!(
                    "\ninterrupted: no new step will start; the steps in flight finish first (a \
                     health gate runs until it passes or times out), then the run stops and is \
                     recorded (Ctrl-C again to quit now; the next apply recovers)"
                );
            });
            flag
        })
        .clone()
}

/// The engine wired to every site of a fleet: a router over the sites' providers, the state
/// store, the signed audit chain.
struct Wired {
    engine: Engine,
    /// This host's agent (for `local` sites; stopped by `destroy` when idle).
    provider: Arc<LocalProvider>,
    router: Arc<phoenix_provider_api::route::Router>,
    store: Arc<dyn StateStore>,
    chain: Arc<StoreChain>,
    /// With `--ledger`: the command's ledger session, finished after the engine ran.
    ledger: std::sync::Mutex<Option<crate::ledger_link::Session>>,
    /// The `--ledger` URLs, for messages.
    ledger_urls: String,
    /// The fleet's secrets as this change needs them (see [`with_secrets`]).
    secrets: crate::secret_cmd::Prepared,
}

/// The secrets key of a change of `fleet`, read before anything is opened or wired: a key file
/// in the state dir, a key too short, or no key for a fleet that declares secrets is refused
/// here, before the state store is even created.
fn secrets_key(
    change: &ChangeArgs,
    fleet: &phoenix_spec::Fleet,
) -> anyhow::Result<Option<phoenix_state::secrets::SecretsKey>> {
    let key = crate::secret_cmd::load_key(&change.secrets, &change.state.state_dir)?;
    if key.is_none() {
        crate::secret_cmd::require_no_secrets(fleet)?;
    }
    Ok(key)
}

/// Resolves the secrets a change of `fleet` needs (a wrong key is refused here, before
/// anything changes) and pins their versions into `desired`'s fingerprints.
fn with_secrets(
    w: &mut Wired,
    fleet: &phoenix_spec::Fleet,
    desired: &mut Desired,
    key: Option<&phoenix_state::secrets::SecretsKey>,
    rotate: Option<&str>,
) -> anyhow::Result<()> {
    let prepared = crate::secret_cmd::prepare(&*w.store, fleet, key, rotate)?;
    desired.pin_secrets(fleet, &prepared.versions);
    w.secrets = prepared;
    Ok(())
}

fn wire(
    state: &StateArgs,
    fleet: &phoenix_spec::Fleet,
    allow_unreachable: bool,
    ledger: &crate::ledger_link::LedgerArgs,
) -> anyhow::Result<Wired> {
    let actor = phoenix_state::LockOwner::this_process("apply").who;
    wire_as(state, fleet, allow_unreachable, ledger, actor)
}

/// [`wire`] with a changing command's options.
fn wire_change(change: &ChangeArgs, fleet: &phoenix_spec::Fleet) -> anyhow::Result<Wired> {
    wire(
        &change.state,
        fleet,
        change.allow_unreachable,
        &change.ledger,
    )
}

/// [`wire`] for `actor`, who is named in the lock and in every audit record (`phoenix serve`
/// passes the token's name).
fn wire_as(
    state: &StateArgs,
    fleet: &phoenix_spec::Fleet,
    allow_unreachable: bool,
    ledger: &crate::ledger_link::LedgerArgs,
    actor: String,
) -> anyhow::Result<Wired> {
    let store: Arc<dyn StateStore> = Arc::from(
        phoenix_state::open(&state.state_dir, state.state_url.as_deref())
            .with_context(|| format!("opening the state store in {}", state.state_dir.display()))?,
    );
    let provider = Arc::new(LocalProvider::new(&state.state_dir));
    let router = Arc::new(crate::sites::router_for(
        fleet,
        &state.state_dir,
        &provider,
        allow_unreachable,
        false,
    )?);
    let chain = crate::audit_cmd::open_chain(
        store.clone(),
        &state.state_dir,
        state.operator_key.as_deref(),
        &actor,
    )?;
    // With --ledger, refusals (unreachable, a missing role, a revoked identity, a paused
    // module) come before anything changes, and what earlier commands left unsent goes first.
    let session = match crate::ledger_link::Link::open(ledger)? {
        Some(link) => Some(crate::ledger_link::Session::start(
            link,
            &*store,
            &fleet.name,
        )?),
        None => None,
    };
    let recorder = match &session {
        Some(s) => s.recorder(chain.clone(), store.clone()),
        None => chain.clone() as Arc<dyn Recorder>,
    };
    let engine = Engine {
        provider: router.clone(),
        store: store.clone(),
        recorder,
        actor,
    };
    Ok(Wired {
        engine,
        provider,
        router,
        store,
        chain,
        ledger: std::sync::Mutex::new(session),
        ledger_urls: ledger.ledger.join(","),
        secrets: Default::default(),
    })
}

/// A parsed fleet with its sources, or the exit code after printing its diagnostics.
type Loaded = Result<(phoenix_spec::Fleet, Vec<(String, String)>), ExitCode>;

/// Reads the files and parses them, keeping the sources for the revision document.
fn load(files: &[PathBuf], env: Option<&str>) -> anyhow::Result<Loaded> {
    let mut sources = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        sources.push((f.display().to_string(), text));
    }
    match phoenix_spec::parse_sources(&sources, env) {
        Ok(fleet) => Ok(Ok((fleet, sources))),
        Err(d) => {
            eprint!("{}", d.render());
            Ok(Err(ExitCode::from(1)))
        }
    }
}

/// The desired state of a fleet (sites whose provider this build cannot drive are refused
/// when the providers are wired, naming them).
fn desired_of(fleet: &phoenix_spec::Fleet) -> anyhow::Result<Desired> {
    let plan = phoenix_plan::plan(fleet);
    Ok(Desired::new(fleet, &plan)?)
}

/// Prints the diff and asks; `Err(code)` when it must not go on.
fn confirm(
    what: &str,
    fleet: &str,
    decision: &Decision,
    yes: bool,
    output: RunFormat,
    refused: &AtomicBool,
) -> bool {
    let lines = decision.diff_lines();
    match output {
        RunFormat::Json => render::json_line(&serde_json::json!({
            "event": "diff", "fleet": fleet, "changes": lines,
        })),
        RunFormat::Table => {
            let (c, r, x) = decision.counts();
            let jobs = decision.jobs().count();
            let jobs = if jobs > 0 {
                format!(", {jobs} job(s) to run")
            } else {
                String::new()
            };
            eprintln!("Fleet {fleet}: {c} to create, {r} to replace, {x} to remove{jobs}");
            for l in &lines {
                eprintln!("  {l}");
            }
        }
    }
    if yes {
        return true;
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !interactive {
        eprintln!(
            "refusing to {what} without --yes: there is no terminal to ask for confirmation \
             (re-run with --yes to {what} the changes above)"
        );
        refused.store(true, Ordering::SeqCst);
        return false;
    }
    eprint!("{} fleet {fleet} as above? [y/N] ", capitalise(what));
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The part of a fleet on sites whose providers answered.
struct Reachable {
    desired: Desired,
    /// Endpoints that did not answer (empty unless `--allow-unreachable`).
    endpoints: std::collections::BTreeSet<String>,
}

fn reachable_part(w: &Wired, desired: &Desired, change: &ChangeArgs) -> anyhow::Result<Reachable> {
    use phoenix_provider_api::Provider as _;
    if let Err(e) = w.router.list(&desired.fleet) {
        bail!(
            "{e}\nnothing was changed; re-run with --allow-unreachable to apply the sites that can be reached"
        );
    }
    let down = w.router.unreachable();
    let mut reachable = desired.clone();
    // Images are resolved (and built) before anything changes, so that a moved tag or a
    // changed build context is part of the diff, and a bad image is refused up front.
    reachable.pin_images(|spec| w.router.resolve_image(spec))?;
    if !down.is_empty() {
        eprintln!(
            "warning: {}; applying the other sites (--allow-unreachable), the instances there are left as they are and reported as drift",
            phoenix_provider_api::route::describe_unreachable(&down)
        );
        reachable.units.retain(|_, u| {
            !down
                .iter()
                .any(|d| d.site == u.spec.site && d.host == u.spec.host)
        });
        reachable.jobs.retain(|_, u| {
            !down
                .iter()
                .any(|d| d.site == u.spec.site && d.host == u.spec.host)
        });
    }
    let _ = change;
    Ok(Reachable {
        desired: reachable,
        endpoints: down.into_iter().map(|d| d.endpoint).collect(),
    })
}

/// Runs one change (apply, rollback, destroy, up) and prints its report.
#[allow(clippy::too_many_arguments)] // Plain options of one command; a struct would be built once.
fn run_change(
    w: &Wired,
    what: &str,
    desired: &Desired,
    doc: &RevisionDoc,
    scope: Scope,
    change: &ChangeArgs,
    rollback: bool,
    after: &dyn Fn(&ApplyReport),
) -> anyhow::Result<ExitCode> {
    let cancel = cancel_flag();
    // Every site's provider is asked before anything changes: an unreachable one is named,
    // and refused unless --allow-unreachable, which leaves its instances alone.
    let reachable = reachable_part(w, desired, change)?;
    let desired = &reachable.desired;
    // The revision keeps the specs as applied (with pinned image ids), so that the next apply
    // compares like with like.
    let mut doc = doc.clone();
    for (instance, unit) in &desired.units {
        doc.units.insert(instance.clone(), unit.spec.clone());
    }
    let doc = &doc;
    let opts = ApplyOptions {
        parallelism: change.parallelism as usize,
        rollback,
        scope,
        cancel: cancel.clone(),
        lock_ttl: Duration::from_secs(15),
        operation: what.into(),
        unreachable: reachable.endpoints,
        holder_liveness: this_host_liveness(),
        clock: Default::default(),
    };
    let refused = AtomicBool::new(false);
    let progress = render::Progress::new(change.output).with_sites(
        desired
            .units
            .values()
            .chain(desired.jobs.values())
            .map(|u| (u.instance.clone(), u.spec.site.clone())),
    );
    // New secret values are stored once the change is confirmed, before anything starts: a
    // declined change stores nothing.
    let secrets_failed = std::sync::Mutex::new(None);
    let confirm_fn = |d: &Decision| {
        if change.output == RunFormat::Table {
            for note in &w.secrets.notes {
                eprintln!("  {note}");
            }
        }
        let mut ok = confirm(what, &desired.fleet, d, change.yes, change.output, &refused);
        if ok && let Err(e) = w.secrets.commit(&*w.store, &desired.fleet) {
            *secrets_failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
            ok = false;
        }
        if ok {
            EXECUTING.store(true, Ordering::SeqCst);
        }
        ok
    };
    let engine = engine_with_secrets(w);
    let sink = |e: &Event| progress.event(e);
    // An operator whose key may not sign the fleet's history is refused before any change.
    crate::audit_cmd::ensure_can_sign(&w.chain, &desired.fleet)?;
    let result = engine.apply(desired, doc, &opts, &confirm_fn, &sink);
    EXECUTING.store(false, Ordering::SeqCst);
    progress.finish();
    if let Some(e) = secrets_failed
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        finish_ledger(w, change.output);
        return Err(e.context("storing the new secret values; nothing was changed"));
    }
    finish_ledger(w, change.output);
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            if change.output == RunFormat::Json {
                render::json_line(&serde_json::json!({"event": "error", "message": e.to_string()}));
            }
            return Err(e.into());
        }
    };
    crate::audit_cmd::anchor(&*w.store, &desired.fleet);
    if refused.load(Ordering::SeqCst) {
        return Ok(ExitCode::from(2));
    }
    after(&report);
    render::report(&report, change.output, what);
    Ok(match &report.outcome {
        ApplyOutcome::NoChanges | ApplyOutcome::Applied => ExitCode::SUCCESS,
        ApplyOutcome::Cancelled => ExitCode::from(130),
        ApplyOutcome::Declined | ApplyOutcome::RolledBack { .. } | ApplyOutcome::Failed { .. } => {
            ExitCode::from(1)
        }
    })
}

/// Sends the ledger what is still queued, records the instances' lifecycle, and reports.
fn finish_ledger(w: &Wired, output: RunFormat) {
    let session = w
        .ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let Some(session) = session else { return };
    let report = session.finish(&*w.store);
    match output {
        RunFormat::Json => render::json_line(&report.json()),
        RunFormat::Table => {
            for line in report.lines(&w.ledger_urls) {
                eprintln!("{line}");
            }
        }
    }
}

pub(crate) fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let (fleet, sources) = match load(&args.files, args.env.as_deref())? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let mut desired = desired_of(&fleet)?;
    check_users(&fleet, &desired)?;
    let scope = Scope::new(&desired, &args.target, &args.exclude)?;
    let key = secrets_key(&args.change, &fleet)?;
    let mut w = wire_change(&args.change, &fleet)?;
    with_secrets(&mut w, &fleet, &mut desired, key.as_ref(), None)?;
    let mut doc = RevisionDoc::new(RevisionKind::Apply, &desired, sources, args.env.clone());
    doc.targets = args.target.clone();
    doc.excludes = args.exclude.clone();
    run_change(
        &w,
        "apply",
        &desired,
        &doc,
        scope,
        &args.change,
        !args.no_rollback,
        &|_| {},
    )
}

/// Refuses, before anything changes, a `user:` that this host does not have, for every unit
/// placed on a local site (SSH hosts and Docker images are checked where they run, when the
/// unit starts). Every such user is named, at the `FILE:LINE` of its service.
fn check_users(fleet: &phoenix_spec::Fleet, desired: &Desired) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for unit in desired.units.values().chain(desired.jobs.values()) {
        let Some(user) = &unit.spec.user else {
            continue;
        };
        let local = fleet.site(&unit.spec.site).map(|s| s.provider)
            == Some(phoenix_spec::ProviderKind::Local);
        if !local || !seen.insert((unit.service.clone(), user.clone())) {
            continue;
        }
        match phoenix_provider_local::lookup_user(user) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let at = fleet
                    .service(&unit.service)
                    .map(|s| {
                        let file = fleet.files.get(s.location.file).map_or("?", String::as_str);
                        format!("{file}:{}: ", s.location.line)
                    })
                    .unwrap_or_default();
                let kind = fleet.service(&unit.service).map_or("service", |s| s.kind());
                problems.push(format!(
                    "{at}user `{user}` of {kind} `{}` does not exist on this host (create it, e.g. `useradd --system {user}`, or change `user:`)",
                    unit.service
                ));
            }
            Err(e) => problems.push(format!("cannot look up user `{user}`: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("nothing was changed:\n  {}", problems.join("\n  "))
    }
}

/// `phoenix run-job FILE... --job JOB`: runs one job now, whatever its fingerprint says, as
/// a revision of its own that touches nothing else; asks first, like `apply`.
pub(crate) fn run_job(args: RunJobArgs) -> anyhow::Result<ExitCode> {
    let Some((job, files)) = args.args.split_last() else {
        bail!("usage: phoenix run-job FILE... JOB");
    };
    let job = job.clone();
    let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    let (fleet, sources) = match load(&files, args.env.as_deref())? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    match fleet.service(&job) {
        Some(s) if s.is_job() && s.enabled => {}
        Some(s) if s.is_job() => bail!("job `{}` is disabled (`enabled: false`)", job),
        Some(_) => bail!(
            "`{}` is a service, not a job: `phoenix apply` rolls services out",
            job
        ),
        None => {
            let jobs: Vec<&str> = fleet.jobs().map(|j| j.name.as_str()).collect();
            if jobs.is_empty() {
                bail!(
                    "the spec defines no jobs (`jobs:`), so there is no `{}`",
                    job
                );
            }
            bail!(
                "no job `{}` in the spec; its jobs: {}",
                job,
                jobs.join(", ")
            );
        }
    }
    let mut desired = desired_of(&fleet)?;
    check_users(&fleet, &desired)?;
    desired.force_jobs.insert(job.clone());
    let scope = Scope::all().only([job.clone()]);
    let key = secrets_key(&args.change, &fleet)?;
    let mut w = wire_change(&args.change, &fleet)?;
    with_secrets(&mut w, &fleet, &mut desired, key.as_ref(), None)?;
    let mut doc = RevisionDoc::new(RevisionKind::Apply, &desired, sources, args.env.clone());
    doc.targets = vec![job.clone()];
    run_change(
        &w,
        "run-job",
        &desired,
        &doc,
        scope,
        &args.change,
        true,
        &|_| {},
    )
}

pub(crate) fn destroy(args: DestroyArgs) -> anyhow::Result<ExitCode> {
    let (fleet, sources) = match load(&args.files, args.env.as_deref())? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let desired = Desired::destroy(&fleet, &phoenix_plan::plan(&fleet));
    let doc = RevisionDoc::new(RevisionKind::Destroy, &desired, sources, None);
    let w = wire_change(&args.change, &fleet)?;
    let code = run_change(
        &w,
        "destroy",
        &desired,
        &doc,
        Scope::all(),
        &args.change,
        false,
        &|_| {},
    )?;
    if args.purge && code == ExitCode::SUCCESS {
        use phoenix_provider_api::Provider as _;
        for removed in w.router.purge(&fleet.name)? {
            eprintln!("removed {removed}");
        }
    }
    stop_idle_agent(&w);
    Ok(code)
}

/// Stops the local agent when it supervises nothing any more, so that `destroy` leaves no
/// process behind.
fn stop_idle_agent(w: &Wired) {
    if let Ok(Some(info)) = w.provider.ping()
        && info.units == 0
    {
        let _ = w.provider.shutdown_agent(false);
    }
}

fn parse_revision(s: &str) -> anyhow::Result<u64> {
    s.trim_start_matches(['r', 'R'])
        .parse()
        .with_context(|| format!("`{s}` is not a revision number (e.g. 3 or r3)"))
}

pub(crate) fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let (fleet, _) = match load(&args.files, None)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    // The current spec's sites: a rollback to a revision with other sites reaches these only.
    let key = secrets_key(&args.change, &fleet)?;
    let mut w = wire_change(&args.change, &fleet)?;
    let to = args.to.as_deref().map(parse_revision).transpose()?;
    let mut step = rollback_step(&w, &fleet, to, args.force)?;
    // Today's values, pinned into the old revision's units: a rollback by hand re-applies an
    // old spec, and the store's current versions stay what `status` compares with. (A failed
    // gate's rollback instead restarts the replaced units with their own pinned versions.)
    with_secrets(&mut w, &step.fleet, &mut step.desired, key.as_ref(), None)?;
    if args.change.output == RunFormat::Table {
        eprintln!("Rolling fleet {} back to revision {}", fleet.name, step.to);
    }
    run_change(
        &w,
        "rollback",
        &step.desired,
        &step.doc,
        step.scope,
        &args.change,
        true,
        &|_| {},
    )
}

/// What a rollback applies: the target revision's desired state, its revision document and
/// its scope.
struct RollbackStep {
    /// The fleet of the target revision (the current one for a destroyed revision).
    fleet: phoenix_spec::Fleet,
    to: phoenix_state::RevisionNumber,
    desired: Desired,
    doc: RevisionDoc,
    scope: Scope,
}

fn rollback_step(
    w: &Wired,
    fleet: &phoenix_spec::Fleet,
    to: Option<u64>,
    force: bool,
) -> anyhow::Result<RollbackStep> {
    let revisions = w.store.list_revisions(&fleet.name)?;
    let target = rollback::rollback_target(&fleet.name, &revisions, to, force)?;
    let old = RevisionDoc::parse(&target.spec_json).with_context(|| {
        format!(
            "revision {} has no spec this phoenix can read",
            target.number
        )
    })?;
    let mut target_fleet = fleet.clone();
    let desired = if old.kind == RevisionKind::Destroy {
        Desired::empty(&fleet.name)
    } else {
        let old_fleet = phoenix_spec::parse_sources(&old.sources, old.environment.as_deref())
            .map_err(|d| {
                anyhow::anyhow!(
                    "revision {} no longer parses:\n{}",
                    target.number,
                    d.render()
                )
            })?;
        if old_fleet.name != fleet.name {
            bail!(
                "revision {} is of fleet {}, not {}",
                target.number,
                old_fleet.name,
                fleet.name
            );
        }
        let d = desired_of(&old_fleet)?;
        target_fleet = old_fleet;
        d
    };
    // Never widened to the whole fleet: targets that no longer resolve are refused, named.
    let scope = rollback::rollback_scope(&desired, &old, target.number.0)?;
    let mut doc = RevisionDoc::new(
        RevisionKind::Rollback,
        &desired,
        old.sources.clone(),
        old.environment.clone(),
    );
    doc.rollback_of = Some(target.number.0);
    doc.targets = old.targets.clone();
    doc.excludes = old.excludes.clone();
    Ok(RollbackStep {
        fleet: target_fleet,
        to: target.number,
        desired,
        doc,
        scope,
    })
}

/// A rollback run for someone else than this process's user: `phoenix serve` for a deployer
/// token. The fleet is named (its current spec is the latest revision's), `actor` is named in
/// the lock and in every audit record, nothing is asked or printed, unreachable sites are
/// refused, and Ctrl-C is not watched (the server stops between requests).
///
/// # Errors
/// What the CLI's `rollback` refuses (no earlier revision, a target never applied without
/// `force`, an unreachable site, a held lock, a key the chain does not allow), or the engine's
/// error.
pub(crate) fn rollback_for(
    state: &StateArgs,
    fleet_name: &str,
    to: Option<u64>,
    force: bool,
    actor: &str,
    ledger: &crate::ledger_link::LedgerArgs,
    secrets_key: Option<&phoenix_state::secrets::SecretsKey>,
) -> anyhow::Result<ApplyReport> {
    let store = phoenix_state::open(&state.state_dir, state.state_url.as_deref())
        .with_context(|| format!("opening the state store in {}", state.state_dir.display()))?;
    let (fleet, _) = latest_fleet(&*store, fleet_name)?;
    drop(store);
    require_key_on_the_server(&fleet, secrets_key)?;
    let mut w = wire_as(state, &fleet, false, ledger, actor.to_owned())?;
    let mut step = rollback_step(&w, &fleet, to, force)?;
    // Today's values, as `phoenix rollback` pins them.
    with_secrets(&mut w, &step.fleet, &mut step.desired, secrets_key, None)?;
    run_for(
        &w,
        "rollback",
        &step.desired,
        &step.doc,
        step.scope,
        true,
        state,
        ledger,
    )
}

/// `phoenix serve` holds a secrets key only when started with one (`--secrets-key FILE` or
/// `PHOENIX_SECRETS_KEY`; ADR 010): without it, a change that would start units of a fleet with
/// secrets is refused there before anything happens, naming what can do it.
fn require_key_on_the_server(
    fleet: &phoenix_spec::Fleet,
    key: Option<&phoenix_state::secrets::SecretsKey>,
) -> anyhow::Result<()> {
    if fleet.secrets.is_empty() || key.is_some() {
        return Ok(());
    }
    bail!(
        "fleet {} has secrets, and this server was started without a secrets key: start `phoenix serve` with --secrets-key FILE (or PHOENIX_SECRETS_KEY), or apply it with the CLI and the key (docs/secrets.md)",
        fleet.name
    )
}

/// `phoenix apply` for `phoenix serve`: the posted `sources` applied through the engine as the
/// CLI applies them (whole fleet, rollback on a failed gate), for `actor` (a deployer token's
/// name), without asking: the request is the confirmation.
///
/// # Errors
/// The spec does not parse or validate, the lock is held, a site cannot be reached, the
/// operator key may not sign the fleet's chain, the ledger refuses.
pub(crate) fn apply_for(
    state: &StateArgs,
    sources: Vec<(String, String)>,
    env: Option<String>,
    actor: &str,
    ledger: &crate::ledger_link::LedgerArgs,
    secrets_key: Option<&phoenix_state::secrets::SecretsKey>,
) -> anyhow::Result<ApplyReport> {
    let fleet = phoenix_spec::parse_sources(&sources, env.as_deref())
        .map_err(|d| anyhow::anyhow!("the spec is not valid:\n{}", d.render()))?;
    require_key_on_the_server(&fleet, secrets_key)?;
    let mut desired = desired_of(&fleet)?;
    let mut w = wire_as(state, &fleet, false, ledger, actor.to_owned())?;
    with_secrets(&mut w, &fleet, &mut desired, secrets_key, None)?;
    let doc = RevisionDoc::new(RevisionKind::Apply, &desired, sources, env);
    run_for(
        &w,
        "apply",
        &desired,
        &doc,
        Scope::all(),
        true,
        state,
        ledger,
    )
}

/// `phoenix destroy` for `phoenix serve`: every unit of `fleet_name` removed through the engine,
/// with the spec of its latest revision (as `rollback_for` reads it), for `actor`.
///
/// # Errors
/// As [`apply_for`]; and a fleet without revisions, or whose latest spec no longer parses.
pub(crate) fn destroy_for(
    state: &StateArgs,
    fleet_name: &str,
    actor: &str,
    ledger: &crate::ledger_link::LedgerArgs,
) -> anyhow::Result<ApplyReport> {
    let store = phoenix_state::open(&state.state_dir, state.state_url.as_deref())
        .with_context(|| format!("opening the state store in {}", state.state_dir.display()))?;
    let (fleet, stored) = latest_fleet(&*store, fleet_name)?;
    drop(store);
    let desired = Desired::destroy(&fleet, &phoenix_plan::plan(&fleet));
    let doc = RevisionDoc::new(RevisionKind::Destroy, &desired, stored.sources, None);
    let w = wire_as(state, &fleet, false, ledger, actor.to_owned())?;
    let report = run_for(
        &w,
        "destroy",
        &desired,
        &doc,
        Scope::all(),
        false,
        state,
        ledger,
    );
    stop_idle_agent(&w);
    report
}

/// What [`run_change`] does, for a caller that is not a terminal (`phoenix serve`): no
/// question, no progress output, the ledger session finished quietly (its report goes to the
/// audit chain and the ledger, not to a screen).
// The operation's parts, as run_change takes them; a struct would only be taken apart here.
#[allow(clippy::too_many_arguments)]
fn run_for(
    w: &Wired,
    what: &str,
    desired: &Desired,
    doc: &RevisionDoc,
    scope: Scope,
    rollback: bool,
    state: &StateArgs,
    ledger: &crate::ledger_link::LedgerArgs,
) -> anyhow::Result<ApplyReport> {
    let change = ChangeArgs {
        yes: true,
        parallelism: 16,
        output: RunFormat::Json,
        allow_unreachable: false,
        ledger: ledger.clone(),
        secrets: Default::default(),
        state: state.clone(),
    };
    let reachable = reachable_part(w, desired, &change)?;
    let desired = &reachable.desired;
    let mut doc = doc.clone();
    for (instance, unit) in &desired.units {
        doc.units.insert(instance.clone(), unit.spec.clone());
    }
    let opts = ApplyOptions {
        parallelism: change.parallelism as usize,
        rollback,
        scope,
        cancel: Arc::new(AtomicBool::new(false)),
        lock_ttl: Duration::from_secs(15),
        operation: what.into(),
        unreachable: reachable.endpoints,
        holder_liveness: this_host_liveness(),
        clock: Default::default(),
    };
    crate::audit_cmd::ensure_can_sign(&w.chain, &desired.fleet)?;
    // The request is the confirmation; new secret values are stored before anything starts.
    let secrets_failed = std::sync::Mutex::new(None);
    let confirm_fn = |_: &Decision| match w.secrets.commit(&*w.store, &desired.fleet) {
        Ok(()) => true,
        Err(e) => {
            *secrets_failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
            false
        }
    };
    let result = engine_with_secrets(w).apply(desired, &doc, &opts, &confirm_fn, &|_| {});
    // Whatever the outcome, what the session queued is sent (or left for the next command).
    let session = w
        .ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(session) = session {
        session.finish(&*w.store);
    }
    if let Some(e) = secrets_failed
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        return Err(e.context("storing the new secret values; nothing was changed"));
    }
    let report = result?;
    crate::audit_cmd::anchor(&*w.store, &desired.fleet);
    Ok(report)
}

/// The wired engine, its provider wrapped so that units get their secrets' values from it,
/// never through the engine, which persists unit specs and writes events and audit records.
fn engine_with_secrets(w: &Wired) -> Engine {
    if w.secrets.values.is_empty() {
        return w.engine.clone();
    }
    Engine {
        provider: Arc::new(phoenix_provider_api::secret::WithSecrets::new(
            w.engine.provider.clone(),
            w.secrets.values.clone(),
        )),
        ..w.engine.clone()
    }
}

pub(crate) fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let name = "examples/local-demo.yaml";
    let sources = vec![(name.to_string(), LOCAL_DEMO.to_string())];
    let fleet = phoenix_spec::parse_sources(&sources, None)
        .map_err(|d| anyhow::anyhow!("the bundled demo does not parse:\n{}", d.render()))?;
    let desired = desired_of(&fleet)?;
    std::fs::create_dir_all(&args.state.state_dir)?;
    // A copy of the spec beside the state, so that status, logs and destroy can name it.
    let copy = args.state.state_dir.join("local-demo.yaml");
    std::fs::write(&copy, LOCAL_DEMO).with_context(|| format!("writing {}", copy.display()))?;
    let doc = RevisionDoc::new(RevisionKind::Apply, &desired, sources, None);
    let no_ledger = crate::ledger_link::LedgerArgs::default();
    let w = wire(&args.state, &fleet, false, &no_ledger)?;
    let change = ChangeArgs {
        yes: true,
        parallelism: 16,
        output: args.output,
        allow_unreachable: false,
        ledger: no_ledger,
        secrets: Default::default(),
        state: args.state.clone(),
    };
    let code = run_change(
        &w,
        "apply",
        &desired,
        &doc,
        Scope::all(),
        &change,
        true,
        &|_| {},
    )?;
    if code == ExitCode::SUCCESS && args.output == RunFormat::Table {
        let observed = w.engine.observe(
            &fleet.name,
            Some(&desired),
            1,
            16,
            &phoenix_engine::RealClock::new(),
        )?;
        let report = status::status(&desired, &observed, None);
        print_up(&report, &copy, &args.state.state_dir);
    }
    Ok(code)
}

fn print_up(report: &StatusReport, spec: &Path, state_dir: &Path) {
    let mut out = String::new();
    out.push_str(&format!("\nFleet {} is up:\n\n", report.fleet));
    let rows: Vec<Vec<String>> = report
        .instances
        .iter()
        .map(|i| {
            vec![
                i.service.clone(),
                i.instance.clone(),
                i.ports
                    .values()
                    .map(|p| format!("http://127.0.0.1:{p}/"))
                    .collect::<Vec<_>>()
                    .join(" "),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                if i.healthy { "healthy" } else { "unhealthy" }.into(),
            ]
        })
        .collect();
    out.push_str(&render::table(
        &["SERVICE", "INSTANCE", "URL", "PID", "HEALTH"],
        &rows,
    ));
    out.push_str(&render::up_hints(&this_phoenix(), spec, state_dir));
    let _ = crate::print_out(&out);
}

/// The command that runs this executable from here (see [`render::invocation`]).
fn this_phoenix() -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .unwrap_or_else(|_| PathBuf::from("phoenix"));
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("phoenix"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
    });
    let cwd = std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .unwrap_or_default();
    render::invocation(&exe, on_path.as_deref(), &cwd, |dir| {
        dir.join("Cargo.toml").is_file()
    })
}

/// Opens the state store for a command that only reads: never created, never written, so a
/// mistyped `--state-dir` is an error that says so instead of an empty fleet.
fn open_reading(state: &StateArgs) -> anyhow::Result<Arc<dyn StateStore>> {
    Ok(Arc::from(phoenix_state::open_read_only(
        &state.state_dir,
        state.state_url.as_deref(),
    )?))
}

pub(crate) fn status_cmd(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (fleet, _) = match load(&args.files, args.env.as_deref())? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let store = open_reading(&args.state)?;
    // Reading neither starts an agent (which would restart units) nor signs anything. Every
    // site is asked; one that cannot be reached leaves its instances `unknown`.
    let local = Arc::new(LocalProvider::new(&args.state.state_dir).without_starting_agent());
    let router = crate::sites::router_for(&fleet, &args.state.state_dir, &local, true, true)?;
    let engine = Engine {
        provider: Arc::new(router),
        store: store.clone(),
        recorder: Arc::new(phoenix_audit::MemoryRecorder::new()),
        actor: String::new(),
    };
    let latest = store.latest_applied_revision(&fleet.name)?;
    // A fleet whose latest applied revision removed everything (a destroy, or a rollback to
    // one) desires nothing: with nothing running it is in sync, not "missing" everywhere.
    let destroyed = latest
        .as_ref()
        .and_then(|r| RevisionDoc::parse(&r.spec_json))
        .is_some_and(|d| d.kind != RevisionKind::Apply && d.units.is_empty());
    let desired = if destroyed {
        Desired::empty(&fleet.name)
    } else {
        let mut d = desired_of(&fleet)?;
        // Versions only: reading needs no secrets key.
        d.pin_secrets(
            &fleet,
            &crate::secret_cmd::stored_versions(&*store, &fleet.name)?,
        );
        d
    };
    let observed = engine.observe(
        &fleet.name,
        Some(&desired),
        1,
        16,
        &phoenix_engine::RealClock::new(),
    )?;
    // Reading builds and pulls nothing: a container unit is compared with the image id its
    // running unit was started with (`apply` is what notices a moved tag).
    let mut desired = desired;
    let _ = desired.pin_images(|spec| {
        Ok::<_, std::convert::Infallible>(
            observed
                .iter()
                .filter(|o| o.status.instance == spec.instance)
                .find_map(|o| o.spec.as_ref()?.container.as_ref()?.image_id.clone()),
        )
    });
    let mut report = status::status(&desired, &observed, latest.map(|r| r.number.0));
    status::mark_unobservable(&mut report, &engine.units_elsewhere(&fleet.name)?);
    if !destroyed {
        status::add_jobs(&mut report, &desired, &store.job_runs(&fleet.name)?);
    }
    match args.output {
        ReportFormat::Json => {
            let mut v = serde_json::to_value(&report)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("destroyed".into(), destroyed.into());
            }
            crate::print_out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        }
        ReportFormat::Table => crate::print_out(&render::status_table(&report, destroyed))?,
    }
    Ok(if args.detailed_exitcode && !report.in_sync {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let (fleet, _) = match load(&args.files, None)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let pending_import = crate::audit_cmd::legacy_log_pending(&args.state.state_dir);
    if let Some(old) = &pending_import {
        eprintln!(
            "the audit history of {} is still in the old file {}: import it into the state store \
             with `phoenix audit import --state-dir {}` (any apply, rollback or destroy also does)",
            args.state.state_dir.display(),
            old.display(),
            args.state.state_dir.display()
        );
    }
    // A reading command: never creates state, works on a read-only copy.
    let store =
        phoenix_state::open_read_only(&args.state.state_dir, args.state.state_url.as_deref())?;
    let revisions = store.list_revisions(&fleet.name)?;
    let job_runs = store.job_runs(&fleet.name)?;
    let records = phoenix_audit::read_chain(&*store, &fleet.name);
    let verify = if args.verify {
        Some(crate::audit_cmd::verify(&*store, &fleet.name)?)
    } else {
        None
    };
    // A record that cannot be read is shown by --verify; the listing skips it.
    let records = match (records, args.verify) {
        (Ok(r), _) => r,
        (Err(_), true) => Vec::new(),
        (Err(e), false) => {
            return Err(anyhow::Error::new(e).context(
                "reading the audit chain (run `phoenix history --verify` to see every problem)",
            ));
        }
    };
    let mut ok =
        verify.as_ref().is_none_or(|v| v.verified()) && !(args.verify && pending_import.is_some());
    let ledger = history_ledger(&args, &*store, &fleet.name, &records)?;
    if let Some((sync, problems)) = &ledger {
        ok &= sync
            .as_ref()
            .is_none_or(crate::ledger_link::Report::complete);
        ok &= problems.as_ref().is_none_or(Vec::is_empty);
    }
    match args.output {
        ReportFormat::Json => {
            let mut v = render::history_json(&fleet.name, &revisions, &records, verify.as_ref());
            if let Some(revs) = v["revisions"].as_array_mut() {
                for rev in revs {
                    let n = rev["revision"].as_u64();
                    rev["jobs"] = job_runs
                        .iter()
                        .filter(|r| Some(r.run.revision.0) == n)
                        .map(render::job_run_json)
                        .collect();
                }
            }
            if let Some((sync, problems)) = &ledger {
                v["ledger"] = serde_json::json!({
                    "urls": args.ledger.ledger,
                    "sync": sync.as_ref().map(crate::ledger_link::Report::json),
                    "verified": problems.as_ref().map(Vec::is_empty),
                    "problems": problems.as_ref().map(|ps| ps.iter().map(|p| serde_json::json!({
                        "seq": p.seq, "kind": p.kind, "message": p.message,
                    })).collect::<Vec<_>>()),
                });
            }
            crate::print_out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        }
        ReportFormat::Table => {
            crate::print_out(&render::history_table(&revisions, &records))?;
            crate::print_out(&render::history_jobs_table(&job_runs))?;
            if let Some(report) = &verify {
                crate::print_out(&render::chain_report(report))?;
            }
            if let Some((sync, problems)) = &ledger {
                let urls = args.ledger.ledger.join(",");
                if let Some(sync) = sync {
                    for line in sync.lines(&urls) {
                        eprintln!("{line}");
                    }
                }
                match problems {
                    Some(ps) if ps.is_empty() => crate::print_out(&format!(
                        "Ledger: all {} record(s) of the chain are on the ledger at {urls}, with the same hashes, in order.\n",
                        records.len()
                    ))?,
                    Some(ps) => {
                        let mut out = format!(
                            "Ledger: {} problem(s) against the ledger at {urls}:\n",
                            ps.len()
                        );
                        for p in ps {
                            out.push_str(&format!("  {}: {}\n", p.kind, p.message));
                        }
                        crate::print_out(&out)?;
                    }
                    None => {}
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What `history --sync` sent, and what `history --verify --ledger` found (`None` without
/// `--ledger`).
type HistoryLedger = Option<(
    Option<crate::ledger_link::Report>,
    Option<Vec<crate::ledger_link::LedgerProblem>>,
)>;

fn history_ledger(
    args: &HistoryArgs,
    store: &dyn StateStore,
    fleet: &str,
    records: &[phoenix_audit::AuditRecord],
) -> anyhow::Result<HistoryLedger> {
    if args.ledger.ledger.is_empty() {
        if args.sync {
            bail!("--sync needs --ledger URL: the ledger to send the fleet's records to");
        }
        return Ok(None);
    }
    if !args.sync && !args.verify {
        bail!(
            "--ledger with history needs --verify (check the chain against the ledger) or --sync (send what the ledger lacks)"
        );
    }
    let sync = if args.sync {
        let link = crate::ledger_link::Link::open(&args.ledger)?
            .context("--sync needs --ledger URL and --ledger-key FILE")?;
        Some(crate::ledger_link::sync(link, store, fleet)?)
    } else {
        None
    };
    let problems = if args.verify {
        let mut client = crate::ledger_link::Client::new(&args.ledger.ledger)?;
        Some(crate::ledger_link::verify(&mut client, records, fleet)?)
    } else {
        None
    };
    Ok(Some((sync, problems)))
}

/// The fleet named by spec files (for commands that need only the name).
pub(crate) fn fleet_name(files: &[PathBuf]) -> anyhow::Result<String> {
    match load(files, None)? {
        Ok((fleet, _)) => Ok(fleet.name),
        Err(_) => bail!("the spec files do not parse (see above)"),
    }
}

pub(crate) fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let store = open_reading(&args.state)?;
    let state_dir = &args.state.state_dir;
    let fleet = match args.fleet {
        Some(f) => f,
        None => {
            let fleets = store.list_fleets()?;
            match fleets.as_slice() {
                [] => bail!(
                    "no fleet in {}; apply one first or pass --fleet",
                    state_dir.display()
                ),
                [one] => one.clone(),
                many => {
                    // The fleet whose latest revision is newest.
                    let mut best: Option<(jiff::Timestamp, String)> = None;
                    for f in many {
                        if let Some(r) = store.list_revisions(f)?.last()
                            && best.as_ref().is_none_or(|(t, _)| r.created_at > *t)
                        {
                            best = Some((r.created_at, f.clone()));
                        }
                    }
                    best.map(|(_, f)| f)
                        .context("no fleet has a revision; pass --fleet")?
                }
            }
        }
    };
    let provider = log_reader(&*store, &fleet, state_dir);
    let selector = args.service.clone();
    let initial = provider.log_paths(&fleet, &selector)?;
    if initial.is_empty() && !args.follow {
        // A job's output is kept in the store with each run, also when its log files are gone
        // or on another host.
        let runs: Vec<_> = store
            .job_runs(&fleet)?
            .into_iter()
            .filter(|r| phoenix_provider_api::logs::selector_matches(&selector, &r.run.instance))
            .collect();
        if !runs.is_empty() {
            let mut text = String::new();
            for r in &runs {
                text.push_str(&format!(
                    "--- {}@r{} {} ({}; {} attempt(s)) ---\n{}",
                    r.run.instance,
                    r.run.revision.0,
                    r.run.outcome.as_str(),
                    r.run.detail,
                    r.run.attempts,
                    r.run.output
                ));
                if !r.run.output.is_empty() && !r.run.output.ends_with('\n') {
                    text.push('\n');
                }
            }
            crate::print_out(&text)?;
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "no logs of `{selector}` in fleet {fleet} under {}",
            state_dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    let cancel = cancel_flag();
    EXECUTING.store(true, Ordering::SeqCst);
    let mut out = std::io::stdout().lock();
    let result = phoenix_provider_api::logs::print_logs(
        || provider.log_paths(&fleet, &selector).unwrap_or_default(),
        &mut out,
        args.follow,
        Duration::from_millis(200),
        &|| cancel.load(Ordering::SeqCst),
    );
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// Lease holders of this host are alive when `/proc` says so (the local provider's check).
pub(crate) fn this_host_liveness() -> phoenix_engine::Liveness {
    phoenix_engine::Liveness(Arc::new(phoenix_provider_local::process_alive))
}

/// What reads `fleet`'s logs: the providers of every site of its newest revision, so that the
/// logs of Docker containers and SSH hosts are copied here and read like local ones; this host's
/// log files alone when no revision says where the fleet runs. Reading starts and installs
/// nothing (no local agent, no remote binary), and a site that cannot be reached is skipped.
pub(crate) fn log_reader(
    store: &dyn phoenix_state::StateStore,
    fleet: &str,
    state_dir: &std::path::Path,
) -> Arc<dyn phoenix_provider_api::Provider> {
    let local = Arc::new(LocalProvider::new(state_dir).without_starting_agent());
    match latest_fleet(store, fleet)
        .and_then(|(f, _)| crate::sites::router_for(&f, state_dir, &local, true, true))
    {
        Ok(router) => Arc::new(router),
        Err(_) => local,
    }
}

/// The fleet as its latest revision declares it (parsed from the revision's spec files, with
/// its environment), and that revision's document: where the fleet runs, for commands given no
/// spec file (`phoenix serve`'s rollback and destroy, `phoenix logs`).
///
/// # Errors
/// A fleet without revisions, a revision whose document this phoenix cannot read, or whose
/// spec no longer parses.
fn latest_fleet(
    store: &dyn phoenix_state::StateStore,
    fleet_name: &str,
) -> anyhow::Result<(phoenix_spec::Fleet, RevisionDoc)> {
    let latest = store
        .list_revisions(fleet_name)?
        .into_iter()
        .max_by_key(|r| r.number.0)
        .with_context(|| format!("fleet {fleet_name} has no revisions"))?;
    let doc = RevisionDoc::parse(&latest.spec_json).with_context(|| {
        format!(
            "revision {} has no spec this phoenix can read",
            latest.number
        )
    })?;
    let fleet =
        phoenix_spec::parse_sources(&doc.sources, doc.environment.as_deref()).map_err(|d| {
            anyhow::anyhow!(
                "the spec of revision {} no longer parses:\n{}",
                latest.number,
                d.render()
            )
        })?;
    Ok((fleet, doc))
}

pub(crate) fn agent(args: Vec<OsString>) -> ExitCode {
    phoenix_provider_local::agent_main(args)
}

/// `phoenix secret rotate FILE... NAME`: a new value for one secret, and the units and jobs
/// that use it replaced through the engine (by their rollout strategies, with health gates and
/// rollback), as a revision that touches nothing else; asks first, like `apply`.
pub(crate) fn rotate_secret(args: crate::secret_cmd::RotateArgs) -> anyhow::Result<ExitCode> {
    let Some((name, files)) = args.args.split_last() else {
        bail!("usage: phoenix secret rotate FILE... NAME");
    };
    let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    let (fleet, sources) = match load(&files, args.env.as_deref())? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    if fleet.secret(name).is_none() {
        let known: Vec<&str> = fleet.secrets.iter().map(|s| s.name.as_str()).collect();
        if known.is_empty() {
            bail!("the spec declares no secrets (`secrets:`), so there is no `{name}`");
        }
        bail!(
            "no secret `{name}` in the spec; its secrets: {}",
            known.join(", ")
        );
    }
    let mut desired = desired_of(&fleet)?;
    let users: std::collections::BTreeSet<String> = desired
        .units
        .values()
        .chain(desired.jobs.values())
        .filter(|u| u.spec.secrets.contains_key(name))
        .map(|u| u.service.clone())
        .collect();
    let key = secrets_key(&args.change, &fleet)?;
    let mut w = wire_change(&args.change, &fleet)?;
    with_secrets(&mut w, &fleet, &mut desired, key.as_ref(), Some(name))?;
    if users.is_empty() {
        // Nothing to restart: the engine has no change to confirm, so the rule is kept here.
        for note in &w.secrets.notes {
            eprintln!("  {note}");
        }
        if !args.change.yes {
            eprintln!(
                "refusing to rotate without --yes (no unit uses `{name}`, so only the stored value changes)"
            );
            return Ok(ExitCode::from(2));
        }
        w.secrets.commit(&*w.store, &fleet.name)?;
        eprintln!("secret `{name}` rotated; no unit uses it");
        return Ok(ExitCode::SUCCESS);
    }
    let mut doc = RevisionDoc::new(RevisionKind::Apply, &desired, sources, args.env.clone());
    doc.targets = users.iter().cloned().collect();
    let scope = Scope::all().only(users);
    run_change(
        &w,
        "rotate",
        &desired,
        &doc,
        scope,
        &args.change,
        true,
        &|_| {},
    )
}
