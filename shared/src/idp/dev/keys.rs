//! The development IdP's key credentials: clients that authenticate with RFC 7523 client
//! assertions signed by the agent's own key (`private_key_jwt`), their keys' lifecycle, and the
//! one-time use of assertion and DPoP `jti`s.

use super::{DevIdp, OAuthError, unavailable};
use crate::jwks::parse_jwk;
use crate::ports::idp::{AgentKey, ClientKey, IdpError, TokenBinding};
use chrono::Utc;
use jsonwebtoken::Validation;
use rusqlite::{OptionalExtension, params};
use serde::Deserialize;

/// A client assertion may live at most this long (`exp - now`): its `jti` is remembered that
/// long, so a longer one could be replayed once forgotten.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 600;

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecret,
    PrivateKeyJwt,
    /// RFC 8705 §2.1: the client's certificate from the internal CA, over mutual TLS.
    TlsClientAuth,
}

/// What the IdP keeps about a client's authentication besides its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAuthSettings {
    pub method: AuthMethod,
    pub binding: TokenBinding,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    #[serde(default)]
    jti: Option<String>,
}

fn binding_of(s: &str) -> TokenBinding {
    match s {
        "dpop" => TokenBinding::Dpop,
        "certificate" => TokenBinding::Certificate,
        _ => TokenBinding::None,
    }
}

impl DevIdp {
    /// The client's authentication settings (a client without a row uses a secret, bearer).
    pub(super) fn auth_settings(
        conn: &rusqlite::Connection,
        client_id: &str,
    ) -> rusqlite::Result<ClientAuthSettings> {
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT method, binding FROM idp_client_auth WHERE client_id=?1",
                [client_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match row {
            Some((method, binding)) => ClientAuthSettings {
                method: match method.as_str() {
                    "private_key_jwt" => AuthMethod::PrivateKeyJwt,
                    "tls_client_auth" => AuthMethod::TlsClientAuth,
                    _ => AuthMethod::ClientSecret,
                },
                binding: binding_of(&binding),
            },
            None => ClientAuthSettings {
                method: AuthMethod::ClientSecret,
                binding: TokenBinding::None,
            },
        })
    }

    /// Uses up `jti` (scoped by `scope`) until `exp`; false when it was used already.
    pub(super) fn use_jti(
        conn: &rusqlite::Connection,
        scope: &str,
        jti: &str,
        exp: i64,
        now: i64,
    ) -> rusqlite::Result<bool> {
        conn.execute("DELETE FROM idp_jtis WHERE exp < ?1", [now])?;
        let n = conn.execute(
            "INSERT OR IGNORE INTO idp_jtis (jti, exp) VALUES (?1, ?2)",
            params![format!("{scope}|{jti}"), exp],
        )?;
        Ok(n == 1)
    }

    /// Checks an RFC 7523 client assertion for `client_id` against the client's active keys;
    /// the audience must be the token endpoint (or the issuer). Every failure is the same
    /// `invalid_client` a wrong secret gets, with the reason.
    pub(super) fn authenticate_assertion(
        &self,
        conn: &rusqlite::Connection,
        client_id: &str,
        assertion: &str,
        now: i64,
    ) -> Result<String, OAuthError> {
        let refuse =
            |why: &str| OAuthError::invalid_client(format!("client assertion refused: {why}"));
        let header =
            jsonwebtoken::decode_header(assertion).map_err(|_| refuse("it is not a signed JWT"))?;
        let keys: Vec<(String, String)> = {
            let mut st = conn
                .prepare_cached("SELECT kid, jwk FROM idp_keys WHERE client_id=?1 AND active=1")
                .map_err(|e| OAuthError::server(e.to_string()))?;
            st.query_map([client_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| OAuthError::server(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| OAuthError::server(e.to_string()))?
        };
        let (kid, jwk) = match &header.kid {
            Some(kid) => keys.iter().find(|(k, _)| k == kid),
            None if keys.len() == 1 => keys.first(),
            None => None,
        }
        .ok_or_else(|| refuse("no active key of this client has the assertion's kid"))?;
        let jwk: serde_json::Value =
            serde_json::from_str(jwk).map_err(|e| OAuthError::server(e.to_string()))?;
        let verifier = parse_jwk(&jwk).map_err(OAuthError::server)?;
        if !verifier.fits(header.alg) {
            return Err(refuse("its alg does not fit the key"));
        }
        let token_endpoint = format!("{}{}", self.issuer, super::TOKEN_PATH);
        let mut v = Validation::new(header.alg);
        v.set_audience(&[token_endpoint.as_str(), self.issuer.as_str()]);
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        v.leeway = 30;
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &verifier.key, &v)
            .map_err(|e| refuse(&format!("it does not verify ({e})")))?
            .claims;
        if claims.iss != client_id || claims.sub != client_id {
            return Err(refuse("iss and sub must both be the client id"));
        }
        if claims.exp - now > MAX_ASSERTION_LIFETIME_SECS {
            return Err(refuse("it lives longer than 10 minutes"));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| refuse("it needs a jti (at most 256 characters)"))?;
        if !Self::use_jti(
            conn,
            &format!("assertion|{client_id}"),
            &jti,
            claims.exp,
            now,
        )
        .map_err(|e| OAuthError::server(e.to_string()))?
        {
            return Err(refuse(
                "its jti was used already (an assertion is good once)",
            ));
        }
        Ok(kid.clone())
    }

    pub(super) fn create_key_client_now(
        &self,
        spec: &crate::ports::idp::ClientSpec,
        key: &AgentKey,
        binding: TokenBinding,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(unavailable)?;
        let (client_id, repeat) = super::client_for_key(
            &tx,
            spec,
            idempotency_key,
            Some(("private_key_jwt", binding)),
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO idp_keys (client_id, kid, jwk, active, created_at) VALUES (?1,?2,?3,1,?4)",
            params![client_id, key.kid, key.jwk, Utc::now().to_rfc3339()],
        )
        .map_err(unavailable)?;
        super::log_change(
            &tx,
            "create_key_client",
            &client_id,
            idempotency_key,
            repeat,
        )?;
        tx.commit().map_err(unavailable)?;
        Ok(client_id)
    }

    fn require_client(conn: &rusqlite::Connection, client_id: &str) -> Result<(), IdpError> {
        let exists = conn
            .query_row(
                "SELECT 1 FROM idp_clients WHERE client_id=?1",
                [client_id],
                |_| Ok(()),
            )
            .optional()
            .map_err(unavailable)?
            .is_some();
        if exists {
            Ok(())
        } else {
            Err(IdpError::UnknownClient(client_id.into()))
        }
    }

    pub(super) fn add_key_now(&self, client_id: &str, key: &AgentKey) -> Result<(), IdpError> {
        let conn = self.db.lock();
        Self::require_client(&conn, client_id)?;
        conn.execute(
            "INSERT INTO idp_keys (client_id, kid, jwk, active, created_at) VALUES (?1,?2,?3,1,?4)
             ON CONFLICT (client_id, kid) DO UPDATE SET active=1",
            params![client_id, key.kid, key.jwk, Utc::now().to_rfc3339()],
        )
        .map_err(unavailable)?;
        Ok(())
    }

    pub(super) fn set_key_active_now(
        &self,
        client_id: &str,
        kid: &str,
        active: bool,
    ) -> Result<(), IdpError> {
        let conn = self.db.lock();
        Self::require_client(&conn, client_id)?;
        let n = conn
            .execute(
                "UPDATE idp_keys SET active=?3 WHERE client_id=?1 AND kid=?2",
                params![client_id, kid, active],
            )
            .map_err(unavailable)?;
        if n == 0 {
            return Err(IdpError::Refused(format!(
                "client {client_id} has no key {kid}"
            )));
        }
        Ok(())
    }

    pub(super) fn remove_key_now(&self, client_id: &str, kid: &str) -> Result<(), IdpError> {
        let conn = self.db.lock();
        Self::require_client(&conn, client_id)?;
        conn.execute(
            "DELETE FROM idp_keys WHERE client_id=?1 AND kid=?2",
            params![client_id, kid],
        )
        .map_err(unavailable)?;
        Ok(())
    }

    pub(super) fn keys_now(&self, client_id: &str) -> Result<Vec<ClientKey>, IdpError> {
        let conn = self.db.lock();
        Self::require_client(&conn, client_id)?;
        let mut st = conn
            .prepare_cached(
                "SELECT kid, active FROM idp_keys WHERE client_id=?1 ORDER BY created_at, rowid",
            )
            .map_err(unavailable)?;
        st.query_map([client_id], |r| {
            Ok(ClientKey {
                kid: r.get(0)?,
                active: r.get(1)?,
            })
        })
        .map_err(unavailable)?
        .collect::<Result<_, _>>()
        .map_err(unavailable)
    }
}

/// What introspection answers (RFC 7662), with the reason a token is not active.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Introspection {
    pub active: bool,
    /// Why the token is not active (the development IdP says so; RFC 7662 allows extra
    /// members, and a person debugging an agent needs the reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The token's claims when active.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<serde_json::Value>,
}

impl Introspection {
    fn inactive(why: impl Into<String>) -> Self {
        Self {
            active: false,
            reason: Some(why.into()),
            claims: None,
        }
    }
}

impl DevIdp {
    /// RFC 7662 introspection of an access token this IdP issued, as a resource server asks it:
    /// a DPoP-bound token (`cnf.jkt`) is active only with a DPoP proof (`dpop`) from the bound
    /// key over this request (`POST` to the introspection endpoint) and this token (`ath`), a
    /// token whose client is deactivated or deleted is not active, and an expired or forged one
    /// is not either.
    pub fn introspect(&self, token: &str, dpop: Option<&str>, now: i64) -> Introspection {
        self.introspect_with(token, dpop, None, now)
    }

    /// [`introspect`](Self::introspect) over a connection that presented `certificate` (the
    /// mTLS listener, which verified it against the internal CA): a certificate-bound token
    /// (`cnf.x5t#S256`, RFC 8705 §3) is active only when that is the certificate it names.
    pub fn introspect_with(
        &self,
        token: &str,
        dpop: Option<&str>,
        certificate: Option<&super::certs::PresentedCertificate>,
        now: i64,
    ) -> Introspection {
        let keys = match crate::jwks::parse_jwks(&self.jwks) {
            Ok(k) => k,
            Err(e) => {
                return Introspection::inactive(format!("the IdP's keys are unreadable: {e}"));
            }
        };
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Introspection::inactive("the token is not a JWT");
        };
        let crate::jwks::Lookup::Found(key) =
            crate::jwks::lookup(&keys, header.kid.as_deref(), header.alg)
        else {
            return Introspection::inactive("the token was not signed by this IdP");
        };
        let mut v = Validation::new(header.alg);
        v.set_audience(&[self.audience.as_str()]);
        v.set_issuer(&[self.issuer.as_str()]);
        v.leeway = 0;
        let claims = match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &v) {
            Ok(d) => d.claims,
            Err(e) => return Introspection::inactive(format!("the token does not verify ({e})")),
        };
        let client_id = claims["client_id"].as_str().unwrap_or_default().to_string();
        let active: Option<bool> = self
            .db
            .lock()
            .query_row(
                "SELECT active FROM idp_clients WHERE client_id=?1",
                [&client_id],
                |r| r.get(0),
            )
            .optional()
            .unwrap_or(None);
        match active {
            Some(true) => {}
            Some(false) => return Introspection::inactive("the token's client is deactivated"),
            None => return Introspection::inactive("the token's client no longer exists"),
        }
        if let Some(x5t) = claims["cnf"]["x5t#S256"].as_str() {
            match certificate {
                None => {
                    return Introspection::inactive(
                        "the token is bound to a client certificate (cnf.x5t#S256): it is valid only over mutual TLS with that certificate",
                    );
                }
                Some(c) if c.x5t_s256 != x5t => {
                    return Introspection::inactive(
                        "the connection's client certificate is not the one the token is bound to",
                    );
                }
                Some(_) => {}
            }
        }
        if let Some(jkt) = claims["cnf"]["jkt"].as_str() {
            let Some(proof) = dpop else {
                return Introspection::inactive(
                    "the token is DPoP-bound: it is valid only with a DPoP proof from its key",
                );
            };
            let url = format!("{}{}", self.issuer, super::INTROSPECT_PATH);
            let p = match super::dpop::verify(proof, "POST", &url, Some(token), now) {
                Ok(p) => p,
                Err(why) => return Introspection::inactive(why),
            };
            if p.jkt != jkt {
                return Introspection::inactive(
                    "the DPoP proof is signed by another key than the one the token is bound to",
                );
            }
            let conn = self.db.lock();
            match Self::use_jti(
                &conn,
                "dpop",
                &p.jti,
                now + super::dpop::DPOP_IAT_WINDOW_SECS,
                now,
            ) {
                Ok(true) => {}
                Ok(false) => {
                    return Introspection::inactive(
                        "the DPoP proof's jti was used already: a proof is good for one request",
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "introspection could not record a DPoP jti");
                    return Introspection::inactive("the IdP failed; try again");
                }
            }
        }
        Introspection {
            active: true,
            reason: None,
            claims: Some(claims),
        }
    }
}
