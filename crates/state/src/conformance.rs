//! The conformance suite every [`StateStore`] backend must pass (feature `testing`).
//!
//! Each check is a function over a [`Harness`]; [`conformance_tests!`](crate::conformance_tests)
//! turns them all into `#[test]`s:
//!
//! ```text
//! phoenix_state::conformance_tests!(phoenix_state::conformance::SqliteHarness::new());
//! ```
//!
//! Checks use fleet names unique to the run, so they may share one database and run in
//! parallel (as PostgreSQL runs do).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::{
    ApiToken, AuditKey, AuditKeyChange, AuditRow, DesiredState, InstanceState, IntentId, IntentOp,
    IntentOutcome, Lease, LockOwner, LockRequest, NewApiToken, NewIntent, NewRevision,
    ObservedState, PostgresStore, RevisionNumber, RevisionOutcome, SqliteStore, StateError,
    StateStore, UnitId, Write, Written,
};

/// The environment variable naming the PostgreSQL database for the PostgreSQL run.
pub const POSTGRES_URL_VAR: &str = "PHOENIX_TEST_POSTGRES_URL";

/// Opens stores on one underlying database.
pub trait Harness {
    /// A new store (a new connection) on the same database: opening twice is a reopen.
    fn open(&self) -> Box<dyn StateStore>;
}

/// SQLite in a temporary directory, deleted when the harness is dropped.
#[derive(Debug)]
pub struct SqliteHarness {
    dir: tempfile::TempDir,
}

impl SqliteHarness {
    /// A fresh temporary state directory. `Option` to fit [`conformance_tests!`](crate::conformance_tests).
    pub fn new() -> Option<Self> {
        Some(Self {
            dir: tempfile::tempdir().expect("create a temporary state directory"),
        })
    }
}

impl Harness for SqliteHarness {
    fn open(&self) -> Box<dyn StateStore> {
        Box::new(SqliteStore::open(self.dir.path()).expect("open the SQLite store"))
    }
}

/// PostgreSQL at the URL in [`POSTGRES_URL_VAR`].
#[derive(Debug)]
pub struct PostgresHarness {
    url: String,
}

impl PostgresHarness {
    /// The harness, or `None` (after printing why the test is skipped) when
    /// [`POSTGRES_URL_VAR`] is not set.
    pub fn from_env() -> Option<Self> {
        match std::env::var(POSTGRES_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => Some(Self { url }),
            _ => {
                // Once per test binary, and straight to the process's stderr: the test harness
                // captures `eprintln!` of passing tests, and a skip must be seen.
                static SAY_ONCE: std::sync::Once = std::sync::Once::new();
                SAY_ONCE.call_once(|| {
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "SKIPPED: the PostgreSQL state conformance tests pass without running: \
                         {POSTGRES_URL_VAR} is not set. Run `eval \"$(bash .ci/postgres.sh)\"` \
                         first (CI does)."
                    );
                });
                None
            }
        }
    }
}

impl Harness for PostgresHarness {
    fn open(&self) -> Box<dyn StateStore> {
        Box::new(PostgresStore::connect(&self.url).expect("connect to the PostgreSQL store"))
    }
}

/// Generates one `#[test]` per conformance check. `$harness` is an expression of type
/// `Option<impl Harness>` evaluated in each test; `None` skips the test (the harness says why).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            revision_numbering,
            revision_content_round_trips,
            revision_outcomes,
            latest_applied_revision,
            instance_upsert_get_list_delete,
            fleet_generation_moves_with_revisions_and_instances,
            intents_open_and_close,
            intents_are_per_fleet,
            batch_is_all_or_nothing,
            batch_results_follow_write_order,
            lock_contention_reports_the_holder,
            lock_release_and_reacquire,
            lock_expiry_allows_takeover,
            lock_explicit_takeover_by_token,
            lock_renewal_extends_the_lease,
            stale_lease_cannot_write,
            lock_rejects_zero_ttl,
            concurrent_lock_acquisition,
            concurrent_writers_get_distinct_numbers,
            persistence_across_reopen,
            fleets_are_listed,
            audit_anchor_only_moves_forward,
            audit_chain_appends_only_at_its_head,
            audit_keys_follow_their_records,
            instance_endpoint_round_trips,
            api_tokens_are_created_found_listed_and_revoked,
            api_token_expiry_and_name_reuse,
            job_runs_are_recorded_per_revision_and_fenced,
            secrets_are_written_only_over_what_was_read,
        );
    };
    (@each $harness:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                if let Some(harness) = $harness {
                    $crate::conformance::$check(&harness);
                }
            }
        )*
    };
}

/// A fleet name no other check (or earlier run against the same database) uses.
pub fn unique_fleet(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

fn owner(name: &str, operation: &str) -> LockOwner {
    LockOwner {
        who: format!("{name}@test-host"),
        pid: 4242,
        operation: operation.to_owned(),
    }
}

fn lock(store: &dyn StateStore, fleet: &str) -> Lease {
    store
        .acquire_lock(
            fleet,
            &LockRequest::new(owner("alice", "apply"), Duration::from_secs(60)),
        )
        .expect("acquire the lock")
        .lease
}

fn new_revision(tag: &str) -> NewRevision {
    NewRevision {
        spec_json: format!(r#"{{"name": "demo", "tag": "{tag}", "note": "ünïcödé  spaces"}}"#),
        placement_json: r#"{"web-0": "core-1/0"}"#.to_owned(),
        plan_hash: format!("hash-{tag}"),
        actor: "alice@test-host".to_owned(),
    }
}

fn instance(name: &str, revision: u64) -> InstanceState {
    let revision = RevisionNumber(revision);
    InstanceState {
        unit: UnitId::new(name, revision),
        service: name.split('-').next().unwrap_or(name).to_owned(),
        instance: name.to_owned(),
        revision,
        site: "core-1".to_owned(),
        host: "core-1-0".to_owned(),
        endpoint: "fake://conformance".to_owned(),
        desired: DesiredState::Running,
        observed: ObservedState::Unknown,
        handle: serde_json::Value::Null,
        ports: json!({"port": 8080}),
    }
}

fn start_intent(name: &str, revision: u64) -> NewIntent {
    NewIntent {
        op: IntentOp::Start,
        unit: UnitId::new(name, RevisionNumber(revision)),
        revision: RevisionNumber(revision),
        detail: json!({"command": ["python3", "-m", "http.server"]}),
    }
}

/// Revisions are numbered 1, 2, 3, ... per fleet.
pub fn revision_numbering(h: &dyn Harness) {
    let store = h.open();
    let (a, b) = (unique_fleet("numbering-a"), unique_fleet("numbering-b"));
    let lease_a = lock(&*store, &a);
    let lease_b = lock(&*store, &b);
    let numbers: Vec<u64> = (0..3)
        .map(|i| {
            store
                .create_revision(&lease_a, new_revision(&i.to_string()))
                .unwrap()
                .number
                .0
        })
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(
        store
            .create_revision(&lease_b, new_revision("b"))
            .unwrap()
            .number,
        RevisionNumber(1)
    );
    // A failed revision keeps its number; the next one does not reuse it.
    store
        .set_revision_outcome(
            &lease_a,
            RevisionNumber(3),
            RevisionOutcome::Failed {
                reason: "gate".into(),
            },
        )
        .unwrap();
    assert_eq!(
        store
            .create_revision(&lease_a, new_revision("4"))
            .unwrap()
            .number,
        RevisionNumber(4)
    );
    let listed: Vec<u64> = store
        .list_revisions(&a)
        .unwrap()
        .iter()
        .map(|r| r.number.0)
        .collect();
    assert_eq!(listed, [1, 2, 3, 4]);
    assert!(
        store
            .get_revision(&a, RevisionNumber(99))
            .unwrap()
            .is_none()
    );
}

/// Spec and placement JSON come back byte for byte; every field round-trips.
pub fn revision_content_round_trips(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("content");
    let lease = lock(&*store, &fleet);
    let created = store.create_revision(&lease, new_revision("x")).unwrap();
    assert_eq!(created.outcome, RevisionOutcome::Pending);
    assert_eq!(created.finished_at, None);
    let read = store
        .get_revision(&fleet, created.number)
        .unwrap()
        .expect("stored");
    assert_eq!(read, created);
    assert_eq!(read.spec_json, new_revision("x").spec_json);
    assert_eq!(read.fleet, fleet);
}

/// Outcomes are stored with their details; forbidden transitions are refused.
pub fn revision_outcomes(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("outcomes");
    let lease = lock(&*store, &fleet);
    let r1 = store
        .create_revision(&lease, new_revision("1"))
        .unwrap()
        .number;
    let r2 = store
        .create_revision(&lease, new_revision("2"))
        .unwrap()
        .number;
    let r3 = store
        .create_revision(&lease, new_revision("3"))
        .unwrap()
        .number;

    let applied = store
        .set_revision_outcome(&lease, r1, RevisionOutcome::Applied)
        .unwrap();
    assert_eq!(applied.outcome, RevisionOutcome::Applied);
    assert!(applied.finished_at.is_some());
    // Setting the same outcome again is harmless (a retried step).
    store
        .set_revision_outcome(&lease, r1, RevisionOutcome::Applied)
        .unwrap();

    let failed = RevisionOutcome::Failed {
        reason: "web-1 health gate timed out after 20s".into(),
    };
    store
        .set_revision_outcome(&lease, r2, failed.clone())
        .unwrap();
    let rolled = RevisionOutcome::RolledBack { to: r1 };
    store
        .set_revision_outcome(&lease, r3, rolled.clone())
        .unwrap();

    assert_eq!(
        store.get_revision(&fleet, r2).unwrap().unwrap().outcome,
        failed
    );
    assert_eq!(
        store.get_revision(&fleet, r3).unwrap().unwrap().outcome,
        rolled
    );

    match store.set_revision_outcome(&lease, r1, RevisionOutcome::Pending) {
        Err(StateError::InvalidRevisionTransition {
            from: "applied",
            to: "pending",
            ..
        }) => {}
        other => panic!("applied -> pending must be refused, got {other:?}"),
    }
    match store.set_revision_outcome(&lease, RevisionNumber(42), RevisionOutcome::Applied) {
        Err(StateError::RevisionNotFound {
            revision: RevisionNumber(42),
            ..
        }) => {}
        other => panic!("a missing revision must be reported, got {other:?}"),
    }
    // The refused writes changed nothing.
    assert_eq!(
        store.get_revision(&fleet, r1).unwrap().unwrap().outcome,
        RevisionOutcome::Applied
    );
}

/// The latest applied revision is the newest with outcome `applied`.
pub fn latest_applied_revision(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("latest");
    let lease = lock(&*store, &fleet);
    assert!(store.latest_applied_revision(&fleet).unwrap().is_none());
    let r1 = store
        .create_revision(&lease, new_revision("1"))
        .unwrap()
        .number;
    assert!(
        store.latest_applied_revision(&fleet).unwrap().is_none(),
        "pending is not applied"
    );
    store
        .set_revision_outcome(&lease, r1, RevisionOutcome::Applied)
        .unwrap();
    let r2 = store
        .create_revision(&lease, new_revision("2"))
        .unwrap()
        .number;
    store
        .set_revision_outcome(&lease, r2, RevisionOutcome::RolledBack { to: r1 })
        .unwrap();
    assert_eq!(
        store
            .latest_applied_revision(&fleet)
            .unwrap()
            .unwrap()
            .number,
        r1
    );
    let r3 = store
        .create_revision(&lease, new_revision("3"))
        .unwrap()
        .number;
    store
        .set_revision_outcome(&lease, r3, RevisionOutcome::Applied)
        .unwrap();
    let latest = store.latest_applied_revision(&fleet).unwrap().unwrap();
    assert_eq!(latest.number, r3);
    assert_eq!(latest.plan_hash, "hash-3");
}

/// Instance records are inserted, replaced, listed by unit and deleted.
pub fn instance_upsert_get_list_delete(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("instances");
    let lease = lock(&*store, &fleet);
    let web1 = instance("web-1", 1);
    let web0 = instance("web-0", 1);
    let written = store.upsert_instance(&lease, web1.clone()).unwrap();
    assert_eq!(written.state, web1);
    store.upsert_instance(&lease, web0.clone()).unwrap();

    let units: Vec<String> = store
        .list_instances(&fleet)
        .unwrap()
        .iter()
        .map(|r| r.state.unit.to_string())
        .collect();
    assert_eq!(units, ["web-0@r1", "web-1@r1"]);

    let mut started = web0.clone();
    started.observed = ObservedState::Running;
    started.handle = json!({"pid": 31337, "start_time": 123456});
    started.ports = json!({"port": 41000, "admin": 41001});
    let replaced = store.upsert_instance(&lease, started.clone()).unwrap();
    let read = store
        .get_instance(&fleet, &web0.unit)
        .unwrap()
        .expect("stored");
    assert_eq!(read, replaced);
    assert_eq!(read.state, started);
    assert_eq!(read.fleet, fleet);
    assert_eq!(
        store.list_instances(&fleet).unwrap().len(),
        2,
        "an upsert replaces, never duplicates"
    );

    // A surge/blue-green rollout keeps two revisions of one instance side by side.
    store.upsert_instance(&lease, instance("web-0", 2)).unwrap();
    assert_eq!(store.list_instances(&fleet).unwrap().len(), 3);

    assert!(store.delete_instance(&lease, &web0.unit).unwrap());
    assert!(
        !store.delete_instance(&lease, &web0.unit).unwrap(),
        "deleting twice is harmless"
    );
    assert!(store.get_instance(&fleet, &web0.unit).unwrap().is_none());
    assert_eq!(store.list_instances(&fleet).unwrap().len(), 2);
    assert!(
        store
            .list_instances(&unique_fleet("empty"))
            .unwrap()
            .is_empty()
    );
}

/// A fleet's generation moves with every write to its revisions or instances, in the same
/// transaction, and with nothing else: not intents, not another fleet's writes, not a write
/// that was refused.
pub fn fleet_generation_moves_with_revisions_and_instances(h: &dyn Harness) {
    let store = h.open();
    let (fleet, other) = (unique_fleet("generation"), unique_fleet("generation-other"));
    assert_eq!(
        store.fleet_generation(&fleet).unwrap(),
        None,
        "unknown fleet"
    );
    let lease = lock(&*store, &fleet);
    let generation = || {
        store
            .fleet_generation(&fleet)
            .unwrap()
            .expect("known fleet")
    };
    let g0 = generation();

    let r1 = store.create_revision(&lease, new_revision("one")).unwrap();
    let g1 = generation();
    assert!(g1 > g0, "a revision moves it");
    store.upsert_instance(&lease, instance("web-0", 1)).unwrap();
    let g2 = generation();
    assert!(g2 > g1, "an instance moves it");

    let intent = store
        .record_intent(&lease, start_intent("web-0", 1))
        .unwrap();
    store
        .close_intent(&lease, intent.id, IntentOutcome::Done)
        .unwrap();
    assert_eq!(generation(), g2, "intents are not what readers show");

    let other_lease = lock(&*store, &other);
    store
        .upsert_instance(&other_lease, instance("web-0", 1))
        .unwrap();
    assert_eq!(generation(), g2, "another fleet's write");

    // A refused batch (its last write closes an unknown intent) changes nothing, also not this.
    let refused = store.write_atomically(
        &lease,
        vec![
            Write::UpsertInstance(instance("web-1", 1)),
            Write::CloseIntent {
                id: IntentId(u64::MAX),
                outcome: IntentOutcome::Done,
            },
        ],
    );
    assert!(refused.is_err());
    assert_eq!(generation(), g2, "a refused batch");

    store
        .set_revision_outcome(&lease, r1.number, RevisionOutcome::Applied)
        .unwrap();
    let g3 = generation();
    assert!(g3 > g2, "an outcome moves it");
    assert!(
        store
            .delete_instance(&lease, &UnitId::new("web-0", r1.number))
            .unwrap()
    );
    assert!(generation() > g3, "a deletion moves it");
    // Seen the same through another connection.
    assert_eq!(
        h.open().fleet_generation(&fleet).unwrap(),
        Some(generation())
    );
}

/// Intents are open until closed; recovery sees exactly the open ones, oldest first.
pub fn intents_open_and_close(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("intents");
    let lease = lock(&*store, &fleet);
    let a = store
        .record_intent(&lease, start_intent("web-0", 1))
        .unwrap();
    let b = store
        .record_intent(&lease, start_intent("web-1", 1))
        .unwrap();
    let mut stop = start_intent("web-2", 1);
    stop.op = IntentOp::Stop;
    let c = store.record_intent(&lease, stop).unwrap();
    assert!(a.id < b.id && b.id < c.id, "ids grow");
    assert!(a.is_open());
    assert_eq!(a.lease_token, lease.token());
    assert_eq!(
        store.open_intents(&fleet).unwrap(),
        [a.clone(), b.clone(), c.clone()]
    );

    let done = store
        .close_intent(&lease, a.id, IntentOutcome::Done)
        .unwrap();
    assert_eq!(done.outcome, Some(IntentOutcome::Done));
    assert!(done.closed_at.is_some());
    let failure = IntentOutcome::Failed {
        reason: "spawn failed: no such file".into(),
    };
    store.close_intent(&lease, c.id, failure.clone()).unwrap();

    let open = store.open_intents(&fleet).unwrap();
    assert_eq!(open, std::slice::from_ref(&b));
    assert_eq!(
        open[0].detail,
        json!({"command": ["python3", "-m", "http.server"]})
    );
    assert_eq!(
        store.get_intent(&fleet, c.id).unwrap().unwrap().outcome,
        Some(failure)
    );

    match store.close_intent(&lease, a.id, IntentOutcome::Done) {
        Err(StateError::IntentAlreadyClosed { id, .. }) if id == a.id => {}
        other => panic!("closing twice must be refused, got {other:?}"),
    }
    match store.close_intent(&lease, IntentId(u64::MAX), IntentOutcome::Done) {
        Err(StateError::IntentNotFound { .. }) => {}
        other => panic!("an unknown intent must be reported, got {other:?}"),
    }
}

/// One fleet's intents are invisible to, and cannot be closed through, another fleet.
pub fn intents_are_per_fleet(h: &dyn Harness) {
    let store = h.open();
    let (a, b) = (unique_fleet("intents-a"), unique_fleet("intents-b"));
    let lease_a = lock(&*store, &a);
    let lease_b = lock(&*store, &b);
    let intent = store
        .record_intent(&lease_a, start_intent("web-0", 1))
        .unwrap();
    assert!(store.open_intents(&b).unwrap().is_empty());
    assert!(store.get_intent(&b, intent.id).unwrap().is_none());
    match store.close_intent(&lease_b, intent.id, IntentOutcome::Done) {
        Err(StateError::IntentNotFound { .. }) => {}
        other => panic!("closing another fleet's intent must be refused, got {other:?}"),
    }
    assert_eq!(store.open_intents(&a).unwrap().len(), 1);
}

/// A batch that fails part-way changes nothing.
pub fn batch_is_all_or_nothing(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("atomic");
    let lease = lock(&*store, &fleet);
    let result = store.write_atomically(
        &lease,
        vec![
            Write::CreateRevision(new_revision("1")),
            Write::UpsertInstance(instance("web-0", 1)),
            Write::RecordIntent(start_intent("web-0", 1)),
            Write::CloseIntent {
                id: IntentId(u64::MAX),
                outcome: IntentOutcome::Done,
            },
        ],
    );
    assert!(
        matches!(result, Err(StateError::IntentNotFound { .. })),
        "{result:?}"
    );
    assert!(store.list_revisions(&fleet).unwrap().is_empty());
    assert!(store.list_instances(&fleet).unwrap().is_empty());
    assert!(store.open_intents(&fleet).unwrap().is_empty());
    // The revision number consumed inside the rolled-back batch is not lost either.
    assert_eq!(
        store
            .create_revision(&lease, new_revision("1"))
            .unwrap()
            .number,
        RevisionNumber(1)
    );
}

/// A batch yields one result per write, in order; closing an intent with the record of what it
/// did is one step.
pub fn batch_results_follow_write_order(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("batch");
    let lease = lock(&*store, &fleet);
    let revision = store
        .create_revision(&lease, new_revision("1"))
        .unwrap()
        .number;
    let unit = UnitId::new("web-0", revision);
    let written = store
        .write_atomically(
            &lease,
            vec![
                Write::UpsertInstance(instance("web-0", 1)),
                Write::RecordIntent(start_intent("web-0", 1)),
            ],
        )
        .unwrap();
    let [Written::Instance(_), Written::Intent(intent)] = written.as_slice() else {
        panic!("unexpected results {written:?}");
    };
    let mut started = instance("web-0", 1);
    started.observed = ObservedState::Starting;
    started.handle = json!({"pid": 99});
    let written = store
        .write_atomically(
            &lease,
            vec![
                Write::UpsertInstance(started.clone()),
                Write::CloseIntent {
                    id: intent.id,
                    outcome: IntentOutcome::Done,
                },
                Write::DeleteInstance(UnitId::from_raw("never-existed")),
                Write::SetRevisionOutcome {
                    revision,
                    outcome: RevisionOutcome::Applied,
                },
            ],
        )
        .unwrap();
    assert!(matches!(&written[0], Written::Instance(r) if r.state == started));
    assert!(matches!(&written[1], Written::Intent(i) if i.outcome == Some(IntentOutcome::Done)));
    assert!(matches!(
        &written[2],
        Written::InstanceDeleted { existed: false, .. }
    ));
    assert!(matches!(&written[3], Written::Revision(r) if r.outcome == RevisionOutcome::Applied));
    assert!(store.open_intents(&fleet).unwrap().is_empty());
    assert_eq!(
        store
            .get_instance(&fleet, &unit)
            .unwrap()
            .unwrap()
            .state
            .handle,
        json!({"pid": 99})
    );
}

/// A second holder is refused and told who holds the lock.
pub fn lock_contention_reports_the_holder(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("contention");
    let first = store
        .acquire_lock(
            &fleet,
            &LockRequest::new(owner("alice", "apply"), Duration::from_secs(60)),
        )
        .unwrap();
    assert!(first.took_over.is_none());
    let lease = first.lease;
    assert!(lease.holder.expires_at > lease.holder.acquired_at);

    let other = h.open();
    match other.acquire_lock(
        &fleet,
        &LockRequest::new(owner("bob", "rollback"), Duration::from_secs(60)),
    ) {
        Err(StateError::LockHeld { fleet: f, holder }) => {
            assert_eq!(f, fleet);
            assert_eq!(holder.owner, owner("alice", "apply"));
            assert_eq!(holder.token, lease.token());
            assert_eq!(holder.acquired_at, lease.holder.acquired_at);
            assert_eq!(holder.expires_at, lease.holder.expires_at);
            let message = StateError::LockHeld { fleet: f, holder }.to_string();
            assert!(
                message.contains("alice@test-host") && message.contains("pid 4242"),
                "{message}"
            );
            assert!(message.contains("apply"), "{message}");
        }
        other => panic!("the second holder must be refused, got {other:?}"),
    }
    assert_eq!(other.lock_holder(&fleet).unwrap().unwrap(), lease.holder);
    // The same owner asking again is refused too: a lease is not re-entrant.
    assert!(matches!(
        store.acquire_lock(
            &fleet,
            &LockRequest::new(owner("alice", "apply"), Duration::from_secs(60))
        ),
        Err(StateError::LockHeld { .. })
    ));
}

/// Releasing lets the next holder in with a larger token; releasing twice is harmless.
pub fn lock_release_and_reacquire(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("release");
    let first = lock(&*store, &fleet);
    assert!(store.release_lock(&first).unwrap());
    assert!(!store.release_lock(&first).unwrap());
    assert!(store.lock_holder(&fleet).unwrap().is_none());
    let second = store
        .acquire_lock(
            &fleet,
            &LockRequest::new(owner("bob", "destroy"), Duration::from_secs(60)),
        )
        .unwrap();
    assert!(
        second.took_over.is_none(),
        "a released lock is not taken over"
    );
    assert!(second.lease.token() > first.token());
    // Releasing a lease that is no longer current leaves the current holder alone.
    assert!(!store.release_lock(&first).unwrap());
    assert_eq!(
        store.lock_holder(&fleet).unwrap().unwrap().owner.who,
        "bob@test-host"
    );
}

/// An expired lease may be taken over, and the grant says so.
pub fn lock_expiry_allows_takeover(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("expiry");
    let short = store
        .acquire_lock(
            &fleet,
            &LockRequest::new(owner("alice", "apply"), Duration::from_millis(1000)),
        )
        .unwrap()
        .lease;
    // A lease of a second, so that a loaded machine does not let it expire before this check.
    let bob = LockRequest::new(owner("bob", "apply"), Duration::from_secs(60));
    assert!(matches!(
        store.acquire_lock(&fleet, &bob),
        Err(StateError::LockHeld { .. })
    ));
    thread::sleep(Duration::from_millis(1500));
    let grant = h
        .open()
        .acquire_lock(&fleet, &bob)
        .expect("an expired lease may be taken over");
    let previous = grant.took_over.expect("the grant must say it took over");
    assert_eq!(previous.owner.who, "alice@test-host");
    assert_eq!(previous.token, short.token());
    assert!(grant.lease.token() > short.token());

    // The old holder is fenced off: its writes, renewals and release change nothing.
    match store.create_revision(&short, new_revision("late")) {
        Err(StateError::LockLost {
            token,
            held_by: Some(holder),
            ..
        }) => {
            assert_eq!(token, short.token());
            assert_eq!(holder.owner.who, "bob@test-host");
        }
        other => panic!("a taken-over lease must not write, got {other:?}"),
    }
    assert!(matches!(
        store.renew_lock(&short, Duration::from_secs(60)),
        Err(StateError::LockLost { .. })
    ));
    assert!(!store.release_lock(&short).unwrap());
    assert!(store.list_revisions(&fleet).unwrap().is_empty());
    store
        .create_revision(&grant.lease, new_revision("bob"))
        .unwrap();
}

/// A live lease whose holder is known to be dead can be taken over by naming its token.
pub fn lock_explicit_takeover_by_token(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("takeover");
    let dead = lock(&*store, &fleet);
    let mut request = LockRequest::new(owner("bob", "apply"), Duration::from_secs(60));
    request.take_over_token = Some(dead.token() + 1000);
    assert!(
        matches!(
            store.acquire_lock(&fleet, &request),
            Err(StateError::LockHeld { .. })
        ),
        "a wrong token must not take over"
    );
    request.take_over_token = Some(dead.token());
    let grant = store.acquire_lock(&fleet, &request).unwrap();
    assert_eq!(grant.took_over.map(|h| h.token), Some(dead.token()));
    // The token is now stale: using it again does not take over the new lease.
    let mut again = LockRequest::new(owner("carol", "apply"), Duration::from_secs(60));
    again.take_over_token = Some(dead.token());
    assert!(matches!(
        store.acquire_lock(&fleet, &again),
        Err(StateError::LockHeld { .. })
    ));
}

/// Renewal moves the expiry forward; an expired lease nobody took over can still be renewed.
pub fn lock_renewal_extends_the_lease(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("renew");
    let lease = store
        .acquire_lock(
            &fleet,
            &LockRequest::new(owner("alice", "apply"), Duration::from_millis(200)),
        )
        .unwrap()
        .lease;
    thread::sleep(Duration::from_millis(400));
    let renewed = store
        .renew_lock(&lease, Duration::from_secs(60))
        .expect("nobody took it over");
    assert!(renewed.holder.expires_at > lease.holder.expires_at);
    assert_eq!(renewed.token(), lease.token());
    assert_eq!(
        store.lock_holder(&fleet).unwrap().unwrap().expires_at,
        renewed.holder.expires_at
    );
    let bob = LockRequest::new(owner("bob", "apply"), Duration::from_secs(60));
    assert!(matches!(
        store.acquire_lock(&fleet, &bob),
        Err(StateError::LockHeld { .. })
    ));
    store.create_revision(&renewed, new_revision("1")).unwrap();
}

/// Writes need the current lease: after release, writing is refused.
pub fn stale_lease_cannot_write(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("stale");
    let lease = lock(&*store, &fleet);
    store.release_lock(&lease).unwrap();
    match store.upsert_instance(&lease, instance("web-0", 1)) {
        Err(StateError::LockLost { held_by: None, .. }) => {}
        other => panic!("writing without the lock must be refused, got {other:?}"),
    }
    assert!(store.list_instances(&fleet).unwrap().is_empty());
    let mut forged = lock(&*store, &fleet);
    forged.holder.token += 1;
    assert!(matches!(
        store.create_revision(&forged, new_revision("x")),
        Err(StateError::LockLost { .. })
    ));
}

/// Job runs: one record per instance and revision (a second record replaces the first), listed
/// by instance then revision, the output cut to its tail, and fenced by the lease.
pub fn job_runs_are_recorded_per_revision_and_fenced(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("jobs");
    let lease = lock(&*store, &fleet);
    let run = |revision: u64, outcome: crate::JobOutcome, output: String| crate::JobRun {
        job: "migrate".into(),
        instance: "migrate-0".into(),
        revision: RevisionNumber(revision),
        fingerprint: format!("fp{revision}"),
        outcome,
        exit_code: Some(if outcome == crate::JobOutcome::Succeeded {
            0
        } else {
            3
        }),
        attempts: 2,
        duration_ms: 1500,
        detail: "exited with code 3".into(),
        output,
    };
    store
        .record_job_run(&lease, &run(2, crate::JobOutcome::Failed, "first".into()))
        .unwrap();
    store
        .record_job_run(&lease, &run(1, crate::JobOutcome::Succeeded, "ok\n".into()))
        .unwrap();
    let long = format!("{}é{}", "x".repeat(crate::MAX_JOB_OUTPUT), "end");
    let rec = store
        .record_job_run(&lease, &run(2, crate::JobOutcome::TimedOut, long))
        .unwrap();
    assert!(rec.run.output.len() <= crate::MAX_JOB_OUTPUT);
    assert!(rec.run.output.ends_with("éend"));
    let runs = store.job_runs(&fleet).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        runs[0].run,
        run(1, crate::JobOutcome::Succeeded, "ok\n".into())
    );
    assert_eq!(runs[1].run.outcome, crate::JobOutcome::TimedOut);
    assert_eq!(runs[1].run.output, rec.run.output);
    assert!(store.job_runs("no-such-fleet").unwrap().is_empty());
    store.release_lock(&lease).unwrap();
    assert!(matches!(
        store.record_job_run(&lease, &run(3, crate::JobOutcome::Failed, String::new())),
        Err(StateError::LockLost { .. })
    ));
    assert_eq!(store.job_runs(&fleet).unwrap().len(), 2);
}

/// Secrets: sealed rows round-trip per fleet; a write happens only over the row it expects
/// (none for a first value), and a batch with one stale expectation writes nothing.
pub fn secrets_are_written_only_over_what_was_read(h: &dyn Harness) {
    use crate::secrets::SecretWrite;
    let store = h.open();
    let fleet = unique_fleet("secrets");
    let write = |name: &str, version: u64, sealed: &str, expected: Option<&str>| SecretWrite {
        name: name.into(),
        version,
        source: "generate".into(),
        sealed: sealed.into(),
        expected_sealed: expected.map(str::to_string),
        earlier: false,
    };
    assert!(store.secrets(&fleet).unwrap().is_empty());
    store
        .write_secrets(
            &fleet,
            &[write("db", 1, "s1", None), write("api", 1, "a1", None)],
        )
        .unwrap();
    let rows = store.secrets(&fleet).unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.name.as_str(), r.version, r.sealed.as_str()))
            .collect::<Vec<_>>(),
        [("api", 1, "a1"), ("db", 1, "s1")]
    );
    // A second "first value" loses: the row exists.
    assert!(matches!(
        store.write_secrets(&fleet, &[write("db", 1, "other", None)]),
        Err(StateError::SecretChanged { ref name, .. }) if name == "db"
    ));
    // All or nothing: `api` is not written when `db`'s expectation is stale.
    assert!(
        store
            .write_secrets(
                &fleet,
                &[
                    write("api", 2, "a2", Some("a1")),
                    write("db", 2, "s2", Some("old"))
                ]
            )
            .is_err()
    );
    assert_eq!(store.secrets(&fleet).unwrap()[0].sealed, "a1");
    store
        .write_secrets(&fleet, &[write("db", 2, "s2", Some("s1"))])
        .unwrap();
    let db = store
        .secrets(&fleet)
        .unwrap()
        .into_iter()
        .find(|r| r.name == "db")
        .unwrap();
    assert_eq!((db.version, db.sealed.as_str()), (2, "s2"));
    assert!(store.secrets(&unique_fleet("other")).unwrap().is_empty());

    // The replaced version is kept for rollbacks; a failed batch kept nothing.
    let history = |store: &dyn crate::StateStore| -> Vec<(String, u64, String)> {
        store
            .secret_history(&fleet)
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.version, r.sealed))
            .collect()
    };
    assert_eq!(history(&*store), [("db".to_string(), 1, "s1".to_string())]);
    // A re-encryption (same version) keeps no copy of the old sealing, and an earlier version
    // is re-sealed only over what it holds.
    store
        .write_secrets(&fleet, &[write("db", 2, "s2-new-key", Some("s2"))])
        .unwrap();
    let reseal = SecretWrite {
        earlier: true,
        ..write("db", 1, "s1-new-key", Some("s1"))
    };
    assert!(matches!(
        store.write_secrets(
            &fleet,
            &[SecretWrite {
                expected_sealed: Some("stale".into()),
                ..reseal.clone()
            }]
        ),
        Err(StateError::SecretChanged { .. })
    ));
    store.write_secrets(&fleet, &[reseal]).unwrap();
    assert_eq!(
        history(&*store),
        [("db".to_string(), 1, "s1-new-key".to_string())]
    );
    // Only the newest KEPT_VERSIONS earlier versions stay.
    let mut expected = "s2-new-key".to_string();
    let last = crate::secrets::KEPT_VERSIONS + 5;
    for v in 3..=last {
        let sealed = format!("s{v}");
        store
            .write_secrets(&fleet, &[write("db", v, &sealed, Some(&expected))])
            .unwrap();
        expected = sealed;
    }
    let kept: Vec<u64> = history(&*store).into_iter().map(|(_, v, _)| v).collect();
    assert_eq!(
        kept,
        (last - crate::secrets::KEPT_VERSIONS..last).collect::<Vec<_>>()
    );
}

/// A zero lease duration is refused.
pub fn lock_rejects_zero_ttl(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("ttl");
    assert!(matches!(
        store.acquire_lock(
            &fleet,
            &LockRequest::new(owner("alice", "apply"), Duration::ZERO)
        ),
        Err(StateError::InvalidLeaseDuration { .. })
    ));
    assert!(store.lock_holder(&fleet).unwrap().is_none());
}

/// Two threads (two connections) racing for one lock: exactly one wins each round.
pub fn concurrent_lock_acquisition(h: &dyn Harness) {
    let fleet = Arc::new(unique_fleet("race"));
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<_> = thread::scope(|s| {
            let handles: Vec<_> = ["alice", "bob"]
                .into_iter()
                .map(|name| {
                    let store = h.open();
                    let (barrier, fleet) = (Arc::clone(&barrier), Arc::clone(&fleet));
                    s.spawn(move || {
                        barrier.wait();
                        let request =
                            LockRequest::new(owner(name, "apply"), Duration::from_secs(60));
                        store
                            .acquire_lock(&fleet, &request)
                            .map(|grant| (store, grant.lease))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("thread panicked"))
                .collect()
        });
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let outcomes: Vec<_> = results
            .iter()
            .map(|r| r.as_ref().map(|(_, lease)| lease))
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one must win: {outcomes:?}"
        );
        for result in &results {
            if let Err(e) = result {
                assert!(
                    matches!(e, StateError::LockHeld { .. }),
                    "round {round}: {e}"
                );
            }
        }
        let (store, lease) = winners[0];
        assert!(store.release_lock(lease).unwrap());
    }
}

/// Two threads (two connections) writing one fleet under one lease: every revision gets a
/// distinct number, and nothing is lost.
pub fn concurrent_writers_get_distinct_numbers(h: &dyn Harness) {
    const PER_THREAD: usize = 15;
    let setup = h.open();
    let fleet = unique_fleet("writers");
    let lease = lock(&*setup, &fleet);
    thread::scope(|s| {
        for t in 0..2 {
            let store = h.open();
            let lease = lease.clone();
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    store
                        .create_revision(&lease, new_revision(&format!("{t}-{i}")))
                        .expect("create a revision");
                    store
                        .upsert_instance(&lease, instance(&format!("w{t}-{i}"), 1))
                        .expect("upsert");
                }
            });
        }
    });
    let mut numbers: Vec<u64> = setup
        .list_revisions(&fleet)
        .unwrap()
        .iter()
        .map(|r| r.number.0)
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=2 * PER_THREAD as u64).collect::<Vec<_>>());
    assert_eq!(setup.list_instances(&fleet).unwrap().len(), 2 * PER_THREAD);
}

/// Everything survives closing and reopening the store.
pub fn persistence_across_reopen(h: &dyn Harness) {
    let fleet = unique_fleet("reopen");
    let (lease, revision, intent, record) = {
        let store = h.open();
        let lease = lock(&*store, &fleet);
        let revision = store.create_revision(&lease, new_revision("1")).unwrap();
        let record = store.upsert_instance(&lease, instance("web-0", 1)).unwrap();
        let intent = store
            .record_intent(&lease, start_intent("web-0", 1))
            .unwrap();
        (lease, revision, intent, record)
    };
    let store = h.open();
    assert_eq!(
        store.get_revision(&fleet, revision.number).unwrap(),
        Some(revision.clone())
    );
    assert_eq!(store.list_instances(&fleet).unwrap(), [record]);
    assert_eq!(
        store.open_intents(&fleet).unwrap(),
        std::slice::from_ref(&intent)
    );
    assert_eq!(
        store.lock_holder(&fleet).unwrap(),
        Some(lease.holder.clone())
    );
    // The lease is still good after the reopen (a restarted process does not get a new one,
    // but the stored one is the same).
    store
        .close_intent(&lease, intent.id, IntentOutcome::Done)
        .unwrap();
    assert_eq!(
        store
            .create_revision(&lease, new_revision("2"))
            .unwrap()
            .number,
        RevisionNumber(revision.number.0 + 1)
    );
}

/// Fleets appear in `list_fleets` once they have been locked or written.
pub fn fleets_are_listed(h: &dyn Harness) {
    let store = h.open();
    let (a, b) = (unique_fleet("list-a"), unique_fleet("list-b"));
    lock(&*store, &a);
    lock(&*store, &b);
    let fleets = store.list_fleets().unwrap();
    assert!(fleets.contains(&a) && fleets.contains(&b), "{fleets:?}");
    let mut sorted = fleets.clone();
    sorted.sort();
    assert_eq!(fleets, sorted);
}

/// The audit anchor of a fleet only moves forward, and anchors are per fleet.
pub fn audit_anchor_only_moves_forward(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("anchor");
    let other = unique_fleet("anchor-other");
    assert_eq!(store.audit_anchor(&fleet).unwrap(), None);
    let anchored = store.anchor_audit_head(&fleet, 5, "hash-5").unwrap();
    assert_eq!((anchored.seq, anchored.head_hash.as_str()), (5, "hash-5"));
    let kept = store.anchor_audit_head(&fleet, 3, "hash-3").unwrap();
    assert_eq!(
        (kept.seq, kept.head_hash.as_str()),
        (5, "hash-5"),
        "must not move back"
    );
    store.anchor_audit_head(&fleet, 6, "hash-6").unwrap();
    store.anchor_audit_head(&other, 1, "other-1").unwrap();
    let read = h.open().audit_anchor(&fleet).unwrap().unwrap();
    assert_eq!((read.seq, read.head_hash.as_str()), (6, "hash-6"));
    assert_eq!(h.open().audit_anchor(&other).unwrap().unwrap().seq, 1);
}

fn audit_row(seq: u64, prev: &str) -> AuditRow {
    AuditRow {
        seq,
        prev_hash: prev.to_owned(),
        hash: format!("h{seq}"),
        signer: Some("k1".to_owned()),
        record_json: format!(r#"{{"seq":{seq},"note":"ünïcödé"}}"#),
    }
}

/// Records are appended only right after the head, so two appenders can never fork a chain;
/// chains are per fleet.
pub fn audit_chain_appends_only_at_its_head(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("chain");
    assert_eq!(store.audit_head(&fleet).unwrap(), None);
    // The first record must be seq 1.
    assert!(matches!(
        store.append_audit_record(&fleet, &audit_row(2, "g"), None),
        Err(StateError::AuditChainMoved {
            tried: 2,
            head: 0,
            ..
        })
    ));
    store
        .append_audit_record(&fleet, &audit_row(1, "g"), None)
        .unwrap();
    // A second appender that built on the same (old) head is refused.
    assert!(matches!(
        store.append_audit_record(&fleet, &audit_row(1, "g"), None),
        Err(StateError::AuditChainMoved {
            tried: 1,
            head: 1,
            ..
        })
    ));
    // So is a record that names another predecessor.
    assert!(matches!(
        store.append_audit_record(&fleet, &audit_row(2, "not-h1"), None),
        Err(StateError::AuditChainMoved { .. })
    ));
    store
        .append_audit_record(&fleet, &audit_row(2, "h1"), None)
        .unwrap();
    let read = h.open().audit_records(&fleet).unwrap();
    assert_eq!(read, vec![audit_row(1, "g"), audit_row(2, "h1")]);
    assert_eq!(store.audit_head(&fleet).unwrap(), Some(audit_row(2, "h1")));
    assert!(store.audit_fleets().unwrap().contains(&fleet));
    assert!(
        store
            .audit_records(&unique_fleet("none"))
            .unwrap()
            .is_empty()
    );
}

/// Allowing and revoking keys happens in the same transaction as the record that says so.
pub fn audit_keys_follow_their_records(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("keys");
    let allow = AuditKeyChange::Allow {
        public_key: "k1".into(),
        name: "alice".into(),
    };
    store
        .append_audit_record(&fleet, &audit_row(1, "g"), Some(&allow))
        .unwrap();
    // A refused append changes no key.
    let bob = AuditKeyChange::Allow {
        public_key: "k2".into(),
        name: "bob".into(),
    };
    assert!(
        store
            .append_audit_record(&fleet, &audit_row(5, "x"), Some(&bob))
            .is_err()
    );
    assert_eq!(store.audit_keys(&fleet).unwrap().len(), 1);
    store
        .append_audit_record(&fleet, &audit_row(2, "h1"), Some(&bob))
        .unwrap();
    store
        .append_audit_record(
            &fleet,
            &audit_row(3, "h2"),
            Some(&AuditKeyChange::Revoke {
                public_key: "k1".into(),
            }),
        )
        .unwrap();
    let keys = h.open().audit_keys(&fleet).unwrap();
    assert_eq!(
        keys,
        vec![
            AuditKey {
                public_key: "k1".into(),
                name: "alice".into(),
                allowed_seq: 1,
                revoked_seq: Some(3),
            },
            AuditKey {
                public_key: "k2".into(),
                name: "bob".into(),
                allowed_seq: 2,
                revoked_seq: None,
            },
        ]
    );
}

/// The endpoint that runs a unit is kept with its record.
pub fn instance_endpoint_round_trips(h: &dyn Harness) {
    let store = h.open();
    let fleet = unique_fleet("endpoint");
    let lease = lock(&*store, &fleet);
    let mut state = instance("web-0", 1);
    state.endpoint = "local://host-b/srv/phoenix".into();
    store.upsert_instance(&lease, state.clone()).unwrap();
    let read = h.open().get_instance(&fleet, &state.unit).unwrap().unwrap();
    assert_eq!(read.state.endpoint, "local://host-b/srv/phoenix");
}

fn new_token(name: &str, role: &str, valid_for: Option<Duration>) -> NewApiToken {
    NewApiToken {
        name: name.to_owned(),
        role: role.to_owned(),
        secret_sha256: format!("sha256-of-{name}"),
        valid_for,
    }
}

fn tokens_named(store: &dyn StateStore, names: &[&str]) -> Vec<ApiToken> {
    store
        .list_api_tokens()
        .unwrap()
        .into_iter()
        .filter(|t| names.contains(&t.name.as_str()))
        .collect()
}

/// API tokens are found by the hash of their secret, listed by name, and revoked once; a live
/// name cannot be taken twice.
pub fn api_tokens_are_created_found_listed_and_revoked(h: &dyn Harness) {
    let store = h.open();
    let (a, b) = (unique_fleet("tok-b"), unique_fleet("tok-a"));
    let created = store
        .create_api_token(&new_token(&a, "viewer", None))
        .unwrap();
    assert_eq!(
        (created.role.as_str(), created.expires_at),
        ("viewer", None)
    );
    assert!(created.is_live(jiff::Timestamp::now()));
    store
        .create_api_token(&new_token(&b, "deployer", None))
        .unwrap();
    assert!(matches!(
        store.create_api_token(&new_token(&a, "deployer", None)),
        Err(StateError::ApiTokenExists { ref name }) if *name == a
    ));
    let listed = tokens_named(&*h.open(), &[&a, &b]);
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        [b.as_str(), a.as_str()],
        "sorted by name"
    );
    let found = h
        .open()
        .api_token_by_secret(&format!("sha256-of-{a}"))
        .unwrap()
        .unwrap();
    assert_eq!(found, created);
    assert_eq!(store.api_token_by_secret("no-such-hash").unwrap(), None);
    assert!(store.revoke_api_token(&a).unwrap());
    assert!(!store.revoke_api_token(&a).unwrap(), "revoking twice");
    assert!(!store.revoke_api_token(&unique_fleet("none")).unwrap());
    let revoked = h
        .open()
        .api_token_by_secret(&format!("sha256-of-{a}"))
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(!revoked.is_live(jiff::Timestamp::now()));
    // The other token is untouched.
    assert!(
        store
            .api_token_by_secret(&format!("sha256-of-{b}"))
            .unwrap()
            .unwrap()
            .is_live(jiff::Timestamp::now())
    );
}

/// A token expires after the time it was created for; a revoked or expired token's name can be
/// given to a new token, which replaces it.
pub fn api_token_expiry_and_name_reuse(h: &dyn Harness) {
    let store = h.open();
    let name = unique_fleet("tok-exp");
    let short = store
        .create_api_token(&new_token(&name, "viewer", Some(Duration::from_millis(1))))
        .unwrap();
    let expires = short.expires_at.expect("an expiry");
    assert!(expires > short.created_at);
    assert!(!short.is_live(expires));
    thread::sleep(Duration::from_millis(20));
    let mut renewed = new_token(&name, "deployer", Some(Duration::from_secs(3600)));
    renewed.secret_sha256 = format!("second-{name}");
    let second = store.create_api_token(&renewed).unwrap();
    assert_eq!(second.role, "deployer");
    assert_eq!(tokens_named(&*store, &[&name]), vec![second.clone()]);
    assert_eq!(
        store
            .api_token_by_secret(&format!("sha256-of-{name}"))
            .unwrap(),
        None,
        "the replaced token is gone"
    );
    assert!(store.revoke_api_token(&name).unwrap());
    let third = store
        .create_api_token(&new_token(&name, "viewer", None))
        .unwrap();
    assert!(third.is_live(jiff::Timestamp::now()));
}
