//! Wiring of the consensus engine: simplex + marshal + buffered broadcast + backfill resolver,
//! plus transaction gossip. Generic over the runtime (tokio in production, deterministic in
//! simulation) and over the p2p network (authenticated lookup, or simulated).

use crate::app::{ActivityReporter, Cadence, FinalizedReporter, LedgerApp, apply_finalized};
use crate::block::{LedgerBlock, to_digest};
use crate::shared::Shared;
use commonware_broadcast::buffered;
use commonware_consensus::{
    Reporters,
    marshal::{
        self,
        core::{Actor as MarshalActor, Mailbox as MarshalMailbox},
        resolver::p2p as marshal_resolver,
        standard::{Deferred, Standard},
    },
    simplex::{
        self,
        config::{Floor, ForwardPolicy, SkipBudget, SkipPolicy},
        elector::RoundRobin,
        scheme::ed25519::Scheme,
    },
    types::{Epoch, FixedEpocher, ViewDelta},
};
use commonware_cryptography::{
    Digested, Signer,
    certificate::{ConstantProvider, Verifier as _},
    ed25519,
    sha256::Sha256,
};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage, buffer::paged::CacheRef};
use commonware_storage::archive::{Archive as _, Identifier, immutable};
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize, ordered::Set};
use rand_core::CryptoRng;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Namespace for consensus signatures (domain separation from transaction signatures).
pub const NAMESPACE: &[u8] = b"phoenix-ledger-consensus";
/// The single epoch the engine runs (see ADR 001: per-epoch reconfiguration is future work).
pub const EPOCH: Epoch = Epoch::zero();

/// P2P channel ids.
pub mod channels {
    /// Consensus votes.
    pub const VOTES: u64 = 0;
    /// Consensus certificates.
    pub const CERTS: u64 = 1;
    /// Consensus resolver (missing certificates).
    pub const RESOLVER: u64 = 2;
    /// Block broadcast.
    pub const BROADCAST: u64 = 3;
    /// Marshal backfill (missing blocks, catch-up).
    pub const BACKFILL: u64 = 4;
    /// Transaction gossip.
    pub const TXS: u64 = 5;
}

/// Largest p2p message: a full block plus framing.
pub const MAX_MESSAGE_SIZE: u32 = 8 * 1024 * 1024;

/// Engine timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Block cadence.
    pub cadence: Cadence,
    /// How long to wait for a leader's proposal before voting to skip the view.
    pub leader_timeout: Duration,
    /// How long to wait for certification.
    pub certification_timeout: Duration,
    /// Retry interval for nullify votes.
    pub timeout_retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self::from_cadence(Cadence::default())
    }
}

impl Timing {
    /// Timeouts derived from a cadence: a leader may wait up to the empty-block interval before
    /// proposing, so the leader timeout must exceed it.
    pub fn from_cadence(cadence: Cadence) -> Self {
        Self {
            cadence,
            leader_timeout: cadence.empty_block_interval + Duration::from_millis(1000),
            certification_timeout: cadence.empty_block_interval + Duration::from_millis(2000),
            timeout_retry: Duration::from_secs(5),
        }
    }
}

/// One network connection, per channel.
pub struct Networks<S, R> {
    /// Votes.
    pub votes: (S, R),
    /// Certificates.
    pub certs: (S, R),
    /// Consensus resolver.
    pub resolver: (S, R),
    /// Block broadcast.
    pub broadcast: (S, R),
    /// Backfill.
    pub backfill: (S, R),
    /// Transaction gossip.
    pub txs: (S, R),
}

/// What a started node hands back.
pub struct Started {
    /// Marshal mailbox: finalized blocks and certificates by height.
    pub marshal: MarshalMailbox<Scheme, Standard<LedgerBlock>>,
    /// Task handles (consensus, marshal, buffer, gossip).
    pub handles: Vec<Handle<()>>,
}

/// Configuration of one immutable archive under `partition`.
fn archive_cfg<C>(
    partition: &str,
    name: &str,
    page_cache: &CacheRef,
    codec_config: C,
) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{partition}-{name}-metadata"),
        freezer_table_partition: format!("{partition}-{name}-freezer-table"),
        freezer_table_initial_size: 65_536,
        freezer_table_resize_frequency: 4,
        freezer_table_resize_chunk_size: 16_384,
        freezer_key_partition: format!("{partition}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{partition}-{name}-freezer-value"),
        freezer_value_target_size: 256 * 1024 * 1024,
        freezer_value_compression: None,
        ordinal_partition: format!("{partition}-{name}-ordinal"),
        items_per_section: NZU64!(65_536),
        codec_config,
        replay_buffer: NZUsize!(1024 * 1024),
        freezer_key_write_buffer: NZUsize!(1024 * 1024),
        freezer_value_write_buffer: NZUsize!(1024 * 1024),
        ordinal_write_buffer: NZUsize!(1024 * 1024),
    }
}

/// Starts a validator: restores state from storage, then runs consensus.
///
/// `partition` prefixes every storage partition, so several nodes can share one simulated disk.
#[allow(clippy::too_many_arguments)] // Wiring: every argument is a distinct piece.
pub async fn start_validator<E, B, P, S, R>(
    context: E,
    partition: &str,
    signer: ed25519::PrivateKey,
    participants: Vec<ed25519::PublicKey>,
    shared: Arc<Shared>,
    timing: Timing,
    blocker: B,
    provider: P,
    nets: Networks<S, R>,
) -> Started
where
    E: Clock + CryptoRng + Spawner + Storage + Metrics + Send + Sync + 'static,
    B: Blocker<PublicKey = ed25519::PublicKey>,
    P: Provider<PublicKey = ed25519::PublicKey>,
    S: Sender<PublicKey = ed25519::PublicKey>,
    R: Receiver<PublicKey = ed25519::PublicKey>,
{
    let me = signer.public_key();
    let participants = Set::from_iter_dedup(participants);
    let scheme = Scheme::signer(NAMESPACE, participants.clone(), signer)
        .expect("this node's key is in the validator set");
    let page_cache = CacheRef::new(NZU16!(4096), NZUsize!(4096));
    let mailbox_size = NZUsize!(1024);

    // Block broadcast.
    let (buffer_engine, buffer) = buffered::Engine::new(
        context.child("buffer"),
        buffered::Config {
            public_key: me.clone(),
            mailbox_size,
            deque_size: 16,
            priority: false,
            codec_config: (),
            peer_provider: provider.clone(),
            strategy: Sequential,
        },
    );

    // Durable archives for finalization certificates and finalized blocks.
    let finalizations = immutable::Archive::init(
        context.child("finalizations_by_height"),
        archive_cfg(
            partition,
            "finalizations",
            &page_cache,
            Scheme::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .expect("open finalization archive");
    let blocks: immutable::Archive<_, _, Arc<LedgerBlock>> = immutable::Archive::init(
        context.child("finalized_blocks"),
        archive_cfg(partition, "blocks", &page_cache, ()),
    )
    .await
    .expect("open block archive");

    // Restore: replay the contiguous finalized chain from storage before consensus starts.
    // Marshal persists a block before reporting it, so this covers everything ever acknowledged.
    let mut replayed = 0u64;
    loop {
        let next = shared.lock().finalized_height() + 1;
        match blocks.get(Identifier::Index(next)).await {
            Ok(Some(b)) => {
                if !apply_finalized(&shared, &b) {
                    break;
                }
                replayed += 1;
            }
            Ok(None) => break,
            Err(e) => panic!("reading finalized block {next}: {e}"),
        }
    }
    if replayed > 0 {
        info!(
            replayed,
            height = shared.lock().finalized_height(),
            "restored finalized chain"
        );
    }

    let genesis = shared.lock().genesis_block.clone();
    let genesis_digest = to_digest(genesis.hash());
    let epocher = FixedEpocher::new(NZU64!(u64::MAX));
    let (marshal_actor, marshal_mailbox, _floor) = MarshalActor::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: ConstantProvider::new(scheme.clone()),
            epocher: epocher.clone(),
            start: marshal::Start::Genesis(Digested::precomputed(genesis, genesis_digest)),
            partition_prefix: format!("{partition}-marshal"),
            mailbox_size,
            view_retention: ViewDelta::new(1024),
            prunable_items_per_section: NZU64!(4096),
            page_cache: page_cache.clone(),
            replay_buffer: NZUsize!(1024 * 1024),
            key_write_buffer: NZUsize!(1024 * 1024),
            value_write_buffer: NZUsize!(1024 * 1024),
            block_codec_config: (),
            max_repair: NZUsize!(32),
            max_pending_acks: NZUsize!(16),
            strategy: Sequential,
        },
    )
    .await;

    let app = LedgerApp::new(shared.clone(), timing.cadence);
    let deferred = Deferred::new(
        context.child("deferred"),
        app,
        marshal_mailbox.clone(),
        epocher,
    );

    let resolver = marshal_resolver::init(
        context.child("backfill"),
        marshal_resolver::Config {
            public_key: me.clone(),
            peer_provider: provider.clone(),
            blocker: blocker.clone(),
            mailbox_size,
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        nets.backfill,
    );

    let reporter: Reporters<_, _> =
        (deferred.clone(), ActivityReporter::new(shared.clone())).into();
    let consensus = simplex::Engine::new(
        context.child("simplex"),
        simplex::config::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker,
            automaton: deferred.clone(),
            relay: deferred,
            reporter,
            strategy: Sequential,
            partition: format!("{partition}-simplex"),
            mailbox_size,
            epoch: EPOCH,
            floor: Floor::Genesis(genesis_digest),
            replay_buffer: NZUsize!(1024 * 1024),
            write_buffer: NZUsize!(1024 * 1024),
            page_cache,
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

    // Start marshal before consensus so it can take consensus' replayed events.
    let mut handles = vec![buffer_engine.start(nets.broadcast)];
    handles.push(marshal_actor.start(FinalizedReporter::new(shared.clone()), buffer, resolver));
    handles.push(consensus.start(nets.votes, nets.certs, nets.resolver));
    handles.push(crate::gossip::start(
        context.child("gossip"),
        shared,
        nets.txs,
    ));
    Started {
        marshal: marshal_mailbox,
        handles,
    }
}
