//! `phoenix ledger bench-replica`: read-replica queries under concurrent load (issue 10 item 5).
//!
//! Real processes on loopback: N validators (`ledger run`) and one replica (`ledger replica`)
//! following them. Phases:
//!
//! 1. **Fill**: `--records` signed audit records (pre-signed before the validators start) sent
//!    with batched `POST /v1/txs` at the ledger's full rate, as `ledger bench` does (a closed
//!    loop with at most `--window` in flight, counted on node 0's block stream), until every
//!    account's nonce in the finalized state says all of them are committed; then until the
//!    replica has caught up.
//! 2. **Measure** for `--duration`: a fixed-rate load of `--rate` tx/s on the validators (one
//!    paced sender per validator) while `--clients` keep-alive clients query the replica's
//!    `GET /v1/state/audit/{fleet}/{seq}` and `GET /v1/tx/{hash}`, alternately, for random
//!    committed records (closed loop; `--query-rate` paces them instead). Every answer must be
//!    200. The replica's lag behind node 0 is sampled every 250 ms.
//!
//! Reported: p50/p90/p99/max latency and throughput per endpoint, the achieved commit rate (the
//! accounts' nonces in the finalized state before and after), the lag, peak RSS of the replica
//! and of each validator, and the load average at start, at the measurement's start and at end.

use crate::bench::{
    Presigned, Procs, Share, host_cpu, host_cpu_share, load_average, parse_duration, peak_rss_mb,
    percentile, post_batch, process_sched, sched_share, sign_audit, spawn_node, wait_height,
};
use crate::config::{TestnetSpec, write_testnet};
use crate::http::{Conn, sse};
use anyhow::{Context, Result, bail};
use phoenix_ledger_types::crypto::Keypair;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Arguments of `phoenix ledger bench-replica`.
#[derive(Debug, clap::Args)]
pub struct BenchReplicaArgs {
    /// Validators to start.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Audit records to fill the state with before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Quick mode: 50,000 records and a 10 s measurement (overrides --records, --duration).
    #[arg(long)]
    pub quick: bool,
    /// Measurement window, e.g. 30s, 2m.
    #[arg(long, default_value = "30s")]
    pub duration: String,
    /// Transactions per second sent to the validators while measuring (fixed rate).
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// Concurrent query clients on the replica, one kept-alive connection each.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Total queries per second over all clients (paced); default: closed loop, each client
    /// sends its next query when the last one is answered.
    #[arg(long)]
    pub query_rate: Option<u64>,
    /// Output: json or text.
    #[arg(short = 'o', long, default_value = "text")]
    pub output: String,
    /// Working directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// First validator API port.
    #[arg(long, default_value_t = 18720)]
    pub api_base_port: u16,
    /// First validator P2P port.
    #[arg(long, default_value_t = 19720)]
    pub p2p_base_port: u16,
    /// The replica's API port.
    #[arg(long, default_value_t = 18790)]
    pub replica_port: u16,
    /// Client accounts signing transactions.
    #[arg(long, default_value_t = 64)]
    pub accounts: usize,
    /// Fill: most submitted-but-uncommitted transactions.
    #[arg(long, default_value_t = 3_000)]
    pub window: u64,
    /// Fill: transactions per submission request.
    #[arg(long, default_value_t = 250)]
    pub batch: usize,
    /// Minimum block interval, ms.
    #[arg(long, default_value_t = 100)]
    pub min_block_ms: u64,
    /// Executable to start validators and the replica with (default: this one).
    #[arg(long)]
    pub exe: Option<PathBuf>,
    /// CPUs (comma-separated indices) to run the replica on; the validators, the load and the
    /// query clients then run on the other CPUs. Default: everything shares every CPU. In
    /// production a replica runs at a regional site, not on the validators' host; this is the
    /// nearest a one-host benchmark comes to that.
    #[arg(long, value_delimiter = ',')]
    pub replica_cpus: Vec<usize>,
    /// Niceness (0-19) to start the validators at, below the replica and the query clients
    /// (both at this process's). Default 0: all equal. On one host the validators stand in for
    /// the network a regional replica follows over the WAN; a higher niceness keeps them from
    /// holding a CPU when the replica or a client wakes up, as they could not if they ran on
    /// other hosts. The report's `sched` says how long each process waited for a CPU.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub validators_nice: i32,
}

/// The CPUs this thread may run on.
fn cpus_allowed() -> Result<Vec<usize>> {
    let set =
        rustix::thread::sched_getaffinity(None).context("reading this thread's CPU affinity")?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|c| set.is_set(*c))
        .collect())
}

/// Restricts this thread, and so the processes and threads it starts after, to `cpus`.
fn run_on(cpus: &[usize]) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    for c in cpus {
        set.set(*c);
    }
    rustix::thread::sched_setaffinity(None, &set)
        .with_context(|| format!("restricting the benchmark to CPUs {cpus:?}"))
}

/// `--replica-cpus` split against the CPUs allowed: (the replica's, everything else's).
/// Empty when the flag is not given.
fn split_cpus(allowed: &[usize], replica: &[usize]) -> Result<(Vec<usize>, Vec<usize>)> {
    if replica.is_empty() {
        return Ok((vec![], vec![]));
    }
    if let Some(c) = replica.iter().find(|c| !allowed.contains(c)) {
        anyhow::bail!("--replica-cpus: CPU {c} is not one this process may use ({allowed:?})");
    }
    let others: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|c| !replica.contains(c))
        .collect();
    if others.is_empty() {
        anyhow::bail!(
            "--replica-cpus {replica:?} leaves no CPU for the validators (allowed: {allowed:?})"
        );
    }
    Ok((replica.to_vec(), others))
}

fn spawn_replica(exe: &Path, dir: &Path, from: &[String], port: u16) -> Result<Child> {
    let home = dir.join("replica");
    let log = std::fs::File::create(dir.join("replica.log"))?;
    Command::new(exe)
        .args(["ledger", "replica", "--home"])
        .arg(&home)
        .arg("--from")
        .arg(from.join(","))
        .arg("--genesis")
        .arg(dir.join("node-0").join("genesis.json"))
        .args(["--api-port", &port.to_string()])
        .env(
            "RUST_LOG",
            std::env::var("PHOENIX_NODE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting the replica with {}", exe.display()))
}

/// Starts the validators, at `nice` when it is not 0.
fn spawn_validators(exe: &Path, dir: &Path, count: usize, nice: i32) -> Result<Vec<Child>> {
    let exe = exe.to_path_buf();
    let spawn_all = || {
        (0..count)
            .map(|i| spawn_node(&exe, &dir.join(format!("node-{i}"))))
            .collect::<Result<Vec<_>>>()
    };
    if nice == 0 {
        return spawn_all();
    }
    // On Linux a niceness belongs to a thread, and a child starts at its forking thread's: so
    // a thread of its own, lowered, starts them, and this one keeps its own for the replica.
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::process::setpriority_process(None, nice)
                .with_context(|| format!("setting niceness {nice} to start the validators at"))?;
            spawn_all()
        })
        .join()
        .unwrap_or_else(|_| bail!("the thread starting the validators panicked"))
    })
}

/// The nodes measured: their APIs, and their processes (whose scheduling the report gives).
struct Nodes<'a> {
    apis: &'a [String],
    replica: &'a str,
    validator_pids: Vec<u32>,
    replica_pid: u32,
}

/// Runs the benchmark and prints one report.
///
/// # Errors
/// Setup failures (ports in use, nodes not starting), a fill or catch-up that does not finish.
pub fn run_bench_replica(mut args: BenchReplicaArgs) -> Result<ExitCode> {
    if args.quick {
        args.records = 50_000;
        args.duration = "10s".into();
    }
    let duration = parse_duration(&args.duration)?;
    let (replica_cpus, other_cpus) = split_cpus(&cpus_allowed()?, &args.replica_cpus)?;
    if !other_cpus.is_empty() {
        // Before any thread or process is started: they inherit it.
        run_on(&other_cpus)?;
    }
    let load_start = load_average();
    let tmp = args.dir.is_none();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("phoenix-replica-bench-{}", std::process::id()))
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

    // Nonces 0..fill of every account fill the state; fill.. are the measured load.
    let n_acc = args.accounts.max(1);
    let fill = (args.records as usize).div_ceil(n_acc);
    let load = ((args.rate * duration.as_secs().max(1)) as usize * 3 / 2).div_ceil(n_acc) + 1;
    let t0 = Instant::now();
    let streams: Vec<Presigned> = std::thread::scope(|s| {
        let hs: Vec<_> = keys
            .chunks(keys.len().div_ceil(2).max(1))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|k| Presigned::sign(k, fill + load, sign_audit))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("signer thread"))
            .collect()
    });
    eprintln!(
        "bench-replica: pre-signed {} transactions in {:?} (load average {})",
        (fill + load) * n_acc,
        t0.elapsed(),
        load_average()
    );

    let mut procs = Procs(spawn_validators(
        &exe,
        &dir,
        args.validators,
        args.validators_nice,
    )?);
    if !replica_cpus.is_empty() {
        run_on(&replica_cpus)?;
    }
    let replica = spawn_replica(&exe, &dir, &cc.apis, args.replica_port);
    if !other_cpus.is_empty() {
        run_on(&other_cpus)?;
    }
    procs.0.push(replica?);
    let replica_api = format!("http://127.0.0.1:{}", args.replica_port);
    eprintln!(
        "bench-replica: started {} validators and a replica ({replica_api}) under {}",
        args.validators,
        dir.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let streams = Arc::new(streams);
    let nodes = Nodes {
        apis: &cc.apis,
        replica: &replica_api,
        validator_pids: procs.0[..args.validators].iter().map(Child::id).collect(),
        replica_pid: procs.0[args.validators].id(),
    };
    let mut report = rt.block_on(run(&args, &nodes, streams, &keys, fill, duration))?;
    report["validators_nice"] = json!(args.validators_nice);
    report["replica_cpus"] = json!(replica_cpus);
    report["other_cpus"] = json!(other_cpus);
    report["load_average"] = json!({
        "start": load_start,
        "measure_start": report["load_average_measure_start"].take(),
        "end": load_average(),
    });
    if let Some(o) = report.as_object_mut() {
        o.remove("load_average_measure_start");
    }
    let n = procs.0.len();
    report["replica_peak_rss_mb"] = peak_rss_mb(procs.0[n - 1].id()).into();
    report["validator_peak_rss_mb"] = procs.0[..n - 1]
        .iter()
        .map(|c| peak_rss_mb(c.id()))
        .collect::<Vec<_>>()
        .into();
    drop(procs);
    drop(rt);
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

/// Sum of the accounts' nonces in `api`'s finalized state (their committed transactions), and
/// each one.
async fn nonces(api: &str, keys: &[Keypair]) -> Result<Vec<u64>> {
    let mut c = Conn::new(api);
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let r = c
            .get(&format!("/v1/state/accounts/{}", k.public().to_hex()))
            .await?;
        out.push(if r.status == 200 {
            r.json()?["value"]["nonce"].as_u64().unwrap_or(0)
        } else {
            0
        });
    }
    Ok(out)
}

async fn height(c: &mut Conn) -> Option<u64> {
    c.get("/v1/status").await.ok()?.json().ok()?["finalized_height"].as_u64()
}

#[allow(clippy::too_many_lines)]
async fn run(
    args: &BenchReplicaArgs,
    nodes: &Nodes<'_>,
    streams: Arc<Vec<Presigned>>,
    keys: &[Keypair],
    fill: usize,
    duration: Duration,
) -> Result<serde_json::Value> {
    let (apis, replica) = (nodes.apis, nodes.replica);
    wait_height(apis, 1, Duration::from_secs(60)).await?;
    let n = apis.len();

    // Phase 1: fill at the full rate, closed loop on node 0's block stream.
    let t_fill = Instant::now();
    let submitted = Arc::new(AtomicU64::new(0));
    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (committed, stop, api) = (committed.clone(), stop.clone(), apis[0].clone());
        tokio::spawn(async move {
            let _ = sse(&api, "/v1/stream/blocks", |event, data| {
                if event == "block"
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
                {
                    let k = v["transactions"].as_array().map_or(0, Vec::len) as u64;
                    committed.fetch_add(k, Ordering::Relaxed);
                }
                !stop.load(Ordering::Relaxed)
            })
            .await;
        })
    };
    let mut tasks = Vec::new();
    for (node, api) in apis.iter().enumerate() {
        let mut share = Share::of(node, n, streams.len(), 0);
        let (streams, submitted, committed, api) = (
            streams.clone(),
            submitted.clone(),
            committed.clone(),
            api.clone(),
        );
        let (window, batch) = (args.window / n as u64, args.batch);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(&api);
            let mut refused = 0u64;
            loop {
                let in_flight = submitted
                    .load(Ordering::Relaxed)
                    .saturating_sub(committed.load(Ordering::Relaxed));
                if in_flight / n as u64 > window {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let mut body = Vec::with_capacity(batch * 300);
                let count = share.fill(&streams, fill, batch, &mut body, |_| {});
                if count == 0 {
                    break;
                }
                submitted.fetch_add(count as u64, Ordering::Relaxed);
                let r = post_batch(&mut conn, &body, count).await;
                if r > 0 {
                    refused += r;
                    submitted.fetch_sub(r, Ordering::Relaxed);
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap_or(0);
    }
    if refused > 0 {
        eprintln!("bench-replica: {refused} fill transactions refused (their accounts stall)");
    }
    // Done when every account's nonce says its fill is committed (bounded wait).
    let target = (fill * keys.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(60 + args.records / 1_000);
    let mut counts;
    loop {
        counts = nonces(&apis[0], keys).await?;
        let done: u64 = counts.iter().map(|c| (*c).min(fill as u64)).sum();
        if done >= target {
            break;
        }
        if Instant::now() > deadline {
            bail!("fill: only {done} of {target} records committed by the deadline");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.abort();
    let fill_s = t_fill.elapsed().as_secs_f64();
    let mut v0 = Conn::new(&apis[0]);
    let fill_height = height(&mut v0).await.unwrap_or(0);
    eprintln!(
        "bench-replica: filled {target} records in {fill_s:.1} s ({:.0} tx/s), height {fill_height}; load average {}",
        target as f64 / fill_s,
        load_average()
    );

    // The replica catches up (it followed during the fill).
    let t_catch = Instant::now();
    let mut rc = Conn::new(replica);
    let catch_deadline = t_catch + Duration::from_secs(600);
    loop {
        if height(&mut rc).await.unwrap_or(0) >= fill_height {
            break;
        }
        if Instant::now() > catch_deadline {
            bail!("the replica did not reach height {fill_height} in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catchup_s = t_catch.elapsed().as_secs_f64();
    // Every key queried was committed in the fill: nonces 0..fill of every account.
    let on_replica: u64 = nonces(replica, keys).await?.iter().sum();
    eprintln!(
        "bench-replica: replica at height {fill_height} {catchup_s:.1} s after the fill, {on_replica} records; measuring for {duration:?}"
    );

    // Phase 2: fixed-rate load on the validators, queries on the replica.
    let load_measure_start = load_average();
    let cpu_start = host_cpu();
    let me = std::process::id();
    let sched_of = |pids: &[u32]| pids.iter().map(|p| process_sched(*p)).collect::<Vec<_>>();
    let sched_start = (
        sched_of(&nodes.validator_pids),
        process_sched(nodes.replica_pid),
        process_sched(me),
    );
    let before: u64 = nonces(&apis[0], keys).await?.iter().sum();
    let start = Instant::now();
    let end = start + duration;
    let mut senders = Vec::new();
    let per_batch = 50usize;
    let period = Duration::from_secs_f64(per_batch as f64 * n as f64 / args.rate.max(1) as f64);
    for (node, api) in apis.iter().enumerate() {
        // The load continues each account's stream after its fill.
        let mut share = Share::of(node, n, streams.len(), fill);
        let (streams, api) = (streams.clone(), api.clone());
        senders.push(tokio::spawn(async move {
            let mut conn = Conn::new(&api);
            let (mut sent, mut refused) = (0u64, 0u64);
            let mut k = 0u32;
            // Staggered so the validators do not all receive in the same instant.
            let t0 = start + period.mul_f64(node as f64 / n as f64);
            while Instant::now() < end {
                tokio::time::sleep_until((t0 + period * k).into()).await;
                k += 1;
                let mut body = Vec::with_capacity(per_batch * 300);
                let count = share.fill(&streams, usize::MAX, per_batch, &mut body, |_| {});
                if count == 0 {
                    break; // pre-signed supply exhausted
                }
                sent += count as u64;
                refused += post_batch(&mut conn, &body, count).await;
            }
            (sent, refused)
        }));
    }
    // Lag sampler: node 0's finalized height minus the replica's.
    let lag = {
        let (api, replica) = (apis[0].clone(), replica.to_string());
        tokio::spawn(async move {
            let (mut a, mut b) = (Conn::new(&api), Conn::new(&replica));
            let mut lags = Vec::new();
            let mut first = None;
            let mut last = 0;
            while Instant::now() < end {
                if let (Some(v), Some(r)) = (height(&mut a).await, height(&mut b).await) {
                    first.get_or_insert(v);
                    last = v;
                    lags.push(v.saturating_sub(r) as f64);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (lags, last.saturating_sub(first.unwrap_or(last)))
        })
    };
    // Query clients.
    let fleets: Arc<Vec<String>> = Arc::new(
        keys.iter()
            .map(|k| format!("bench-{}", &k.public().to_hex()[..8]))
            .collect(),
    );
    let mut clients = Vec::new();
    let pace = args
        .query_rate
        .map(|r| Duration::from_secs_f64(args.clients as f64 / r.max(1) as f64));
    let n_clients = args.clients.max(1);
    for c in 0..args.clients {
        let (streams, fleets, replica) = (streams.clone(), fleets.clone(), replica.to_string());
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let mut conn = Conn::new(&replica);
            let (mut state_us, mut tx_us) = (Vec::new(), Vec::new());
            let mut errors = 0u64;
            let mut k = 0u32;
            while Instant::now() < end {
                if let Some(p) = pace {
                    // Staggered: client c sends at c/clients of each period, so the clients
                    // do not all send at the same instant.
                    let offset = p.mul_f64(c as f64 / n_clients as f64);
                    tokio::time::sleep_until((start + offset + p * k).into()).await;
                }
                let a = rng.gen_range(0..streams.len());
                let nonce = rng.gen_range(0..fill);
                let is_tx = (k + c as u32) % 2 == 1;
                k += 1;
                let path = if is_tx {
                    format!("/v1/tx/{}", streams[a].hash(nonce).to_hex())
                } else {
                    format!("/v1/state/audit/{}/{}", fleets[a], nonce + 1)
                };
                let t = Instant::now();
                let ok = matches!(conn.get(&path).await, Ok(r) if r.status == 200);
                let us = t.elapsed().as_micros() as f64;
                if !ok {
                    errors += 1;
                }
                if is_tx { &mut tx_us } else { &mut state_us }.push(us);
            }
            (state_us, tx_us, errors)
        }));
    }
    let (mut state_us, mut tx_us, mut query_errors) = (Vec::new(), Vec::new(), 0u64);
    for c in clients {
        let (s, t, e) = c.await?;
        state_us.extend(s);
        tx_us.extend(t);
        query_errors += e;
    }
    let (mut sent, mut load_refused) = (0, 0);
    for s in senders {
        let (a, r) = s.await?;
        sent += a;
        load_refused += r;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let host = host_cpu_share(cpu_start, host_cpu());
    let took = start.elapsed();
    let sched = json!({
        "replica": sched_share(sched_start.1, process_sched(nodes.replica_pid), took),
        "validators": sched_start.0.iter().zip(sched_of(&nodes.validator_pids))
            .map(|(a, b)| sched_share(*a, b, took)).collect::<Vec<_>>(),
        "bench_clients": sched_share(sched_start.2, process_sched(me), took),
    });
    let after: u64 = nonces(&apis[0], keys).await?.iter().sum();
    let (mut lags, blocks) = lag.await?;
    lags.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        json!({
            "queries": v.len(),
            "per_s": (v.len() as f64 / elapsed).round(),
            "p50_ms": (percentile(v, 0.50) / 10.0).round() / 100.0,
            "p90_ms": (percentile(v, 0.90) / 10.0).round() / 100.0,
            "p99_ms": (percentile(v, 0.99) / 10.0).round() / 100.0,
            "max_ms": (v.last().copied().unwrap_or(0.0) / 10.0).round() / 100.0,
        })
    };
    Ok(json!({
        "validators": n,
        "records": target,
        "fill_s": (fill_s * 10.0).round() / 10.0,
        "fill_tps": (target as f64 / fill_s).round(),
        "replica_catchup_after_fill_s": (catchup_s * 10.0).round() / 10.0,
        "duration_s": elapsed,
        "clients": args.clients,
        "query_rate": args.query_rate,
        "state": summary(&mut state_us),
        "tx": summary(&mut tx_us),
        "query_errors": query_errors,
        "load_rate_target": args.rate,
        "load_sent": sent,
        "load_refused": load_refused,
        "committed_tps": ((after - before) as f64 / elapsed).round(),
        "blocks_per_s": (blocks as f64 / elapsed * 10.0).round() / 10.0,
        "replica_lag_blocks": {
            "p50": percentile(&lags, 0.50),
            "p99": percentile(&lags, 0.99),
            "max": lags.last().copied().unwrap_or(0.0),
            "samples": lags.len(),
        },
        "load_average_measure_start": load_measure_start,
        "host_cpu": host,
        "sched": sched,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::split_cpus;

    #[test]
    fn replica_cpus_split_off_the_rest_and_refuse_what_leaves_nothing() {
        assert_eq!(split_cpus(&[0, 1], &[1]).unwrap(), (vec![1], vec![0]));
        assert_eq!(split_cpus(&[0, 1], &[]).unwrap(), (vec![], vec![]));
        let e = split_cpus(&[0, 1], &[0, 1]).unwrap_err().to_string();
        assert!(e.contains("leaves no CPU"), "{e}");
        let e = split_cpus(&[0, 1], &[7]).unwrap_err().to_string();
        assert!(e.contains("CPU 7"), "{e}");
    }
}
