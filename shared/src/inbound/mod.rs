//! Inbound edges that peers call over HTTP, independent of how the request arrives (a Lambda
//! function URL / API Gateway event, or the local server): each takes the headers and raw body
//! and returns the [`Reply`] to send.

pub mod okta_events;
pub mod okta_hook;
pub mod okta_log;
pub mod slack;
pub mod ssf;

use serde_json::Value;

/// What to answer: a status and an optional JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self { status, body: None }
    }
}

/// Header lookup, case-insensitive, over whatever header type the caller has.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

/// The header map of the local server (axum) and of Lambda's HTTP events alike.
impl Headers for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

impl Headers for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}
