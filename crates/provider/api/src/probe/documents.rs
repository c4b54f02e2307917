//! The checks that read a document: what a JSON body, a metrics exposition or a ledger node's
//! status must hold. The judging is pure (text in, verdict out) and tested apart from the
//! network; the `*_check` functions only fetch and judge.

use super::http_get;
use crate::ProbeOutcome;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How often a ledger check re-reads the node's status while it waits for a new block.
const LEDGER_POLL: Duration = Duration::from_millis(200);

/// `GET url` answering 200 with a JSON document; healthy when every `(path, value)` holds.
pub(super) fn json_check(url: &str, expect: &[(&str, String)], timeout: Duration) -> ProbeOutcome {
    match get_json(url, timeout).and_then(|doc| judge_json(&doc, expect)) {
        Ok(held) => ProbeOutcome::healthy(format!("GET {url}: {held}")),
        Err(e) => ProbeOutcome::unhealthy(format!("GET {url}: {e}")),
    }
}

/// `GET url` answering 200 with a Prometheus text exposition of at least `min` families.
pub(super) fn metrics_check(url: &str, min: u32, timeout: Duration) -> ProbeOutcome {
    let verdict = get_ok(url, timeout).and_then(|body| {
        let n = metric_families(&String::from_utf8_lossy(&body));
        if n >= min as usize {
            Ok(format!("{n} metric families"))
        } else {
            Err(format!("{n} metric families, at least {min} expected"))
        }
    });
    match verdict {
        Ok(d) => ProbeOutcome::healthy(format!("GET {url}: {d}")),
        Err(e) => ProbeOutcome::unhealthy(format!("GET {url}: {e}")),
    }
}

/// What a ledger node must show to count as healthy.
#[derive(Debug, Clone, Copy)]
pub(super) struct LedgerBounds {
    /// The fewest live peers.
    pub(super) min_peers: u32,
    /// The most blocks its finalized height may trail the network's.
    pub(super) max_lag: u64,
    /// How long to wait for its finalized height to advance.
    pub(super) advance_within: Duration,
}

/// Reads `{api}/v1/status`: enough peers and a small lag at once, then the finalized height
/// advancing within `bounds.advance_within` (re-read every [`LEDGER_POLL`]), all by `timeout`.
pub(super) fn ledger_check(api: &str, bounds: LedgerBounds, timeout: Duration) -> ProbeOutcome {
    let started = Instant::now();
    let deadline = started + timeout;
    let url = format!("{}/v1/status", api.trim_end_matches('/'));
    let first = match get_json(&url, timeout).and_then(|s| LedgerStatus::read(&s)) {
        Ok(s) => s,
        Err(e) => return ProbeOutcome::unhealthy(format!("ledger {api}: {e}")),
    };
    if let Err(e) = first.judge(bounds) {
        return ProbeOutcome::unhealthy(format!("ledger {api}: {e}"));
    }
    let watch_until = (started + bounds.advance_within).min(deadline);
    loop {
        let now = Instant::now();
        if now >= watch_until {
            return ProbeOutcome::unhealthy(format!(
                "ledger {api}: finalized height stayed at {} for {} ms",
                first.finalized,
                now.duration_since(started).as_millis()
            ));
        }
        std::thread::sleep(LEDGER_POLL.min(watch_until - now));
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            continue;
        }
        let next = match get_json(&url, left).and_then(|s| LedgerStatus::read(&s)) {
            Ok(s) => s,
            Err(e) => return ProbeOutcome::unhealthy(format!("ledger {api}: {e}")),
        };
        if next.finalized > first.finalized {
            return match next.judge(bounds) {
                Ok(()) => ProbeOutcome::healthy(format!(
                    "ledger {api}: finalized {} -> {}, {} peers, {} behind the network",
                    first.finalized,
                    next.finalized,
                    next.peers,
                    next.lag()
                )),
                Err(e) => ProbeOutcome::unhealthy(format!("ledger {api}: {e}")),
            };
        }
    }
}

/// The fields of a ledger node's `/v1/status` a health check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LedgerStatus {
    pub(super) finalized: u64,
    pub(super) network_finalized: u64,
    pub(super) peers: u64,
}

impl LedgerStatus {
    pub(super) fn read(doc: &Value) -> Result<Self, String> {
        let field = |name: &str| {
            doc.get(name)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("status has no `{name}` (is this a Phoenix ledger node?)"))
        };
        Ok(LedgerStatus {
            finalized: field("finalized_height")?,
            // A node that has heard of no later block reports 0 or its own height.
            network_finalized: doc
                .get("network_finalized_height")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            peers: field("peers")?,
        })
    }

    /// Blocks behind the highest finalized height the node has heard of.
    pub(super) fn lag(&self) -> u64 {
        self.network_finalized.saturating_sub(self.finalized)
    }

    pub(super) fn judge(&self, b: LedgerBounds) -> Result<(), String> {
        if self.peers < u64::from(b.min_peers) {
            return Err(format!(
                "{} live peers, at least {} needed",
                self.peers, b.min_peers
            ));
        }
        if self.lag() > b.max_lag {
            return Err(format!(
                "finalized height {} is {} blocks behind the network's {} (at most {})",
                self.finalized,
                self.lag(),
                self.network_finalized,
                b.max_lag
            ));
        }
        Ok(())
    }
}

fn get_ok(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    match http_get(url, timeout)? {
        (200, body) => Ok(body),
        (status, _) => Err(format!("status {status}, expected 200")),
    }
}

fn get_json(url: &str, timeout: Duration) -> Result<Value, String> {
    let body = get_ok(url, timeout)?;
    serde_json::from_slice(&body).map_err(|e| format!("not a JSON document: {e}"))
}

/// Whether every `(path, value)` holds in `doc`: the summary of what held, or the first that
/// did not. A string must equal the value; a number or boolean must print as it.
pub(super) fn judge_json(doc: &Value, expect: &[(&str, String)]) -> Result<String, String> {
    let mut held = Vec::new();
    for (path, want) in expect {
        let mut at = doc;
        for part in path.split('.') {
            at = match at {
                Value::Object(m) => m.get(part),
                Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            }
            .ok_or_else(|| format!("the document has no `{path}`"))?;
        }
        let got = match at {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) | Value::Null => at.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(format!("`{path}` is not a single value"));
            }
        };
        if &got != want {
            return Err(format!("`{path}` is `{got}`, expected `{want}`"));
        }
        held.push(format!("{path}={got}"));
    }
    Ok(held.join(", "))
}

/// The number of metric families in a Prometheus text exposition: the distinct names given a
/// `# HELP` or `# TYPE` line, or, in an exposition without metadata, the distinct sample names.
pub(super) fn metric_families(text: &str) -> usize {
    let mut described = BTreeSet::new();
    let mut sampled = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            if let Some(name) = rest.split_whitespace().next() {
                described.insert(name);
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let name = line
                .split(|c: char| c == '{' || c.is_whitespace())
                .next()
                .unwrap_or_default();
            if !name.is_empty() {
                sampled.insert(name);
            }
        }
    }
    if described.is_empty() {
        sampled.len()
    } else {
        described.len()
    }
}

/// Undoes HTTP/1.1 chunked transfer coding (trailers ignored).
pub(super) fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunked body ended inside a chunk size")?;
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size `{size_text}`"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size || out.len() + size > super::MAX_BODY {
            return Err("chunked body cut short or too large".into());
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).ok_or("chunked body cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn expect(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(p, v)| (*p, v.to_string())).collect()
    }

    #[test]
    fn json_paths_compare_strings_numbers_and_booleans() {
        let doc = json!({"status": "Healthy", "build": {"version": "1.4.2", "n": 3, "ok": true}, "l": [5]});
        assert!(
            judge_json(
                &doc,
                &expect(&[
                    ("status", "Healthy"),
                    ("build.version", "1.4.2"),
                    ("build.n", "3"),
                    ("build.ok", "true"),
                    ("l.0", "5"),
                ])
            )
            .is_ok()
        );
        let e = judge_json(&doc, &expect(&[("status", "Degraded")])).unwrap_err();
        assert!(
            e.contains("`status` is `Healthy`, expected `Degraded`"),
            "{e}"
        );
        let e = judge_json(&doc, &expect(&[("build.nope", "x")])).unwrap_err();
        assert!(e.contains("no `build.nope`"), "{e}");
        let e = judge_json(&doc, &expect(&[("build", "x")])).unwrap_err();
        assert!(e.contains("not a single value"), "{e}");
    }

    #[test]
    fn metric_families_count_metadata_names_once() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# HELP b B.\n# TYPE b gauge\nb{x=\"1\"} 2\nb{x=\"2\"} 3\n";
        assert_eq!(metric_families(text), 2);
        assert_eq!(metric_families("a 1\nb{x=\"y\"} 2\nb 3\n"), 2);
        assert_eq!(metric_families(""), 0);
    }

    #[test]
    fn ledger_status_judges_peers_and_lag() {
        let b = LedgerBounds {
            min_peers: 2,
            max_lag: 5,
            advance_within: Duration::from_secs(1),
        };
        let s = LedgerStatus::read(
            &json!({"finalized_height": 100, "network_finalized_height": 103, "peers": 3}),
        )
        .unwrap();
        assert!(s.judge(b).is_ok());
        let behind = LedgerStatus {
            network_finalized: 200,
            ..s
        };
        let e = behind.judge(b).unwrap_err();
        assert!(e.contains("100 blocks behind"), "{e}");
        let lonely = LedgerStatus { peers: 1, ..s };
        assert!(lonely.judge(b).unwrap_err().contains("1 live peers"));
        assert!(LedgerStatus::read(&json!({"height": 1})).is_err());
    }

    #[test]
    fn dechunk_joins_chunks_and_refuses_garbage() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"5\r\nab").is_err());
    }

    /// Serves each response in turn to one connection each, for at most 5 s.
    fn serve(responses: Vec<String>) -> (u16, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(5);
            for r in responses {
                let mut s = loop {
                    match l.accept() {
                        Ok((s, _)) => break s,
                        Err(_) if Instant::now() < end => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => return,
                    }
                };
                s.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                s.write_all(r.as_bytes()).unwrap();
            }
        });
        (port, h)
    }

    #[test]
    fn json_and_metrics_checks_over_http() {
        let body = r#"{"status":"Healthy","version":"2"}"#;
        let metrics = "# HELP a A\na 1\n# HELP b B\nb 1\n";
        let (port, h) = serve(vec![
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{metrics}\r\n0\r\n\r\n",
                metrics.len()
            ),
            "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".to_string(),
        ]);
        let url = format!("http://127.0.0.1:{port}/");
        let t = Duration::from_secs(2);
        let ok = json_check(&url, &expect(&[("status", "Healthy"), ("version", "2")]), t);
        assert!(ok.healthy, "{ok:?}");
        let few = metrics_check(&url, 10, t);
        assert!(
            !few.healthy && few.detail.contains("2 metric families"),
            "{few:?}"
        );
        let busy = json_check(&url, &expect(&[("status", "Healthy")]), t);
        assert!(!busy.healthy && busy.detail.contains("503"), "{busy:?}");
        h.join().unwrap();
    }

    #[test]
    fn ledger_check_needs_the_height_to_advance() {
        let status = |h: u64| {
            let b =
                format!(r#"{{"finalized_height":{h},"network_finalized_height":{h},"peers":3}}"#);
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{b}", b.len())
        };
        let bounds = LedgerBounds {
            min_peers: 3,
            max_lag: 2,
            advance_within: Duration::from_millis(900),
        };
        let (port, h) = serve(vec![status(7), status(7), status(8)]);
        let ok = ledger_check(
            &format!("http://127.0.0.1:{port}"),
            bounds,
            Duration::from_secs(3),
        );
        assert!(ok.healthy && ok.detail.contains("7 -> 8"), "{ok:?}");
        h.join().unwrap();

        let (port, h) = serve((0..8).map(|_| status(7)).collect());
        let stuck = ledger_check(
            &format!("http://127.0.0.1:{port}"),
            LedgerBounds {
                advance_within: Duration::from_millis(500),
                ..bounds
            },
            Duration::from_secs(3),
        );
        assert!(
            !stuck.healthy && stuck.detail.contains("stayed at 7"),
            "{stuck:?}"
        );
        // Not joined: the server is left waiting for requests that will not come, and gives up
        // by itself within its 5 s.
        drop(h);
    }
}
