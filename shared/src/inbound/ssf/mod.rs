//! Shared Signals push receiver: a transmitter POSTs one Security Event Token (SET, RFC 8417) per
//! request as `application/secevent+jwt` (RFC 8935 push delivery, as profiled by OpenID Shared
//! Signals 1.0). Steward answers 202 with an empty body when the SET is valid, or 400 with the
//! RFC 8935 §2.3 error object `{"err": ..., "description": ...}`.
//!
//! A SET is valid when, in this order: the configured `Authorization` value was presented; the
//! body is a compact JWS of at most [`MAX_BODY_BYTES`]; its `alg` is asymmetric (`none` and the
//! HMAC algorithms are refused before anything else); its `typ` is `secevent+jwt`; it verifies
//! with a key of the transmitter's JWKS fit for that `alg`; `iss` is the transmitter, `aud`
//! names Steward; `iat` is within [`SsfSettings::max_age`] (and not in the future beyond
//! [`SsfSettings::future_skew`]); it has a `jti` not accepted before and an `events` object.
//!
//! CAEP session-revoked and credential-change, RISC credential-compromise and account-disabled
//! become [`Signal::Risk`]; other event types of a valid SET are recorded without a signal.
//! Descriptions never contain the token.
//!
//! Wiring: [`SsfSettings::from_env`] (or [`SsfSettings::new`]) once, [`SsfReceiver::new`] once per
//! process (it caches the JWKS), then [`handle`] for each POST.

mod events;
mod receiver;
mod settings;

use events::*;
pub use receiver::*;
pub use settings::*;

use super::{Headers, Reply};
use crate::Engine;
use crate::audit;
use crate::engine::EngineError;
use crate::intake::{self, Received};
use crate::jwks::{ACCEPTED_ALGS, KeyError, Keys, VerifyKey, json_object, shown};
pub use crate::jwks::{
    DEFAULT_JWKS_MIN_REFRESH, JWKS_FETCH_TIMEOUT, JWKS_TTL, JwksSource, MAX_JWKS_BYTES,
};
use crate::secret::Secret;
use crate::signal::{RiskKind, Signal};
use chrono::{DateTime, Utc};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use statemachines::Actor;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The media type of a pushed SET (RFC 8417 §8.2, RFC 8935 §2.1).
pub const CONTENT_TYPE: &str = "application/secevent+jwt";
/// Bodies above this are refused unread: real SETs are a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The SET's age limit unless configured ([`SsfSettings::max_age`]).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// How far in the future an `iat` may be (the transmitter's clock runs ahead).
pub const DEFAULT_FUTURE_SKEW: Duration = Duration::from_secs(60);
/// The `remember_inbound` source under which accepted `jti`s are kept.
pub const JTI_SOURCE: &str = "ssf-jti";
/// How long an accepted `jti` is remembered; far longer than any accepted age, so a replay is
/// refused as a replay rather than only as stale.
pub const JTI_WINDOW: Duration = intake::DEDUPE_WINDOW;
/// Longer `jti`s are refused (they become storage keys).
pub const MAX_JTI_LEN: usize = 256;

/// CAEP 1.0 §3.1.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP 1.0 §3.3.
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// RISC 1.0 §2.7.
pub const CREDENTIAL_COMPROMISE: &str =
    "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";
/// RISC 1.0 §2.3.
pub const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
/// RISC 1.0 §2.11, deprecated in favour of [`SESSION_REVOKED`] and read as the same signal.
pub const RISC_SESSIONS_REVOKED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked";

/// Environment variables of [`SsfSettings::from_env`].
pub const ISSUER_ENV: &str = "STEWARD_SSF_ISSUER";
pub const AUDIENCE_ENV: &str = "STEWARD_SSF_AUDIENCE";
pub const JWKS_URL_ENV: &str = "STEWARD_SSF_JWKS_URL";
pub const JWKS_FILE_ENV: &str = "STEWARD_SSF_JWKS_FILE";
pub const AUTHORIZATION_ENV: &str = "STEWARD_SSF_AUTHORIZATION";
pub const MAX_AGE_ENV: &str = "STEWARD_SSF_MAX_AGE";

/// The RFC 8935 §2.4 error codes (IANA "Security Event Token Error Codes") Steward answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetErr {
    /// The body is not a SET Steward accepts (media type, size, shape, `typ`, claims, age,
    /// replay).
    InvalidRequest,
    /// The signing key or algorithm is unacceptable (HMAC, unknown `kid`, wrong key type).
    InvalidKey,
    /// `iss` is not the configured transmitter.
    InvalidIssuer,
    /// `aud` does not name Steward.
    InvalidAudience,
    /// The transmitter could not be authenticated: no or wrong `Authorization`, an unsigned SET,
    /// a signature that does not verify.
    AuthenticationFailed,
}

impl SetErr {
    pub fn code(self) -> &'static str {
        match self {
            SetErr::InvalidRequest => "invalid_request",
            SetErr::InvalidKey => "invalid_key",
            SetErr::InvalidIssuer => "invalid_issuer",
            SetErr::InvalidAudience => "invalid_audience",
            SetErr::AuthenticationFailed => "authentication_failed",
        }
    }
}

impl std::fmt::Display for SetErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a pushed SET was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Refused for good: answered 400 with the RFC 8935 error object; the transmitter must not
    /// retry it.
    #[error("{err}: {description}")]
    Refused { err: SetErr, description: String },
    /// Could not be checked now (the transmitter's keys are unreachable, or a new `kid` arrived
    /// while reloads are rate-limited): answered 503 so the transmitter retries.
    #[error("SET not checked yet: {0}")]
    Unavailable(String),
}

fn refuse(err: SetErr, description: impl Into<String>) -> Rejected {
    Rejected::Refused {
        err,
        description: description.into(),
    }
}

impl Rejected {
    /// The answer for the transmitter.
    pub fn reply(&self) -> Reply {
        match self {
            Rejected::Refused { err, description } => {
                Reply::json(400, json!({"err": err.code(), "description": description}))
            }
            Rejected::Unavailable(why) => Reply::json(503, json!({"description": why})),
        }
    }
}

/// A SET that passed every check, mapped for [`intake::accept`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedSet {
    pub jti: String,
    pub issued_at: DateTime<Utc>,
    /// One per member of `events`; ids are the `jti`, or `jti#<event type>` when the SET carries
    /// several events.
    pub events: Vec<Received>,
}

/// Handles one push request: 202 with an empty body when the SET is valid and new, the RFC 8935
/// error object otherwise. Every refusal is audited and changes nothing else. `Err` only when
/// storage is unreachable (the transmitter retries).
pub async fn handle(
    engine: &Engine,
    receiver: &SsfReceiver,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Reply, EngineError> {
    let now = engine.clock.now();
    let set = match receiver.verify(headers, body, now).await {
        Ok(set) => set,
        Err(rejected) => return refused(engine, rejected).await,
    };
    accept_verified(engine, set).await
}

/// What an audit record of a refused push names as refused.
pub const REFUSED: &str = "Shared Signals SET";

/// [`handle`] after the caller verified the SET itself ([`SsfReceiver::verify`]), as a caller
/// with its own bounded refusal recorder does, so a flood of forged SETs does not write one
/// audit record each.
pub async fn accept_verified(engine: &Engine, set: VerifiedSet) -> Result<Reply, EngineError> {
    // Accept first, then remember the jti: `accept` is idempotent per event id, so a crash in
    // between loses nothing (the transmitter's retry is accepted as new, recorded once), and a
    // SET redelivered after its 202 is the replay refused below, its events already recorded.
    intake::accept(engine, set.events).await?;
    if !engine
        .store
        .remember_inbound(JTI_SOURCE, &set.jti, JTI_WINDOW)
        .await?
    {
        let replay = refuse(
            SetErr::InvalidRequest,
            format!(
                "SET jti `{}` was already accepted (replay)",
                shown(&set.jti)
            ),
        );
        return refused(engine, replay).await;
    }
    Ok(Reply::empty(202))
}

async fn refused(engine: &Engine, rejected: Rejected) -> Result<Reply, EngineError> {
    let why = rejected.to_string();
    tracing::warn!(why, "Shared Signals push refused");
    engine
        .store
        .append_audit(vec![audit::refusal(
            REFUSED,
            &Actor::System,
            None,
            None,
            &why,
            engine.clock.now(),
        )])
        .await?;
    Ok(rejected.reply())
}
