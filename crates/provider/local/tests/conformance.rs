//! The shared provider conformance suite, against the local provider (one fresh state dir and
//! agent per check).

mod common;

phoenix_provider_api::conformance_tests!(common::LocalFixture::new());
