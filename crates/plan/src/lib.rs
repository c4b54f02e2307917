//! Pure planning over a validated fleet.
