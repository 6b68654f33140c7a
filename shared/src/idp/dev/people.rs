//! The development IdP as the people's OpenID Connect issuer, so the embedded default needs no
//! outside identity provider: the people of the people file sign in with the device
//! authorization grant (RFC 8628, `steward login`) or the authorization code grant with PKCE
//! (RFC 7636, browsers), and get EdDSA-signed access tokens for [`PEOPLE_AUDIENCE`] that the
//! admin API verifies like any issuer's.
//!
//! A person proves who they are with a password an operator set with `steward people password`
//! (stored as an Argon2id hash, never the password; docs/adr/0023-dev-issuer-passwords.md says
//! why). Five wrong passwords in a row lock the person out for [`LOCKOUT_SECS`]. Device codes,
//! authorization codes and refresh tokens are stored as SHA-256 digests, used once, and expire.

use super::{DevIdp, OAuthError, hash};
use crate::jwks::JwksSource;
use crate::secret::Secret;
use crate::sign_in::IssuerSettings;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The audience of people's tokens: what the admin API expects in `aud`.
pub const PEOPLE_AUDIENCE: &str = "api://steward";
/// The public clients people sign in through (no client secret: they run on people's machines).
pub const PUBLIC_CLIENTS: &[&str] = &["steward-cli", "steward-dashboard"];
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub const DEVICE_AUTHORIZATION_PATH: &str = "/oauth2/v1/device/authorize";
pub const AUTHORIZE_PATH: &str = "/oauth2/v1/authorize";
/// Where a person enters the code `steward login` shows.
pub const VERIFICATION_PATH: &str = "/device";

pub const ACCESS_TOKEN_SECS: i64 = 3600;
pub const REFRESH_TOKEN_SECS: i64 = 12 * 3600;
pub const DEVICE_CODE_SECS: i64 = 600;
pub const POLL_INTERVAL_SECS: i64 = 5;
pub const AUTHORIZATION_CODE_SECS: i64 = 60;
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Wrong passwords in a row before a lockout; also wrong entries of one user code.
pub const MAX_FAILURES: i64 = 5;
pub const LOCKOUT_SECS: i64 = 900;

/// Why a sign-in step was refused, said so the person can act (and audited as such).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInRefused {
    /// Unknown person, no password set, or a wrong password: one answer for all three, so the
    /// form does not reveal who exists.
    #[error("wrong e-mail address or password")]
    WrongPassword,
    #[error("too many wrong passwords: sign-in is locked until {0}")]
    Locked(String),
    #[error("{0} is not an active person of the people file")]
    NotInDirectory(String),
    #[error("the code is unknown or was already used: run `steward login` again")]
    UnknownCode,
    #[error("the code has expired: run `steward login` again")]
    Expired,
    #[error("a password needs at least {MIN_PASSWORD_CHARS} characters")]
    WeakPassword,
    #[error("{0}")]
    BadRequest(String),
    #[error("the sign-in store failed: {0}")]
    Store(String),
}

fn store(e: impl std::fmt::Display) -> SignInRefused {
    SignInRefused::Store(e.to_string())
}

fn server(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::server(e.to_string())
}

/// A device sign-in as stored: status, client, scope, person, expiry, last poll.
type DeviceRow = (String, String, String, Option<String>, i64, Option<i64>);

/// RFC 8628 §3.2: what `steward login` shows and polls with.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// A person's tokens (RFC 6749 §5.1, plus the OpenID Connect `id_token` when `openid` was asked).
#[derive(Debug, Clone, Serialize)]
pub struct PersonTokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    pub scope: String,
}

/// An authorization request (RFC 6749 §4.1.1 with RFC 7636's S256 challenge, which is required).
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
pub struct AuthorizeRequest {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

/// A checked authorization request: where the code goes.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    nonce: Option<String>,
    challenge: String,
}

fn random_code() -> String {
    B64URL.encode(rand::random::<[u8; 32]>())
}

/// Eight letters from an alphabet without vowels or look-alikes (RFC 8628 §6.1), as XXXX-XXXX.
fn user_code() -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let letters: Vec<char> = rand::random::<[u8; 8]>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!(
        "{}-{}",
        letters[..4].iter().collect::<String>(),
        letters[4..].iter().collect::<String>()
    )
}

/// A user code as typed: upper-cased, dashes and spaces dropped, then dashed again.
fn normalise_user_code(typed: &str) -> String {
    let letters: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if letters.len() == 8 {
        format!("{}-{}", &letters[..4], &letters[4..])
    } else {
        letters
    }
}

/// The directory's key for a person: trimmed, lower-cased e-mail.
pub fn normalise_person(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

fn public_client(client_id: Option<&str>) -> Result<String, OAuthError> {
    match client_id.map(str::trim) {
        Some(id) if PUBLIC_CLIENTS.contains(&id) => Ok(id.to_string()),
        Some(id) => Err(OAuthError::invalid_client(format!(
            "`{}` is not a client people sign in with (one of {})",
            crate::jwks::shown(id),
            PUBLIC_CLIENTS.join(", ")
        ))),
        None => Err(OAuthError::invalid_request("client_id is required")),
    }
}

/// A hash to verify against when the person has none, so both answers take as long.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::encode_b64(&[7u8; 16]).expect("16 bytes is a valid salt");
        Argon2::default()
            .hash_password(b"decoy password, never set", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl DevIdp {
    /// How the admin API verifies the tokens this issuer gives people: its own keys, in process.
    pub fn people_issuer(&self) -> IssuerSettings {
        let mut settings = IssuerSettings::new(self.issuer.clone(), PEOPLE_AUDIENCE);
        settings.jwks = Some(JwksSource::Json(self.jwks()));
        settings
    }

    /// Sets (or replaces) a person's password. Whether the person is in the people file is the
    /// caller's check. Ends the person's lockout and refresh tokens: a new password is a new start.
    pub fn set_password(
        &self,
        person: &str,
        password: &Secret,
        now: DateTime<Utc>,
    ) -> Result<(), SignInRefused> {
        if password.expose().chars().count() < MIN_PASSWORD_CHARS {
            return Err(SignInRefused::WeakPassword);
        }
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(store)?;
        let hashed = Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map_err(store)?
            .to_string();
        let person = normalise_person(person);
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(store)?;
        tx.execute(
            "INSERT INTO people_passwords (person, hash, set_at, failures, locked_until) VALUES (?1,?2,?3,0,0)
             ON CONFLICT(person) DO UPDATE SET hash=excluded.hash, set_at=excluded.set_at, failures=0, locked_until=0",
            params![person, hashed, now.to_rfc3339()],
        )
        .map_err(store)?;
        tx.execute("DELETE FROM people_refresh WHERE person=?1", [&person])
            .map_err(store)?;
        tx.commit().map_err(store)
    }

    /// Checks a person's password; returns the normalised person. Counts failures and locks the
    /// person out after [`MAX_FAILURES`] in a row.
    pub fn check_password(
        &self,
        person: &str,
        password: &Secret,
        now: DateTime<Utc>,
    ) -> Result<String, SignInRefused> {
        let person = normalise_person(person);
        let row: Option<(String, i64, i64)> = self
            .db
            .lock()
            .query_row(
                "SELECT hash, failures, locked_until FROM people_passwords WHERE person=?1",
                [&person],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(store)?;
        let Some((stored, failures, locked_until)) = row else {
            // Same work and answer as a wrong password.
            let decoy = PasswordHash::new(decoy_hash()).map_err(store)?;
            let _ = Argon2::default().verify_password(password.expose().as_bytes(), &decoy);
            return Err(SignInRefused::WrongPassword);
        };
        if locked_until > now.timestamp() {
            return Err(SignInRefused::Locked(
                DateTime::<Utc>::from_timestamp(locked_until, 0)
                    .unwrap_or(now)
                    .format("%H:%M:%S UTC")
                    .to_string(),
            ));
        }
        let parsed = PasswordHash::new(&stored).map_err(store)?;
        let ok = Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok();
        let conn = self.db.lock();
        if ok {
            conn.execute(
                "UPDATE people_passwords SET failures=0, locked_until=0 WHERE person=?1",
                [&person],
            )
            .map_err(store)?;
            return Ok(person);
        }
        let failures = failures + 1;
        let locked = if failures >= MAX_FAILURES {
            now.timestamp() + LOCKOUT_SECS
        } else {
            0
        };
        conn.execute(
            "UPDATE people_passwords SET failures=?2, locked_until=?3 WHERE person=?1",
            params![person, if locked > 0 { 0 } else { failures }, locked],
        )
        .map_err(store)?;
        Err(SignInRefused::WrongPassword)
    }

    // ---------- device authorization grant (RFC 8628) ----------

    /// Starts a device sign-in for a public client.
    pub fn start_device(
        &self,
        client_id: Option<&str>,
        scope: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<DeviceAuthorization, OAuthError> {
        let client_id = public_client(client_id)?;
        let scope = scope.unwrap_or("openid email").trim().to_string();
        let device_code = random_code();
        let conn = self.db.lock();
        // Old codes go first, so the table holds only live sign-ins.
        conn.execute(
            "DELETE FROM people_sign_ins WHERE expires_at < ?1",
            [now.timestamp()],
        )
        .map_err(server)?;
        let mut code = user_code();
        for _ in 0..5 {
            let inserted = conn
                .execute(
                    "INSERT OR IGNORE INTO people_sign_ins (code_hash, kind, user_code, client_id, scope, status, attempts, expires_at)
                     VALUES (?1,'device',?2,?3,?4,'pending',0,?5)",
                    params![hash(&device_code), code, client_id, scope, now.timestamp() + DEVICE_CODE_SECS],
                )
                .map_err(server)?;
            if inserted == 1 {
                let verification_uri = format!("{}{VERIFICATION_PATH}", self.issuer);
                return Ok(DeviceAuthorization {
                    device_code,
                    verification_uri_complete: format!("{verification_uri}?user_code={code}"),
                    user_code: code,
                    verification_uri,
                    expires_in: DEVICE_CODE_SECS,
                    interval: POLL_INTERVAL_SECS,
                });
            }
            code = user_code();
        }
        Err(OAuthError::server("could not pick a free user code"))
    }

    /// Binds a pending device sign-in to the person who entered its code (password already
    /// checked). A code entered wrong [`MAX_FAILURES`] times is denied.
    pub fn approve_device(
        &self,
        typed_code: &str,
        person: &str,
        now: DateTime<Utc>,
    ) -> Result<(), SignInRefused> {
        let code = normalise_user_code(typed_code);
        let conn = self.db.lock();
        let row: Option<(String, i64)> = conn
            .query_row(
                "SELECT status, expires_at FROM people_sign_ins WHERE kind='device' AND user_code=?1",
                [&code],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(store)?;
        match row {
            None => Err(SignInRefused::UnknownCode),
            Some((_, expires)) if expires <= now.timestamp() => Err(SignInRefused::Expired),
            Some((status, _)) if status != "pending" => Err(SignInRefused::UnknownCode),
            Some(_) => {
                conn.execute(
                    "UPDATE people_sign_ins SET status='approved', person=?2 WHERE kind='device' AND user_code=?1 AND status='pending'",
                    params![code, normalise_person(person)],
                )
                .map_err(store)?;
                Ok(())
            }
        }
    }

    /// Counts a wrong password entered with a user code; the fifth denies the sign-in.
    pub fn fail_device(&self, typed_code: &str) -> Result<(), SignInRefused> {
        let code = normalise_user_code(typed_code);
        let conn = self.db.lock();
        conn.execute(
            "UPDATE people_sign_ins SET attempts=attempts+1,
               status=CASE WHEN attempts+1 >= ?2 THEN 'denied' ELSE status END
             WHERE kind='device' AND user_code=?1 AND status='pending'",
            params![code, MAX_FAILURES],
        )
        .map_err(store)?;
        Ok(())
    }

    /// Whether a user code names a live, pending sign-in (the verification page asks first).
    pub fn device_pending(&self, typed_code: &str, now: DateTime<Utc>) -> bool {
        let code = normalise_user_code(typed_code);
        self.db
            .lock()
            .query_row(
                "SELECT 1 FROM people_sign_ins WHERE kind='device' AND user_code=?1 AND status='pending' AND expires_at > ?2",
                params![code, now.timestamp()],
                |_| Ok(()),
            )
            .optional()
            .ok()
            .flatten()
            .is_some()
    }

    /// The device code grant: pending, too fast, denied, expired, or the person's tokens (once).
    pub fn device_token(
        &self,
        client_id: Option<&str>,
        device_code: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<PersonTokenResponse, OAuthError> {
        let client_id = public_client(client_id)?;
        let device_code =
            device_code.ok_or_else(|| OAuthError::invalid_request("device_code is required"))?;
        let key = hash(device_code);
        let row: Option<DeviceRow> = {
            let conn = self.db.lock();
            let row = conn
                .query_row(
                    "SELECT status, client_id, scope, person, expires_at, last_poll FROM people_sign_ins WHERE kind='device' AND code_hash=?1",
                    [&key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()
                .map_err(server)?;
            if row.is_some() {
                conn.execute(
                    "UPDATE people_sign_ins SET last_poll=?2 WHERE code_hash=?1",
                    params![key, now.timestamp()],
                )
                .map_err(server)?;
            }
            row
        };
        let Some((status, owner, scope, person, expires, last_poll)) = row else {
            return Err(OAuthError::invalid_grant("unknown or used device_code"));
        };
        if owner != client_id {
            return Err(OAuthError::invalid_grant(
                "the device_code was issued to another client",
            ));
        }
        if expires <= now.timestamp() {
            return Err(OAuthError::code(
                "expired_token",
                "the device_code has expired",
            ));
        }
        match (status.as_str(), person) {
            ("approved", Some(person)) => {
                let used = self
                    .db
                    .lock()
                    .execute(
                        "UPDATE people_sign_ins SET status='used' WHERE code_hash=?1 AND status='approved'",
                        [&key],
                    )
                    .map_err(server)?;
                if used != 1 {
                    return Err(OAuthError::invalid_grant("unknown or used device_code"));
                }
                self.person_tokens(&person, &client_id, &scope, None, now)
            }
            ("denied", _) => Err(OAuthError::code(
                "access_denied",
                "the sign-in was refused (too many wrong passwords)",
            )),
            ("pending", _)
                if last_poll.is_some_and(|t| now.timestamp() - t < POLL_INTERVAL_SECS) =>
            {
                Err(OAuthError::code(
                    "slow_down",
                    "polled faster than the interval",
                ))
            }
            ("pending", _) => Err(OAuthError::code(
                "authorization_pending",
                "the person has not entered the code yet",
            )),
            _ => Err(OAuthError::invalid_grant("unknown or used device_code")),
        }
    }

    // ---------- authorization code grant with PKCE ----------

    /// Checks an authorization request before the sign-in form is shown: a public client, a
    /// redirect back to a loopback address (RFC 8252 §7.3) or to this issuer, and an S256
    /// challenge. Errors here are shown on the page, never sent to an unchecked redirect.
    pub fn check_authorization(
        &self,
        req: &AuthorizeRequest,
    ) -> Result<Authorization, SignInRefused> {
        let bad = |m: &str| SignInRefused::BadRequest(m.to_string());
        let client_id = public_client(req.client_id.as_deref())
            .map_err(|e| SignInRefused::BadRequest(e.error_description))?;
        let redirect = req
            .redirect_uri
            .as_deref()
            .ok_or_else(|| bad("redirect_uri is required"))?;
        let parsed: url::Url = redirect
            .parse()
            .map_err(|_| bad("redirect_uri is not a URL"))?;
        let to_issuer = redirect.starts_with(&format!("{}/", self.issuer));
        let loopback = parsed.scheme() == "http" && crate::jwks::is_loopback(&parsed);
        if !(to_issuer || loopback) || parsed.fragment().is_some() {
            return Err(bad(
                "redirect_uri must be a loopback address (http://127.0.0.1:<port>/…) or this issuer",
            ));
        }
        if req.response_type.as_deref() != Some("code") {
            return Err(bad("response_type must be `code`"));
        }
        let challenge = req
            .code_challenge
            .as_deref()
            .filter(|c| (43..=128).contains(&c.len()))
            .ok_or_else(|| bad("a PKCE code_challenge (RFC 7636) is required"))?;
        if req.code_challenge_method.as_deref() != Some("S256") {
            return Err(bad("code_challenge_method must be S256"));
        }
        Ok(Authorization {
            client_id,
            redirect_uri: redirect.to_string(),
            scope: req.scope.clone().unwrap_or_else(|| "openid email".into()),
            state: req.state.clone(),
            nonce: req.nonce.clone(),
            challenge: challenge.to_string(),
        })
    }

    /// Issues the one-time code for a checked request, bound to the person who signed in.
    pub fn issue_code(
        &self,
        auth: &Authorization,
        person: &str,
        now: DateTime<Utc>,
    ) -> Result<String, SignInRefused> {
        let code = random_code();
        let bound = json!({"challenge": auth.challenge, "nonce": auth.nonce}).to_string();
        self.db
            .lock()
            .execute(
                "INSERT INTO people_sign_ins (code_hash, kind, client_id, scope, redirect_uri, challenge, person, status, attempts, expires_at)
                 VALUES (?1,'code',?2,?3,?4,?5,?6,'approved',0,?7)",
                params![hash(&code), auth.client_id, auth.scope, auth.redirect_uri, bound, normalise_person(person), now.timestamp() + AUTHORIZATION_CODE_SECS],
            )
            .map_err(store)?;
        Ok(code)
    }

    /// The authorization code grant: the code once, from the same client and redirect, with
    /// the verifier of its challenge.
    pub fn code_token(
        &self,
        client_id: Option<&str>,
        code: Option<&str>,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<PersonTokenResponse, OAuthError> {
        let client_id = public_client(client_id)?;
        let code = code.ok_or_else(|| OAuthError::invalid_request("code is required"))?;
        let verifier = verifier
            .ok_or_else(|| OAuthError::invalid_request("code_verifier is required (PKCE)"))?;
        let key = hash(code);
        let row: Option<(String, String, String, String, String, i64)> = {
            let conn = self.db.lock();
            let row = conn
                .query_row(
                    "SELECT client_id, scope, redirect_uri, challenge, person, expires_at FROM people_sign_ins WHERE kind='code' AND code_hash=?1 AND status='approved'",
                    [&key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()
                .map_err(server)?;
            // Used once, whatever follows.
            conn.execute(
                "UPDATE people_sign_ins SET status='used' WHERE code_hash=?1",
                [&key],
            )
            .map_err(server)?;
            row
        };
        let Some((owner, scope, redirect, bound, person, expires)) = row else {
            return Err(OAuthError::invalid_grant("unknown or used code"));
        };
        if expires <= now.timestamp() {
            return Err(OAuthError::invalid_grant("the code has expired"));
        }
        if owner != client_id || redirect_uri != Some(redirect.as_str()) {
            return Err(OAuthError::invalid_grant(
                "the code was issued to another client or redirect_uri",
            ));
        }
        let bound: serde_json::Value = serde_json::from_str(&bound).map_err(server)?;
        let expected = bound["challenge"].as_str().unwrap_or_default();
        let computed = B64URL.encode(Sha256::digest(verifier.as_bytes()));
        if !bool::from(computed.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        self.person_tokens(&person, &client_id, &scope, bound["nonce"].as_str(), now)
    }

    // ---------- refresh tokens ----------

    /// A refresh token, once: it is replaced by the new one it returns. Presenting a used one
    /// again ends every refresh token of that person (a copy is in someone else's hands).
    pub fn refresh(
        &self,
        client_id: Option<&str>,
        refresh_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<PersonTokenResponse, OAuthError> {
        let client_id = public_client(client_id)?;
        let presented = refresh_token
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
        let key = hash(presented);
        let row: Option<(String, String, String, i64, bool)> = self
            .db
            .lock()
            .query_row(
                "SELECT person, client_id, scope, expires_at, used FROM people_refresh WHERE hash=?1",
                [&key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(server)?;
        let Some((person, owner, scope, expires, used)) = row else {
            return Err(OAuthError::invalid_grant("unknown refresh_token"));
        };
        if used {
            self.db
                .lock()
                .execute("DELETE FROM people_refresh WHERE person=?1", [&person])
                .map_err(server)?;
            return Err(OAuthError::invalid_grant(
                "refresh_token already used: every sign-in of this person is ended; sign in again",
            ));
        }
        if owner != client_id {
            return Err(OAuthError::invalid_grant(
                "the refresh_token was issued to another client",
            ));
        }
        if expires <= now.timestamp() {
            return Err(OAuthError::invalid_grant(
                "the refresh_token has expired; sign in again",
            ));
        }
        let marked = self
            .db
            .lock()
            .execute(
                "UPDATE people_refresh SET used=1 WHERE hash=?1 AND used=0",
                [&key],
            )
            .map_err(server)?;
        if marked != 1 {
            return Err(OAuthError::invalid_grant("refresh_token already used"));
        }
        self.person_tokens(&person, &client_id, &scope, None, now)
    }

    /// Whether a person has a password (the people command says so before replacing one).
    pub fn has_password(&self, person: &str) -> Result<bool, SignInRefused> {
        Ok(self
            .db
            .lock()
            .query_row(
                "SELECT 1 FROM people_passwords WHERE person=?1",
                [normalise_person(person)],
                |_| Ok(()),
            )
            .optional()
            .map_err(store)?
            .is_some())
    }

    /// Signs a person's access token (and id token), and stores a new refresh token.
    fn person_tokens(
        &self,
        person: &str,
        client_id: &str,
        scope: &str,
        nonce: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<PersonTokenResponse, OAuthError> {
        let iat = now.timestamp();
        let exp = iat + ACCESS_TOKEN_SECS;
        let access = json!({
            "iss": self.issuer, "sub": person, "aud": PEOPLE_AUDIENCE, "client_id": client_id,
            "email": person, "email_verified": true,
            "iat": iat, "nbf": iat, "exp": exp,
            "jti": hex::encode(rand::random::<[u8; 12]>()),
            "scope": scope,
        });
        let access_token = self.sign("at+jwt", &access)?;
        let id_token = if scope.split_whitespace().any(|s| s == "openid") {
            let mut id = json!({
                "iss": self.issuer, "sub": person, "aud": client_id, "email": person,
                "email_verified": true, "iat": iat, "exp": exp,
            });
            if let Some(n) = nonce {
                id["nonce"] = json!(n);
            }
            Some(self.sign("JWT", &id)?)
        } else {
            None
        };
        let refresh_token = random_code();
        self.db
            .lock()
            .execute(
                "INSERT INTO people_refresh (hash, person, client_id, scope, expires_at, used) VALUES (?1,?2,?3,?4,?5,0)",
                params![hash(&refresh_token), person, client_id, scope, iat + REFRESH_TOKEN_SECS],
            )
            .map_err(server)?;
        Ok(PersonTokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ACCESS_TOKEN_SECS,
            refresh_token,
            id_token,
            scope: scope.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::sqlite::{Db, Durability};
    use std::sync::Arc;

    fn idp() -> (tempfile::TempDir, DevIdp) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("db"), Durability::Wal).unwrap());
        let idp = DevIdp::open(db, &dir.path().join("key.pem"), "http://127.0.0.1:9").unwrap();
        (dir, idp)
    }

    fn pw(s: &str) -> Secret {
        Secret::new(s.to_string())
    }

    #[test]
    fn passwords_are_checked_and_five_wrong_ones_lock_the_person_out() {
        let (_d, idp) = idp();
        let now = Utc::now();
        assert_eq!(
            idp.set_password("Ana@Example.com", &pw("short"), now),
            Err(SignInRefused::WeakPassword)
        );
        idp.set_password(" Ana@Example.com", &pw("correct horse battery"), now)
            .unwrap();
        assert_eq!(
            idp.check_password("ana@example.com", &pw("correct horse battery"), now),
            Ok("ana@example.com".into())
        );
        assert_eq!(
            idp.check_password("bob@example.com", &pw("correct horse battery"), now),
            Err(SignInRefused::WrongPassword),
            "an unknown person gets the same answer as a wrong password"
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                idp.check_password("ana@example.com", &pw("wrong password!"), now),
                Err(SignInRefused::WrongPassword)
            );
        }
        assert!(matches!(
            idp.check_password("ana@example.com", &pw("correct horse battery"), now),
            Err(SignInRefused::Locked(_))
        ));
        let later = now + chrono::Duration::seconds(LOCKOUT_SECS + 1);
        assert!(
            idp.check_password("ana@example.com", &pw("correct horse battery"), later)
                .is_ok()
        );
    }

    #[test]
    fn a_device_code_gives_tokens_once_after_the_person_entered_it() {
        let (_d, idp) = idp();
        let now = Utc::now();
        let d = idp
            .start_device(Some("steward-cli"), Some("openid email"), now)
            .unwrap();
        assert_eq!(
            idp.device_token(Some("steward-cli"), Some(&d.device_code), now)
                .unwrap_err()
                .error,
            "authorization_pending"
        );
        assert_eq!(
            idp.device_token(Some("steward-cli"), Some(&d.device_code), now)
                .unwrap_err()
                .error,
            "slow_down"
        );
        idp.approve_device(
            &d.user_code.to_lowercase().replace('-', " "),
            "ana@example.com",
            now,
        )
        .unwrap();
        let later = now + chrono::Duration::seconds(POLL_INTERVAL_SECS);
        assert_eq!(
            idp.device_token(Some("other"), Some(&d.device_code), later)
                .unwrap_err()
                .error,
            "invalid_client"
        );
        let t = idp
            .device_token(Some("steward-cli"), Some(&d.device_code), later)
            .unwrap();
        assert!(t.id_token.is_some());
        assert_eq!(
            idp.device_token(Some("steward-cli"), Some(&d.device_code), later)
                .unwrap_err()
                .error,
            "invalid_grant",
            "a device code gives tokens once"
        );
        // The refresh token works once; its reuse ends the person's sign-ins.
        let r = idp
            .refresh(Some("steward-cli"), Some(&t.refresh_token), later)
            .unwrap();
        assert!(
            idp.refresh(Some("steward-cli"), Some(&t.refresh_token), later)
                .is_err()
        );
        assert!(
            idp.refresh(Some("steward-cli"), Some(&r.refresh_token), later)
                .is_err(),
            "after a reuse, the newer refresh token is ended too"
        );
    }

    #[test]
    fn five_wrong_entries_deny_a_device_code_and_expired_codes_say_so() {
        let (_d, idp) = idp();
        let now = Utc::now();
        let d = idp.start_device(Some("steward-cli"), None, now).unwrap();
        for _ in 0..MAX_FAILURES {
            idp.fail_device(&d.user_code).unwrap();
        }
        assert_eq!(
            idp.device_token(Some("steward-cli"), Some(&d.device_code), now)
                .unwrap_err()
                .error,
            "access_denied"
        );
        let e = idp.start_device(Some("steward-cli"), None, now).unwrap();
        let late = now + chrono::Duration::seconds(DEVICE_CODE_SECS + 1);
        assert_eq!(
            idp.approve_device(&e.user_code, "ana@example.com", late),
            Err(SignInRefused::Expired)
        );
        assert_eq!(
            idp.device_token(Some("steward-cli"), Some(&e.device_code), late)
                .unwrap_err()
                .error,
            "expired_token"
        );
    }

    #[test]
    fn an_authorization_code_needs_its_verifier_redirect_and_client() {
        let (_d, idp) = idp();
        let now = Utc::now();
        let verifier = "v".repeat(50);
        let challenge = B64URL.encode(Sha256::digest(verifier.as_bytes()));
        let mut req = AuthorizeRequest {
            response_type: Some("code".into()),
            client_id: Some("steward-cli".into()),
            redirect_uri: Some("https://evil.example/cb".into()),
            code_challenge: Some(challenge),
            code_challenge_method: Some("S256".into()),
            ..Default::default()
        };
        assert!(idp.check_authorization(&req).is_err(), "foreign redirect");
        req.redirect_uri = Some("http://127.0.0.1:4567/callback".into());
        let auth = idp.check_authorization(&req).unwrap();
        let code = idp.issue_code(&auth, "ana@example.com", now).unwrap();
        let redirect = Some("http://127.0.0.1:4567/callback");
        assert_eq!(
            idp.code_token(
                Some("steward-cli"),
                Some(&code),
                redirect,
                Some("wrong verifier that is long enough"),
                now
            )
            .unwrap_err()
            .error,
            "invalid_grant"
        );
        // The failed attempt used the code up.
        let code = idp.issue_code(&auth, "ana@example.com", now).unwrap();
        assert!(
            idp.code_token(
                Some("steward-cli"),
                Some(&code),
                redirect,
                Some(&verifier),
                now
            )
            .is_ok()
        );
        assert!(
            idp.code_token(
                Some("steward-cli"),
                Some(&code),
                redirect,
                Some(&verifier),
                now
            )
            .is_err(),
            "a code is used once"
        );
    }
}
