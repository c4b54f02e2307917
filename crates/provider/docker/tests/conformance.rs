//! The shared provider conformance suite against a real Docker Engine (one fixture per check;
//! skipped with a printed reason when no engine can be reached, unless
//! `PHOENIX_REQUIRE_DOCKER=1`).

mod common;

phoenix_provider_api::conformance_tests!(common::DockerFixture::new());
