//! The conformance suite against PostgreSQL: runs when `PHOENIX_TEST_POSTGRES_URL` is set
//! (`eval "$(bash .ci/postgres.sh)"`; CI does), otherwise each test prints why it is skipped.

phoenix_state::conformance_tests!(phoenix_state::conformance::PostgresHarness::from_env());

/// A connection dropped by the server fails the call in progress with a retryable error, and
/// the next call reconnects.
#[test]
fn reconnects_after_the_server_drops_the_connection() {
    use phoenix_state::StateStore as _;
    let Some(_) = phoenix_state::conformance::PostgresHarness::from_env() else {
        return;
    };
    let url = std::env::var(phoenix_state::conformance::POSTGRES_URL_VAR).unwrap();
    let name = phoenix_state::conformance::unique_fleet("reconnect");
    let separator = if url.contains('?') { '&' } else { '?' };
    let store =
        phoenix_state::PostgresStore::connect(&format!("{url}{separator}application_name={name}"))
            .unwrap();
    store.list_fleets().unwrap();

    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let terminated = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .unwrap();
    assert_eq!(terminated.len(), 1);

    let mut recovered = false;
    for _ in 0..50 {
        match store.list_fleets() {
            Ok(_) => {
                recovered = true;
                break;
            }
            Err(e) => {
                assert!(
                    e.is_retryable(),
                    "a dropped connection must be retryable: {e:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    assert!(recovered, "the store must reconnect");
}
