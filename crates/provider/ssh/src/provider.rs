//! [`SshProvider`]: the [`Provider`] of one remote host.

use crate::SshError;
use crate::install;
use crate::session::{Input, Session, Timeouts};
use crate::target::{Login, SshTarget, resolve};
use crate::wire::{
    AgentState, PROTOCOL_VERSION, RemoteCall, RemoteReply, RemoteRequest, WireError,
};
use phoenix_provider_api::{
    Health, ProbeOutcome, Provider, ProviderError, Result, Snapshot, UnitSpec, UnitStatus,
    is_safe_name, parse_unit_id, probe,
};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The environment variable that names the ssh command, as `GIT_SSH_COMMAND` does for git: a
/// program and options separated by blanks (no quoting), e.g.
/// `PHOENIX_SSH_COMMAND="ssh -F /etc/phoenix/ssh_config"`. Phoenix's own options still come
/// first, so host keys stay strictly checked.
pub const SSH_COMMAND_ENV: &str = "PHOENIX_SSH_COMMAND";

/// `program option...` of [`SSH_COMMAND_ENV`]; `None` when blank.
fn split_command(command: &str) -> Option<(String, Vec<String>)> {
    let mut words = command.split_whitespace().map(str::to_owned);
    let program = words.next()?;
    Some((program, words.collect()))
}

/// How to reach one host and what to run there. Start from [`SshConfig::new`]; the rest has
/// defaults.
#[derive(Debug, Clone)]
pub struct SshConfig {
    target: SshTarget,
    cache_root: PathBuf,
    binary: Option<PathBuf>,
    program: OsString,
    options: Vec<OsString>,
    timeouts: Timeouts,
    agent_idle_exit: Option<Duration>,
    read_only: bool,
}

impl SshConfig {
    /// `target`, with the local copies of its logs under `cache_root` (in a directory of the
    /// login's own, `cache_root/USER@HOST_PORT/`; `STATE_DIR/ssh` is a good root). The ssh
    /// command is `ssh`, or what [`SSH_COMMAND_ENV`] says when it is set: like git with
    /// `GIT_SSH_COMMAND`, every use of the provider honours it.
    pub fn new(target: SshTarget, cache_root: &Path) -> Self {
        let config = SshConfig {
            target,
            cache_root: cache_root.to_path_buf(),
            binary: None,
            program: "ssh".into(),
            options: Vec::new(),
            timeouts: Timeouts::default(),
            agent_idle_exit: None,
            read_only: false,
        };
        match std::env::var(SSH_COMMAND_ENV)
            .ok()
            .as_deref()
            .and_then(split_command)
        {
            Some((program, options)) => config.ssh_program(program).ssh_options(options),
            None => config,
        }
    }

    /// The phoenix binary to install on the host (default: this process's executable). It
    /// must have the `agent` and `provider-remote` subcommands.
    #[must_use]
    pub fn binary(mut self, path: &Path) -> Self {
        self.binary = Some(path.to_path_buf());
        self
    }

    /// The ssh client to run (default `ssh` on `PATH`).
    #[must_use]
    pub fn ssh_program(mut self, program: impl Into<OsString>) -> Self {
        self.program = program.into();
        self
    }

    /// More ssh options, after Phoenix's own (which therefore win: host keys are always
    /// checked strictly, and never asked about), e.g. `["-F", "/dev/null"]` or
    /// `["-o", "UserKnownHostsFile=/path"]`.
    #[must_use]
    pub fn ssh_options<S: Into<OsString>>(mut self, options: impl IntoIterator<Item = S>) -> Self {
        self.options.extend(options.into_iter().map(Into::into));
        self
    }

    /// Connect, call and keep-alive timeouts.
    #[must_use]
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// How long an agent started on the host waits, with no unit left, before it exits
    /// (default: the agent's own, 30 s).
    #[must_use]
    pub fn agent_idle_exit(mut self, idle: Duration) -> Self {
        self.agent_idle_exit = Some(idle);
        self
    }

    /// For commands that only read: never start an agent on the host (`list` then reports
    /// the units its table records, as the local provider's `without_starting_agent`).
    #[must_use]
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }
}

/// The ssh provider: units are processes on one remote host, under the local provider's
/// agent running there as the login user, with its state in that user's `~/.phoenix`.
/// Cheap to clone (clones share the connection); the connection is closed and its private
/// directory removed when the last clone is dropped.
///
/// # Guarantees
/// - Before the first call that needs it, the host's system is checked against this binary's
///   (`uname -sm`), and this binary is installed as `~/.phoenix/bin/phoenix` unless the copy
///   there has the same SHA-256 (an upload goes to a temporary file, is checked, and renamed
///   into place). Listing, stopping and reading logs on a host where phoenix was never
///   installed installs nothing: nothing can run there.
/// - The host key is checked against `known_hosts` strictly: an unknown or changed key is an
///   error, never accepted. ssh never prompts (`BatchMode`).
/// - Every call is bounded: `ConnectTimeout`, keep-alives on the shared connection, and a
///   deadline after which the ssh client is killed. A host that cannot be reached fails the
///   call with [`ProviderError::Unavailable`] naming `user@host`.
/// - Health checks run on the host ([`Provider::probe`] is a remote call). [`Provider::log_paths`]
///   copies the remote logs into the local cache first and returns the local copies.
#[derive(Debug, Clone)]
pub struct SshProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    login: Login,
    session: Session,
    binary: PathBuf,
    cache: PathBuf,
    agent_idle_exit: Option<Duration>,
    read_only: bool,
    /// Whether this provider has found its binary installed (and the host's system right),
    /// and the last failure to find out (shared by the callers that waited for it).
    install: Mutex<InstallState>,
    /// Serialises log fetches of this provider (other processes are kept out by a lock file).
    logs: Mutex<()>,
}

#[derive(Debug, Default)]
struct InstallState {
    ready: bool,
    failed: Option<(Instant, SshError)>,
}

/// What a call needs installed on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The binary, installed now if missing or different.
    Install,
    /// Nothing when no binary is there (nothing can run): the call then has its empty answer.
    Existing,
}

/// Most bytes of logs per call: the rest comes in the next call.
const LOG_BATCH: u64 = 32 << 20;

impl SshProvider {
    /// A provider for `config`'s host. Connects to nothing yet: the first call does. Resolves
    /// the user and port the way ssh will (`ssh -G`: the target, then the ssh config), for
    /// [`Provider::endpoint`].
    ///
    /// # Errors
    /// [`SshError::Local`] when the private directory of the connection cannot be created or
    /// the binary to install cannot be found.
    pub fn new(config: SshConfig) -> std::result::Result<Self, SshError> {
        let login = resolve(&config.target, ssh_g(&config).as_deref());
        let binary = match config.binary {
            Some(b) => b,
            None => std::env::current_exe().map_err(|e| SshError::Local {
                step: "find the phoenix binary",
                path: "the current executable".into(),
                cause: e.to_string(),
            })?,
        };
        let session = Session::new(
            config.program,
            config.target.destination(),
            &login,
            config.target.port(),
            config.target.identity().map(Path::to_path_buf),
            &config.options,
            config.timeouts,
        )?;
        let cache = config.cache_root.join(login.cache_name());
        Ok(SshProvider {
            inner: Arc::new(Inner {
                login,
                session,
                binary,
                cache,
                agent_idle_exit: config.agent_idle_exit,
                read_only: config.read_only,
                install: Mutex::new(InstallState::default()),
                logs: Mutex::new(()),
            }),
        })
    }

    /// `user@host` (and the port when it is not 22), as messages name the host.
    pub fn login(&self) -> String {
        self.inner.login.to_string()
    }

    /// Where this host's logs are copied: `<cache_root>/USER@HOST_PORT`.
    pub fn cache_dir(&self) -> &Path {
        &self.inner.cache
    }

    /// Checks the host and installs this binary there if its copy differs; what every call
    /// does first, available on its own to check a host before an apply.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] naming the host when it cannot be reached, its key is
    /// not known, or it runs another system or architecture; [`ProviderError::Protocol`]
    /// when a remote step fails.
    pub fn prepare(&self) -> Result<()> {
        self.ensure(Need::Install).map(|_| ())
    }

    /// The agent running on the host, if one does (asks it; starts none).
    ///
    /// # Errors
    /// As [`SshProvider::prepare`].
    pub fn remote_agent(&self) -> Result<Option<AgentState>> {
        if !self.ensure(Need::Existing)? {
            return Ok(None);
        }
        match self.call(RemoteRequest::Agent, Duration::ZERO)?.0 {
            RemoteReply::Agent { agent } => Ok(agent),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Whether the binary is installed (installing it for [`Need::Install`]); `false` only for
    /// [`Need::Existing`] on a host without one.
    fn ensure(&self, need: Need) -> Result<bool> {
        let asked = Instant::now();
        let mut st = self
            .inner
            .install
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if st.ready {
            return Ok(true);
        }
        // Callers that waited while another one found the host unreachable share its error
        // instead of each waiting for a timeout of its own.
        if let Some((at, e)) = &st.failed
            && *at >= asked
        {
            return Err(e.clone().into());
        }
        match self.install(need) {
            Ok(installed) => {
                st.ready = installed;
                st.failed = None;
                Ok(installed)
            }
            Err(e) => {
                st.failed = Some((Instant::now(), e.clone()));
                Err(e.into())
            }
        }
    }

    fn install(&self, need: Need) -> std::result::Result<bool, SshError> {
        let s = &self.inner.session;
        let remote_err = |step: &'static str, detail: String| SshError::Remote {
            login: s.login().to_owned(),
            step,
            detail,
        };
        let out = s.run(
            &install::check_command(),
            Input::Bytes(b""),
            s.call_timeout(Duration::ZERO),
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some((uname, installed)) = install::parse_check(&stdout) else {
            return Err(remote_err(
                "check the host",
                format!("{}: {}{}", out.status, stdout.trim(), out.stderr.trim()),
            ));
        };
        if !install::runs_here(&uname, std::env::consts::OS, std::env::consts::ARCH) {
            return Err(SshError::Arch {
                login: s.login().to_owned(),
                remote: uname,
                local: install::local_system(),
            });
        }
        let want = install::local_hash(&self.inner.binary)?;
        if installed.as_deref() == Some(want.as_str()) {
            return Ok(true);
        }
        if installed.is_none() && need == Need::Existing {
            return Ok(false);
        }
        let file = std::fs::File::open(&self.inner.binary).map_err(|e| SshError::Local {
            step: "read the phoenix binary",
            path: self.inner.binary.display().to_string(),
            cause: e.to_string(),
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        // At 10 MB/s, which any link that runs a fleet exceeds.
        let transfer = Duration::from_secs(size / 10_000_000);
        let (reader, sent) = install::Hashing::new(file);
        let out = s.run(
            &install::upload_command(),
            Input::Reader(Box::new(reader)),
            s.call_timeout(transfer),
        )?;
        let Some((n, received)) = install::parse_upload(&String::from_utf8_lossy(&out.stdout))
        else {
            return Err(remote_err(
                "upload the phoenix binary",
                format!("{}: {}", out.status, out.stderr.trim()),
            ));
        };
        let (hash, count) = {
            let st = sent.lock().unwrap_or_else(PoisonError::into_inner);
            (install::hex(st.0.clone()), st.1)
        };
        // What arrived is what was sent (ssh's MAC), so it is the binary when it is all of it
        // and what was sent is the binary that was hashed (it did not change meanwhile).
        if received != count || hash != want {
            let _ = s.run(
                &install::discard_command(n),
                Input::Bytes(b""),
                s.call_timeout(Duration::ZERO),
            );
            return Err(remote_err(
                "upload the phoenix binary",
                if received != count {
                    format!("{received} of {count} bytes arrived")
                } else {
                    format!(
                        "{} changed while it was sent (SHA-256 {hash}, not {want}); try again",
                        self.inner.binary.display()
                    )
                },
            ));
        }
        let out = s.run(
            &install::commit_command(n, &want),
            Input::Bytes(b""),
            s.call_timeout(Duration::ZERO),
        )?;
        if install::parse_commit(&String::from_utf8_lossy(&out.stdout)).as_deref()
            != Some(want.as_str())
        {
            return Err(remote_err(
                "install the phoenix binary",
                format!("{}: {}", out.status, out.stderr.trim()),
            ));
        }
        Ok(true)
    }

    /// One `provider-remote` call: the reply and the bytes after it.
    fn call(&self, request: RemoteRequest, extra: Duration) -> Result<(RemoteReply, Vec<u8>)> {
        let s = &self.inner.session;
        let call = RemoteCall {
            version: PROTOCOL_VERSION,
            agent_idle_exit_ms: self
                .inner
                .agent_idle_exit
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            read_only: self.inner.read_only,
            request,
        };
        let input = serde_json::to_vec(&call).expect("requests serialise");
        let out = s.run(
            install::REMOTE_CALL,
            Input::Bytes(&input),
            s.call_timeout(extra),
        )?;
        let Some((reply, payload)) = split_reply(&out.stdout) else {
            if out.status.code() == Some(127) {
                // The binary went away since it was checked: check (and install) again next time.
                self.inner
                    .install
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .ready = false;
            }
            return Err(SshError::Remote {
                login: s.login().to_owned(),
                step: "run phoenix provider-remote",
                detail: format!(
                    "{}: {}",
                    out.status,
                    last_lines(&out.stderr, &String::from_utf8_lossy(&out.stdout))
                ),
            }
            .into());
        };
        match reply {
            RemoteReply::Error { error } => Err(self.remote_error(error)),
            reply => Ok((reply, payload)),
        }
    }

    /// A remote provider's error, naming this host where the error's text would not.
    fn remote_error(&self, e: WireError) -> ProviderError {
        let login = self.login();
        match ProviderError::from(e) {
            ProviderError::Unavailable { provider, reason } => ProviderError::Unavailable {
                provider: "ssh".into(),
                reason: format!("{login}: {provider} provider there: {reason}"),
            },
            ProviderError::Spawn { unit, reason } => ProviderError::Spawn {
                unit,
                reason: format!("on {login}: {reason}"),
            },
            ProviderError::Stop { unit, reason } => ProviderError::Stop {
                unit,
                reason: format!("on {login}: {reason}"),
            },
            ProviderError::Protocol { detail, .. } => ProviderError::Protocol {
                provider: "ssh".into(),
                detail: format!("{login}: {detail}"),
            },
            other => other,
        }
    }

    fn unexpected(&self, reply: &RemoteReply) -> ProviderError {
        ProviderError::Protocol {
            provider: "ssh".into(),
            detail: format!("{}: unexpected reply {reply:?}", self.login()),
        }
    }

    /// The status with its log paths pointing at the local copies ([`Provider::log_paths`]
    /// fills them); every other path is the host's.
    fn localize(&self, mut status: UnitStatus) -> UnitStatus {
        let dir = self.logs_dir(&status.fleet);
        status.logs = status
            .logs
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| dir.join(n))
            .collect();
        status
    }

    fn logs_dir(&self, fleet: &str) -> PathBuf {
        self.inner.cache.join("logs").join(fleet)
    }

    /// Copies what is new in the remote log files of `selector` into the local cache; the
    /// local copies, in the remote provider's order.
    fn fetch_logs(&self, fleet: &str, selector: &str) -> Result<Vec<PathBuf>> {
        if !is_safe_name(fleet) {
            return Err(ProviderError::InvalidSpec {
                unit: fleet.into(),
                problem: format!("fleet name `{fleet}` is not [A-Za-z0-9][A-Za-z0-9._-]*"),
            });
        }
        let dir = self.logs_dir(fleet);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ProviderError::io("create log cache", &dir, e))?;
        let _here = self
            .inner
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let lock_path = dir.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ProviderError::io("open log cache lock", &lock_path, e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| ProviderError::io("lock log cache", &lock_path, e.into()))?;
        // Bounded, in case the files grow faster than they can be fetched.
        for _ in 0..64 {
            let have = cached_sizes(&dir)?;
            let request = RemoteRequest::Logs {
                fleet: fleet.into(),
                selector: selector.into(),
                have,
                max_bytes: LOG_BATCH,
            };
            let (files, payload) = match self.call(request, Duration::ZERO)? {
                (RemoteReply::Logs { files }, payload) => (files, payload),
                (other, _) => return Err(self.unexpected(&other)),
            };
            let mut at = 0usize;
            let mut complete = true;
            let mut paths = Vec::with_capacity(files.len());
            for chunk in &files {
                let valid = chunk
                    .name
                    .strip_suffix(".log")
                    .and_then(parse_unit_id)
                    .is_some_and(|(instance, _)| is_safe_name(instance));
                let len = usize::try_from(chunk.len).unwrap_or(usize::MAX);
                let Some(bytes) = payload.get(at..at.saturating_add(len)).filter(|_| valid) else {
                    return Err(ProviderError::Protocol {
                        provider: "ssh".into(),
                        detail: format!(
                            "{}: log file `{}` announced but not sent as announced",
                            self.login(),
                            chunk.name
                        ),
                    });
                };
                at += len;
                let path = dir.join(&chunk.name);
                write_chunk(&path, chunk.offset, chunk.truncate, bytes)?;
                complete &= chunk.offset + chunk.len >= chunk.size;
                paths.push(path);
            }
            if complete {
                return Ok(paths);
            }
        }
        Err(ProviderError::Protocol {
            provider: "ssh".into(),
            detail: format!(
                "{}: logs of `{selector}` grow faster than they can be copied",
                self.login()
            ),
        })
    }
}

/// Sizes of the cached log files of one fleet.
fn cached_sizes(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| ProviderError::io("read log cache", dir, e))?;
    Ok(entries
        .filter_map(std::result::Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.ends_with(".log")
                .then(|| Some((name, e.metadata().ok()?.len())))
                .flatten()
        })
        .collect())
}

/// Writes `bytes` at `offset` of the cached file (dropping what was there first when the
/// remote file was replaced).
fn write_chunk(path: &Path, offset: u64, truncate: bool, bytes: &[u8]) -> Result<()> {
    let io = |e| ProviderError::io("write log cache", path, e);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    if truncate {
        f.set_len(0).map_err(io)?;
    }
    f.set_len(offset).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    f.write_all(bytes).map_err(io)
}

/// The reply line (the first line that is one: a login script may print before it) and the
/// bytes after it.
fn split_reply(stdout: &[u8]) -> Option<(RemoteReply, Vec<u8>)> {
    let mut start = 0;
    while start < stdout.len() {
        let end = stdout[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(stdout.len(), |i| start + i);
        let line = &stdout[start..end];
        if line.starts_with(b"{\"reply\":")
            && let Ok(reply) = serde_json::from_slice::<RemoteReply>(line)
        {
            let rest = stdout.get(end + 1..).unwrap_or_default().to_vec();
            return Some((reply, rest));
        }
        start = end + 1;
    }
    None
}

fn last_lines(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("; ");
    if tail.is_empty() {
        "no output".into()
    } else {
        tail
    }
}

/// `ssh -G`'s view of the target (no connection is made), or `None` if ssh cannot say.
fn ssh_g(config: &SshConfig) -> Option<String> {
    let mut cmd = std::process::Command::new(&config.program);
    cmd.arg("-G").args(&config.options);
    if let Some(p) = config.target.port() {
        cmd.arg("-p").arg(p.to_string());
    }
    cmd.arg("--").arg(config.target.destination());
    cmd.stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Provider for SshProvider {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    /// `ssh://USER@HOST:PORT`: one agent per login and host.
    fn endpoint(&self) -> String {
        self.inner.login.endpoint()
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
        let secrets =
            phoenix_provider_local::protocol::WireSecrets::from_values(&secrets.for_spec(spec)?);
        self.ensure(Need::Install)?;
        match self
            .call(
                RemoteRequest::Start {
                    spec: Box::new(spec.clone()),
                    secrets,
                },
                Duration::ZERO,
            )?
            .0
        {
            RemoteReply::Unit { status } => Ok(self.localize(*status)),
            other => Err(self.unexpected(&other)),
        }
    }

    fn stop(&self, fleet: &str, unit_id: &str, grace: Duration) -> Result<()> {
        if !self.ensure(Need::Existing)? {
            return Ok(());
        }
        let request = RemoteRequest::Stop {
            fleet: fleet.into(),
            unit: unit_id.into(),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        };
        match self.call(request, grace)?.0 {
            RemoteReply::Done => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    fn list(&self, fleet: &str) -> Result<Vec<UnitStatus>> {
        if !self.ensure(Need::Existing)? {
            return Ok(Vec::new());
        }
        let request = RemoteRequest::List {
            fleet: fleet.into(),
        };
        match self.call(request, Duration::ZERO)?.0 {
            RemoteReply::Units { units } => {
                Ok(units.into_iter().map(|u| self.localize(u)).collect())
            }
            other => Err(self.unexpected(&other)),
        }
    }

    /// Runs the check on the host (its `127.0.0.1` is the unit's).
    fn probe(&self, unit: &UnitStatus, health: &Health) -> ProbeOutcome {
        let attempt = probe::attempt_timeout(health);
        let outcome = self.ensure(Need::Existing).and_then(|installed| {
            if !installed {
                return Ok(ProbeOutcome::unhealthy(format!(
                    "phoenix is not installed on {}",
                    self.login()
                )));
            }
            let request = RemoteRequest::Probe {
                unit: Box::new(unit.clone()),
                health: health.clone(),
            };
            match self.call(request, attempt)?.0 {
                RemoteReply::Probe { outcome } => Ok(outcome),
                other => Err(self.unexpected(&other)),
            }
        });
        outcome.unwrap_or_else(|e| ProbeOutcome::unhealthy(format!("probe not run: {e}")))
    }

    fn snapshot(
        &self,
        fleet: &str,
        instance: &str,
        paths: &[String],
        tag: &str,
    ) -> Result<Snapshot> {
        self.ensure(Need::Install)?;
        let request = RemoteRequest::Snapshot {
            fleet: fleet.into(),
            instance: instance.into(),
            paths: paths.to_vec(),
            tag: tag.into(),
        };
        // Copying a data dir takes what it takes; the bound is for a host that is gone.
        match self.call(request, Duration::from_secs(300))?.0 {
            RemoteReply::Snapshot { snapshot } => Ok(snapshot),
            other => Err(self.unexpected(&other)),
        }
    }

    fn restore(&self, fleet: &str, instance: &str, tag: &str) -> Result<Snapshot> {
        self.ensure(Need::Install)?;
        let request = RemoteRequest::Restore {
            fleet: fleet.into(),
            instance: instance.into(),
            tag: tag.into(),
        };
        match self.call(request, Duration::from_secs(300))?.0 {
            RemoteReply::Snapshot { snapshot } => Ok(snapshot),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Copies the host's log files of `selector` (what is new in them) into the local cache
    /// and returns the local copies, so that they can be read and followed like local logs.
    fn log_paths(&self, fleet: &str, selector: &str) -> Result<Vec<PathBuf>> {
        if !self.ensure(Need::Existing)? {
            return Ok(Vec::new());
        }
        self.fetch_logs(fleet, selector)
    }

    fn output_tail(&self, unit: &UnitStatus, max_bytes: usize) -> Result<String> {
        // The unit's log files are on the remote host: bring their copies here first, then
        // read the tails of this unit's own (`<unit>.log`, ...).
        let prefix = format!("{}.", unit.unit_id);
        let paths: Vec<PathBuf> = self
            .log_paths(&unit.fleet, &unit.instance)?
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .collect();
        phoenix_provider_api::logs::tail_of_files(&paths, max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_is_found_after_login_noise_and_before_its_payload() {
        let out = b"Welcome!\n{\"reply\":\"logs\",\"files\":[]}\nabc\ndef";
        let (reply, rest) = split_reply(out).unwrap();
        assert_eq!(reply, RemoteReply::Logs { files: vec![] });
        assert_eq!(rest, b"abc\ndef");
        assert!(split_reply(b"sh: 1: phoenix: not found\n").is_none());
    }

    #[test]
    fn the_ssh_command_of_the_environment_is_a_program_and_options() {
        assert_eq!(
            split_command(" ssh  -F /etc/p.conf "),
            Some(("ssh".into(), vec!["-F".into(), "/etc/p.conf".into()]))
        );
        assert_eq!(split_command("  "), None);
    }

    #[test]
    fn chunks_append_and_replace_cached_logs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w-0@r1.log");
        write_chunk(&p, 0, false, b"hello ").unwrap();
        write_chunk(&p, 6, false, b"world").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello world");
        write_chunk(&p, 0, true, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(cached_sizes(dir.path()).unwrap()["w-0@r1.log"], 3);
    }

    #[test]
    fn endpoint_and_login_name_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let target = SshTarget::parse("deploy@10.0.0.2")
            .unwrap()
            .with_port(Some(2222));
        let p = SshProvider::new(
            SshConfig::new(target, dir.path())
                .ssh_options(["-F", "/dev/null"])
                .binary(Path::new("/bin/sh")),
        )
        .unwrap();
        assert_eq!(p.endpoint(), "ssh://deploy@10.0.0.2:2222");
        assert_eq!(p.login(), "deploy@10.0.0.2 port 2222");
        assert!(p.reaches("ssh://deploy@10.0.0.2:2222"));
        assert!(!p.reaches("ssh://deploy@10.0.0.3:2222"));
        assert_eq!(p.cache_dir(), dir.path().join("deploy@10.0.0.2_2222"));
    }
}
