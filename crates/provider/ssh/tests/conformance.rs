//! The shared provider conformance suite, against the ssh provider on a real sshd in a network
//! namespace ([`phoenix_provider_ssh::testing`]; skipped with a printed reason unless root with
//! `ip` and `sshd`, or failing when `PHOENIX_REQUIRE_SSH=1`). The checks share one test host,
//! as clients of one real host would; each check uses fleets of its own.

phoenix_provider_api::conformance_tests!(phoenix_provider_ssh::testing::SshFixture::new(
    std::path::Path::new(env!("CARGO_BIN_EXE_phoenix-ssh-remote"))
));
