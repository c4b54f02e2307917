//! Health probes of containers: `http`, `tcp`, `json`, `metrics` and `ledger` from this host
//! against the published ports, `command` inside the container through the exec API. Every
//! attempt is bounded by [`probe::attempt_timeout`].

use crate::{DockerError, DockerProvider, names};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;
use phoenix_provider_api::{Health, HealthCheck, ProbeOutcome, UnitStatus, probe};
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a TCP check waits for the peer to hang up at once. Docker's userland proxy accepts
/// every connection to a published port and closes it within a millisecond when nothing in the
/// container listens; a real server keeps the connection open (or greets).
const PROXY_CLOSE_WINDOW: Duration = Duration::from_millis(150);

impl DockerProvider {
    pub(crate) fn probe_unit(&self, unit: &UnitStatus, health: &Health) -> ProbeOutcome {
        if health.checks.is_empty() {
            return ProbeOutcome::unhealthy("no health checks");
        }
        let timeout = probe::attempt_timeout(health);
        let vars = unit.vars();
        let mut details = Vec::new();
        for check in &health.checks {
            let out = match check {
                // Checks that read a document go to the published ports from this host.
                HealthCheck::Http { .. }
                | HealthCheck::Json { .. }
                | HealthCheck::Metrics { .. }
                | HealthCheck::Ledger { .. } => probe::check_once(&vars, check, timeout),
                HealthCheck::Tcp { address } => match vars.apply(address) {
                    Ok(addr) => tcp_check(&addr, timeout),
                    Err(e) => ProbeOutcome::unhealthy(e.to_string()),
                },
                HealthCheck::Command { argv } => {
                    match argv
                        .iter()
                        .map(|a| vars.apply(a))
                        .collect::<phoenix_provider_api::Result<Vec<_>>>()
                    {
                        Ok(argv) => self.exec_check(unit, argv, timeout),
                        Err(e) => ProbeOutcome::unhealthy(e.to_string()),
                    }
                }
            };
            if !out.healthy {
                return out;
            }
            details.push(out.detail);
        }
        ProbeOutcome::healthy(details.join("; "))
    }

    /// Runs `argv` in the unit's container (in its data dir); healthy on exit 0 within
    /// `timeout`. A command still running at the timeout is left to end with the container:
    /// the Engine API has no way to signal an exec.
    fn exec_check(&self, unit: &UnitStatus, argv: Vec<String>, timeout: Duration) -> ProbeOutcome {
        let Some(prog) = argv.first().cloned() else {
            return ProbeOutcome::unhealthy("empty command");
        };
        let container = unit
            .handle
            .clone()
            .unwrap_or_else(|| names::container_name(&unit.fleet, &unit.instance, unit.revision));
        let run = async {
            let d = self.docker().await?;
            let exec = d
                .create_exec(
                    &container,
                    CreateExecOptions {
                        cmd: Some(argv),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        working_dir: Some(workdir(&unit.data_dir)),
                        ..Default::default()
                    },
                )
                .await
                .map_err(self.err("run a check in", &container))?;
            let mut stderr = Vec::new();
            if let StartExecResults::Attached { mut output, .. } = d
                .start_exec(&exec.id, None)
                .await
                .map_err(self.err("run a check in", &container))?
            {
                while let Some(item) = output.next().await {
                    match item {
                        Ok(LogOutput::StdErr { message }) if stderr.len() < 512 => {
                            stderr.extend_from_slice(&message[..message.len().min(512)])
                        }
                        Ok(_) => {}
                        Err(e) => return Err(self.err("read a check's output in", &container)(e)),
                    }
                }
            }
            let info = d
                .inspect_exec(&exec.id)
                .await
                .map_err(self.err("read a check's exit in", &container))?;
            Ok::<_, DockerError>((info.exit_code, stderr))
        };
        let outcome = self.run(async { tokio::time::timeout(timeout, run).await });
        match outcome {
            Err(_) => ProbeOutcome::unhealthy(format!("`{prog}` timed out after {timeout:?}")),
            Ok(Err(e)) => ProbeOutcome::unhealthy(e.to_string()),
            Ok(Ok((Some(0), _))) => ProbeOutcome::healthy(format!("`{prog}` exited 0")),
            Ok(Ok((code, stderr))) => {
                let stderr = String::from_utf8_lossy(&stderr);
                let stderr = stderr.trim();
                let suffix = if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                };
                match code {
                    Some(c) => ProbeOutcome::unhealthy(format!("`{prog}` exited {c}{suffix}")),
                    None => ProbeOutcome::unhealthy(format!("`{prog}` reported no exit{suffix}")),
                }
            }
        }
    }
}

fn workdir(data_dir: &Path) -> String {
    data_dir.to_string_lossy().into_owned()
}

/// Connects to `addr` within `timeout`, then waits up to [`PROXY_CLOSE_WINDOW`] for the peer to
/// hang up at once (see there). Healthy when the connection is made and stays open, or the peer
/// greets.
fn tcp_check(addr: &str, timeout: Duration) -> ProbeOutcome {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<_> = match addr.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return ProbeOutcome::unhealthy(format!("connect {addr}: cannot resolve: {e}")),
    };
    let mut last = String::from("resolves to no address");
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ProbeOutcome::unhealthy(format!("connect {addr}: timed out"));
        }
        let mut stream = match TcpStream::connect_timeout(&a, left) {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let window = PROXY_CLOSE_WINDOW
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        let _ = stream.set_read_timeout(Some(window));
        let mut byte = [0u8; 1];
        return match stream.read(&mut byte) {
            Ok(0) => ProbeOutcome::unhealthy(format!(
                "connect {addr}: closed at once (nothing listens in the container behind the \
                 published port)"
            )),
            Ok(_) => ProbeOutcome::healthy(format!("connected to {addr}")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                ProbeOutcome::healthy(format!("connected to {addr}"))
            }
            Err(e) => ProbeOutcome::unhealthy(format!("connect {addr}: {e}")),
        };
    }
    ProbeOutcome::unhealthy(format!("connect {addr}: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn tcp_checks_tell_a_listener_from_a_proxy_that_hangs_up() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        // A server that holds the connection: healthy.
        let holder = std::thread::spawn(move || {
            let (held, _) = l.accept().unwrap();
            // Then one that hangs up at once, as Docker's proxy does.
            let (s, _) = l.accept().unwrap();
            drop(s);
            held
        });
        assert!(tcp_check(&addr, Duration::from_secs(2)).healthy);
        let closed = tcp_check(&addr, Duration::from_secs(2));
        assert!(
            !closed.healthy && closed.detail.contains("closed"),
            "{closed:?}"
        );
        drop(holder.join().unwrap());
        let refused = tcp_check(&addr, Duration::from_secs(1));
        assert!(!refused.healthy, "{refused:?}");
    }
}
