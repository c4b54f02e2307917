//! phoenix-ledger-node (not yet implemented).
