//! Phoenix ledger types: what the ledger *is*, independent of how it is replicated.
//!
//! - [`tx`]: ed25519-signed transactions carrying typed operations of the native modules
//!   (governance, identity, provisioning, audit), with chain id and per-account nonce;
//! - [`codec`]: the canonical binary encoding (one encoding per value; decoders reject the rest);
//! - [`block`]: block header (parent hash, transaction root, state root, validator-set hashes,
//!   audit log root, and the consensus context) and block;
//! - [`state`]: the authenticated map behind the state root, with proofs;
//! - [`mlog`]: the append-only Merkle log of audit records behind the audit root, with proofs;
//! - [`exec`]: deterministic execution, genesis, and block building and checking.
//!
//! No I/O, no clock, no consensus library: read replicas and light clients can depend on this
//! crate alone.
//!
//! ```
//! use phoenix_ledger_types::{crypto::Keypair, tx::*, exec::*, crypto::Hash};
//! let admin = Keypair::from_test_index(1);
//! let genesis = Genesis {
//!     chain_id: "doc".into(), genesis_time_ms: 0, epoch_length: 100, admin_threshold: 1,
//!     validators: vec![Validator { key: Keypair::from_test_index(9).public(), address: "127.0.0.1:1".into() }],
//!     accounts: vec![GenesisAccount { key: admin.public(), roles: vec![Role::Auditor] }],
//! };
//! let mut state = LedgerState::from_genesis(&genesis).unwrap();
//! let tx = TxBody {
//!     chain_id: "doc".into(), signer: admin.public(), nonce: 0,
//!     op: Operation::Audit(AuditRecord {
//!         actor: "ci".into(), fleet: "core".into(), seq: 1, hash: Hash([7; 32]),
//!         revision: 3, plan_hash: Hash::ZERO,
//!         step: "apply".into(), outcome: Outcome::Succeeded, detail: String::new(),
//!     }),
//! }.sign(&admin);
//! let bytes = tx.encode();
//! let decoded = Transaction::decode(&bytes).unwrap();
//! assert!(decoded.verify_signature());
//! state.apply_tx(&decoded, 1).unwrap();
//! assert!(state.apply_tx(&decoded, 1).is_err()); // replay
//! assert_eq!(state.audit_entry("core", 1).unwrap().index, 0);
//! ```

pub mod block;
pub mod codec;
pub mod crypto;
pub mod exec;
pub mod mlog;
pub mod state;
pub mod tx;
