//! The remote end: `phoenix provider-remote --state-dir DIR`, run by the ssh provider over
//! ssh for every call. It reads one [`RemoteCall`] on stdin, carries it out through a
//! [`LocalProvider`] on that host (which starts the agent there on demand, the same agent as
//! `phoenix agent`), and writes one [`RemoteReply`] on stdout.

use crate::wire::{
    AgentState, LogChunk, PROTOCOL_VERSION, RemoteCall, RemoteReply, RemoteRequest, WireError,
};
use phoenix_provider_api::{Provider, ProviderError};
use phoenix_provider_local::LocalProvider;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The usage line of `provider-remote`.
pub const REMOTE_USAGE: &str = "usage: phoenix provider-remote --state-dir DIR \
                                (one JSON request on stdin, one JSON reply on stdout)";

/// The largest request accepted on stdin (a unit spec is a few kilobytes).
const MAX_REQUEST: u64 = 16 << 20;

/// Entry point of `provider-remote` (the arguments after the program name; a leading
/// `provider-remote` is skipped). Exits 0 once a reply, error replies included, is written;
/// 2 on bad usage; 1 when the reply cannot be written.
pub fn remote_main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let state_dir = match parse_args(args) {
        Ok(Some(dir)) => dir,
        Ok(None) => {
            println!("The ssh provider's remote end (run by phoenix over ssh).\n{REMOTE_USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("{problem}\n{REMOTE_USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut input = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_REQUEST)
        .read_to_end(&mut input);
    let (reply, payload) = match read {
        Err(e) => (
            protocol_error(format!("cannot read the request: {e}")),
            vec![],
        ),
        Ok(_) => match serde_json::from_slice::<RemoteCall>(&input) {
            Err(e) => (protocol_error(format!("unreadable request: {e}")), vec![]),
            Ok(call) if call.version != PROTOCOL_VERSION => (
                protocol_error(format!(
                    "protocol version {} asked, this binary speaks {PROTOCOL_VERSION}",
                    call.version
                )),
                vec![],
            ),
            Ok(call) => serve(&state_dir, call),
        },
    };
    let mut line = serde_json::to_vec(&reply).expect("replies serialise");
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    match out
        .write_all(&line)
        .and_then(|()| out.write_all(&payload))
        .and_then(|()| out.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phoenix provider-remote: cannot write the reply: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Option<PathBuf>, String> {
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "provider-remote") {
        args.next();
    }
    let mut dir = None;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--state-dir") => {
                dir = Some(PathBuf::from(
                    args.next().ok_or("--state-dir needs a value")?,
                ));
            }
            Some(s) if s.starts_with("--state-dir=") => {
                dir = Some(PathBuf::from(&s["--state-dir=".len()..]));
            }
            Some("-h" | "--help") => return Ok(None),
            _ => return Err(format!("unknown argument `{}`", a.to_string_lossy())),
        }
    }
    dir.map(Some)
        .ok_or_else(|| "--state-dir is required".into())
}

fn protocol_error(detail: String) -> RemoteReply {
    RemoteReply::Error {
        error: WireError::Protocol {
            provider: "ssh".into(),
            detail,
        },
    }
}

fn error(e: &ProviderError) -> RemoteReply {
    RemoteReply::Error { error: e.into() }
}

/// The local provider of `state_dir`, whose agent is this binary's `agent` subcommand.
fn local_provider(state_dir: &Path, call: &RemoteCall) -> LocalProvider {
    let mut argv = LocalProvider::default_agent_command(state_dir);
    if let Some(ms) = call.agent_idle_exit_ms {
        argv.push("--idle-exit".into());
        argv.push(format!("{ms}ms").into());
    }
    let p = LocalProvider::with_agent_command(state_dir, argv);
    if call.read_only {
        p.without_starting_agent()
    } else {
        p
    }
}

/// Carries out `call` on this host; the reply and the bytes that follow it.
pub fn serve(state_dir: &Path, call: RemoteCall) -> (RemoteReply, Vec<u8>) {
    let p = local_provider(state_dir, &call);
    let reply = match call.request {
        RemoteRequest::Start { spec, secrets } => p
            .start_with_secrets(&spec, &secrets.to_values())
            .map(|status| RemoteReply::Unit {
                status: Box::new(status),
            }),
        RemoteRequest::Stop {
            fleet,
            unit,
            grace_ms,
        } => p
            .stop(&fleet, &unit, Duration::from_millis(grace_ms))
            .map(|()| {
                exit_if_idle(&p);
                RemoteReply::Done
            }),
        RemoteRequest::List { fleet } => p.list(&fleet).map(|units| RemoteReply::Units { units }),
        RemoteRequest::Probe { unit, health } => Ok(RemoteReply::Probe {
            outcome: p.probe(&unit, &health),
        }),
        RemoteRequest::Snapshot {
            fleet,
            instance,
            paths,
            tag,
        } => p
            .snapshot(&fleet, &instance, &paths, &tag)
            .map(|snapshot| RemoteReply::Snapshot { snapshot }),
        RemoteRequest::Restore {
            fleet,
            instance,
            tag,
        } => p
            .restore(&fleet, &instance, &tag)
            .map(|snapshot| RemoteReply::Snapshot { snapshot }),
        RemoteRequest::Logs {
            fleet,
            selector,
            have,
            max_bytes,
        } => {
            return match p.log_paths(&fleet, &selector) {
                Ok(paths) => match read_logs(&paths, &have, max_bytes) {
                    Ok((files, bytes)) => (RemoteReply::Logs { files }, bytes),
                    Err(e) => (error(&e), vec![]),
                },
                Err(e) => (error(&e), vec![]),
            };
        }
        RemoteRequest::Agent => p.ping().map(|info| RemoteReply::Agent {
            agent: info.map(|i| AgentState {
                pid: i.pid,
                version: i.version,
                units: i.units,
            }),
        }),
    };
    (reply.unwrap_or_else(|e| error(&e)), vec![])
}

/// Asks the agent to exit once its last unit is stopped, so that a host keeps no process of
/// Phoenix's once nothing of it runs there (its idle exit would take its idle time). A start
/// racing with this is safe: the agent finishes the requests it admitted, refuses new ones
/// while it exits, and the caller's retry starts a new agent, which adopts whatever runs.
fn exit_if_idle(p: &LocalProvider) {
    if let Ok(Some(info)) = p.ping()
        && info.units == 0
    {
        let _ = p.shutdown_agent(false);
    }
}

/// What the caller lacks of each log file, up to `max_bytes` in all.
fn read_logs(
    paths: &[PathBuf],
    have: &std::collections::BTreeMap<String, u64>,
    max_bytes: u64,
) -> Result<(Vec<LogChunk>, Vec<u8>), ProviderError> {
    let mut budget = max_bytes;
    let mut files = Vec::new();
    let mut bytes = Vec::new();
    for path in paths {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            // Gone between listing and reading (a unit's log is only removed with its fleet).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ProviderError::io("open log", path, e)),
        };
        let size = f
            .metadata()
            .map_err(|e| ProviderError::io("read log", path, e))?
            .len();
        let had = have.get(name).copied().unwrap_or(0);
        let (offset, truncate) = if had > size { (0, true) } else { (had, false) };
        let want = (size - offset).min(budget);
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| ProviderError::io("read log", path, e))?;
        let start = bytes.len();
        f.take(want)
            .read_to_end(&mut bytes)
            .map_err(|e| ProviderError::io("read log", path, e))?;
        let len = (bytes.len() - start) as u64;
        budget -= len;
        files.push(LogChunk {
            name: name.to_owned(),
            size,
            offset,
            len,
            truncate,
        });
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn args() {
        let a = |v: &[&str]| parse_args(v.iter().map(OsString::from));
        assert_eq!(
            a(&["provider-remote", "--state-dir", "/s"]).unwrap(),
            Some(PathBuf::from("/s"))
        );
        assert_eq!(a(&["--state-dir=/s"]).unwrap(), Some(PathBuf::from("/s")));
        assert_eq!(a(&["--help"]).unwrap(), None);
        assert!(a(&[]).is_err());
        assert!(a(&["--bogus"]).is_err());
    }

    #[test]
    fn logs_send_what_the_caller_lacks_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a-0@r1.log");
        let b = dir.path().join("b-0@r1.log");
        std::fs::write(&a, b"0123456789").unwrap();
        std::fs::write(&b, b"abc").unwrap();
        let have = BTreeMap::from([("a-0@r1.log".to_string(), 4u64), ("b-0@r1.log".into(), 9)]);
        let (files, bytes) = read_logs(&[a.clone(), b.clone()], &have, 100).unwrap();
        assert_eq!(bytes, b"456789abc");
        assert_eq!(
            (files[0].offset, files[0].len, files[0].truncate),
            (4, 6, false)
        );
        // b is shorter than the caller's copy: replaced, sent whole.
        assert_eq!(
            (files[1].offset, files[1].len, files[1].truncate),
            (0, 3, true)
        );
        let (files, bytes) = read_logs(&[a, b], &BTreeMap::new(), 7).unwrap();
        assert_eq!(bytes, b"0123456");
        assert_eq!((files[0].len, files[0].size, files[1].len), (7, 10, 0));
    }
}
