//! Identity-provider adapters. `dev` is the embedded development IdP; Okta and generic OAuth DCR
//! adapters implement the same port.

pub mod dev;
