//! `phoenix monitoring`: writes a Prometheus scrape configuration of every deployed instance
//! that exposes metrics (at the ports its deploy allocated) and of the ledger nodes, the alert
//! rules, and Grafana dashboards. The files are a pure function of the spec, the state store's
//! instance records and the ledger URLs (`generate`); this module only reads and writes.

// `phoenix serve` serves the same targets for Prometheus HTTP service discovery.
pub(crate) mod generate;
mod yaml;

use anyhow::Context as _;
use clap::Args;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `phoenix monitoring FILE... --out DIR`.
#[derive(Args, Debug)]
pub(crate) struct MonitoringArgs {
    /// Spec files; later files extend earlier ones.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Directory to write prometheus.yml, alerts.yml and dashboards/*.json into (created if
    /// missing; only those files are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Apply this environment overlay.
    #[arg(long)]
    env: Option<String>,
    /// State directory of the fleet (read only).
    #[arg(long, default_value = ".phoenix", env = "PHOENIX_STATE_DIR")]
    state_dir: PathBuf,
    /// PostgreSQL URL of the state store (`postgres://...`) instead of SQLite in the state dir.
    #[arg(long, env = "PHOENIX_STATE_URL")]
    state_url: Option<String>,
    /// Ledger node API URLs to scrape too (`http://127.0.0.1:8700,...`).
    #[arg(long, env = "PHOENIX_LEDGER_URL", value_delimiter = ',')]
    ledger: Vec<String>,
}

/// Runs `phoenix monitoring`.
pub(crate) fn run(args: MonitoringArgs) -> anyhow::Result<ExitCode> {
    let fleet = match phoenix_spec::load_files(&args.files, args.env.as_deref()) {
        Ok(f) => f,
        Err(d) => {
            eprint!("{}", d.render());
            return Ok(ExitCode::from(1));
        }
    };
    let ledger = args
        .ledger
        .iter()
        .filter(|u| !u.trim().is_empty())
        .map(|u| generate::ledger_node(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Reading only: a mistyped --state-dir is an error, never a new empty store.
    let store = phoenix_state::open_read_only(&args.state_dir, args.state_url.as_deref())
        .with_context(|| {
            format!(
                "opening the state store of fleet {} (--state-dir {}{})",
                fleet.name,
                args.state_dir.display(),
                if args.state_url.is_some() {
                    " or --state-url"
                } else {
                    ""
                }
            )
        })?;
    let records: Vec<_> = store
        .list_instances(&fleet.name)?
        .into_iter()
        .map(|r| r.state)
        .collect();
    let generated = generate::generate(&fleet, &records, &ledger);
    write_files(&args.out, &generated.files)?;

    for note in &generated.notes {
        eprintln!("note: {note}");
    }
    let mut summary = String::new();
    let targets: usize = generated.jobs.iter().map(|j| j.targets.len()).sum();
    summary.push_str(&format!(
        "wrote {}: {}",
        args.out.join(generate::PROMETHEUS_FILE).display(),
        phoenix_spec::text::count(targets, "target")
    ));
    if !generated.jobs.is_empty() {
        let jobs: Vec<String> = generated
            .jobs
            .iter()
            .map(|j| format!("{} {}", j.name, j.targets.len()))
            .collect();
        summary.push_str(&format!(" ({})", jobs.join(", ")));
    }
    summary.push('\n');
    summary.push_str(&format!(
        "wrote {}: {}\n",
        args.out.join(generate::ALERTS_FILE).display(),
        phoenix_spec::text::count(generated.rules, "alert rule")
    ));
    for dashboard in [generate::FLEET_DASHBOARD, generate::LEDGER_DASHBOARD] {
        summary.push_str(&format!("wrote {}\n", args.out.join(dashboard).display()));
    }
    crate::print_out(&summary)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes each file under `dir` (creating `dir` and its subdirectories), each through a
/// temporary file renamed over the old one, so that a Prometheus reloading meanwhile never
/// reads half a file. Nothing else in `dir` is touched.
fn write_files(dir: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    for (name, text) in files {
        debug_assert!(generate::FILES.contains(name), "{name} is not one of ours");
        let path = dir.join(name);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
    }
    Ok(())
}
