//! phoenix-engine (not yet implemented).
