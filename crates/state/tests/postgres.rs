//! The conformance suite against PostgreSQL: runs when `PHOENIX_TEST_POSTGRES_URL` is set
//! (`eval "$(bash .ci/postgres.sh)"`; CI does), otherwise each test prints why it is skipped.

phoenix_state::conformance_tests!(phoenix_state::conformance::PostgresHarness::from_env());
