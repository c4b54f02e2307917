//! The `phoenix` binary: parses arguments, wires the crates together and prints. No domain
//! logic lives here.

mod audit_cmd;
mod bench_seed;
mod deploy_cmd;
mod ledger_link;
mod monitoring_cmd;
mod plan_cmd;
mod serve;
mod sites;

use clap::{Parser, Subcommand, ValueEnum};
use phoenix_spec::text::count;
use std::path::PathBuf;
use std::process::ExitCode;

/// Phoenix plans, deploys, verifies, rolls back and audits fleets across core, regional and
/// edge sites.
#[derive(Parser)]
#[command(name = "phoenix", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check fleet spec files; every problem is reported with FILE:LINE:COL.
    Validate {
        /// Spec files; later files extend earlier ones.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Apply this environment overlay before validating.
        #[arg(long)]
        env: Option<String>,
        /// Output format of the diagnostics.
        #[arg(short, long, value_enum, default_value_t = ValidateFormat::Text)]
        output: ValidateFormat,
    },
    /// Compute demand, capacity, placement, BFT safety, phases, waves and the timeline.
    Plan {
        /// Spec files; later files extend earlier ones.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = plan_cmd::PlanFormat::Table)]
        output: plan_cmd::PlanFormat,
        /// Apply this environment overlay.
        #[arg(long)]
        env: Option<String>,
        /// Exit with status 3 when the plan has error findings (for CI gates).
        #[arg(long)]
        strict: bool,
    },
    /// Print the JSON Schema of the fleet spec format, for editors.
    Schema,
    /// Make the fleet true: create, replace and remove instances wave by wave, with health
    /// gates and automatic rollback.
    Apply(deploy_cmd::ApplyArgs),
    /// Run one job (`jobs:`) now, whether or not its inputs changed.
    RunJob(deploy_cmd::RunJobArgs),
    /// Desired against observed: missing, extra, unhealthy, wrong revision.
    Status(deploy_cmd::StatusArgs),
    /// Apply an earlier revision's spec again (default: the applied revision before the
    /// current one).
    Rollback(deploy_cmd::RollbackArgs),
    /// Stop every instance of the fleet.
    Destroy(deploy_cmd::DestroyArgs),
    /// Revisions and every recorded step; `--verify` checks the audit log's hash chain.
    History(deploy_cmd::HistoryArgs),
    /// Run the bundled demo fleet on this machine and show what runs where.
    Up(deploy_cmd::UpArgs),
    /// Print (and with -f follow) the logs of a service or instance.
    Logs(deploy_cmd::LogsArgs),
    /// Write a Prometheus scrape configuration of the deployed instances and ledger nodes,
    /// alert rules and Grafana dashboards into a directory.
    Monitoring(monitoring_cmd::MonitoringArgs),
    /// The HTTP API over the state store (health, metrics, fleets, revisions, audit, monitoring
    /// targets), and its API tokens (`phoenix serve token create|list|revoke`).
    Serve(serve::ServeArgs),
    /// The fleet's signed audit chain: your operator key, other operators' keys, importing an
    /// old audit.jsonl.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// The BFT ledger: a local testnet, a validator node, signed transactions, the benchmark.
    #[command(subcommand)]
    Ledger(phoenix_ledger_node::LedgerCommand),
    /// The local provider's supervising agent (started on demand by the other commands).
    #[command(disable_help_flag = true)]
    Agent {
        /// `--state-dir DIR [--idle-exit D] [--restart-backoff D] [--lock-wait D]`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Write a fleet into a state store as if applied and observed running, starting nothing
    /// (for benchmarks of `phoenix serve` over fleets larger than this machine can run).
    #[command(hide = true)]
    BenchSeed(bench_seed::BenchSeedArgs),
    /// The ssh provider's remote end, run by phoenix over ssh on a site's hosts: one request
    /// on stdin, one reply on stdout.
    #[command(hide = true, disable_help_flag = true)]
    ProviderRemote {
        /// `--state-dir DIR`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ValidateFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files, env, output } => validate(&files, env.as_deref(), output),
        Command::Plan {
            files,
            output,
            env,
            strict,
        } => plan_cmd::run(&files, env.as_deref(), output, strict),
        Command::Apply(args) => deploy_cmd::apply(args),
        Command::RunJob(args) => deploy_cmd::run_job(args),
        Command::Status(args) => deploy_cmd::status_cmd(args),
        Command::Rollback(args) => deploy_cmd::rollback(args),
        Command::Destroy(args) => deploy_cmd::destroy(args),
        Command::History(args) => deploy_cmd::history(args),
        Command::Up(args) => deploy_cmd::up(args),
        Command::Logs(args) => deploy_cmd::logs(args),
        Command::Monitoring(args) => monitoring_cmd::run(args),
        Command::Serve(args) => serve::run(args),
        Command::BenchSeed(args) => bench_seed::run(args),
        Command::Agent { args } => return deploy_cmd::agent(args),
        Command::ProviderRemote { args } => return phoenix_provider_ssh::remote_main(args),
        Command::Ledger(cmd) => phoenix_ledger_node::run(cmd),
        Command::Audit(cmd) => audit_cmd::run(cmd),
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&phoenix_spec::schema::json_schema())
                .expect("the schema is plain JSON");
            print_out(&format!("{schema}\n")).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Writes to stdout; a closed pipe (`phoenix plan | head`) ends output quietly instead of
/// panicking.
pub(crate) fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn validate(
    files: &[PathBuf],
    env: Option<&str>,
    output: ValidateFormat,
) -> anyhow::Result<ExitCode> {
    match (phoenix_spec::load_files(files, env), output) {
        (Ok(fleet), ValidateFormat::Text) => {
            let env = fleet
                .environment
                .as_deref()
                .map(|e| format!(", environment {e}"))
                .unwrap_or_default();
            // Every overlay is validated, selected or not; say which.
            let overlays = if fleet.environments.is_empty() {
                String::new()
            } else {
                format!("; environments checked: {}", fleet.environments.join(", "))
            };
            // Jobs live among the services (`Service::job`) but are counted apart.
            let job_count = fleet.services.iter().filter(|s| s.job.is_some()).count();
            let jobs = if job_count == 0 {
                String::new()
            } else {
                format!(", {}", count(job_count, "job"))
            };
            println!(
                "{}: valid (fleet {}{env}: {}, {}, {}{jobs}{overlays})",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                fleet.name,
                count(fleet.sites.len(), "site"),
                count(fleet.projects.len(), "project"),
                count(fleet.services.len() - job_count, "service")
            );
            Ok(ExitCode::SUCCESS)
        }
        (Ok(_), ValidateFormat::Json) => {
            println!(
                "{}",
                serde_json::json!({ "valid": true, "diagnostics": [] })
            );
            Ok(ExitCode::SUCCESS)
        }
        (Err(diags), ValidateFormat::Text) => {
            eprint!("{}", diags.render());
            Ok(ExitCode::from(1))
        }
        (Err(diags), ValidateFormat::Json) => {
            let items: Vec<_> = diags
                .items
                .iter()
                .map(|d| {
                    let mut v = serde_json::to_value(d).unwrap_or_default();
                    if let (Some(loc), Some(obj)) = (&d.location, v.as_object_mut()) {
                        obj.insert("position".into(), diags.position(loc).into());
                        obj.insert(
                            "file".into(),
                            diags
                                .sources
                                .get(loc.file)
                                .map(|s| s.0.clone())
                                .unwrap_or_default()
                                .into(),
                        );
                    }
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({ "valid": false, "diagnostics": items })
            );
            eprint!("{}", diags.render());
            Ok(ExitCode::from(1))
        }
    }
}
