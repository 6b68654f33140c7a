//! The development identity provider: keeps service clients in the embedded database, issues
//! client secrets (stored only as SHA-256 hashes), and issues real OAuth 2.0 client_credentials
//! access tokens (RFC 6749 §4.4) as EdDSA-signed JWTs (RFC 9068 claims) verifiable with its JWKS.

use crate::agent_key::AgentKeyPair;
use crate::embedded::sqlite::Db;
use crate::ports::idp::{
    AgentKey, ClientInfo, ClientKey, ClientSpec, CreatedClient, IdentityProvider, IdpError,
    NewSecret, TokenBinding, TokenRevocation,
};
use crate::secret::Secret;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub mod certs;
pub mod dpop;
pub mod failures;
pub mod keys;
pub mod people;
pub mod signing;
pub mod token_request;

/// Secrets a client may hold at once (Okta's limit: the current one and its successor).
const MAX_SECRETS: i64 = 2;

/// Audience of issued tokens: the APIs agents call accept this `aud`.
pub const DEFAULT_AUDIENCE: &str = "api://steward-agents";

pub struct DevIdp {
    db: Arc<Db>,
    encoding: EncodingKey,
    /// The current key's id, named in every token's header.
    kid: String,
    /// The current key and the previous one ([`signing`]).
    jwks: serde_json::Value,
    /// Held while the IdP is open: a rotation refuses while any process has the keys.
    _keys: signing::Keys,
    issuer: String,
    audience: String,
}

/// RFC 6749 §5.2 error response.
/// Where the local server serves the token endpoint and the signing keys.
pub const TOKEN_PATH: &str = "/oauth2/v1/token";
pub const KEYS_PATH: &str = "/oauth2/v1/keys";
pub const INTROSPECT_PATH: &str = "/oauth2/v1/introspect";

/// How a client proves who it is at the token endpoint.
#[derive(Debug, Clone, Copy)]
pub enum ClientAuth<'a> {
    /// `client_secret_basic` / `client_secret_post`.
    Secret { client_id: &'a str, secret: &'a str },
    /// RFC 7523 `private_key_jwt`: a JWT signed with one of the client's active keys.
    Assertion {
        client_id: &'a str,
        assertion: &'a str,
    },
    /// RFC 8705 `tls_client_auth`: the client certificate of the mutual TLS connection, which
    /// the listener verified against the internal CA (chain, validity, revocation).
    Certificate {
        client_id: &'a str,
        certificate: &'a certs::PresentedCertificate,
    },
}

impl ClientAuth<'_> {
    pub fn client_id(&self) -> &str {
        match self {
            ClientAuth::Secret { client_id, .. }
            | ClientAuth::Assertion { client_id, .. }
            | ClientAuth::Certificate { client_id, .. } => client_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{error}: {error_description}")]
pub struct OAuthError {
    pub error: &'static str,
    pub error_description: String,
    #[serde(skip)]
    pub status: u16,
}

/// What a deactivated client is told. It did authenticate, so its requests are no failures.
const DEACTIVATED: &str = "client is deactivated";

impl OAuthError {
    /// Whether no client was authenticated (no, unknown or wrong credentials): what the token
    /// endpoint's limits on failures count.
    pub fn failed_authentication(&self) -> bool {
        self.error == "invalid_client" && self.error_description != DEACTIVATED
    }

    pub fn invalid_client(why: impl Into<String>) -> Self {
        Self {
            error: "invalid_client",
            error_description: why.into(),
            status: 401,
        }
    }
    fn invalid_scope(why: impl Into<String>) -> Self {
        Self {
            error: "invalid_scope",
            error_description: why.into(),
            status: 400,
        }
    }
    pub fn invalid_request(why: impl Into<String>) -> Self {
        Self {
            error: "invalid_request",
            error_description: why.into(),
            status: 400,
        }
    }
    pub fn invalid_grant(why: impl Into<String>) -> Self {
        Self {
            error: "invalid_grant",
            error_description: why.into(),
            status: 400,
        }
    }
    /// An RFC 8628 §3.5 answer (`authorization_pending`, `slow_down`, …): 400 with that code.
    pub fn code(error: &'static str, why: impl Into<String>) -> Self {
        Self {
            error,
            error_description: why.into(),
            status: 400,
        }
    }
    pub fn unsupported_grant_type(why: impl Into<String>) -> Self {
        Self {
            error: "unsupported_grant_type",
            error_description: why.into(),
            status: 400,
        }
    }
    /// A failure of the endpoint itself: the cause (a database message) goes to the log, not
    /// to a caller who may not even have authenticated.
    pub(crate) fn server(why: impl Into<String>) -> Self {
        let why = why.into();
        tracing::error!(error = %why, "the token endpoint failed");
        Self {
            error: "server_error",
            error_description:
                "the token service failed; try again (the cause is in the server's log)".into(),
            status: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u32,
    pub scope: String,
    /// The key whose client assertion authenticated the request (not sent: a key rotation
    /// learns from it that the agent switched).
    #[serde(skip)]
    pub kid: Option<String>,
    /// What the token is bound to (not sent: the token's `cnf` says it): a DPoP key, the
    /// client certificate, or nothing.
    #[serde(skip)]
    pub binding: TokenBinding,
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The development IdP's change log, as an IdP keeps a system log: every secret it issued, with
/// the idempotency key it was asked with and whether that key had been seen (a repeat). Steward
/// does not read it; it shows what reached the IdP, so a test can count the calls per key.
fn log_change(
    tx: &rusqlite::Transaction<'_>,
    change: &str,
    client_id: &str,
    idempotency_key: &str,
    repeat: bool,
) -> Result<(), IdpError> {
    tx.execute(
        "INSERT INTO idp_changes (at, change, client_id, idempotency_key, repeat) VALUES (?1,?2,?3,?4,?5)",
        params![Utc::now().timestamp_millis(), change, client_id, idempotency_key, repeat],
    )
    .map_err(unavailable)?;
    Ok(())
}

fn unavailable(e: impl std::fmt::Display) -> IdpError {
    IdpError::Unavailable(e.to_string())
}

/// The client `idempotency_key` made, or a new one for `spec`: (client id, whether it existed).
/// A new client that authenticates other than by secret gets its `auth` row (method, binding).
fn client_for_key(
    tx: &rusqlite::Transaction<'_>,
    spec: &ClientSpec,
    idempotency_key: &str,
    auth: Option<(&str, TokenBinding)>,
) -> Result<(String, bool), IdpError> {
    let existing: Option<String> = tx
        .query_row(
            "SELECT client_id FROM idp_clients WHERE idempotency_key=?1",
            [idempotency_key],
            |r| r.get(0),
        )
        .optional()
        .map_err(unavailable)?;
    if let Some(id) = existing {
        return Ok((id, true));
    }
    let id = format!("dev_{}", hex::encode(rand::random::<[u8; 8]>()));
    tx.execute(
        "INSERT INTO idp_clients (client_id, idempotency_key, name, scopes, token_lifetime_secs, active, created_at) VALUES (?1,?2,?3,?4,?5,1,?6)",
        params![id, idempotency_key, spec.name, serde_json::to_string(&spec.scopes).unwrap_or_default(), spec.token_lifetime_secs, Utc::now().to_rfc3339()],
    )
    .map_err(unavailable)?;
    if let Some((method, binding)) = auth {
        tx.execute(
            "INSERT INTO idp_client_auth (client_id, method, binding) VALUES (?1, ?2, ?3)",
            params![id, method, binding.as_str()],
        )
        .map_err(unavailable)?;
    }
    Ok((id, false))
}

fn new_secret() -> (String, Secret) {
    let id = format!("sec_{}", hex::encode(rand::random::<[u8; 8]>()));
    (id, Secret::new(B64URL.encode(rand::random::<[u8; 32]>())))
}

impl DevIdp {
    /// Opens the IdP on `db`, with its signing key at `key_path` (generated, mode 0600) and the
    /// previous key beside it, if a rotation left one ([`signing::KeyFiles::beside`]).
    pub fn open(db: Arc<Db>, key_path: &Path, issuer: &str) -> Result<Self, IdpError> {
        let keys = signing::open(&signing::KeyFiles::beside(key_path)).map_err(unavailable)?;
        let pem = keys
            .signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(unavailable)?;
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(unavailable)?;
        Ok(Self {
            db,
            encoding,
            kid: signing::kid(&keys.signing.verifying_key()),
            jwks: keys.jwks(),
            _keys: keys,
            issuer: issuer.to_string(),
            audience: DEFAULT_AUDIENCE.into(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JSON Web Key Set resource servers verify tokens with: the current key first, then
    /// the previous one (tokens signed before the last rotation verify until they expire).
    pub fn jwks(&self) -> serde_json::Value {
        self.jwks.clone()
    }

    /// The id of the key that signs tokens now (their header's `kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Authorization server metadata (RFC 8414), also served as the OpenID Connect discovery
    /// document: agents' client_credentials grant, and people's sign-in ([`people`]).
    pub fn metadata(&self) -> serde_json::Value {
        let at = |path: &str| format!("{}{path}", self.issuer);
        json!({
            "issuer": self.issuer,
            "token_endpoint": at(TOKEN_PATH),
            "jwks_uri": at(KEYS_PATH),
            "authorization_endpoint": at(people::AUTHORIZE_PATH),
            "device_authorization_endpoint": at(people::DEVICE_AUTHORIZATION_PATH),
            "grant_types_supported": [
                "client_credentials",
                people::DEVICE_CODE_GRANT,
                "authorization_code",
                "refresh_token",
            ],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "scopes_supported": ["openid", "email", "offline_access"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "email", "email_verified"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth", "none"],
            "tls_client_certificate_bound_access_tokens": true,
            "token_endpoint_auth_signing_alg_values_supported": ["ES256", "ES384", "RS256", "PS256", "EdDSA"],
            "dpop_signing_alg_values_supported": ["ES256", "ES384", "RS256", "PS256", "EdDSA"],
            "introspection_endpoint": at(INTROSPECT_PATH),
        })
    }

    /// The client_credentials grant: authenticates the client, checks the requested scopes
    /// against its grant, and signs a token that lives the client's token lifetime.
    pub fn issue_token(
        &self,
        client_id: &str,
        client_secret: &str,
        scope: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<TokenResponse, OAuthError> {
        self.grant(
            ClientAuth::Secret {
                client_id,
                secret: client_secret,
            },
            scope,
            None,
            now,
        )
    }

    /// The client_credentials grant with any client authentication, and an RFC 9449 DPoP
    /// proof (`dpop`, the header's value) when the client sends one: the token is then bound to
    /// the proof's key (`cnf.jkt`, `token_type` DPoP). A client whose tokens must be bound is
    /// refused a token without a proof.
    pub fn grant(
        &self,
        auth: ClientAuth<'_>,
        scope: Option<&str>,
        dpop: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<TokenResponse, OAuthError> {
        let client_id = auth.client_id();
        let conn = self.db.lock();
        let row: Option<(String, u32, bool)> = conn
            .query_row(
                "SELECT scopes, token_lifetime_secs, active FROM idp_clients WHERE client_id=?1",
                [client_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| OAuthError::server(e.to_string()))?;
        let mut kid = None;
        let ok = match auth {
            ClientAuth::Secret { secret, .. } => {
                // Same answer, and the same work, for an unknown client and a wrong secret:
                // neither the answer nor its time reveals which client ids exist.
                let presented = hash(secret);
                let mut st = conn
                    .prepare_cached("SELECT hash FROM idp_secrets WHERE client_id=?1")
                    .map_err(|e| OAuthError::server(e.to_string()))?;
                let hashes: Vec<String> = st
                    .query_map([client_id], |r| r.get(0))
                    .map_err(|e| OAuthError::server(e.to_string()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| OAuthError::server(e.to_string()))?;
                hashes.iter().fold(false, |acc, h| {
                    acc | bool::from(h.as_bytes().ct_eq(presented.as_bytes()))
                })
            }
            ClientAuth::Assertion { assertion, .. } => {
                if row.is_none() {
                    return Err(OAuthError::invalid_client("client authentication failed"));
                }
                kid = Some(self.authenticate_assertion(
                    &conn,
                    client_id,
                    assertion,
                    now.timestamp(),
                )?);
                true
            }
            ClientAuth::Certificate { certificate, .. } => {
                if row.is_none() {
                    return Err(OAuthError::invalid_client("client authentication failed"));
                }
                Self::authenticate_certificate(&conn, client_id, certificate)?;
                true
            }
        };
        let presented = match auth {
            ClientAuth::Certificate { certificate, .. } => Some(certificate),
            _ => None,
        };
        let Some((scopes_json, lifetime, active)) = row.filter(|_| ok) else {
            return Err(OAuthError::invalid_client("client authentication failed"));
        };
        if !active {
            return Err(OAuthError::invalid_client(DEACTIVATED));
        }
        let settings =
            Self::auth_settings(&conn, client_id).map_err(|e| OAuthError::server(e.to_string()))?;
        let bound = match dpop {
            Some(proof) => {
                let url = format!("{}{TOKEN_PATH}", self.issuer);
                let p =
                    dpop::verify(proof, "POST", &url, None, now.timestamp()).map_err(|why| {
                        OAuthError {
                            error: "invalid_dpop_proof",
                            error_description: why,
                            status: 400,
                        }
                    })?;
                let fresh = Self::use_jti(
                    &conn,
                    "dpop",
                    &p.jti,
                    now.timestamp() + dpop::DPOP_IAT_WINDOW_SECS,
                    now.timestamp(),
                )
                .map_err(|e| OAuthError::server(e.to_string()))?;
                if !fresh {
                    return Err(OAuthError {
                        error: "invalid_dpop_proof",
                        error_description:
                            "the DPoP proof's jti was used already: a proof is good for one request"
                                .into(),
                        status: 400,
                    });
                }
                Some(p.jkt)
            }
            None if settings.binding == TokenBinding::Certificate && presented.is_none() => {
                return Err(OAuthError::invalid_client(
                    "this client's tokens must be bound to its certificate: request them over mutual TLS (the mTLS listener) presenting the client certificate",
                ));
            }
            None if settings.binding == TokenBinding::Dpop => {
                return Err(OAuthError {
                    error: "invalid_dpop_proof",
                    error_description: "this client's tokens must be DPoP-bound: send a DPoP proof (RFC 9449) with the token request".into(),
                    status: 400,
                });
            }
            None => None,
        };
        let granted: Vec<String> =
            serde_json::from_str(&scopes_json).map_err(|e| OAuthError::server(e.to_string()))?;
        let scopes: Vec<String> = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => granted.clone(),
            Some(s) => s
                .split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
        };
        let outside: Vec<&String> = scopes.iter().filter(|s| !granted.contains(s)).collect();
        if !outside.is_empty() {
            return Err(OAuthError::invalid_scope(format!(
                "scope {} is not granted to this client",
                outside
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
        let iat = now.timestamp();
        let mut claims = json!({
            "iss": self.issuer, "sub": client_id, "aud": self.audience, "client_id": client_id,
            "iat": iat, "nbf": iat, "exp": iat + lifetime as i64,
            "jti": hex::encode(rand::random::<[u8; 12]>()),
            "scp": scopes, "scope": scopes.join(" "),
        });
        if let Some(jkt) = &bound {
            claims["cnf"] = json!({ "jkt": jkt });
        }
        // RFC 8705 §3.1: a token issued over mutual TLS to a certificate client names the
        // certificate; it stays a Bearer token in type, useless without the certificate's key.
        if let Some(cert) = presented {
            claims["cnf"]["x5t#S256"] = json!(cert.x5t_s256);
        }
        let token = self.sign("at+jwt", &claims)?;
        Ok(TokenResponse {
            access_token: token,
            token_type: if bound.is_some() { "DPoP" } else { "Bearer" },
            binding: if presented.is_some() {
                TokenBinding::Certificate
            } else if bound.is_some() {
                TokenBinding::Dpop
            } else {
                TokenBinding::None
            },
            kid,
            expires_in: lifetime,
            scope: scopes.join(" "),
        })
    }
}

impl DevIdp {
    /// Signs `claims` as a JWS with the IdP's key (EdDSA), naming the key and the token type.
    fn sign(&self, typ: &str, claims: &serde_json::Value) -> Result<String, OAuthError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.into());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| OAuthError::server(e.to_string()))
    }
}

#[async_trait]
impl IdentityProvider for DevIdp {
    async fn create_client(
        &self,
        spec: &ClientSpec,
        idempotency_key: &str,
    ) -> Result<CreatedClient, IdpError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(unavailable)?;
        let now = Utc::now().to_rfc3339();
        let (client_id, repeat) = client_for_key(&tx, spec, idempotency_key, None)?;
        if repeat {
            // A repeat of a creation whose answer was lost: nobody holds the first secret, so
            // replace it rather than leave an orphan credential behind.
            tx.execute("DELETE FROM idp_secrets WHERE client_id=?1", [&client_id])
                .map_err(unavailable)?;
        }
        let (secret_id, secret) = new_secret();
        tx.execute(
            "INSERT INTO idp_secrets (secret_id, client_id, hash, created_at) VALUES (?1,?2,?3,?4)",
            params![secret_id, client_id, hash(secret.expose()), now],
        )
        .map_err(unavailable)?;
        log_change(&tx, "create_client", &client_id, idempotency_key, repeat)?;
        tx.commit().map_err(unavailable)?;
        Ok(CreatedClient {
            client_id,
            secret_id,
            secret,
        })
    }

    async fn set_grants(
        &self,
        client_id: &str,
        scopes: &[String],
        token_lifetime_secs: u32,
    ) -> Result<(), IdpError> {
        let n = self
            .db
            .lock()
            .execute(
                "UPDATE idp_clients SET scopes=?2, token_lifetime_secs=?3 WHERE client_id=?1",
                params![
                    client_id,
                    serde_json::to_string(scopes).unwrap_or_default(),
                    token_lifetime_secs
                ],
            )
            .map_err(unavailable)?;
        if n == 0 {
            Err(IdpError::UnknownClient(client_id.into()))
        } else {
            Ok(())
        }
    }

    async fn set_active(&self, client_id: &str, active: bool) -> Result<(), IdpError> {
        let n = self
            .db
            .lock()
            .execute(
                "UPDATE idp_clients SET active=?2 WHERE client_id=?1",
                params![client_id, active],
            )
            .map_err(unavailable)?;
        if n == 0 {
            Err(IdpError::UnknownClient(client_id.into()))
        } else {
            Ok(())
        }
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientInfo>, IdpError> {
        Ok(self.list_where(Some(client_id))?.pop())
    }

    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        self.list_where(None)
    }

    async fn add_secret(
        &self,
        client_id: &str,
        idempotency_key: &str,
    ) -> Result<NewSecret, IdpError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(unavailable)?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM idp_clients WHERE client_id=?1",
                [client_id],
                |_| Ok(()),
            )
            .optional()
            .map_err(unavailable)?
            .is_some();
        if !exists {
            return Err(IdpError::UnknownClient(client_id.into()));
        }
        // A client that authenticates with a key or a certificate takes no secret: one would
        // be a second, copyable way in.
        let method: Option<String> = tx
            .query_row(
                "SELECT method FROM idp_client_auth WHERE client_id=?1",
                [client_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        if let Some(method) = method {
            return Err(IdpError::Refused(format!(
                "client {client_id} authenticates with {method}: it takes no client secret"
            )));
        }
        // A repeat replaces the secret the first call made (its value was never kept).
        let repeat = tx
            .execute(
                "DELETE FROM idp_secrets WHERE client_id=?1 AND idempotency_key=?2",
                params![client_id, idempotency_key],
            )
            .map_err(unavailable)?
            > 0;
        let count: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM idp_secrets WHERE client_id=?1",
                [client_id],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        if count >= MAX_SECRETS {
            return Err(IdpError::Refused(format!(
                "client {client_id} already has {MAX_SECRETS} secrets; remove the outgoing one first"
            )));
        }
        let (secret_id, secret) = new_secret();
        tx.execute(
            "INSERT INTO idp_secrets (secret_id, client_id, hash, created_at, idempotency_key) VALUES (?1,?2,?3,?4,?5)",
            params![secret_id, client_id, hash(secret.expose()), Utc::now().to_rfc3339(), idempotency_key],
        )
        .map_err(unavailable)?;
        log_change(&tx, "add_secret", client_id, idempotency_key, repeat)?;
        tx.commit().map_err(unavailable)?;
        Ok(NewSecret { secret_id, secret })
    }

    async fn remove_secret(&self, client_id: &str, secret_id: &str) -> Result<(), IdpError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(unavailable)?;
        let ids: Vec<String> = {
            let mut st = tx
                .prepare("SELECT secret_id FROM idp_secrets WHERE client_id=?1")
                .map_err(unavailable)?;
            st.query_map([client_id], |r| r.get(0))
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)?
        };
        if !ids.iter().any(|i| i == secret_id) {
            return Ok(());
        }
        if ids.len() == 1 {
            return Err(IdpError::Refused(format!(
                "secret {secret_id} is the only secret of client {client_id}; add its successor first"
            )));
        }
        tx.execute(
            "DELETE FROM idp_secrets WHERE client_id=?1 AND secret_id=?2",
            params![client_id, secret_id],
        )
        .map_err(unavailable)?;
        tx.commit().map_err(unavailable)
    }

    async fn secret_ids(&self, client_id: &str) -> Result<Vec<String>, IdpError> {
        let conn = self.db.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT secret_id FROM idp_secrets WHERE client_id=?1 ORDER BY created_at, rowid",
            )
            .map_err(unavailable)?;
        st.query_map([client_id], |r| r.get(0))
            .map_err(unavailable)?
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn test_secret(&self, client_id: &str, secret: &Secret) -> Result<(), IdpError> {
        self.issue_token(client_id, secret.expose(), None, Utc::now())
            .map(|_| ())
            .map_err(|e| IdpError::Refused(format!("the token request failed: {e}")))
    }

    async fn revoke_tokens(&self, client_id: &str) -> Result<TokenRevocation, IdpError> {
        if self.list_where(Some(client_id))?.is_empty() {
            return Err(IdpError::UnknownClient(client_id.into()));
        }
        // Its tokens are self-contained signed JWTs checked against the JWKS: nothing to revoke
        // centrally, as with Okta's client_credentials access tokens.
        Ok(TokenRevocation {
            revoked: "nothing: the development IdP issues no refresh tokens".into(),
            outstanding: Some(
                "access tokens already issued are self-contained JWTs and stay valid until they expire (at most the token lifetime after issue)".into(),
            ),
        })
    }

    async fn delete_client(&self, client_id: &str) -> Result<(), IdpError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(unavailable)?;
        for table in [
            "idp_secrets",
            "idp_keys",
            "idp_client_auth",
            "idp_client_certs",
            "idp_client_added_certs",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE client_id=?1"),
                [client_id],
            )
            .map_err(unavailable)?;
        }
        tx.execute("DELETE FROM idp_clients WHERE client_id=?1", [client_id])
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)
    }

    async fn create_key_client(
        &self,
        spec: &ClientSpec,
        key: &AgentKey,
        binding: TokenBinding,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        self.create_key_client_now(spec, key, binding, idempotency_key)
    }

    async fn add_key(&self, client_id: &str, key: &AgentKey) -> Result<(), IdpError> {
        self.add_key_now(client_id, key)
    }

    async fn set_key_active(
        &self,
        client_id: &str,
        kid: &str,
        active: bool,
    ) -> Result<(), IdpError> {
        self.set_key_active_now(client_id, kid, active)
    }

    async fn remove_key(&self, client_id: &str, kid: &str) -> Result<(), IdpError> {
        self.remove_key_now(client_id, kid)
    }

    async fn keys(&self, client_id: &str) -> Result<Vec<ClientKey>, IdpError> {
        self.keys_now(client_id)
    }

    fn certificate_clients(&self) -> bool {
        true
    }

    async fn create_certificate_client(
        &self,
        spec: &ClientSpec,
        certificate: &crate::ports::idp::CertificateRecord,
        _pem: &str,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        // Registered by x5t#S256 and SPIFFE id; the certificate itself is not needed here.
        self.create_certificate_client_now(spec, certificate, idempotency_key)
    }

    async fn add_certificate(
        &self,
        client_id: &str,
        certificate: &crate::ports::idp::CertificateRecord,
        _pem: &str,
    ) -> Result<(), IdpError> {
        self.add_certificate_now(client_id, certificate)
    }

    async fn remove_certificate(&self, client_id: &str, x5t_s256: &str) -> Result<(), IdpError> {
        self.remove_certificate_now(client_id, x5t_s256)
    }

    async fn test_key(&self, client_id: &str, key: &AgentKeyPair) -> Result<(), IdpError> {
        let now = Utc::now();
        let audience = format!("{}{TOKEN_PATH}", self.issuer);
        let assertion = key.client_assertion(client_id, &audience, now);
        // A client whose tokens must be bound gets a proof from the same key.
        let proof = key.dpop_proof("POST", &audience, None, now);
        self.grant(
            ClientAuth::Assertion {
                client_id,
                assertion: &assertion,
            },
            None,
            Some(&proof),
            now,
        )
        .map(|_| ())
        .map_err(|e| IdpError::Refused(format!("the token request failed: {e}")))
    }
}

impl DevIdp {
    fn list_where(&self, client_id: Option<&str>) -> Result<Vec<ClientInfo>, IdpError> {
        let conn = self.db.lock();
        let mut st = conn
            .prepare_cached("SELECT client_id, name, scopes, token_lifetime_secs, active, created_at, idempotency_key FROM idp_clients WHERE ?1 IS NULL OR client_id=?1 ORDER BY rowid")
            .map_err(unavailable)?;
        let rows = st
            .query_map([client_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for row in rows {
            let (client_id, name, scopes, token_lifetime_secs, active, created, key) =
                row.map_err(unavailable)?;
            out.push(ClientInfo {
                client_id,
                name,
                scopes: serde_json::from_str(&scopes).unwrap_or_default(),
                token_lifetime_secs,
                active,
                created_at: DateTime::parse_from_rfc3339(&created)
                    .map(|d| d.with_timezone(&Utc))
                    .unwrap_or_default(),
                // Every client here was made by `create_client`, and its row keeps the key.
                steward_key: Some(key),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failure_of_the_endpoint_does_not_tell_the_caller_its_cause() {
        let e = super::OAuthError::server("no such table: idp_secrets");
        assert_eq!((e.error, e.status), ("server_error", 500));
        assert!(!e.error_description.contains("idp_secrets"), "{e}");
    }

    /// A deactivated client proved its secret: the limits on failures leave it alone.
    #[test]
    fn only_unauthenticated_requests_are_failed_authentications() {
        use super::OAuthError;
        assert!(OAuthError::invalid_client("client authentication failed").failed_authentication());
        assert!(!OAuthError::invalid_client(super::DEACTIVATED).failed_authentication());
        assert!(!OAuthError::invalid_request("no").failed_authentication());
    }
}
