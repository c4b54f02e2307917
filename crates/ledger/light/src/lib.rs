//! Phoenix ledger light client: checks what an edge site is told about the ledger without
//! running a node.
//!
//! - [`trust`]: what it starts from, the network's genesis or a [`Checkpoint`] (a validator set,
//!   its epoch, and a certified height and header hash);
//! - [`cert`]: finality certificates (a quorum, 2f+1, of the epoch's validators' ed25519 finalize
//!   votes), checked against the trusted set without the consensus library;
//! - [`proof`]: audit-record, state-entry and checkpoint proofs, in JSON and a compact binary
//!   encoding;
//! - [`client`]: [`LightClient`], which follows certified validator-set changes (each the last
//!   block of an epoch, certified by that epoch's set, committing to the next set) and verifies
//!   proofs;
//! - [`error`]: [`LightError`], one variant per reason to refuse (tampered record, wrong
//!   validator set, too few signatures, stale epoch, ...).
//!
//! No I/O, no clock, no consensus library, no async runtime: it depends on
//! `phoenix-ledger-types` (hashes, headers, the audit log, the state trie; itself pure) and
//! `serde`, so it builds for an edge device. Getting a proof is the caller's business
//! (`phoenix ledger prove ...`, or `GET /v1/proof/audit/{fleet}/{seq}` on any node).
//!
//! ```
//! use phoenix_ledger_light::{LightClient, Trust, proof::AuditProof, testing::{TestSet, header}};
//! use phoenix_ledger_types::{crypto::Hash, mlog::{MerkleLog, audit_leaf}};
//!
//! // A network of four validators whose audit log holds three records.
//! let set = TestSet::new(1, 4);
//! let genesis = set.genesis("edge-demo", 100);
//! let mut log = MerkleLog::new();
//! for seq in 1..=3 {
//!     log.push(audit_leaf("core", seq, &Hash([seq as u8; 32])));
//! }
//! let h = header("edge-demo", 100, 7, set.hash(), set.hash(), 3, log.root(), Hash::ZERO);
//! let proof = AuditProof {
//!     changes: vec![],
//!     certificate: set.certify(0, h.view, &h.hash()),
//!     header: h.compact(),
//!     fleet: "core".into(),
//!     seq: 2,
//!     hash: Hash([2; 32]),
//!     index: 1,
//!     path: log.prove(1, 3).unwrap(),
//! };
//! let mut client = LightClient::new(Trust::from_genesis(&genesis).unwrap());
//! let proven = client.verify_audit(&proof).unwrap();
//! assert_eq!((proven.fleet.as_str(), proven.seq, proven.block.height), ("core", 2, 7));
//!
//! let mut tampered = proof.clone();
//! tampered.hash = Hash([9; 32]);
//! assert!(matches!(
//!     client.verify_audit(&tampered),
//!     Err(phoenix_ledger_light::LightError::TamperedRecord { .. })
//! ));
//! ```

pub mod cert;
pub mod client;
pub mod error;
pub mod proof;
pub mod testing;
pub mod trust;

pub use client::{LightClient, Proven};
pub use error::LightError;
pub use proof::Proof;
pub use trust::{Checkpoint, Trust};
