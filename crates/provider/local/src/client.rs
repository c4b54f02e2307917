//! [`LocalProvider`]: the [`Provider`] that talks to the agent, starting it on demand.

use crate::paths::StatePaths;
use crate::protocol::{ErrorKind, Reply, Request};
use phoenix_provider_api::{
    Provider, ProviderError, Result, Snapshot, UnitSpec, UnitStatus, backup, is_safe_name, logs,
};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Agents this process started; reaped whenever we look, so they do not linger as zombies of a
/// long-running caller (tests, a server).
static SPAWNED: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// Collects the exit status of agents this process started that have exited; returns how many
/// are still running.
pub fn reap_spawned_agents() -> usize {
    let mut v = SPAWNED.lock().unwrap_or_else(|p| p.into_inner());
    v.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    v.len()
}

/// The agent's answer to a ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// The agent's pid.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// Units in its table.
    pub units: usize,
}

/// The local provider: units are processes on this host, supervised by the agent of one state
/// directory. Cheap to create and to clone; holds no connection.
///
/// # Guarantees
/// Every call that needs the agent starts it if its socket does not answer (detached: its own
/// session, stdio to `DIR/agent/agent.log`), so a dead agent is replaced transparently and the
/// new one re-adopts the running units. Snapshots, restores and log lookups work on the files
/// directly and never need the agent.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    paths: StatePaths,
    agent_command: Vec<OsString>,
    start_timeout: Duration,
    /// Whether calls start an agent when none answers (see
    /// [`LocalProvider::without_starting_agent`]).
    start_agent: bool,
}

impl LocalProvider {
    /// A provider on `state_dir` whose agent is started as
    /// `<current executable> agent --state-dir <state_dir>` (the `phoenix` binary).
    pub fn new(state_dir: &Path) -> Self {
        let paths = StatePaths::new(state_dir);
        let agent_command = Self::default_agent_command(paths.root());
        LocalProvider {
            paths,
            agent_command,
            start_timeout: Duration::from_secs(10),
            start_agent: true,
        }
    }

    /// A provider on `state_dir` whose agent is started with `argv` (program first), for
    /// binaries other than `phoenix` and for tests.
    ///
    /// # Panics
    /// If `argv` is empty.
    pub fn with_agent_command(state_dir: &Path, argv: Vec<OsString>) -> Self {
        assert!(
            !argv.is_empty(),
            "the agent command needs at least a program"
        );
        LocalProvider {
            paths: StatePaths::new(state_dir),
            agent_command: argv,
            start_timeout: Duration::from_secs(10),
            start_agent: true,
        }
    }

    /// How long [`LocalProvider::request`] waits for an agent to answer (default 10 s).
    #[must_use]
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// A provider that never starts an agent, for commands that only read (`phoenix status`):
    /// when no agent answers, [`Provider::list`] reports the units recorded in the agent's
    /// table as they are (a live recorded process is `running`, a dead one `failed`), without
    /// restarting or adopting anything, and calls that need an agent fail with
    /// [`ProviderError::Unavailable`]. A reading command then neither spawns an agent into a
    /// state directory (perhaps a read-only copy) nor restarts units as a side effect.
    #[must_use]
    pub fn without_starting_agent(mut self) -> Self {
        self.start_agent = false;
        self
    }

    /// `[current_exe, "agent", "--state-dir", state_dir]`.
    pub fn default_agent_command(state_dir: &Path) -> Vec<OsString> {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("phoenix"));
        vec![
            exe.into(),
            "agent".into(),
            "--state-dir".into(),
            state_dir.into(),
        ]
    }

    /// The state directory (absolute).
    pub fn state_dir(&self) -> &Path {
        self.paths.root()
    }

    /// The layout of the state directory.
    pub fn paths(&self) -> &StatePaths {
        &self.paths
    }

    fn unavailable(&self, reason: String) -> ProviderError {
        ProviderError::Unavailable {
            provider: "local".into(),
            reason,
        }
    }

    /// Sends one request on a fresh connection; `Ok(None)` if no agent answers the socket.
    fn exchange(&self, req: &Request, read_timeout: Duration) -> std::io::Result<Option<Reply>> {
        let Ok(stream) = UnixStream::connect(self.paths.socket()) else {
            return Ok(None);
        };
        stream.set_read_timeout(Some(read_timeout))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
        line.push(b'\n');
        (&stream).write_all(&line)?;
        let mut reader = BufReader::new(&stream);
        let mut answer = String::new();
        if reader.read_line(&mut answer)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "agent closed the connection",
            ));
        }
        serde_json::from_str(&answer)
            .map(Some)
            .map_err(std::io::Error::other)
    }

    /// Sends `req` to a running agent without starting one; `Ok(None)` if none answers.
    ///
    /// # Errors
    /// [`ProviderError::Protocol`] for an answer that cannot be read.
    pub fn try_request(&self, req: &Request) -> Result<Option<Reply>> {
        match self.exchange(req, read_timeout(req)) {
            // An agent that dies or exits while we talk (kill -9, idle exit) resets or closes
            // the connection: that is "no agent answered", and every request is idempotent, so
            // callers may start a new agent and ask again. Regression: under load, a `list`
            // right after the agent was killed failed with "Connection reset by peer".
            Err(e) if agent_went_away(&e) => Ok(None),
            other => other,
        }
        .map_err(|e| ProviderError::Protocol {
            provider: "local".into(),
            detail: format!("{}: {e}", self.paths.socket().display()),
        })
    }

    /// Sends `req` to the agent, starting it if needed, and retrying (every request is
    /// idempotent) while an agent is exiting or being replaced.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when no agent answers within the start timeout (the
    /// message quotes the end of the agent's log).
    pub fn request(&self, req: &Request) -> Result<Reply> {
        let sock = self.paths.socket();
        if sock.as_os_str().len() > 100 {
            return Err(ProviderError::InvalidSpec {
                unit: String::new(),
                problem: format!(
                    "socket path `{}` is too long for a Unix socket; use a shorter state dir",
                    sock.display()
                ),
            });
        }
        let deadline = Instant::now() + self.start_timeout;
        let mut spawned: Option<u32> = None;
        let mut last_problem = String::from("no agent answered");
        loop {
            let mut shutting_down = false;
            match self.exchange(req, read_timeout(req)) {
                Ok(Some(Reply::Error {
                    kind: ErrorKind::ShuttingDown,
                    message,
                    ..
                })) => {
                    last_problem = message;
                    shutting_down = true;
                }
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => last_problem = format!("connection failed: {e}"),
            }
            // A live agent holds the directory (it is coming up, exiting, or re-creating a
            // socket that was deleted): wait for it rather than start a second agent, which
            // could only fail to take the lock.
            let holder = self.lock_held();
            if Instant::now() >= deadline {
                let reason = if holder && !shutting_down {
                    self.holder_not_answering()
                } else {
                    format!(
                        "{last_problem} on {} within {:?}; agent log {}:\n{}",
                        self.paths.socket().display(),
                        self.start_timeout,
                        self.paths.agent_log().display(),
                        self.agent_log_tail()
                    )
                };
                return Err(self.unavailable(reason));
            }
            if holder {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if !self.start_agent {
                return Err(self.unavailable(format!(
                    "no agent answers on {}, and this command does not start one",
                    self.paths.socket().display()
                )));
            }
            // Start an agent unless the one we started is still coming up.
            let ours_alive = spawned.is_some_and(|pid| {
                let mut v = SPAWNED.lock().unwrap_or_else(|p| p.into_inner());
                v.iter_mut()
                    .any(|c| c.id() == pid && matches!(c.try_wait(), Ok(None)))
            });
            if !ours_alive {
                reap_spawned_agents();
                spawned = Some(self.spawn_agent()?);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn spawn_agent(&self) -> Result<u32> {
        let agent_dir = self.paths.agent_dir();
        std::fs::create_dir_all(&agent_dir)
            .map_err(|e| ProviderError::io("create agent dir", &agent_dir, e))?;
        let log_path = self.paths.agent_log();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ProviderError::io("open agent log", &log_path, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| ProviderError::io("open agent log", &log_path, e))?;
        // The agent calls setsid() itself, leaving our session and process group, so that it
        // outlives us and our terminal.
        let child = Command::new(&self.agent_command[0])
            .args(&self.agent_command[1..])
            .current_dir(self.paths.root())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                self.unavailable(format!(
                    "cannot start the agent `{}`: {e}",
                    self.agent_command[0].to_string_lossy()
                ))
            })?;
        let pid = child.id();
        SPAWNED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        Ok(pid)
    }

    /// Why no agent answered although one holds the directory's lock, and what to do.
    fn holder_not_answering(&self) -> String {
        let pid: Option<u32> = std::fs::read_to_string(self.paths.pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let (who, stop) = crate::error::stop_advice(&self.paths, pid);
        format!(
            "the agent of {} ({who}) runs but did not answer on {} within {:?} (an agent \
             re-creates a deleted socket within a second, so it may be stuck); stop it with \
             {stop}: its units keep running, and the next phoenix command starts an agent that \
             re-adopts them. Agent log {}:\n{}",
            self.paths.root().display(),
            self.paths.socket().display(),
            self.start_timeout,
            self.paths.agent_log().display(),
            self.agent_log_tail()
        )
    }

    fn agent_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.paths.agent_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Pings the agent without starting it; `None` if none runs.
    ///
    /// # Errors
    /// [`ProviderError::Protocol`] for an unreadable answer.
    pub fn ping(&self) -> Result<Option<AgentInfo>> {
        match self.try_request(&Request::Ping)? {
            None => Ok(None),
            Some(Reply::Pong {
                pid,
                version,
                units,
            }) => Ok(Some(AgentInfo {
                pid,
                version,
                units,
            })),
            Some(other) => Err(self.unexpected(other)),
        }
    }

    /// Asks a running agent to exit, first stopping every unit if `stop_units`; waits (up to
    /// 10 s) until its socket is gone. `Ok(false)` if no agent was running.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] if it does not exit in time; stop errors.
    pub fn shutdown_agent(&self, stop_units: bool) -> Result<bool> {
        match self.try_request(&Request::Shutdown { stop_units })? {
            None => Ok(false),
            Some(Reply::Done) => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while self.paths.socket().exists() || self.lock_held() {
                    if Instant::now() >= deadline {
                        return Err(
                            self.unavailable("the agent did not exit after shutdown".into())
                        );
                    }
                    reap_spawned_agents();
                    std::thread::sleep(Duration::from_millis(10));
                }
                reap_spawned_agents();
                Ok(true)
            }
            Some(other) => Err(self
                .check(other)
                .err()
                .unwrap_or_else(|| self.unavailable("unexpected answer to shutdown".into()))),
        }
    }

    /// Whether some process holds the agent lock of this state dir.
    fn lock_held(&self) -> bool {
        let Ok(f) = std::fs::File::open(self.paths.lock_file()) else {
            return false;
        };
        use std::os::fd::AsFd;
        match rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => false,
            Err(_) => true,
        }
    }

    /// Asks a running agent; when none answers (or it is shutting down), starts one only if
    /// units are recorded on disk, since then something may still run. `Ok(None)`: no agent and
    /// nothing recorded, so nothing runs.
    fn request_if_anything_runs(&self, req: &Request) -> Result<Option<Reply>> {
        match self.try_request(req)? {
            Some(Reply::Error {
                kind: ErrorKind::ShuttingDown,
                ..
            })
            | None => {
                if self.has_recorded_units() {
                    self.request(req).map(Some)
                } else {
                    Ok(None)
                }
            }
            Some(reply) => Ok(Some(reply)),
        }
    }

    fn unexpected(&self, reply: Reply) -> ProviderError {
        ProviderError::Protocol {
            provider: "local".into(),
            detail: format!("unexpected reply {reply:?}"),
        }
    }

    /// Turns an error reply into its error; other replies pass through.
    fn check(&self, reply: Reply) -> Result<Reply> {
        match reply {
            Reply::Error { .. } => Err(reply
                .into_error(self.paths.root())
                .expect("an error reply converts to an error")),
            other => Ok(other),
        }
    }

    fn safe(&self, what: &str, name: &str) -> Result<()> {
        if is_safe_name(name) {
            Ok(())
        } else {
            Err(ProviderError::InvalidSpec {
                unit: name.into(),
                problem: format!("{what} name `{name}` is not [A-Za-z0-9][A-Za-z0-9._-]*"),
            })
        }
    }

    /// Whether the persisted unit table lists any unit (an agent must then run to watch it).
    fn has_recorded_units(&self) -> bool {
        let Ok(bytes) = std::fs::read(self.paths.units_file()) else {
            return false;
        };
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("units")
                    .and_then(|u| u.as_array())
                    .map(|a| !a.is_empty())
            })
            .unwrap_or(true)
    }
}

fn read_timeout(req: &Request) -> Duration {
    match req {
        Request::Stop { grace_ms, .. } => {
            Duration::from_millis(*grace_ms) + Duration::from_secs(30)
        }
        Request::Shutdown { .. } => Duration::from_secs(600),
        _ => Duration::from_secs(30),
    }
}

impl Provider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    /// `local://HOST/ABS/STATE/DIR`: one agent per state dir and host.
    fn endpoint(&self) -> String {
        let root = self.paths.root();
        let dir = std::fs::canonicalize(root)
            .or_else(|_| std::path::absolute(root))
            .unwrap_or_else(|_| root.to_owned());
        format!("local://{}{}", this_host_name(), dir.display())
    }

    fn start(&self, spec: &UnitSpec) -> Result<UnitStatus> {
        self.start_with_secrets(spec, &Default::default())
    }

    fn start_with_secrets(
        &self,
        spec: &UnitSpec,
        secrets: &phoenix_provider_api::secret::SecretValues,
    ) -> Result<UnitStatus> {
        spec.validate()?;
        // Only the values this unit uses go over the socket (the agent's, mode 0600 dir).
        let secrets = crate::protocol::WireSecrets::from_values(&secrets.for_spec(spec)?);
        match self.check(self.request(&Request::Start {
            spec: Box::new(spec.clone()),
            secrets,
        })?)? {
            Reply::Unit { status } => Ok(*status),
            other => Err(self.unexpected(other)),
        }
    }

    fn stop(&self, fleet: &str, unit_id: &str, grace: Duration) -> Result<()> {
        let req = Request::Stop {
            fleet: fleet.into(),
            unit: unit_id.into(),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        };
        // With no agent and no recorded unit there is nothing to stop.
        let Some(reply) = self.request_if_anything_runs(&req)? else {
            return Ok(());
        };
        match self.check(reply)? {
            Reply::Done => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    fn list(&self, fleet: &str) -> Result<Vec<UnitStatus>> {
        let req = Request::List {
            fleet: Some(fleet.into()),
        };
        if !self.start_agent {
            return match self.try_request(&req)? {
                None
                | Some(Reply::Error {
                    kind: ErrorKind::ShuttingDown,
                    ..
                }) => crate::agent::recorded_units(&self.paths, fleet).map_err(|e| {
                    self.unavailable(format!("no agent runs, and its unit table: {e}"))
                }),
                Some(reply) => match self.check(reply)? {
                    Reply::Units { units } => Ok(units),
                    other => Err(self.unexpected(other)),
                },
            };
        }
        // Do not start an agent just to learn that nothing runs.
        let Some(reply) = self.request_if_anything_runs(&req)? else {
            return Ok(Vec::new());
        };
        match self.check(reply)? {
            Reply::Units { units } => Ok(units),
            other => Err(self.unexpected(other)),
        }
    }

    fn snapshot(
        &self,
        fleet: &str,
        instance: &str,
        paths: &[String],
        tag: &str,
    ) -> Result<Snapshot> {
        self.safe("fleet", fleet)?;
        self.safe("instance", instance)?;
        self.safe("snapshot tag", tag)?;
        let data_dir = self.paths.data_dir(fleet, instance);
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| ProviderError::io("create data dir", &data_dir, e))?;
        let dest = self.paths.snapshot_dir(fleet, instance, tag);
        let manifest = backup::snapshot(&data_dir, instance, paths, tag, &dest)?;
        Ok(Snapshot {
            fleet: fleet.into(),
            instance: instance.into(),
            tag: tag.into(),
            paths: manifest.entries.into_iter().map(|e| e.path).collect(),
            location: dest.display().to_string(),
        })
    }

    fn restore(&self, fleet: &str, instance: &str, tag: &str) -> Result<Snapshot> {
        self.safe("fleet", fleet)?;
        self.safe("instance", instance)?;
        self.safe("snapshot tag", tag)?;
        let data_dir = self.paths.data_dir(fleet, instance);
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| ProviderError::io("create data dir", &data_dir, e))?;
        let src = self.paths.snapshot_dir(fleet, instance, tag);
        let not_found = || ProviderError::SnapshotNotFound {
            fleet: fleet.into(),
            instance: instance.into(),
            tag: tag.into(),
        };
        let manifest = backup::restore(&data_dir, &src)?.ok_or_else(not_found)?;
        Ok(Snapshot {
            fleet: fleet.into(),
            instance: instance.into(),
            tag: tag.into(),
            paths: manifest.entries.into_iter().map(|e| e.path).collect(),
            location: src.display().to_string(),
        })
    }

    fn log_paths(&self, fleet: &str, selector: &str) -> Result<Vec<PathBuf>> {
        self.safe("fleet", fleet)?;
        let dir = self.paths.logs_dir(fleet);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ProviderError::io("read log dir", &dir, e)),
        };
        let mut found: Vec<(String, u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let unit = name.strip_suffix(".log")?;
                let (instance, rev) = phoenix_provider_api::parse_unit_id(unit)?;
                logs::selector_matches(selector, instance)
                    .then(|| (instance.to_string(), rev, e.path()))
            })
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, _, p)| p).collect())
    }
}

/// Whether an I/O error means the agent at the other end is gone (rather than a protocol fault).
fn agent_went_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotFound
    )
}

/// This host's name, for [`Provider::endpoint`]; `localhost` when it cannot be read. Read from
/// /proc, which needs neither a libc call nor `unsafe`.
fn this_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
