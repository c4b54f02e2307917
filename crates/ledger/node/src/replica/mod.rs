//! Read replicas: `phoenix ledger replica --home D --from URL[,URL...] [--genesis FILE]
//! [--api-port P]`.
//!
//! A replica is a non-voting node with no key. It follows finalized blocks over HTTP from
//! validators or other replicas (`GET /v1/sync/{height}`, which every node serves: blocks with
//! their finality certificates in the light client's form), checks each certificate against
//! the validator set of its epoch as the replica's own state derives it ([`follow`]), executes
//! every block with the validators' execution code (`phoenix_ledger_types::exec`), appends it
//! to its block log and syncs the log ([`store`]) before applying it, and serves the validators'
//! read API (`crate::api::router`) in read-only mode: `POST /v1/tx` and `POST /v1/txs` answer
//! 405 naming the upstreams to submit to. ADR 005 says what it trusts.
//!
//! - [`follow`]: the pure core (what the next block must be, certificate and epoch checks);
//! - [`store`]: the block log (`data/blocks.log`), torn tails cut at open;
//! - this module: the home (`replica.json`, `genesis.json`), [`Upstream`] and its HTTP
//!   implementation, the [`Follower`] that verifies, persists and applies, and [`run_replica`].
//!
//! # Guarantees
//! Nothing is applied (visible in the API) before it is on disk; nothing is stored that did not
//! verify. A block an upstream sends that does not verify is refused, logged at error level
//! with the upstream and the reason, counted (`phoenix_ledger_replica_rejected_total`) and shown
//! in `/v1/status` (`replica.last_rejection`); the replica then asks the next upstream.

pub mod follow;
pub mod store;

use crate::api::{self, ApiState, BlockSource, EngineMetrics, Finality, SyncSource};
use crate::app::{apply_finalized, error_chain};
use crate::block::LedgerBlock;
use crate::http::Conn;
use crate::proofs::{CertSource, Certified};
use crate::shared::{Shared, raise};
use anyhow::{Context, Result, bail};
use follow::{Expect, FollowError, MAX_SEGMENT, SyncRecord, check_segment, split_runs};
use futures::future::BoxFuture;
use phoenix_ledger_types::codec::{Reader, Writer};
use phoenix_ledger_types::crypto::PublicKey;
use phoenix_ledger_types::exec::{Genesis, LedgerState, execute_block, genesis_block};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::BlockLog;
use tracing::{error, info, warn};

/// The API port a replica listens on when `--api-port` was never given.
pub const DEFAULT_API_PORT: u16 = 8800;
/// How long a caught-up replica waits before asking again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long one request to an upstream may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of records one `/v1/sync` answer carries (at least one record is always sent).
pub const MAX_SYNC_BYTES: usize = 8 * 1024 * 1024;

/// `replica.json` in a replica's home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaConfig {
    /// Upstream API URLs (validators or replicas), tried in turn.
    pub from: Vec<String>,
    /// API listen address (loopback).
    pub api_listen: SocketAddr,
}

/// A loaded replica home.
#[derive(Debug, Clone)]
pub struct ReplicaHome {
    /// The directory.
    pub dir: PathBuf,
    /// `replica.json`.
    pub config: ReplicaConfig,
    /// `genesis.json`.
    pub genesis: Genesis,
}

fn parse_genesis(bytes: &[u8], what: &Path) -> Result<Genesis> {
    let g: Genesis =
        serde_json::from_slice(bytes).with_context(|| format!("parsing {}", what.display()))?;
    LedgerState::from_genesis(&g).map_err(|e| anyhow::anyhow!("{}: {e}", what.display()))?;
    Ok(g)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn check_urls(from: &[String]) -> Result<()> {
    if from.is_empty() {
        bail!("--from needs at least one upstream API URL (a validator's or a replica's)");
    }
    let bad: Vec<&String> = from
        .iter()
        .filter(|u| {
            !u.starts_with("http://") || crate::http::authority(u).parse::<SocketAddr>().is_err()
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "--from takes http://IP:PORT URLs; not one: {}",
            bad.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

impl ReplicaHome {
    /// Loads a replica home, creating it on the first run.
    ///
    /// The first run needs `genesis` (the network's genesis file, copied byte for byte) and
    /// `from`; later runs need neither. A `from` or `api_port` given on a later run replaces the
    /// stored one (and is saved); a `genesis` given on a later run must be the stored one.
    ///
    /// # Errors
    /// A validator's home (it has `validator.key`), a first run without `--genesis` or
    /// `--from`, another genesis than the stored one, malformed URLs or files.
    pub fn prepare(
        dir: &Path,
        from: Option<Vec<String>>,
        genesis: Option<&Path>,
        api_port: Option<u16>,
    ) -> Result<Self> {
        if dir.join("validator.key").exists() {
            bail!(
                "{} is a validator's home (it has validator.key); a replica needs a home of its own",
                dir.display()
            );
        }
        if api_port == Some(0) {
            bail!("--api-port 0 is not a port");
        }
        let cfg_path = dir.join("replica.json");
        let gen_path = dir.join("genesis.json");
        let given = match genesis {
            Some(p) => {
                let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                Some((parse_genesis(&bytes, p)?, bytes, p))
            }
            None => None,
        };
        if let Some(f) = &from {
            check_urls(f)?;
        }
        if !cfg_path.exists() {
            let mut problems = Vec::new();
            if given.is_none() {
                problems.push("--genesis FILE (the network's genesis.json)");
            }
            if from.is_none() {
                problems.push("--from URL[,URL...]");
            }
            if !problems.is_empty() {
                bail!(
                    "{} is not a replica home yet; its first run needs {}",
                    dir.display(),
                    problems.join(" and ")
                );
            }
            let (g, bytes, _) = given.expect("checked");
            std::fs::create_dir_all(dir.join("data"))
                .with_context(|| format!("creating {}", dir.display()))?;
            write_atomically(&gen_path, &bytes)?;
            let config = ReplicaConfig {
                from: from.expect("checked"),
                api_listen: SocketAddr::from((
                    [127, 0, 0, 1],
                    api_port.unwrap_or(DEFAULT_API_PORT),
                )),
            };
            write_atomically(&cfg_path, &serde_json::to_vec_pretty(&config)?)?;
            return Ok(Self {
                dir: dir.to_path_buf(),
                config,
                genesis: g,
            });
        }
        let mut config: ReplicaConfig = serde_json::from_slice(
            &std::fs::read(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?,
        )
        .with_context(|| format!("parsing {}", cfg_path.display()))?;
        let stored = parse_genesis(
            &std::fs::read(&gen_path).with_context(|| format!("reading {}", gen_path.display()))?,
            &gen_path,
        )?;
        if let Some((g, _, p)) = &given
            && *g != stored
        {
            bail!(
                "{} is not the genesis of this replica ({}, chain {:?}); a replica follows one chain",
                p.display(),
                gen_path.display(),
                stored.chain_id
            );
        }
        if !config.api_listen.ip().is_loopback() {
            bail!(
                "{}: api_listen must be a loopback address",
                cfg_path.display()
            );
        }
        check_urls(&config.from).with_context(|| cfg_path.display().to_string())?;
        let mut changed = false;
        if let Some(f) = from
            && f != config.from
        {
            config.from = f;
            changed = true;
        }
        if let Some(p) = api_port
            && p != config.api_listen.port()
        {
            config.api_listen.set_port(p);
            changed = true;
        }
        if changed {
            write_atomically(&cfg_path, &serde_json::to_vec_pretty(&config)?)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            genesis: stored,
        })
    }

    /// `data/blocks.log`.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("data").join("blocks.log")
    }
}

/// One answer of `GET /v1/sync/{height}`: the upstream's finalized height and the records from
/// the asked height on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The upstream's finalized height.
    pub finalized_height: u64,
    /// Consecutive records from the asked height.
    pub records: Vec<SyncRecord>,
}

impl Batch {
    /// `u64 finalized_height || u32 count || (u32 len || record)*`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.finalized_height);
        w.u32(u32::try_from(self.records.len()).unwrap_or(u32::MAX));
        for r in &self.records {
            w.bytes(&r.encode());
        }
        w.finish()
    }

    /// Decodes [`Self::encode`]'s bytes.
    ///
    /// # Errors
    /// Malformed bytes, or more than [`MAX_SEGMENT`] records.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(bytes);
        let finalized_height = r.u64("finalized height").map_err(|e| e.to_string())?;
        let n = r.u32("record count").map_err(|e| e.to_string())? as usize;
        if n > MAX_SEGMENT {
            return Err(format!("{n} records is more than {MAX_SEGMENT}"));
        }
        let mut records = Vec::with_capacity(n);
        for i in 0..n {
            let raw = r
                .bytes("record", store::MAX_ENTRY)
                .map_err(|e| e.to_string())?;
            records.push(SyncRecord::decode(raw).map_err(|e| format!("record {i}: {e}"))?);
        }
        r.finish().map_err(|e| e.to_string())?;
        Ok(Batch {
            finalized_height,
            records,
        })
    }
}

/// Where a replica gets finalized blocks from.
pub trait Upstream: Send + Sync {
    /// How to name it in logs and status (its URL).
    fn name(&self) -> &str;
    /// Records from `height` on (possibly none when the upstream has nothing newer).
    fn fetch(&self, height: u64) -> BoxFuture<'_, Result<Batch, String>>;
}

/// An upstream node's HTTP API.
pub struct HttpUpstream {
    url: String,
    conn: tokio::sync::Mutex<Conn>,
}

impl HttpUpstream {
    /// The API at `url` (`http://host:port`).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            conn: tokio::sync::Mutex::new(Conn::new(url)),
        }
    }
}

impl Upstream for HttpUpstream {
    fn name(&self) -> &str {
        &self.url
    }
    fn fetch(&self, height: u64) -> BoxFuture<'_, Result<Batch, String>> {
        Box::pin(async move {
            let mut c = self.conn.lock().await;
            let path = format!("/v1/sync/{height}?max={MAX_SEGMENT}");
            let r = tokio::time::timeout(FETCH_TIMEOUT, c.get(&path))
                .await
                .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))?
                .map_err(|e| format!("{e:#}"))?;
            if r.status != 200 {
                let why = serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_default();
                return Err(format!("{path} answered HTTP {} {why}", r.status));
            }
            Batch::decode(&r.body).map_err(|e| format!("{path}: malformed answer: {e}"))
        })
    }
}

/// A refusal, as `/v1/status` shows the latest one.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// The upstream that sent it.
    pub upstream: String,
    /// The first height of the refused run.
    pub height: u64,
    /// Why.
    pub reason: String,
    /// When (Unix ms; for people reading the status).
    pub at_unix_ms: u64,
}

#[derive(Debug, Default)]
struct StatusInner {
    last_rejection: Option<Rejection>,
    /// Per upstream: last successful contact and last error.
    contact: Vec<(Option<Instant>, Option<String>)>,
}

/// What a replica reports about its following (in `/v1/status`, `/metrics`, readiness).
#[derive(Debug)]
pub struct ReplicaStatus {
    /// The upstreams, in the order tried.
    pub upstreams: Vec<String>,
    inner: Mutex<StatusInner>,
    /// Runs refused because they did not verify.
    pub rejected: AtomicU64,
    /// Failed requests to upstreams.
    pub fetch_errors: AtomicU64,
}

impl ReplicaStatus {
    /// A status for these upstreams.
    pub fn new(upstreams: Vec<String>) -> Self {
        let contact = vec![(None, None); upstreams.len()];
        Self {
            upstreams,
            inner: Mutex::new(StatusInner {
                last_rejection: None,
                contact,
            }),
            rejected: AtomicU64::new(0),
            fetch_errors: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn contact(&self, i: usize, err: Option<String>) {
        let mut g = self.lock();
        if let Some(c) = g.contact.get_mut(i) {
            if err.is_none() {
                c.0 = Some(Instant::now());
            }
            c.1 = err;
        }
    }

    /// The latest refusal.
    pub fn last_rejection(&self) -> Option<Rejection> {
        self.lock().last_rejection.clone()
    }

    /// Upstreams that answered within the last 10 s.
    pub fn live_upstreams(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .contact
            .iter()
            .filter(|(t, _)| t.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)))
            .count()
    }

    /// The `replica` part of `/v1/status`.
    pub fn json(&self) -> serde_json::Value {
        let g = self.lock();
        let now = Instant::now();
        let ups: Vec<_> = self
            .upstreams
            .iter()
            .zip(&g.contact)
            .map(|(u, (t, e))| {
                serde_json::json!({
                    "url": u,
                    "last_contact_ms_ago": t.map(|t| now.duration_since(t).as_millis() as u64),
                    "last_error": e,
                })
            })
            .collect();
        serde_json::json!({
            "upstreams": ups,
            "rejected": self.rejected.load(Ordering::Relaxed),
            "fetch_errors": self.fetch_errors.load(Ordering::Relaxed),
            "last_rejection": g.last_rejection,
        })
    }

    /// Prometheus lines for the replica's own counters.
    pub fn metrics(&self) -> String {
        format!(
            "# HELP phoenix_ledger_replica_rejected_total Runs of blocks from upstreams refused because they did not verify.\n\
             # TYPE phoenix_ledger_replica_rejected_total counter\n\
             phoenix_ledger_replica_rejected_total {}\n\
             # HELP phoenix_ledger_replica_fetch_errors_total Failed requests to upstreams.\n\
             # TYPE phoenix_ledger_replica_fetch_errors_total counter\n\
             phoenix_ledger_replica_fetch_errors_total {}\n\
             # HELP phoenix_ledger_replica_live_upstreams Upstreams that answered within 10 s.\n\
             # TYPE phoenix_ledger_replica_live_upstreams gauge\n\
             phoenix_ledger_replica_live_upstreams {}\n",
            self.rejected.load(Ordering::Relaxed),
            self.fetch_errors.load(Ordering::Relaxed),
            self.live_upstreams(),
        )
    }
}

/// Why a step of following failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The upstream could not be asked, or answered something that is not a batch.
    #[error("fetching from {upstream}: {why}")]
    Fetch {
        /// Which.
        upstream: String,
        /// Why.
        why: String,
    },
    /// The upstream sent blocks that do not verify: refused, nothing applied.
    #[error("rejected blocks from {upstream}: {source}")]
    Rejected {
        /// Which.
        upstream: String,
        /// Why.
        #[source]
        source: FollowError,
    },
    /// The block log cannot be written: the replica stops.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Verifies, persists and applies finalized blocks to a replica's state.
pub struct Follower {
    shared: Arc<Shared>,
    log: Arc<BlockLog>,
    expect: Expect,
}

impl Follower {
    /// A follower at `shared`'s finalized tip (genesis for a fresh state).
    ///
    /// # Errors
    /// [`FollowError::Execution`] if the tip's state disagrees with its header's next set.
    pub fn new(shared: Arc<Shared>, log: Arc<BlockLog>) -> Result<Self, FollowError> {
        let expect = {
            let g = shared.lock();
            Expect::after(&g.finalized_header, &g.finalized_state)?
        };
        Ok(Self {
            shared,
            log,
            expect,
        })
    }

    /// The verified tip's height.
    pub fn height(&self) -> u64 {
        self.expect.height
    }

    /// Checks and executes one run (ending at a certified block), stores it unless `replay`,
    /// then applies it. Nothing is applied if anything fails.
    fn apply_run(&mut self, run: Vec<SyncRecord>, replay: bool) -> Result<(), StepError> {
        let fail = |source| StepError::Rejected {
            upstream: String::new(),
            source,
        };
        check_segment(&self.expect, &run).map_err(fail)?;
        let (mut hdr, mut state) = {
            let g = self.shared.lock();
            (g.finalized_header.clone(), g.finalized_state.clone())
        };
        let mut states = Vec::with_capacity(run.len());
        for r in &run {
            state = execute_block(&hdr, &state, &r.block).map_err(|e| {
                fail(FollowError::Execution {
                    height: r.block.header.height,
                    hash: r.block.hash(),
                    why: e.to_string(),
                })
            })?;
            hdr = r.block.header.clone();
            states.push(state.clone());
        }
        let next = Expect::after(&hdr, &state).map_err(fail)?;
        if !replay {
            // On disk before anyone can read it: a kill -9 after this loses nothing served.
            self.log.append(&run)?;
        }
        for (r, st) in run.into_iter().zip(states) {
            let b = LedgerBlock::new(r.block);
            raise(&self.shared.counters.epoch, b.block().header.epoch);
            self.shared
                .lock()
                .speculative
                .insert(b.hash(), (b.block().header.clone(), st));
            if let Err(e) = apply_finalized(&self.shared, &b) {
                // Executed just above on this same tip; only a bug gets here.
                error!(error = %error_chain(&e), "applying a verified block");
                self.shared.halt(e);
                break;
            }
        }
        self.expect = next;
        Ok(())
    }

    /// Replays the records of the block log (verified when they were stored; checked again).
    ///
    /// # Errors
    /// The first record that does not verify or execute: the log belongs to another chain or
    /// was altered.
    pub fn replay(&mut self, records: Vec<SyncRecord>) -> Result<(), StepError> {
        let (runs, tail) = split_runs(records);
        for run in runs {
            self.apply_run(run, true).map_err(|e| match e {
                StepError::Rejected { source, .. } => StepError::Rejected {
                    upstream: "the block log".into(),
                    source,
                },
                e => e,
            })?;
        }
        if !tail.is_empty() {
            // Only a bug could store an uncertified run (runs are appended whole).
            warn!(
                blocks = tail.len(),
                "ignoring stored blocks without a certified descendant"
            );
        }
        Ok(())
    }

    /// Asks `up` for blocks after the tip and applies every certified run it sends.
    /// `Ok(n)`: `n` blocks applied (0 when the upstream has nothing newer).
    ///
    /// # Errors
    /// [`StepError::Fetch`], [`StepError::Rejected`] (nothing of the refused run applied; runs
    /// before it in the same answer stay applied), [`StepError::Store`].
    pub async fn step(&mut self, up: &dyn Upstream) -> Result<usize, StepError> {
        let batch = up
            .fetch(self.height() + 1)
            .await
            .map_err(|why| StepError::Fetch {
                upstream: up.name().to_string(),
                why,
            })?;
        raise(
            &self.shared.counters.network_finalized,
            batch.finalized_height,
        );
        let (runs, tail) = split_runs(batch.records);
        let mut applied = 0;
        for run in runs {
            let n = run.len();
            self.apply_run(run, false).map_err(|e| match e {
                StepError::Rejected { source, .. } => StepError::Rejected {
                    upstream: up.name().to_string(),
                    source,
                },
                e => e,
            })?;
            applied += n;
        }
        // An uncertified tail waits for its certified descendant; a full answer of uncertified
        // blocks can never be accepted.
        if applied == 0 && tail.len() >= MAX_SEGMENT {
            return Err(StepError::Rejected {
                upstream: up.name().to_string(),
                source: FollowError::Uncertified {
                    from: self.height() + 1,
                    to: self.height() + tail.len() as u64,
                    epoch: self.expect.next_epoch(),
                },
            });
        }
        Ok(applied)
    }
}

/// Longest time a failing (or lying) upstream is left alone before it is asked again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// When each upstream may be asked again: one that failed or sent blocks that do not verify is
/// left alone for a delay that doubles with each failure (from twice [`POLL_INTERVAL`] to
/// [`MAX_BACKOFF`]) and is reset by an answer that verifies.
#[derive(Debug, Clone)]
pub struct Schedule {
    next: Vec<Instant>,
    delay: Vec<Duration>,
}

impl Schedule {
    /// Every one of `n` upstreams may be asked at `now`.
    pub fn new(n: usize, now: Instant) -> Self {
        Self {
            next: vec![now; n],
            delay: vec![Duration::ZERO; n],
        }
    }

    /// The first upstream from `from` (in turn) that may be asked at `now`, or when the
    /// earliest one may be.
    pub fn pick(&self, from: usize, now: Instant) -> Result<usize, Instant> {
        let n = self.next.len();
        (0..n)
            .map(|k| (from + k) % n.max(1))
            .find(|&i| self.next[i] <= now)
            .ok_or_else(|| self.next.iter().copied().min().unwrap_or(now))
    }

    /// Upstream `i` answered with blocks that verify (or nothing newer).
    pub fn ok(&mut self, i: usize, now: Instant) {
        if let (Some(n), Some(d)) = (self.next.get_mut(i), self.delay.get_mut(i)) {
            *n = now;
            *d = Duration::ZERO;
        }
    }

    /// Upstream `i` failed or lied: leave it alone for a while. Returns the delay.
    pub fn failed(&mut self, i: usize, now: Instant) -> Duration {
        let (Some(n), Some(d)) = (self.next.get_mut(i), self.delay.get_mut(i)) else {
            return Duration::ZERO;
        };
        *d = (*d * 2).clamp(POLL_INTERVAL * 2, MAX_BACKOFF);
        *n = now + *d;
        *d
    }
}

/// Follows `ups` in turn for ever (until the node halts): the current upstream while it
/// sends blocks; the next one when it has nothing newer than the tip; an upstream that fails or
/// sends blocks that do not verify is left alone for a while ([`Schedule`]).
///
/// # Errors
/// [`StepError::Store`]: the block log cannot be written.
pub async fn follow_loop(
    mut follower: Follower,
    ups: Vec<Box<dyn Upstream>>,
    status: Arc<ReplicaStatus>,
) -> Result<(), StepError> {
    if ups.is_empty() {
        return Ok(());
    }
    let n = ups.len();
    let mut schedule = Schedule::new(n, Instant::now());
    let mut i = 0usize;
    // Per upstream: whether its last request failed (a failure is logged when it starts, and a
    // recovery when it ends, not on every retry).
    let mut failing = vec![false; n];
    loop {
        i = match schedule.pick(i, Instant::now()) {
            Ok(i) => i,
            Err(at) => {
                tokio::time::sleep_until(at.into()).await;
                continue;
            }
        };
        let up = &ups[i];
        match follower.step(up.as_ref()).await {
            Ok(applied) => {
                schedule.ok(i, Instant::now());
                status.contact(i, None);
                if std::mem::take(&mut failing[i]) {
                    info!(upstream = %up.name(), "upstream answers again");
                }
                if applied > 0 {
                    continue;
                }
                // Caught up with this one; another may be ahead.
                let ahead = crate::shared::get(&follower.shared.counters.network_finalized)
                    > follower.height();
                i = (i + 1) % n;
                if !ahead || i == 0 {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
            Err(StepError::Fetch { upstream, why }) => {
                status.fetch_errors.fetch_add(1, Ordering::Relaxed);
                status.contact(i, Some(why.clone()));
                let wait = schedule.failed(i, Instant::now());
                if !std::mem::replace(&mut failing[i], true) {
                    warn!(%upstream, %why, "upstream unavailable; asking the others (retried with backoff)");
                } else {
                    tracing::debug!(%upstream, %why, ?wait, "upstream still unavailable");
                }
                i = (i + 1) % n;
            }
            Err(StepError::Rejected { upstream, source }) => {
                let reason = error_chain(&source);
                let wait = schedule.failed(i, Instant::now());
                failing[i] = true;
                error!(%upstream, height = follower.height() + 1, %reason, ?wait, "REJECTED blocks that do not verify; not applied");
                status.rejected.fetch_add(1, Ordering::Relaxed);
                status.contact(i, Some(format!("rejected: {reason}")));
                status.lock().last_rejection = Some(Rejection {
                    upstream,
                    height: follower.height() + 1,
                    reason,
                    at_unix_ms: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                });
                i = (i + 1) % n;
            }
            Err(e @ StepError::Store(_)) => return Err(e),
        }
    }
}

/// A [`SyncSource`] over a block log (what a replica serves to replicas that follow it).
pub fn log_sync(log: Arc<BlockLog>) -> SyncSource {
    Arc::new(move |h: u64| {
        let log = log.clone();
        Box::pin(async move { log.get(h).ok().flatten() })
    })
}

fn finality_of(c: &phoenix_ledger_light::cert::FinalityCert) -> Finality {
    let mut w = Writer::new();
    c.write(&mut w);
    Finality {
        view: c.view,
        signers: c.votes.len(),
        certificate_hex: hex::encode(w.finish()),
        format: "phoenix-light",
    }
}

/// Runs a replica from its home until the process is killed, or until it must stop.
///
/// # Errors
/// A home in use, a block log of another chain or damaged in its middle, a stored block that no
/// longer verifies, failing to bind the API, the block log becoming unwritable. Never a panic
/// on what it reads from disk or the network.
pub fn run_replica(home: ReplicaHome) -> Result<()> {
    let _lock = crate::config::lock_home(&home.dir, true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = home.dir.clone();
    rt.block_on(serve(home))
        .with_context(|| format!("ledger replica {}", dir.display()))
}

async fn serve(home: ReplicaHome) -> Result<()> {
    let genesis = home.genesis.clone();
    // A replica has no key: `node` in its status is the all-zero key, and `role` says replica.
    let shared = Shared::new(genesis.clone(), PublicKey([0; 32]));
    let genesis_hash = {
        let st = LedgerState::from_genesis(&genesis).map_err(anyhow::Error::msg)?;
        genesis_block(&genesis, &st).hash()
    };
    let log_path = home.log_path();
    std::fs::create_dir_all(home.dir.join("data"))?;
    let (log, records) = BlockLog::open(&log_path, genesis_hash)?;
    let log = Arc::new(log);
    let mut follower = Follower::new(shared.clone(), log.clone())?;
    let stored = records.len();
    let t = Instant::now();
    follower.replay(records).with_context(|| {
        format!(
            "replaying {} (its blocks were verified when stored; remove {} to fetch them again)",
            log_path.display(),
            log_path.display()
        )
    })?;
    info!(
        blocks = stored,
        ms = t.elapsed().as_millis() as u64,
        height = follower.height(),
        "replayed the block log"
    );

    let status = Arc::new(ReplicaStatus::new(home.config.from.clone()));
    let l1 = log.clone();
    let blocks: BlockSource = Arc::new(move |h: u64| {
        let log = l1.clone();
        Box::pin(async move {
            let r = log.get(h).ok().flatten()?;
            let f = r.cert.as_ref().map(finality_of);
            Some((LedgerBlock::new(r.block), f))
        })
    });
    let l2 = log.clone();
    let certs: CertSource = Arc::new(move |h: u64| {
        let log = l2.clone();
        Box::pin(async move {
            let r = log.get(h).ok().flatten()?;
            let cert = r.cert?;
            let block = LedgerBlock::new(r.block);
            Some(Certified {
                finalizes: block.hash(),
                block: Some(block),
                cert,
            })
        })
    });
    let st2 = status.clone();
    let engine_metrics: EngineMetrics = Arc::new(move || st2.metrics());
    let state = ApiState {
        shared: shared.clone(),
        blocks,
        certs,
        sync: log_sync(log.clone()),
        engine_metrics,
        started: Instant::now(),
        empty_block_interval_ms: 1000,
        replica: Some(status.clone()),
    };
    let addr = home.config.api_listen;
    let api_error = |source| crate::NodeError::Api { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(api_error)?;
    info!(api = %addr, from = ?home.config.from, height = follower.height(), "ledger replica running (read-only, never signs)");
    let server = tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    let ups: Vec<Box<dyn Upstream>> = home
        .config
        .from
        .iter()
        .map(|u| Box::new(HttpUpstream::new(u)) as Box<dyn Upstream>)
        .collect();
    // Following runs on a thread of its own, not on the runtime's workers that serve queries:
    // applying a run executes its blocks and `fsync`s the block log, synchronous work of
    // milliseconds that held up every query queued on the same worker (the replica bench's
    // p99 halved when it moved off them; docs/benchmarks.md). Its network I/O still goes
    // through the runtime (`Handle::block_on`).
    let runtime = tokio::runtime::Handle::current();
    let following =
        tokio::task::spawn_blocking(move || runtime.block_on(follow_loop(follower, ups, status)));
    tokio::select! {
        served = server => match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(api_error(e).into()),
            Err(e) => Err(api_error(std::io::Error::other(e)).into()),
        },
        f = following => match f {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("following stopped")),
            Err(e) => Err(anyhow::anyhow!("following stopped: {e}")),
        },
        e = shared.halted() => Err(anyhow::Error::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_ledger_light::testing::TestSet;
    use phoenix_ledger_types::exec::{BlockContext, build_block};

    /// An upstream that answers from a fixed list of records (a fake behind the trait).
    struct Fake {
        records: Vec<SyncRecord>,
    }
    impl Upstream for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn fetch(&self, height: u64) -> BoxFuture<'_, Result<Batch, String>> {
            let from = (height as usize).saturating_sub(1);
            let records = self
                .records
                .iter()
                .skip(from)
                .take(MAX_SEGMENT)
                .cloned()
                .collect();
            let finalized_height = self.records.len() as u64;
            Box::pin(async move {
                Ok(Batch {
                    finalized_height,
                    records,
                })
            })
        }
    }

    fn chain(set: &TestSet, g: &Genesis, n: u64) -> Vec<SyncRecord> {
        let mut state = LedgerState::from_genesis(g).expect("genesis");
        let mut hdr = genesis_block(g, &state).header;
        let l = g.epoch_length;
        (1..=n)
            .map(|h| {
                let ctx = BlockContext {
                    epoch: h / l,
                    view: h + 1,
                    parent_view: h,
                    proposer: set.validators[0].key,
                    timestamp_ms: hdr.timestamp_ms + 1,
                };
                let built = build_block(&hdr, &state, ctx, vec![]);
                let cert = (h % 3 != 1 || (h + 1) % l == 0)
                    .then(|| set.certify(h / l, h + 1, &built.block.hash()));
                hdr = built.block.header.clone();
                state = built.state;
                SyncRecord {
                    block: built.block,
                    cert,
                }
            })
            .collect()
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("phoenix-replica-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    /// A follower applies what verifies (across epochs), stores it before applying, refuses a
    /// tampered block leaving the state as it was, and a restart replays the log to the same
    /// state.
    #[tokio::test]
    async fn follows_stores_refuses_tampering_and_replays() {
        let set = TestSet::new(1, 4);
        let g = set.genesis("replica-unit", 4);
        let recs = chain(&set, &g, 10);
        let dir = tmp("follow");
        let gh = {
            let st = LedgerState::from_genesis(&g).expect("g");
            genesis_block(&g, &st).hash()
        };
        let (log, _) = BlockLog::open(&dir.join("blocks.log"), gh).expect("log");
        let log = Arc::new(log);
        let shared = Shared::new(g.clone(), PublicKey([0; 32]));
        let mut f = Follower::new(shared.clone(), log.clone()).expect("follower");

        // Block 4 (uncertified) forged: block 5's certificate no longer vouches for it.
        let mut forged = recs.clone();
        forged[3].block.header.timestamp_ms += 1;
        let bad = Fake { records: forged };
        let e = f.step(&bad).await.unwrap_err();
        assert!(matches!(e, StepError::Rejected { .. }), "{e}");
        assert!(e.to_string().contains("block 5 does not extend"), "{e}");
        assert_eq!(
            shared.lock().finalized_height(),
            3,
            "nothing of the forged run applied"
        );
        assert_eq!(log.height(), 3, "nothing of the forged run stored");
        // A certified block whose certificate was altered.
        let mut recert = recs.clone();
        if let Some(c) = recert[3 + 1].cert.as_mut() {
            c.votes[0].signature.0[0] ^= 1;
        }
        let e = f.step(&Fake { records: recert }).await.unwrap_err();
        assert!(e.to_string().contains("certificate is refused"), "{e}");
        assert_eq!(shared.lock().finalized_height(), 3);

        let good = Fake {
            records: recs.clone(),
        };
        while f.step(&good).await.expect("step") > 0 {}
        assert_eq!(f.height(), 9, "block 10 is uncertified and waits");
        let root = shared.lock().finalized_header.state_root;

        // Restart: the log replays to the same tip.
        drop(f);
        let (log2, stored) = BlockLog::open(&dir.join("blocks.log"), gh).expect("reopen");
        assert_eq!(stored.len(), 9);
        let shared2 = Shared::new(g.clone(), PublicKey([0; 32]));
        let mut f2 = Follower::new(shared2.clone(), Arc::new(log2)).expect("follower");
        f2.replay(stored).expect("replay");
        assert_eq!(f2.height(), 9);
        assert_eq!(shared2.lock().finalized_header.state_root, root);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Governance adds a fifth validator from epoch 2: the follower checks epoch 2's blocks
    /// against the five-key set its own state derives (the set the end of epoch 1 commits to),
    /// and refuses a certificate of epoch 2 made by the old four.
    #[tokio::test]
    async fn follows_a_validator_set_change_and_refuses_the_old_set_after_it() {
        use phoenix_ledger_types::exec::GenesisAccount;
        use phoenix_ledger_types::tx::{GovAction, GovOp, Operation, Role, TxBody};
        let old = TestSet::new(1, 4);
        let new = TestSet::new(1, 5);
        let admin = phoenix_ledger_types::crypto::Keypair::from_test_index(99);
        let mut g = old.genesis("replica-epochs", 3);
        g.accounts = vec![GenesisAccount {
            key: admin.public(),
            roles: vec![Role::Admin],
        }];
        let added = new
            .validators
            .iter()
            .find(|v| !old.validators.contains(v))
            .expect("the fifth")
            .clone();
        let propose = TxBody {
            chain_id: g.chain_id.clone(),
            signer: admin.public(),
            nonce: 0,
            op: Operation::Governance(GovOp::Propose {
                id: "add-5".into(),
                action: GovAction::AddValidator {
                    key: added.key,
                    address: added.address.clone(),
                    effective_epoch: 2,
                },
            }),
        }
        .sign(&admin);
        // Blocks 1..=8 (epochs of 3): block 1 carries the proposal; epoch 2 starts at 6.
        let build = |signer_of_epoch2: &TestSet| {
            let mut state = LedgerState::from_genesis(&g).expect("genesis");
            let mut hdr = genesis_block(&g, &state).header;
            let mut out = Vec::new();
            for h in 1..=8u64 {
                let ctx = BlockContext {
                    epoch: h / 3,
                    view: h + 1,
                    parent_view: h,
                    proposer: old.validators[0].key,
                    timestamp_ms: hdr.timestamp_ms + 1,
                };
                let txs = if h == 1 {
                    vec![propose.clone()]
                } else {
                    vec![]
                };
                let built = build_block(&hdr, &state, ctx, txs);
                assert!(built.rejected.is_empty(), "{:?}", built.rejected);
                let set = if h >= 6 { signer_of_epoch2 } else { &old };
                let cert = Some(set.certify(h / 3, h + 1, &built.block.hash()));
                hdr = built.block.header.clone();
                state = built.state;
                out.push(SyncRecord {
                    block: built.block,
                    cert,
                });
            }
            out
        };
        let honest = build(&new);
        assert_ne!(
            honest[5].block.header.validator_set_hash, honest[4].block.header.validator_set_hash,
            "the set changes at block 6"
        );
        let dir = tmp("epochs");
        let gh = {
            let st = LedgerState::from_genesis(&g).expect("g");
            genesis_block(&g, &st).hash()
        };
        let open = |name: &str| {
            let (log, _) = BlockLog::open(&dir.join(name), gh).expect("log");
            let shared = Shared::new(g.clone(), PublicKey([0; 32]));
            let f = Follower::new(shared.clone(), Arc::new(log)).expect("follower");
            (shared, f)
        };
        let (shared, mut f) = open("a.log");
        while f
            .step(&Fake {
                records: honest.clone(),
            })
            .await
            .expect("step")
            > 0
        {}
        assert_eq!(f.height(), 8);
        assert_eq!(
            shared.lock().finalized_state.validators().validators,
            new.validators
        );

        let (shared, mut f) = open("b.log");
        let e = loop {
            match f
                .step(&Fake {
                    records: build(&old),
                })
                .await
            {
                Ok(0) => panic!("the old set's certificate of epoch 2 was not refused"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert!(
            e.to_string().contains("block 6") && e.to_string().contains("certificate is refused"),
            "{e}"
        );
        assert_eq!(shared.lock().finalized_height(), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A failing upstream is skipped for a doubling delay (bounded), the others are asked
    /// meanwhile, and an answer resets it.
    #[test]
    fn failing_upstreams_back_off_and_the_others_are_asked() {
        let t0 = Instant::now();
        let mut s = Schedule::new(2, t0);
        assert_eq!(s.pick(0, t0), Ok(0));
        assert_eq!(s.failed(0, t0), POLL_INTERVAL * 2);
        assert_eq!(s.pick(0, t0), Ok(1), "the other one is asked");
        s.failed(1, t0);
        assert_eq!(s.pick(0, t0), Err(t0 + POLL_INTERVAL * 2), "both wait");
        let mut d = Duration::ZERO;
        for _ in 0..20 {
            d = s.failed(0, t0);
        }
        assert_eq!(d, MAX_BACKOFF);
        s.ok(0, t0);
        assert_eq!(s.pick(0, t0), Ok(0));
        assert_eq!(s.failed(0, t0), POLL_INTERVAL * 2, "reset by an answer");
    }

    #[test]
    fn batches_round_trip_and_refuse_garbage() {
        let set = TestSet::new(1, 4);
        let g = set.genesis("batch", 10);
        let b = Batch {
            finalized_height: 9,
            records: chain(&set, &g, 3),
        };
        let bytes = b.encode();
        assert_eq!(Batch::decode(&bytes).expect("decode"), b);
        for cut in [0, 5, 12, bytes.len() - 1] {
            assert!(Batch::decode(&bytes[..cut]).is_err());
        }
        let mut huge = Writer::new();
        huge.u64(1);
        huge.u32(u32::MAX);
        assert!(Batch::decode(&huge.finish()).is_err());
    }

    #[test]
    fn the_first_run_needs_genesis_and_from_later_runs_only_the_home() {
        let dir = tmp("home");
        let set = TestSet::new(1, 4);
        let g = set.genesis("home", 10);
        let gfile = dir.join("g.json");
        std::fs::write(&gfile, serde_json::to_vec(&g).expect("json")).expect("write");
        let home = dir.join("r");
        let e = ReplicaHome::prepare(&home, None, None, None).unwrap_err();
        assert!(
            format!("{e:#}").contains("first run needs --genesis"),
            "{e:#}"
        );
        let e = ReplicaHome::prepare(&home, Some(vec!["localhost:1".into()]), Some(&gfile), None)
            .unwrap_err();
        assert!(format!("{e:#}").contains("http://IP:PORT"), "{e:#}");
        let from = vec!["http://127.0.0.1:18001".to_string()];
        let h = ReplicaHome::prepare(&home, Some(from.clone()), Some(&gfile), Some(18_100))
            .expect("first run");
        assert_eq!(h.config.api_listen.port(), 18_100);
        let again = ReplicaHome::prepare(&home, None, None, None).expect("later run");
        assert_eq!(again.config, h.config);
        assert_eq!(again.genesis, g);
        let other = dir.join("other.json");
        std::fs::write(
            &other,
            serde_json::to_vec(&set.genesis("x", 10)).expect("json"),
        )
        .expect("write");
        let e = ReplicaHome::prepare(&home, None, Some(&other), None).unwrap_err();
        assert!(
            format!("{e:#}").contains("is not the genesis of this replica"),
            "{e:#}"
        );
        let moved = ReplicaHome::prepare(&home, None, None, Some(18_200)).expect("new port");
        assert_eq!(moved.config.api_listen.port(), 18_200);
        std::fs::write(home.join("validator.key"), b"x").expect("write");
        let e = ReplicaHome::prepare(&home, None, None, None).unwrap_err();
        assert!(e.to_string().contains("validator's home"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
