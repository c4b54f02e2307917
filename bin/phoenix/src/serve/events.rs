//! Live events of a fleet's operations (`GET /api/v1/fleets/{fleet}/events` and the portal's
//! `/portal/fleets/{fleet}/events`), as server-sent events.
//!
//! The source is the fleet's **audit chain in the state store**, tailed: an apply usually runs
//! in another process (`phoenix apply` on an operator's terminal, CI), and the engine records
//! every step it takes there (the operation's start, each unit started and stopped, each
//! health gate passed or failed, each wave finished, the rollback and each instance it
//! restored, the operation's end) in that chain, appended as the step happens and in order.
//! So the chain is the engine's events, persisted by whichever process ran them, on both
//! backends, with a gap-free sequence number that doubles as the SSE event id (a client that
//! reconnects with `Last-Event-ID` misses nothing). A separate events table would duplicate
//! it under a new schema version. What the chain lacks is what the engine does not record:
//! a unit *about to* start and warnings. See docs/serve.md.

use super::api::{self, ApiError};
use super::{AppState, blocking};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use phoenix_state::AuditRow;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How often a stream looks at the chain's head (one indexed read of the store).
const POLL: Duration = Duration::from_millis(250);
/// Streams open at once; past that, new ones are answered 503 (each costs a poll loop).
pub(crate) const MAX_STREAMS: usize = 64;
/// Records sent in one poll at most, so that a client far behind catches up in bounded steps.
const MAX_BATCH: usize = 500;

/// Counts open streams.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    open: AtomicUsize,
}

/// One slot of [`Streams`], given back when the stream ends (the client went away).
struct Slot(Arc<Streams>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Streams {
    fn take(self: &Arc<Self>) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Slot(self.clone()))
    }
}

/// A stream slot of the server's bound, for streams of other modules (the ledger's blocks).
pub(crate) fn take_slot(state: &AppState) -> Option<impl Send + 'static> {
    state.streams.take()
}

/// What kind of event an audit record of the engine is, from its step and outcome.
pub(crate) fn kind(step: &str, failed: bool, detail: &Value) -> &'static str {
    let head = step.split_whitespace().next().unwrap_or_default();
    match head {
        // An operation's start carries its diff counts; the automatic rollback inside an
        // apply is also `rollback.start`, with a reason instead.
        "rollback.start" if detail.get("reason").is_some() => "rollback-started",
        "unit.start" if failed => "unit-failed",
        "unit.start" => "unit-started",
        h if h.ends_with(".start") => "operation-started",
        h if h.ends_with(".finish") => "operation-finished",
        "wave" => "wave-finished",
        "unit.stop" => "unit-stopped",
        "gate" if failed => "gate-failed",
        "gate" => "gate-passed",
        "canary.analysis" => "canary",
        "rollback" => "instance-restored",
        "job" => "job",
        _ => "step",
    }
}

/// An audit row as the event's JSON: the record's fields and its kind.
pub(crate) fn event_json(row: &AuditRow) -> Value {
    let Ok(record) = serde_json::from_str::<Value>(&row.record_json) else {
        return json!({"seq": row.seq, "kind": "unreadable", "step": "", "outcome": {"status": "unknown"}});
    };
    let step = record["step"].as_str().unwrap_or_default();
    let failed = record["outcome"]["status"] != "ok";
    json!({
        "seq": row.seq,
        "kind": kind(step, failed, &record["detail"]),
        "at": record["at"],
        "actor": record["actor"],
        "revision": record["revision"],
        "step": step,
        "outcome": record["outcome"],
        "detail": record["detail"],
    })
}

/// Where a new stream starts: after `Last-Event-ID` or `?after=`, else at the latest
/// operation's start (so a page opened mid-rollout shows it from its beginning), else after the
/// head.
fn start_after(rows: &[AuditRow], after: Option<u64>) -> u64 {
    if let Some(a) = after {
        return a;
    }
    rows.iter()
        .rev()
        .find(|r| {
            let e = event_json(r);
            e["kind"] == "operation-started"
        })
        .map_or_else(
            || rows.last().map_or(0, |r| r.seq),
            |r| r.seq.saturating_sub(1),
        )
}

/// The `after` a client asked for, from `Last-Event-ID` (a reconnect) or `?after=`.
pub(crate) fn after_of(
    headers: &axum::http::HeaderMap,
    query: Option<&str>,
) -> Result<Option<u64>, ApiError> {
    let given = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query.map(str::to_string));
    given
        .map(|s| {
            s.trim().parse::<u64>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("`{s}` is not an event id (an audit record's seq, e.g. 12)"),
                )
            })
        })
        .transpose()
}

/// The event stream of `fleet` (already known to exist), from after `after`.
pub(crate) async fn stream(state: AppState, fleet: String, after: Option<u64>) -> Response {
    let Some(slot) = state.streams.take() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} event streams are open already; try again later"),
        )
        .into_response();
    };
    let name = fleet.clone();
    let first = match blocking(&state, move |store| {
        api::fleet_exists(store, &name)?;
        Ok(store.audit_records(&name)?)
    })
    .await
    {
        Ok(rows) => rows,
        Err(e) => return e.into_response(),
    };
    let last = start_after(&first, after);
    let init = Tail {
        state,
        fleet,
        last,
        pending: std::collections::VecDeque::new(),
        first: Some(first),
        _slot: slot,
    };
    let events = futures_util::stream::unfold(init, |mut tail| async move {
        let event = tail.next().await;
        Some((Ok::<_, Infallible>(event), tail))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// A stream's position in the chain.
struct Tail {
    state: AppState,
    fleet: String,
    /// The seq of the last record sent.
    last: u64,
    pending: std::collections::VecDeque<AuditRow>,
    /// The rows read when the stream opened, used for its first batch.
    first: Option<Vec<AuditRow>>,
    _slot: Slot,
}

impl Tail {
    /// The next event: a record after `last`, waiting for one as long as it takes (the
    /// client's disconnect drops the stream, and with it this wait).
    async fn next(&mut self) -> Event {
        loop {
            if let Some(row) = self.pending.pop_front() {
                self.last = row.seq;
                let e = event_json(&row);
                let kind = e["kind"].as_str().unwrap_or("step").to_string();
                return Event::default()
                    .id(row.seq.to_string())
                    .event(kind)
                    .data(e.to_string());
            }
            let rows = match self.first.take() {
                Some(rows) => Ok(rows),
                None => {
                    tokio::time::sleep(POLL).await;
                    self.read().await
                }
            };
            match rows {
                Ok(rows) => {
                    // A chain that restarted below `last` (a fleet destroyed and applied anew
                    // from an empty store) is followed from its start again.
                    if rows.last().is_some_and(|r| r.seq < self.last) {
                        self.last = 0;
                    }
                    self.pending.extend(
                        rows.into_iter()
                            .filter(|r| r.seq > self.last)
                            .take(MAX_BATCH),
                    );
                }
                Err(e) => {
                    // The store did not answer: say so, and try again at the next poll.
                    return Event::default()
                        .event("error")
                        .data(json!({"error": e.parts().1}).to_string());
                }
            }
        }
    }

    /// The rows after `last`, reading the whole chain only when its head moved.
    async fn read(&self) -> Result<Vec<AuditRow>, ApiError> {
        let fleet = self.fleet.clone();
        let last = self.last;
        blocking(&self.state, move |store| {
            match store.audit_head(&fleet)? {
                Some(head) if head.seq != last => Ok(store.audit_records(&fleet)?),
                _ => Ok(Vec::new()),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_map_to_event_kinds() {
        let null = Value::Null;
        assert_eq!(
            kind("apply.start", false, &json!({"creates": 1})),
            "operation-started"
        );
        assert_eq!(
            kind("rollback.start", false, &json!({"creates": 1})),
            "operation-started"
        );
        assert_eq!(
            kind("rollback.start", false, &json!({"reason": "gate"})),
            "rollback-started"
        );
        assert_eq!(kind("apply.finish", true, &null), "operation-finished");
        assert_eq!(kind("wave 0.1", false, &null), "wave-finished");
        assert_eq!(kind("gate web-0@r2", true, &null), "gate-failed");
        assert_eq!(kind("gate web-0@r2", false, &null), "gate-passed");
        assert_eq!(kind("unit.start web-0@r2", false, &null), "unit-started");
        assert_eq!(kind("rollback web-0", false, &null), "instance-restored");
        assert_eq!(kind("audit.allow-key", false, &null), "step");
    }
}
