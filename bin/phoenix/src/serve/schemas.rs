//! The shapes of the API's answers, for `/openapi.json` only: the handlers in `api.rs` build
//! their answers as JSON (most of them from the read-side views, which keep JSON), and these
//! types describe them field by field. `.ci/fuzz-api.sh` runs schemathesis with
//! `response_schema_conformance`, which holds every answer of a real server to these schemas,
//! so a field added to an answer and not here (or here and not there) fails the build.
//!
//! Nothing serializes these types; a field's type is what its JSON is (`Option` for a value
//! that may be `null`).

// Never constructed: they exist for their `ToSchema` derives.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `GET /health/live`.
#[derive(ToSchema)]
pub(crate) struct Live {
    /// `live`.
    status: String,
}

/// `GET /health/ready` (200; 503 has `status` and `error`).
#[derive(ToSchema)]
pub(crate) struct Ready {
    /// `ready` (or `not ready` with 503).
    status: String,
    /// How many fleets the store holds.
    fleets: Option<u64>,
    /// Why the store does not answer (503 only).
    error: Option<String>,
}

/// `GET /api/v1/whoami`.
#[derive(ToSchema)]
pub(crate) struct WhoAmI {
    /// The token's name (the actor of what is done with it).
    name: String,
    /// `viewer` or `deployer`.
    role: String,
}

/// A site's instances desired running and healthy, as last observed.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct SiteHealth {
    instances: u64,
    healthy: u64,
    /// How old the oldest observation among them is.
    oldest_observation_age_seconds: Option<f64>,
}

/// Who holds a fleet's deploy lock.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct LockHolder {
    who: String,
    operation: String,
    expires_at: String,
}

/// A revision as the API lists it.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct RevisionSummary {
    number: u64,
    /// `pending`, `applied`, `failed`, `rolled-back`, ...
    outcome: String,
    /// Why it failed, when it did.
    reason: Option<String>,
    /// The revision it was rolled back to, when it was.
    rolled_back_to: Option<u64>,
    /// `apply`, `rollback` or `destroy` (`null` for a document this phoenix cannot read).
    kind: Option<String>,
    /// The revision a rollback returned to.
    rollback_of: Option<u64>,
    /// How many instances the revision declares.
    instances: Option<u64>,
    actor: String,
    plan_hash: String,
    created_at: String,
    finished_at: Option<String>,
}

/// One fleet at a glance (`GET /api/v1/fleets/{fleet}`, and each of `GET /api/v1/fleets`).
#[derive(ToSchema)]
pub(crate) struct FleetSummary {
    name: String,
    latest_revision: Option<RevisionSummary>,
    applied_revision: Option<u64>,
    /// Instances desired running.
    instances: u64,
    /// Of those, running and past their health gate at the last observation.
    healthy: u64,
    all_healthy: bool,
    /// Per site.
    sites: BTreeMap<String, SiteHealth>,
    /// The deploy lock's holder, read fresh for the answer.
    lock: Option<LockHolder>,
    /// How old the view this was answered from is.
    view_age_seconds: f64,
}

/// `GET /api/v1/fleets`.
#[derive(ToSchema)]
pub(crate) struct Fleets {
    fleets: Vec<FleetSummary>,
}

/// One instance record with its last observation.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct InstanceView {
    /// `web-0@r3`.
    unit: String,
    service: String,
    instance: String,
    revision: u64,
    site: String,
    host: String,
    /// The provider endpoint that runs it.
    endpoint: String,
    /// `running` or `stopped`.
    desired: String,
    /// `starting`, `running`, `stopped`, `failed`, ...
    observed: String,
    healthy: bool,
    /// Port name to the port allocated.
    #[schema(value_type = Object)]
    ports: Value,
    observed_at: String,
    age_seconds: f64,
}

/// `GET /api/v1/fleets/{fleet}/instances/{instance}`: the record, with its fleet and the view's
/// age.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct OneInstance {
    #[schema(inline)]
    #[serde(flatten)]
    record: InstanceView,
    fleet: String,
    view_age_seconds: f64,
}

/// `GET /api/v1/fleets/{fleet}/instances`: a page of the records.
#[derive(ToSchema)]
pub(crate) struct InstancePage {
    fleet: String,
    /// Where health comes from.
    source: String,
    view_age_seconds: f64,
    sites: BTreeMap<String, SiteHealth>,
    /// How many instances the fleet has in all.
    total: u64,
    instances: Vec<InstanceView>,
    /// Give it as `?after=` for the next page; `null` on the last.
    next_after: Option<String>,
}

/// `GET /api/v1/fleets/{fleet}/revisions`.
#[derive(ToSchema)]
pub(crate) struct Revisions {
    fleet: String,
    revisions: Vec<RevisionSummary>,
}

/// A spec file.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct SpecFile {
    name: String,
    text: String,
}

/// `GET /api/v1/fleets/{fleet}/spec`: a revision's spec files.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct SpecView {
    revision: u64,
    /// The `--env` overlay it was applied with.
    environment: Option<String>,
    files: Vec<SpecFile>,
}

/// A revision's `--target` and `--exclude`.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct Targets {
    target: Vec<String>,
    exclude: Vec<String>,
}

/// `GET /api/v1/fleets/{fleet}/revisions/{revision}`: the summary, and (when its document is
/// readable) its spec and targets.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct RevisionView {
    #[schema(inline)]
    #[serde(flatten)]
    summary: RevisionSummary,
    spec: Option<SpecView>,
    targets: Option<Targets>,
}

/// An instance in a diff.
#[derive(ToSchema)]
pub(crate) struct DiffInstance {
    instance: String,
    service: String,
    site: String,
    /// For a changed instance: where it was.
    from_site: Option<String>,
}

/// Instances by what happened to them between two revisions.
#[derive(ToSchema)]
pub(crate) struct DiffInstances {
    added: Vec<DiffInstance>,
    removed: Vec<DiffInstance>,
    changed: Vec<DiffInstance>,
    unchanged: u64,
}

/// A spec file that differs (`null` on the side that lacks it).
#[derive(ToSchema)]
pub(crate) struct DiffFile {
    name: String,
    from: Option<String>,
    to: Option<String>,
}

/// Both revisions' environment overlays.
#[derive(ToSchema)]
pub(crate) struct DiffEnvironment {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/fleets/{fleet}/diff`.
#[derive(ToSchema)]
pub(crate) struct Diff {
    fleet: String,
    from: u64,
    to: u64,
    instances: DiffInstances,
    environment: DiffEnvironment,
    files: Vec<DiffFile>,
}

/// `GET /api/v1/fleets/{fleet}/audit`.
#[derive(ToSchema)]
pub(crate) struct Audit {
    fleet: String,
    /// Whether every hash, link and signature checks out up to the anchor.
    verified: bool,
    /// The report of `phoenix history --verify`: records, problems by seq, unanchored records.
    #[schema(value_type = Object)]
    verification: Value,
    /// Each record as stored (one that does not parse: `{seq, unreadable}`).
    #[schema(value_type = Vec<Object>)]
    records: Vec<Value>,
    /// With `--ledger`: each record's confirmation on the ledger.
    #[schema(value_type = Option<Object>)]
    ledger: Option<Value>,
}

/// The plan (`phoenix plan -o json`, the contract of `fleet-spec.md`), and for a stored fleet
/// the revision it is of. The fields named are those the contract requires; the rest of the
/// document is described in `fleet-spec.md` and `docs/spec-extensions.md`.
#[derive(ToSchema)]
pub(crate) struct Plan {
    fleet: String,
    /// The revision planned (`GET /api/v1/fleets/{fleet}/plan` only).
    revision: Option<u64>,
    #[schema(value_type = Object)]
    projects: Value,
    #[schema(value_type = Object)]
    sites: Value,
    #[schema(value_type = Vec<Object>)]
    findings: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    tiers: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    validator_sets: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    phases: Vec<Value>,
    /// `null` when no project has a duration.
    #[schema(value_type = Option<Object>)]
    timeline: Option<Value>,
}

/// How a write through the server ended.
#[derive(ToSchema)]
pub(crate) struct WriteOutcome {
    fleet: String,
    /// `rollback`, `apply` or `destroy`.
    operation: String,
    /// The revision it made (`null` when there was nothing to do).
    revision: Option<u64>,
    /// The engine's outcome.
    outcome: Value,
    /// What failed, when something did.
    failure: Value,
    /// The instances an automatic rollback restored.
    restored: Vec<String>,
}

/// `POST /api/v1/validate` (200), and the body of every 422 for a posted spec.
#[derive(ToSchema)]
pub(crate) struct Validation {
    valid: Option<bool>,
    fleet: Option<String>,
    sites: Option<u64>,
    services: Option<u64>,
    /// With 422: how many problems.
    error: Option<String>,
    #[schema(value_type = Vec<Object>)]
    diagnostics: Vec<Value>,
    /// With 422: the diagnostics as `phoenix validate` prints them.
    rendered: Option<String>,
}

/// `GET /api/v1/ledger`: the answering node's `/v1/status`, and its URL.
#[derive(ToSchema)]
pub(crate) struct LedgerStatus {
    /// The URL that answered (the first of `--ledger` that did).
    url: String,
    /// The node's status as it gave it: chain id, heights, view, epoch, peers, validators,
    /// mempool.
    #[schema(value_type = Object)]
    status: Value,
}

/// A finalized block as the explorer lists it (the node's fields, passed on).
#[derive(ToSchema)]
pub(crate) struct LedgerBlock {
    height: Value,
    hash: Value,
    proposer: Value,
    epoch: Value,
    view: Value,
    timestamp_ms: Value,
    tx_count: Value,
    /// Transaction hashes (in a list of blocks), or the transactions in full (one block).
    transactions: Value,
    /// How many validators signed its finality certificate, when it has one.
    finalized_by: Option<u64>,
}

/// `GET /api/v1/ledger/blocks`.
#[derive(ToSchema)]
pub(crate) struct LedgerBlocks {
    url: Value,
    finalized_height: u64,
    /// Newest first.
    blocks: Vec<LedgerBlock>,
}

/// A validator's votes as the answering node saw them.
#[derive(ToSchema)]
pub(crate) struct LedgerValidator {
    key: String,
    address: Value,
    notarizes: Value,
    finalizes: Value,
    nullifies: Value,
    last_view: Option<u64>,
    /// Its latest vote is at most `signing_window_views` behind the node's view.
    signing: bool,
}

/// `GET /api/v1/ledger/validators`.
#[derive(ToSchema)]
pub(crate) struct LedgerValidators {
    url: String,
    view: u64,
    epoch: Value,
    signing_window_views: u64,
    validators: Vec<LedgerValidator>,
    /// How many are signing.
    signing: u64,
    /// n - f.
    quorum: u64,
    /// Whether a quorum signs.
    quorum_signing: bool,
}
