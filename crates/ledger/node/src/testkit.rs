//! Fixtures shared by this crate's unit tests.

use crate::shared::Shared;
use phoenix_ledger_types::crypto::{Hash, Keypair};
use phoenix_ledger_types::exec::{Genesis, GenesisAccount, Validator};
use phoenix_ledger_types::tx::{AuditRecord, Operation, Outcome, Role, Transaction, TxBody};
use std::sync::Arc;

/// Chain id of the fixtures.
pub(crate) const CHAIN: &str = "c";

/// A node's shared state at genesis on chain [`CHAIN`]: one validator (test key 9, which is also
/// this node) and `auditors` holding the auditor role.
pub(crate) fn shared_with_auditors(auditors: &[&Keypair]) -> Arc<Shared> {
    let validator = Keypair::from_test_index(9).public();
    let g = Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 0,
        epoch_length: 100,
        admin_threshold: 1,
        validators: vec![Validator {
            key: validator,
            address: "x".into(),
        }],
        accounts: auditors
            .iter()
            .map(|k| GenesisAccount {
                key: k.public(),
                roles: vec![Role::Auditor],
            })
            .collect(),
    };
    Shared::new(g, validator)
}

/// An audit record signed by `k` with `nonce`, on chain [`CHAIN`]: record `nonce + 1` of fleet
/// `f`'s chain (so records of different nonces never conflict).
pub(crate) fn audit_tx(k: &Keypair, nonce: u64) -> Transaction {
    TxBody {
        chain_id: CHAIN.into(),
        signer: k.public(),
        nonce,
        op: Operation::Audit(AuditRecord {
            actor: "t".into(),
            fleet: "f".into(),
            seq: nonce + 1,
            hash: Hash::of(&[&k.public().0, &nonce.to_be_bytes()]),
            revision: 0,
            plan_hash: Hash::ZERO,
            step: "s".into(),
            outcome: Outcome::Started,
            detail: String::new(),
        }),
    }
    .sign(k)
}
