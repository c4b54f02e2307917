//! phoenix-state (not yet implemented).
