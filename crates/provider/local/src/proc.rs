//! What `/proc` and kill(2) tell about processes: liveness with identity (pid plus start time,
//! so a reused pid is never mistaken for our process), process groups, and the processes a
//! given agent started (found by their environment).

use rustix::process::{Pid, Signal};
use std::time::{Duration, Instant};

/// Environment variable naming the state directory of the agent that started a unit.
pub(crate) const ENV_STATE_DIR: &str = "PHOENIX_AGENT_STATE_DIR";
/// Environment variable naming a unit's fleet.
pub(crate) const ENV_FLEET: &str = "PHOENIX_FLEET";
/// Environment variable naming a unit's id.
pub(crate) const ENV_UNIT: &str = "PHOENIX_UNIT";

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `R`, `S`, `D`, `Z`, ...
    pub(crate) state: char,
    /// Process group.
    pub(crate) pgrp: i32,
    /// Start time in clock ticks after boot: with the pid, a process's identity.
    pub(crate) start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`; `None` if there is no such process.
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may contain anything, even `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is a live (not zombie) process, and the same one that had `start_ticks`.
pub(crate) fn is_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    stat(pid).is_some_and(|s| {
        !matches!(s.state, 'Z' | 'X' | 'x') && start_ticks.is_none_or(|t| t == s.start_ticks)
    })
}

fn pid(raw: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(raw).ok()?)
}

/// Sends `sig` to process group `pgid`; false if there is no such group.
pub(crate) fn signal_group(pgid: u32, sig: Signal) -> bool {
    pid(pgid).is_some_and(|p| rustix::process::kill_process_group(p, sig).is_ok())
}

/// Whether process group `pgid` has a live (not zombie) member.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Some(p) = pid(pgid) else { return false };
    if rustix::process::test_kill_process_group(p).is_err() {
        return false;
    }
    // kill(2) also counts zombies; look for a live member.
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .any(|s| s.pgrp == pgid as i32 && !matches!(s.state, 'Z' | 'X' | 'x'))
}

/// Sends SIGTERM to group `pgid`, waits up to `grace` for it to be gone, then SIGKILL and up to
/// `kill_wait` more. `reap` is called while waiting (to collect our own child's exit status so
/// it does not linger as a zombie).
///
/// # Errors
/// When a member is still alive after SIGKILL and `kill_wait`.
pub(crate) fn terminate_group(
    pgid: u32,
    grace: Duration,
    kill_wait: Duration,
    mut reap: impl FnMut(),
) -> Result<(), String> {
    signal_group(pgid, Signal::TERM);
    // A stopped process only acts on SIGTERM once continued.
    signal_group(pgid, Signal::CONT);
    let deadline = Instant::now() + grace;
    loop {
        reap();
        if !group_alive(pgid) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    signal_group(pgid, Signal::KILL);
    let deadline = Instant::now() + kill_wait;
    loop {
        reap();
        if !group_alive(pgid) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "process group {pgid} still alive {kill_wait:?} after SIGKILL"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process group leader started by an agent, found by its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tagged {
    pub(crate) pid: u32,
    pub(crate) start_ticks: u64,
    pub(crate) fleet: String,
    pub(crate) unit: String,
}

/// Every live process group leader whose environment says the agent of `state_dir` started it.
/// This finds units even when the unit table lost them (a crash between spawning and saving).
pub(crate) fn tagged_leaders(state_dir: &str) -> Vec<Tagged> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(st) = stat(pid) else { continue };
        if st.pgrp != pid as i32 || matches!(st.state, 'Z' | 'X' | 'x') {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let (mut dir_ok, mut fleet, mut unit) = (false, None, None);
        for var in env.split(|b| *b == 0) {
            let Ok(var) = std::str::from_utf8(var) else {
                continue;
            };
            match var.split_once('=') {
                Some((ENV_STATE_DIR, v)) => dir_ok = v == state_dir,
                Some((ENV_FLEET, v)) => fleet = Some(v.to_string()),
                Some((ENV_UNIT, v)) => unit = Some(v.to_string()),
                _ => {}
            }
        }
        if let (true, Some(fleet), Some(unit)) = (dir_ok, fleet, unit) {
            out.push(Tagged {
                pid,
                start_ticks: st.start_ticks,
                fleet,
                unit,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.state, s.pgrp, s.start_ticks), ('S', 1234, 987654));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn own_process_is_alive_with_its_start_time() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert!(is_alive(me, Some(s.start_ticks)));
        assert!(
            !is_alive(me, Some(s.start_ticks + 1)),
            "a different start time is another process"
        );
        assert!(!is_alive(u32::MAX - 1, None));
    }
}
