//! Proofs for light clients (`phoenix-ledger-light`): an audit record's place in the audit log,
//! a state entry under the state root, or a recent block for a checkpoint, each against the
//! latest finalized block that has a stored finality certificate, with the validator-set changes
//! since an epoch.
//!
//! Certificates are the consensus library's, stored by marshal; what a proof carries is the raw
//! ed25519 finalize votes copied out of them ([`light_cert`]), which the light crate verifies
//! without the library (ADR 004).

use crate::block::{LedgerBlock, from_digest};
use crate::shared::Shared;
use commonware_consensus::simplex::{scheme::ed25519::Scheme, types::Finalization};
use commonware_cryptography::sha256::Digest;
use futures::future::BoxFuture;
use phoenix_ledger_light::cert::{FinalityCert, Vote, quorum};
use phoenix_ledger_light::proof::{AuditProof, CheckpointProof, SetChange, StateProof};
use phoenix_ledger_types::block::BlockHeader;
use phoenix_ledger_types::crypto::{Hash, Signature};
use std::sync::Arc;

/// How many finalized blocks below the tip are tried for a stored finality certificate (nearly
/// every block has its own; one finalized only as an ancestor of another has none).
pub const CERT_LOOKBACK: u64 = 16;

/// A finalized block's certificate and, when the block is no longer in memory, the block.
pub type CertSource = Arc<dyn Fn(u64) -> BoxFuture<'static, Option<Certified>> + Send + Sync>;

/// What a [`CertSource`] finds for a height.
#[derive(Debug, Clone)]
pub struct Certified {
    /// The block, if it had to be read from storage (`None` when the caller has it in memory).
    pub block: Option<LedgerBlock>,
    /// Its finality certificate, as a light client reads it.
    pub cert: FinalityCert,
    /// Block hash the certificate finalizes.
    pub finalizes: Hash,
}

/// Why a proof cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Nothing is stored under that name.
    #[error("{0}")]
    NotFound(String),
    /// It exists but cannot be proven yet (not yet in a certified block), or a certificate it
    /// needs is not stored here; another node, or a later try, may serve it.
    #[error("{0}")]
    Unavailable(String),
}

impl ProofError {
    /// Whether asking again later (or another node) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProofError::Unavailable(_))
    }
}

/// The raw votes of a consensus finalization, trimmed to a quorum, in the light client's form.
pub fn light_cert(f: &Finalization<Scheme, Digest>) -> (FinalityCert, Hash) {
    let c = &f.certificate;
    let votes = c
        .signers
        .iter()
        .zip(&c.signatures)
        .filter_map(|(signer, sig)| {
            let bytes: &[u8] = sig.get()?.as_ref();
            Some(Vote {
                signer: signer.get(),
                signature: Signature(bytes.try_into().ok()?),
            })
        })
        .take(quorum(c.signers.len()))
        .collect();
    (
        FinalityCert {
            view: f.proposal.round.view().get(),
            parent_view: f.proposal.parent.get(),
            votes,
        },
        from_digest(&f.proposal.payload),
    )
}

/// The header of finalized block `height` with its certificate, if both are at hand.
async fn certified_at(
    shared: &Shared,
    certs: &CertSource,
    height: u64,
) -> Option<(BlockHeader, FinalityCert)> {
    let c = certs(height).await?;
    let header = match c.block {
        Some(b) => b.block().header.clone(),
        None => shared.lock().recent.get(&height)?.block().header.clone(),
    };
    // A certificate of another block would not verify; do not serve it.
    (header.hash() == c.finalizes).then_some((header, c.cert))
}

/// The latest finalized block (within [`CERT_LOOKBACK`] of the tip) that has a certificate and
/// meets `pred`.
async fn latest_certified(
    shared: &Shared,
    certs: &CertSource,
    pred: impl Fn(&Shared, &BlockHeader) -> bool,
) -> Result<(BlockHeader, FinalityCert), ProofError> {
    let tip = shared.lock().finalized_height();
    if tip == 0 {
        return Err(ProofError::Unavailable(
            "no block is finalized yet beyond genesis".into(),
        ));
    }
    let low = tip.saturating_sub(CERT_LOOKBACK).max(1);
    for h in (low..=tip).rev() {
        if let Some((header, cert)) = certified_at(shared, certs, h).await
            && pred(shared, &header)
        {
            return Ok((header, cert));
        }
    }
    Err(ProofError::Unavailable(format!(
        "none of the finalized blocks {low}..={tip} has a stored finality certificate here"
    )))
}

/// The certified validator-set changes from epoch `since_epoch` on, below `height`.
async fn changes_since(
    shared: &Shared,
    certs: &CertSource,
    since_epoch: u64,
    height: u64,
) -> Result<Vec<SetChange>, ProofError> {
    let (list, l) = {
        let g = shared.lock();
        (g.set_changes.clone(), g.genesis.epoch_length)
    };
    let mut out = Vec::new();
    for c in list
        .into_iter()
        .filter(|c| c.height / l >= since_epoch && c.height < height)
    {
        let (header, certificate) =
            certified_at(shared, certs, c.height).await.ok_or_else(|| {
                ProofError::Unavailable(format!(
                    "the finality certificate of block {} (the end of epoch {}, where the \
                     validator set changed) is not stored here",
                    c.height,
                    c.height / l
                ))
            })?;
        out.push(SetChange {
            header,
            certificate,
            next_validators: c.next,
        });
    }
    Ok(out)
}

/// Proof that fleet `fleet`'s audit record `seq` is on the ledger, with the validator-set
/// changes from `since_epoch` (0: from genesis).
///
/// # Errors
/// [`ProofError::NotFound`] if the record is not in the finalized state;
/// [`ProofError::Unavailable`] if it is not yet in a block with a stored certificate, or a
/// change's certificate is missing.
pub async fn audit_proof(
    shared: &Shared,
    certs: &CertSource,
    fleet: &str,
    seq: u64,
    since_epoch: u64,
) -> Result<AuditProof, ProofError> {
    let entry = shared
        .lock()
        .finalized_state
        .audit_entry(fleet, seq)
        .ok_or_else(|| {
            ProofError::NotFound(format!(
                "no audit record {seq} of fleet {fleet:?} in the finalized state"
            ))
        })?;
    let (header, certificate) = latest_certified(shared, certs, |_, h| h.audit_size > entry.index)
        .await
        .map_err(|e| match e {
            ProofError::Unavailable(why) => ProofError::Unavailable(format!(
                "audit record {seq} of fleet {fleet:?} (block {}) is not in a certified block \
                 yet: {why}",
                entry.height
            )),
            e => e,
        })?;
    let path = shared
        .lock()
        .audit_log
        .prove(entry.index, header.audit_size)
        .ok_or_else(|| {
            ProofError::Unavailable(format!(
                "the audit log here does not reach record {} of {}",
                entry.index, header.audit_size
            ))
        })?;
    let changes = changes_since(shared, certs, since_epoch, header.height).await?;
    Ok(AuditProof {
        changes,
        header: header.compact(),
        certificate,
        fleet: fleet.into(),
        seq,
        hash: entry.record.hash,
        index: entry.index,
        path,
    })
}

/// Proof of state entry `module/key` (or of its absence) under the state root of a recent
/// certified block.
///
/// # Errors
/// [`ProofError::Unavailable`] if no recent block with a stored certificate has its state here.
pub async fn state_proof(
    shared: &Shared,
    certs: &CertSource,
    module: &str,
    key: &str,
    since_epoch: u64,
) -> Result<StateProof, ProofError> {
    let (header, certificate) = latest_certified(shared, certs, |s, h| {
        s.lock().finalized_states.contains_key(&h.height)
    })
    .await?;
    let (value, proof) = {
        let g = shared.lock();
        let state = g.finalized_states.get(&header.height).ok_or_else(|| {
            ProofError::Unavailable("the certified block's state was just dropped; retry".into())
        })?;
        let full = format!("{module}/{key}");
        (
            state.get_raw(module, key).map(<[u8]>::to_vec),
            state.map().prove(full.as_bytes()),
        )
    };
    let changes = changes_since(shared, certs, since_epoch, header.height).await?;
    Ok(StateProof {
        changes,
        header,
        certificate,
        module: module.into(),
        key: key.into(),
        value,
        proof,
    })
}

/// A recent certified block for a checkpoint (not an epoch's last block before a change, whose
/// next set a checkpoint could not name).
///
/// # Errors
/// [`ProofError::Unavailable`] as for the others.
pub async fn checkpoint_proof(
    shared: &Shared,
    certs: &CertSource,
    since_epoch: u64,
) -> Result<CheckpointProof, ProofError> {
    let (header, certificate) = latest_certified(shared, certs, |_, h| {
        h.next_validator_set_hash == h.validator_set_hash
    })
    .await?;
    let changes = changes_since(shared, certs, since_epoch, header.height).await?;
    Ok(CheckpointProof {
        changes,
        header,
        certificate,
    })
}

/// A [`CertSource`] over marshal's stored finalizations and blocks.
pub fn marshal_certs(
    marshal: commonware_consensus::marshal::core::Mailbox<
        Scheme,
        commonware_consensus::marshal::standard::Standard<LedgerBlock>,
    >,
    shared: Arc<Shared>,
) -> CertSource {
    Arc::new(move |h: u64| {
        let marshal = marshal.clone();
        let in_memory = shared.lock().recent.contains_key(&h);
        Box::pin(async move {
            use commonware_consensus::types::Height;
            let f = marshal.get_finalization(Height::new(h)).await?;
            let (cert, finalizes) = light_cert(&f);
            let block = if in_memory {
                None
            } else {
                let b = marshal.get_block(Height::new(h)).await?;
                Some(LedgerBlock::clone(b.inner()))
            };
            Some(Certified {
                block,
                cert,
                finalizes,
            })
        })
    })
}
