//! phoenix-ledger-types (not yet implemented).
