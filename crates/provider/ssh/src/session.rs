//! [`Session`]: runs commands on one host through the system's `ssh`, over one shared
//! connection (ControlMaster), each call bounded in time.

use crate::SshError;
use crate::target::Login;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long ssh waits and how long a call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `ConnectTimeout`: how long establishing the TCP connection may take (default 5 s).
    pub connect: Duration,
    /// Every call's bound, beyond what the call itself needs (a stop's grace period): the
    /// ssh client is killed after this (default 30 s).
    pub call: Duration,
    /// `ServerAliveInterval` of the shared connection; after `alive_count` unanswered
    /// keep-alives in a row the connection is given up, and every call on it fails at once
    /// (default 2 s).
    pub alive_interval: Duration,
    /// `ServerAliveCountMax` (default 3).
    pub alive_count: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            call: Duration::from_secs(30),
            alive_interval: Duration::from_secs(2),
            alive_count: 3,
        }
    }
}

/// What a call sends on the remote command's stdin.
pub(crate) enum Input<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// What this reader yields (the binary to install, hashed as it is sent).
    Reader(Box<dyn Read + Send>),
}

/// What a remote command printed, and how it ended.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

/// How long the ssh master stays up after the last call: a command's calls come in bursts,
/// and a master left by a command that could not close it (killed) goes soon.
const PERSIST: &str = "15";
/// How long a failure to connect is the answer for every call without trying again.
const RECENT_FAILURE: Duration = Duration::from_secs(1);
/// How many calls may run on one connection at once: sshd's `MaxSessions` is 10 by default.
const MAX_SESSIONS: usize = 8;

/// One host's ssh connection: a private directory for the ControlMaster socket (removed,
/// with the master stopped, when the session is dropped), and the arguments of every call.
pub(crate) struct Session {
    program: OsString,
    /// Options before `--` (ours first: for `-o`, ssh takes the first value given).
    options: Vec<OsString>,
    destination: String,
    login: String,
    timeouts: Timeouts,
    control_dir: tempfile::TempDir,
    /// Serialises starting the master, so that concurrent first calls share one connection.
    connecting: Mutex<Option<(Instant, SshError)>>,
    slots: Slots,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("login", &self.login)
            .field("control_dir", &self.control_dir.path())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session on `login` (`destination` as ssh is to be given it), with `extra` options
    /// after Phoenix's own.
    ///
    /// # Errors
    /// [`SshError::Local`] when the private directory cannot be created.
    pub(crate) fn new(
        program: OsString,
        destination: String,
        login: &Login,
        port: Option<u16>,
        identity: Option<PathBuf>,
        extra: &[OsString],
        timeouts: Timeouts,
    ) -> Result<Self, SshError> {
        let control_dir = private_dir()?;
        let secs = |d: Duration| d.as_secs().max(1).to_string();
        let mut options: Vec<OsString> = [
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "LogLevel=ERROR",
        ]
        .map(OsString::from)
        .into();
        for (k, v) in [
            ("ConnectTimeout", secs(timeouts.connect)),
            ("ServerAliveInterval", secs(timeouts.alive_interval)),
            (
                "ServerAliveCountMax",
                timeouts.alive_count.max(1).to_string(),
            ),
            ("ControlMaster", "auto".into()),
            ("ControlPersist", PERSIST.into()),
        ] {
            options.push("-o".into());
            options.push(format!("{k}={v}").into());
        }
        let mut cp = OsString::from("ControlPath=");
        cp.push(control_dir.path().join("cm"));
        options.push("-o".into());
        options.push(cp);
        if let Some(p) = port {
            options.push("-p".into());
            options.push(p.to_string().into());
        }
        if let Some(i) = identity {
            options.push("-i".into());
            options.push(i.into());
        }
        options.extend(extra.iter().cloned());
        Ok(Session {
            program,
            options,
            destination,
            login: login.to_string(),
            timeouts,
            control_dir,
            connecting: Mutex::new(None),
            slots: Slots::new(MAX_SESSIONS),
        })
    }

    /// `user@host` for messages.
    pub(crate) fn login(&self) -> &str {
        &self.login
    }

    /// The bound of a call that itself needs `extra` (a stop's grace period).
    pub(crate) fn call_timeout(&self, extra: Duration) -> Duration {
        self.timeouts.call + extra
    }

    fn socket(&self) -> PathBuf {
        self.control_dir.path().join("cm")
    }

    fn command(&self, extra_options: &[&str], remote: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(extra_options)
            .args(&self.options)
            .arg("--")
            .arg(&self.destination);
        if let Some(r) = remote {
            cmd.arg(r);
        }
        cmd
    }

    /// Runs `remote` (a command line for the login shell) with `input` on its stdin, and
    /// returns what it printed, whatever its exit status, unless ssh itself failed.
    ///
    /// # Errors
    /// [`SshError::Connect`] when ssh cannot reach or log in to the host (exit 255),
    /// [`SshError::TimedOut`] after `timeout` (the client is killed), [`SshError::NoClient`]
    /// when `ssh` cannot be run.
    pub(crate) fn run(
        &self,
        remote: &str,
        input: Input<'_>,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let _slot = self.slots.take();
        let deadline = Instant::now() + timeout;
        self.ensure_master(deadline)?;
        let mut cmd = self.command(&[], Some(remote));
        cmd.stdin(Stdio::piped());
        let input: Box<dyn Read + Send> = match input {
            Input::Bytes(bytes) => Box::new(std::io::Cursor::new(bytes.to_vec())),
            Input::Reader(r) => r,
        };
        self.classify(run_bounded(cmd, Some(input), deadline), timeout)
    }

    /// Starts the shared connection unless its socket exists (a master whose connection broke
    /// removes it; a stale one is replaced by the next call, as `ControlMaster=auto` does).
    /// Concurrent callers wait for one attempt and share its failure (so do callers within
    /// [`RECENT_FAILURE`] of it), so that a dead host costs one connect timeout, not one per
    /// call.
    fn ensure_master(&self, deadline: Instant) -> Result<(), SshError> {
        if self.socket().exists() {
            return Ok(());
        }
        let asked = Instant::now();
        let mut last = self
            .connecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.socket().exists() {
            return Ok(());
        }
        // Also a caller that comes just after a failure gets it at once: a caller's quick
        // retries (the engine retries a stop within 100 ms) then do not each wait a connect
        // timeout on a host that is down.
        if let Some((at, e)) = &*last
            && (*at >= asked || at.elapsed() < RECENT_FAILURE)
        {
            return Err(e.clone());
        }
        // `-N -f`: the master forks into the background once logged in (its stdio on
        // /dev/null), and the foreground ssh exits 0, or 255 with the reason.
        let mut cmd = self.command(&["-N", "-f", "-o", "ControlMaster=yes"], None);
        cmd.stdin(Stdio::null());
        let connect = self.timeouts.connect + Duration::from_secs(10);
        let bound = deadline.min(Instant::now() + connect);
        let result = self.classify(
            run_bounded(cmd, None, bound),
            bound.saturating_duration_since(asked),
        );
        match result {
            Ok(out) if out.status.success() => {
                *last = None;
                Ok(())
            }
            Ok(out) => {
                let e = SshError::Connect {
                    login: self.login.clone(),
                    reason: explain(&out.stderr, out.status),
                };
                *last = Some((Instant::now(), e.clone()));
                Err(e)
            }
            Err(e) => {
                *last = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    fn classify(
        &self,
        out: Result<Option<Output>, std::io::Error>,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        match out {
            Err(e) => Err(SshError::NoClient {
                program: self.program.to_string_lossy().into_owned(),
                reason: e.to_string(),
            }),
            Ok(None) => Err(SshError::TimedOut {
                login: self.login.clone(),
                after: timeout,
            }),
            Ok(Some(out)) if out.status.code() == Some(255) => Err(SshError::Connect {
                login: self.login.clone(),
                reason: explain(&out.stderr, out.status),
            }),
            Ok(Some(out)) => Ok(out),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.socket().exists() {
            let mut cmd = self.command(&["-O", "exit"], None);
            cmd.stdin(Stdio::null());
            let _ = run_bounded(cmd, None, Instant::now() + Duration::from_secs(5));
        }
        // The TempDir removes the directory.
    }
}

/// A directory only we can use, with a path short enough for a Unix socket (ssh adds about
/// 20 characters to the ControlPath while it creates the socket).
fn private_dir() -> Result<tempfile::TempDir, SshError> {
    let make = |base: &std::path::Path| {
        tempfile::Builder::new()
            .prefix("phoenix-ssh-")
            .tempdir_in(base)
    };
    let tmp = std::env::temp_dir();
    let base = if tmp.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        tmp
    };
    make(&base).map_err(|e| SshError::Local {
        step: "create the ssh control directory in",
        path: base.display().to_string(),
        cause: e.to_string(),
    })
}

/// ssh's error text, its last lines, with a hint for the failures users meet most.
fn explain(stderr: &str, status: ExitStatus) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim_end_matches('\r').trim())
        .filter(|l| !l.is_empty())
        .collect();
    let mut text = lines[lines.len().saturating_sub(4)..].join("; ");
    if text.is_empty() {
        text = format!("ssh failed ({status}) without saying why");
    }
    if text.contains("Host key verification failed") {
        text.push_str(
            " (the host's key is not in known_hosts or differs from it; Phoenix never accepts \
             an unknown key: check the key's fingerprint, then add it, e.g. by logging in once \
             with ssh)",
        );
    } else if text.contains("Permission denied") {
        text.push_str(
            " (no key was accepted; give the site an `ssh.identity` or load the key into \
             ssh-agent)",
        );
    }
    text
}

/// Runs `cmd` with stdout and stderr captured, copying `input` to its stdin (when it has a
/// piped one), until `deadline`; `Ok(None)` when it had to be killed.
fn run_bounded(
    mut cmd: Command,
    input: Option<Box<dyn Read + Send>>,
    deadline: Instant,
) -> std::io::Result<Option<Output>> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let writer = child.stdin.take().map(|mut stdin| {
        let mut input = input.unwrap_or_else(|| Box::new(std::io::empty()));
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut input, &mut stdin);
            let _ = stdin.flush();
        })
    });
    let status = wait_until(&mut child, deadline);
    if let Some(w) = writer
        && status.is_some()
    {
        let _ = w.join();
    }
    let Some(status) = status else {
        return Ok(None);
    };
    // A process that inherited the pipes (none should: the master moves its stdio to
    // /dev/null) must not keep us waiting once ssh itself has exited.
    let grace = Duration::from_secs(2);
    let stdout = stdout.recv_timeout(grace).unwrap_or_default();
    let stderr = stderr.recv_timeout(grace).unwrap_or_default();
    Ok(Some(Output {
        status,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }))
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    } else {
        let _ = tx.send(Vec::new());
    }
    rx
}

/// Waits for `child` until `deadline`, polling (a wait in another thread could not be
/// cancelled); kills and reaps it then and returns `None`.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => break,
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A counting semaphore: at most `n` calls on the connection at once.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Self {
        Slots {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake `ssh`: a shell script that ignores its options and runs `body`.
    fn fake_ssh(dir: &std::path::Path, body: &str) -> OsString {
        let path = dir.join("ssh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.into()
    }

    fn session(program: OsString, timeouts: Timeouts) -> Session {
        let login = Login {
            user: "deploy".into(),
            host: "10.9.9.9".into(),
            port: 22,
        };
        Session::new(
            program,
            "deploy@10.9.9.9".into(),
            &login,
            None,
            None,
            &[],
            timeouts,
        )
        .unwrap()
    }

    #[test]
    fn a_call_that_hangs_is_killed_at_its_deadline_naming_the_host() {
        let dir = tempfile::tempdir().unwrap();
        // The master "starts" (creates its socket), then every call hangs.
        let sock = dir.path().join("never");
        let prog = fake_ssh(
            dir.path(),
            &format!(
                "for a; do case \"$a\" in ControlPath=*) p=${{a#ControlPath=}};; esac; done\n\
                 case \" $* \" in *' -N '*) : > \"$p\"; exit 0;; *' -O '*) exit 0;; esac\n\
                 exec sleep 30 # {}",
                sock.display()
            ),
        );
        let s = session(prog, Timeouts::default());
        let t = Instant::now();
        let err = s
            .run("true", Input::Bytes(b""), Duration::from_millis(300))
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(matches!(err, SshError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("deploy@10.9.9.9"), "{err}");
        assert!(err.is_retryable());
    }

    #[test]
    fn exit_255_is_a_connection_error_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let prog = fake_ssh(
            dir.path(),
            "echo 'No ED25519 host key is known for 10.9.9.9 and you have requested strict checking.' >&2\n\
             echo 'Host key verification failed.' >&2\nexit 255",
        );
        let s = session(prog, Timeouts::default());
        let err = s
            .run("true", Input::Bytes(b""), Duration::from_secs(5))
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SshError::Connect { .. }), "{text}");
        assert!(text.starts_with("deploy@10.9.9.9: No ED25519"), "{text}");
        assert!(text.contains("never accepts an unknown key"), "{text}");
    }

    #[test]
    fn concurrent_callers_share_one_failed_connect() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let prog = fake_ssh(
            dir.path(),
            &format!(
                "echo x >> '{}'; sleep 0.3; echo 'connect to host 10.9.9.9 port 22: No route to host' >&2; exit 255",
                count.display()
            ),
        );
        let s = session(prog, Timeouts::default());
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    let e = s
                        .run("true", Input::Bytes(b""), Duration::from_secs(10))
                        .unwrap_err();
                    assert!(e.to_string().contains("No route to host"), "{e}");
                });
            }
        });
        let attempts = std::fs::read_to_string(&count).unwrap().lines().count();
        assert!(
            attempts < 4,
            "each waiting call connected again: {attempts}"
        );
    }

    #[test]
    fn options_put_phoenix_safety_first_and_extra_after() {
        let dir = tempfile::tempdir().unwrap();
        let prog = fake_ssh(dir.path(), "exit 0");
        let login = Login {
            user: "u".into(),
            host: "h".into(),
            port: 2222,
        };
        let s = Session::new(
            prog,
            "u@h".into(),
            &login,
            Some(2222),
            Some("/k".into()),
            &["-o".into(), "StrictHostKeyChecking=no".into()],
            Timeouts::default(),
        )
        .unwrap();
        let opts: Vec<String> = s
            .options
            .iter()
            .map(|o| o.to_string_lossy().into_owned())
            .collect();
        let strict = opts
            .iter()
            .position(|o| o == "StrictHostKeyChecking=yes")
            .unwrap();
        let extra = opts
            .iter()
            .position(|o| o == "StrictHostKeyChecking=no")
            .unwrap();
        assert!(strict < extra, "{opts:?}");
        for want in ["BatchMode=yes", "ConnectTimeout=5", "ControlMaster=auto"] {
            assert!(opts.iter().any(|o| o == want), "{want} missing: {opts:?}");
        }
        assert!(opts.windows(2).any(|w| w == ["-p", "2222"]), "{opts:?}");
        assert!(opts.windows(2).any(|w| w == ["-i", "/k"]), "{opts:?}");
        let dir_path = s.control_dir.path().to_path_buf();
        drop(s);
        assert!(!dir_path.exists(), "control dir left behind");
    }
}
