//! Finality certificates: a quorum of the epoch's validators' ed25519 finalize votes on a block,
//! checked without the consensus library.
//!
//! The validators run Commonware simplex with its ed25519 certificate scheme. A finalize vote is
//! an ed25519 signature (ZIP-215 rules, verified here with `ed25519-zebra` as the ledger
//! verifies transactions) over
//!
//! ```text
//! varint(len(ns)) || ns || varint(epoch) || varint(view) || varint(parent_view) || block_hash
//! ```
//!
//! where `ns` is [`NAMESPACE`] followed by `_FINALIZE` and the varints are LEB128 (Commonware's
//! `union_unique` framing of its `Proposal` encoding). A signer is named by its index in the
//! epoch's validator set sorted by key. The node copies the raw votes out of the certificate it
//! stored ([`FinalityCert`]); the node's tests check that certificates made by the consensus
//! library verify here.

use crate::error::LightError;
use phoenix_ledger_types::codec::{Reader, Writer};
use phoenix_ledger_types::crypto::{Hash, Signature, verify_many};
use phoenix_ledger_types::exec::Validator;
use serde::{Deserialize, Serialize};

/// The consensus namespace of the Phoenix ledger: every consensus signature is made under it
/// (the node's engine uses this constant).
pub const NAMESPACE: &[u8] = b"phoenix-ledger-consensus";

const FINALIZE_SUFFIX: &[u8] = b"_FINALIZE";

/// Most votes a certificate may carry (and most validators in a set).
pub const MAX_VALIDATORS: usize = 1024;

/// One validator's finalize vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Index of the signer in the epoch's validator set (sorted by key).
    pub signer: u32,
    /// Its ed25519 signature over [`finalize_message`].
    pub signature: Signature,
}

/// A finality certificate of one block: the consensus round it was finalized in and a quorum of
/// finalize votes. The block's epoch is its header's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalityCert {
    /// The view in which the block was finalized (a boundary block may be finalized in a later
    /// view than it was proposed in, so this is not always the header's view).
    pub view: u64,
    /// The parent view of that proposal.
    pub parent_view: u64,
    /// The votes, by increasing signer index.
    pub votes: Vec<Vote>,
}

/// Quorum of a set of `n` validators: `n - f` with `f = (n - 1) / 3` (2f+1 when `n = 3f+1`).
pub fn quorum(n: usize) -> usize {
    n - n.saturating_sub(1) / 3
}

/// The bytes each validator signs to finalize `block` in round `(epoch, view)` on parent view
/// `parent_view`.
pub fn finalize_message(epoch: u64, view: u64, parent_view: u64, block: &Hash) -> Vec<u8> {
    let ns_len = NAMESPACE.len() + FINALIZE_SUFFIX.len();
    let mut w = Writer::with_capacity(ns_len + 64);
    w.varint(ns_len as u64);
    w.fixed(NAMESPACE);
    w.fixed(FINALIZE_SUFFIX);
    w.varint(epoch);
    w.varint(view);
    w.varint(parent_view);
    w.fixed(&block.0);
    w.finish()
}

impl FinalityCert {
    /// Keeps the first `quorum` votes: more add nothing to what a light client checks, and every
    /// one costs 64 bytes and a signature check.
    pub fn trimmed(mut self, validators: usize) -> Self {
        self.votes.truncate(quorum(validators));
        self
    }

    /// Appends the compact encoding.
    pub fn write(&self, w: &mut Writer) {
        w.varint(self.view);
        w.varint(self.parent_view);
        w.varint(self.votes.len() as u64);
        for v in &self.votes {
            w.varint(u64::from(v.signer));
            w.fixed(&v.signature.0);
        }
    }

    /// Reads the compact encoding.
    ///
    /// # Errors
    /// Malformed bytes, or more than [`MAX_VALIDATORS`] votes.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, LightError> {
        let view = r.varint("certificate view")?;
        let parent_view = r.varint("certificate parent view")?;
        let n = r.varint("vote count")?;
        if n > MAX_VALIDATORS as u64 {
            return Err(LightError::Malformed(format!(
                "{n} votes is more than {MAX_VALIDATORS}"
            )));
        }
        let mut votes = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let signer = r.varint("signer")?;
            let signer = u32::try_from(signer)
                .map_err(|_| LightError::Malformed(format!("signer index {signer}")))?;
            votes.push(Vote {
                signer,
                signature: Signature(r.array("signature")?),
            });
        }
        Ok(FinalityCert {
            view,
            parent_view,
            votes,
        })
    }

    /// Checks that a quorum of `validators` (the set of `epoch`, sorted by key, whose hash is
    /// `set_hash`) finalized `block` at `height`.
    ///
    /// # Errors
    /// [`LightError::BadCertificate`] for a signer outside the set or out of order,
    /// [`LightError::TooFewSignatures`] below a quorum, [`LightError::WrongValidatorSet`] when
    /// no signature verifies under the set's keys, [`LightError::BadSignature`] when some do
    /// and another does not.
    pub fn verify(
        &self,
        validators: &[Validator],
        set_hash: Hash,
        epoch: u64,
        height: u64,
        block: &Hash,
    ) -> Result<(), LightError> {
        let n = validators.len();
        let mut last: Option<u32> = None;
        for v in &self.votes {
            if v.signer as usize >= n {
                return Err(LightError::BadCertificate(format!(
                    "signer {} is outside the {n} validators of epoch {epoch}",
                    v.signer
                )));
            }
            if last.is_some_and(|l| l >= v.signer) {
                return Err(LightError::BadCertificate(
                    "signers must be listed once each, by increasing index".into(),
                ));
            }
            last = Some(v.signer);
        }
        let need = quorum(n);
        if self.votes.len() < need {
            return Err(LightError::TooFewSignatures {
                height,
                got: self.votes.len(),
                need,
                validators: n,
            });
        }
        let msg = finalize_message(epoch, self.view, self.parent_view, block);
        let items: Vec<_> = self
            .votes
            .iter()
            .map(|v| (validators[v.signer as usize].key, &msg[..], v.signature))
            .collect();
        let verdicts = verify_many(&items);
        if verdicts.iter().all(|ok| !ok) {
            return Err(LightError::WrongValidatorSet {
                height,
                epoch,
                detail: format!(
                    "carries {} signatures of which none is by the trusted validators",
                    self.votes.len()
                ),
                trusted_epoch: epoch,
                trusted: set_hash,
            });
        }
        if let Some(i) = verdicts.iter().position(|ok| !ok) {
            let signer = self.votes[i].signer;
            return Err(LightError::BadSignature {
                height,
                epoch,
                view: self.view,
                signer,
                key: validators[signer as usize].key.to_hex(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_two_f_plus_one() {
        assert_eq!(
            [1, 2, 3, 4, 5, 7, 10].map(quorum),
            [1, 2, 3, 3, 4, 5, 7],
            "n - (n-1)/3"
        );
    }

    /// Pins the signed bytes: changing them would make every stored certificate unverifiable.
    #[test]
    fn the_finalize_message_is_pinned() {
        let m = finalize_message(1, 300, 2, &Hash([0xab; 32]));
        let ns = b"phoenix-ledger-consensus_FINALIZE";
        let mut want = vec![ns.len() as u8];
        want.extend_from_slice(ns);
        want.extend_from_slice(&[1, 0xac, 0x02, 2]);
        want.extend_from_slice(&[0xab; 32]);
        assert_eq!(m, want);
    }
}
