//! `--ledger`: every record of a fleet's audit chain also recorded on the ledger's `audit`
//! module, and every instance's lifecycle on its `provisioning` module (`fleet-spec.md` part 2,
//! "Operations on the ledger").
//!
//! The fleet's audit chain in the state store is the write-ahead record: a record is appended
//! there first and only then queued for the ledger ([`LedgerRecorder`]). Whatever the ledger
//! did not get (it went away mid-apply, a record was queued past [`MAX_QUEUED`], a command was
//! killed) is found again by comparing the chain with the ledger, and sent by the next command
//! that reaches it ([`catch_up`]) or by `phoenix history --sync`. The ledger records
//! `(fleet, seq)` once: the same record sent twice commits once, so a retry never doubles it.
//!
//! Delivery goes in rounds ([`Link::deliver`]): sign with the account's next nonces, submit in
//! one `POST /v1/txs`, wait for the transactions to settle, then ask the ledger's *state*
//! whether each record or transition is there. Only the state counts, never a transaction's
//! status alone, so a transaction that lost its nonce to another one carrying the same record
//! counts as delivered, and one refused for a nonce is simply signed again in the next round.

pub(crate) mod client;
mod ops;

use anyhow::{Context as _, bail};
use clap::Args;
pub(crate) use client::Client;
use client::TxState;
use ops::{Signer, Wanted};
use phoenix_audit::{AuditEntry, AuditError, AuditRecord, Recorder, StoreChain};
use phoenix_ledger_types::crypto::Keypair;
use phoenix_ledger_types::exec::ResourceState;
use phoenix_ledger_types::tx::{Module, Operation, ProvOp, Role, Transaction, TxBody};
use phoenix_state::StateStore;
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Records queued for the ledger in memory at most; past that a record stays in the fleet's
/// audit chain only, and is sent by the next command (a long outage cannot grow memory).
pub(crate) const MAX_QUEUED: usize = 10_000;
/// Transactions per `POST /v1/txs`.
const BATCH: usize = 128;
/// Delivery rounds before what is left is left to the next command.
const MAX_ROUNDS: usize = 6;
/// How long one round waits for its transactions to settle.
const SETTLE: Duration = Duration::from_secs(10);
/// How long a command waits, once its work is done, for the ledger to take what is queued.
const FINISH_BUDGET: Duration = Duration::from_secs(30);
/// How long `history --verify --ledger` waits for records still on their way.
const VERIFY_WAIT: Duration = Duration::from_secs(10);

/// The `--ledger` options of the commands that change a fleet.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct LedgerArgs {
    /// Also record every step on the ledger at these API URLs (comma-separated; the first that
    /// answers is used).
    #[arg(long, env = "PHOENIX_LEDGER_URL", value_delimiter = ',')]
    pub ledger: Vec<String>,
    /// The ledger account that signs the records (a hex seed file, e.g. a testnet's
    /// `client.key`); it needs the `auditor` and `provisioner` roles.
    #[arg(long, env = "PHOENIX_LEDGER_KEY")]
    pub ledger_key: Option<PathBuf>,
    /// Also mark each provisioned instance `verified`, signed by this independent account
    /// (role `verifier`).
    #[arg(long, requires = "ledger_key")]
    pub ledger_verifier_key: Option<PathBuf>,
}

/// One thing to tell the ledger.
#[derive(Debug, Clone)]
enum Item {
    /// A record of the fleet's audit chain.
    Audit(phoenix_ledger_types::tx::AuditRecord),
    /// A provisioning transition.
    Prov(Signer, ProvOp),
}

impl Item {
    fn label(&self) -> String {
        match self {
            Item::Audit(r) => format!("audit record {} of fleet {}", r.seq, r.fleet),
            Item::Prov(_, op) => match op {
                ProvOp::Request { id, .. } => format!("provisioning request of {id}"),
                ProvOp::MarkProvisioned { id } => format!("provisioned mark of {id}"),
                ProvOp::Verify { id } => format!("verification of {id}"),
                ProvOp::Release { id } => format!("release of {id}"),
            },
        }
    }

    fn operation(&self) -> Operation {
        match self {
            Item::Audit(r) => Operation::Audit(r.clone()),
            Item::Prov(_, op) => Operation::Provisioning(op.clone()),
        }
    }
}

/// What the ledger holds of an item.
enum Truth {
    /// It is there.
    Done,
    /// Not (yet).
    Absent,
    /// Something else is there in its place.
    Different(String),
}

/// What a delivery achieved.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// Items now on the ledger.
    pub delivered: usize,
    /// Items the ledger refused, with why.
    pub rejected: Vec<(String, String)>,
    /// Items not on the ledger yet (it went away, or is slow): the next command sends them.
    pub left: usize,
    /// Why the ledger could not be reached, if it could not.
    pub unreachable: Option<String>,
}

impl Delivery {
    fn add(&mut self, other: Delivery) {
        self.delivered += other.delivered;
        self.rejected.extend(other.rejected);
        self.left += other.left;
        if self.unreachable.is_none() {
            self.unreachable = other.unreachable;
        }
    }
}

/// The ledger and the accounts that sign for this command.
pub(crate) struct Link {
    client: Client,
    chain_id: String,
    key: Keypair,
    verifier: Option<Keypair>,
    /// Set once the ledger could not be reached: the rest of the command does not try again.
    down: Option<String>,
}

fn read_key(path: &std::path::Path, what: &str) -> anyhow::Result<Keypair> {
    phoenix_ledger_node::config::read_key(path)
        .with_context(|| format!("reading the {what} {}", path.display()))
}

impl Link {
    /// Connects to the ledger named by `args` (`None` without `--ledger`).
    ///
    /// # Errors
    /// `--ledger` without `--ledger-key`, an unreadable key, or a ledger that cannot be reached
    /// (each naming what to do; nothing has changed).
    pub(crate) fn open(args: &LedgerArgs) -> anyhow::Result<Option<Self>> {
        if args.ledger.is_empty() {
            if args.ledger_key.is_some() {
                bail!("--ledger-key needs --ledger URL (the ledger to record on)");
            }
            return Ok(None);
        }
        let Some(key_file) = &args.ledger_key else {
            bail!(
                "--ledger needs --ledger-key FILE: the ledger account that signs the records (for a local testnet, DIR/client.key)"
            );
        };
        let key = read_key(key_file, "ledger key")?;
        let verifier = args
            .ledger_verifier_key
            .as_deref()
            .map(|p| read_key(p, "ledger verifier key"))
            .transpose()?;
        let mut client = Client::new(&args.ledger)?;
        let chain_id = client.chain_id().with_context(|| {
            format!(
                "nothing was changed: the ledger at {} cannot be reached",
                client.urls()
            )
        })?;
        Ok(Some(Self {
            client,
            chain_id,
            key,
            verifier,
            down: None,
        }))
    }

    /// Refuses, before anything changes, when the account lacks a role the command needs, when
    /// its identity is revoked, or when governance has paused a module it writes to.
    ///
    /// # Errors
    /// The refusal, naming the account and what is missing.
    pub(crate) fn preflight(&mut self) -> anyhow::Result<()> {
        let me = self.key.public();
        let mut needs = vec![(me, vec![Role::Auditor, Role::Provisioner], "--ledger-key")];
        if let Some(v) = &self.verifier {
            needs.push((v.public(), vec![Role::Verifier], "--ledger-verifier-key"));
        }
        for (account, roles, flag) in needs {
            let state = self
                .client
                .state("accounts", &account.to_string())
                .context("nothing was changed: reading the ledger account")?;
            let Some(state) = state else {
                bail!(
                    "nothing was changed: ledger account {account} ({flag}) is not known to the ledger at {}: it holds no roles (grant it {} with a governance proposal)",
                    self.client.url(),
                    role_names(&roles)
                );
            };
            if state["retired"].as_bool() == Some(true) {
                let did = state["did"].as_str().unwrap_or("");
                let revoked = !did.is_empty()
                    && self
                        .client
                        .state("identity", did)?
                        .is_some_and(|i| i["revoked"].as_bool() == Some(true));
                if revoked {
                    bail!(
                        "nothing was changed: the identity {did} of ledger account {account} ({flag}) is revoked; it may no longer sign"
                    );
                }
                bail!(
                    "nothing was changed: ledger account {account} ({flag}) is retired (its identity's key was rotated); use the identity's current key"
                );
            }
            let held: Vec<&str> = state["roles"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .collect();
            let missing: Vec<Role> = roles
                .into_iter()
                .filter(|r| !held.contains(&r.name()))
                .collect();
            if !missing.is_empty() {
                bail!(
                    "nothing was changed: ledger account {account} ({flag}) lacks the role {} it needs to record this command (it holds: {})",
                    role_names(&missing),
                    if held.is_empty() {
                        "none".to_owned()
                    } else {
                        held.join(", ")
                    }
                );
            }
        }
        let paused: Vec<String> = self
            .client
            .state("governance", "paused")?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        for module in [Module::Audit, Module::Provisioning] {
            if paused.iter().any(|p| p == module.name()) {
                bail!(
                    "nothing was changed: governance has paused the ledger's {} module (an emergency pause stops every deployment until admins unpause it)",
                    module.name()
                );
            }
        }
        Ok(())
    }

    fn signer(&self, who: Signer) -> &Keypair {
        match (who, &self.verifier) {
            (Signer::Verifier, Some(v)) => v,
            _ => &self.key,
        }
    }

    /// What the ledger's state holds of `item`.
    fn truth(&mut self, item: &Item) -> anyhow::Result<Truth> {
        match item {
            Item::Audit(r) => {
                let key = phoenix_ledger_types::exec::audit_key(&r.fleet, r.seq);
                Ok(match self.client.state("audit", &key)? {
                    None => Truth::Absent,
                    Some(v) if v["record"]["hash"].as_str() == Some(&r.hash.to_hex()) => {
                        Truth::Done
                    }
                    Some(v) => Truth::Different(format!(
                        "the ledger holds another record at this place (hash {})",
                        v["record"]["hash"].as_str().unwrap_or("?")
                    )),
                })
            }
            Item::Prov(_, op) => {
                let (id, done): (&str, &[ResourceState]) = match op {
                    ProvOp::Request { id, .. } => (
                        id,
                        &[
                            ResourceState::Requested,
                            ResourceState::Provisioned,
                            ResourceState::Verified,
                        ],
                    ),
                    ProvOp::MarkProvisioned { id } => {
                        (id, &[ResourceState::Provisioned, ResourceState::Verified])
                    }
                    ProvOp::Verify { id } => (id, &[ResourceState::Verified]),
                    ProvOp::Release { id } => (id, &[ResourceState::Released]),
                };
                let state = resource_state(&mut self.client, id)?;
                Ok(if state.is_some_and(|s| done.contains(&s)) {
                    Truth::Done
                } else {
                    Truth::Absent
                })
            }
        }
    }

    /// Sends `items` in order until the ledger's state holds each, it refuses one for a
    /// reason a retry cannot change, or the rounds are used up.
    fn deliver(&mut self, mut todo: Vec<Item>) -> Delivery {
        let mut out = Delivery::default();
        if let Some(reason) = &self.down {
            out.left = todo.len();
            out.unreachable = Some(reason.clone());
            return out;
        }
        for _round in 0..MAX_ROUNDS {
            if todo.is_empty() {
                break;
            }
            match self.round(&todo) {
                Ok((settled, truths, timed_out)) => {
                    let before = (out.delivered, out.rejected.len());
                    let mut next = Vec::new();
                    for ((item, state), truth) in todo.into_iter().zip(settled).zip(truths) {
                        match truth {
                            Truth::Done => out.delivered += 1,
                            Truth::Different(why) => out.rejected.push((item.label(), why)),
                            Truth::Absent => match state {
                                TxState::Rejected(reason) if !retryable(&reason) => {
                                    out.rejected.push((item.label(), reason));
                                }
                                _ => next.push(item),
                            },
                        }
                    }
                    // A ledger that takes transactions and finalizes none (it lost its
                    // quorum) is left alone for the rest of the command, like one that is down.
                    if timed_out && (out.delivered, out.rejected.len()) == before {
                        let reason = format!(
                            "the ledger at {} took the transactions but finalized none within {} s",
                            self.client.url(),
                            SETTLE.as_secs()
                        );
                        self.down = Some(reason.clone());
                        out.unreachable = Some(reason);
                        todo = next;
                        break;
                    }
                    todo = next;
                }
                Err(e) => {
                    let reason = format!("{e:#}");
                    self.down = Some(reason.clone());
                    out.unreachable = Some(reason);
                    break;
                }
            }
        }
        out.left += todo.len();
        out
    }

    /// One round: sign, submit, wait for the transactions to settle, read the state.
    fn round(&mut self, todo: &[Item]) -> anyhow::Result<(Vec<TxState>, Vec<Truth>, bool)> {
        let mut nonces = [self.client.next_nonce(&self.key.public())?, 0];
        if let Some(v) = &self.verifier {
            nonces[1] = self.client.next_nonce(&v.public())?;
        }
        let txs: Vec<Transaction> = todo
            .iter()
            .map(|item| {
                let who = match item {
                    Item::Prov(Signer::Verifier, _) if self.verifier.is_some() => 1,
                    _ => 0,
                };
                let key = self.signer(if who == 1 {
                    Signer::Verifier
                } else {
                    Signer::Provisioner
                });
                let tx = TxBody {
                    chain_id: self.chain_id.clone(),
                    signer: key.public(),
                    nonce: nonces[who],
                    op: item.operation(),
                }
                .sign(key);
                nonces[who] += 1;
                tx
            })
            .collect();
        let mut settled: Vec<Option<TxState>> = vec![None; txs.len()];
        for (chunk_index, chunk) in txs.chunks(BATCH).enumerate() {
            for (i, verdict) in self.client.submit(chunk)?.into_iter().enumerate() {
                if let Err(reason) = verdict
                    && !reason.starts_with("already")
                {
                    settled[chunk_index * BATCH + i] = Some(TxState::Rejected(reason));
                }
            }
        }
        // Wait, in nonce order, until each transaction is committed or rejected. A rejection
        // leaves a nonce gap that holds every later one back: stop waiting there, the next
        // round signs them again.
        let deadline = Instant::now() + SETTLE;
        let mut timed_out = true;
        'wait: while Instant::now() < deadline {
            let mut all = true;
            for (i, tx) in txs.iter().enumerate() {
                if settled[i].is_some() {
                    if matches!(settled[i], Some(TxState::Rejected(_))) {
                        timed_out = false;
                        break 'wait;
                    }
                    continue;
                }
                match self.client.tx_state(&tx.hash())? {
                    TxState::Pending => {
                        all = false;
                        break;
                    }
                    s => settled[i] = Some(s),
                }
            }
            if all {
                timed_out = false;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let settled: Vec<TxState> = settled
            .into_iter()
            .map(|s| s.unwrap_or(TxState::Pending))
            .collect();
        let mut truths = Vec::with_capacity(todo.len());
        for item in todo {
            truths.push(self.truth(item)?);
        }
        Ok((settled, truths, timed_out))
    }
}

/// Whether a refusal may go away when the transaction is signed again (a nonce taken by
/// another transaction, a gap, a full mempool).
fn retryable(reason: &str) -> bool {
    reason.contains("nonce") || reason.starts_with("replayed") || reason.starts_with("mempool full")
}

fn role_names(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(" and ")
}

fn resource_state(client: &mut Client, id: &str) -> anyhow::Result<Option<ResourceState>> {
    Ok(client
        .state("provisioning", id)?
        .and_then(|v| serde_json::from_value(v["state"].clone()).ok()))
}

/// Records queued for the ledger, shared by the recorder and the sending thread.
#[derive(Default)]
struct Queue {
    items: VecDeque<AuditRecord>,
    /// Records not queued because the queue was full (they are in the chain).
    overflowed: usize,
    closed: bool,
}

#[derive(Default)]
struct Outbox {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Outbox {
    fn push(&self, record: AuditRecord) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.items.len() >= MAX_QUEUED {
            q.overflowed += 1;
        } else {
            q.items.push_back(record);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Up to [`BATCH`] records, waiting a little for the first; `None` once closed and empty.
    fn take(&self) -> Option<Vec<AuditRecord>> {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.items.is_empty() && !q.closed {
            q = self
                .wake
                .wait_timeout(q, Duration::from_millis(200))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if q.items.is_empty() {
            return (!q.closed).then(Vec::new);
        }
        let n = q.items.len().min(BATCH);
        Some(q.items.drain(..n).collect())
    }
}

/// The fleet's audit chain as the engine's recorder, each record also queued for the ledger.
pub(crate) struct LedgerRecorder {
    chain: Arc<StoreChain>,
    store: Arc<dyn StateStore>,
    fleet: String,
    outbox: Arc<Outbox>,
    /// The next sequence number to queue. Held while recording, so that records are queued
    /// in chain order although the engine records from several threads.
    next_seq: Arc<Mutex<u64>>,
}

impl Recorder for LedgerRecorder {
    fn record(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let mut next = self.next_seq.lock().unwrap_or_else(PoisonError::into_inner);
        // The chain first: it is the write-ahead record the ledger is caught up from.
        let record = self.chain.record(entry)?;
        if record.seq > *next {
            // Records the chain wrote by itself before this one (the record that allows a new
            // operator's key): queued first, in order.
            if let Ok(chain) = phoenix_audit::read_chain(&*self.store, &self.fleet) {
                for earlier in chain
                    .iter()
                    .filter(|r| r.seq >= *next && r.seq < record.seq)
                {
                    self.outbox.push(earlier.clone());
                }
            }
        }
        self.outbox.push(record.clone());
        *next = (*next).max(record.seq + 1);
        Ok(record)
    }
}

/// A command's connection to the ledger while it runs: catch-up before, streaming during,
/// provisioning and a report after.
pub(crate) struct Session {
    fleet: String,
    outbox: Arc<Outbox>,
    next_seq: Arc<Mutex<u64>>,
    sender: Option<std::thread::JoinHandle<(Link, Delivery)>>,
    /// What the catch-up before the command delivered.
    before: Delivery,
}

impl Session {
    /// Checks that the command may record (see [`Link::preflight`]), sends what earlier
    /// commands left unsent, and starts streaming new records.
    ///
    /// # Errors
    /// A refusal; nothing has changed then.
    pub(crate) fn start(
        mut link: Link,
        store: &dyn StateStore,
        fleet: &str,
    ) -> anyhow::Result<Self> {
        if !phoenix_ledger_types::tx::is_valid_fleet(fleet) {
            bail!(
                "nothing was changed: fleet name `{fleet}` cannot be recorded on the ledger (1 to {} characters of A-Z a-z 0-9 . _ ~ -)",
                phoenix_ledger_types::tx::MAX_ID
            );
        }
        link.preflight()?;
        let (before, head) = catch_up(&mut link, store, fleet, false)?;
        let next_seq = Arc::new(Mutex::new(head + 1));
        let outbox = Arc::new(Outbox::default());
        let sending = outbox.clone();
        let sender = std::thread::Builder::new()
            .name("ledger-outbox".into())
            .spawn(move || send_queued(link, &sending))
            .context("starting the ledger outbox")?;
        Ok(Self {
            fleet: fleet.to_owned(),
            outbox,
            next_seq,
            sender: Some(sender),
            before,
        })
    }

    /// The recorder the engine writes to.
    pub(crate) fn recorder(
        &self,
        chain: Arc<StoreChain>,
        store: Arc<dyn StateStore>,
    ) -> Arc<dyn Recorder> {
        Arc::new(LedgerRecorder {
            chain,
            store,
            fleet: self.fleet.clone(),
            outbox: self.outbox.clone(),
            next_seq: self.next_seq.clone(),
        })
    }

    /// Sends what is queued (within [`FINISH_BUDGET`]), records each instance's lifecycle,
    /// and says what happened.
    pub(crate) fn finish(mut self, store: &dyn StateStore) -> Report {
        {
            let mut q = self
                .outbox
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            q.closed = true;
        }
        self.outbox.wake.notify_all();
        let mut report = Report {
            audit: std::mem::take(&mut self.before),
            provisioning: Delivery::default(),
        };
        let Some(sender) = self.sender.take() else {
            return report;
        };
        match sender.join() {
            Ok((mut link, streamed)) => {
                report.audit.add(streamed);
                let overflowed = self
                    .outbox
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .overflowed;
                report.audit.left += overflowed;
                match provisioning_items(&mut link, store, &self.fleet) {
                    Ok(items) => report.provisioning = link.deliver(items),
                    Err(e) => report.provisioning.unreachable = Some(format!("{e:#}")),
                }
            }
            Err(_) => {
                report.audit.unreachable = Some("the ledger outbox stopped unexpectedly".into());
            }
        }
        report
    }
}

/// The sending thread: batches of queued records until the queue is closed and empty, or
/// [`FINISH_BUDGET`] after it was closed.
fn send_queued(mut link: Link, outbox: &Outbox) -> (Link, Delivery) {
    let mut total = Delivery::default();
    let mut closed_at: Option<Instant> = None;
    while let Some(batch) = outbox.take() {
        if closed_at.is_none()
            && outbox
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .closed
        {
            closed_at = Some(Instant::now());
        }
        if batch.is_empty() {
            continue;
        }
        let over_budget = closed_at.is_some_and(|t| t.elapsed() > FINISH_BUDGET);
        if over_budget {
            total.left += batch.len();
            continue;
        }
        let (items, refused) = audit_items(&batch);
        total.rejected.extend(refused);
        total.add(link.deliver(items));
    }
    (link, total)
}

fn audit_items(records: &[AuditRecord]) -> (Vec<Item>, Vec<(String, String)>) {
    let mut items = Vec::with_capacity(records.len());
    let mut refused = Vec::new();
    for r in records {
        match ops::audit_op(r) {
            Ok(op) => items.push(Item::Audit(op)),
            Err(why) => refused.push((
                format!("audit record {} of fleet {}", r.seq, r.entry.fleet),
                why,
            )),
        }
    }
    (items, refused)
}

/// The provisioning transitions that bring the fleet's resources on the ledger to what the
/// state store says.
fn provisioning_items(
    link: &mut Link,
    store: &dyn StateStore,
    fleet: &str,
) -> anyhow::Result<Vec<Item>> {
    let instances: Vec<_> = store
        .list_instances(fleet)
        .context("reading the fleet's instances")?
        .into_iter()
        .map(|r| r.state)
        .collect();
    let known: BTreeSet<String> = phoenix_audit::read_chain(store, fleet)
        .context("reading the fleet's audit chain")?
        .iter()
        .filter_map(|r| ops::instance_of_step(&r.entry.step).map(str::to_owned))
        .collect();
    let mut items = Vec::new();
    for (instance, view) in ops::instance_views(&instances, &known) {
        let id = ops::resource_id(fleet, &instance);
        let on_ledger = resource_state(&mut link.client, &id)?;
        let verify = link.verifier.is_some() && view.wanted == Wanted::Provisioned;
        for (who, op) in ops::transitions(&id, fleet, &view, on_ledger, verify) {
            items.push(Item::Prov(who, op));
        }
    }
    Ok(items)
}

/// Sends the records of the fleet's chain that the ledger lacks, and returns what it did with
/// the sequence number of the chain's head (0 for an empty chain), so the caller need not read
/// the chain again. Without `full`, walks back from the head to the first record the ledger
/// holds (what earlier commands left unsent is at the end); with it (`history --sync`), checks
/// every record.
fn catch_up(
    link: &mut Link,
    store: &dyn StateStore,
    fleet: &str,
    full: bool,
) -> anyhow::Result<(Delivery, u64)> {
    let chain =
        phoenix_audit::read_chain(store, fleet).context("reading the fleet's audit chain")?;
    let head = chain.last().map_or(0, |r| r.seq);
    let mut missing = Vec::new();
    for record in chain.iter().rev() {
        let Ok(op) = ops::audit_op(record) else {
            missing.push(record.clone());
            continue;
        };
        match link
            .truth(&Item::Audit(op))
            .context("nothing was changed: reading the ledger")?
        {
            Truth::Done if !full => break,
            Truth::Done => {}
            Truth::Absent | Truth::Different(_) => missing.push(record.clone()),
        }
    }
    missing.reverse();
    let (items, refused) = audit_items(&missing);
    let mut out = Delivery {
        rejected: refused,
        ..Delivery::default()
    };
    for chunk in items.chunks(BATCH * 4) {
        out.add(link.deliver(chunk.to_vec()));
    }
    Ok((out, head))
}

/// What a command's ledger session did.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Audit records.
    pub audit: Delivery,
    /// Provisioning transitions.
    pub provisioning: Delivery,
}

impl Report {
    /// Lines for people (stderr).
    pub(crate) fn lines(&self, urls_hint: &str) -> Vec<String> {
        let mut lines = vec![format!(
            "ledger: {} audit record(s) and {} provisioning change(s) recorded",
            self.audit.delivered, self.provisioning.delivered
        )];
        for (what, why) in self
            .audit
            .rejected
            .iter()
            .chain(&self.provisioning.rejected)
        {
            lines.push(format!("warning: the ledger refused the {what}: {why}"));
        }
        let left = self.audit.left + self.provisioning.left;
        if left > 0 {
            let why = self
                .audit
                .unreachable
                .as_deref()
                .or(self.provisioning.unreachable.as_deref())
                .unwrap_or("it did not take them in time");
            lines.push(format!(
                "warning: {left} record(s) are not on the ledger yet ({why}); they are kept in the fleet's audit chain and sent by the next apply, rollback or destroy that reaches the ledger, or by `phoenix history FILE --sync --ledger {urls_hint} --ledger-key FILE`"
            ));
        }
        lines
    }

    /// The report as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        let part = |d: &Delivery| {
            serde_json::json!({
                "recorded": d.delivered,
                "rejected": d.rejected.iter().map(|(w, r)| serde_json::json!({"what": w, "reason": r})).collect::<Vec<_>>(),
                "pending": d.left,
                "unreachable": d.unreachable,
            })
        };
        serde_json::json!({"event": "ledger", "audit": part(&self.audit), "provisioning": part(&self.provisioning)})
    }

    /// Whether everything was recorded.
    pub(crate) fn complete(&self) -> bool {
        self.audit.rejected.is_empty()
            && self.provisioning.rejected.is_empty()
            && self.audit.left == 0
            && self.provisioning.left == 0
    }
}

/// `phoenix history --sync`: every record the ledger lacks, and every instance's lifecycle.
///
/// # Errors
/// The ledger cannot be reached, or a refusal (see [`Link::preflight`]).
pub(crate) fn sync(mut link: Link, store: &dyn StateStore, fleet: &str) -> anyhow::Result<Report> {
    link.preflight()?;
    let (audit, _) = catch_up(&mut link, store, fleet, true)?;
    let items = provisioning_items(&mut link, store, fleet)?;
    let provisioning = link.deliver(items);
    Ok(Report {
        audit,
        provisioning,
    })
}

/// One record of the fleet's chain that the ledger does not hold as it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LedgerProblem {
    /// The record's sequence number.
    pub seq: u64,
    /// `missing`, `different`, `out-of-order` or `extra`.
    pub kind: &'static str,
    /// For people.
    pub message: String,
}

/// `phoenix history --verify --ledger`: every record of the fleet's chain on the ledger with the
/// same hash and in the same order, waiting up to [`VERIFY_WAIT`] for records on their way.
/// Each record is read from the ledger once, and again only while it is missing.
///
/// # Errors
/// The ledger cannot be reached.
pub(crate) fn verify(
    client: &mut Client,
    chain: &[AuditRecord],
    fleet: &str,
) -> anyhow::Result<Vec<LedgerProblem>> {
    verify_within(client, chain, fleet, VERIFY_WAIT)
}

/// One pass of [`verify`], without waiting for records on their way (the audit page of
/// `phoenix serve` shows those as missing, i.e. pending, and is reloaded).
///
/// # Errors
/// The ledger cannot be reached.
pub(crate) fn verify_once(
    client: &mut Client,
    chain: &[AuditRecord],
    fleet: &str,
) -> anyhow::Result<Vec<LedgerProblem>> {
    verify_within(client, chain, fleet, Duration::ZERO)
}

fn verify_within(
    client: &mut Client,
    chain: &[AuditRecord],
    fleet: &str,
    wait: Duration,
) -> anyhow::Result<Vec<LedgerProblem>> {
    let deadline = Instant::now() + wait;
    let mut seen = chain
        .iter()
        .map(|r| on_ledger(client, fleet, r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    while seen.iter().any(Option::is_none) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        for (record, slot) in chain.iter().zip(seen.iter_mut()) {
            if slot.is_none() {
                *slot = on_ledger(client, fleet, record)?;
            }
        }
    }
    let mut problems = judge(chain, &seen);
    // A local chain cut short: the ledger has the record after the local head.
    let next = chain.last().map_or(1, |r| r.seq + 1);
    let key = phoenix_ledger_types::exec::audit_key(fleet, next);
    if let Some(v) = client.state("audit", &key)? {
        problems.push(LedgerProblem {
            seq: next,
            kind: "extra",
            message: format!(
                "the ledger holds record {next} ({}) which the local chain lacks: the local chain was cut short or rewritten",
                v["record"]["step"].as_str().unwrap_or("?")
            ),
        });
    }
    Ok(problems)
}

/// What the ledger holds for one record of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OnLedger {
    /// The hash the ledger recorded.
    hash: String,
    /// The record's position in the ledger's audit log, where it says.
    index: Option<u64>,
}

fn on_ledger(
    client: &mut Client,
    fleet: &str,
    record: &AuditRecord,
) -> anyhow::Result<Option<OnLedger>> {
    let key = phoenix_ledger_types::exec::audit_key(fleet, record.seq);
    Ok(client.state("audit", &key)?.map(|v| OnLedger {
        hash: v["record"]["hash"].as_str().unwrap_or("").to_owned(),
        index: v["index"].as_u64(),
    }))
}

/// The problems of `chain` given what the ledger holds for each record (`seen`, in chain
/// order): missing, different (against the recomputed hash) and out of order.
fn judge(chain: &[AuditRecord], seen: &[Option<OnLedger>]) -> Vec<LedgerProblem> {
    let mut problems = Vec::new();
    let mut last_index: Option<u64> = None;
    for (record, seen) in chain.iter().zip(seen) {
        let Some(seen) = seen else {
            problems.push(LedgerProblem {
                seq: record.seq,
                kind: "missing",
                message: format!(
                    "record {} ({}) is not on the ledger (still pending, or never sent: `phoenix history --sync` sends it)",
                    record.seq, record.entry.step
                ),
            });
            continue;
        };
        // Recomputed, not the stored hash: a record edited in place (its stored hash left as
        // it was) differs from what the ledger holds.
        let here = record
            .to_json()
            .map(|j| phoenix_audit::record_hash(&j))
            .unwrap_or_default();
        if seen.hash != record.hash || seen.hash != here {
            problems.push(LedgerProblem {
                seq: record.seq,
                kind: "different",
                message: format!(
                    "record {} ({}) differs from the ledger's: hash {} here, {} on the ledger (the local record was changed, or the ledger's is of another chain)",
                    record.seq,
                    record.entry.step,
                    short(&record.hash),
                    short(&seen.hash)
                ),
            });
        }
        if let (Some(prev), Some(index)) = (last_index, seen.index)
            && index < prev
        {
            problems.push(LedgerProblem {
                seq: record.seq,
                kind: "out-of-order",
                message: format!(
                    "record {} was recorded on the ledger before an earlier record of the chain",
                    record.seq
                ),
            });
        }
        if seen.index.is_some() {
            last_index = seen.index;
        }
    }
    problems
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
