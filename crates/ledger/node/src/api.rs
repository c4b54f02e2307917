//! The node's HTTP API (axum) and Prometheus metrics. Binds 127.0.0.1 only (see the config).
//!
//! Transaction verdicts have one shape everywhere: `POST /v1/tx` and `GET /v1/tx/{hash}` answer
//! `{"hash", "status": "pending" | "committed" | "rejected", ...}` ([`TxStatus`]), and `reason`
//! says why: why a transaction was rejected (at admission or at execution alike), or why a
//! pending one cannot go into a block yet (a nonce gap). `POST /v1/txs` lists refusals as
//! `{"index", "hash", "reason"}`. Other failures (a bad path, an unknown hash) are
//! `{"error": ...}` with a 4xx status.
//!
//! Proofs for light clients (`crate::proofs`, ADR 004): `GET /v1/proof/audit/{fleet}/{seq}`,
//! `GET /v1/proof/state/{module}/{key}` and `GET /v1/checkpoint` answer the proof as JSON (or its
//! binary encoding with `?format=bin`), carrying the validator-set changes from `?since_epoch=E`
//! (default: from genesis); 404 when there is nothing under that name, 503 when it is not yet in
//! a block with a stored certificate. `GET /v1/genesis` is the node's genesis file.
//!
//! Replication (`crate::replica`, ADR 005): `GET /v1/sync/{height}?max=N` answers finalized
//! blocks from `height` with their own finality certificates in the light client's form
//! (binary, `crate::replica::Batch`); replicas follow validators and each other with it. A
//! replica serves this same router with [`ApiState::replica`] set: reads as here, and
//! `POST /v1/tx` / `POST /v1/txs` answer 405 `{"status": "rejected", "reason": "read replica:
//! ...", "upstreams": [...]}`.

use crate::block::LedgerBlock;
use crate::shared::{Finalized, Shared, TxStatus, get, inc};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get as get_route, post},
};
use futures::future::BoxFuture;
use phoenix_ledger_types::block::Block;
use phoenix_ledger_types::crypto::{Hash, verify_many};
use phoenix_ledger_types::state::verify_proof;
use phoenix_ledger_types::tx::{MAX_TX_BYTES, Transaction};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Finality certificate summary for a block.
#[derive(Debug, Clone)]
pub struct Finality {
    /// View in which the block was finalized.
    pub view: u64,
    /// Number of validator signatures in the certificate.
    pub signers: usize,
    /// The certificate, hex of its canonical encoding.
    pub certificate_hex: String,
    /// Which encoding: `commonware` (a validator's stored certificate) or `phoenix-light` (the
    /// light client's `FinalityCert`, which is what a replica stores).
    pub format: &'static str,
}

/// Looks up a finalized block and its certificate in durable storage.
pub type BlockSource =
    Arc<dyn Fn(u64) -> BoxFuture<'static, Option<(LedgerBlock, Option<Finality>)>> + Send + Sync>;

/// Looks up a finalized block with its own finality certificate in the light client's form
/// (`None` when it was finalized only as an ancestor), for `GET /v1/sync/{height}`.
pub type SyncSource = Arc<
    dyn Fn(u64) -> BoxFuture<'static, Option<crate::replica::follow::SyncRecord>> + Send + Sync,
>;

/// Renders the consensus engine's own metrics (Prometheus text).
pub type EngineMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Node state.
    pub shared: Arc<Shared>,
    /// Durable block lookup.
    pub blocks: BlockSource,
    /// Finality certificates for proofs.
    pub certs: crate::proofs::CertSource,
    /// Engine metrics.
    pub engine_metrics: EngineMetrics,
    /// Start time, for uptime and readiness.
    pub started: Instant,
    /// Empty-block interval (readiness tolerates three of them without progress).
    pub empty_block_interval_ms: u64,
    /// Finalized blocks with their certificates, for replicas following this node.
    pub sync: SyncSource,
    /// Set on a read replica: the API is read-only (`POST /v1/tx`, `/v1/txs` answer 405 naming
    /// the upstreams), and status and readiness describe following instead of consensus.
    pub replica: Option<Arc<crate::replica::ReplicaStatus>>,
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/tx", post(post_tx))
        .route("/v1/txs", post(post_txs))
        .route("/v1/tx/{hash}", get_route(get_tx))
        .route("/v1/blocks/{height}", get_route(get_block))
        .route("/v1/status", get_route(status))
        // `{*key}`: an audit record's key is `{fleet}/{seq}`.
        .route("/v1/state/{module}/{*key}", get_route(get_state))
        .route("/v1/proof/audit/{fleet}/{seq}", get_route(proof_audit))
        .route("/v1/proof/state/{module}/{*key}", get_route(proof_state))
        .route("/v1/checkpoint", get_route(checkpoint))
        .route("/v1/genesis", get_route(genesis))
        .route("/v1/stream/blocks", get_route(stream_blocks))
        .route("/v1/sync/{height}", get_route(sync_blocks))
        .route("/v1/consensus", get_route(consensus_dump))
        .route("/metrics", get_route(metrics))
        .route("/health/live", get_route(|| async { "ok" }))
        .route("/health/ready", get_route(ready))
        .with_state(state)
}

fn err(code: StatusCode, reason: impl Into<String>) -> Response {
    (code, Json(json!({ "error": reason.into() }))).into_response()
}

/// Decodes, checks the signature of, and admits transactions; one verdict per input.
pub fn submit(shared: &Shared, raw: Vec<Vec<u8>>) -> Vec<Result<Hash, (Option<Hash>, String)>> {
    let mut decoded = Vec::with_capacity(raw.len());
    for b in &raw {
        if b.len() > MAX_TX_BYTES {
            decoded.push(Err((
                None,
                format!("oversized: {} bytes > {MAX_TX_BYTES}", b.len()),
            )));
            continue;
        }
        decoded.push(
            Transaction::decode(b)
                .map(|tx| {
                    let h = tx.hash();
                    (tx, h)
                })
                .map_err(|e| (None, format!("malformed: {e}"))),
        );
    }
    let items: Vec<_> = decoded
        .iter()
        .filter_map(|d| d.as_ref().ok())
        .map(|(tx, h)| (tx.body.signer, &h.0[..], tx.signature))
        .collect();
    let verdicts = verify_many(&items);
    let mut vi = verdicts.into_iter();
    let mut out = Vec::with_capacity(raw.len());
    let mut g = shared.lock();
    for d in decoded {
        match d {
            Err(e) => out.push(Err(e)),
            Ok((tx, h)) => {
                if !vi.next().unwrap_or(false) {
                    let reason = "bad signature: not signed by the signer's key".to_string();
                    g.reject(h, reason.clone());
                    out.push(Err((Some(h), reason)));
                    continue;
                }
                match g.admit(tx, h, true) {
                    Ok(()) => out.push(Ok(h)),
                    Err(reason) => {
                        if !reason.starts_with("already") {
                            g.reject(h, reason.clone());
                        }
                        out.push(Err((Some(h), reason)));
                    }
                }
            }
        }
    }
    drop(g);
    let ok = out.iter().filter(|r| r.is_ok()).count() as u64;
    inc(&shared.counters.tx_admitted, ok);
    inc(&shared.counters.tx_refused, out.len() as u64 - ok);
    out
}

#[derive(Deserialize)]
struct TxJson {
    tx: String,
}

/// What a replica answers to a submission: it does not accept transactions (it never signs
/// and has no mempool), so the client is told where to submit.
fn read_only(s: &ApiState) -> Option<Response> {
    let r = s.replica.as_ref()?;
    Some(
        (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(json!({
                "status": "rejected",
                "reason": format!(
                    "read replica: this node serves reads only and does not accept \
                     transactions; submit to a validator ({} are this replica's upstreams)",
                    r.upstreams.join(", ")
                ),
                "upstreams": r.upstreams,
            })),
        )
            .into_response(),
    )
}

async fn post_tx(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = read_only(&s) {
        return r;
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let raw = if is_json {
        match serde_json::from_slice::<TxJson>(&body)
            .ok()
            .and_then(|t| hex::decode(t.tx.trim()).ok())
        {
            Some(b) => b,
            None => {
                return rejected(
                    StatusCode::BAD_REQUEST,
                    None,
                    "malformed: expected {\"tx\": \"<hex of the canonical encoding>\"}",
                );
            }
        }
    } else {
        body.to_vec()
    };
    match submit(&s.shared, vec![raw]).remove(0) {
        // The status as `GET /v1/tx/{hash}` reports it, so a nonce gap is named at once.
        Ok(h) => {
            let status = s.shared.lock().tx_status(&h);
            (StatusCode::ACCEPTED, Json(tx_status_json(&h, &status))).into_response()
        }
        Err((h, reason)) => {
            let code = if reason.starts_with("mempool full") {
                StatusCode::SERVICE_UNAVAILABLE
            } else if reason.starts_with("already") {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            rejected(code, h, &reason)
        }
    }
}

/// A refused submission: the same `{"hash", "status": "rejected", "reason"}` that
/// `GET /v1/tx/{hash}` reports for a transaction rejected at execution.
fn rejected(code: StatusCode, h: Option<Hash>, reason: &str) -> Response {
    (
        code,
        Json(json!({ "hash": h, "status": "rejected", "reason": reason })),
    )
        .into_response()
}

/// `{"hash", "status", ...}` of a known transaction.
fn tx_status_json(h: &Hash, st: &TxStatus) -> Value {
    let mut v = serde_json::to_value(st).expect("serialisable");
    v["hash"] = json!(h);
    v
}

/// Batch submission: the body is a sequence of `u32` big-endian length + canonical transaction.
async fn post_txs(State(s): State<ApiState>, body: Bytes) -> Response {
    if let Some(r) = read_only(&s) {
        return r;
    }
    let mut raw = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return err(StatusCode::BAD_REQUEST, "malformed batch: truncated length");
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4")) as usize;
        if rest.len() < 4 + len {
            return err(
                StatusCode::BAD_REQUEST,
                "malformed batch: truncated transaction",
            );
        }
        raw.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    let shared = s.shared.clone();
    let res = tokio::task::spawn_blocking(move || submit(&shared, raw))
        .await
        .unwrap_or_default();
    let accepted = res.iter().filter(|r| r.is_ok()).count();
    let rejected: Vec<Value> = res
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.as_ref()
                .err()
                .map(|(h, e)| json!({"index": i, "hash": h, "reason": e}))
        })
        .collect();
    Json(json!({ "accepted": accepted, "rejected": rejected })).into_response()
}

fn tx_json(tx: &Transaction) -> Value {
    json!({
        "hash": tx.hash(),
        "signer": tx.body.signer,
        "nonce": tx.body.nonce,
        "chain_id": tx.body.chain_id,
        "op": tx.body.op,
    })
}

async fn get_tx(State(s): State<ApiState>, Path(hash): Path<String>) -> Response {
    let Some(h) = Hash::from_hex(&hash) else {
        return err(StatusCode::BAD_REQUEST, "hash must be 64 hex characters");
    };
    let status = s.shared.lock().tx_status(&h);
    match status {
        TxStatus::Unknown => err(StatusCode::NOT_FOUND, "unknown transaction"),
        st => Json(tx_status_json(&h, &st)).into_response(),
    }
}

/// JSON view of a block.
pub fn block_json(b: &Block, finality: Option<&Finality>, with_txs: bool) -> Value {
    let h = &b.header;
    let txs: Value = if with_txs {
        b.txs.iter().map(tx_json).collect::<Vec<_>>().into()
    } else {
        b.txs
            .iter()
            .map(|t| json!(t.hash()))
            .collect::<Vec<_>>()
            .into()
    };
    json!({
        "height": h.height,
        "hash": b.hash(),
        "parent_hash": h.parent_hash,
        "state_root": h.state_root,
        "tx_root": h.tx_root,
        "validator_set_hash": h.validator_set_hash,
        "chain_id": h.chain_id,
        "epoch": h.epoch,
        "view": h.view,
        "parent_view": h.parent_view,
        "proposer": h.proposer,
        "timestamp_ms": h.timestamp_ms,
        "tx_count": h.tx_count,
        "transactions": txs,
        "finality": finality.map(|f| json!({
            "view": f.view,
            "signers": f.signers,
            "certificate": f.certificate_hex,
            "certificate_format": f.format,
        })),
    })
}

#[derive(Deserialize)]
struct BlockQuery {
    /// `false` lists transaction hashes only.
    txs: Option<bool>,
}

async fn get_block(
    State(s): State<ApiState>,
    Path(height): Path<String>,
    Query(q): Query<BlockQuery>,
) -> Response {
    let with_txs = q.txs.unwrap_or(true);
    let height = if height == "latest" {
        s.shared.lock().finalized_height()
    } else {
        match height.parse::<u64>() {
            Ok(h) => h,
            Err(_) => return err(StatusCode::BAD_REQUEST, "height must be a number or latest"),
        }
    };
    if height == 0 {
        let g = s.shared.lock().genesis_block.clone();
        return Json(block_json(g.block(), None, with_txs)).into_response();
    }
    if height > s.shared.lock().finalized_height() {
        return err(
            StatusCode::NOT_FOUND,
            format!("no finalized block at height {height}"),
        );
    }
    let recent = s.shared.lock().recent.get(&height).cloned();
    if let Some(b) = recent
        && !with_txs
    {
        return Json(block_json(b.block(), None, false)).into_response();
    }
    match (s.blocks)(height).await {
        Some((b, f)) => Json(block_json(b.block(), f.as_ref(), with_txs)).into_response(),
        None => err(
            StatusCode::NOT_FOUND,
            format!("block {height} not available"),
        ),
    }
}

/// The status document.
pub fn status_json(s: &Shared) -> Value {
    let g = s.lock();
    let c = &s.counters;
    let vs = g.finalized_state.validators();
    let speculative_height = g
        .speculative
        .values()
        .map(|(h, _)| h.height)
        .max()
        .unwrap_or(0)
        .max(g.finalized_height());
    json!({
        "chain_id": g.genesis.chain_id,
        "node": s.me,
        "height": speculative_height,
        "finalized_height": g.finalized_height(),
        "finalized_hash": g.finalized_header.hash(),
        "state_root": g.finalized_header.state_root,
        "network_finalized_height": get(&c.network_finalized),
        "view": get(&c.view),
        "epoch": get(&c.epoch),
        "peers": live_peers(s, &g),
        "validators": vs.validators,
        "validator_set_hash": vs.hash(),
        "mempool": g.mempool_len(),
    })
}

fn live_peers(s: &Shared, g: &crate::shared::Inner) -> usize {
    let now = Instant::now();
    g.liveness
        .iter()
        .filter(|l| l.key != s.me.to_hex())
        .filter(|l| {
            l.last_seen
                .is_some_and(|t| now.duration_since(t).as_secs() < 10)
        })
        .count()
}

async fn status(State(s): State<ApiState>) -> Response {
    let mut v = status_json(&s.shared);
    match &s.replica {
        Some(r) => {
            v["role"] = json!("replica");
            v["node"] = Value::Null;
            v["peers"] = json!(r.live_upstreams());
            v["replica"] = r.json();
        }
        None => v["role"] = json!("validator"),
    }
    Json(v).into_response()
}

#[derive(Deserialize)]
struct SyncQuery {
    max: Option<usize>,
}

/// `GET /v1/sync/{height}?max=N`: finalized blocks from `height` on, each with its own finality
/// certificate (light client form) when it has one, in the binary form replicas read
/// (`crate::replica::Batch`). Empty when `height` is above the finalized tip.
async fn sync_blocks(
    State(s): State<ApiState>,
    Path(height): Path<String>,
    Query(q): Query<SyncQuery>,
) -> Response {
    let Ok(from) = height.parse::<u64>() else {
        return err(StatusCode::BAD_REQUEST, "height must be a number (from 1)");
    };
    if from == 0 {
        return err(StatusCode::BAD_REQUEST, "height must be at least 1");
    }
    let tip = s.shared.lock().finalized_height();
    let max = q
        .max
        .unwrap_or(crate::replica::follow::MAX_SEGMENT)
        .clamp(1, crate::replica::follow::MAX_SEGMENT) as u64;
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut h = from;
    while h <= tip && h < from.saturating_add(max) && bytes < crate::replica::MAX_SYNC_BYTES {
        let Some(r) = (s.sync)(h).await else {
            break;
        };
        bytes += r.block.encode().len();
        records.push(r);
        h += 1;
    }
    if records.is_empty() && from <= tip {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("block {from} is finalized but not readable here yet"),
        );
    }
    let batch = crate::replica::Batch {
        finalized_height: tip,
        records,
    };
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        batch.encode(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct StateQuery {
    proof: Option<bool>,
}

async fn get_state(
    State(s): State<ApiState>,
    Path((module, key)): Path<(String, String)>,
    Query(q): Query<StateQuery>,
) -> Response {
    // The lock is held only to take the tip (an O(1) clone of the trie), not while reading it.
    let (height, state) = {
        let g = s.shared.lock();
        (g.finalized_height(), g.finalized_state.clone())
    };
    let st = &state;
    let full = format!("{module}/{key}");
    let root = st.root();
    match st.get_raw(&module, &key) {
        None => err(StatusCode::NOT_FOUND, format!("no state at {full}")),
        Some(raw) => {
            let value: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
            let mut out = json!({
                "module": module,
                "key": key,
                "height": height,
                "state_root": root,
                "value": value,
            });
            if q.proof.unwrap_or(false) {
                let proof = st.map().prove(full.as_bytes());
                debug_assert!(verify_proof(&root, full.as_bytes(), Some(raw), &proof));
                out["proof"] = serde_json::to_value(&proof).expect("serialisable");
            }
            Json(out).into_response()
        }
    }
}

#[derive(Deserialize)]
struct ProofQuery {
    /// Carry the validator-set changes from this epoch on (default 0: from genesis, which
    /// verifies against the genesis and against any later checkpoint).
    since_epoch: Option<u64>,
    /// `bin` for the compact binary encoding; JSON otherwise.
    format: Option<String>,
}

fn proof_response(
    q: &ProofQuery,
    r: Result<phoenix_ledger_light::Proof, crate::proofs::ProofError>,
) -> Response {
    use crate::proofs::ProofError;
    match r {
        Ok(p) if q.format.as_deref() == Some("bin") => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            p.encode(),
        )
            .into_response(),
        Ok(p) => Json(p.to_json()).into_response(),
        Err(e @ ProofError::NotFound(_)) => err(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ ProofError::Unavailable(_)) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `GET /v1/proof/audit/{fleet}/{seq}`: the record's place in the audit log of the latest
/// certified block, with its certificate and the validator-set changes (light crate's
/// `AuditProof`).
async fn proof_audit(
    State(s): State<ApiState>,
    Path((fleet, seq)): Path<(String, String)>,
    Query(q): Query<ProofQuery>,
) -> Response {
    let Ok(seq) = seq.parse::<u64>() else {
        return err(StatusCode::BAD_REQUEST, "seq must be a number (from 1)");
    };
    let r =
        crate::proofs::audit_proof(&s.shared, &s.certs, &fleet, seq, q.since_epoch.unwrap_or(0))
            .await
            .map(phoenix_ledger_light::Proof::Audit);
    proof_response(&q, r)
}

/// `GET /v1/proof/state/{module}/{key}`: the entry (or its absence) under the state root of the
/// latest certified block.
async fn proof_state(
    State(s): State<ApiState>,
    Path((module, key)): Path<(String, String)>,
    Query(q): Query<ProofQuery>,
) -> Response {
    let r = crate::proofs::state_proof(
        &s.shared,
        &s.certs,
        &module,
        &key,
        q.since_epoch.unwrap_or(0),
    )
    .await
    .map(phoenix_ledger_light::Proof::State);
    proof_response(&q, r)
}

/// `GET /v1/genesis`: the genesis file this node runs (for `checkpoint` without `--trust`).
async fn genesis(State(s): State<ApiState>) -> Response {
    let g = s.shared.lock().genesis.clone();
    Json(g).into_response()
}

/// `GET /v1/checkpoint`: a recent certified block, from which `phoenix ledger checkpoint` makes
/// a checkpoint file.
async fn checkpoint(State(s): State<ApiState>, Query(q): Query<ProofQuery>) -> Response {
    let r = crate::proofs::checkpoint_proof(&s.shared, &s.certs, q.since_epoch.unwrap_or(0))
        .await
        .map(phoenix_ledger_light::Proof::Checkpoint);
    proof_response(&q, r)
}

async fn stream_blocks(State(s): State<ApiState>) -> Response {
    let rx = s.shared.finalized_tx.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(Finalized { block }) => {
                let b = block.block();
                let data = json!({
                    "height": b.header.height,
                    "hash": b.hash(),
                    "parent_hash": b.header.parent_hash,
                    "state_root": b.header.state_root,
                    "timestamp_ms": b.header.timestamp_ms,
                    "tx_count": b.txs.len(),
                    "transactions": b.txs.iter().map(|t| t.hash()).collect::<Vec<_>>(),
                });
                Event::default().event("block").data(data.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(ev), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn consensus_dump(State(s): State<ApiState>) -> Response {
    let status = status_json(&s.shared);
    let g = s.shared.lock();
    let c = &s.shared.counters;
    let mut spec: Vec<(u64, String, u64, u32)> = g
        .speculative
        .iter()
        .map(|(h, (hdr, _))| (hdr.height, h.to_hex(), hdr.view, hdr.tx_count))
        .collect();
    spec.sort();
    let recent_views: HashMap<u64, u64> = g
        .finalized_views
        .iter()
        .rev()
        .take(16)
        .map(|(h, v)| (*h, *v))
        .collect();
    Json(json!({
        "status": status,
        "view": get(&c.view),
        "notarizations": get(&c.notarizations),
        "nullifications": get(&c.nullifications),
        "finalizations": get(&c.finalizations),
        "equivocation_evidence": get(&c.faults),
        "proposed": get(&c.proposed),
        "verified": get(&c.verified),
        "invalid_blocks": get(&c.invalid),
        "unfinalized_blocks": spec.iter().map(|(h, d, v, n)| json!({"height": h, "hash": d, "view": v, "tx_count": n})).collect::<Vec<_>>(),
        "finalization_views": recent_views,
        "validator_liveness": g.liveness,
        "uptime_s": s.started.elapsed().as_secs(),
    }))
    .into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let c = &s.shared.counters;
    let g = s.shared.lock();
    let mut out = String::new();
    let mut m = |name: &str, kind: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP phoenix_ledger_{name} {help}\n# TYPE phoenix_ledger_{name} {kind}\nphoenix_ledger_{name} {v}\n"
        ));
    };
    m(
        "finalized_height",
        "gauge",
        "Height of the latest finalized block applied here.",
        g.finalized_height(),
    );
    m(
        "network_finalized_height",
        "gauge",
        "Highest finalized height announced by consensus.",
        get(&c.network_finalized),
    );
    m(
        "view",
        "gauge",
        "Highest consensus view seen.",
        get(&c.view),
    );
    m(
        "epoch",
        "gauge",
        "Consensus epoch this node runs (validator-set changes take effect at epoch starts).",
        get(&c.epoch),
    );
    m(
        "view_changes_total",
        "counter",
        "Views skipped by nullification (round changes).",
        get(&c.nullifications),
    );
    m(
        "notarizations_total",
        "counter",
        "Notarization certificates seen.",
        get(&c.notarizations),
    );
    m(
        "finalizations_total",
        "counter",
        "Finalization certificates seen.",
        get(&c.finalizations),
    );
    m(
        "equivocations_total",
        "counter",
        "Conflicting-vote evidence seen.",
        get(&c.faults),
    );
    m(
        "blocks_proposed_total",
        "counter",
        "Blocks proposed by this node.",
        get(&c.proposed),
    );
    m(
        "blocks_verified_total",
        "counter",
        "Blocks verified by this node.",
        get(&c.verified),
    );
    m(
        "blocks_invalid_total",
        "counter",
        "Blocks this node refused.",
        get(&c.invalid),
    );
    m(
        "tx_admitted_total",
        "counter",
        "Transactions admitted to the mempool.",
        get(&c.tx_admitted),
    );
    m(
        "tx_refused_total",
        "counter",
        "Transactions refused at admission.",
        get(&c.tx_refused),
    );
    m(
        "tx_committed_total",
        "counter",
        "Transactions in finalized blocks.",
        get(&c.tx_committed),
    );
    m(
        "mempool_size",
        "gauge",
        "Transactions waiting.",
        g.mempool_len() as u64,
    );
    m(
        "peers",
        "gauge",
        "Validators heard from in the last 10 s.",
        live_peers(&s.shared, &g) as u64,
    );
    out.push_str("# HELP phoenix_ledger_validator_votes_total Votes seen per validator and kind (signing liveness).\n# TYPE phoenix_ledger_validator_votes_total counter\n");
    for l in &g.liveness {
        for (kind, v) in [
            ("notarize", l.notarizes),
            ("finalize", l.finalizes),
            ("nullify", l.nullifies),
        ] {
            out.push_str(&format!(
                "phoenix_ledger_validator_votes_total{{validator=\"{}\",kind=\"{kind}\"}} {v}\n",
                l.key
            ));
        }
    }
    out.push_str("# HELP phoenix_ledger_validator_last_vote_view Latest view with a vote from each validator.\n# TYPE phoenix_ledger_validator_last_vote_view gauge\n");
    for l in &g.liveness {
        out.push_str(&format!(
            "phoenix_ledger_validator_last_vote_view{{validator=\"{}\"}} {}\n",
            l.key, l.last_view
        ));
    }
    drop(g);
    out.push_str(&(s.engine_metrics)());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn ready(State(s): State<ApiState>) -> Response {
    if let Some(r) = &s.replica {
        let fin = s.shared.lock().finalized_height();
        let net = get(&s.shared.counters.network_finalized);
        let live = r.live_upstreams();
        if live == 0 {
            return err(
                StatusCode::SERVICE_UNAVAILABLE,
                "no upstream answered in the last 10 s",
            );
        }
        if net > fin + 2 {
            return err(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("catching up: {fin} of {net}"),
            );
        }
        return Json(json!({ "ready": true, "finalized_height": fin, "upstreams": live }))
            .into_response();
    }
    let g = s.shared.lock();
    let fin = g.finalized_height();
    let net = get(&s.shared.counters.network_finalized);
    let peers = live_peers(&s.shared, &g);
    // The active set, not everyone ever seen voting: governance adds and removes validators.
    let n = g.finalized_state.validators().validators.len();
    drop(g);
    let f = (n.saturating_sub(1)) / 3;
    let need = n.saturating_sub(f + 1); // peers needed besides this node for a quorum
    if net > fin + 2 {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("catching up: {fin} of {net}"),
        );
    }
    if peers < need {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{peers} live peers, quorum needs {need}"),
        );
    }
    Json(json!({ "ready": true, "finalized_height": fin, "peers": peers })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{audit_tx, shared_with_auditors};
    use phoenix_ledger_types::crypto::Keypair;

    fn state(shared: Arc<Shared>) -> ApiState {
        ApiState {
            shared,
            blocks: Arc::new(|_| Box::pin(async { None })),
            certs: Arc::new(|_| Box::pin(async { None })),
            engine_metrics: Arc::new(String::new),
            started: Instant::now(),
            empty_block_interval_ms: 1000,
            sync: Arc::new(|_| Box::pin(async { None })),
            replica: None,
        }
    }

    async fn json_of(r: Response) -> (u16, Value) {
        let code = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .expect("body");
        (code, serde_json::from_slice(&body).expect("json"))
    }

    async fn post(s: &ApiState, bytes: Vec<u8>) -> (u16, Value) {
        json_of(post_tx(State(s.clone()), HeaderMap::new(), Bytes::from(bytes)).await).await
    }

    async fn status_of(s: &ApiState, h: &Hash) -> Value {
        json_of(get_tx(State(s.clone()), Path(h.to_hex())).await)
            .await
            .1
    }

    /// Regression: the rejection was called `error` at admission (`POST /v1/tx`, `/v1/txs`) and
    /// `reason` after execution (`GET /v1/tx/{hash}`). It is `reason` in both.
    #[tokio::test]
    async fn regression_rejection_reason_has_one_name_at_admission_and_after_execution() {
        let a = Keypair::from_test_index(1);
        let s = state(shared_with_auditors(&[&a]));
        let stranger = Keypair::from_test_index(77);
        let t = audit_tx(&stranger, 0);
        let (code, v) = post(&s, t.encode()).await;
        assert_eq!(code, 400);
        assert_eq!(v["status"], "rejected", "{v}");
        assert!(v.get("error").is_none(), "{v}");
        let at_admission = v["reason"].as_str().expect("reason").to_string();
        assert!(at_admission.starts_with("unauthorised"), "{v}");
        let later = status_of(&s, &t.hash()).await;
        assert_eq!(later["status"], "rejected", "{later}");
        assert_eq!(later["reason"], at_admission.as_str(), "{later}");
        // Undecodable bytes and a bad JSON body: the same shape, without a hash.
        let (_, v) = post(&s, b"garbage".to_vec()).await;
        assert!(
            v["reason"]
                .as_str()
                .expect("reason")
                .starts_with("malformed"),
            "{v}"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("header"),
        );
        let (code, v) = json_of(post_tx(State(s.clone()), h, Bytes::from_static(b"{")).await).await;
        assert_eq!(code, 400);
        assert_eq!(v["status"], "rejected", "{v}");
        assert!(
            v["reason"]
                .as_str()
                .expect("reason")
                .starts_with("malformed"),
            "{v}"
        );
        // The batch endpoint too.
        let mut batch = Vec::new();
        let bytes = t.encode();
        batch.extend_from_slice(&u32::try_from(bytes.len()).expect("small").to_be_bytes());
        batch.extend_from_slice(&bytes);
        let (_, v) = json_of(post_txs(State(s.clone()), Bytes::from(batch)).await).await;
        assert!(
            v["rejected"][0]["reason"]
                .as_str()
                .expect("reason")
                .starts_with("unauthorised"),
            "{v}"
        );
        assert!(v["rejected"][0].get("error").is_none(), "{v}");
    }

    /// The proof endpoints name what is missing: an unknown record is 404, a recorded one that
    /// no stored certificate covers yet is 503 (retry, or ask another node), a bad seq is 400.
    /// The node's audit log index follows finalized blocks, retries of a record included.
    #[tokio::test]
    async fn proofs_say_what_is_missing_and_the_audit_log_index_follows_blocks() {
        use crate::block::LedgerBlock;
        use phoenix_ledger_types::exec::{BlockContext, build_block};
        let a = Keypair::from_test_index(1);
        let shared = shared_with_auditors(&[&a]);
        let s = state(shared.clone());
        let q = || {
            Query(ProofQuery {
                since_epoch: None,
                format: None,
            })
        };
        let ask = |fleet: &str, seq: &str| {
            proof_audit(
                State(s.clone()),
                Path((fleet.to_string(), seq.to_string())),
                q(),
            )
        };
        let (code, v) = json_of(ask("f", "1").await).await;
        assert_eq!(code, 404, "{v}");
        assert!(
            v["error"]
                .as_str()
                .expect("error")
                .contains("no audit record 1")
        );
        assert_eq!(json_of(ask("f", "x").await).await.0, 400);

        // Block 1 records f/1 and f/2; block 2 sends f/2 again (a retry) and f/3.
        let commit = |txs: Vec<Transaction>, height: u64| {
            let (hdr, st) = {
                let g = shared.lock();
                (g.finalized_header.clone(), g.finalized_state.clone())
            };
            let ctx = BlockContext {
                epoch: 0,
                view: height,
                parent_view: height - 1,
                proposer: Keypair::from_test_index(9).public(),
                timestamp_ms: hdr.timestamp_ms + 1,
            };
            let built = build_block(&hdr, &st, ctx, txs);
            assert!(built.rejected.is_empty(), "{:?}", built.rejected);
            let root = built.block.header.audit_root;
            let _ = shared
                .lock()
                .commit(&LedgerBlock::new(built.block), built.state);
            root
        };
        commit(vec![audit_tx(&a, 0), audit_tx(&a, 1)], 1);
        let mut retry = audit_tx(&a, 1).body;
        retry.nonce = 2;
        let root = commit(vec![retry.sign(&a), audit_tx(&a, 3)], 2);
        {
            let g = shared.lock();
            assert_eq!(g.audit_log.size(), 3, "the retry appended nothing");
            assert_eq!(g.audit_log.root(), root);
        }
        let (code, v) = json_of(ask("f", "2").await).await;
        assert_eq!(code, 503, "{v}");
        assert!(
            v["error"]
                .as_str()
                .expect("error")
                .contains("is not in a certified block yet"),
            "{v}"
        );
    }

    /// Regression: a future-nonce transaction answered `{"status": "pending"}` and stayed so for
    /// ever. Admission and `GET /v1/tx/{hash}` now say which nonces are missing.
    #[tokio::test]
    async fn regression_pending_with_a_nonce_gap_says_so_in_the_api() {
        let a = Keypair::from_test_index(1);
        let s = state(shared_with_auditors(&[&a]));
        let t = audit_tx(&a, 7);
        let (code, v) = post(&s, t.encode()).await;
        assert_eq!(code, 202, "{v}");
        assert_eq!(v["status"], "pending", "{v}");
        assert_eq!(v["hash"], json!(t.hash()), "{v}");
        assert_eq!(v["next_nonce"], 0, "{v}");
        let reason = v["reason"].as_str().expect("reason");
        assert!(
            reason.starts_with(
                "nonce 7 but the account's next nonce is 0; transactions 0-6 are missing"
            ),
            "{v}"
        );
        assert_eq!(status_of(&s, &t.hash()).await, v);
        let (_, v) = post(&s, audit_tx(&a, 0).encode()).await;
        assert!(v.get("reason").is_none(), "{v}");
    }
}
