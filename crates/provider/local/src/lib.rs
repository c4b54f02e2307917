//! phoenix-provider-local (not yet implemented).
