//! Health probes run from this host, shared by providers: HTTP GET with an expected status, TCP
//! connect, a command whose exit status 0 means healthy, and the extensions that read a
//! document (a JSON body holding expected values, a Prometheus exposition with enough metric
//! families, a ledger node's status). Every attempt is bounded by a timeout, so a hung service
//! never hangs the caller.
//!
//! The HTTP client is a minimal HTTP/1.1 GET over [`TcpStream`]: a probe needs only the status
//! line or a small body, and this keeps the crate free of a TLS stack. `https://` is reported as
//! unsupported.

mod documents;

use crate::{Health, HealthCheck, ProbeOutcome, Provider, UnitStatus, Vars};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest one probe attempt may take.
pub const MAX_ATTEMPT: Duration = Duration::from_secs(5);
/// The shortest timeout given to one probe attempt (a fast interval must not make probes of a
/// slow but healthy service fail).
pub const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// The timeout of one probe attempt for `health`: twice the probe interval, at least
/// [`MIN_ATTEMPT`], at most [`MAX_ATTEMPT`], and never longer than the overall gate timeout.
///
/// A check that watches its target for a while (a ledger node's height advancing) gets that
/// long on top of [`MIN_ATTEMPT`], still within the gate timeout.
pub fn attempt_timeout(health: &Health) -> Duration {
    let by_interval = Duration::from_millis(health.interval_ms.saturating_mul(2));
    let watch = health
        .checks
        .iter()
        .map(HealthCheck::watch_ms)
        .max()
        .unwrap_or(0);
    by_interval
        .clamp(MIN_ATTEMPT, MAX_ATTEMPT)
        .max(Duration::from_millis(watch) + MIN_ATTEMPT)
        .min(Duration::from_millis(health.timeout_ms.max(1)))
}

/// Runs one attempt of `health` against `unit` from this host, with substitutions taken from
/// the unit (ports, `instance`, `service`, `site`, `data_dir`). Never panics and never takes
/// much longer than [`attempt_timeout`].
pub fn probe(unit: &UnitStatus, health: &Health) -> ProbeOutcome {
    probe_with_timeout(&unit.vars(), health, attempt_timeout(health))
}

/// [`probe`] with explicit variables and attempt timeout: runs the checks in order, each
/// bounded by `timeout`, and stops at the first that fails. Healthy when every check passes.
pub fn probe_with_timeout(vars: &Vars, health: &Health, timeout: Duration) -> ProbeOutcome {
    if health.checks.is_empty() {
        return ProbeOutcome::unhealthy("no health checks");
    }
    let mut details = Vec::new();
    for check in &health.checks {
        let out = check_once(vars, check, timeout);
        if !out.healthy {
            return out;
        }
        details.push(out.detail);
    }
    ProbeOutcome::healthy(details.join("; "))
}

/// One attempt of one check, bounded by `timeout`, with substitutions from `vars`.
pub fn check_once(vars: &Vars, check: &HealthCheck, timeout: Duration) -> ProbeOutcome {
    let outcome = match check {
        HealthCheck::Http { url, expect_status } => {
            vars.apply(url)
                .map(|url| match http_get_status(&url, timeout) {
                    Ok(status) if status == *expect_status => {
                        ProbeOutcome::healthy(format!("GET {url}: {status}"))
                    }
                    Ok(status) => ProbeOutcome::unhealthy(format!(
                        "GET {url}: status {status}, expected {expect_status}"
                    )),
                    Err(e) => ProbeOutcome::unhealthy(format!("GET {url}: {e}")),
                })
        }
        HealthCheck::Tcp { address } => {
            vars.apply(address)
                .map(|addr| match tcp_connect(&addr, timeout) {
                    Ok(()) => ProbeOutcome::healthy(format!("connected to {addr}")),
                    Err(e) => ProbeOutcome::unhealthy(format!("connect {addr}: {e}")),
                })
        }
        HealthCheck::Command { argv } => argv
            .iter()
            .map(|a| vars.apply(a))
            .collect::<crate::Result<Vec<_>>>()
            .map(|argv| {
                let cwd = Some(vars.data_dir.as_path()).filter(|d| d.is_dir());
                run_command(&argv, cwd, timeout)
            }),
        HealthCheck::Json { url, expect } => vars.apply(url).and_then(|url| {
            let expect = expect
                .iter()
                .map(|(path, v)| Ok((path.as_str(), vars.apply(v)?)))
                .collect::<crate::Result<Vec<_>>>()?;
            Ok(documents::json_check(&url, &expect, timeout))
        }),
        HealthCheck::Metrics { url, min_families } => vars
            .apply(url)
            .map(|url| documents::metrics_check(&url, *min_families, timeout)),
        HealthCheck::Ledger {
            api,
            min_peers,
            max_lag,
            advance_within_ms,
        } => vars.apply(api).map(|api| {
            documents::ledger_check(
                &api,
                documents::LedgerBounds {
                    min_peers: *min_peers,
                    max_lag: *max_lag,
                    advance_within: Duration::from_millis(*advance_within_ms),
                },
                timeout,
            )
        }),
    };
    outcome.unwrap_or_else(|e| ProbeOutcome::unhealthy(e.to_string()))
}

/// Probes every `health.interval_ms` until a probe passes or `health.timeout_ms` has elapsed;
/// returns the last outcome (healthy, or the last failure with the time waited).
pub fn wait_until_healthy(
    provider: &dyn Provider,
    unit: &UnitStatus,
    health: &Health,
) -> ProbeOutcome {
    let deadline = Instant::now() + Duration::from_millis(health.timeout_ms);
    let interval = Duration::from_millis(health.interval_ms.max(10));
    loop {
        let attempt_started = Instant::now();
        let outcome = provider.probe(unit, health);
        if outcome.healthy {
            return outcome;
        }
        let now = Instant::now();
        if now >= deadline {
            return ProbeOutcome::unhealthy(format!(
                "not healthy after {} ms: {}",
                health.timeout_ms, outcome.detail
            ));
        }
        let next = (attempt_started + interval).min(deadline);
        std::thread::sleep(next.saturating_duration_since(now));
    }
}

fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err("resolves to no address".into());
    }
    Ok(addrs)
}

fn connect(addr: &str, deadline: Instant) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for a in resolve(addr)? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Connects to `host:port` within `timeout`.
///
/// # Errors
/// Why the connection failed.
pub fn tcp_connect(addr: &str, timeout: Duration) -> Result<(), String> {
    connect(addr, Instant::now() + timeout).map(drop)
}

/// Splits `http://host[:port][/path]` into the `host:port` to connect to, the `Host` header
/// value and the request target.
fn split_url(url: &str) -> Result<(String, String, String), String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => return Err(format!("scheme `{scheme}` not supported (http only)")),
        None => return Err("not an absolute http:// URL".into()),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.is_empty() {
        return Err("no host in URL".into());
    }
    let has_port = if let Some(stripped) = authority.strip_prefix('[') {
        stripped.contains("]:")
    } else {
        authority.contains(':')
    };
    let connect = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((connect, authority.to_string(), path))
}

/// Sends `GET url` (HTTP/1.1, `Connection: close`) and returns the response status, all within
/// `timeout`.
///
/// # Errors
/// Why no status was read (bad URL, connection refused, timeout, malformed response).
pub fn http_get_status(url: &str, timeout: Duration) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = send_get(url, deadline)?;
    let mut buf = Vec::with_capacity(256);
    while !buf.windows(2).any(|w| w == b"\r\n") {
        if buf.len() > 8192 {
            return Err("status line too long".into());
        }
        if !read_some(&mut stream, &mut buf, deadline)? {
            return Err("connection closed before a status line".into());
        }
    }
    status_of(&buf)
}

/// The time left until `deadline`, or an error once it has passed.
fn time_left(deadline: Instant) -> Result<Duration, String> {
    let l = deadline.saturating_duration_since(Instant::now());
    if l.is_zero() {
        Err("timed out".to_string())
    } else {
        Ok(l)
    }
}

/// Connects to `url`'s host and sends `GET` (HTTP/1.1, `Connection: close`), by `deadline`.
fn send_get(url: &str, deadline: Instant) -> Result<TcpStream, String> {
    let (addr, host, path) = split_url(url)?;
    let mut stream = connect(&addr, deadline)?;
    stream
        .set_write_timeout(Some(time_left(deadline)?))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: phoenix-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    Ok(stream)
}

/// Reads what is there into `buf` by `deadline`: `false` at the end of the stream.
fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<bool, String> {
    let mut chunk = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(time_left(deadline)?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out waiting for the response".into());
            }
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
}

/// The status code in the status line at the start of `buf`.
fn status_of(buf: &[u8]) -> Result<u16, String> {
    let line = String::from_utf8_lossy(buf);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code
            .parse()
            .map_err(|_| format!("bad status line `{line}`")),
        _ => Err(format!("bad status line `{line}`")),
    }
}

/// The most of a response body a probe reads: health documents and metric expositions are
/// small, and a probe must not hold a large or endless body in memory.
pub const MAX_BODY: usize = 4 << 20;

/// Sends `GET url` and returns the status and the body (chunked transfer coding undone), all
/// within `timeout`; a body longer than [`MAX_BODY`] is an error.
///
/// # Errors
/// Why no complete response was read (bad URL, connection refused, timeout, malformed or
/// oversized response).
pub fn http_get(url: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let deadline = Instant::now() + timeout;
    let mut stream = send_get(url, deadline)?;
    let mut raw = Vec::with_capacity(4096);
    while read_some(&mut stream, &mut raw, deadline)? {
        if raw.len() > MAX_BODY + 64 * 1024 {
            return Err(format!("response larger than {} MiB", MAX_BODY >> 20));
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("response ended inside its headers")?;
    let status = status_of(&raw)?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let chunked = head.lines().any(|l| {
        l.strip_prefix("transfer-encoding:")
            .is_some_and(|v| v.contains("chunked"))
    });
    let body = if chunked {
        documents::dechunk(body)?
    } else {
        body.to_vec()
    };
    if body.len() > MAX_BODY {
        return Err(format!("response larger than {} MiB", MAX_BODY >> 20));
    }
    Ok((status, body))
}

/// Runs `argv` (in `cwd` if given) with stdin closed and output discarded except for the first
/// bytes of stderr, in its own process group; healthy when it exits 0 within `timeout`. On
/// timeout the whole group is killed.
pub fn run_command(
    argv: &[String],
    cwd: Option<&std::path::Path>,
    timeout: Duration,
) -> ProbeOutcome {
    let Some((prog, args)) = argv.split_first() else {
        return ProbeOutcome::unhealthy("empty command");
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ProbeOutcome::unhealthy(format!("cannot run `{prog}`: {e}")),
    };
    // Read stderr on a thread so a chatty check cannot block on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut err) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if kept.len() < 512 {
                    kept.extend_from_slice(&buf[..n.min(512 - kept.len())]);
                }
            }
            let _ = tx.send(kept);
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => break None,
        }
    };
    // Kill whatever the check left behind in its group, then reap.
    if let Some(pgid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    let status = status.or_else(|| {
        let _ = child.wait();
        None
    });
    let stderr = rx
        .recv_timeout(Duration::from_millis(100))
        .unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr);
    let stderr = stderr.trim();
    let suffix = if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    };
    match status {
        None => ProbeOutcome::unhealthy(format!("`{prog}` timed out after {timeout:?}")),
        Some(s) if s.success() => ProbeOutcome::healthy(format!("`{prog}` exited 0")),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => ProbeOutcome::unhealthy(format!("`{prog}` exited {c}{suffix}")),
            (_, Some(sig)) => ProbeOutcome::unhealthy(format!("`{prog}` killed by signal {sig}")),
            _ => ProbeOutcome::unhealthy(format!("`{prog}` ended: {s}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn health(check: HealthCheck) -> Health {
        Health {
            checks: vec![check],
            timeout_ms: 2_000,
            interval_ms: 50,
        }
    }

    #[test]
    fn split_url_handles_ports_paths_and_queries() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/a/b?c").unwrap(),
            (
                "127.0.0.1:8080".into(),
                "127.0.0.1:8080".into(),
                "/a/b?c".into()
            )
        );
        assert_eq!(
            split_url("http://localhost").unwrap(),
            ("localhost:80".into(), "localhost".into(), "/".into())
        );
        assert_eq!(split_url("http://h?x").unwrap().2, "/?x");
        assert!(split_url("https://h/").is_err());
        assert!(split_url("h:1").is_err());
    }

    #[test]
    fn attempt_timeout_is_bounded() {
        let mut h = health(HealthCheck::Tcp {
            address: "x".into(),
        });
        assert_eq!(attempt_timeout(&h), MIN_ATTEMPT);
        h.interval_ms = 60_000;
        assert_eq!(attempt_timeout(&h), Duration::from_secs(2));
        h.timeout_ms = 100_000;
        assert_eq!(attempt_timeout(&h), MAX_ATTEMPT);
    }

    #[test]
    fn http_probe_reads_status_and_times_out_on_silence() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            // First connection: answer 204. Second: accept and say nothing.
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            let (s2, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(400));
            drop(s2);
        });
        let url = format!("http://127.0.0.1:{port}/x");
        assert_eq!(http_get_status(&url, Duration::from_secs(2)), Ok(204));
        let started = Instant::now();
        let err = http_get_status(&url, Duration::from_millis(150)).unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_millis(350));
        server.join().unwrap();
    }

    #[test]
    fn tcp_and_command_probes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut vars = Vars::default();
        vars.ports
            .insert("port".into(), l.local_addr().unwrap().port());
        let t = Duration::from_secs(1);
        let ok = probe_with_timeout(
            &vars,
            &health(HealthCheck::Tcp {
                address: "127.0.0.1:${port}".into(),
            }),
            t,
        );
        assert!(ok.healthy, "{ok:?}");
        drop(l);
        let closed = probe_with_timeout(
            &vars,
            &health(HealthCheck::Tcp {
                address: "127.0.0.1:${port}".into(),
            }),
            t,
        );
        assert!(!closed.healthy);

        let cmd = |argv: &[&str]| HealthCheck::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        };
        assert!(probe_with_timeout(&vars, &health(cmd(&["true"])), t).healthy);
        let fail = probe_with_timeout(
            &vars,
            &health(cmd(&["sh", "-c", "echo boom >&2; exit 3"])),
            t,
        );
        assert!(
            !fail.healthy && fail.detail.contains("exited 3") && fail.detail.contains("boom"),
            "{fail:?}"
        );
        let started = Instant::now();
        let slow = probe_with_timeout(
            &vars,
            &health(cmd(&["sh", "-c", "sleep 5 & sleep 5"])),
            Duration::from_millis(200),
        );
        assert!(
            !slow.healthy && slow.detail.contains("timed out"),
            "{slow:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let unknown = probe_with_timeout(&vars, &health(cmd(&["${nope}"])), t);
        assert!(!unknown.healthy && unknown.detail.contains("nope"));
    }
}
