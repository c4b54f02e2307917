//! phoenix-provider-api (not yet implemented).
