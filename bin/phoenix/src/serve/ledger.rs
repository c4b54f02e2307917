//! The ledger explorer of `phoenix serve --ledger URL[,URL...]`: the ledger's own API
//! (`/v1/status`, `/v1/blocks`, `/v1/tx`, `/v1/state`, `/v1/proof`, `/v1/consensus`), read
//! through `ledger_link`'s client (a timeout on every request, failover across the URLs) and
//! reshaped for the API under `/api/v1/ledger` and the portal's ledger page; and each audit
//! record's confirmation on the ledger, judged by `ledger_link::verify_once`, the same check as
//! `phoenix history --verify --ledger`.

use super::api::ApiError;
use crate::ledger_link::client::Client;
use axum::http::StatusCode;
use serde_json::{Value, json};

/// Blocks a listing gives at most.
pub(crate) const MAX_BLOCKS: u64 = 50;
/// A validator counts as signing while its latest vote is at most this many views behind the
/// node's view (a few views pass without a vote from anyone while blocks are empty).
pub(crate) const SIGNING_WINDOW_VIEWS: u64 = 20;

/// The answer of every ledger route of a server without `--ledger`.
const NO_LEDGER: &str = "no ledger is configured: start phoenix serve with --ledger URL[,URL...]";

/// Runs `f` with a client of the ledger at `urls` on a thread of its own: the client blocks on a
/// runtime of its own, which must not run on the server's.
pub(crate) async fn with_client<T: Send + 'static>(
    urls: &[String],
    f: impl FnOnce(&mut Client) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    if urls.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, NO_LEDGER));
    }
    let urls = urls.to_vec();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("serve-ledger".into())
        .spawn(move || {
            let result = Client::new(&urls).and_then(|mut c| f(&mut c));
            let _ = tx.send(result);
        })
        .map_err(|e| ApiError::internal(format!("starting a ledger request: {e}")))?;
    rx.await
        .map_err(|_| ApiError::internal("a ledger request stopped unexpectedly"))?
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("{e:#}")))
}

/// `GET path` on the ledger, `None` when it answers 404.
fn get(c: &mut Client, path: &str) -> anyhow::Result<Option<Value>> {
    c.get_json_at(path)
}

/// The ledger's status, and which URL answered.
pub(crate) fn status(c: &mut Client) -> anyhow::Result<Value> {
    let status = get(c, "/v1/status")?
        .ok_or_else(|| anyhow::anyhow!("the ledger at {} has no /v1/status", c.url()))?;
    Ok(json!({ "url": c.url(), "status": status }))
}

/// A block as the explorer lists it.
fn block_summary(b: &Value) -> Value {
    json!({
        "height": b["height"],
        "hash": b["hash"],
        "proposer": b["proposer"],
        "epoch": b["epoch"],
        "view": b["view"],
        "timestamp_ms": b["timestamp_ms"],
        "tx_count": b["tx_count"],
        "transactions": b["transactions"],
        // The number of validator signatures in its finality certificate, when it has one.
        "finalized_by": b["finality"]["signers"].as_u64(),
    })
}

/// One block (`None` if the ledger has no such block), with its transactions in full or
/// their hashes only. Always read with its transactions: only that answer of the node carries
/// the block's finality certificate (who signed it).
pub(crate) fn block(c: &mut Client, height: u64, full: bool) -> anyhow::Result<Option<Value>> {
    Ok(get(c, &format!("/v1/blocks/{height}?txs=true"))?.map(|b| {
        let mut v = block_summary(&b);
        if !full && let Some(txs) = v["transactions"].as_array() {
            let hashes: Vec<Value> = txs
                .iter()
                .map(|t| t.get("hash").cloned().unwrap_or_else(|| t.clone()))
                .collect();
            v["transactions"] = Value::Array(hashes);
        }
        v
    }))
}

/// The latest `limit` finalized blocks, newest first.
pub(crate) fn blocks(c: &mut Client, limit: u64) -> anyhow::Result<Value> {
    let status = status(c)?;
    let top = status["status"]["finalized_height"].as_u64().unwrap_or(0);
    let mut out = Vec::new();
    let low = top.saturating_sub(limit.clamp(1, MAX_BLOCKS)) + 1;
    for h in (low.max(1)..=top).rev() {
        if let Some(b) = block(c, h, false)? {
            out.push(b);
        }
    }
    Ok(json!({ "url": status["url"], "finalized_height": top, "blocks": out }))
}

/// The validators with their signing liveness as the answering node saw it.
pub(crate) fn validators(c: &mut Client) -> anyhow::Result<Value> {
    let status = get(c, "/v1/status")?.unwrap_or(Value::Null);
    let consensus = get(c, "/v1/consensus")?.unwrap_or(Value::Null);
    let view = status["view"].as_u64().unwrap_or(0);
    let liveness = consensus["validator_liveness"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let list: Vec<Value> = status["validators"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|v| {
            let key = v["key"].as_str().or(v.as_str()).unwrap_or_default();
            let seen = liveness.iter().find(|l| l["key"] == key);
            let last_view = seen.and_then(|l| l["last_view"].as_u64());
            let signing = last_view.is_some_and(|lv| lv + SIGNING_WINDOW_VIEWS >= view);
            json!({
                "key": key,
                "address": v["address"],
                "notarizes": seen.map(|l| l["notarizes"].clone()),
                "finalizes": seen.map(|l| l["finalizes"].clone()),
                "nullifies": seen.map(|l| l["nullifies"].clone()),
                "last_view": last_view,
                "signing": signing,
            })
        })
        .collect();
    let n = list.len() as u64;
    let signing = list.iter().filter(|v| v["signing"] == true).count() as u64;
    // BFT: n = 3f + 1 tolerates f faulty; the quorum is n - f.
    let f = n.saturating_sub(1) / 3;
    Ok(json!({
        "url": c.url(),
        "view": view,
        "epoch": status["epoch"],
        "signing_window_views": SIGNING_WINDOW_VIEWS,
        "validators": list,
        "signing": signing,
        "quorum": n - f,
        "quorum_signing": signing >= n - f,
    }))
}

/// A name safe to put into a ledger API path: no `..`, no query, bounded.
pub(crate) fn check_path_part(what: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 256
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{s}` is not a {what} (letters, digits, - _ . / :, at most 256)"),
        ))
    }
}

/// A transaction hash: 64 hex digits.
pub(crate) fn check_hash(s: &str) -> Result<(), ApiError> {
    if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{s}` is not a transaction hash (64 hex digits)"),
        ))
    }
}

/// `GET` of a ledger path that must exist: 404 with `what` when the ledger has none.
pub(crate) fn existing(c: &mut Client, path: &str, what: &str) -> anyhow::Result<Value> {
    get(c, path)?.ok_or_else(|| anyhow::anyhow!("{NOT_ON_LEDGER}{what}"))
}

/// Marks an error that is a 404 of the ledger (see [`not_found_status`]).
const NOT_ON_LEDGER: &str = "not on the ledger: ";

/// The ledger's 404 as ours; other failures stay 502.
pub(crate) fn not_found_status(e: ApiError) -> ApiError {
    let (status, message) = e.parts();
    match message.strip_prefix(NOT_ON_LEDGER) {
        Some(what) if status == StatusCode::BAD_GATEWAY => {
            ApiError::new(StatusCode::NOT_FOUND, format!("the ledger has no {what}"))
        }
        _ => e,
    }
}

/// Each record of `chain` with its confirmation on the ledger: `confirmed` (the ledger holds it
/// with the same hash, in order) or the problem `ledger_link::verify_once` names (`missing`,
/// `different`, `out-of-order`), and chain-level problems (`extra`: the ledger has records the
/// local chain lacks).
pub(crate) fn confirmation(
    c: &mut Client,
    chain: &[phoenix_audit::AuditRecord],
    fleet: &str,
) -> anyhow::Result<Value> {
    let problems = crate::ledger_link::verify_once(c, chain, fleet)?;
    let records: Vec<Value> = chain
        .iter()
        .map(|r| {
            let mine: Vec<_> = problems.iter().filter(|p| p.seq == r.seq).collect();
            match mine.first() {
                None => json!({"seq": r.seq, "status": "confirmed"}),
                Some(p) => json!({"seq": r.seq, "status": p.kind, "message": p.message}),
            }
        })
        .collect();
    let confirmed = records
        .iter()
        .filter(|r| r["status"] == "confirmed")
        .count();
    Ok(json!({
        "url": c.url(),
        "confirmed": confirmed,
        "records": records,
        "problems": problems.iter().map(|p| json!({"seq": p.seq, "kind": p.kind, "message": p.message})).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parts_refuse_traversal_and_odd_characters() {
        assert!(check_path_part("key", "audit/fleet/3").is_ok());
        assert!(check_path_part("key", "../v1/txs").is_err());
        assert!(check_path_part("key", "a?b").is_err());
        assert!(check_path_part("key", "").is_err());
        assert!(check_hash(&"ab".repeat(32)).is_ok());
        assert!(check_hash("xyz").is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Routes

use super::AppState;
use super::api::ErrorBody;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

type ApiResult = Result<Json<Value>, ApiError>;

fn urls(state: &AppState) -> Vec<String> {
    state.ledger.ledger.clone()
}

#[utoipa::path(get, path = "/api/v1/ledger", tag = "ledger", summary = "The ledger's status (chain, heights, view, epoch, peers, validators)", security(("bearer" = [])), responses((status = 200, description = "The status of the ledger node that answered, and its URL", body = super::schemas::LedgerStatus), (status = 404, description = "No ledger configured", body = ErrorBody), (status = 502, description = "The ledger cannot be reached", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
pub(crate) async fn ledger_status(State(state): State<AppState>) -> ApiResult {
    with_client(&urls(&state), status).await.map(Json)
}

#[derive(Deserialize)]
pub(crate) struct BlocksQuery {
    limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/ledger/blocks", tag = "ledger", summary = "The latest finalized blocks, newest first", params(("limit" = Option<u64>, Query, description = "How many (1-50, default 20)")), security(("bearer" = [])), responses((status = 200, description = "The latest finalized blocks", body = super::schemas::LedgerBlocks), (status = 400, description = "A bad query", body = ErrorBody), (status = 404, description = "No ledger configured", body = ErrorBody), (status = 502, description = "The ledger cannot be reached", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
pub(crate) async fn ledger_blocks(
    State(state): State<AppState>,
    query: Result<Query<BlocksQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{e}: the only query parameter is ?limit=1..50"),
        )
    })?;
    let limit = q.limit.unwrap_or(20);
    with_client(&urls(&state), move |c| blocks(c, limit))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/ledger/blocks/{height}", tag = "ledger", summary = "One finalized block with its transactions", params(("height" = u64, Path, description = "Block height")), security(("bearer" = [])), responses((status = 200, description = "The block", body = super::schemas::LedgerBlock), (status = 400, description = "Not a height", body = ErrorBody), (status = 404, description = "No such block, or no ledger configured", body = ErrorBody), (status = 502, description = "The ledger cannot be reached", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
pub(crate) async fn ledger_block(
    State(state): State<AppState>,
    Path(height): Path<String>,
) -> ApiResult {
    let height: u64 = height.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{height}` is not a block height"),
        )
    })?;
    with_client(&urls(&state), move |c| {
        block(c, height, true)?
            .ok_or_else(|| anyhow::anyhow!("{NOT_ON_LEDGER}finalized block at height {height}"))
    })
    .await
    .map_err(not_found_status)
    .map(Json)
}

#[utoipa::path(get, path = "/api/v1/ledger/tx/{hash}", tag = "ledger", summary = "Where a transaction is: finalized in a block, pending, or refused", params(("hash" = String, Path, description = "Transaction hash, 64 hex digits")), security(("bearer" = [])), responses((status = 200, description = "The transaction's state", body = Object), (status = 400, description = "Not a hash", body = ErrorBody), (status = 404, description = "Unknown transaction, or no ledger configured", body = ErrorBody), (status = 502, description = "The ledger cannot be reached", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
pub(crate) async fn ledger_tx(
    State(state): State<AppState>,
    Path(hash): Path<String>,
) -> ApiResult {
    check_hash(&hash)?;
    with_client(&urls(&state), move |c| {
        existing(c, &format!("/v1/tx/{hash}"), &format!("transaction {hash}"))
    })
    .await
    .map_err(not_found_status)
    .map(Json)
}

#[utoipa::path(get, path = "/api/v1/ledger/validators", tag = "ledger", summary = "The validators with their signing liveness", security(("bearer" = [])), responses((status = 200, description = "Each validator's votes seen and whether it is signing, and whether a quorum signs", body = super::schemas::LedgerValidators), (status = 404, description = "No ledger configured", body = ErrorBody), (status = 502, description = "The ledger cannot be reached", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
pub(crate) async fn ledger_validators(State(state): State<AppState>) -> ApiResult {
    with_client(&urls(&state), validators).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/ledger/state/{module}/{key}", tag = "ledger", summary = "A state entry of a ledger module", params(("module" = String, Path, description = "The module (governance, identity, provisioning, audit)"), ("key" = String, Path, description = "The entry's key (may contain /)")), security(("bearer" = [])), responses((status = 200, description = "The entry", body = Object), (status = 400, description = "A bad module or key", body = ErrorBody), (status = 404, description = "No such entry, or no ledger configured", body = ErrorBody), (status = 502, description = "The ledger cannot be reached", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
pub(crate) async fn ledger_state(
    State(state): State<AppState>,
    Path((module, key)): Path<(String, String)>,
) -> ApiResult {
    check_path_part("module", &module)?;
    check_path_part("key", &key)?;
    with_client(&urls(&state), move |c| {
        existing(
            c,
            &format!("/v1/state/{module}/{key}"),
            &format!("state entry {module}/{key}"),
        )
    })
    .await
    .map_err(not_found_status)
    .map(Json)
}

#[utoipa::path(get, path = "/api/v1/ledger/proof/audit/{fleet}/{seq}", tag = "ledger", summary = "The proof that a fleet's audit record is on the ledger (for the light client)", params(("fleet" = String, Path, description = "The fleet's name", example = "demo"), ("seq" = u64, Path, description = "The record's seq in the fleet's chain", example = 1)), security(("bearer" = [])), responses((status = 200, description = "The proof", body = Object), (status = 400, description = "A bad fleet name or seq", body = ErrorBody), (status = 404, description = "No such record on the ledger, or no ledger configured", body = ErrorBody), (status = 502, description = "The ledger cannot be reached", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
pub(crate) async fn ledger_proof(
    State(state): State<AppState>,
    Path((fleet, seq)): Path<(String, String)>,
) -> ApiResult {
    super::api::check_fleet_name(&fleet)?;
    let seq: u64 = seq.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{seq}` is not a record seq"),
        )
    })?;
    with_client(&urls(&state), move |c| {
        existing(
            c,
            &format!("/v1/proof/audit/{fleet}/{seq}"),
            &format!("audit record {seq} of {fleet}"),
        )
    })
    .await
    .map_err(not_found_status)
    .map(Json)
}

/// The ledger confirmation of each record of `fleet`'s chain, or `None` without a ledger; a
/// ledger that cannot be reached is reported in the value, not as a failure of the page.
pub(crate) async fn audit_confirmation(state: &AppState, fleet: &str) -> Option<Value> {
    let urls = urls(state);
    if urls.is_empty() {
        return None;
    }
    let name = fleet.to_string();
    let chain = super::blocking(state, move |store| {
        phoenix_audit::read_chain(store, &name)
            .map_err(|e| ApiError::internal(format!("reading the audit chain: {e}")))
    })
    .await;
    let chain = match chain {
        Ok(c) => c,
        Err(e) => return Some(json!({"error": e.parts().1})),
    };
    let fleet = fleet.to_string();
    Some(
        with_client(&urls, move |c| confirmation(c, &chain, &fleet))
            .await
            .unwrap_or_else(|e| json!({"error": e.parts().1})),
    )
}

/// The finalized blocks as server-sent events (`event: block`, id = height), from the next one
/// on, polling the ledger's status every second.
pub(crate) async fn block_events(state: AppState) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let urls = urls(&state);
    if urls.is_empty() {
        return ApiError::new(StatusCode::NOT_FOUND, NO_LEDGER).into_response();
    }
    let Some(slot) = super::events::take_slot(&state) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams are open; try again later",
        )
        .into_response();
    };
    let init = (
        urls,
        None::<u64>,
        std::collections::VecDeque::<Value>::new(),
        slot,
    );
    let events =
        futures_util::stream::unfold(init, |(urls, mut last, mut pending, slot)| async move {
            loop {
                if let Some(b) = pending.pop_front() {
                    let id = b["height"].as_u64().unwrap_or(0);
                    last = Some(id);
                    let e = Event::default()
                        .id(id.to_string())
                        .event("block")
                        .data(b.to_string());
                    return Some((
                        Ok::<_, std::convert::Infallible>(e),
                        (urls, last, pending, slot),
                    ));
                }
                if last.is_some() {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                let from = last;
                let got = with_client(&urls, move |c| {
                    let top = status(c)?["status"]["finalized_height"]
                        .as_u64()
                        .unwrap_or(0);
                    // The first poll starts at the tip; later ones send every block since, at most
                    // MAX_BLOCKS per poll.
                    let low = from.map_or(top, |l| (l + 1).max(top.saturating_sub(MAX_BLOCKS) + 1));
                    let mut out = Vec::new();
                    for h in low..=top {
                        if let Some(b) = block(c, h, false)? {
                            out.push(b);
                        }
                    }
                    Ok(out)
                })
                .await;
                match got {
                    Ok(blocks) => {
                        if blocks.is_empty() && last.is_none() {
                            last = Some(0);
                        }
                        pending.extend(blocks);
                    }
                    Err(e) => {
                        let e = Event::default()
                            .event("error")
                            .data(json!({"error": e.parts().1}).to_string());
                        if last.is_none() {
                            last = Some(0);
                        }
                        return Some((Ok(e), (urls, last, pending, slot)));
                    }
                }
            }
        });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/ledger/events", tag = "ledger", summary = "Finalized blocks as they come (server-sent events)", security(("bearer" = [])), responses((status = 200, description = "An endless text/event-stream of `block` events, id = height", content_type = "text/event-stream", body = String), (status = 404, description = "No ledger configured", body = ErrorBody), (status = 503, description = "Too many streams open", body = ErrorBody), (status = 401, description = "No token, or an unknown, revoked or expired one", body = ErrorBody), (status = 429, description = "Too many failed attempts from this address", body = ErrorBody)))]
pub(crate) async fn ledger_events(State(state): State<AppState>) -> Response {
    block_events(state).await
}
