//! The supervising agent: one per state directory, in the foreground, serving the
//! [protocol](crate::protocol) on `DIR/agent.sock`.
//!
//! Units run as children in their own process groups, with stdout and stderr appended to their
//! log file and the working directory set to their data dir. A supervisor thread notices exits
//! (every `tick`), applies the restart policy with exponential backoff, and kills whatever is
//! left of an exited unit's process group so that a restart never runs beside leftovers.
//!
//! The unit table is written to `DIR/agent/units.json` (write to a temporary file, fsync,
//! rename) **before** acting: a unit is recorded before it is spawned and marked `stopping`
//! before it is signalled. A new agent on the same directory re-adopts units whose pid is alive
//! with the recorded start time, finds units the table lost by their environment
//! (`PHOENIX_AGENT_STATE_DIR`, `PHOENIX_FLEET`, `PHOENIX_UNIT`), kills any process it finds that
//! way that the table does not want (a duplicate or an orphan), and finishes interrupted stops.
//! Units of a dead agent are not its children, so their exit status is lost: one found dead is
//! reported `failed` and restarted as its policy says.

use crate::error::AgentError;
use crate::paths::StatePaths;
use crate::proc::{self, ENV_FLEET, ENV_STATE_DIR, ENV_UNIT};
use crate::protocol::{ErrorKind, Reply, Request};
use phoenix_provider_api::{ProviderError, RestartPolicy, UnitSpec, UnitState, UnitStatus, Vars};
use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the agent behaves; the defaults suit production, tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentOptions {
    /// Exit after having no units and no requests for this long.
    pub idle_exit: Duration,
    /// First restart delay; it doubles with each consecutive failure.
    pub restart_backoff: Duration,
    /// Longest restart delay.
    pub restart_backoff_max: Duration,
    /// A run this long resets the backoff.
    pub stable_after: Duration,
    /// How often the supervisor looks at its units.
    pub tick: Duration,
    /// How long to wait for the state directory's lock (an exiting agent may still hold it).
    pub lock_wait: Duration,
    /// How long to wait for a process group to vanish after SIGKILL.
    pub kill_wait: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            idle_exit: Duration::from_secs(30),
            restart_backoff: Duration::from_millis(200),
            restart_backoff_max: Duration::from_secs(10),
            stable_after: Duration::from_secs(10),
            tick: Duration::from_millis(50),
            lock_wait: Duration::from_secs(3),
            kill_wait: Duration::from_secs(5),
        }
    }
}

/// A unit as persisted in `units.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    spec: UnitSpec,
    ports: BTreeMap<String, u16>,
    data_dir: PathBuf,
    log: PathBuf,
    pid: Option<u32>,
    start_ticks: Option<u64>,
    restarts: u32,
    state: UnitState,
    detail: Option<String>,
    /// A stop was decided; a new agent finishes it instead of adopting the unit.
    #[serde(default)]
    stopping: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct UnitsFile {
    version: u32,
    units: Vec<Record>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The process runs (or ran until the next poll).
    Running,
    /// Exited; restart at this instant.
    Backoff(Instant),
    /// Exited; no restart.
    Down,
    /// A stop is in progress.
    Stopping,
}

#[derive(Debug)]
struct Unit {
    rec: Record,
    /// Our child, when we spawned it (`None` for adopted processes).
    child: Option<Child>,
    phase: Phase,
    /// Consecutive quick failures, for the backoff.
    failures: u32,
    run_started: Instant,
}

/// How a process ended.
enum Exit {
    Status(ExitStatus),
    /// Adopted, or wait failed: the status is unknown.
    Vanished,
}

type Key = (String, String);

struct Table {
    units: BTreeMap<Key, Unit>,
    last_activity: Instant,
}

struct Agent {
    paths: StatePaths,
    opts: AgentOptions,
    /// The state dir as written into units' environment.
    tag: String,
    table: Mutex<Table>,
    shutdown: AtomicBool,
    in_flight: AtomicUsize,
}

fn log(msg: impl std::fmt::Display) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "[{}.{:03}] phoenix agent {}: {msg}",
        t.as_secs(),
        t.subsec_millis(),
        std::process::id()
    );
}

/// Runs the agent for `state_dir` in the foreground until it has been idle (no units, no
/// requests) for `opts.idle_exit`, or a client asks it to shut down.
///
/// # Errors
/// [`AgentError::AlreadyRunning`] when another agent holds the directory, and I/O errors
/// setting up the directory, the lock or the socket.
pub fn run_agent(state_dir: &Path, opts: &AgentOptions) -> Result<(), AgentError> {
    let paths = StatePaths::new(state_dir);
    let agent_dir = paths.agent_dir();
    fs::create_dir_all(&agent_dir).map_err(|e| AgentError::io("create", &agent_dir, e))?;
    // Leave the caller's session so that its terminal going away does not take us along. This
    // fails harmlessly when we already lead a process group (started from a shell).
    let _ = rustix::process::setsid();

    let _lock = acquire_lock(&paths, opts.lock_wait)?;
    let pid_file = paths.pid_file();
    fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(|e| AgentError::io("write", &pid_file, e))?;

    let agent = Arc::new(Agent {
        tag: paths.root().display().to_string(),
        paths: paths.clone(),
        opts: opts.clone(),
        table: Mutex::new(Table {
            units: BTreeMap::new(),
            last_activity: Instant::now(),
        }),
        shutdown: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
    });
    let sock = paths.socket();
    if sock.as_os_str().len() > 100 {
        return Err(AgentError::SocketPathTooLong { path: sock });
    }
    let mut socket = BoundSocket::bind(&sock)?;
    // Adopt only once the socket exists: clients that connect meanwhile wait in the backlog for
    // a complete answer instead of finding no agent and starting another one.
    if let Err(e) = agent.adopt() {
        let _ = fs::remove_file(&sock);
        return Err(e);
    }
    log(format_args!("serving {}", sock.display()));

    let supervisor = {
        let agent = Arc::clone(&agent);
        std::thread::spawn(move || {
            while !agent.shutdown.load(Ordering::SeqCst) {
                agent.tick();
                std::thread::sleep(agent.opts.tick);
            }
        })
    };

    let mut socket_checked = Instant::now();
    while !agent.shutdown.load(Ordering::SeqCst) {
        let mut fds = [rustix::event::PollFd::new(
            &socket.listener,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
        accept_all(&agent, &socket.listener);
        if socket_checked.elapsed() >= SOCKET_CHECK {
            socket_checked = Instant::now();
            socket.ensure_present(&sock, &agent);
        }
        agent.check_idle();
    }
    // Requests already admitted finish first (a stop may be in progress).
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = fs::remove_file(&sock);
    let _ = supervisor.join();
    {
        let t = agent.lock();
        agent.save(&t);
    }
    let _ = fs::remove_file(&pid_file);
    log("exiting");
    Ok(())
}

/// How often the agent checks that its socket path still is its own socket.
const SOCKET_CHECK: Duration = Duration::from_millis(500);

/// Accepts every connection waiting on `listener`, each served on its own thread.
fn accept_all(agent: &Arc<Agent>, listener: &UnixListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let agent = Arc::clone(agent);
                std::thread::spawn(move || agent.serve(stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                log(format_args!("accept: {e}"));
                break;
            }
        }
    }
}

/// The listening socket and the identity (device, inode) of the file it is bound to, so the
/// agent can tell whether `DIR/agent.sock` is still its own.
struct BoundSocket {
    listener: UnixListener,
    id: Option<(u64, u64)>,
    /// The last re-bind failure logged, so a persisting one is logged once.
    last_problem: Option<String>,
}

impl BoundSocket {
    fn bind(sock: &Path) -> Result<Self, AgentError> {
        // We hold the directory's lock, so whatever is at the path is a leftover of a dead
        // agent (or not a socket at all): ours to replace.
        let _ = fs::remove_file(sock);
        let listener = UnixListener::bind(sock).map_err(|e| AgentError::io("bind", sock, e))?;
        fs::set_permissions(sock, fs::Permissions::from_mode(0o600))
            .map_err(|e| AgentError::io("chmod", sock, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| AgentError::io("configure", sock, e))?;
        Ok(BoundSocket {
            listener,
            id: file_id(sock),
            last_problem: None,
        })
    }

    /// Re-creates the socket when its path no longer names the socket we listen on (someone
    /// deleted or replaced `agent.sock`). Without this the agent keeps running, units and
    /// all, while every client finds no socket, starts a second agent that cannot take the
    /// lock, and gives up: the fleet was stranded. Units are untouched by a re-bind.
    fn ensure_present(&mut self, sock: &Path, agent: &Arc<Agent>) {
        if self.id.is_some() && file_id(sock) == self.id {
            return;
        }
        // Serve whoever still reached the old socket before it goes.
        accept_all(agent, &self.listener);
        match BoundSocket::bind(sock) {
            Ok(fresh) => {
                log(format_args!(
                    "socket {} was removed or replaced; re-created it (units are unaffected)",
                    sock.display()
                ));
                *self = fresh;
            }
            Err(e) => {
                let problem = e.to_string();
                if self.last_problem.as_deref() != Some(problem.as_str()) {
                    log(format_args!(
                        "socket {} is gone and cannot be re-created ({problem}); retrying",
                        sock.display()
                    ));
                    self.last_problem = Some(problem);
                }
            }
        }
    }
}

/// The (device, inode) of the file at `path` if it is a socket.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = fs::symlink_metadata(path).ok()?;
    m.file_type().is_socket().then(|| (m.dev(), m.ino()))
}

fn acquire_lock(paths: &StatePaths, wait: Duration) -> Result<File, AgentError> {
    let path = paths.lock_file();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AgentError::io("open", &path, e))?;
    let deadline = Instant::now() + wait;
    loop {
        match rustix::fs::flock(
            file.as_fd(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => return Ok(file),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                if Instant::now() >= deadline {
                    let pid = fs::read_to_string(paths.pid_file())
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    return Err(AgentError::AlreadyRunning {
                        state_dir: paths.root().to_path_buf(),
                        pid,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(AgentError::io("lock", &path, e.into())),
        }
    }
}

impl Agent {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panicking handler thread must not take the whole agent down with a poisoned lock:
        // the table itself is consistent after every statement that changes it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the unit table (temporary file, fsync, rename). Failures are logged: the agent
    /// keeps supervising, and the next save tries again.
    fn save(&self, t: &Table) {
        let file = UnitsFile {
            version: 1,
            units: t.units.values().map(|u| u.rec.clone()).collect(),
        };
        let path = self.paths.units_file();
        let tmp = path.with_extension("json.tmp");
        let result = (|| -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            log(format_args!("cannot save {}: {e}", path.display()));
        }
    }

    fn load(&self) -> Result<Vec<Record>, AgentError> {
        let path = self.paths.units_file();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<UnitsFile>(&bytes)
                .map(|f| f.units)
                .map_err(|e| AgentError::CorruptState {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(AgentError::io("read", &path, e)),
        }
    }

    /// Takes over the units of a previous agent (see the module docs).
    fn adopt(&self) -> Result<(), AgentError> {
        let records = self.load()?;
        let mut tagged = proc::tagged_leaders(&self.tag);
        let mut t = self.lock();
        for mut rec in records {
            let key = (rec.spec.fleet.clone(), rec.spec.unit_id());
            let mut alive = rec.pid.is_some_and(|p| proc::is_alive(p, rec.start_ticks));
            if !alive
                && let Some(i) = tagged
                    .iter()
                    .position(|x| (&x.fleet, &x.unit) == (&key.0, &key.1))
            {
                let found = tagged.remove(i);
                rec.pid = Some(found.pid);
                rec.start_ticks = Some(found.start_ticks);
                alive = true;
            }
            if alive && let Some(pid) = rec.pid {
                tagged.retain(|x| x.pid != pid);
            }
            if rec.stopping {
                if let (true, Some(pid)) = (alive, rec.pid) {
                    log(format_args!("finishing the interrupted stop of {}", key.1));
                    let grace = rec.spec.stop_grace();
                    let _ = proc::terminate_group(pid, grace, self.opts.kill_wait, || {});
                }
                continue;
            }
            let mut unit = Unit {
                rec,
                child: None,
                phase: Phase::Running,
                failures: 0,
                run_started: Instant::now(),
            };
            if alive {
                let pid = unit.rec.pid.map_or("unknown".into(), |p| p.to_string());
                log(format_args!("adopted {} {} (pid {pid})", key.0, key.1));
                unit.rec.state = UnitState::Running;
            } else if matches!(unit.rec.state, UnitState::Running | UnitState::Stopped) {
                self.on_exit(&mut unit, &key, Exit::Vanished);
            } else {
                // It had already exited before the previous agent went away.
                unit.phase = if restarts(unit.rec.spec.restart, unit.rec.state) {
                    Phase::Backoff(Instant::now())
                } else {
                    Phase::Down
                };
            }
            t.units.insert(key, unit);
        }
        // Processes of this state dir the table does not account for: duplicates or orphans.
        for x in tagged {
            log(format_args!(
                "killing untracked unit process {} {} (pid {})",
                x.fleet, x.unit, x.pid
            ));
            let _ = proc::terminate_group(x.pid, Duration::ZERO, self.opts.kill_wait, || {});
        }
        self.save(&t);
        Ok(())
    }

    fn check_idle(&self) {
        let t = self.lock();
        if t.units.is_empty()
            && self.in_flight.load(Ordering::SeqCst) == 0
            && t.last_activity.elapsed() >= self.opts.idle_exit
        {
            log(format_args!(
                "idle for {:?} with no units",
                self.opts.idle_exit
            ));
            self.shutdown.store(true, Ordering::SeqCst);
        }
    }

    /// Counts a request in; false if the agent is shutting down.
    fn admit(&self) -> bool {
        let mut t = self.lock();
        if self.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        t.last_activity = Instant::now();
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn release(&self) {
        let mut t = self.lock();
        t.last_activity = Instant::now();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn serve(&self, stream: UnixStream) {
        let _ = stream.set_nonblocking(false);
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        let reader = BufReader::new(stream);
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if line.trim().is_empty() {
                continue;
            }
            let reply = if self.admit() {
                let reply = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => self.handle(req),
                    Err(e) => Reply::Error {
                        kind: ErrorKind::BadRequest,
                        unit: String::new(),
                        message: format!("bad request: {e}"),
                    },
                };
                self.release();
                reply
            } else {
                Reply::Error {
                    kind: ErrorKind::ShuttingDown,
                    unit: String::new(),
                    message: "the agent is shutting down".into(),
                }
            };
            let mut out = serde_json::to_vec(&reply).expect("replies serialize");
            out.push(b'\n');
            if writer.write_all(&out).is_err() {
                return;
            }
        }
    }

    fn handle(&self, req: Request) -> Reply {
        let result = match req {
            Request::Ping => Ok(Reply::Pong {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
                units: self.lock().units.len(),
            }),
            Request::Start { spec, secrets } => {
                self.start(*spec, &secrets.to_values())
                    .map(|status| Reply::Unit {
                        status: Box::new(status),
                    })
            }
            Request::Stop {
                fleet,
                unit,
                grace_ms,
            } => self
                .stop(&(fleet, unit), Some(Duration::from_millis(grace_ms)))
                .map(|()| Reply::Done),
            Request::List { fleet } => Ok(Reply::Units {
                units: self.list(fleet.as_deref()),
            }),
            Request::Shutdown { stop_units } => {
                let mut result = Ok(Reply::Done);
                if stop_units {
                    let keys: Vec<Key> = self.lock().units.keys().cloned().collect();
                    for k in keys {
                        if let Err(e) = self.stop(&k, None) {
                            result = Err(e);
                        }
                    }
                }
                log("shutdown requested");
                self.shutdown.store(true, Ordering::SeqCst);
                result
            }
        };
        result.unwrap_or_else(|e| Reply::from_error(&e))
    }

    fn status(&self, u: &Unit) -> UnitStatus {
        record_status(&u.rec)
    }

    fn list(&self, fleet: Option<&str>) -> Vec<UnitStatus> {
        let mut t = self.lock();
        if self.poll(&mut t) {
            self.save(&t);
        }
        t.units
            .iter()
            .filter(|((f, _), _)| fleet.is_none_or(|want| want == f))
            .map(|(_, u)| self.status(u))
            .collect()
    }

    fn start(
        &self,
        spec: UnitSpec,
        secrets: &phoenix_provider_api::secret::SecretValues,
    ) -> Result<UnitStatus, ProviderError> {
        spec.validate()?;
        // A unit that uses a secret must be given it; its file is written before the spawn
        // (and before the unit table names the unit), so every spawn finds it.
        let secrets = secrets.for_spec(&spec)?;
        let key = (spec.fleet.clone(), spec.unit_id());
        let mut t = self.lock();
        if self.poll(&mut t) {
            self.save(&t);
        }
        if let Some(u) = t.units.get_mut(&key) {
            match u.phase {
                Phase::Stopping => {
                    return Err(ProviderError::Busy {
                        unit: key.1,
                        reason: "being stopped".into(),
                    });
                }
                Phase::Running => return Ok(self.status(u)),
                Phase::Backoff(_) | Phase::Down => {
                    // Asked to run again: now, with the same ports.
                    if spec.ports == u.rec.spec.ports {
                        u.rec.spec = spec;
                    }
                    phoenix_provider_api::secret::write_files(&u.rec.data_dir, &secrets)?;
                    let result = self.spawn(u, &key);
                    let status = self.status(u);
                    self.save(&t);
                    return result.map(|()| status);
                }
            }
        }
        let used: BTreeSet<u16> = t
            .units
            .values()
            .flat_map(|u| u.rec.ports.values().copied())
            .collect();
        let ports = allocate_ports(&spec.ports, &used).map_err(|e| ProviderError::Spawn {
            unit: key.1.clone(),
            reason: format!("cannot allocate ports: {e}"),
        })?;
        let data_dir = self.paths.data_dir(&spec.fleet, &spec.instance);
        fs::create_dir_all(&data_dir)
            .map_err(|e| ProviderError::io("create data dir", &data_dir, e))?;
        phoenix_provider_api::secret::write_files(&data_dir, &secrets)?;
        let logs = self.paths.logs_dir(&spec.fleet);
        fs::create_dir_all(&logs).map_err(|e| ProviderError::io("create log dir", &logs, e))?;
        let rec = Record {
            log: self.paths.log_file(&spec.fleet, &key.1),
            spec,
            ports,
            data_dir,
            pid: None,
            start_ticks: None,
            restarts: 0,
            state: UnitState::Stopped,
            detail: None,
            stopping: false,
        };
        // Write the intent first: a crash after the spawn below still leaves the unit known.
        let unit = Unit {
            rec,
            child: None,
            phase: Phase::Down,
            failures: 0,
            run_started: Instant::now(),
        };
        t.units.insert(key.clone(), unit);
        self.save(&t);
        let u = t.units.get_mut(&key).expect("just inserted");
        match self.spawn(u, &key) {
            Ok(()) => {
                let status = self.status(u);
                self.save(&t);
                Ok(status)
            }
            Err(e) => {
                t.units.remove(&key);
                self.save(&t);
                Err(e)
            }
        }
    }

    /// Starts the unit's process; on success the unit is `Running`.
    fn spawn(&self, u: &mut Unit, key: &Key) -> Result<(), ProviderError> {
        let spec = &u.rec.spec;
        let vars = Vars::for_spec(spec, &u.rec.data_dir, &u.rec.ports);
        let argv = spec
            .command
            .iter()
            .map(|a| vars.apply(a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut env = Vec::new();
        for (k, v) in &spec.env {
            env.push((k.clone(), vars.apply(v)?));
        }
        let spawn_err = |reason: String| ProviderError::Spawn {
            unit: key.1.clone(),
            reason,
        };
        let mut logf = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&u.rec.log)
            .map_err(|e| ProviderError::io("open log", &u.rec.log, e))?;
        let _ = writeln!(logf, "--- phoenix agent: starting {} {:?} ---", key.1, argv);
        let err_log = logf
            .try_clone()
            .map_err(|e| ProviderError::io("open log", &u.rec.log, e))?;
        let mut cmd = Command::new(&argv[0]);
        if let Some(name) = &spec.user {
            let user = run_as(name, &u.rec.data_dir).map_err(spawn_err)?;
            // The process of another user gets that user's own view of home and name.
            cmd.uid(user.uid)
                .gid(user.gid)
                .env("HOME", &user.home)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        }
        cmd.args(&argv[1..])
            .envs(env)
            .env(ENV_STATE_DIR, &self.tag)
            .env(ENV_FLEET, &key.0)
            .env(ENV_UNIT, &key.1)
            .env("PHOENIX_INSTANCE", &spec.instance)
            .env("PHOENIX_SERVICE", &spec.service)
            .env("PHOENIX_DATA_DIR", &u.rec.data_dir)
            .current_dir(&u.rec.data_dir)
            .stdin(Stdio::null())
            .stdout(logf)
            .stderr(err_log)
            .process_group(0);
        let child = cmd.spawn().map_err(|e| {
            u.rec.state = UnitState::Failed;
            u.rec.detail = Some(format!("cannot start `{}`: {e}", argv[0]));
            spawn_err(format!("`{}`: {e}", argv[0]))
        })?;
        let pid = child.id();
        u.rec.pid = Some(pid);
        u.rec.start_ticks = proc::stat(pid).map(|s| s.start_ticks);
        u.rec.state = UnitState::Running;
        u.child = Some(child);
        u.phase = Phase::Running;
        u.run_started = Instant::now();
        Ok(())
    }

    /// Looks for exits and due restarts; true if anything changed.
    fn poll(&self, t: &mut Table) -> bool {
        let mut changed = false;
        let now = Instant::now();
        for (key, u) in t.units.iter_mut() {
            match u.phase {
                Phase::Running => {
                    let exit = match u.child.as_mut() {
                        Some(c) => match c.try_wait() {
                            Ok(Some(status)) => Some(Exit::Status(status)),
                            Ok(None) => None,
                            Err(_) => Some(Exit::Vanished),
                        },
                        None => match u.rec.pid {
                            Some(pid) if proc::is_alive(pid, u.rec.start_ticks) => None,
                            _ => Some(Exit::Vanished),
                        },
                    };
                    if let Some(exit) = exit {
                        self.on_exit(u, key, exit);
                        changed = true;
                    }
                }
                Phase::Backoff(at) if now >= at => {
                    u.rec.restarts += 1;
                    if let Err(e) = self.spawn(u, key) {
                        log(format_args!("restart of {} {} failed: {e}", key.0, key.1));
                        self.schedule_restart(u);
                    }
                    changed = true;
                }
                _ => {}
            }
        }
        changed
    }

    fn tick(&self) {
        let mut t = self.lock();
        if self.poll(&mut t) {
            self.save(&t);
        }
    }

    fn schedule_restart(&self, u: &mut Unit) {
        if u.run_started.elapsed() >= self.opts.stable_after {
            u.failures = 0;
        }
        u.failures = u.failures.saturating_add(1);
        let factor = 1u32 << (u.failures - 1).min(16);
        let delay = self
            .opts
            .restart_backoff
            .saturating_mul(factor)
            .min(self.opts.restart_backoff_max);
        u.phase = Phase::Backoff(Instant::now() + delay);
    }

    /// Records how the process ended, kills what is left of its group, and schedules a restart
    /// if the policy says so.
    fn on_exit(&self, u: &mut Unit, key: &Key, exit: Exit) {
        if let Some(pid) = u.rec.pid {
            // Leftover members of the group would run beside the restarted process.
            proc::signal_group(pid, Signal::KILL);
        }
        u.child = None;
        let (state, detail) = match exit {
            Exit::Status(s) => match (s.code(), s.signal()) {
                (Some(code), _) => (UnitState::Exited(code), format!("exited with code {code}")),
                (_, Some(sig)) => (UnitState::Failed, format!("killed by signal {sig}")),
                _ => (UnitState::Failed, format!("ended: {s}")),
            },
            Exit::Vanished => (
                UnitState::Failed,
                "process vanished (exit status unknown)".to_string(),
            ),
        };
        u.rec.state = state;
        u.rec.pid = None;
        u.rec.start_ticks = None;
        let restart = restarts(u.rec.spec.restart, state);
        if restart {
            self.schedule_restart(u);
        } else {
            u.phase = Phase::Down;
        }
        let what = if restart {
            "restarting"
        } else {
            "not restarting"
        };
        log(format_args!("{} {}: {detail}; {what}", key.0, key.1));
        if let Ok(mut f) = OpenOptions::new().append(true).open(&u.rec.log) {
            let _ = writeln!(f, "--- phoenix agent: {} {detail}; {what} ---", key.1);
        }
        u.rec.detail = Some(detail);
    }

    /// Stops one unit with `grace` (or its spec's grace); unknown units are fine.
    fn stop(&self, key: &Key, grace: Option<Duration>) -> Result<(), ProviderError> {
        let (pid, child, grace) = {
            let mut t = self.lock();
            let Some(u) = t.units.get_mut(key) else {
                return Ok(());
            };
            if u.phase == Phase::Stopping {
                drop(t);
                return self.wait_gone(key);
            }
            let grace = grace.unwrap_or(u.rec.spec.stop_grace());
            let pid = u.rec.pid.filter(|_| u.phase == Phase::Running);
            u.phase = Phase::Stopping;
            u.rec.stopping = true;
            u.rec.state = UnitState::Stopped;
            let child = u.child.take();
            // Write the intent before signalling: a new agent finishes the stop.
            self.save(&t);
            (pid, child, grace)
        };
        let mut child = child;
        if let Some(pid) = pid {
            let result = proc::terminate_group(pid, grace, self.opts.kill_wait, || {
                if let Some(c) = child.as_mut() {
                    let _ = c.try_wait();
                }
            });
            if let Err(reason) = result {
                log(format_args!("cannot stop {} {}: {reason}", key.0, key.1));
                let mut t = self.lock();
                if let Some(u) = t.units.get_mut(key) {
                    // Keep watching it; a later stop tries again.
                    u.phase = Phase::Running;
                    u.rec.stopping = false;
                    u.rec.state = UnitState::Running;
                    u.child = child;
                    self.save(&t);
                }
                return Err(ProviderError::Stop {
                    unit: key.1.clone(),
                    reason,
                });
            }
        }
        if let Some(mut c) = child {
            let _ = c.wait();
        }
        let mut t = self.lock();
        if let Some(u) = t.units.remove(key)
            && let Ok(mut f) = OpenOptions::new().append(true).open(&u.rec.log)
        {
            let _ = writeln!(f, "--- phoenix agent: {} stopped ---", key.1);
        }
        t.last_activity = Instant::now();
        self.save(&t);
        log(format_args!("stopped {} {}", key.0, key.1));
        Ok(())
    }

    /// Waits for a concurrent stop of `key` to finish.
    fn wait_gone(&self, key: &Key) -> Result<(), ProviderError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if !self.lock().units.contains_key(key) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(ProviderError::Busy {
            unit: key.1.clone(),
            reason: "still being stopped".into(),
        })
    }
}

/// The status of a unit as its record says.
fn record_status(rec: &Record) -> UnitStatus {
    let spec = &rec.spec;
    UnitStatus {
        unit_id: spec.unit_id(),
        fleet: spec.fleet.clone(),
        service: spec.service.clone(),
        instance: spec.instance.clone(),
        revision: spec.revision,
        site: spec.site.clone(),
        state: rec.state,
        pid: rec.pid.filter(|_| rec.state == UnitState::Running),
        handle: None,
        ports: rec.ports.clone(),
        data_dir: rec.data_dir.clone(),
        restarts: rec.restarts,
        logs: vec![rec.log.clone()],
        detail: rec.detail.clone(),
    }
}

/// The units of `fleet` that the unit table of `paths` records, as they are when no agent
/// runs: a recorded process that is still alive (same pid and start time) is `running`, one
/// that is not is `failed`; a unit whose stop was under way is left out. For clients that must
/// not start an agent (reading commands); only an agent would restart or adopt anything.
///
/// # Errors
/// [`AgentError::CorruptState`] or [`AgentError::Io`] for an unreadable table.
pub(crate) fn recorded_units(
    paths: &StatePaths,
    fleet: &str,
) -> Result<Vec<UnitStatus>, AgentError> {
    let path = paths.units_file();
    let records = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<UnitsFile>(&bytes)
            .map(|f| f.units)
            .map_err(|e| AgentError::CorruptState {
                path,
                reason: e.to_string(),
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(AgentError::io("read", &path, e)),
    };
    let unsupervised = "no agent supervises it (the next apply, rollback or destroy starts one)";
    let mut out: Vec<UnitStatus> = records
        .into_iter()
        .filter(|r| r.spec.fleet == fleet && !r.stopping)
        .map(|mut rec| {
            let alive = rec.pid.is_some_and(|p| proc::is_alive(p, rec.start_ticks));
            if alive {
                rec.state = UnitState::Running;
                rec.detail = Some(unsupervised.into());
            } else if rec.state == UnitState::Running {
                rec.state = UnitState::Failed;
                rec.detail = Some(format!("not running, and {unsupervised}"));
            }
            record_status(&rec)
        })
        .collect();
    out.sort_by(|a, b| a.unit_id.cmp(&b.unit_id));
    Ok(out)
}

/// Whether a process that ended in `state` is restarted under `policy`.
fn restarts(policy: RestartPolicy, state: UnitState) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => state != UnitState::Exited(0),
        RestartPolicy::Never => false,
    }
}

/// One free loopback port per name, none of them in `used`.
fn allocate_ports(
    names: &[String],
    used: &BTreeSet<u16>,
) -> std::io::Result<BTreeMap<String, u16>> {
    let mut taken = used.clone();
    let mut out = BTreeMap::new();
    for name in names {
        let mut tries = 0;
        let port = loop {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
            let p = l.local_addr()?.port();
            if taken.insert(p) {
                break p;
            }
            tries += 1;
            if tries > 100 {
                return Err(std::io::Error::other("no free port found"));
            }
        };
        out.insert(name.clone(), port);
    }
    Ok(out)
}

/// The user a unit runs as, once its data dir is theirs. Std's `CommandExt::uid`/`gid` then
/// switch to it in the child (dropping the agent's supplementary groups), so no unsafe code is
/// needed.
///
/// # Errors
/// A user this host does not have, an agent that is neither root nor that user, or a data dir
/// that cannot be given to it; each message says which.
fn run_as(name: &str, data_dir: &Path) -> Result<crate::users::User, String> {
    let user = crate::users::lookup_user(name)
        .map_err(|e| format!("cannot look up user `{name}`: {e}"))?
        .ok_or_else(|| format!("user `{name}` does not exist on this host"))?;
    let me = rustix::process::geteuid().as_raw();
    if me != 0 && me != user.uid {
        return Err(format!(
            "cannot run as user `{name}`: the agent runs as uid {me}, which is neither root nor `{name}`"
        ));
    }
    if let Some(dir) = crate::users::unreachable_ancestor(data_dir, &user) {
        return Err(format!(
            "user `{name}` cannot reach its data dir {}: {} does not let others search it (e.g. `chmod o+x {}`)",
            data_dir.display(),
            dir.display(),
            dir.display()
        ));
    }
    if me == 0 {
        crate::users::chown_tree(data_dir, &user).map_err(|e| {
            format!(
                "cannot give data dir {} to user `{name}`: {e}",
                data_dir.display()
            )
        })?;
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_decisions() {
        use RestartPolicy::*;
        assert!(restarts(Always, UnitState::Exited(0)));
        assert!(restarts(OnFailure, UnitState::Exited(1)));
        assert!(restarts(OnFailure, UnitState::Failed));
        assert!(!restarts(OnFailure, UnitState::Exited(0)));
        assert!(!restarts(Never, UnitState::Failed));
    }

    #[test]
    fn ports_are_distinct_and_avoid_used_ones() {
        let names: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
        let first = allocate_ports(&names, &BTreeSet::new()).unwrap();
        let used: BTreeSet<u16> = first.values().copied().collect();
        assert_eq!(used.len(), 20);
        let second = allocate_ports(&names, &used).unwrap();
        assert!(second.values().all(|p| !used.contains(p)));
    }
}
