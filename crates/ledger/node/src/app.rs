//! The application the consensus engine drives: builds blocks (propose), checks them (verify),
//! and applies finalized ones (reporter).

use crate::block::{Ctx, LedgerBlock, from_digest, from_engine_key, to_digest};
use crate::error::NodeError;
use crate::shared::{Shared, inc, raise};
use commonware_actor::Feedback;
use commonware_consensus::simplex::types::Attributable;
use commonware_consensus::{
    Reporter, Viewable,
    marshal::{Update, ancestry::Ancestry},
    simplex::{scheme::ed25519::Scheme, types::Activity},
};
use commonware_cryptography::{Digested, sha256::Digest};
use commonware_runtime::{Clock, Metrics, Spawner};
use commonware_utils::Acknowledgement;
use futures::StreamExt;
use phoenix_ledger_types::block::{BlockHeader, MAX_BLOCK_TXS};
use phoenix_ledger_types::crypto::{Hash, verify_many};
use phoenix_ledger_types::exec::{BlockContext, LedgerState, build_block, execute_block};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tracing::{debug, error, info, warn};

/// Block production cadence.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    /// Minimum time between a parent and a child block that carries transactions.
    pub min_block_interval: Duration,
    /// Time between blocks when there is nothing to include (empty blocks keep liveness visible).
    pub empty_block_interval: Duration,
    /// How far ahead of the local clock a block timestamp may be.
    pub max_clock_skew: Duration,
}

impl Default for Cadence {
    fn default() -> Self {
        Self {
            min_block_interval: Duration::from_millis(50),
            empty_block_interval: Duration::from_millis(1000),
            max_clock_skew: Duration::from_secs(2),
        }
    }
}

/// The ledger application.
#[derive(Clone)]
pub struct LedgerApp {
    shared: Arc<Shared>,
    cadence: Cadence,
    /// Blocks per epoch (from genesis; it never changes).
    epoch_length: u64,
}

impl LedgerApp {
    /// An application over `shared`.
    pub fn new(shared: Arc<Shared>, cadence: Cadence) -> Self {
        let epoch_length = shared.lock().genesis.epoch_length;
        Self {
            shared,
            cadence,
            epoch_length,
        }
    }
}

fn now_ms(c: &impl Clock) -> u64 {
    u64::try_from(
        c.current()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// Finds the post-state of `parent`, executing unknown ancestors from the ancestry stream if
/// needed. `None` if the chain does not connect to a known state (then the block is invalid).
async fn parent_state(
    shared: &Shared,
    parent: &LedgerBlock,
    ancestry: &mut impl Ancestry<LedgerBlock>,
) -> Option<(BlockHeader, LedgerState)> {
    if let Some(s) = shared.lock().state_of(&parent.hash()) {
        return Some(s);
    }
    // Walk back until a known state, then execute forward.
    let mut chain = vec![parent.clone()];
    loop {
        let (known, fin_height) = {
            let g = shared.lock();
            let last = chain.last().expect("non-empty");
            (
                g.state_of(&last.block().header.parent_hash),
                g.finalized_height(),
            )
        };
        if let Some((mut hdr, mut state)) = known {
            for b in chain.iter().rev() {
                match execute_block(&hdr, &state, b.block()) {
                    Ok(s) => {
                        state = s;
                        hdr = b.block().header.clone();
                        shared
                            .lock()
                            .speculative
                            .insert(b.hash(), (hdr.clone(), state.clone()));
                    }
                    Err(e) => {
                        warn!(height = b.block().header.height, %e, "ancestor failed to execute");
                        return None;
                    }
                }
            }
            return Some((hdr, state));
        }
        let last_height = chain.last().expect("non-empty").block().header.height;
        if last_height <= fin_height + 1 {
            // Its parent is at or below the finalized height but is not our finalized block.
            return None;
        }
        let next = ancestry.next().await?;
        chain.push(LedgerBlock::clone(next.inner()));
    }
}

impl<E> commonware_consensus::Application<E> for LedgerApp
where
    E: Clock + Spawner + Metrics + Send + Sync + 'static,
{
    type SigningScheme = Scheme;
    type Context = Ctx;
    type Block = LedgerBlock;
    type Input = ();

    async fn propose(
        &mut self,
        (runtime, context): (E, Ctx),
        ancestry: impl Ancestry<LedgerBlock>,
        _input: (),
    ) -> Option<Digested<LedgerBlock>> {
        let mut ancestry = ancestry;
        let parent = LedgerBlock::clone(ancestry.next().await?.inner());
        let (parent_hdr, parent_state) = parent_state(&self.shared, &parent, &mut ancestry).await?;

        // Cadence: wait for transactions up to the empty-block interval.
        let min_at = parent_hdr.timestamp_ms + self.cadence.min_block_interval.as_millis() as u64;
        let empty_at =
            parent_hdr.timestamp_ms + self.cadence.empty_block_interval.as_millis() as u64;
        loop {
            let now = now_ms(&runtime);
            let has = self.shared.lock().has_candidates(&parent_state);
            if (has && now >= min_at) || now >= empty_at {
                break;
            }
            let until = if has { min_at } else { empty_at.min(now + 10) };
            runtime
                .sleep(Duration::from_millis(until.saturating_sub(now).max(1)))
                .await;
        }

        let candidates = self.shared.lock().candidates(&parent_state, MAX_BLOCK_TXS);
        let ctx = BlockContext {
            epoch: context.round.epoch().get(),
            view: context.round.view().get(),
            parent_view: context.parent.0.get(),
            proposer: from_engine_key(&context.leader),
            timestamp_ms: now_ms(&runtime).max(parent_hdr.timestamp_ms + 1),
        };
        if from_digest(&context.parent.1) != parent.hash() {
            error!("proposal context names another parent than the ancestry");
            return None;
        }
        let built = build_block(&parent_hdr, &parent_state, ctx, candidates);
        let block = LedgerBlock::new(built.block);
        {
            let mut g = self.shared.lock();
            for (h, e) in &built.rejected {
                g.drop_rejected(*h, e);
            }
            g.speculative
                .insert(block.hash(), (block.block().header.clone(), built.state));
        }
        inc(&self.shared.counters.proposed, 1);
        debug!(
            height = block.block().header.height,
            txs = block.block().txs.len(),
            "proposed"
        );
        let digest = to_digest(block.hash());
        Some(Digested::precomputed(block, digest))
    }

    async fn verify(
        &mut self,
        (runtime, context): (E, Ctx),
        ancestry: impl Ancestry<LedgerBlock>,
    ) -> bool {
        let mut ancestry = ancestry;
        let Some(block) = ancestry.next().await else {
            return false;
        };
        let block = LedgerBlock::clone(block.inner());
        let Some(parent) = ancestry.next().await else {
            return false;
        };
        let parent = LedgerBlock::clone(parent.inner());
        let hdr = &block.block().header;
        // Ledger epochs and consensus epochs are the same partition of heights (marshal's
        // FixedEpocher already rejects a height outside the round's epoch; this pins the header
        // field to it too, so the header alone says which validator set certified a block).
        if hdr.epoch != hdr.height / self.epoch_length
            || hdr.epoch != context.round.epoch().get()
            || hdr.view != context.round.view().get()
            || from_engine_key(&context.leader) != hdr.proposer
        {
            return false;
        }
        let skew = self.cadence.max_clock_skew.as_millis() as u64;
        if hdr.timestamp_ms > now_ms(&runtime) + skew {
            warn!(height = hdr.height, "block timestamp too far in the future");
            return false;
        }
        let Some((parent_hdr, parent_state)) =
            parent_state(&self.shared, &parent, &mut ancestry).await
        else {
            inc(&self.shared.counters.invalid, 1);
            return false;
        };
        // Signatures: skip those already checked at admission; batch the rest.
        let unchecked: Vec<usize> = {
            let g = self.shared.lock();
            block
                .block()
                .txs
                .iter()
                .enumerate()
                .filter(|(_, tx)| !g.is_verified(&tx.hash()))
                .map(|(i, _)| i)
                .collect()
        };
        if !unchecked.is_empty() {
            let hashes: Vec<Hash> = unchecked
                .iter()
                .map(|i| block.block().txs[*i].hash())
                .collect();
            let items: Vec<_> = unchecked
                .iter()
                .zip(&hashes)
                .map(|(i, h)| {
                    let tx = &block.block().txs[*i];
                    (tx.body.signer, &h.0[..], tx.signature)
                })
                .collect();
            if verify_many(&items).iter().any(|ok| !ok) {
                warn!(
                    height = hdr.height,
                    "block carries a badly signed transaction"
                );
                inc(&self.shared.counters.invalid, 1);
                return false;
            }
        }
        match execute_block(&parent_hdr, &parent_state, block.block()) {
            Ok(state) => {
                self.shared
                    .lock()
                    .speculative
                    .insert(block.hash(), (hdr.clone(), state));
                inc(&self.shared.counters.verified, 1);
                true
            }
            Err(e) => {
                warn!(height = hdr.height, %e, "invalid block");
                inc(&self.shared.counters.invalid, 1);
                false
            }
        }
    }
}

/// Applies one finalized block to the shared state (used by the reporter and by start-up
/// replay). `Ok(false)` if it does not extend the finalized tip (a redelivery, or a block
/// beyond it), `Ok(true)` once applied.
///
/// # Errors
/// [`NodeError::FinalizedBlock`] if it fails to execute on the finalized tip: the quorum
/// certified it, so the chain (on disk or from peers) does not belong to this node's genesis or
/// this node's state diverged. The caller stops the node: continuing would serve wrong data.
pub fn apply_finalized(shared: &Shared, block: &LedgerBlock) -> Result<bool, NodeError> {
    let hdr = &block.block().header;
    let (tip, tip_state, cached) = {
        let g = shared.lock();
        if hdr.height <= g.finalized_height() {
            return Ok(false);
        }
        (
            g.finalized_header.clone(),
            g.finalized_state.clone(),
            g.speculative.get(&block.hash()).map(|(_, s)| s.clone()),
        )
    };
    if hdr.height != tip.height + 1 {
        error!(
            height = hdr.height,
            tip = tip.height,
            "finalized block does not extend the tip"
        );
        return Ok(false);
    }
    let state = match cached {
        Some(s) => s,
        None => execute_block(&tip, &tip_state, block.block()).map_err(|source| {
            NodeError::FinalizedBlock {
                height: hdr.height,
                hash: block.hash(),
                source: Box::new(source),
            }
        })?,
    };
    // The guard is a temporary of this statement: `retired` outlives it, so what the commit
    // retired is freed below, unlocked.
    let (n, retired) = shared.lock().commit(block, state);
    drop(retired);
    inc(&shared.counters.tx_committed, n);
    raise(&shared.counters.network_finalized, hdr.height);
    let _ = shared.finalized_tx.send(crate::shared::Finalized {
        block: block.clone(),
    });
    Ok(true)
}

/// `e` and its sources, `: `-separated, for one log line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Receives finalized blocks from marshal, in order, at least once, and tells the epoch
/// orchestrator when one ends an epoch or changes the validator set record.
#[derive(Clone)]
pub struct FinalizedReporter {
    shared: Arc<Shared>,
    epochs: crate::epochs::Mailbox,
}

impl FinalizedReporter {
    /// A reporter over `shared` feeding the orchestrator's `epochs` mailbox.
    pub fn new(shared: Arc<Shared>, epochs: crate::epochs::Mailbox) -> Self {
        Self { shared, epochs }
    }
}

impl Reporter for FinalizedReporter {
    type Activity = Update<LedgerBlock>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        match activity {
            Update::Tip(_, height, _) => {
                raise(&self.shared.counters.network_finalized, height.get())
            }
            Update::Block(block, ack) => {
                if self.shared.halted_error().is_some() {
                    // Stopping: apply nothing more, and acknowledge nothing not applied.
                    return Feedback::Ok;
                }
                let b = LedgerBlock::clone(block.inner());
                match apply_finalized(&self.shared, &b) {
                    Ok(true) => {
                        info!(height = b.block().header.height, txs = b.block().txs.len(), hash = %b.hash(), "finalized");
                        // Derived while this block is the finalized tip: the next block applied
                        // comes from this same task, after this call returns.
                        for m in crate::epochs::on_finalized(&self.shared, &b) {
                            self.epochs.send(m);
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        // Not acknowledged: the block was not applied. The node's driver sees
                        // the halt and exits non-zero with this error.
                        error!(error = %error_chain(&e), "stopping the node");
                        self.shared.halt(e);
                        return Feedback::Ok;
                    }
                }
                ack.acknowledge();
            }
        }
        Feedback::Ok
    }
}

/// Observes one epoch's consensus activity for metrics: views, nullifications (view changes),
/// and each validator's votes (signing liveness).
#[derive(Clone)]
pub struct ActivityReporter {
    shared: Arc<Shared>,
    /// Hex keys of the epoch's participants in signer-index order (sorted by key, as the
    /// engine's participant set is).
    keys: Arc<Vec<String>>,
}

impl ActivityReporter {
    /// A reporter over `shared` for an epoch whose participants are `participants`.
    pub fn new(
        shared: Arc<Shared>,
        participants: Vec<phoenix_ledger_types::crypto::PublicKey>,
    ) -> Self {
        let mut keys: Vec<_> = participants.iter().map(|k| k.to_hex()).collect();
        keys.sort();
        keys.dedup();
        Self {
            shared,
            keys: Arc::new(keys),
        }
    }
    fn vote(&self, signer: u32, view: u64, kind: u8) {
        let Some(key) = self.keys.get(signer as usize) else {
            return;
        };
        let mut g = self.shared.lock();
        // Liveness is kept per key across epochs: a validator that joins gets an entry at its
        // first vote; one that leaves keeps its history.
        let i = match g.liveness.iter().position(|l| &l.key == key) {
            Some(i) => i,
            None => {
                g.liveness.push(crate::shared::Liveness {
                    key: key.clone(),
                    ..Default::default()
                });
                g.liveness.len() - 1
            }
        };
        if let Some(l) = g.liveness.get_mut(i) {
            match kind {
                0 => l.notarizes += 1,
                1 => l.finalizes += 1,
                _ => l.nullifies += 1,
            }
            l.last_view = l.last_view.max(view);
            l.last_seen = Some(std::time::Instant::now());
        }
    }
}

impl Reporter for ActivityReporter {
    type Activity = Activity<Scheme, Digest>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        let c = &self.shared.counters;
        match &activity {
            Activity::Notarize(v) => self.vote(v.signer().get(), v.view().get(), 0),
            Activity::Finalize(v) => self.vote(v.signer().get(), v.view().get(), 1),
            Activity::Nullify(v) => self.vote(v.signer().get(), v.view().get(), 2),
            Activity::Notarization(n) => {
                inc(&c.notarizations, 1);
                raise(&c.view, n.view().get());
            }
            Activity::Nullification(n) => {
                inc(&c.nullifications, 1);
                raise(&c.view, n.view().get());
            }
            Activity::Finalization(f) => {
                inc(&c.finalizations, 1);
                raise(&c.view, f.view().get());
                let view = f.view().get();
                let digest = from_digest(&f.proposal.payload);
                let mut g = self.shared.lock();
                let height = g.speculative.get(&digest).map(|(h, _)| h.height);
                if let Some(h) = height {
                    g.finalized_views.insert(h, view);
                    while g.finalized_views.len() > 100_000 {
                        g.finalized_views.pop_first();
                    }
                }
            }
            Activity::ConflictingNotarize(_)
            | Activity::ConflictingFinalize(_)
            | Activity::NullifyFinalize(_) => {
                inc(&c.faults, 1);
                warn!("equivocation evidence observed");
            }
            Activity::Certification(_) => {}
        }
        Feedback::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::shared_with_auditors;
    use phoenix_ledger_types::crypto::Keypair;
    use phoenix_ledger_types::exec::genesis_block;

    /// A finalized block at height 1 of a chain whose genesis differs from `shared`'s only in its
    /// timestamp (so every header field but the parent hash lines up).
    fn block_of_another_genesis(shared: &Shared) -> LedgerBlock {
        let mut other = shared.lock().genesis.clone();
        other.genesis_time_ms += 1;
        let state = LedgerState::from_genesis(&other).expect("genesis");
        let parent = genesis_block(&other, &state).header;
        let ctx = BlockContext {
            epoch: 0,
            view: 1,
            parent_view: 0,
            proposer: Keypair::from_test_index(9).public(),
            timestamp_ms: parent.timestamp_ms + 1,
        };
        LedgerBlock::new(build_block(&parent, &state, ctx, vec![]).block)
    }

    /// Regression: replaying block data of another genesis (a home whose keys and genesis
    /// `testnet` had replaced) panicked with "finalized block ... failed to execute: bad header:
    /// parent hash mismatch" (exit 101). It is now an error naming the block, and nothing is
    /// applied.
    #[test]
    fn regression_finalized_block_of_another_genesis_is_an_error_not_a_panic() {
        let shared = shared_with_auditors(&[]);
        let b = block_of_another_genesis(&shared);
        let e = apply_finalized(&shared, &b).unwrap_err();
        assert!(
            matches!(e, NodeError::FinalizedBlock { height: 1, .. }),
            "{e}"
        );
        let chain = error_chain(&e);
        assert!(chain.contains("parent hash mismatch"), "{chain}");
        assert!(chain.contains(&b.hash().to_string()), "{chain}");
        assert_eq!(shared.lock().finalized_height(), 0, "nothing applied");
        // A redelivered or stale block is not an error.
        let genesis = shared.lock().genesis_block.clone();
        assert!(!apply_finalized(&shared, &genesis).expect("stale"));
    }

    /// The reporter path of the same defect: a finalized block from consensus that does not
    /// execute halts the node (its driver, `run_node`, exits non-zero with the error) instead of
    /// panicking in marshal's task; the block is not acknowledged, and nothing is applied after.
    #[test]
    fn regression_reporter_halts_instead_of_panicking() {
        use commonware_consensus::marshal::Update;
        use commonware_utils::acknowledgement::Exact;
        let shared = shared_with_auditors(&[]);
        let (mailbox, _rx) = crate::epochs::Mailbox::detached();
        let mut reporter = FinalizedReporter::new(shared.clone(), mailbox);
        let b = block_of_another_genesis(&shared);
        let (ack, waiter) = Exact::handle();
        let digest = to_digest(b.hash());
        let _ = reporter.report(Update::Block(Digested::precomputed(b, digest), ack));
        let halted = shared.halted_error().expect("halted");
        assert!(
            matches!(*halted, NodeError::FinalizedBlock { height: 1, .. }),
            "{halted}"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert!(
            rt.block_on(waiter).is_err(),
            "a block that was not applied was acknowledged"
        );
        let waited = rt.block_on(shared.halted());
        assert!(Arc::ptr_eq(&waited, &halted));
        assert_eq!(shared.lock().finalized_height(), 0);
    }
}
