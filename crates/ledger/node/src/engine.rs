//! Wiring of the consensus engine: marshal + buffered broadcast + backfill resolver, the epoch
//! orchestrator that runs one simplex instance per epoch, and transaction gossip. Generic over
//! the runtime (tokio in production, deterministic in simulation) and over the p2p network
//! (authenticated lookup, or simulated).

use crate::app::{Cadence, FinalizedReporter, LedgerApp, apply_finalized};
use crate::block::{LedgerBlock, to_digest};
use crate::epochs::{self, EpochSchemes, Orchestrator, OrchestratorConfig, Transition};
use crate::error::NodeError;
use crate::shared::Shared;
use commonware_broadcast::buffered;
use commonware_consensus::{
    marshal::{
        self,
        core::{Actor as MarshalActor, Mailbox as MarshalMailbox},
        resolver::p2p as marshal_resolver,
        standard::{Deferred, Standard},
    },
    simplex::scheme::ed25519::Scheme,
    types::{FixedEpocher, ViewDelta},
};
use commonware_cryptography::{Digested, Signer, certificate::Verifier as _, ed25519};
use commonware_p2p::{AddressableManager, Blocker, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage, buffer::paged::CacheRef};
use commonware_storage::archive::{Archive as _, Identifier, immutable};
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize};
use rand_core::CryptoRng;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Namespace for consensus signatures (domain separation from transaction signatures); the light
/// client builds the signed bytes from the same constant.
pub const NAMESPACE: &[u8] = phoenix_ledger_light::cert::NAMESPACE;

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
    /// Most identities the network admits in one peer set (the network panics on a larger
    /// one, so the orchestrator trims to this).
    pub max_peer_set: usize,
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
/// The validator set of each epoch comes from the finalized state (see [`crate::epochs`]); a node
/// whose key is not (yet) a validator follows the chain without signing until governance adds it.
///
/// `manager` is both the peer provider of the broadcast and backfill engines and the p2p peer-set
/// tracker the orchestrator keeps in line with the validator set.
///
/// # Errors
/// What it finds in storage and cannot use: an archive that does not open, a stored block that
/// cannot be read, or one that does not execute on the replayed state (block data of another
/// genesis, e.g. a home whose `genesis.json` was replaced). Nothing is started then.
#[allow(clippy::too_many_arguments)] // Wiring: every argument is a distinct piece.
pub async fn start_validator<E, B, M, S, R>(
    context: E,
    partition: &str,
    signer: ed25519::PrivateKey,
    shared: Arc<Shared>,
    timing: Timing,
    blocker: B,
    manager: M,
    nets: Networks<S, R>,
) -> Result<Started, NodeError>
where
    E: Clock + CryptoRng + Spawner + Storage + Metrics + Send + Sync + 'static,
    B: Blocker<PublicKey = ed25519::PublicKey>,
    M: AddressableManager<PublicKey = ed25519::PublicKey>,
    S: Sender<PublicKey = ed25519::PublicKey>,
    R: Receiver<PublicKey = ed25519::PublicKey>,
{
    let me = signer.public_key();
    let page_cache = CacheRef::new(NZU16!(4096), NZUsize!(4096));
    let mailbox_size = NZUsize!(1024);
    let epoch_length = shared.lock().genesis.epoch_length;
    let epocher = FixedEpocher::new(
        NonZeroU64::new(epoch_length).expect("genesis validation rejects epoch_length < 2"),
    );
    let schemes = EpochSchemes::new(signer);

    // Block broadcast.
    let (buffer_engine, buffer) = buffered::Engine::new(
        context.child("buffer"),
        buffered::Config {
            public_key: me.clone(),
            mailbox_size,
            deque_size: 16,
            priority: false,
            codec_config: (),
            peer_provider: manager.clone(),
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
    .map_err(|source| NodeError::OpenArchive {
        archive: "finalizations",
        source,
    })?;
    let blocks: immutable::Archive<_, _, Arc<LedgerBlock>> = immutable::Archive::init(
        context.child("finalized_blocks"),
        archive_cfg(partition, "blocks", &page_cache, ()),
    )
    .await
    .map_err(|source| NodeError::OpenArchive {
        archive: "finalized blocks",
        source,
    })?;

    // Restore: replay the contiguous finalized chain from storage before consensus starts.
    // Marshal persists a block before reporting it, so this covers everything ever acknowledged.
    // Every boundary on the way re-derives that epoch's validator set, exactly as when the
    // block was first finalized, so marshal can verify certificates of recent epochs.
    let genesis = shared.lock().genesis_block.clone();
    let mut current = Transition {
        epoch: 0,
        participants: shared.lock().finalized_state.validators().validators,
        floor: genesis.hash(),
    };
    schemes.register(0, &current.participants);
    let mut replayed = 0u64;
    loop {
        let next = shared.lock().finalized_height() + 1;
        match blocks.get(Identifier::Index(next)).await {
            Ok(Some(b)) => {
                if !apply_finalized(&shared, &b)? {
                    break;
                }
                for m in epochs::on_finalized(&shared, &b) {
                    if let epochs::Message::Enter(t) = m {
                        schemes.register(t.epoch, &t.participants);
                        current = t;
                    }
                }
                replayed += 1;
            }
            Ok(None) => break,
            Err(source) => {
                return Err(NodeError::ReadBlock {
                    height: next,
                    source,
                });
            }
        }
    }
    let (tip, peers) = {
        let g = shared.lock();
        (
            g.finalized_height(),
            epochs::peer_set(&g.finalized_state, current.epoch),
        )
    };
    if replayed > 0 {
        info!(
            replayed,
            height = tip,
            epoch = current.epoch,
            "restored finalized chain"
        );
    }

    let genesis_digest = to_digest(genesis.hash());
    let (marshal_actor, marshal_mailbox, _floor) = MarshalActor::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: schemes.clone(),
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

    // The marshal wrapper re-proposes an epoch's last block until the next epoch's engine takes
    // over, so no block is built past a boundary.
    let app = LedgerApp::new(shared.clone(), timing.cadence);
    let deferred = Deferred::new(
        context.child("deferred"),
        app,
        marshal_mailbox.clone(),
        epocher.clone(),
    );

    let resolver = marshal_resolver::init(
        context.child("backfill"),
        marshal_resolver::Config {
            public_key: me.clone(),
            peer_provider: manager.clone(),
            blocker: blocker.clone(),
            mailbox_size,
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        nets.backfill,
    );

    let (orchestrator, epochs_mailbox) = Orchestrator::new(
        context.child("epochs"),
        OrchestratorConfig {
            partition: partition.to_string(),
            shared: shared.clone(),
            timing,
            blocker,
            manager,
            max_peer_set: nets.max_peer_set,
            app: deferred,
            marshal: marshal_mailbox.clone(),
            schemes,
            epocher,
            initial: (current, tip, peers),
        },
    );

    // Start marshal before consensus so it can take consensus' replayed events.
    let mut handles = vec![buffer_engine.start(nets.broadcast)];
    handles.push(marshal_actor.start(
        FinalizedReporter::new(shared.clone(), epochs_mailbox),
        buffer,
        resolver,
    ));
    handles.push(orchestrator.start(nets.votes, nets.certs, nets.resolver));
    handles.push(crate::gossip::start(
        context.child("gossip"),
        shared,
        nets.txs,
    ));
    Ok(Started {
        marshal: marshal_mailbox,
        handles,
    })
}
