//! The store's semantics, written once over [`Tx`] and shared by both backends.

use std::time::Duration;

use jiff::Timestamp;

use crate::db::{Backend, Fail, Row, Tx, Val};
use crate::error::StateError;
use crate::schema::{MIGRATIONS, latest_version};
use crate::types::{
    ApiToken, AuditAnchor, AuditKey, AuditKeyChange, AuditRow, DesiredState, InstanceRecord,
    InstanceState, Intent, IntentId, IntentOp, IntentOutcome, JobOutcome, JobRun, JobRunRecord,
    Lease, LockGrant, LockHolder, LockOwner, LockRequest, NewApiToken, NewIntent, NewRevision,
    ObservedState, Revision, RevisionNumber, RevisionOutcome, UnitId, Write, Written,
};

// ---------------------------------------------------------------------------------------------
// Conversions

/// Stored integers are BIGINT; values past `i64::MAX` saturate, which no stored row can match.
fn int(v: u64) -> Val {
    Val::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

fn unsigned(v: i64, table: &'static str, key: &str) -> Result<u64, Fail> {
    u64::try_from(v).map_err(|_| corrupt(table, key, format!("negative number {v}")))
}

fn time(ms: i64, table: &'static str, key: &str) -> Result<Timestamp, Fail> {
    Timestamp::from_millisecond(ms).map_err(|e| corrupt(table, key, format!("bad time {ms}: {e}")))
}

fn opt_time(ms: Option<i64>, table: &'static str, key: &str) -> Result<Option<Timestamp>, Fail> {
    ms.map(|ms| time(ms, table, key)).transpose()
}

fn json(text: &str, table: &'static str, key: &str) -> Result<serde_json::Value, Fail> {
    serde_json::from_str(text).map_err(|e| corrupt(table, key, format!("bad JSON: {e}")))
}

fn json_text(value: &serde_json::Value) -> String {
    // Serializing a `Value` cannot fail: its map keys are strings.
    value.to_string()
}

fn corrupt(table: &'static str, key: &str, reason: String) -> Fail {
    Fail::State(StateError::CorruptRecord {
        table,
        key: key.to_owned(),
        reason,
    })
}

fn ttl_ms(ttl: Duration) -> Result<i64, Fail> {
    match i64::try_from(ttl.as_millis()) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(Fail::State(StateError::InvalidLeaseDuration { ttl })),
    }
}

// ---------------------------------------------------------------------------------------------
// Schema

pub(crate) fn migrate<B: Backend>(backend: &B) -> Result<(), StateError> {
    let mut attempting = 0;
    backend
        .write(|tx| {
            tx.lock_for_migration()?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (
                    version       BIGINT PRIMARY KEY,
                    applied_at_ms BIGINT NOT NULL
                )",
            )?;
            let rows = tx.query("SELECT max(version) FROM schema_version", &[])?;
            let current = rows
                .first()
                .map(|r| r.opt_int(0))
                .transpose()?
                .flatten()
                .unwrap_or(0);
            let current = u32::try_from(current)
                .map_err(|_| corrupt("schema_version", "max", format!("{current}")))?;
            if current > latest_version() {
                return Err(StateError::SchemaTooNew {
                    found: current,
                    supported: latest_version(),
                }
                .into());
            }
            for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
                attempting = migration.version;
                tx.execute_batch(&migration.ddl_for(tx.dialect()))?;
                let now = tx.now_ms()?;
                tx.execute(
                    "INSERT INTO schema_version (version, applied_at_ms) VALUES ($1, $2)",
                    &[Val::Int(i64::from(migration.version)), Val::Int(now)],
                )?;
            }
            Ok(())
        })
        .map_err(|f| {
            f.at(|source| StateError::Migrate {
                to_version: attempting,
                source,
            })
        })
}

// ---------------------------------------------------------------------------------------------
// Fleets and the deploy lock

/// Makes sure the fleet's row exists and takes its row lock, serialising writers of one fleet.
fn lock_fleet(tx: &mut dyn Tx, fleet: &str) -> Result<(), Fail> {
    tx.execute(
        "INSERT INTO fleets (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        &[fleet.into()],
    )?;
    tx.lock_fleet_row(fleet)?;
    Ok(())
}

const HOLDER_COLUMNS: &str = "token, who, pid, operation, acquired_at_ms, expires_at_ms";

fn holder_from_row(row: &Row, fleet: &str) -> Result<LockHolder, Fail> {
    let table = "deploy_locks";
    let pid = row.int(2)?;
    Ok(LockHolder {
        token: unsigned(row.int(0)?, table, fleet)?,
        owner: LockOwner {
            who: row.text(1)?,
            pid: u32::try_from(pid).map_err(|_| corrupt(table, fleet, format!("bad pid {pid}")))?,
            operation: row.text(3)?,
        },
        acquired_at: time(row.int(4)?, table, fleet)?,
        expires_at: time(row.int(5)?, table, fleet)?,
    })
}

fn read_holder(tx: &mut dyn Tx, fleet: &str) -> Result<Option<LockHolder>, Fail> {
    let rows = tx.query(
        &format!("SELECT {HOLDER_COLUMNS} FROM deploy_locks WHERE fleet = $1"),
        &[fleet.into()],
    )?;
    rows.first()
        .map(|row| holder_from_row(row, fleet))
        .transpose()
}

pub(crate) fn acquire_lock<B: Backend>(
    backend: &B,
    fleet: &str,
    request: &LockRequest,
) -> Result<LockGrant, StateError> {
    backend
        .write(|tx| {
            let ttl = ttl_ms(request.ttl)?;
            lock_fleet(tx, fleet)?;
            let now = tx.now_ms()?;
            let took_over = match read_holder(tx, fleet)? {
                None => None,
                Some(current)
                    if request.take_over_token == Some(current.token)
                        || current.expires_at.as_millisecond() <= now =>
                {
                    Some(current)
                }
                Some(current) => {
                    return Err(StateError::LockHeld { fleet: fleet.to_owned(), holder: Box::new(current) }.into());
                }
            };
            let rows = tx.query(
                "UPDATE fleets SET last_lock_token = last_lock_token + 1 WHERE name = $1 RETURNING last_lock_token",
                &[fleet.into()],
            )?;
            let token = rows.first().ok_or_else(|| corrupt("fleets", fleet, "row vanished".into()))?.int(0)?;
            let owner = &request.owner;
            tx.execute(
                "INSERT INTO deploy_locks (fleet, token, who, pid, operation, acquired_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (fleet) DO UPDATE SET token = excluded.token, who = excluded.who,
                     pid = excluded.pid, operation = excluded.operation,
                     acquired_at_ms = excluded.acquired_at_ms, expires_at_ms = excluded.expires_at_ms",
                &[
                    fleet.into(),
                    Val::Int(token),
                    owner.who.as_str().into(),
                    Val::Int(i64::from(owner.pid)),
                    owner.operation.as_str().into(),
                    Val::Int(now),
                    Val::Int(now.saturating_add(ttl)),
                ],
            )?;
            let lease = Lease {
                fleet: fleet.to_owned(),
                holder: LockHolder {
                    owner: owner.clone(),
                    token: unsigned(token, "fleets", fleet)?,
                    acquired_at: time(now, "deploy_locks", fleet)?,
                    expires_at: time(now.saturating_add(ttl), "deploy_locks", fleet)?,
                },
            };
            Ok(LockGrant { lease, took_over })
        })
        .map_err(|f| f.at(|source| StateError::AcquireLock { fleet: fleet.to_owned(), source }))
}

/// Fails with `LockLost` unless `lease` is the fleet's current lease.
fn check_fence(tx: &mut dyn Tx, lease: &Lease) -> Result<(), Fail> {
    match read_holder(tx, &lease.fleet)? {
        Some(current) if current.token == lease.token() => Ok(()),
        current => Err(StateError::LockLost {
            fleet: lease.fleet.clone(),
            token: lease.token(),
            held_by: current.map(Box::new),
        }
        .into()),
    }
}

pub(crate) fn renew_lock<B: Backend>(
    backend: &B,
    lease: &Lease,
    ttl: Duration,
) -> Result<Lease, StateError> {
    backend
        .write(|tx| {
            let ttl = ttl_ms(ttl)?;
            lock_fleet(tx, &lease.fleet)?;
            check_fence(tx, lease)?;
            let now = tx.now_ms()?;
            let expires = now.saturating_add(ttl);
            tx.execute(
                "UPDATE deploy_locks SET expires_at_ms = $1 WHERE fleet = $2 AND token = $3",
                &[
                    Val::Int(expires),
                    lease.fleet.as_str().into(),
                    int(lease.token()),
                ],
            )?;
            let mut renewed = lease.clone();
            renewed.holder.expires_at = time(expires, "deploy_locks", &lease.fleet)?;
            Ok(renewed)
        })
        .map_err(|f| {
            f.at(|source| StateError::RenewLock {
                fleet: lease.fleet.clone(),
                source,
            })
        })
}

pub(crate) fn release_lock<B: Backend>(backend: &B, lease: &Lease) -> Result<bool, StateError> {
    backend
        .write(|tx| {
            let deleted = tx.execute(
                "DELETE FROM deploy_locks WHERE fleet = $1 AND token = $2",
                &[lease.fleet.as_str().into(), int(lease.token())],
            )?;
            Ok(deleted > 0)
        })
        .map_err(|f| {
            f.at(|source| StateError::ReleaseLock {
                fleet: lease.fleet.clone(),
                source,
            })
        })
}

pub(crate) fn lock_holder<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Option<LockHolder>, StateError> {
    backend.read(|tx| read_holder(tx, fleet)).map_err(|f| {
        f.at(|source| StateError::ReadLock {
            fleet: fleet.to_owned(),
            source,
        })
    })
}

pub(crate) fn list_fleets<B: Backend>(backend: &B) -> Result<Vec<String>, StateError> {
    backend
        .read(|tx| {
            let rows = tx.query("SELECT name FROM fleets ORDER BY name", &[])?;
            rows.iter().map(|r| r.text(0).map_err(Fail::from)).collect()
        })
        .map_err(|f| f.at(|source| StateError::ReadFleets { source }))
}

pub(crate) fn fleet_generation<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Option<u64>, StateError> {
    backend
        .read(|tx| {
            let rows = tx.query(
                "SELECT generation FROM fleets WHERE name = $1",
                &[fleet.into()],
            )?;
            rows.first()
                .map(|r| unsigned(r.int(0)?, "fleets", fleet))
                .transpose()
        })
        .map_err(|f| f.at(|source| StateError::ReadFleets { source }))
}

// ---------------------------------------------------------------------------------------------
// Writes

pub(crate) fn write_atomically<B: Backend>(
    backend: &B,
    lease: &Lease,
    writes: Vec<Write>,
) -> Result<Vec<Written>, StateError> {
    let fleet = lease.fleet.as_str();
    backend
        .write(|tx| {
            lock_fleet(tx, fleet)?;
            check_fence(tx, lease)?;
            let now = tx.now_ms()?;
            // Intents are the engine's own bookkeeping; revisions and instances are what
            // readers show, so only they move the fleet's generation.
            if writes
                .iter()
                .any(|w| !matches!(w, Write::RecordIntent(_) | Write::CloseIntent { .. }))
            {
                tx.execute(
                    "UPDATE fleets SET generation = generation + 1 WHERE name = $1",
                    &[fleet.into()],
                )?;
            }
            writes
                .into_iter()
                .map(|write| apply_write(tx, lease, now, write))
                .collect()
        })
        .map_err(|f| {
            f.at(|source| StateError::WriteBatch {
                fleet: fleet.to_owned(),
                source,
            })
        })
}

fn apply_write(tx: &mut dyn Tx, lease: &Lease, now: i64, write: Write) -> Result<Written, Fail> {
    let fleet = lease.fleet.as_str();
    match write {
        Write::CreateRevision(new) => create_revision(tx, fleet, now, new).map(Written::Revision),
        Write::SetRevisionOutcome { revision, outcome } => {
            set_revision_outcome(tx, fleet, now, revision, outcome).map(Written::Revision)
        }
        Write::UpsertInstance(state) => {
            upsert_instance(tx, fleet, now, state).map(Written::Instance)
        }
        Write::DeleteInstance(unit) => {
            let deleted = tx.execute(
                "DELETE FROM instances WHERE fleet = $1 AND unit = $2",
                &[fleet.into(), unit.as_str().into()],
            )?;
            Ok(Written::InstanceDeleted {
                unit,
                existed: deleted > 0,
            })
        }
        Write::RecordIntent(new) => record_intent(tx, lease, now, new).map(Written::Intent),
        Write::CloseIntent { id, outcome } => {
            close_intent(tx, fleet, now, id, outcome).map(Written::Intent)
        }
    }
}

fn create_revision(
    tx: &mut dyn Tx,
    fleet: &str,
    now: i64,
    new: NewRevision,
) -> Result<Revision, Fail> {
    let rows = tx.query(
        "UPDATE fleets SET last_revision = last_revision + 1 WHERE name = $1 RETURNING last_revision",
        &[fleet.into()],
    )?;
    let number = rows
        .first()
        .ok_or_else(|| corrupt("fleets", fleet, "row vanished".into()))?
        .int(0)?;
    tx.execute(
        "INSERT INTO revisions (fleet, number, spec_json, placement_json, plan_hash, actor, created_at_ms, outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            fleet.into(),
            Val::Int(number),
            new.spec_json.as_str().into(),
            new.placement_json.as_str().into(),
            new.plan_hash.as_str().into(),
            new.actor.as_str().into(),
            Val::Int(now),
            RevisionOutcome::Pending.name().into(),
        ],
    )?;
    Ok(Revision {
        fleet: fleet.to_owned(),
        number: RevisionNumber(unsigned(number, "fleets", fleet)?),
        spec_json: new.spec_json,
        placement_json: new.placement_json,
        plan_hash: new.plan_hash,
        actor: new.actor,
        created_at: time(now, "revisions", fleet)?,
        outcome: RevisionOutcome::Pending,
        finished_at: None,
    })
}

fn set_revision_outcome(
    tx: &mut dyn Tx,
    fleet: &str,
    now: i64,
    number: RevisionNumber,
    outcome: RevisionOutcome,
) -> Result<Revision, Fail> {
    let Some(mut revision) = read_revisions(tx, fleet, "AND number = $2", &[int(number.0)])?.pop()
    else {
        return Err(StateError::RevisionNotFound {
            fleet: fleet.to_owned(),
            revision: number,
        }
        .into());
    };
    if !revision.outcome.may_become(&outcome) {
        return Err(StateError::InvalidRevisionTransition {
            fleet: fleet.to_owned(),
            revision: number,
            from: revision.outcome.name(),
            to: outcome.name(),
        }
        .into());
    }
    let (reason, rolled_back_to) = match &outcome {
        RevisionOutcome::Failed { reason } => (Some(reason.as_str()), None),
        RevisionOutcome::RolledBack { to } => (None, Some(to.0)),
        RevisionOutcome::Pending | RevisionOutcome::Applied => (None, None),
    };
    let finished = (outcome != RevisionOutcome::Pending).then_some(now);
    tx.execute(
        "UPDATE revisions SET outcome = $1, outcome_reason = $2, rolled_back_to = $3, finished_at_ms = $4
         WHERE fleet = $5 AND number = $6",
        &[
            outcome.name().into(),
            reason.into(),
            rolled_back_to.map_or(Val::Null, int),
            finished.into(),
            fleet.into(),
            int(number.0),
        ],
    )?;
    revision.finished_at = opt_time(finished, "revisions", fleet)?;
    revision.outcome = outcome;
    Ok(revision)
}

fn upsert_instance(
    tx: &mut dyn Tx,
    fleet: &str,
    now: i64,
    state: InstanceState,
) -> Result<InstanceRecord, Fail> {
    tx.execute(
        "INSERT INTO instances (fleet, unit, service, instance, revision, site, host, desired, observed,
                                handle_json, ports_json, updated_at_ms, endpoint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (fleet, unit) DO UPDATE SET service = excluded.service, instance = excluded.instance,
             revision = excluded.revision, site = excluded.site, host = excluded.host,
             endpoint = excluded.endpoint,
             desired = excluded.desired, observed = excluded.observed, handle_json = excluded.handle_json,
             ports_json = excluded.ports_json, updated_at_ms = excluded.updated_at_ms",
        &[
            fleet.into(),
            state.unit.as_str().into(),
            state.service.as_str().into(),
            state.instance.as_str().into(),
            int(state.revision.0),
            state.site.as_str().into(),
            state.host.as_str().into(),
            state.desired.as_str().into(),
            state.observed.as_str().into(),
            json_text(&state.handle).into(),
            json_text(&state.ports).into(),
            Val::Int(now),
            state.endpoint.as_str().into(),
        ],
    )?;
    Ok(InstanceRecord {
        fleet: fleet.to_owned(),
        updated_at: time(now, "instances", fleet)?,
        state,
    })
}

fn record_intent(tx: &mut dyn Tx, lease: &Lease, now: i64, new: NewIntent) -> Result<Intent, Fail> {
    let fleet = lease.fleet.as_str();
    let rows = tx.query(
        "INSERT INTO intents (fleet, op, unit, revision, detail_json, lease_token, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[
            fleet.into(),
            new.op.as_str().into(),
            new.unit.as_str().into(),
            int(new.revision.0),
            json_text(&new.detail).into(),
            int(lease.token()),
            Val::Int(now),
        ],
    )?;
    let id = rows
        .first()
        .ok_or_else(|| corrupt("intents", fleet, "insert returned no id".into()))?
        .int(0)?;
    Ok(Intent {
        id: IntentId(unsigned(id, "intents", fleet)?),
        fleet: fleet.to_owned(),
        op: new.op,
        unit: new.unit,
        revision: new.revision,
        detail: new.detail,
        lease_token: lease.token(),
        created_at: time(now, "intents", fleet)?,
        outcome: None,
        closed_at: None,
    })
}

fn close_intent(
    tx: &mut dyn Tx,
    fleet: &str,
    now: i64,
    id: IntentId,
    outcome: IntentOutcome,
) -> Result<Intent, Fail> {
    let Some(mut intent) = read_intents(tx, fleet, "AND id = $2", &[int(id.0)])?.pop() else {
        return Err(StateError::IntentNotFound {
            fleet: fleet.to_owned(),
            id,
        }
        .into());
    };
    if !intent.is_open() {
        return Err(StateError::IntentAlreadyClosed {
            fleet: fleet.to_owned(),
            id,
        }
        .into());
    }
    let (name, reason) = match &outcome {
        IntentOutcome::Done => ("done", None),
        IntentOutcome::Failed { reason } => ("failed", Some(reason.as_str())),
    };
    tx.execute(
        "UPDATE intents SET outcome = $1, failure_reason = $2, closed_at_ms = $3 WHERE id = $4",
        &[name.into(), reason.into(), Val::Int(now), int(id.0)],
    )?;
    intent.outcome = Some(outcome);
    intent.closed_at = Some(time(now, "intents", fleet)?);
    Ok(intent)
}

// ---------------------------------------------------------------------------------------------
// Reads

const REVISION_COLUMNS: &str = "number, spec_json, placement_json, plan_hash, actor, created_at_ms, outcome, \
                                outcome_reason, rolled_back_to, finished_at_ms";

/// Revisions of `fleet` matching `filter` (SQL after `WHERE fleet = $1`, parameters from `$2`).
fn read_revisions(
    tx: &mut dyn Tx,
    fleet: &str,
    filter: &str,
    params: &[Val],
) -> Result<Vec<Revision>, Fail> {
    let mut all = vec![Val::from(fleet)];
    all.extend_from_slice(params);
    let rows = tx.query(
        &format!(
            "SELECT {REVISION_COLUMNS} FROM revisions WHERE fleet = $1 {filter} ORDER BY number"
        ),
        &all,
    )?;
    rows.iter()
        .map(|row| revision_from_row(row, fleet))
        .collect()
}

fn revision_from_row(row: &Row, fleet: &str) -> Result<Revision, Fail> {
    let table = "revisions";
    let number = unsigned(row.int(0)?, table, fleet)?;
    let key = format!("{fleet}/r{number}");
    let outcome = match row.text(6)?.as_str() {
        "pending" => RevisionOutcome::Pending,
        "applied" => RevisionOutcome::Applied,
        "failed" => RevisionOutcome::Failed {
            reason: row.opt_text(7)?.unwrap_or_default(),
        },
        "rolled-back" => {
            let to = row
                .opt_int(8)?
                .ok_or_else(|| corrupt(table, &key, "rolled-back without a target".into()))?;
            RevisionOutcome::RolledBack {
                to: RevisionNumber(unsigned(to, table, &key)?),
            }
        }
        other => return Err(corrupt(table, &key, format!("unknown outcome {other:?}"))),
    };
    Ok(Revision {
        fleet: fleet.to_owned(),
        number: RevisionNumber(number),
        spec_json: row.text(1)?,
        placement_json: row.text(2)?,
        plan_hash: row.text(3)?,
        actor: row.text(4)?,
        created_at: time(row.int(5)?, table, &key)?,
        outcome,
        finished_at: opt_time(row.opt_int(9)?, table, &key)?,
    })
}

pub(crate) fn get_revision<B: Backend>(
    backend: &B,
    fleet: &str,
    number: RevisionNumber,
) -> Result<Option<Revision>, StateError> {
    backend
        .read(|tx| Ok(read_revisions(tx, fleet, "AND number = $2", &[int(number.0)])?.pop()))
        .map_err(|f| {
            f.at(|source| StateError::ReadRevisions {
                fleet: fleet.to_owned(),
                source,
            })
        })
}

pub(crate) fn list_revisions<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Vec<Revision>, StateError> {
    backend
        .read(|tx| read_revisions(tx, fleet, "", &[]))
        .map_err(|f| {
            f.at(|source| StateError::ReadRevisions {
                fleet: fleet.to_owned(),
                source,
            })
        })
}

pub(crate) fn latest_applied_revision<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Option<Revision>, StateError> {
    backend
        .read(|tx| {
            let filter = "AND number = (SELECT max(number) FROM revisions WHERE fleet = $1 AND outcome = $2)";
            Ok(read_revisions(tx, fleet, filter, &[RevisionOutcome::Applied.name().into()])?.pop())
        })
        .map_err(|f| f.at(|source| StateError::ReadRevisions { fleet: fleet.to_owned(), source }))
}

const INSTANCE_COLUMNS: &str = "unit, service, instance, revision, site, host, desired, observed, handle_json, ports_json, updated_at_ms, endpoint";

fn read_instances(
    tx: &mut dyn Tx,
    fleet: &str,
    unit: Option<&UnitId>,
) -> Result<Vec<InstanceRecord>, Fail> {
    let rows = match unit {
        Some(unit) => tx.query(
            &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE fleet = $1 AND unit = $2"),
            &[fleet.into(), unit.as_str().into()],
        )?,
        None => tx.query(
            &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE fleet = $1 ORDER BY unit"),
            &[fleet.into()],
        )?,
    };
    rows.iter()
        .map(|row| instance_from_row(row, fleet))
        .collect()
}

fn instance_from_row(row: &Row, fleet: &str) -> Result<InstanceRecord, Fail> {
    let table = "instances";
    let unit = row.text(0)?;
    let key = format!("{fleet}/{unit}");
    let desired = row.text(6)?;
    let observed = row.text(7)?;
    Ok(InstanceRecord {
        fleet: fleet.to_owned(),
        state: InstanceState {
            unit: UnitId::from_raw(unit),
            service: row.text(1)?,
            instance: row.text(2)?,
            revision: RevisionNumber(unsigned(row.int(3)?, table, &key)?),
            site: row.text(4)?,
            host: row.text(5)?,
            endpoint: row.text(11)?,
            desired: DesiredState::parse(&desired).ok_or_else(|| {
                corrupt(table, &key, format!("unknown desired state {desired:?}"))
            })?,
            observed: ObservedState::parse(&observed).ok_or_else(|| {
                corrupt(table, &key, format!("unknown observed state {observed:?}"))
            })?,
            handle: json(&row.text(8)?, table, &key)?,
            ports: json(&row.text(9)?, table, &key)?,
        },
        updated_at: time(row.int(10)?, table, &key)?,
    })
}

pub(crate) fn get_instance<B: Backend>(
    backend: &B,
    fleet: &str,
    unit: &UnitId,
) -> Result<Option<InstanceRecord>, StateError> {
    backend
        .read(|tx| Ok(read_instances(tx, fleet, Some(unit))?.pop()))
        .map_err(|f| {
            f.at(|source| StateError::ReadInstances {
                fleet: fleet.to_owned(),
                source,
            })
        })
}

pub(crate) fn list_instances<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Vec<InstanceRecord>, StateError> {
    backend
        .read(|tx| read_instances(tx, fleet, None))
        .map_err(|f| {
            f.at(|source| StateError::ReadInstances {
                fleet: fleet.to_owned(),
                source,
            })
        })
}

const INTENT_COLUMNS: &str = "id, op, unit, revision, detail_json, lease_token, created_at_ms, outcome, failure_reason, closed_at_ms";

/// Intents of `fleet` matching `filter` (SQL after `WHERE fleet = $1`, parameters from `$2`).
fn read_intents(
    tx: &mut dyn Tx,
    fleet: &str,
    filter: &str,
    params: &[Val],
) -> Result<Vec<Intent>, Fail> {
    let mut all = vec![Val::from(fleet)];
    all.extend_from_slice(params);
    let rows = tx.query(
        &format!("SELECT {INTENT_COLUMNS} FROM intents WHERE fleet = $1 {filter} ORDER BY id"),
        &all,
    )?;
    rows.iter().map(|row| intent_from_row(row, fleet)).collect()
}

fn intent_from_row(row: &Row, fleet: &str) -> Result<Intent, Fail> {
    let table = "intents";
    let id = unsigned(row.int(0)?, table, fleet)?;
    let key = format!("{fleet}/{id}");
    let op = row.text(1)?;
    let outcome = match row.opt_text(7)?.as_deref() {
        None => None,
        Some("done") => Some(IntentOutcome::Done),
        Some("failed") => Some(IntentOutcome::Failed {
            reason: row.opt_text(8)?.unwrap_or_default(),
        }),
        Some(other) => return Err(corrupt(table, &key, format!("unknown outcome {other:?}"))),
    };
    Ok(Intent {
        id: IntentId(id),
        fleet: fleet.to_owned(),
        op: IntentOp::parse(&op)
            .ok_or_else(|| corrupt(table, &key, format!("unknown op {op:?}")))?,
        unit: UnitId::from_raw(row.text(2)?),
        revision: RevisionNumber(unsigned(row.int(3)?, table, &key)?),
        detail: json(&row.text(4)?, table, &key)?,
        lease_token: unsigned(row.int(5)?, table, &key)?,
        created_at: time(row.int(6)?, table, &key)?,
        outcome,
        closed_at: opt_time(row.opt_int(9)?, table, &key)?,
    })
}

pub(crate) fn get_intent<B: Backend>(
    backend: &B,
    fleet: &str,
    id: IntentId,
) -> Result<Option<Intent>, StateError> {
    backend
        .read(|tx| Ok(read_intents(tx, fleet, "AND id = $2", &[int(id.0)])?.pop()))
        .map_err(|f| {
            f.at(|source| StateError::ReadIntents {
                fleet: fleet.to_owned(),
                source,
            })
        })
}

pub(crate) fn open_intents<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Vec<Intent>, StateError> {
    backend
        .read(|tx| read_intents(tx, fleet, "AND outcome IS NULL", &[]))
        .map_err(|f| {
            f.at(|source| StateError::ReadIntents {
                fleet: fleet.to_owned(),
                source,
            })
        })
}

// ---------------------------------------------------------------------------------------------
// Audit: the legacy anchor of `audit.jsonl`, and each fleet's chain, keys and anchor

fn read_legacy_anchor(tx: &mut dyn Tx) -> Result<Option<AuditAnchor>, Fail> {
    let rows = tx.query(
        "SELECT seq, head_hash, updated_at_ms FROM audit_anchor WHERE id = 1",
        &[],
    )?;
    rows.first()
        .map(|row| anchor_from_row(row, "audit_anchor", "1"))
        .transpose()
}

fn anchor_from_row(row: &Row, table: &'static str, key: &str) -> Result<AuditAnchor, Fail> {
    Ok(AuditAnchor {
        seq: unsigned(row.int(0)?, table, key)?,
        head_hash: row.text(1)?,
        updated_at: time(row.int(2)?, table, key)?,
    })
}

fn audit_failure(step: &'static str, fleet: &str) -> impl FnOnce(Fail) -> StateError {
    let fleet = fleet.to_owned();
    move |f| {
        f.at(|source| StateError::Audit {
            step,
            fleet,
            source,
        })
    }
}

pub(crate) fn legacy_audit_anchor<B: Backend>(
    backend: &B,
) -> Result<Option<AuditAnchor>, StateError> {
    backend
        .read(read_legacy_anchor)
        .map_err(audit_failure("read the legacy anchor", "-"))
}

fn read_fleet_anchor(tx: &mut dyn Tx, fleet: &str) -> Result<Option<AuditAnchor>, Fail> {
    let rows = tx.query(
        "SELECT seq, head_hash, updated_at_ms FROM audit_anchors WHERE fleet = $1",
        &[fleet.into()],
    )?;
    rows.first()
        .map(|row| anchor_from_row(row, "audit_anchors", fleet))
        .transpose()
}

pub(crate) fn audit_anchor<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Option<AuditAnchor>, StateError> {
    backend
        .read(|tx| read_fleet_anchor(tx, fleet))
        .map_err(audit_failure("read the anchor", fleet))
}

pub(crate) fn anchor_audit_head<B: Backend>(
    backend: &B,
    fleet: &str,
    seq: u64,
    head_hash: &str,
) -> Result<AuditAnchor, StateError> {
    backend
        .write(|tx| {
            let now = tx.now_ms()?;
            // The WHERE clause keeps the anchor from moving back under concurrent appenders.
            tx.execute(
                "INSERT INTO audit_anchors (fleet, seq, head_hash, updated_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (fleet) DO UPDATE SET seq = excluded.seq, head_hash = excluded.head_hash,
                     updated_at_ms = excluded.updated_at_ms
                 WHERE audit_anchors.seq <= excluded.seq",
                &[fleet.into(), int(seq), head_hash.into(), Val::Int(now)],
            )?;
            read_fleet_anchor(tx, fleet)?
                .ok_or_else(|| corrupt("audit_anchors", fleet, "row vanished".into()))
        })
        .map_err(audit_failure("write the anchor", fleet))
}

fn audit_row(row: &Row, fleet: &str) -> Result<AuditRow, Fail> {
    let seq = unsigned(row.int(0)?, "audit_records", fleet)?;
    Ok(AuditRow {
        seq,
        prev_hash: row.text(1)?,
        hash: row.text(2)?,
        signer: row.opt_text(3)?,
        record_json: row.text(4)?,
    })
}

fn read_audit_head(tx: &mut dyn Tx, fleet: &str) -> Result<Option<AuditRow>, Fail> {
    let rows = tx.query(
        "SELECT seq, prev_hash, hash, signer, record_json FROM audit_records
         WHERE fleet = $1 ORDER BY seq DESC LIMIT 1",
        &[fleet.into()],
    )?;
    rows.first().map(|r| audit_row(r, fleet)).transpose()
}

pub(crate) fn audit_head<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Option<AuditRow>, StateError> {
    backend
        .read(|tx| read_audit_head(tx, fleet))
        .map_err(audit_failure("read the head of", fleet))
}

pub(crate) fn audit_records<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Vec<AuditRow>, StateError> {
    backend
        .read(|tx| {
            tx.query(
                "SELECT seq, prev_hash, hash, signer, record_json FROM audit_records
                 WHERE fleet = $1 ORDER BY seq",
                &[fleet.into()],
            )?
            .iter()
            .map(|r| audit_row(r, fleet))
            .collect()
        })
        .map_err(audit_failure("read", fleet))
}

pub(crate) fn audit_fleets<B: Backend>(backend: &B) -> Result<Vec<String>, StateError> {
    backend
        .read(|tx| {
            tx.query(
                "SELECT DISTINCT fleet FROM audit_records ORDER BY fleet",
                &[],
            )?
            .iter()
            .map(|r| Ok(r.text(0)?))
            .collect()
        })
        .map_err(audit_failure("list the fleets of", "-"))
}

pub(crate) fn append_audit_record<B: Backend>(
    backend: &B,
    fleet: &str,
    row: &AuditRow,
    key_change: Option<&AuditKeyChange>,
) -> Result<(), StateError> {
    backend
        .write(|tx| {
            // The fleet's row lock serialises appenders of one chain (PostgreSQL); SQLite's write
            // transactions already exclude each other.
            lock_fleet(tx, fleet)?;
            let head = read_audit_head(tx, fleet)?;
            let (head_seq, head_hash) = head.map_or((0, None), |h| (h.seq, Some(h.hash)));
            let links = head_hash.as_deref().is_none_or(|h| h == row.prev_hash);
            if row.seq != head_seq + 1 || !links {
                return Err(Fail::State(StateError::AuditChainMoved {
                    fleet: fleet.to_owned(),
                    tried: row.seq,
                    head: head_seq,
                }));
            }
            let now = tx.now_ms()?;
            tx.execute(
                "INSERT INTO audit_records (fleet, seq, prev_hash, hash, signer, record_json, stored_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    fleet.into(),
                    int(row.seq),
                    row.prev_hash.as_str().into(),
                    row.hash.as_str().into(),
                    row.signer.as_deref().map_or(Val::Null, Into::into),
                    row.record_json.as_str().into(),
                    Val::Int(now),
                ],
            )?;
            match key_change {
                None => {}
                Some(AuditKeyChange::Allow { public_key, name }) => {
                    tx.execute(
                        "INSERT INTO audit_keys (fleet, public_key, name, allowed_seq, revoked_seq)
                         VALUES ($1, $2, $3, $4, NULL)
                         ON CONFLICT (fleet, public_key) DO UPDATE SET name = excluded.name,
                             allowed_seq = excluded.allowed_seq, revoked_seq = NULL",
                        &[
                            fleet.into(),
                            public_key.as_str().into(),
                            name.as_str().into(),
                            int(row.seq),
                        ],
                    )?;
                }
                Some(AuditKeyChange::Revoke { public_key }) => {
                    tx.execute(
                        "UPDATE audit_keys SET revoked_seq = $3 WHERE fleet = $1 AND public_key = $2",
                        &[fleet.into(), public_key.as_str().into(), int(row.seq)],
                    )?;
                }
            }
            Ok(())
        })
        .map_err(|f| match f {
            Fail::State(e) => e,
            other => audit_failure("append to", fleet)(other),
        })
}

pub(crate) fn audit_keys<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Vec<AuditKey>, StateError> {
    backend
        .read(|tx| {
            tx.query(
                "SELECT public_key, name, allowed_seq, revoked_seq FROM audit_keys
                 WHERE fleet = $1 ORDER BY allowed_seq, public_key",
                &[fleet.into()],
            )?
            .iter()
            .map(|r| {
                Ok(AuditKey {
                    public_key: r.text(0)?,
                    name: r.text(1)?,
                    allowed_seq: unsigned(r.int(2)?, "audit_keys", fleet)?,
                    revoked_seq: r
                        .opt_int(3)?
                        .map(|v| unsigned(v, "audit_keys", fleet))
                        .transpose()?,
                })
            })
            .collect()
        })
        .map_err(audit_failure("read the keys of", fleet))
}

// ---------------------------------------------------------------------------------------------
// API tokens of `phoenix serve`

const TOKEN_COLUMNS: &str =
    "name, role, secret_sha256, created_at_ms, expires_at_ms, revoked_at_ms";

fn token_from_row(row: &Row) -> Result<ApiToken, Fail> {
    let table = "api_tokens";
    let name = row.text(0)?;
    Ok(ApiToken {
        role: row.text(1)?,
        secret_sha256: row.text(2)?,
        created_at: time(row.int(3)?, table, &name)?,
        expires_at: opt_time(row.opt_int(4)?, table, &name)?,
        revoked_at: opt_time(row.opt_int(5)?, table, &name)?,
        name,
    })
}

fn token_failure(step: &'static str) -> impl FnOnce(Fail) -> StateError {
    move |f| f.at(|source| StateError::ApiTokens { step, source })
}

pub(crate) fn create_api_token<B: Backend>(
    backend: &B,
    token: &NewApiToken,
) -> Result<ApiToken, StateError> {
    backend
        .write(|tx| {
            let now = tx.now_ms()?;
            let expires = token
                .valid_for
                .map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
            let existing = tx.query(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE name = $1"),
                &[token.name.as_str().into()],
            )?;
            if let Some(row) = existing.first() {
                let old = token_from_row(row)?;
                if old.is_live(time(now, "api_tokens", &token.name)?) {
                    return Err(StateError::ApiTokenExists {
                        name: token.name.clone(),
                    }
                    .into());
                }
                // A revoked or expired token's name may be given to a new token.
                tx.execute(
                    "DELETE FROM api_tokens WHERE name = $1",
                    &[token.name.as_str().into()],
                )?;
            }
            tx.execute(
                "INSERT INTO api_tokens (name, role, secret_sha256, created_at_ms, expires_at_ms, revoked_at_ms)
                 VALUES ($1, $2, $3, $4, $5, NULL)",
                &[
                    token.name.as_str().into(),
                    token.role.as_str().into(),
                    token.secret_sha256.as_str().into(),
                    Val::Int(now),
                    expires.map_or(Val::Null, Val::Int),
                ],
            )?;
            Ok(ApiToken {
                name: token.name.clone(),
                role: token.role.clone(),
                secret_sha256: token.secret_sha256.clone(),
                created_at: time(now, "api_tokens", &token.name)?,
                expires_at: opt_time(expires, "api_tokens", &token.name)?,
                revoked_at: None,
            })
        })
        .map_err(|f| match f {
            Fail::State(e) => e,
            other => token_failure("create")(other),
        })
}

pub(crate) fn list_api_tokens<B: Backend>(backend: &B) -> Result<Vec<ApiToken>, StateError> {
    backend
        .read(|tx| {
            tx.query(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name"),
                &[],
            )?
            .iter()
            .map(token_from_row)
            .collect()
        })
        .map_err(token_failure("list"))
}

pub(crate) fn api_token_by_secret<B: Backend>(
    backend: &B,
    secret_sha256: &str,
) -> Result<Option<ApiToken>, StateError> {
    backend
        .read(|tx| {
            tx.query(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE secret_sha256 = $1"),
                &[secret_sha256.into()],
            )?
            .first()
            .map(token_from_row)
            .transpose()
        })
        .map_err(token_failure("look up"))
}

pub(crate) fn revoke_api_token<B: Backend>(backend: &B, name: &str) -> Result<bool, StateError> {
    backend
        .write(|tx| {
            let now = tx.now_ms()?;
            let changed = tx.execute(
                "UPDATE api_tokens SET revoked_at_ms = $2 WHERE name = $1 AND revoked_at_ms IS NULL",
                &[name.into(), Val::Int(now)],
            )?;
            Ok(changed > 0)
        })
        .map_err(token_failure("revoke"))
}

// ---------------------------------------------------------------------------------------------
// Runs of one-shot jobs

const JOB_RUN_COLUMNS: &str = "instance, revision, job, fingerprint, outcome, exit_code, attempts, \
     duration_ms, detail, output, recorded_at_ms";

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn job_run_from_row(row: &Row, fleet: &str) -> Result<JobRunRecord, Fail> {
    let table = "job_runs";
    let instance = row.text(0)?;
    let key = format!("{fleet}/{instance}");
    let outcome_text = row.text(4)?;
    let outcome = JobOutcome::parse(&outcome_text)
        .ok_or_else(|| corrupt(table, &key, format!("unknown outcome `{outcome_text}`")))?;
    Ok(JobRunRecord {
        fleet: fleet.to_owned(),
        run: JobRun {
            revision: RevisionNumber(unsigned(row.int(1)?, table, &key)?),
            job: row.text(2)?,
            fingerprint: row.text(3)?,
            outcome,
            exit_code: row.opt_int(5)?,
            attempts: u32::try_from(unsigned(row.int(6)?, table, &key)?).unwrap_or(u32::MAX),
            duration_ms: unsigned(row.int(7)?, table, &key)?,
            detail: row.text(8)?,
            output: row.text(9)?,
            instance,
        },
        recorded_at: time(row.int(10)?, table, &key)?,
    })
}

pub(crate) fn record_job_run<B: Backend>(
    backend: &B,
    lease: &Lease,
    run: &JobRun,
) -> Result<JobRunRecord, StateError> {
    let fleet = lease.fleet.as_str();
    let output = tail(&run.output, crate::types::MAX_JOB_OUTPUT);
    backend
        .write(|tx| {
            lock_fleet(tx, fleet)?;
            check_fence(tx, lease)?;
            let now = tx.now_ms()?;
            tx.execute(
                "DELETE FROM job_runs WHERE fleet = $1 AND instance = $2 AND revision = $3",
                &[fleet.into(), run.instance.as_str().into(), int(run.revision.0)],
            )?;
            tx.execute(
                "INSERT INTO job_runs (fleet, instance, revision, job, fingerprint, outcome, exit_code, \
                 attempts, duration_ms, detail, output, recorded_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    fleet.into(),
                    run.instance.as_str().into(),
                    int(run.revision.0),
                    run.job.as_str().into(),
                    run.fingerprint.as_str().into(),
                    run.outcome.as_str().into(),
                    run.exit_code.map_or(Val::Null, Val::Int),
                    int(u64::from(run.attempts)),
                    int(run.duration_ms),
                    run.detail.as_str().into(),
                    output.into(),
                    Val::Int(now),
                ],
            )?;
            Ok(JobRunRecord {
                fleet: fleet.to_owned(),
                run: JobRun {
                    output: output.to_owned(),
                    ..run.clone()
                },
                recorded_at: time(now, "job_runs", &run.instance)?,
            })
        })
        .map_err(|f| match f {
            Fail::State(e) => e,
            other => other.at(|source| StateError::JobRuns {
                step: "record",
                fleet: fleet.to_owned(),
                source,
            }),
        })
}

pub(crate) fn job_runs<B: Backend>(
    backend: &B,
    fleet: &str,
) -> Result<Vec<JobRunRecord>, StateError> {
    backend
        .read(|tx| {
            tx.query(
                &format!(
                    "SELECT {JOB_RUN_COLUMNS} FROM job_runs WHERE fleet = $1 ORDER BY instance, revision"
                ),
                &[fleet.into()],
            )?
            .iter()
            .map(|row| job_run_from_row(row, fleet))
            .collect()
        })
        .map_err(|f| match f {
            Fail::State(e) => e,
            other => other.at(|source| StateError::JobRuns {
                step: "read",
                fleet: fleet.to_owned(),
                source,
            }),
        })
}

/// Implements [`StateStore`](crate::StateStore) for a [`Backend`] by delegating to this module.
macro_rules! impl_state_store {
    ($store:ty) => {
        impl $crate::StateStore for $store {
            fn acquire_lock(
                &self,
                fleet: &str,
                request: &$crate::LockRequest,
            ) -> Result<$crate::LockGrant, $crate::StateError> {
                $crate::logic::acquire_lock(self, fleet, request)
            }
            fn renew_lock(
                &self,
                lease: &$crate::Lease,
                ttl: std::time::Duration,
            ) -> Result<$crate::Lease, $crate::StateError> {
                $crate::logic::renew_lock(self, lease, ttl)
            }
            fn release_lock(&self, lease: &$crate::Lease) -> Result<bool, $crate::StateError> {
                $crate::logic::release_lock(self, lease)
            }
            fn lock_holder(
                &self,
                fleet: &str,
            ) -> Result<Option<$crate::LockHolder>, $crate::StateError> {
                $crate::logic::lock_holder(self, fleet)
            }
            fn write_atomically(
                &self,
                lease: &$crate::Lease,
                writes: Vec<$crate::Write>,
            ) -> Result<Vec<$crate::Written>, $crate::StateError> {
                $crate::logic::write_atomically(self, lease, writes)
            }
            fn list_fleets(&self) -> Result<Vec<String>, $crate::StateError> {
                $crate::logic::list_fleets(self)
            }
            fn fleet_generation(&self, fleet: &str) -> Result<Option<u64>, $crate::StateError> {
                $crate::logic::fleet_generation(self, fleet)
            }
            fn get_revision(
                &self,
                fleet: &str,
                number: $crate::RevisionNumber,
            ) -> Result<Option<$crate::Revision>, $crate::StateError> {
                $crate::logic::get_revision(self, fleet, number)
            }
            fn list_revisions(
                &self,
                fleet: &str,
            ) -> Result<Vec<$crate::Revision>, $crate::StateError> {
                $crate::logic::list_revisions(self, fleet)
            }
            fn latest_applied_revision(
                &self,
                fleet: &str,
            ) -> Result<Option<$crate::Revision>, $crate::StateError> {
                $crate::logic::latest_applied_revision(self, fleet)
            }
            fn get_instance(
                &self,
                fleet: &str,
                unit: &$crate::UnitId,
            ) -> Result<Option<$crate::InstanceRecord>, $crate::StateError> {
                $crate::logic::get_instance(self, fleet, unit)
            }
            fn list_instances(
                &self,
                fleet: &str,
            ) -> Result<Vec<$crate::InstanceRecord>, $crate::StateError> {
                $crate::logic::list_instances(self, fleet)
            }
            fn get_intent(
                &self,
                fleet: &str,
                id: $crate::IntentId,
            ) -> Result<Option<$crate::Intent>, $crate::StateError> {
                $crate::logic::get_intent(self, fleet, id)
            }
            fn open_intents(&self, fleet: &str) -> Result<Vec<$crate::Intent>, $crate::StateError> {
                $crate::logic::open_intents(self, fleet)
            }
            fn legacy_audit_anchor(
                &self,
            ) -> Result<Option<$crate::AuditAnchor>, $crate::StateError> {
                $crate::logic::legacy_audit_anchor(self)
            }
            fn audit_anchor(
                &self,
                fleet: &str,
            ) -> Result<Option<$crate::AuditAnchor>, $crate::StateError> {
                $crate::logic::audit_anchor(self, fleet)
            }
            fn anchor_audit_head(
                &self,
                fleet: &str,
                seq: u64,
                head_hash: &str,
            ) -> Result<$crate::AuditAnchor, $crate::StateError> {
                $crate::logic::anchor_audit_head(self, fleet, seq, head_hash)
            }
            fn audit_head(
                &self,
                fleet: &str,
            ) -> Result<Option<$crate::AuditRow>, $crate::StateError> {
                $crate::logic::audit_head(self, fleet)
            }
            fn audit_records(
                &self,
                fleet: &str,
            ) -> Result<Vec<$crate::AuditRow>, $crate::StateError> {
                $crate::logic::audit_records(self, fleet)
            }
            fn audit_fleets(&self) -> Result<Vec<String>, $crate::StateError> {
                $crate::logic::audit_fleets(self)
            }
            fn append_audit_record(
                &self,
                fleet: &str,
                row: &$crate::AuditRow,
                key_change: Option<&$crate::AuditKeyChange>,
            ) -> Result<(), $crate::StateError> {
                $crate::logic::append_audit_record(self, fleet, row, key_change)
            }
            fn audit_keys(&self, fleet: &str) -> Result<Vec<$crate::AuditKey>, $crate::StateError> {
                $crate::logic::audit_keys(self, fleet)
            }
            fn create_api_token(
                &self,
                token: &$crate::NewApiToken,
            ) -> Result<$crate::ApiToken, $crate::StateError> {
                $crate::logic::create_api_token(self, token)
            }
            fn list_api_tokens(&self) -> Result<Vec<$crate::ApiToken>, $crate::StateError> {
                $crate::logic::list_api_tokens(self)
            }
            fn api_token_by_secret(
                &self,
                secret_sha256: &str,
            ) -> Result<Option<$crate::ApiToken>, $crate::StateError> {
                $crate::logic::api_token_by_secret(self, secret_sha256)
            }
            fn revoke_api_token(&self, name: &str) -> Result<bool, $crate::StateError> {
                $crate::logic::revoke_api_token(self, name)
            }
            fn record_job_run(
                &self,
                lease: &$crate::Lease,
                run: &$crate::JobRun,
            ) -> Result<$crate::JobRunRecord, $crate::StateError> {
                $crate::logic::record_job_run(self, lease, run)
            }
            fn job_runs(
                &self,
                fleet: &str,
            ) -> Result<Vec<$crate::JobRunRecord>, $crate::StateError> {
                $crate::logic::job_runs(self, fleet)
            }
            fn secrets(
                &self,
                fleet: &str,
            ) -> Result<Vec<$crate::secrets::SecretRecord>, $crate::StateError> {
                $crate::secrets::secrets(self, fleet)
            }
            fn secret_history(
                &self,
                fleet: &str,
            ) -> Result<Vec<$crate::secrets::SecretRecord>, $crate::StateError> {
                $crate::secrets::secret_history(self, fleet)
            }
            fn write_secrets(
                &self,
                fleet: &str,
                writes: &[$crate::secrets::SecretWrite],
            ) -> Result<(), $crate::StateError> {
                $crate::secrets::write_secrets(self, fleet, writes)
            }
        }
    };
}
pub(crate) use impl_state_store;
