//! Printing for the deploy commands: progress (bars, plain lines or NDJSON), reports, tables.

use super::RunFormat;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use phoenix_audit::{AuditOutcome, AuditRecord, ChainReport};
use phoenix_engine::{ApplyOutcome, ApplyReport, Event, StatusReport};
use phoenix_state::{Revision, RevisionOutcome};
use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::Mutex;

/// Prints one JSON value as a line on stdout (NDJSON); a closed pipe is ignored.
pub(super) fn json_line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

enum Mode {
    Json,
    Plain,
    Bars {
        multi: MultiProgress,
        bar: Mutex<Option<ProgressBar>>,
    },
}

/// Renders engine events as they come.
pub(super) struct Progress {
    mode: Mode,
    /// The site of each instance, when the fleet has more than one site: unit lines then say
    /// where, and each wave ends with a line per site.
    sites: BTreeMap<String, String>,
    /// Per site in the current wave: instances started, passed their gate, failed it.
    tally: Mutex<BTreeMap<String, SiteTally>>,
}

/// One site's progress in a wave.
#[derive(Debug, Default, Clone, Copy)]
struct SiteTally {
    started: usize,
    healthy: usize,
    failed: usize,
}

impl Progress {
    pub(super) fn new(format: RunFormat) -> Self {
        let mode = match format {
            RunFormat::Json => Mode::Json,
            RunFormat::Table if std::io::stderr().is_terminal() => Mode::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bar: Mutex::new(None),
            },
            RunFormat::Table => Mode::Plain,
        };
        Progress {
            mode,
            sites: BTreeMap::new(),
            tally: Mutex::new(BTreeMap::new()),
        }
    }

    /// Says where each instance runs (`instance -> site`); used only when there is more than
    /// one site.
    pub(super) fn with_sites(mut self, sites: impl IntoIterator<Item = (String, String)>) -> Self {
        let sites: BTreeMap<String, String> = sites.into_iter().collect();
        let distinct: std::collections::BTreeSet<&String> = sites.values().collect();
        if distinct.len() > 1 {
            self.sites = sites;
        }
        self
    }

    /// ` on SITE` for a unit of a multi-site fleet.
    fn where_(&self, instance: &str) -> String {
        self.sites
            .get(instance)
            .map(|s| format!(" on {s}"))
            .unwrap_or_default()
    }

    /// Counts an event of `instance` for its site's tally.
    fn count(&self, instance: &str, f: impl FnOnce(&mut SiteTally)) {
        if let Some(site) = self.sites.get(instance) {
            let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            f(t.entry(site.clone()).or_default());
        }
    }

    /// The wave's progress by site, `edge-1: 2/2 healthy, dock: 1/2 healthy, 1 failed`.
    fn by_site(&self) -> Option<String> {
        let t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_empty() {
            return None;
        }
        Some(
            t.iter()
                .map(|(site, c)| {
                    let failed = if c.failed > 0 {
                        format!(", {} failed", c.failed)
                    } else {
                        String::new()
                    };
                    format!("{site}: {}/{} healthy{failed}", c.healthy, c.started)
                })
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    fn line(&self, text: String) {
        match &self.mode {
            Mode::Bars { multi, .. } => {
                let _ = multi.println(text);
            }
            _ => eprintln!("{text}"),
        }
    }

    pub(super) fn event(&self, e: &Event) {
        if let Mode::Json = self.mode {
            if let Ok(v) = serde_json::to_value(e) {
                json_line(&v);
            }
            return;
        }
        match e {
            Event::Recovered {
                unit,
                op,
                resolution,
            } => self.line(format!("recovered an interrupted {op} of {unit}: {resolution}")),
            Event::ApplyStarted {
                fleet,
                revision,
                creates,
                replaces,
                removes,
            } => self.line(format!(
                "revision r{revision} of fleet {fleet}: {creates} to create, {replaces} to replace, {removes} to remove"
            )),
            Event::WaveStarted {
                phase,
                wave,
                services,
                instances,
            } => {
                self.tally.lock().unwrap_or_else(|p| p.into_inner()).clear();
                let title = format!("phase {phase} wave {wave}: {}", services.join(", "));
                match &self.mode {
                    Mode::Bars { multi, bar } => {
                        let b = multi.add(ProgressBar::new(*instances as u64));
                        b.set_style(
                            ProgressStyle::with_template(
                                "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} healthy {msg}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                        b.set_prefix(title);
                        b.enable_steady_tick(std::time::Duration::from_millis(120));
                        *bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
                    }
                    _ => self.line(format!(
                        "{title} ({instances} instance{})",
                        if *instances == 1 { "" } else { "s" }
                    )),
                }
            }
            Event::UnitStarting { .. } => {}
            Event::UnitStarted {
                instance,
                unit,
                pid,
                ports,
            } => {
                self.count(instance, |t| t.started += 1);
                let ports: Vec<String> = ports.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let text = format!(
                    "  started {unit}{}{}{}",
                    self.where_(instance),
                    pid.map(|p| format!(" pid {p}")).unwrap_or_default(),
                    if ports.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", ports.join(" "))
                    }
                );
                match &self.mode {
                    Mode::Bars { bar, .. } => {
                        if let Some(b) = &*bar.lock().unwrap_or_else(|p| p.into_inner()) {
                            b.set_message(format!("started {unit}"));
                        }
                    }
                    _ => self.line(text),
                }
            }
            Event::GatePassed {
                instance, unit, ms, ..
            } => {
                self.count(instance, |t| t.healthy += 1);
                match &self.mode {
                    Mode::Bars { bar, .. } => {
                        if let Some(b) = &*bar.lock().unwrap_or_else(|p| p.into_inner()) {
                            b.inc(1);
                            let sites = self.by_site().map(|s| format!(" ({s})"));
                            b.set_message(format!("{unit} healthy{}", sites.unwrap_or_default()));
                        }
                    }
                    _ => self.line(format!(
                        "  ok {unit} healthy after {ms} ms{}",
                        self.where_(instance)
                    )),
                }
            }
            Event::GateFailed {
                instance,
                unit,
                reason,
                ..
            } => {
                self.count(instance, |t| t.failed += 1);
                self.line(format!(
                    "  FAILED {unit}{}: {reason}",
                    self.where_(instance)
                ));
            }
            Event::CanaryAnalysis {
                service,
                instances,
                ms,
            } => self.line(format!(
                "  canary analysis of {service} ({}) for {ms} ms",
                instances.join(", ")
            )),
            Event::UnitStopped { unit, reason, .. } => {
                self.line(format!("  stopped {unit} ({reason})"));
            }
            Event::Snapshot { instance, tag } => {
                self.line(format!("  backed up {instance} as {tag}"));
            }
            Event::Restored { instance, tag } => {
                self.line(format!("  restored {instance} from {tag}"));
            }
            Event::WaveFinished { .. } => {
                if let Mode::Bars { bar, .. } = &self.mode
                    && let Some(b) = bar.lock().unwrap_or_else(|p| p.into_inner()).take()
                {
                    b.finish_with_message("done");
                }
                if let Some(sites) = self.by_site() {
                    self.line(format!("  by site: {sites}"));
                }
            }
            Event::RollbackStarted { reason, instances } => {
                if let Mode::Bars { bar, .. } = &self.mode
                    && let Some(b) = bar.lock().unwrap_or_else(|p| p.into_inner()).take()
                {
                    b.abandon_with_message("failed");
                }
                self.line(format!("rolling back {instances} instance(s): {reason}"));
            }
            Event::InstanceRestored { instance, detail } => {
                self.line(format!("  restored {instance}: {detail}"));
            }
            Event::JobStarted {
                unit, attempt, of, ..
            } => {
                let text = if *of > 1 {
                    format!("  job {unit}: attempt {attempt} of {of}")
                } else {
                    format!("  job {unit}: running")
                };
                match &self.mode {
                    Mode::Bars { bar, .. } => {
                        if let Some(b) = &*bar.lock().unwrap_or_else(|p| p.into_inner()) {
                            b.set_message(text.trim().to_string());
                        }
                    }
                    _ => self.line(text),
                }
            }
            Event::JobAttemptFailed {
                instance,
                attempt,
                reason,
                retry_in_ms,
                ..
            } => {
                if let Some(ms) = retry_in_ms {
                    self.line(format!(
                        "  job {instance}: attempt {attempt} failed ({reason}); retrying in {ms} ms"
                    ));
                }
            }
            Event::JobFinished {
                instance,
                outcome,
                attempts,
                ms,
                detail,
                ..
            } => {
                let tries = if *attempts > 1 {
                    format!(", {attempts} attempts")
                } else {
                    String::new()
                };
                if outcome == "succeeded" {
                    match &self.mode {
                        Mode::Bars { bar, .. } => {
                            if let Some(b) = &*bar.lock().unwrap_or_else(|p| p.into_inner()) {
                                b.inc(1);
                                b.set_message(format!("job {instance} succeeded"));
                            }
                        }
                        _ => self.line(format!(
                            "  ok job {instance} succeeded after {ms} ms{tries}"
                        )),
                    }
                } else {
                    self.line(format!("  job {instance} {outcome}: {detail}{tries}"));
                }
            }
            Event::Warning { message } => self.line(format!("warning: {message}")),
            Event::Finished { .. } => {}
        }
    }

    pub(super) fn finish(&self) {
        if let Mode::Bars { bar, .. } = &self.mode
            && let Some(b) = bar.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            b.abandon();
        }
    }
}

/// Prints the final report of a change: stdout for the summary, stderr for failures.
pub(super) fn report(r: &ApplyReport, format: RunFormat, what: &str) {
    if format == RunFormat::Json {
        json_line(&serde_json::json!({
            "event": "report",
            "operation": what,
            "fleet": r.fleet,
            "revision": r.revision,
            "outcome": r.outcome,
            "failure": r.failure,
            "restored": r.restored,
            "recovered": r.recovered,
        }));
        return;
    }
    let rev = r.revision.map(|n| format!("r{n}")).unwrap_or_default();
    let (c, x, d) = r.decision.counts();
    match &r.outcome {
        ApplyOutcome::NoChanges => {
            let _ = crate::print_out(&format!(
                "fleet {}: no changes; everything runs as desired\n",
                r.fleet
            ));
        }
        ApplyOutcome::Declined => eprintln!("{what} cancelled; nothing was changed"),
        ApplyOutcome::Applied => {
            let _ = crate::print_out(&format!(
                "{what} of fleet {}: revision {rev} applied ({c} created, {x} replaced, {d} removed{})\n",
                r.fleet,
                match r.decision.jobs().count() {
                    0 => String::new(),
                    n => format!(", {n} job(s) run"),
                }
            ));
        }
        ApplyOutcome::Cancelled => eprintln!(
            "{what} of fleet {} interrupted: revision {rev} recorded as cancelled; run apply again to converge",
            r.fleet
        ),
        ApplyOutcome::RolledBack { .. } | ApplyOutcome::Failed { .. } if r.failure.is_some() => {
            let f = r.failure.as_ref().expect("checked");
            let mut msg = format!(
                "error: {what} of fleet {} failed at revision {rev}\n  instance {} (unit {}): {}\n",
                r.fleet, f.instance, f.unit, f.reason
            );
            match &r.outcome {
                ApplyOutcome::RolledBack { to } => {
                    msg.push_str("  rolled back:\n");
                    for l in &r.restored {
                        msg.push_str(&format!("    {l}\n"));
                    }
                    match to {
                        Some(t) => msg.push_str(&format!("  the fleet runs revision r{t} again\n")),
                        None => msg.push_str("  there was no earlier revision; the new instances were removed\n"),
                    }
                }
                _ => msg.push_str("  not rolled back (--no-rollback): the changed instances are left as they are\n"),
            }
            eprint!("{msg}");
        }
        ApplyOutcome::RolledBack { .. } | ApplyOutcome::Failed { .. } => {
            eprintln!("error: {what} of fleet {} failed: {:?}", r.fleet, r.outcome);
        }
    }
}

/// A plain text table with aligned columns.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut all = vec![header.iter().map(|h| (*h).to_string()).collect::<Vec<_>>()];
    all.extend(rows.iter().cloned());
    aligned(&all, "")
}

/// Rows with aligned columns (two spaces apart), each line starting with `indent`: the one
/// helper behind every table, so that columns line up whatever the cell widths.
pub(super) fn aligned(rows: &[Vec<String>], indent: &str) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            let w = c.chars().count();
            match widths.get_mut(i) {
                Some(x) => *x = (*x).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(indent);
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `s` as one shell word: as is when it has nothing the shell would split or expand, else in
/// single quotes.
pub(super) fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// How the user runs this `phoenix` from `cwd`: `phoenix` when that is what `PATH` finds
/// (`on_path`); `cargo run [--release] -p phoenix --` for a `target/debug` or `target/release`
/// build of the cargo workspace `cwd` is in (`is_workspace` says whether a directory is one);
/// otherwise the executable's path. Regression: `phoenix up` printed `phoenix status ...` to a
/// newcomer who had run `cargo run`, with no `phoenix` on the PATH.
pub(super) fn invocation(
    exe: &Path,
    on_path: Option<&Path>,
    cwd: &Path,
    is_workspace: impl Fn(&Path) -> bool,
) -> String {
    if on_path == Some(exe) {
        return "phoenix".into();
    }
    let profile = exe.parent();
    let target = profile.and_then(Path::parent);
    let workspace = target
        .filter(|t| t.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent)
        .filter(|ws| cwd.starts_with(ws) && is_workspace(ws));
    if workspace.is_some() {
        match profile.and_then(Path::file_name).and_then(|n| n.to_str()) {
            Some("release") => return "cargo run --release -p phoenix --".into(),
            Some("debug") => return "cargo run -p phoenix --".into(),
            _ => {}
        }
    }
    shell_word(&exe.display().to_string())
}

/// What `phoenix up` suggests next, as commands `phoenix` (see [`invocation`]) can run, in one
/// aligned table.
pub(super) fn up_hints(phoenix: &str, spec: &Path, state_dir: &Path) -> String {
    let sd = if state_dir == Path::new(".phoenix") {
        String::new()
    } else {
        format!(
            " --state-dir {}",
            shell_word(&state_dir.display().to_string())
        )
    };
    let spec = shell_word(&spec.display().to_string());
    let rows = [
        (
            format!("{phoenix} status {spec}{sd}"),
            "desired vs running, health",
        ),
        (
            format!("{phoenix} logs web -f{sd}"),
            "follow a service's logs",
        ),
        (
            format!("{phoenix} history {spec} --verify{sd}"),
            "revisions, every step, and a check of the audit chain",
        ),
        (
            format!("{phoenix} destroy {spec} --yes{sd}"),
            "stop everything",
        ),
    ]
    .map(|(c, what)| vec![c, what.to_string()]);
    format!("\nLook at it:\n{}", aligned(&rows, "  "))
}

/// The status table; `destroyed`: the fleet's latest applied revision removed everything.
pub(super) fn status_table(r: &StatusReport, destroyed: bool) -> String {
    let rows: Vec<Vec<String>> = r
        .instances
        .iter()
        .map(|i| {
            vec![
                i.service.clone(),
                i.instance.clone(),
                i.state.clone(),
                if i.healthy { "yes" } else { "no" }.into(),
                i.revision
                    .map(|n| format!("r{n}"))
                    .unwrap_or_else(|| "-".into()),
                i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                i.ports
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                i.site.clone(),
                if i.drift.is_empty() {
                    "-".into()
                } else {
                    format!(
                        "{}{}",
                        i.drift.join(","),
                        i.detail
                            .as_ref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    )
                },
            ]
        })
        .collect();
    let revision = r.revision.map(|n| format!("r{n}")).unwrap_or_default();
    let mut out = if destroyed {
        format!("fleet {}, destroyed at revision {revision}\n", r.fleet)
    } else {
        format!(
            "fleet {}{}\n",
            r.fleet,
            r.revision
                .map(|n| format!(", applied revision r{n}"))
                .unwrap_or_default()
        )
    };
    if !rows.is_empty() {
        out.push_str(&table(
            &[
                "SERVICE", "INSTANCE", "STATE", "HEALTHY", "REVISION", "PID", "PORTS", "SITE",
                "DRIFT",
            ],
            &rows,
        ));
    }
    out.push_str(&jobs_table(r));
    if !r.extra.is_empty() {
        out.push_str("\nextra units (not desired):\n");
        let rows: Vec<Vec<String>> = r
            .extra
            .iter()
            .map(|e| {
                vec![
                    e.unit.clone(),
                    e.state.clone(),
                    e.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    e.reason.clone(),
                ]
            })
            .collect();
        out.push_str(&table(&["UNIT", "STATE", "PID", "WHY"], &rows));
    }
    out.push_str(match (r.in_sync, destroyed) {
        (true, false) => "\nin sync: every instance runs its desired revision and is healthy\n",
        (true, true) => "\nin sync: the fleet was destroyed and nothing of it runs\n",
        (false, false) => "\ndrift found: run `phoenix apply` with the same files to repair it\n",
        (false, true) => {
            "\ndrift found: units of the destroyed fleet still run; run `phoenix destroy` with the \
             same files to stop them\n"
        }
    });
    out
}

fn outcome_text(o: &RevisionOutcome) -> String {
    match o {
        RevisionOutcome::Pending => "pending".into(),
        RevisionOutcome::Applied => "applied".into(),
        RevisionOutcome::Failed { reason } => format!("failed: {reason}"),
        RevisionOutcome::RolledBack { to } => format!("rolled back to {to}"),
    }
}

fn audit_outcome(o: &AuditOutcome) -> String {
    match o {
        AuditOutcome::Ok => "ok".into(),
        AuditOutcome::Failed { reason } => format!("failed: {reason}"),
        AuditOutcome::Skipped { reason } => format!("skipped: {reason}"),
        AuditOutcome::Cancelled { reason } => format!("cancelled: {reason}"),
    }
}

fn kind_of(r: &Revision) -> String {
    phoenix_engine::RevisionDoc::parse(&r.spec_json)
        .map(|d| match (d.kind, d.rollback_of) {
            (phoenix_engine::RevisionKind::Rollback, Some(n)) => format!("rollback to r{n}"),
            (k, _) => serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        })
        .unwrap_or_else(|| "?".into())
}

pub(super) fn history_table(revisions: &[Revision], records: &[AuditRecord]) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|r| {
            vec![
                r.number.to_string(),
                r.created_at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                r.actor.clone(),
                kind_of(r),
                outcome_text(&r.outcome),
                r.plan_hash[..r.plan_hash.len().min(12)].to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["REVISION", "CREATED", "ACTOR", "KIND", "OUTCOME", "PLAN"],
        &rows,
    ));
    if !records.is_empty() {
        out.push_str("\nsteps (audit log):\n");
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                vec![
                    r.seq.to_string(),
                    r.entry.at.strftime("%H:%M:%S%.3f").to_string(),
                    r.entry
                        .revision
                        .map(|n| format!("r{n}"))
                        .unwrap_or_else(|| "-".into()),
                    r.entry.step.clone(),
                    audit_outcome(&r.entry.outcome),
                ]
            })
            .collect();
        out.push_str(&table(&["SEQ", "AT", "REV", "STEP", "OUTCOME"], &rows));
    }
    out
}

/// The runs of one-shot jobs, by revision, for `history`.
pub(super) fn history_jobs_table(runs: &[phoenix_state::JobRunRecord]) -> String {
    if runs.is_empty() {
        return String::new();
    }
    let mut sorted: Vec<&phoenix_state::JobRunRecord> = runs.iter().collect();
    sorted.sort_by_key(|r| (r.run.revision.0, r.run.instance.clone()));
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|r| {
            vec![
                format!("r{}", r.run.revision.0),
                r.run.instance.clone(),
                r.run.outcome.as_str().to_string(),
                r.run
                    .exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.run.attempts.to_string(),
                format!("{} ms", r.run.duration_ms),
                r.run.detail.clone(),
            ]
        })
        .collect();
    format!(
        "
jobs:
{}",
        table(
            &[
                "REV", "JOB", "OUTCOME", "EXIT", "ATTEMPTS", "TOOK", "DETAIL"
            ],
            &rows
        )
    )
}

/// One job run as JSON (`history -o json`, per revision).
pub(super) fn job_run_json(r: &phoenix_state::JobRunRecord) -> serde_json::Value {
    serde_json::json!({
        "job": r.run.job, "instance": r.run.instance, "revision": r.run.revision.0,
        "outcome": r.run.outcome.as_str(), "exit_code": r.run.exit_code,
        "attempts": r.run.attempts, "duration_ms": r.run.duration_ms, "detail": r.run.detail,
        "fingerprint": r.run.fingerprint, "finished_at": r.recorded_at.to_string(),
        "output": r.run.output,
    })
}

/// The jobs part of the status table.
fn jobs_table(r: &StatusReport) -> String {
    if r.jobs.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = r
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.job.clone(),
                j.instance.clone(),
                j.state.clone(),
                j.revision
                    .map(|n| format!("r{n}"))
                    .unwrap_or_else(|| "-".into()),
                j.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                j.attempts.to_string(),
                j.next_apply.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    format!(
        "
jobs:
{}",
        table(
            &[
                "JOB",
                "INSTANCE",
                "LAST RUN",
                "REVISION",
                "EXIT",
                "ATTEMPTS",
                "NEXT APPLY RUNS IT"
            ],
            &rows
        )
    )
}

/// What `history --verify` proved, for people.
pub(super) fn chain_report(r: &ChainReport) -> String {
    let mut out = String::new();
    let head = r
        .head
        .as_ref()
        .map(|h| {
            format!(
                ", head record {} {}",
                h.seq,
                &h.hash[..h.hash.len().min(16)]
            )
        })
        .unwrap_or_default();
    if r.verified() {
        out.push_str(&format!(
            "\naudit chain of fleet {} verified: {} records, every hash and signature checks out, intact up to its anchor{head}\n",
            r.fleet,
            r.records
        ));
    } else {
        out.push_str(&format!(
            "\nAUDIT CHAIN OF FLEET {} DOES NOT VERIFY ({} records{head}):\n",
            r.fleet, r.records
        ));
        for p in &r.problems {
            out.push_str(&format!("  {p}\n"));
        }
    }
    if !r.unsigned_imported.is_empty() {
        out.push_str(&format!(
            "note: {} imported from the old audit.jsonl, unsigned (vouched for by the signed record after them)\n",
            plural_records(&r.unsigned_imported)
        ));
    }
    if !r.unanchored.is_empty() {
        out.push_str(&format!(
            "warning: {} after the anchor (unanchored: written by a command that did not finish, or appended since)\n",
            plural_records(&r.unanchored)
        ));
    }
    out
}

fn plural_records(seqs: &[u64]) -> String {
    match seqs {
        [one] => format!("record {one} is"),
        [first, .., last] if (*last - *first) as usize + 1 == seqs.len() => {
            format!("records {first}-{last} are")
        }
        many => format!(
            "records {} are",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub(super) fn history_json(
    fleet: &str,
    revisions: &[Revision],
    records: &[AuditRecord],
    verify: Option<&ChainReport>,
) -> serde_json::Value {
    let revs: Vec<serde_json::Value> = revisions
        .iter()
        .map(|r| {
            serde_json::json!({
                "revision": r.number.0,
                "created_at": r.created_at.to_string(),
                "finished_at": r.finished_at.map(|t| t.to_string()),
                "actor": r.actor,
                "kind": kind_of(r),
                "outcome": r.outcome.name(),
                "detail": outcome_text(&r.outcome),
                "plan_hash": r.plan_hash,
                "steps": records.iter().filter(|x| x.entry.revision == Some(r.number.0)).map(|x| serde_json::json!({
                    "seq": x.seq, "at": x.entry.at.to_string(), "step": x.entry.step,
                    "outcome": audit_outcome(&x.entry.outcome), "detail": x.entry.detail,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let verify = verify.map(|r| {
        serde_json::json!({
            "ok": r.verified(),
            "records": r.records,
            "head": r.head.as_ref().map(|h| serde_json::json!({"seq": h.seq, "hash": h.hash})),
            "anchor": r.anchor.as_ref().map(|h| serde_json::json!({"seq": h.seq, "hash": h.hash})),
            "unanchored": r.unanchored,
            "unsigned_imported": r.unsigned_imported,
            "problems": r.problems,
        })
    });
    serde_json::json!({ "fleet": fleet, "revisions": revs, "verify": verify })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `phoenix up` told a newcomer who ran `cargo run` to type `phoenix ...`,
    /// which is not on their PATH.
    #[test]
    fn the_suggested_command_is_one_the_user_can_run() {
        let ws = Path::new("/src/phoenix");
        let is_ws = |d: &Path| d == ws;
        let release = ws.join("target/release/phoenix");
        let debug = ws.join("target/debug/phoenix");
        let here = ws.join("examples");
        assert_eq!(
            invocation(&release, Some(&release), &here, is_ws),
            "phoenix"
        );
        assert_eq!(
            invocation(&release, None, &here, is_ws),
            "cargo run --release -p phoenix --"
        );
        assert_eq!(
            invocation(&debug, Some(Path::new("/usr/bin/phoenix")), ws, is_ws),
            "cargo run -p phoenix --"
        );
        // Outside the workspace `cargo run` would not find it: the path it is at.
        assert_eq!(
            invocation(&release, None, Path::new("/tmp"), is_ws),
            "/src/phoenix/target/release/phoenix"
        );
        assert_eq!(
            invocation(Path::new("/opt/my tools/phoenix"), None, ws, is_ws),
            "'/opt/my tools/phoenix'"
        );
    }

    /// Regression: the hints of `phoenix up` were aligned by hand and drifted apart, and did
    /// not mention `history --verify`.
    #[test]
    fn up_hints_are_aligned_and_include_verify() {
        for phoenix in ["phoenix", "cargo run --release -p phoenix --"] {
            let text = up_hints(
                phoenix,
                Path::new(".phoenix/local-demo.yaml"),
                Path::new("/tmp/state dir"),
            );
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("  ")).collect();
            assert_eq!(lines.len(), 4, "{text}");
            let columns: Vec<usize> = lines
                .iter()
                .map(|l| {
                    l.find("  desired")
                        .or(l.find("  follow"))
                        .or(l.find("  revisions"))
                        .or(l.find("  stop"))
                        .unwrap()
                })
                .collect();
            assert!(columns.windows(2).all(|w| w[0] == w[1]), "{text}");
            assert!(
                text.contains(&format!(
                    "{phoenix} history .phoenix/local-demo.yaml --verify"
                )),
                "{text}"
            );
            assert!(text.contains("--state-dir '/tmp/state dir'"), "{text}");
        }
    }
}
