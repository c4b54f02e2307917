//! Phoenix ledger node: a validator of the Phoenix BFT ledger.
//!
//! - [`engine`]: Commonware wiring (simplex consensus, marshal, buffered broadcast, backfill) and
//!   transaction gossip, generic over runtime and network so the same code runs on tokio with
//!   real sockets and in the deterministic simulator;
//! - [`gossip`]: transaction gossip between validators, with batched signature checks;
//! - [`app`]: block building, verification and finalized-block application;
//! - [`epochs`]: per-epoch consensus engines that follow the validator set in the finalized
//!   state (reconfiguration at epoch boundaries without a restart);
//! - [`shared`]: finalized/speculative state, mempool and counters shared with the API;
//! - [`api`]: the HTTP API (axum) and Prometheus metrics;
//! - [`proofs`]: audit-record, state and checkpoint proofs for light clients
//!   (`phoenix-ledger-light`);
//! - [`replica`]: read replicas, which follow finalized blocks over HTTP, verify every
//!   certificate against its epoch's validator set, and serve the read API without signing;
//! - [`cli`]: `phoenix ledger ...` ([`LedgerCommand`], [`run`]), including `testnet`, `run`, `join`, `tx`
//!   and `bench`;
//! - [`config`]: the node home (`node.json`, `genesis.json`, `validator.key`, `data/`);
//! - [`error`]: [`NodeError`], why a node cannot start or must stop.
//!
//! Only this crate and `phoenix-ledger-types` know the consensus library.

pub mod api;
pub mod app;
pub mod bench;
pub mod bench_replica;
pub mod block;
pub mod cli;
pub mod config;
pub mod engine;
pub mod epochs;
pub mod error;
pub mod gossip;
pub mod http;
pub mod proofs;
pub mod replica;
pub mod shared;
#[cfg(test)]
mod testkit;

pub use cli::{LedgerCommand, TxCommand, run};
pub use error::NodeError;
