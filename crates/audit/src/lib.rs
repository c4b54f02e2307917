//! phoenix-audit (not yet implemented).
