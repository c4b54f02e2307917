//! State shared by consensus, the API and the gossip tasks: finalized and speculative ledger
//! state, the mempool, the transaction index and the operator-facing counters.
//!
//! One mutex guards it; it is never held across an `.await`, and heavy work (signature checks,
//! block execution) runs outside it.

use crate::block::LedgerBlock;
use crate::error::NodeError;
use phoenix_ledger_types::block::BlockHeader;
use phoenix_ledger_types::crypto::{Hash, PublicKey};
use phoenix_ledger_types::exec::{Genesis, LedgerState, TxError, Validator};
use phoenix_ledger_types::mlog::{MerkleLog, audit_leaf};
use phoenix_ledger_types::tx::{Operation, Transaction};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Most transactions waiting in the mempool.
pub const MEMPOOL_CAP: usize = 400_000;
/// How far ahead of an account's next nonce the mempool holds transactions.
pub const NONCE_WINDOW: u64 = 100_000;
/// How many rejection reasons are remembered for `GET /v1/tx/{hash}`.
const REJECTED_CAP: usize = 100_000;

/// Where a committed transaction is.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TxLocation {
    /// Block height.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
}

/// The status of a transaction as the API reports it (`GET /v1/tx/{hash}`, and `POST /v1/tx`
/// once admitted): `{"status": ..., ...}`. `reason` always says why a transaction is in its
/// status: why it was rejected, or why a pending one cannot go into a block yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxStatus {
    /// In the mempool.
    Pending {
        /// The transaction's nonce.
        nonce: u64,
        /// The signer account's next nonce in the finalized state.
        next_nonce: u64,
        /// Set when the nonce is ahead of the account's next nonce and some nonce in between
        /// is not in the mempool: the transaction waits until those arrive, for ever if they
        /// never do.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// In a finalized block.
    Committed {
        /// Height.
        height: u64,
        /// Position in the block.
        index: u32,
    },
    /// Refused, with the reason.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Never seen here.
    Unknown,
}

/// Signing liveness of one validator as seen by this node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Liveness {
    /// Validator key.
    pub key: String,
    /// Notarize votes seen.
    pub notarizes: u64,
    /// Finalize votes seen.
    pub finalizes: u64,
    /// Nullify votes seen.
    pub nullifies: u64,
    /// Latest view with a vote from it.
    pub last_view: u64,
    /// When the latest vote arrived (wall clock; only for metrics and readiness).
    #[serde(skip)]
    pub last_seen: Option<std::time::Instant>,
}

/// Consensus progress counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Highest view seen in any activity.
    pub view: AtomicU64,
    /// Nullifications (view changes without a block) seen.
    pub nullifications: AtomicU64,
    /// Notarizations seen.
    pub notarizations: AtomicU64,
    /// Finalizations seen.
    pub finalizations: AtomicU64,
    /// Conflicting votes (equivocation evidence) seen.
    pub faults: AtomicU64,
    /// Blocks proposed by this node.
    pub proposed: AtomicU64,
    /// Blocks this node verified.
    pub verified: AtomicU64,
    /// Blocks this node found invalid.
    pub invalid: AtomicU64,
    /// Transactions admitted to the mempool.
    pub tx_admitted: AtomicU64,
    /// Transactions refused at admission.
    pub tx_refused: AtomicU64,
    /// Transactions committed.
    pub tx_committed: AtomicU64,
    /// Highest finalized height known to the network (may exceed ours while catching up).
    pub network_finalized: AtomicU64,
    /// Connected peers (from the last probe).
    pub peers: AtomicU64,
    /// Consensus epoch this node runs (validator-set changes take effect at epoch starts).
    pub epoch: AtomicU64,
}

/// A finalized block, as delivered to stream subscribers.
#[derive(Debug, Clone)]
pub struct Finalized {
    /// The block.
    pub block: LedgerBlock,
}

#[derive(Default)]
struct Mempool {
    txs: HashMap<Hash, Arc<Transaction>>,
    by_account: HashMap<PublicKey, BTreeMap<u64, Hash>>,
    /// Accounts in order of first arrival, for fair selection.
    accounts: VecDeque<PublicKey>,
    /// Local submissions not yet gossiped.
    outbox: Vec<Arc<Transaction>>,
}

/// Everything under the lock.
pub struct Inner {
    /// The genesis file.
    pub genesis: Genesis,
    /// Genesis block.
    pub genesis_block: LedgerBlock,
    /// Latest finalized header.
    pub finalized_header: BlockHeader,
    /// Latest finalized state.
    pub finalized_state: LedgerState,
    /// Post-states of verified or proposed blocks above the finalized height.
    pub speculative: HashMap<Hash, (BlockHeader, LedgerState)>,
    /// Committed transactions.
    pub tx_index: HashMap<Hash, TxLocation>,
    rejected: HashMap<Hash, String>,
    rejected_order: VecDeque<Hash>,
    mempool: Mempool,
    /// Recent finalized blocks, for the API and the stream.
    pub recent: BTreeMap<u64, LedgerBlock>,
    /// Views of finalization certificates, by height.
    pub finalized_views: BTreeMap<u64, u64>,
    /// Per-validator liveness, by validator index in the sorted set.
    pub liveness: Vec<Liveness>,
    /// The audit log of the finalized chain, every complete subtree kept, so that a record's
    /// inclusion proof against any finalized block's audit root costs `O(log n)` (about 64 bytes
    /// a record in memory).
    pub audit_log: MerkleLog,
    /// Validator-set changes of the finalized chain: the height of each epoch's last block
    /// whose next validator set differs, with that next set (what a proof from genesis carries).
    pub set_changes: Vec<SetChangeAt>,
    /// The post-states of the latest finalized blocks (`Clone` is O(1)), so that a state proof
    /// can be made against a block that has a finality certificate when the tip has none yet.
    pub finalized_states: BTreeMap<u64, LedgerState>,
}

/// A validator-set change in the finalized chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetChangeAt {
    /// Height of the epoch's last block.
    pub height: u64,
    /// The validators of the next epoch, sorted by key.
    pub next: Vec<Validator>,
}

/// How many recent finalized blocks are kept in memory.
const RECENT_CAP: usize = 256;
/// How many recent finalized post-states are kept for state proofs. Few: each one pins the trie
/// nodes its successors replaced (some megabytes a block at full load), and nearly every block
/// has its own certificate, so the tip's state is almost always the one proven.
pub const PROOF_STATES: usize = 4;

/// What [`Inner::commit`] took out of the shared state: the oldest proof state, speculative
/// states at or below the new tip, and the oldest recent block. Freeing them (the trie nodes
/// the successors replaced, the block's transactions) was an eighth of a validator's CPU at
/// 2,000 tx/s in a profile, all of it under the lock that every query, submission and proposal
/// waits for; so a commit hands them back, and the caller drops them after unlocking.
#[derive(Default)]
#[must_use = "drop it once the lock is released"]
pub struct Retired {
    states: Vec<LedgerState>,
    blocks: Vec<LedgerBlock>,
}

/// The shared handle.
pub struct Shared {
    inner: Mutex<Inner>,
    /// Counters (lock-free).
    pub counters: Counters,
    /// Finalized-block notifications for the stream endpoint.
    pub finalized_tx: tokio::sync::broadcast::Sender<Finalized>,
    /// This node's validator key.
    pub me: PublicKey,
    /// Set once, when the node must stop (a finalized block that does not execute); the driver
    /// (`run_node`) waits on it and exits non-zero with the error.
    halt: tokio::sync::watch::Sender<Option<Arc<NodeError>>>,
}

impl Shared {
    /// A fresh state at genesis.
    pub fn new(genesis: Genesis, me: PublicKey) -> Arc<Self> {
        let state = LedgerState::from_genesis(&genesis).expect("genesis was validated on load");
        let gblock = phoenix_ledger_types::exec::genesis_block(&genesis, &state);
        let liveness = state
            .validators()
            .validators
            .iter()
            .map(|v| Liveness {
                key: v.key.to_hex(),
                ..Liveness::default()
            })
            .collect();
        let (finalized_tx, _) = tokio::sync::broadcast::channel(64);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                genesis,
                finalized_header: gblock.header.clone(),
                genesis_block: LedgerBlock::new(gblock),
                finalized_state: state,
                speculative: HashMap::new(),
                tx_index: HashMap::new(),
                rejected: HashMap::new(),
                rejected_order: VecDeque::new(),
                mempool: Mempool::default(),
                recent: BTreeMap::new(),
                finalized_views: BTreeMap::new(),
                liveness,
                audit_log: MerkleLog::new(),
                set_changes: Vec::new(),
                finalized_states: BTreeMap::new(),
            }),
            counters: Counters::default(),
            finalized_tx,
            me,
            halt: tokio::sync::watch::Sender::new(None),
        })
    }

    /// Stops the node with `e` (the first error wins; later ones are dropped).
    pub fn halt(&self, e: NodeError) {
        self.halt.send_if_modified(|h| {
            if h.is_some() {
                return false;
            }
            *h = Some(Arc::new(e));
            true
        });
    }

    /// The error the node stopped with, if it did.
    pub fn halted_error(&self) -> Option<Arc<NodeError>> {
        self.halt.borrow().clone()
    }

    /// Waits until the node must stop; returns why.
    pub async fn halted(&self) -> Arc<NodeError> {
        let mut rx = self.halt.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(h) => h.clone().expect("waited for Some"),
            // The sender lives in `self`, so it cannot be dropped while we borrow `self`.
            Err(_) => unreachable!("halt sender dropped while borrowed"),
        }
    }

    /// Locks the state.
    ///
    /// # Panics
    /// If a thread panicked while holding the lock (the node is then broken anyway).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("shared state lock poisoned")
    }
}

impl Inner {
    /// Finalized height.
    pub fn finalized_height(&self) -> u64 {
        self.finalized_header.height
    }

    /// Header and post-state of block `hash`, if it is finalized-tip or speculative.
    pub fn state_of(&self, hash: &Hash) -> Option<(BlockHeader, LedgerState)> {
        if *hash == self.finalized_header.hash() {
            return Some((self.finalized_header.clone(), self.finalized_state.clone()));
        }
        self.speculative.get(hash).cloned()
    }

    /// Status of a transaction.
    pub fn tx_status(&self, h: &Hash) -> TxStatus {
        if let Some(loc) = self.tx_index.get(h) {
            return TxStatus::Committed {
                height: loc.height,
                index: loc.index,
            };
        }
        if let Some(tx) = self.mempool.txs.get(h) {
            let nonce = tx.body.nonce;
            let next_nonce = self.finalized_state.account(&tx.body.signer).nonce;
            return TxStatus::Pending {
                nonce,
                next_nonce,
                reason: self.nonce_gap(&tx.body.signer, next_nonce, nonce),
            };
        }
        if let Some(r) = self.rejected.get(h) {
            return TxStatus::Rejected { reason: r.clone() };
        }
        TxStatus::Unknown
    }

    /// Why a pending transaction with `nonce` cannot go into a block: the nonces between the
    /// account's `next` nonce and `nonce` that no pending transaction carries. `None` when
    /// every one of them is pending here (it is only queued behind them).
    fn nonce_gap(&self, signer: &PublicKey, next: u64, nonce: u64) -> Option<String> {
        if nonce <= next {
            return None;
        }
        let pending = self.mempool.by_account.get(signer);
        // Missing nonces as inclusive ranges, from the gaps between pending ones.
        let mut missing: Vec<(u64, u64)> = Vec::new();
        let mut expect = next;
        for n in pending
            .into_iter()
            .flat_map(|per| per.range(next..nonce).map(|(n, _)| *n))
        {
            if n > expect {
                missing.push((expect, n - 1));
            }
            expect = n + 1;
        }
        if expect < nonce {
            missing.push((expect, nonce - 1));
        }
        if missing.is_empty() {
            return None;
        }
        let count: u64 = missing.iter().map(|(a, b)| b - a + 1).sum();
        let mut list: Vec<String> = missing
            .iter()
            .take(5)
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        if missing.len() > 5 {
            list.push("...".into());
        }
        let (noun, verb) = if count == 1 {
            ("transaction", "is")
        } else {
            ("transactions", "are")
        };
        Some(format!(
            "nonce {nonce} but the account's next nonce is {next}; {noun} {} {verb} missing \
             (this transaction waits until they are submitted)",
            list.join(", ")
        ))
    }

    /// Remembers why a transaction was refused.
    pub fn reject(&mut self, h: Hash, reason: String) {
        if self.rejected.insert(h, reason).is_none() {
            self.rejected_order.push_back(h);
            if self.rejected_order.len() > REJECTED_CAP
                && let Some(old) = self.rejected_order.pop_front()
            {
                self.rejected.remove(&old);
            }
        }
    }

    /// Whether the mempool holds `h` (its signature was checked on admission).
    pub fn is_verified(&self, h: &Hash) -> bool {
        self.mempool.txs.contains_key(h)
    }

    /// Mempool size.
    pub fn mempool_len(&self) -> usize {
        self.mempool.txs.len()
    }

    /// Admits a transaction whose signature was checked. `local` ones are queued for gossip.
    ///
    /// # Errors
    /// The reason it is refused (already known, replayed, unauthorised, full...).
    pub fn admit(&mut self, tx: Transaction, h: Hash, local: bool) -> Result<(), String> {
        if self.tx_index.contains_key(&h) {
            return Err("already committed".into());
        }
        if self.mempool.txs.contains_key(&h) {
            return Err("already pending".into());
        }
        if self.mempool.txs.len() >= MEMPOOL_CAP {
            return Err("mempool full, retry later".into());
        }
        self.finalized_state
            .precheck(&tx, true)
            .map_err(|e| e.to_string())?;
        // A conflicting audit record is refused where it was submitted (a state lookup, so not
        // again on every peer it is gossiped to; execution checks it everywhere).
        if local {
            self.finalized_state
                .precheck_audit(&tx)
                .map_err(|e| e.to_string())?;
        }
        let next = self.finalized_state.account(&tx.body.signer).nonce;
        if tx.body.nonce > next + NONCE_WINDOW {
            return Err(format!(
                "nonce {} too far ahead of the account's next nonce {next}",
                tx.body.nonce
            ));
        }
        let signer = tx.body.signer;
        let per = self.mempool.by_account.entry(signer).or_default();
        if per.contains_key(&tx.body.nonce) {
            return Err(format!(
                "another transaction with nonce {} is already pending for this account",
                tx.body.nonce
            ));
        }
        if per.is_empty() {
            self.mempool.accounts.push_back(signer);
        }
        per.insert(tx.body.nonce, h);
        let tx = Arc::new(tx);
        if local {
            self.mempool.outbox.push(tx.clone());
        }
        self.mempool.txs.insert(h, tx);
        Ok(())
    }

    /// Takes the local submissions to gossip.
    pub fn take_outbox(&mut self) -> Vec<Arc<Transaction>> {
        std::mem::take(&mut self.mempool.outbox)
    }

    /// Whether any transaction could go into a block on `state`.
    pub fn has_candidates(&self, state: &LedgerState) -> bool {
        self.mempool.by_account.iter().any(|(acct, per)| {
            let next = state.account(acct).nonce;
            per.contains_key(&next)
        })
    }

    /// Up to `max` transactions executable on `state`: per account, consecutive nonces from the
    /// account's next nonce; accounts served round-robin in arrival order.
    pub fn candidates(&self, state: &LedgerState, max: usize) -> Vec<Transaction> {
        let mut runs: Vec<std::collections::btree_map::Range<'_, u64, Hash>> = Vec::new();
        let mut expected: Vec<u64> = Vec::new();
        for acct in &self.mempool.accounts {
            let Some(per) = self.mempool.by_account.get(acct) else {
                continue;
            };
            let next = state.account(acct).nonce;
            runs.push(per.range(next..));
            expected.push(next);
        }
        let mut out = Vec::new();
        let mut live = true;
        while live && out.len() < max {
            live = false;
            for (run, exp) in runs.iter_mut().zip(expected.iter_mut()) {
                if out.len() >= max {
                    break;
                }
                if let Some((n, h)) = run.next()
                    && *n == *exp
                {
                    *exp += 1;
                    out.push((*self.mempool.txs[h]).clone());
                    live = true;
                } else {
                    // A gap (or the end): this account is done for this block.
                    *exp = u64::MAX;
                }
            }
        }
        out
    }

    fn remove_from_mempool(&mut self, h: &Hash) {
        if let Some(tx) = self.mempool.txs.remove(h) {
            let signer = tx.body.signer;
            if let Some(per) = self.mempool.by_account.get_mut(&signer) {
                per.remove(&tx.body.nonce);
                if per.is_empty() {
                    self.mempool.by_account.remove(&signer);
                    self.mempool.accounts.retain(|a| *a != signer);
                }
            }
        }
    }

    /// Drops a transaction the proposer could not execute.
    pub fn drop_rejected(&mut self, h: Hash, e: &TxError) {
        self.remove_from_mempool(&h);
        self.reject(h, e.to_string());
    }

    /// Records a finalized block whose post-state is `state`: moves the tip, indexes its
    /// transactions, cleans the mempool, prunes speculative states at or below it. Returns how
    /// many transactions the block committed, and what it retired, for the caller to drop once
    /// the lock is released.
    pub fn commit(&mut self, block: &LedgerBlock, state: LedgerState) -> (u64, Retired) {
        let mut retired = Retired::default();
        let b = block.block();
        let height = b.header.height;
        let mut touched = HashSet::new();
        for (i, tx) in b.txs.iter().enumerate() {
            let h = tx.hash();
            self.tx_index.insert(
                h,
                TxLocation {
                    height,
                    index: u32::try_from(i).expect("bounded"),
                },
            );
            self.remove_from_mempool(&h);
            touched.insert(tx.body.signer);
        }
        self.extend_audit_log(b, &state);
        let l = self.genesis.epoch_length;
        if (height + 1).is_multiple_of(l)
            && b.header.next_validator_set_hash != b.header.validator_set_hash
        {
            self.set_changes.push(SetChangeAt {
                height,
                next: state.validators().at_epoch((height + 1) / l).validators,
            });
        }
        self.finalized_states.insert(height, state.clone());
        while self.finalized_states.len() > PROOF_STATES {
            retired
                .states
                .extend(self.finalized_states.pop_first().map(|(_, s)| s));
        }
        self.finalized_header = b.header.clone();
        self.finalized_state = state;
        retired.states.extend(
            self.speculative
                .extract_if(|_, (hdr, _)| hdr.height <= height)
                .map(|(_, (_, s))| s),
        );
        // Pending transactions whose nonce is now used can never execute: report them replayed.
        for acct in touched {
            let next = self.finalized_state.account(&acct).nonce;
            let stale: Vec<Hash> = self
                .mempool
                .by_account
                .get(&acct)
                .map(|per| per.range(..next).map(|(_, h)| *h).collect())
                .unwrap_or_default();
            for h in stale {
                self.remove_from_mempool(&h);
                self.reject(
                    h,
                    "replayed: nonce already used by a committed transaction".into(),
                );
            }
        }
        self.recent.insert(height, block.clone());
        while self.recent.len() > RECENT_CAP {
            retired
                .blocks
                .extend(self.recent.pop_first().map(|(_, b)| b));
        }
        (b.txs.len() as u64, retired)
    }
}

impl Inner {
    /// Appends the records block `b` appended to the audit log (its post-state is `state`; the
    /// finalized state is still its parent's).
    fn extend_audit_log(&mut self, b: &phoenix_ledger_types::block::Block, state: &LedgerState) {
        let before = self.audit_log.size();
        let added = b.header.audit_size.saturating_sub(before);
        if added == 0 {
            return;
        }
        let records = b.txs.iter().filter_map(|tx| match &tx.body.op {
            Operation::Audit(rec) => Some(rec),
            _ => None,
        });
        // Usually every record in a block is new; only a retry of a recorded one is not, and
        // then its first appearance decides (in the parent state, or earlier in this block).
        let all_new = records.clone().count() as u64 == added;
        let mut seen = HashSet::new();
        for rec in records {
            let new = all_new
                || (self
                    .finalized_state
                    .audit_entry(&rec.fleet, rec.seq)
                    .is_none()
                    && seen.insert((rec.fleet.as_str(), rec.seq)));
            if new {
                self.audit_log
                    .push(audit_leaf(&rec.fleet, rec.seq, &rec.hash));
            }
        }
        // The block executed to this root, so a mismatch is a bug here: say so loudly rather
        // than serve proofs that do not verify.
        if self.audit_log.size() != state.audit_log().size
            || self.audit_log.root() != b.header.audit_root
        {
            tracing::error!(
                height = b.header.height,
                "audit log index disagrees with the block's audit root; proofs will fail"
            );
        }
    }
}

/// Increments a counter.
pub fn inc(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}
/// Raises a counter to at least `v`.
pub fn raise(c: &AtomicU64, v: u64) {
    c.fetch_max(v, Ordering::Relaxed);
}
/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{audit_tx as tx, shared_with_auditors};
    use phoenix_ledger_types::crypto::Keypair;

    fn setup() -> (Arc<Shared>, Keypair, Keypair) {
        let (a, b) = (Keypair::from_test_index(1), Keypair::from_test_index(2));
        (shared_with_auditors(&[&a, &b]), a, b)
    }

    #[test]
    fn candidates_take_consecutive_nonces_round_robin_and_stop_at_gaps() {
        let (s, a, b) = setup();
        let mut g = s.lock();
        for n in [0, 1, 2, 4] {
            let t = tx(&a, n);
            let h = t.hash();
            g.admit(t, h, true).unwrap();
        }
        for n in [0, 1] {
            let t = tx(&b, n);
            let h = t.hash();
            g.admit(t, h, false).unwrap();
        }
        let dup = tx(&a, 0);
        assert_eq!(
            g.admit(dup.clone(), dup.hash(), true).unwrap_err(),
            "already pending"
        );
        let state = g.finalized_state.clone();
        let c: Vec<(u64, u64)> = g
            .candidates(&state, 100)
            .iter()
            .map(|t| (u64::from(t.body.signer == b.public()), t.body.nonce))
            .collect();
        // a0 b0 a1 b1 a2 (a4 waits for a3).
        assert_eq!(c, vec![(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]);
        assert_eq!(g.candidates(&state, 3).len(), 3);
        assert_eq!(
            g.take_outbox().len(),
            4,
            "only local submissions are gossiped"
        );
    }

    #[test]
    fn commit_hands_back_the_states_and_blocks_it_retires() {
        use phoenix_ledger_types::exec::{BlockContext, build_block};
        let (s, a, _) = setup();
        let blocks = RECENT_CAP as u64 + 2;
        let (mut states, mut old_blocks) = (0, 0);
        for n in 0..blocks {
            let (hdr, st) = {
                let g = s.lock();
                (g.finalized_header.clone(), g.finalized_state.clone())
            };
            let ctx = BlockContext {
                epoch: 0,
                view: n + 1,
                parent_view: n,
                proposer: Keypair::from_test_index(9).public(),
                timestamp_ms: hdr.timestamp_ms + 1,
            };
            let built = build_block(&hdr, &st, ctx, vec![tx(&a, n)]);
            let (count, retired) = s.lock().commit(&LedgerBlock::new(built.block), built.state);
            assert_eq!(count, 1);
            states += retired.states.len();
            old_blocks += retired.blocks.len();
            let g = s.lock();
            assert_eq!(g.finalized_height(), n + 1);
            assert!(g.finalized_states.len() <= PROOF_STATES);
            assert!(g.recent.len() <= RECENT_CAP);
        }
        // Every state and block beyond the caps came back to the caller, none was kept.
        assert_eq!(states as u64, blocks - PROOF_STATES as u64);
        assert_eq!(old_blocks as u64, blocks - RECENT_CAP as u64);
    }

    #[test]
    fn admission_refuses_replays_and_far_future_nonces() {
        let (s, a, _) = setup();
        let mut g = s.lock();
        let far = tx(&a, NONCE_WINDOW + 1);
        assert!(
            g.admit(far.clone(), far.hash(), true)
                .unwrap_err()
                .contains("too far ahead")
        );
        let stranger = Keypair::from_test_index(77);
        let t = tx(&stranger, 0);
        assert!(
            g.admit(t.clone(), t.hash(), true)
                .unwrap_err()
                .starts_with("unauthorised")
        );
        assert!(matches!(g.tx_status(&t.hash()), TxStatus::Unknown));
        g.reject(t.hash(), "why".into());
        assert!(matches!(g.tx_status(&t.hash()), TxStatus::Rejected { .. }));
    }

    /// Regression: a transaction with a future nonce stayed "pending" for ever with no hint of
    /// the gap. The pending status now names the account's next nonce and the missing nonces.
    #[test]
    fn regression_pending_tx_with_a_nonce_gap_says_which_nonces_are_missing() {
        let (s, a, _) = setup();
        let mut g = s.lock();
        let admit = |g: &mut Inner, n: u64| {
            let t = tx(&a, n);
            let h = t.hash();
            g.admit(t, h, true).expect("admit");
            h
        };
        let next = admit(&mut g, 0);
        assert_eq!(
            g.tx_status(&next),
            TxStatus::Pending {
                nonce: 0,
                next_nonce: 0,
                reason: None
            }
        );
        let seven = admit(&mut g, 7);
        let TxStatus::Pending {
            nonce: 7,
            next_nonce: 0,
            reason: Some(r),
        } = g.tx_status(&seven)
        else {
            panic!("{:?}", g.tx_status(&seven));
        };
        assert_eq!(
            r,
            "nonce 7 but the account's next nonce is 0; transactions 1-6 are missing (this \
             transaction waits until they are submitted)"
        );
        // Pending ones in between are not missing; a single missing nonce reads as one.
        for n in [1, 2, 4, 5, 6] {
            admit(&mut g, n);
        }
        let TxStatus::Pending {
            reason: Some(r), ..
        } = g.tx_status(&seven)
        else {
            panic!("{:?}", g.tx_status(&seven));
        };
        assert!(r.contains("; transaction 3 is missing"), "{r}");
        // Only queued behind pending ones: no reason.
        admit(&mut g, 3);
        assert!(matches!(
            g.tx_status(&seven),
            TxStatus::Pending { reason: None, .. }
        ));
        let json = serde_json::to_value(g.tx_status(&seven)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"status": "pending", "nonce": 7, "next_nonce": 0})
        );
    }
}
