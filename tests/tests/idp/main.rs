//! Identity-provider adapters: one conformance suite for every adapter of the port (the dev IdP,
//! Okta against a local fake that follows Okta's documented API, and the generic OAuth adapter
//! against the npm `oidc-provider` started by tests/run), plus each adapter's own tests.

mod conformance;
mod dev;
mod directory;
mod fake_okta;
mod oauth;
mod okta;
mod system_log;
