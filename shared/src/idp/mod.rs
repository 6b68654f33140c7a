//! Identity-provider adapters. `dev` is the embedded development IdP; `okta` (Okta's Management
//! API) and `oauth` (any OAuth 2.0 server with RFC 7591/7592 dynamic client registration)
//! implement the same port.

#[cfg(feature = "embedded")]
pub mod dev;
pub mod oauth;
pub mod okta;
