//! Okta: event hook deliveries (shared/src/inbound/okta_hook.rs) and System Log pages
//! (shared/src/idp/okta `Okta::system_log`), both mapped event by event by
//! `inbound::okta_events`.

use crate::support::keep;
use serde_json::Value;
use shared::inbound::{okta_events, okta_hook};

/// Input: the body of an event hook delivery (`POST`), read as `okta_hook::handle` reads it
/// once the `Authorization` value matched: size limit, JSON, `data.events`, then each event.
pub fn okta_hook(body: &[u8]) {
    if body.len() > okta_hook::MAX_BODY_BYTES {
        return;
    }
    let Ok(delivery) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let Some(events) = delivery["data"]["events"].as_array() else {
        return;
    };
    events_of(events);
}

/// Input: `<rel="next" link target>\n<page body>`. The page is read as `Okta::system_log`
/// reads an answer of `GET /api/v1/logs`: a JSON array of events, each mapped, and the
/// `after` cursor taken from the next link. (Splitting the `Link` header itself,
/// `next_link`, is private to the Okta adapter and not reached here.)
pub fn okta_system_log(data: &[u8]) {
    let (link, body) = crate::support::split_line(data);
    if let Some(link) = crate::support::header_value(link) {
        let after = url::Url::parse(link).ok().and_then(|url| {
            url.query_pairs()
                .find(|(k, _)| k == "after")
                .map(|(_, v)| v.into_owned())
        });
        keep(after);
    }
    let Ok(events) = serde_json::from_slice::<Vec<Value>>(body) else {
        return;
    };
    events_of(&events);
}

fn events_of(events: &[Value]) {
    for event in events {
        match okta_events::received(event) {
            Ok(received) => {
                keep(received);
            }
            Err(e) => {
                keep(e.to_string());
            }
        }
    }
}
