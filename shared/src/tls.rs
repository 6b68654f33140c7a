//! The one crypto provider for every TLS connection Steward opens.
//!
//! Slack's client links rustls with ring, so reqwest (built `rustls-no-provider`) and the AWS
//! SDK (built with its `rustls-ring` client) use ring too: one TLS stack, one provider, and no
//! aws-lc-rs in the Lambda binaries. rustls cannot guess a process default when the choice is
//! left to the application, so every place that builds a client calls
//! [`install_crypto_provider`] first.

/// Makes ring the process's rustls provider. Idempotent and cheap: later calls (and a provider
/// another part of the process installed first) leave the choice alone.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
