//! The conformance suite against SQLite (always runs).

phoenix_state::conformance_tests!(phoenix_state::conformance::SqliteHarness::new());
