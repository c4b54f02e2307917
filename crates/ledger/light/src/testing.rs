//! Signed certificates and headers made from test keys, for tests and benchmarks of light
//! clients without a running network. Never for a real network: the keys are
//! [`Keypair::from_test_index`].

use crate::cert::{FinalityCert, Vote, finalize_message, quorum};
use crate::proof::SetChange;
use phoenix_ledger_types::block::BlockHeader;
use phoenix_ledger_types::crypto::{Hash, Keypair, PublicKey};
use phoenix_ledger_types::exec::{Genesis, Validator, validators_hash};

/// A validator set of test keys, sorted by key as the chain keeps it.
#[derive(Debug, Clone)]
pub struct TestSet {
    /// The keys, in the order of `validators`.
    pub keys: Vec<Keypair>,
    /// The validators.
    pub validators: Vec<Validator>,
}

impl TestSet {
    /// `n` validators from test keys `first..first + n`.
    pub fn new(first: u64, n: usize) -> Self {
        let mut pairs: Vec<(Validator, Keypair)> = (0..n as u64)
            .map(|i| {
                let k = Keypair::from_test_index(first + i);
                (
                    Validator {
                        key: k.public(),
                        address: format!("127.0.0.1:{}", 9000 + first + i),
                    },
                    k,
                )
            })
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let (validators, keys) = pairs.into_iter().unzip();
        Self { keys, validators }
    }

    /// The set's hash, as headers commit to it.
    pub fn hash(&self) -> Hash {
        validators_hash(&self.validators)
    }

    /// A genesis of chain `chain_id` with this set and `epoch_length`.
    pub fn genesis(&self, chain_id: &str, epoch_length: u64) -> Genesis {
        Genesis {
            chain_id: chain_id.into(),
            genesis_time_ms: 0,
            epoch_length,
            admin_threshold: 1,
            validators: self.validators.clone(),
            accounts: vec![],
        }
    }

    /// A certificate of `block` in `epoch` signed by the first `signers` validators.
    pub fn sign(&self, epoch: u64, view: u64, block: &Hash, signers: usize) -> FinalityCert {
        let parent_view = view.saturating_sub(1);
        let msg = finalize_message(epoch, view, parent_view, block);
        FinalityCert {
            view,
            parent_view,
            votes: self.keys[..signers]
                .iter()
                .enumerate()
                .map(|(i, k)| Vote {
                    signer: u32::try_from(i).expect("small set"),
                    signature: k.sign(&msg),
                })
                .collect(),
        }
    }

    /// A certificate of `block` signed by a quorum.
    pub fn certify(&self, epoch: u64, view: u64, block: &Hash) -> FinalityCert {
        self.sign(epoch, view, block, quorum(self.keys.len()))
    }
}

/// A header of chain `chain_id` at `height` (epoch from `epoch_length`), certified by `set` and
/// handing over to `next`, committing to the given audit log and state root. Fields a light
/// client does not read are filled with fixed values.
#[allow(clippy::too_many_arguments)] // A header has this many fields a test sets.
pub fn header(
    chain_id: &str,
    epoch_length: u64,
    height: u64,
    set: Hash,
    next: Hash,
    audit_size: u64,
    audit_root: Hash,
    state_root: Hash,
) -> BlockHeader {
    BlockHeader {
        chain_id: chain_id.into(),
        height,
        parent_hash: Hash::of(&[b"parent", &height.to_be_bytes()]),
        epoch: height / epoch_length,
        view: height + 1,
        parent_view: height,
        proposer: PublicKey([0; 32]),
        timestamp_ms: 1_700_000_000_000 + height,
        tx_root: Hash::ZERO,
        state_root,
        validator_set_hash: set,
        next_validator_set_hash: next,
        audit_size,
        audit_root,
        tx_count: 0,
    }
}

/// A certified change from `from` to `to` at the last block of `epoch`.
pub fn change(
    chain_id: &str,
    epoch_length: u64,
    epoch: u64,
    from: &TestSet,
    to: &TestSet,
) -> SetChange {
    let h = header(
        chain_id,
        epoch_length,
        (epoch + 1) * epoch_length - 1,
        from.hash(),
        to.hash(),
        0,
        Hash::ZERO,
        Hash::ZERO,
    );
    let certificate = from.certify(epoch, h.view, &h.hash());
    SetChange {
        header: h,
        certificate,
        next_validators: to.validators.clone(),
    }
}
