//! The `local` provider: units are processes on this host, supervised by an agent that outlives
//! the CLI.
//!
//! - [`run_agent`] is the agent (`phoenix agent --state-dir DIR`): one per state directory
//!   (guarded by a lock), serving the JSON-lines [`protocol`] on `DIR/agent.sock`, spawning
//!   units in their own process groups, applying restart policies, stopping gracefully, and
//!   persisting its unit table so that a new agent re-adopts running units after a crash. It
//!   exits by itself once it has had no units for a while.
//! - [`LocalProvider`] implements [`phoenix_provider_api::Provider`] as a client of the agent
//!   and starts it on demand.
//!
//! ```no_run
//! use phoenix_provider_api::{Provider, UnitSpec};
//! use phoenix_provider_local::LocalProvider;
//! use std::time::Duration;
//!
//! let p = LocalProvider::new(std::path::Path::new(".phoenix"));
//! let web = UnitSpec::new("demo", "web", "web-0", 1)
//!     .with_command(["python3", "-m", "http.server", "${port}", "--bind", "127.0.0.1"])
//!     .with_ports(["port"]);
//! let status = p.start(&web)?;
//! println!("{} on port {}", status.unit_id, status.ports["port"]);
//! p.stop("demo", &status.unit_id, Duration::from_secs(10))?;
//! # Ok::<(), phoenix_provider_api::ProviderError>(())
//! ```
//!
//! Layout of the state directory: see [`StatePaths`].
//!
//! Architecture Invariant: only the agent creates, signals and reaps unit processes; clients
//! talk to it and read files (logs, data dirs, snapshots), never signal units themselves.

mod agent;
mod client;
mod error;
mod paths;
mod proc;
pub mod protocol;
mod users;

pub use agent::{AgentOptions, run_agent};
pub use client::{AgentInfo, LocalProvider, reap_spawned_agents};
pub use error::AgentError;
pub use paths::StatePaths;
pub use users::{User, lookup_user};

/// Whether process `pid` of this host is alive (a zombie counts as gone), from `/proc`: what the
/// engine is told to ask before it takes over the deploy lock of an apply that was killed.
pub fn process_alive(pid: u32) -> bool {
    proc::is_alive(pid, None)
}

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// What `agent ...` on the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentInvocation {
    /// Run the agent on this state directory.
    Run {
        /// The state directory.
        state_dir: PathBuf,
        /// Its options.
        options: AgentOptions,
    },
    /// `-h` / `--help`: print [`AGENT_HELP`] and exit successfully.
    Help,
}

/// The usage line of `agent`.
pub const AGENT_USAGE: &str = "usage: phoenix agent --state-dir DIR [--idle-exit DURATION] \
                               [--restart-backoff DURATION] [--lock-wait DURATION]";

/// The help text of `agent` (`phoenix agent --help`).
pub const AGENT_HELP: &str = "\
The local provider's supervising agent: runs the units of one state directory as processes on \
this host and serves DIR/agent.sock. The other phoenix commands start it on demand; it exits \
by itself when it has had no units for a while.

usage: phoenix agent --state-dir DIR [--idle-exit DURATION] [--restart-backoff DURATION] \
[--lock-wait DURATION]

options:
  --state-dir DIR              the state directory (required)
  --idle-exit DURATION         exit after having no units and no requests this long [30s]
  --restart-backoff DURATION   first restart delay, doubled per quick failure [200ms]
  --lock-wait DURATION         how long to wait for the directory's lock [3s]
  -h, --help                   print this help

DURATION is a number with ms, s, m or h (a bare number is seconds).
";

/// Parses `agent --state-dir DIR [--idle-exit DURATION] [--restart-backoff DURATION]
/// [--lock-wait DURATION]` or `agent --help` (the leading `agent` is optional; durations take
/// `ms`, `s`, `m`, `h`; see [`AgentOptions`] for their meaning).
///
/// # Errors
/// [`AgentError::Usage`] describing the problem.
pub fn parse_agent_args(
    args: impl IntoIterator<Item = OsString>,
) -> Result<AgentInvocation, AgentError> {
    let usage = AGENT_USAGE;
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "agent") {
        args.next();
    }
    let mut dir = None;
    let mut opts = AgentOptions::default();
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(OsString::from(v))),
            None => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| AgentError::Usage(format!("{flag} needs a value\n{usage}")))
        };
        match flag.as_str() {
            "--state-dir" => dir = Some(PathBuf::from(value()?)),
            "--idle-exit" => opts.idle_exit = parse_duration(&value()?.to_string_lossy())?,
            "--restart-backoff" => {
                opts.restart_backoff = parse_duration(&value()?.to_string_lossy())?;
            }
            "--lock-wait" => opts.lock_wait = parse_duration(&value()?.to_string_lossy())?,
            // Asking for help is not a usage error: it answers and exits 0.
            "-h" | "--help" => return Ok(AgentInvocation::Help),
            other => {
                return Err(AgentError::Usage(format!(
                    "unknown argument `{other}`\n{usage}"
                )));
            }
        }
    }
    let dir = dir.ok_or_else(|| AgentError::Usage(format!("--state-dir is required\n{usage}")))?;
    Ok(AgentInvocation::Run {
        state_dir: dir,
        options: opts,
    })
}

/// Parses `500ms`, `30s`, `2m`, `1h` (a bare number is seconds).
///
/// # Errors
/// [`AgentError::Usage`] for anything else.
pub fn parse_duration(s: &str) -> Result<Duration, AgentError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| AgentError::Usage(format!("bad duration `{s}`")))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| AgentError::Usage(format!("bad duration `{s}`")))
}

/// Entry point for a binary that only runs the agent: parses `args` (without the program name)
/// and runs it (or prints its help); returns the process exit code (0 after a normal exit or
/// help, 1 on error, 2 on bad usage).
pub fn agent_main(args: impl IntoIterator<Item = OsString>) -> std::process::ExitCode {
    match parse_agent_args(args) {
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::from(2)
        }
        Ok(AgentInvocation::Help) => {
            print!("{AGENT_HELP}");
            std::process::ExitCode::SUCCESS
        }
        Ok(AgentInvocation::Run { state_dir, options }) => match run_agent(&state_dir, &options) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("phoenix agent: {e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_args_and_durations() {
        let args = [
            "agent",
            "--state-dir",
            "/s",
            "--idle-exit=1500ms",
            "--restart-backoff",
            "1s",
        ];
        let AgentInvocation::Run { state_dir, options } =
            parse_agent_args(args.map(OsString::from)).unwrap()
        else {
            panic!("not a run")
        };
        assert_eq!(state_dir, PathBuf::from("/s"));
        assert_eq!(options.idle_exit, Duration::from_millis(1500));
        assert_eq!(options.restart_backoff, Duration::from_secs(1));
        assert!(parse_agent_args(["agent"].map(OsString::from)).is_err());
        assert!(parse_agent_args(["--bogus"].map(OsString::from)).is_err());
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5x").is_err());
    }

    /// Regression: `phoenix agent --help` exited 2 with the usage as an error.
    #[test]
    fn agent_help_is_an_answer_not_a_usage_error() {
        for flag in ["--help", "-h"] {
            let parsed = parse_agent_args(["agent", flag].map(OsString::from)).unwrap();
            assert_eq!(parsed, AgentInvocation::Help);
        }
        assert!(AGENT_HELP.contains("--state-dir"));
    }
}
