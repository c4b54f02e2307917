//! `phoenix ledger bench`: N validators as separate processes on loopback, driven with signed
//! audit transactions as fast as they commit them (closed loop with a bounded in-flight window).

use crate::cli::block_on;
use crate::config::{TestnetSpec, write_testnet};
use crate::http::{Conn, sse};
use anyhow::{Context, Result, bail};
use phoenix_ledger_types::crypto::{Hash, Keypair};
use phoenix_ledger_types::tx::{AuditRecord, Operation, Outcome, Transaction, TxBody};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Arguments of `phoenix ledger bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Validators to start.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Measurement window, e.g. 30s, 500ms, 2m.
    #[arg(long, default_value = "30s")]
    pub duration: String,
    /// Output: json or text.
    #[arg(short = 'o', long, default_value = "text")]
    pub output: String,
    /// Working directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// First API port.
    #[arg(long, default_value_t = 18700)]
    pub api_base_port: u16,
    /// First P2P port.
    #[arg(long, default_value_t = 19700)]
    pub p2p_base_port: u16,
    /// Client accounts signing transactions.
    #[arg(long, default_value_t = 64)]
    pub accounts: usize,
    /// Most submitted-but-uncommitted transactions at any time. Finality is about window /
    /// throughput (Little's law): 3,000 keeps throughput within a few percent of 4,000 on two
    /// cores while cutting finality p99 by about a fifth, and still meets both targets with one
    /// core taken by something else (docs/benchmarks.md).
    #[arg(long, default_value_t = 3_000)]
    pub window: u64,
    /// Transactions per submission request.
    #[arg(long, default_value_t = 250)]
    pub batch: usize,
    /// Minimum block interval, ms.
    #[arg(long, default_value_t = 100)]
    pub min_block_ms: u64,
    /// Transactions to pre-sign per second of duration (an upper bound on the rate).
    #[arg(long, default_value_t = 25_000)]
    pub presign_rate: u64,
    /// Executable to start validators with (default: this one); it is run as
    /// `EXE ledger run --home DIR/node-i`.
    #[arg(long)]
    pub exe: Option<PathBuf>,
}

/// Parses `30s`, `500ms`, `2m`.
///
/// # Errors
/// Anything else.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => bail!("bad duration unit in {s:?} (ms, s, m)"),
    })
}

/// Child processes, killed (by pid) when dropped.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `exe ledger run --home dir/node-i` for each i, logging to `dir/node-i/node.log`.
///
/// # Errors
/// Failing to spawn.
pub fn spawn_node(exe: &PathBuf, home: &std::path::Path) -> Result<Child> {
    let log = std::fs::File::create(home.join("node.log"))?;
    let child = Command::new(exe)
        .args(["ledger", "run", "--home"])
        .arg(home)
        .env(
            "RUST_LOG",
            std::env::var("PHOENIX_NODE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    Ok(child)
}

/// Waits until every API answers `/v1/status` with a finalized height of at least `min`.
///
/// # Errors
/// Timeout.
pub async fn wait_height(apis: &[String], min: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for api in apis {
        let mut c = Conn::new(api);
        loop {
            if let Ok(r) = c.get("/v1/status").await
                && let Ok(v) = r.json()
                && v["finalized_height"].as_u64().unwrap_or(0) >= min
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("{api} did not reach height {min} in {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Block hashes of heights `1..=to` from one node.
///
/// # Errors
/// Connection errors or a missing block.
pub async fn hashes(api: &str, to: u64) -> Result<Vec<String>> {
    let mut c = Conn::new(api);
    let mut out = Vec::with_capacity(to as usize);
    for h in 1..=to {
        let r = c.get(&format!("/v1/blocks/{h}?txs=false")).await?;
        if r.status != 200 {
            bail!("{api}: block {h}: HTTP {}", r.status);
        }
        out.push(r.json()?["hash"].as_str().unwrap_or_default().to_string());
    }
    Ok(out)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the benchmark and prints one report.
///
/// # Errors
/// Setup failures (ports in use, nodes not starting).
pub fn run_bench(args: BenchArgs) -> Result<ExitCode> {
    let duration = parse_duration(&args.duration)?;
    let tmp = args.dir.is_none();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("phoenix-ledger-bench-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let keys: Vec<Keypair> = (0..args.accounts)
        .map(|_| crate::config::random_key())
        .collect();
    let cc = write_testnet(&TestnetSpec {
        validators: args.validators,
        dir: dir.clone(),
        api_base_port: args.api_base_port,
        p2p_base_port: args.p2p_base_port,
        chain_id: "phoenix-bench".into(),
        empty_block_interval_ms: 500,
        min_block_interval_ms: args.min_block_ms,
        extra_auditors: keys.iter().map(Keypair::public).collect(),
        worker_threads: 2,
        replace: false,
    })?;
    let exe = match &args.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe()?,
    };

    // Pre-sign (client-side work kept out of the measurement) on two threads.
    let total = (args.presign_rate * duration.as_secs().max(1)) as usize;
    let per_account = total / args.accounts.max(1) + 1;
    let t0 = Instant::now();
    // Hashes are computed here too, so the driving loop only copies bytes.
    let signed: Vec<Vec<Presigned>> = std::thread::scope(|s| {
        let chunks: Vec<_> = keys
            .chunks(keys.len().div_ceil(2).max(1))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|k| Presigned::sign(k, per_account, sign_audit))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks
            .into_iter()
            .map(|h| h.join().expect("signer thread"))
            .collect()
    });
    let streams: Vec<Presigned> = signed.into_iter().flatten().collect();
    eprintln!(
        "bench: pre-signed {} transactions in {:?}",
        per_account * args.accounts,
        t0.elapsed()
    );

    // Validators start after pre-signing so signing does not compete with them.
    let procs = Procs(
        (0..args.validators)
            .map(|i| spawn_node(&exe, &dir.join(format!("node-{i}"))))
            .collect::<Result<_>>()?,
    );
    eprintln!(
        "bench: started {} validators under {}",
        args.validators,
        dir.display()
    );
    let mut report = block_on(drive(&args, &cc.apis, streams, per_account, duration))?;
    // Peak resident memory of each validator over the whole run, read before they are stopped.
    report["validator_peak_rss_mb"] = procs
        .0
        .iter()
        .map(|c| peak_rss_mb(c.id()))
        .collect::<Vec<_>>()
        .into();
    drop(procs);
    if tmp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// A process's peak resident set (`VmHWM` in `/proc/PID/status`), in MiB; `None` where there is
/// no procfs.
pub(crate) fn peak_rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

pub(crate) fn sign_audit(k: &Keypair, nonce: u64) -> Transaction {
    TxBody {
        chain_id: "phoenix-bench".into(),
        signer: k.public(),
        nonce,
        // One fleet chain per account, record `nonce + 1` of it, as the engine's outbox sends.
        op: Operation::Audit(AuditRecord {
            actor: "bench".into(),
            fleet: format!("bench-{}", &k.public().to_hex()[..8]),
            seq: nonce + 1,
            hash: Hash::of(&[&k.public().0, &nonce.to_be_bytes()]),
            revision: nonce,
            plan_hash: Hash::of(&[&nonce.to_be_bytes()]),
            step: "apply".into(),
            outcome: Outcome::Succeeded,
            detail: String::new(),
        }),
    }
    .sign(k)
}

/// One account's pre-signed transactions: length-prefixed bytes, and each one's byte range and
/// hash.
pub(crate) struct Presigned {
    bytes: Vec<u8>,
    txs: Vec<(usize, usize, Hash)>,
}

impl Presigned {
    /// Signs `count` transactions `make(k, 0..count)`, encoded and hashed.
    pub(crate) fn sign(k: &Keypair, count: usize, make: fn(&Keypair, u64) -> Transaction) -> Self {
        let mut p = Presigned {
            bytes: Vec::with_capacity(count * 300),
            txs: Vec::with_capacity(count),
        };
        for n in 0..count as u64 {
            let tx = make(k, n);
            let b = tx.encode();
            let start = p.bytes.len();
            p.bytes.extend_from_slice(&(b.len() as u32).to_be_bytes());
            p.bytes.extend_from_slice(&b);
            p.txs.push((start, p.bytes.len(), tx.hash()));
        }
        p
    }

    /// Transaction `i`, length-prefixed as `POST /v1/txs` takes it.
    pub(crate) fn tx(&self, i: usize) -> &[u8] {
        let (s, e, _) = self.txs[i];
        &self.bytes[s..e]
    }

    /// Transaction `i`'s hash.
    pub(crate) fn hash(&self, i: usize) -> Hash {
        self.txs[i].2
    }

    /// How many.
    pub(crate) fn len(&self) -> usize {
        self.txs.len()
    }
}

/// One validator's share of the bench accounts (account `a` goes to node `a % nodes`) and how
/// far each account's pre-signed stream has been sent: the load generation shared by
/// `ledger bench` and `ledger bench-replica`.
pub(crate) struct Share {
    accounts: Vec<usize>,
    next: Vec<usize>,
    /// The account whose turn is next, so that batches smaller than the share rotate over
    /// every account instead of using up the first ones.
    turn: usize,
}

impl Share {
    /// Node `node`'s accounts among `total`, each starting at transaction `from`.
    pub(crate) fn of(node: usize, nodes: usize, total: usize, from: usize) -> Self {
        let accounts: Vec<usize> = (0..total).filter(|a| a % nodes == node).collect();
        let next = vec![from; accounts.len()];
        Share {
            accounts,
            next,
            turn: 0,
        }
    }

    /// Appends up to `batch` transactions to `body`, one account after another in turn, each
    /// account's next one below `limit` (and its stream's end); calls `sent` with each hash.
    /// Returns how many were appended: 0 once every account is used up.
    pub(crate) fn fill(
        &mut self,
        streams: &[Presigned],
        limit: usize,
        batch: usize,
        body: &mut Vec<u8>,
        mut sent: impl FnMut(Hash),
    ) -> usize {
        let (mut count, mut idle) = (0, 0);
        let n = self.accounts.len();
        // Stops at `batch`, or after a full round in which no account had anything left.
        while count < batch && idle < n {
            let j = self.turn % n;
            self.turn = self.turn.wrapping_add(1);
            let stream = &streams[self.accounts[j]];
            let i = self.next[j];
            if i >= limit.min(stream.len()) {
                idle += 1;
                continue;
            }
            idle = 0;
            self.next[j] += 1;
            body.extend_from_slice(stream.tx(i));
            sent(stream.hash(i));
            count += 1;
        }
        count
    }
}

/// Sends one batch (`n` length-prefixed transactions in `body`) in one `POST /v1/txs`; returns
/// how many were refused, by the node or because the request failed.
pub(crate) async fn post_batch(conn: &mut Conn, body: &[u8], n: usize) -> u64 {
    match conn
        .request("POST", "/v1/txs", "application/octet-stream", body)
        .await
    {
        Ok(r) if r.status == 200 => r.json().unwrap_or_default()["rejected"]
            .as_array()
            .map_or(0, Vec::len) as u64,
        _ => n as u64,
    }
}

async fn drive(
    args: &BenchArgs,
    apis: &[String],
    streams: Vec<Presigned>,
    per_account: usize,
    duration: Duration,
) -> Result<serde_json::Value> {
    wait_height(apis, 1, Duration::from_secs(60)).await?;
    eprintln!("bench: network is finalizing; driving for {duration:?}");
    let submitted = Arc::new(AtomicU64::new(0));
    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Submit time of the first transaction of each batch, keyed by every hash in it.
    let sent_at: Arc<Mutex<HashMap<Hash, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let latencies: Arc<Mutex<Vec<(Instant, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let blocks = Arc::new(AtomicU64::new(0));

    // Commit watcher on node 0's finalized-block stream.
    let watcher = {
        let (sent_at, latencies, committed, blocks, stop) = (
            sent_at.clone(),
            latencies.clone(),
            committed.clone(),
            blocks.clone(),
            stop.clone(),
        );
        let api = apis[0].clone();
        tokio::spawn(async move {
            let _ = sse(&api, "/v1/stream/blocks", |event, data| {
                if event == "block"
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
                {
                    let now = Instant::now();
                    let txs = v["transactions"].as_array().cloned().unwrap_or_default();
                    blocks.fetch_add(1, Ordering::Relaxed);
                    committed.fetch_add(txs.len() as u64, Ordering::Relaxed);
                    let mut sent = sent_at.lock().expect("lock");
                    let mut lat = latencies.lock().expect("lock");
                    for t in txs {
                        if let Some(h) = t.as_str().and_then(Hash::from_hex)
                            && let Some(at) = sent.remove(&h)
                        {
                            lat.push((now, now.duration_since(at).as_secs_f64() * 1000.0));
                        }
                    }
                }
                !stop.load(Ordering::Relaxed)
            })
            .await;
        })
    };

    let cpu_start = host_cpu();
    let load_start = load_average();
    let start = Instant::now();
    let end = start + duration;
    let n = apis.len();
    let mut tasks = Vec::new();
    let streams = Arc::new(streams);
    for (node, api) in apis.iter().enumerate() {
        let mut share = Share::of(node, n, streams.len(), 0);
        let (streams, submitted, committed, sent_at, api) = (
            streams.clone(),
            submitted.clone(),
            committed.clone(),
            sent_at.clone(),
            api.clone(),
        );
        let (window, batch) = (args.window / n as u64, args.batch);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&api);
            let mut mine = 0u64;
            let mut errors = 0u64;
            while Instant::now() < end {
                // Closed loop: keep at most `window` of this node's share in flight.
                let in_flight = submitted
                    .load(Ordering::Relaxed)
                    .saturating_sub(committed.load(Ordering::Relaxed));
                if in_flight / n as u64 > window || mine > window * 1000 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let mut body = Vec::with_capacity(batch * 300);
                let mut hashes = Vec::with_capacity(batch);
                share.fill(&streams, usize::MAX, batch, &mut body, |h| hashes.push(h));
                if hashes.is_empty() {
                    break; // pre-signed supply exhausted
                }
                let now = Instant::now();
                {
                    let mut s = sent_at.lock().expect("lock");
                    for h in &hashes {
                        s.insert(*h, now);
                    }
                }
                submitted.fetch_add(hashes.len() as u64, Ordering::Relaxed);
                mine += hashes.len() as u64;
                let refused = post_batch(&mut conn, &body, hashes.len()).await;
                if refused > 0 {
                    errors += refused;
                    submitted.fetch_sub(refused, Ordering::Relaxed);
                }
            }
            errors
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap_or(0);
    }
    let host = host_cpu_share(cpu_start, host_cpu());
    let _ = per_account;
    // Let in-flight transactions land (they count for latency, not for the rate).
    let drain_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_until
        && committed.load(Ordering::Relaxed) < submitted.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.abort();

    let lat = latencies.lock().expect("lock").clone();
    let in_window = lat.iter().filter(|(t, _)| *t <= end).count();
    let mut ms: Vec<f64> = lat.iter().map(|(_, l)| *l).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).expect("finite"));

    // Agreement: every node's hash at every height up to the lowest finalized height.
    let mut heights = Vec::new();
    for api in apis {
        let v = Conn::new(api).get("/v1/status").await?.json()?;
        heights.push(v["finalized_height"].as_u64().unwrap_or(0));
    }
    let upto = heights.iter().copied().min().unwrap_or(0);
    let mut all = Vec::new();
    for api in apis {
        all.push(hashes(api, upto).await?);
    }
    let agree = upto > 0 && all.windows(2).all(|w| w[0] == w[1]);
    let secs = duration.as_secs_f64();
    let nblocks = blocks.load(Ordering::Relaxed);
    Ok(json!({
        "validators": apis.len(),
        "duration_s": secs,
        "submitted": submitted.load(Ordering::Relaxed),
        "refused": refused,
        "committed": committed.load(Ordering::Relaxed),
        "committed_in_window": in_window,
        "committed_tps": (in_window as f64 / secs).round(),
        "finality_ms": {
            "p50": percentile(&ms, 0.50).round(),
            "p90": percentile(&ms, 0.90).round(),
            "p99": percentile(&ms, 0.99).round(),
            "max": ms.last().copied().unwrap_or(0.0).round(),
        },
        "blocks": nblocks,
        "avg_txs_per_block": committed.load(Ordering::Relaxed).checked_div(nblocks).unwrap_or(0),
        "agree": agree,
        "heights_compared": upto,
        "finalized_heights": heights,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "host_cpu": host,
        "load_average": {"start": load_start, "end": load_average()},
    }))
}

/// The host's aggregate CPU time counters (`/proc/stat`'s `cpu` line, in clock ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    busy: u64,
    idle: u64,
    steal: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq
/// steal (guest time is already counted in user). `None` if there is no such line.
pub(crate) fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        idle: at(3) + at(4),
        steal: at(7),
    })
}

/// The host's CPU counters now (`None` off Linux or if unreadable).
pub(crate) fn host_cpu() -> Option<CpuTimes> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// How the host's CPU time was spent between two samples, in percent of all of it: `busy`
/// (this benchmark and anything else running), `idle`, and `steal` (time the hypervisor gave
/// to other virtual machines while this one had work: on a shared host, the neighbours' load).
pub(crate) fn host_cpu_share(a: Option<CpuTimes>, b: Option<CpuTimes>) -> serde_json::Value {
    let (Some(a), Some(b)) = (a, b) else {
        return serde_json::Value::Null;
    };
    let d = |x: u64, y: u64| y.saturating_sub(x) as f64;
    let (busy, idle, steal) = (d(a.busy, b.busy), d(a.idle, b.idle), d(a.steal, b.steal));
    let total = (busy + idle + steal).max(1.0);
    let pct = |x: f64| (x * 1000.0 / total).round() / 10.0;
    json!({"busy_pct": pct(busy), "idle_pct": pct(idle), "steal_pct": pct(steal)})
}

/// A process's scheduler counters, summed over its threads: time on a CPU and time runnable
/// but waiting for one (`/proc/PID/task/*/schedstat`, nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SchedTimes {
    run_ns: u64,
    wait_ns: u64,
}

/// Parses one thread's `schedstat`: `run_ns wait_ns timeslices`. `None` if malformed.
pub(crate) fn parse_schedstat(text: &str) -> Option<SchedTimes> {
    let mut f = text.split_whitespace().map(str::parse::<u64>);
    Some(SchedTimes {
        run_ns: f.next()?.ok()?,
        wait_ns: f.next()?.ok()?,
    })
}

/// Process `pid`'s counters now, over the threads alive at this moment (`None` off Linux, or
/// once the process is gone). Threads that ended between two samples drop out of the second;
/// the nodes' threads live as long as the process, so this undercounts nothing measured here.
pub(crate) fn process_sched(pid: u32) -> Option<SchedTimes> {
    let mut sum = SchedTimes::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread ended while we listed
        };
        if let Some(t) = parse_schedstat(&text) {
            sum.run_ns += t.run_ns;
            sum.wait_ns += t.wait_ns;
        }
    }
    Some(sum)
}

/// How a process's threads spent `elapsed` between two samples, in percent of one CPU: `cpu`
/// (running) and `waiting` (runnable, queued behind other threads for a CPU). Waiting is what
/// a latency figure pays for a host shared with other work.
pub(crate) fn sched_share(
    a: Option<SchedTimes>,
    b: Option<SchedTimes>,
    elapsed: std::time::Duration,
) -> serde_json::Value {
    let (Some(a), Some(b)) = (a, b) else {
        return serde_json::Value::Null;
    };
    let ns = elapsed.as_nanos().max(1) as f64;
    let pct = |x: u64, y: u64| (y.saturating_sub(x) as f64 * 1000.0 / ns).round() / 10.0;
    json!({"cpu_pct": pct(a.run_ns, b.run_ns), "waiting_pct": pct(a.wait_ns, b.wait_ns)})
}

/// `/proc/loadavg`'s three averages, or empty if unreadable.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_parses_and_shares_are_percent_of_one_cpu() {
        let a = parse_schedstat("1000000000 500000000 42\n").expect("parses");
        let b = parse_schedstat("1500000000 2500000000 99").expect("parses");
        assert_eq!(parse_schedstat("12 x 3"), None);
        assert_eq!(parse_schedstat(""), None);
        let v = sched_share(Some(a), Some(b), std::time::Duration::from_secs(2));
        assert_eq!(v["cpu_pct"], 25.0);
        assert_eq!(v["waiting_pct"], 100.0);
        assert!(sched_share(None, Some(b), std::time::Duration::from_secs(1)).is_null());
    }

    #[test]
    fn this_process_has_scheduler_counters() {
        let me = process_sched(std::process::id()).expect("procfs on the test host");
        assert!(me.run_ns > 0);
    }

    #[test]
    fn host_cpu_share_counts_steal_apart_from_busy_and_idle() {
        let a = parse_proc_stat("cpu  100 0 20 300 10 0 5 5 0 0\ncpu0 1 2 3\n");
        // +45 user, +10 system, +5 softirq; +20 idle; +20 steal.
        let b = parse_proc_stat("cpu  145 0 30 320 10 0 10 25 0 0\n");
        assert_eq!(
            host_cpu_share(a, b),
            serde_json::json!({"busy_pct": 60.0, "idle_pct": 20.0, "steal_pct": 20.0})
        );
        assert!(parse_proc_stat("intr 1 2 3").is_none());
        assert_eq!(host_cpu_share(a, None), serde_json::Value::Null);
    }

    #[test]
    fn a_share_rotates_over_its_accounts_in_nonce_order_until_used_up() {
        let keys: Vec<Keypair> = (0..4u8).map(|i| Keypair::from_seed([i + 1; 32])).collect();
        let streams: Vec<Presigned> = keys
            .iter()
            .map(|k| Presigned::sign(k, 3, sign_audit))
            .collect();
        // Node 0 of 2 has accounts 0 and 2.
        let mut share = Share::of(0, 2, streams.len(), 0);
        let mut sent = Vec::new();
        let mut body = Vec::new();
        let n = share.fill(&streams, usize::MAX, 3, &mut body, |h| sent.push(h));
        assert_eq!(n, 3);
        assert_eq!(
            sent,
            [streams[0].hash(0), streams[2].hash(0), streams[0].hash(1)]
        );
        let expected_bytes: usize = [(0, 0), (2, 0), (0, 1)]
            .iter()
            .map(|&(a, i)| streams[a].tx(i).len())
            .sum();
        assert_eq!(body.len(), expected_bytes);
        // The next batch goes on where this one stopped, up to the limit of 2 per account.
        sent.clear();
        assert_eq!(
            share.fill(&streams, 2, 10, &mut Vec::new(), |h| sent.push(h)),
            1
        );
        assert_eq!(sent, [streams[2].hash(1)]);
        assert_eq!(share.fill(&streams, 2, 10, &mut Vec::new(), |_| {}), 0);
        // Without a limit the rest of each stream, then nothing.
        assert_eq!(
            share.fill(&streams, usize::MAX, 10, &mut Vec::new(), |_| {}),
            2
        );
        assert_eq!(
            share.fill(&streams, usize::MAX, 10, &mut Vec::new(), |_| {}),
            0
        );
        // A node with no accounts sends nothing.
        let mut none = Share::of(5, 6, 4, 0);
        assert_eq!(
            none.fill(&streams, usize::MAX, 10, &mut Vec::new(), |_| {}),
            0
        );
    }
}
