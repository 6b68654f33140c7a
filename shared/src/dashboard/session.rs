//! A signed-in browser: the session cookie, its expiry, the anti-forgery token and the origin
//! check every form POST passes before it becomes an API call.

use super::Dashboard;
use crate::http::{ApiError, App, Caller, Credential};
use crate::ports::sessions::Session;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::minutes(30);
/// And after this long whatever the activity.
pub const ABSOLUTE: Duration = Duration::hours(12);
/// Activity is recorded at most this often (one write per person per minute).
const TOUCH_EVERY: Duration = Duration::minutes(1);

/// The person a dashboard action is made for: put on the in-process request to the admin API
/// (a request extension, which nothing from the network can set). The API's authentication
/// takes it as the caller, and the audit trail names the source `dashboard`.
#[derive(Debug, Clone)]
pub struct DashboardCall(pub Caller);

/// The session cookie's name: with the `__Host-` prefix (Secure, no Domain, Path=/) when the
/// dashboard is served over https.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-steward_session"
    } else {
        "steward_session"
    }
}

/// A new random value (32 bytes, base64url): session ids, CSRF tokens, `state`, PKCE verifiers.
pub fn random_token() -> String {
    B64URL.encode(rand::random::<[u8; 32]>())
}

pub fn digest(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a value the browser keeps for `max_age` (`None`: until it closes).
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    secure: bool,
    max_age: Option<i64>,
) -> String {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

/// A new session for `person`, stored; returns the cookie value (shown only to the browser).
pub async fn open(
    dashboard: &Dashboard,
    person: &str,
    now: DateTime<Utc>,
) -> Result<String, ApiError> {
    let id = random_token();
    let session = Session {
        digest: digest(&id),
        person: person.to_string(),
        csrf: random_token(),
        created_at: now,
        seen_at: now,
        expires_at: now + ABSOLUTE,
    };
    dashboard
        .sessions
        .put_session(&session)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(id)
}

/// A signed-in person on a page.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub caller: Caller,
    pub session: Session,
}

impl SignedIn {
    pub fn person(&self) -> &str {
        &self.session.person
    }

    /// The person as the audit trail names an actor.
    pub fn caller_actor(&self) -> statemachines::Actor {
        statemachines::Actor::Person(self.session.person.clone())
    }
}

/// Why a request has no signed-in person.
pub enum NotSignedIn {
    /// No cookie, an unknown or expired session: sign in (again).
    SignIn(String),
    /// The person is no longer active, or the store failed.
    Refused(ApiError),
}

/// The signed-in person of a request: a live session (within its idle and absolute expiry)
/// of a person still active in the directory.
pub async fn signed_in(
    app: &App,
    dashboard: &Dashboard,
    headers: &HeaderMap,
) -> Result<SignedIn, NotSignedIn> {
    let Some(id) = cookie(headers, cookie_name(dashboard.secure())) else {
        return Err(NotSignedIn::SignIn("not signed in".into()));
    };
    let key = digest(id);
    let session = dashboard
        .sessions
        .session(&key)
        .await
        .map_err(|e| NotSignedIn::Refused(ApiError::unavailable(e)))?;
    let Some(session) = session else {
        return Err(NotSignedIn::SignIn(
            "the session is unknown or was ended".into(),
        ));
    };
    let now = app.engine.clock.now();
    if let Err(why) = live(&session, now) {
        let _ = dashboard.sessions.end_session(&key).await;
        return Err(NotSignedIn::SignIn(why.into()));
    }
    let caller = crate::http::auth::active_person(
        app.engine.directory.as_ref(),
        session.person.clone(),
        format!("session {}", &key[..12]),
        Credential::Dashboard,
    )
    .await
    .map_err(|no| NotSignedIn::Refused(ApiError::new(no.status, no.why)))?;
    if now - session.seen_at >= TOUCH_EVERY {
        let _ = dashboard.sessions.touch_session(&key, now).await;
    }
    Ok(SignedIn { caller, session })
}

/// Whether a session may still be used at `now`: not past its absolute end, and seen within
/// the idle window.
pub fn live(session: &Session, now: DateTime<Utc>) -> Result<(), &'static str> {
    if now >= session.expires_at {
        return Err("the session has ended (12 hours after sign-in); sign in again");
    }
    if now - session.seen_at >= IDLE {
        return Err("the session has expired after 30 minutes without use; sign in again");
    }
    Ok(())
}

/// Checks that a form POST comes from a dashboard page of this origin and carries the
/// session's anti-forgery token. The browser's `Sec-Fetch-Site` and `Origin` refuse a
/// cross-site form at once; the token refuses what has neither (an old browser, a script).
pub fn check_form(
    dashboard: &Dashboard,
    parts: &Parts,
    session: &Session,
    presented_csrf: Option<&str>,
) -> Result<(), String> {
    let h = &parts.headers;
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(format!(
            "a {site} form was sent to the dashboard; only its own pages may post"
        ));
    }
    if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && origin != dashboard.public_url
    {
        return Err(format!(
            "a form from {origin} was sent to the dashboard at {}; only its own pages may post",
            dashboard.public_url
        ));
    }
    let Some(presented) = presented_csrf.filter(|c| !c.is_empty()) else {
        return Err("the form has no anti-forgery token; reload the page and try again".into());
    };
    if !bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes())) {
        return Err(
            "the form's anti-forgery token is not this session's; reload the page and try again"
                .into(),
        );
    }
    Ok(())
}

/// The answer to a request that needs a signed-in person: to the sign-in for a page, 401 for
/// a form.
pub fn status_of(no: &NotSignedIn) -> StatusCode {
    match no {
        NotSignedIn::SignIn(_) => StatusCode::UNAUTHORIZED,
        NotSignedIn::Refused(e) => e.status,
    }
}

impl std::fmt::Display for NotSignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotSignedIn::SignIn(why) => f.write_str(why),
            NotSignedIn::Refused(e) => f.write_str(&e.body.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn session(created: DateTime<Utc>) -> Session {
        Session {
            digest: "d".repeat(64),
            person: "ana@example.com".into(),
            csrf: "c".into(),
            created_at: created,
            seen_at: created,
            expires_at: created + ABSOLUTE,
        }
    }

    #[test]
    fn a_session_ends_when_idle_and_at_its_absolute_end_whatever_the_activity() {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap();
        let mut s = session(t0);
        assert!(live(&s, t0 + Duration::minutes(29)).is_ok());
        assert!(live(&s, t0 + IDLE).unwrap_err().contains("30 minutes"));
        // Used every 20 minutes, it still ends 12 hours after sign-in.
        s.seen_at = t0 + ABSOLUTE - Duration::minutes(1);
        assert!(live(&s, t0 + ABSOLUTE - Duration::seconds(1)).is_ok());
        assert!(live(&s, t0 + ABSOLUTE).unwrap_err().contains("12 hours"));
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_unless_on_loopback() {
        let c = set_cookie(cookie_name(true), "v", "/", true, None);
        assert_eq!(
            c,
            "__Host-steward_session=v; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        let c = set_cookie(cookie_name(false), "v", "/", false, Some(0));
        assert_eq!(
            c,
            "steward_session=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        );
    }
}
