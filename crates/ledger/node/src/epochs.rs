//! Epochs: the running consensus follows the validator set recorded in the finalized state.
//!
//! The ledger's epoch `e` holds heights `e*L .. (e+1)*L - 1` (`L` = `genesis.epoch_length`),
//! which is exactly Commonware's [`FixedEpocher`] with length `L`. A governance transaction
//! schedules a validator-set change for a later epoch; the first block of that epoch applies it
//! (`LedgerState::begin_block`). This module makes consensus switch participants at the same
//! boundary, without a restart:
//!
//! - When the boundary block of epoch `e` (height `(e+1)*L - 1`) is finalized and applied, the
//!   finalized state determines epoch `e+1`'s participants ([`participants_at`]): every node
//!   computes the same set from the same finalized block.
//! - The [`Orchestrator`] then registers that set's certificate scheme with [`EpochSchemes`] (the
//!   per-epoch provider marshal verifies finality certificates with), starts a simplex engine for
//!   `e+1` rooted at the boundary block (`Floor::Genesis`), and stops the engine of `e`. Each
//!   epoch's engine talks on its own sub-channel of the votes, certificates and resolver channels
//!   (a [`Muxer`] per channel), so messages of different epochs never mix.
//! - A node that is not a participant runs the epoch's engine with a verify-only scheme: it
//!   casts no votes but follows certificates, so marshal keeps delivering finalized blocks.
//! - Messages for an epoch this node has not entered land in the vote muxer's backup queue; a
//!   peer that is ahead tells us our boundary block is finalized, so we ask marshal to fetch
//!   that finalization from it. This is how a node that was down or slow crosses boundaries.
//! - The p2p peer set follows the state too ([`peer_set`]): the participants of the current and
//!   next epoch (primary) plus validators scheduled to join later (secondary), so a validator
//!   that is about to join can connect and sync before its first epoch.
//!
//! # Guarantees
//! The epoch and participant set consensus uses for a height are a function of the finalized
//! chain alone, so all honest nodes agree on them, including a node that restarts (it replays
//! its finalized blocks, which re-derives every boundary, before consensus starts).

use crate::app::{ActivityReporter, LedgerApp};
use crate::block::{LedgerBlock, to_digest, to_engine_key};
use crate::engine::{NAMESPACE, Timing};
use crate::shared::Shared;
use commonware_consensus::{
    Reporters,
    marshal::{core::Mailbox as MarshalMailbox, standard::Deferred, standard::Standard},
    simplex::{
        self,
        config::{Floor, ForwardPolicy, SkipBudget, SkipPolicy},
        elector::RoundRobin,
        scheme::ed25519::Scheme,
    },
    types::{Epoch, Epocher, FixedEpocher, ViewDelta},
};
use commonware_cryptography::{
    certificate::{Provider as SchemeProvider, Scoped},
    ed25519,
    sha256::Sha256,
};
use commonware_p2p::{
    Address, AddressableManager, AddressableTrackedPeers, Blocker, Receiver, Sender,
    utils::mux::Muxer,
};
use commonware_parallel::Sequential;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage, buffer::paged::CacheRef};
use commonware_utils::{NZDuration, NZU16, NZUsize, ordered::Map, ordered::Set, vec::NonEmptyVec};
use futures::StreamExt;
use futures::channel::mpsc;
use phoenix_ledger_types::crypto::Hash;
use phoenix_ledger_types::exec::{LedgerState, Validator};
use phoenix_ledger_types::tx::{GovOp, Operation};
use rand_core::CryptoRng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tracing::{debug, error, info, warn};

/// How many past epochs' certificate schemes stay registered. Marshal may still need to verify a
/// certificate of a recent epoch (a redelivered boundary finalization, a block it had not yet
/// acknowledged); older ones only cost memory.
const RETAINED_EPOCHS: u64 = 64;

/// The validators that take part in consensus in `epoch`, as seen from `state`, a finalized
/// state at a height of `epoch` or of its boundary block (the last block of `epoch - 1`).
///
/// Active validators with every scheduled change whose effective epoch is at most `epoch`
/// applied (`ValidatorSet::at_epoch`, which `LedgerState::begin_block` also applies), so this is
/// the set the epoch's first block will commit to (`validator_set_hash`). Sorted by key.
pub fn participants_at(state: &LedgerState, epoch: u64) -> Vec<Validator> {
    state.validators().at_epoch(epoch).validators
}

/// Peers the p2p layer should admit while the chain is in `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSet {
    /// Participants of `epoch` and of `epoch + 1`: they drive consensus now or at the next
    /// boundary, so connections to them must be up before it.
    pub primary: Vec<Validator>,
    /// Validators scheduled to join after `epoch + 1`: admitted early so they can sync the chain
    /// before their first epoch (the slow-sync problem of other permissioned chains).
    pub secondary: Vec<Validator>,
}

/// The peer set for `epoch` derived from `state` (see [`PeerSet`]).
pub fn peer_set(state: &LedgerState, epoch: u64) -> PeerSet {
    let mut primary = participants_at(state, epoch);
    for v in participants_at(state, epoch + 1) {
        if !primary.iter().any(|p| p.key == v.key) {
            primary.push(v);
        }
    }
    primary.sort();
    let mut secondary: Vec<Validator> = state
        .validators()
        .pending
        .into_iter()
        .filter_map(|c| {
            c.add.map(|address| Validator {
                key: c.key,
                address,
            })
        })
        .filter(|v| !primary.iter().any(|p| p.key == v.key))
        .collect();
    secondary.sort();
    secondary.dedup_by(|a, b| a.key == b.key);
    PeerSet { primary, secondary }
}

/// The epoch that the block after `height` belongs to: the epoch consensus runs in once `height`
/// is the finalized tip.
pub fn epoch_after(height: u64, epoch_length: u64) -> u64 {
    (height + 1) / epoch_length
}

/// Entering an epoch.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The epoch.
    pub epoch: u64,
    /// Its participants, sorted by key.
    pub participants: Vec<Validator>,
    /// The block its consensus starts from: the boundary block of the previous epoch (the
    /// genesis block for epoch 0).
    pub floor: Hash,
}

/// What the finalized-block path tells the orchestrator.
#[derive(Debug, Clone)]
pub enum Message {
    /// A boundary block was applied: start the next epoch.
    Enter(Transition),
    /// The validator set record changed: admit these peers (`id` is the height of the block
    /// that changed it, the same on every node and increasing, as peer-set ids must be).
    Track {
        /// Peer-set id.
        id: u64,
        /// The peers.
        peers: PeerSet,
    },
}

/// Derives the orchestrator messages a just-applied finalized block implies. Called with the
/// shared state's finalized tip equal to `block` (right after `apply_finalized`).
pub fn on_finalized(shared: &Shared, block: &LedgerBlock) -> Vec<Message> {
    let g = shared.lock();
    let l = g.genesis.epoch_length;
    let height = block.block().header.height;
    debug_assert_eq!(g.finalized_height(), height);
    let next = epoch_after(height, l);
    let mut out = Vec::new();
    let boundary = (height + 1).is_multiple_of(l);
    if boundary {
        out.push(Message::Enter(Transition {
            epoch: next,
            participants: participants_at(&g.finalized_state, next),
            floor: block.hash(),
        }));
    }
    // Only governance transactions and epoch starts change the validator set record.
    let governance = block.block().txs.iter().any(|tx| {
        matches!(
            tx.body.op,
            Operation::Governance(GovOp::Propose { .. } | GovOp::Approve { .. })
        )
    });
    if boundary || governance {
        out.push(Message::Track {
            id: height,
            peers: peer_set(&g.finalized_state, next),
        });
    }
    out
}

/// The orchestrator's inbox. Unbounded because the finalized-block reporter must not block;
/// it carries at most a few messages per finalized block.
#[derive(Clone)]
pub struct Mailbox(mpsc::UnboundedSender<Message>);

impl Mailbox {
    /// Sends a message; a stopped orchestrator (node shutting down) drops it.
    pub fn send(&self, m: Message) {
        let _ = self.0.unbounded_send(m);
    }

    /// A mailbox with no orchestrator behind it, and its receiving end, for tests.
    #[cfg(test)]
    pub(crate) fn detached() -> (Self, mpsc::UnboundedReceiver<Message>) {
        let (tx, rx) = mpsc::unbounded();
        (Self(tx), rx)
    }
}

/// Per-epoch certificate schemes: the [`SchemeProvider`] marshal verifies finality certificates
/// with, replacing a constant provider now that the set changes.
///
/// A node that is a participant of an epoch gets a signing scheme for it; otherwise a
/// verify-only one (it still checks certificates and follows the chain).
#[derive(Clone)]
pub struct EpochSchemes {
    signer: ed25519::PrivateKey,
    schemes: Arc<Mutex<BTreeMap<Epoch, EpochScheme>>>,
}

/// An epoch's scheme and whether this node signs in it.
type EpochScheme = (Arc<Scheme>, bool);

impl std::fmt::Debug for EpochSchemes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochSchemes").finish_non_exhaustive()
    }
}

impl EpochSchemes {
    /// An empty provider for the node whose key is `signer`.
    pub fn new(signer: ed25519::PrivateKey) -> Self {
        Self {
            signer,
            schemes: Arc::default(),
        }
    }

    /// Registers `epoch`'s participants (idempotent: a second registration keeps the first) and
    /// returns its scheme and whether this node signs in it. Drops schemes of epochs more than
    /// [`RETAINED_EPOCHS`] behind.
    pub fn register(&self, epoch: u64, participants: &[Validator]) -> (Arc<Scheme>, bool) {
        let mut g = self.schemes.lock().expect("scheme registry lock");
        let e = Epoch::new(epoch);
        if let Some(s) = g.get(&e) {
            return s.clone();
        }
        let keys = Set::from_iter_dedup(participants.iter().map(|v| to_engine_key(&v.key)));
        let entry = match Scheme::signer(NAMESPACE, keys.clone(), self.signer.clone()) {
            Some(s) => (Arc::new(s), true),
            None => (Arc::new(Scheme::verifier(NAMESPACE, keys)), false),
        };
        g.insert(e, entry.clone());
        let keep = Epoch::new(epoch.saturating_sub(RETAINED_EPOCHS));
        *g = g.split_off(&keep);
        entry
    }

    /// Whether `epoch` has a registered scheme.
    pub fn has(&self, epoch: u64) -> bool {
        self.schemes
            .lock()
            .expect("scheme registry lock")
            .contains_key(&Epoch::new(epoch))
    }
}

impl SchemeProvider for EpochSchemes {
    type Scope = Epoch;
    type Scheme = Scheme;

    fn scoped(&self, scope: Epoch) -> Option<Scoped<Scheme>> {
        let g = self.schemes.lock().expect("scheme registry lock");
        g.get(&scope).map(|(s, signs)| {
            if *signs {
                Scoped::scheme(s.clone())
            } else {
                Scoped::verifier(s.clone())
            }
        })
    }

    // Marshal asks for the "full" scheme only to read an epoch's participant set and certificate
    // codec when it checks a notarized block it fetched; it never signs with it. A verify-only
    // scheme knows the participant set, so a non-member can use it too.
    fn scheme(&self, scope: Epoch) -> Option<Arc<Scheme>> {
        let g = self.schemes.lock().expect("scheme registry lock");
        g.get(&scope).map(|(s, _)| s.clone())
    }
}

/// The consensus application every epoch's engine drives (one instance shared by all epochs, so
/// marshal's per-round state carries across the boundary).
pub type App<E> = Deferred<E, Scheme, LedgerApp, LedgerBlock, FixedEpocher>;

/// Starts and stops per-epoch consensus engines (see the module documentation).
pub struct Orchestrator<E, B, M>
where
    E: Clock + CryptoRng + Spawner + Storage + Metrics + Send + Sync + 'static,
{
    context: E,
    partition: String,
    shared: Arc<Shared>,
    timing: Timing,
    blocker: B,
    manager: M,
    max_peer_set: usize,
    app: App<E>,
    marshal: MarshalMailbox<Scheme, Standard<LedgerBlock>>,
    schemes: EpochSchemes,
    epocher: FixedEpocher,
    page_cache: CacheRef,
    inbox: mpsc::UnboundedReceiver<Message>,
    /// The epoch to enter first (derived from the replayed finalized state) and the peers then.
    initial: (Transition, u64, PeerSet),
}

/// Everything [`Orchestrator::new`] needs.
pub struct OrchestratorConfig<E, B, M>
where
    E: Clock + CryptoRng + Spawner + Storage + Metrics + Send + Sync + 'static,
{
    /// Storage partition prefix of this node.
    pub partition: String,
    /// Shared state (counters, liveness).
    pub shared: Arc<Shared>,
    /// Engine timeouts.
    pub timing: Timing,
    /// Blocks misbehaving peers.
    pub blocker: B,
    /// Tracks the p2p peer set.
    pub manager: M,
    /// Most identities one peer set may hold (the p2p network panics on larger sets).
    pub max_peer_set: usize,
    /// The application (shared across epochs).
    pub app: App<E>,
    /// Marshal, for boundary-finalization hints.
    pub marshal: MarshalMailbox<Scheme, Standard<LedgerBlock>>,
    /// Per-epoch schemes (shared with marshal).
    pub schemes: EpochSchemes,
    /// Epoch lengths.
    pub epocher: FixedEpocher,
    /// The epoch to enter at start, the peer-set id and the peers at start.
    pub initial: (Transition, u64, PeerSet),
}

impl<E, B, M> Orchestrator<E, B, M>
where
    E: Clock + CryptoRng + Spawner + Storage + Metrics + Send + Sync + 'static,
    B: Blocker<PublicKey = ed25519::PublicKey>,
    M: AddressableManager<PublicKey = ed25519::PublicKey>,
{
    /// An orchestrator and the mailbox the finalized-block reporter feeds.
    pub fn new(context: E, cfg: OrchestratorConfig<E, B, M>) -> (Self, Mailbox) {
        let (tx, rx) = mpsc::unbounded();
        (
            Self {
                context,
                partition: cfg.partition,
                shared: cfg.shared,
                timing: cfg.timing,
                blocker: cfg.blocker,
                manager: cfg.manager,
                max_peer_set: cfg.max_peer_set,
                app: cfg.app,
                marshal: cfg.marshal,
                schemes: cfg.schemes,
                epocher: cfg.epocher,
                page_cache: CacheRef::new(NZU16!(4096), NZUsize!(4096)),
                inbox: rx,
                initial: cfg.initial,
            },
            Mailbox(tx),
        )
    }

    /// Runs the orchestrator over the three consensus channels until the node stops.
    pub fn start<S, R>(self, votes: (S, R), certs: (S, R), resolver: (S, R)) -> Handle<()>
    where
        S: Sender<PublicKey = ed25519::PublicKey>,
        R: Receiver<PublicKey = ed25519::PublicKey>,
    {
        let ctx = self.context.child("orchestrator");
        ctx.spawn(move |task| {
            // Spawn muxers and engines from the task's own context so they are its descendants:
            // aborting the orchestrator (node shutdown, a simulated crash) aborts them too, and
            // no engine of a stopped node keeps voting.
            let mut me = self;
            me.context = task;
            me.run(votes, certs, resolver)
        })
    }

    async fn run<S, R>(mut self, votes: (S, R), certs: (S, R), resolver: (S, R))
    where
        S: Sender<PublicKey = ed25519::PublicKey>,
        R: Receiver<PublicKey = ed25519::PublicKey>,
    {
        use commonware_p2p::utils::mux::Builder as _;
        let (mux, mut vote_mux, mut vote_backup) =
            Muxer::builder(self.context.child("vote_mux"), votes.0, votes.1)
                .with_backup()
                .build();
        let _vote_mux = mux.start();
        let (mux, mut cert_mux) = Muxer::new(self.context.child("cert_mux"), certs.0, certs.1);
        let _cert_mux = mux.start();
        let (mux, mut resolver_mux) =
            Muxer::new(self.context.child("resolver_mux"), resolver.0, resolver.1);
        let _resolver_mux = mux.start();

        let (first, id, peers) = self.initial.clone();
        let mut tracked: Option<(u64, PeerSet)> = None;
        self.track(&mut tracked, id, peers);
        let mut current = first.epoch;
        let mut engine = self
            .enter(first, &mut vote_mux, &mut cert_mux, &mut resolver_mux)
            .await;
        let mut last_hint: Option<SystemTime> = None;

        loop {
            let next = {
                let inbox = self.inbox.next();
                let backup = Box::pin(vote_backup.recv());
                match futures::future::select(inbox, backup).await {
                    futures::future::Either::Left((m, _)) => Ok(m),
                    futures::future::Either::Right((b, _)) => Err(b),
                }
            };
            match next {
                Ok(None) => break,
                Ok(Some(Message::Track { id, peers })) => self.track(&mut tracked, id, peers),
                Ok(Some(Message::Enter(t))) => {
                    if t.epoch <= current {
                        debug!(epoch = t.epoch, current, "already in this epoch or later");
                        continue;
                    }
                    let epoch = t.epoch;
                    let new = self
                        .enter(t, &mut vote_mux, &mut cert_mux, &mut resolver_mux)
                        .await;
                    // The old epoch ends at its finalized boundary block; its engine has
                    // nothing left to decide. Peers that missed the boundary finalization
                    // fetch it from marshal (they see our new epoch's messages and ask).
                    if let Some(old) = engine.take() {
                        old.abort();
                    }
                    engine = new;
                    info!(from = current, to = epoch, "entered epoch");
                    current = epoch;
                }
                Err(None) => {
                    warn!("vote muxer backup closed; orchestrator stops");
                    break;
                }
                Err(Some((their_epoch, (from, _)))) => {
                    // A peer votes in an epoch we have not entered. If it is ahead, our epoch's
                    // boundary block is finalized: ask marshal to fetch that finalization from
                    // this peer, which lets us apply it and move on.
                    if their_epoch <= current {
                        continue;
                    }
                    let now = self.context.current();
                    if last_hint.is_some_and(|t| {
                        now.duration_since(t).unwrap_or_default() < Duration::from_millis(250)
                    }) {
                        continue;
                    }
                    last_hint = Some(now);
                    let boundary = self
                        .epocher
                        .last(Epoch::new(current))
                        .expect("fixed epocher covers every epoch");
                    debug!(their_epoch, current, %boundary, ?from, "peer is ahead; fetching our boundary finalization");
                    self.marshal
                        .hint_finalized(boundary, NonEmptyVec::new(from));
                }
            }
        }
        if let Some(e) = engine {
            e.abort();
        }
    }

    /// Tells the p2p layer which peers to admit, unless the set is unchanged or `id` is not
    /// newer than the last one tracked.
    fn track(&mut self, tracked: &mut Option<(u64, PeerSet)>, id: u64, peers: PeerSet) {
        if let Some((last_id, last)) = tracked.as_ref()
            && (*last == peers || id <= *last_id)
        {
            return;
        }
        let to_map = |vs: &[Validator], room: usize| -> Vec<(ed25519::PublicKey, Address)> {
            vs.iter()
                .filter_map(|v| match v.address.parse::<SocketAddr>() {
                    Ok(a) => Some((to_engine_key(&v.key), Address::Symmetric(a))),
                    Err(_) => {
                        warn!(key = %v.key, address = %v.address, "validator address is not host:port; cannot dial it");
                        None
                    }
                })
                .take(room)
                .collect()
        };
        // The network panics on a peer set above its configured size: keep the primaries
        // (current and next participants) and drop early joiners first.
        let primary = to_map(&peers.primary, self.max_peer_set);
        if primary.len() < peers.primary.len() {
            warn!(
                limit = self.max_peer_set,
                "more validators than the p2p peer-set limit; some are not admitted"
            );
        }
        let secondary = to_map(
            &peers.secondary,
            self.max_peer_set.saturating_sub(primary.len()),
        );
        let Ok(primary) = Map::try_from(primary) else {
            warn!("duplicate validator keys in the peer set; not tracked");
            return;
        };
        let secondary = Map::try_from(secondary).unwrap_or_default();
        info!(
            id,
            primary = primary.len(),
            secondary = secondary.len(),
            "tracking peer set"
        );
        let _ = self
            .manager
            .track(id, AddressableTrackedPeers::new(primary, secondary));
        *tracked = Some((id, peers));
    }

    /// Registers the epoch's scheme and starts its engine on fresh sub-channels.
    async fn enter<S: Sender<PublicKey = ed25519::PublicKey>>(
        &mut self,
        t: Transition,
        vote_mux: &mut commonware_p2p::utils::mux::MuxHandle<S>,
        cert_mux: &mut commonware_p2p::utils::mux::MuxHandle<S>,
        resolver_mux: &mut commonware_p2p::utils::mux::MuxHandle<S>,
    ) -> Option<Handle<()>> {
        let c = &self.shared.counters;
        c.epoch.store(t.epoch, std::sync::atomic::Ordering::Relaxed);
        // Views restart at every epoch.
        c.view.store(0, std::sync::atomic::Ordering::Relaxed);
        if t.participants.is_empty() {
            // Governance removed every validator. No quorum can ever form again; starting an
            // engine over an empty set would panic on every start and make the node unusable
            // even for reading, so log and serve the finalized chain as it is.
            error!(
                epoch = t.epoch,
                "epoch has no validators: consensus cannot continue"
            );
            return None;
        }
        let (scheme, signs) = self.schemes.register(t.epoch, &t.participants);
        info!(
            epoch = t.epoch,
            participants = t.participants.len(),
            signs,
            floor = %t.floor,
            "starting consensus for epoch"
        );
        let keys: Vec<_> = t.participants.iter().map(|v| v.key).collect();
        let reporter: Reporters<_, _> = (
            self.app.clone(),
            ActivityReporter::new(self.shared.clone(), keys),
        )
            .into();
        let timing = self.timing;
        let engine = simplex::Engine::new(
            self.context
                .child("simplex")
                .with_attribute("epoch", t.epoch),
            simplex::config::Config {
                scheme: Scheme::clone(&scheme),
                elector: RoundRobin::<Sha256>::default(),
                blocker: self.blocker.clone(),
                automaton: self.app.clone(),
                relay: self.app.clone(),
                reporter,
                strategy: Sequential,
                partition: simplex_partition(&self.partition, t.epoch),
                mailbox_size: NZUsize!(1024),
                epoch: Epoch::new(t.epoch),
                floor: Floor::Genesis(to_digest(t.floor)),
                replay_buffer: NZUsize!(1024 * 1024),
                write_buffer: NZUsize!(1024 * 1024),
                page_cache: self.page_cache.clone(),
                leader_timeout: timing.leader_timeout,
                certification_timeout: timing.certification_timeout,
                timeout_retry: timing.timeout_retry,
                view_retention: ViewDelta::new(1024),
                skip: SkipPolicy::Enabled {
                    timeout: timing.certification_timeout + timing.timeout_retry,
                    budget: SkipBudget::Participants,
                },
                fetch_timeout: NZDuration!(Duration::from_secs(1)),
                fetch_retry_delay: Duration::from_millis(100),
                forward: ForwardPolicy::SilentVoters,
                track_historical_votes: false,
            },
        );
        let votes = vote_mux
            .register(t.epoch)
            .await
            .expect("each epoch is entered once");
        let certs = cert_mux
            .register(t.epoch)
            .await
            .expect("each epoch is entered once");
        let resolver = resolver_mux
            .register(t.epoch)
            .await
            .expect("each epoch is entered once");
        Some(engine.start(votes, certs, resolver))
    }
}

/// The simplex journal partition of `epoch`. Epoch 0 keeps the name the single-epoch engine used,
/// so a node upgraded in place resumes its vote journal instead of starting a blank one (a blank
/// journal could make it vote twice in a view it already voted in).
pub fn simplex_partition(partition: &str, epoch: u64) -> String {
    if epoch == 0 {
        format!("{partition}-simplex")
    } else {
        format!("{partition}-simplex-{epoch}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_ledger_types::crypto::Keypair;
    use phoenix_ledger_types::exec::{Genesis, GenesisAccount};
    use phoenix_ledger_types::tx::{GovAction, Role, TxBody};

    fn v(i: u64) -> Validator {
        Validator {
            key: Keypair::from_test_index(i).public(),
            address: format!("127.0.0.1:{}", 9000 + i),
        }
    }

    /// A state at height 1 after an admin scheduled `changes` (key index, add?, effective epoch).
    fn state_with(changes: &[(u64, bool, u64)]) -> LedgerState {
        let admin = Keypair::from_test_index(50);
        let g = Genesis {
            chain_id: "c".into(),
            genesis_time_ms: 0,
            epoch_length: 10,
            admin_threshold: 1,
            validators: vec![v(1), v(2), v(3)],
            accounts: vec![GenesisAccount {
                key: admin.public(),
                roles: vec![Role::Admin],
            }],
        };
        let mut s = LedgerState::from_genesis(&g).expect("genesis");
        for (nonce, (i, add, effective_epoch)) in changes.iter().enumerate() {
            let action = if *add {
                GovAction::AddValidator {
                    key: v(*i).key,
                    address: v(*i).address,
                    effective_epoch: *effective_epoch,
                }
            } else {
                GovAction::RemoveValidator {
                    key: v(*i).key,
                    effective_epoch: *effective_epoch,
                }
            };
            let tx = TxBody {
                chain_id: "c".into(),
                signer: admin.public(),
                nonce: nonce as u64,
                op: Operation::Governance(GovOp::Propose {
                    id: format!("p{nonce}"),
                    action,
                }),
            }
            .sign(&admin);
            s.apply_tx(&tx, 1).expect("governance tx applies");
        }
        s
    }

    #[test]
    fn participants_match_what_the_epochs_first_block_applies() {
        let s = state_with(&[(4, true, 2), (1, false, 3)]);
        for epoch in 1..5 {
            // The epoch's first block runs begin_block on the boundary block's post-state.
            let mut after = s.clone();
            after.begin_block(epoch * 10);
            assert_eq!(
                participants_at(&s, epoch),
                after.validators().validators,
                "epoch {epoch}"
            );
        }
        assert_eq!(participants_at(&s, 1).len(), 3);
        assert_eq!(participants_at(&s, 2).len(), 4);
        assert_eq!(participants_at(&s, 3).len(), 3);
    }

    #[test]
    fn peer_set_admits_next_epoch_and_later_joiners() {
        let s = state_with(&[(4, true, 2), (5, true, 7)]);
        let p = peer_set(&s, 1);
        assert_eq!(p.primary.len(), 4, "current three plus next epoch's joiner");
        assert_eq!(p.secondary, vec![v(5)]);
        let p = peer_set(&s, 0);
        assert_eq!(p.primary.len(), 3);
        assert_eq!(p.secondary.len(), 2);
    }

    #[test]
    fn epochs_follow_the_fixed_epocher() {
        let l = 20;
        let e = FixedEpocher::new(commonware_utils::NZU64!(20));
        for h in 0..100u64 {
            let containing = e
                .containing(commonware_consensus::types::Height::new(h + 1))
                .expect("covered")
                .epoch()
                .get();
            assert_eq!(epoch_after(h, l), containing, "height {h}");
        }
        assert_eq!(
            e.last(Epoch::new(0)).expect("covered").get(),
            l - 1,
            "the boundary block is the last of the epoch"
        );
    }

    #[test]
    fn schemes_sign_only_where_a_member() {
        let me = Keypair::from_test_index(1);
        let signer = ed25519::PrivateKey::decode(me.seed().to_vec()).expect("seed");
        let p = EpochSchemes::new(signer);
        let (_, signs) = p.register(0, &[v(1), v(2), v(3)]);
        assert!(signs);
        let (_, signs) = p.register(1, &[v(2), v(3), v(4)]);
        assert!(!signs);
        assert!(
            p.scoped(Epoch::new(0))
                .and_then(Scoped::into_scheme)
                .is_some()
        );
        assert!(
            p.scoped(Epoch::new(1))
                .and_then(Scoped::into_scheme)
                .is_none()
        );
        assert!(p.scheme(Epoch::new(1)).is_some());
        assert!(p.scoped(Epoch::new(2)).is_none());
        p.register(RETAINED_EPOCHS + 5, &[v(1)]);
        assert!(!p.has(0), "old epochs are dropped");
    }

    #[test]
    fn genesis_rejects_one_block_epochs() {
        let mut g = Genesis {
            chain_id: "c".into(),
            genesis_time_ms: 0,
            epoch_length: 1,
            admin_threshold: 1,
            validators: vec![v(1)],
            accounts: vec![],
        };
        let e = LedgerState::from_genesis(&g).expect_err("epoch_length 1");
        assert!(e.contains("epoch_length must be at least 2"), "{e}");
        g.epoch_length = 2;
        assert!(LedgerState::from_genesis(&g).is_ok());
    }

    use commonware_codec::DecodeExt as _;
}
