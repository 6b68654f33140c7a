//! The development IdP's certificate clients (RFC 8705 `tls_client_auth`): a client holds the
//! certificate Steward's internal CA issued to its agent (`x5t#S256` and SPIFFE id, the
//! `tls_client_auth_san_uri` of §2.1.2), authenticates by presenting it in the mutual TLS
//! handshake of the mTLS listener, and gets tokens bound to it (`cnf.x5t#S256`, §3.1). The
//! listener verifies the certificate against the CA (chain, validity, revocation) before the
//! IdP sees it; the IdP matches it to the client.

use super::{DevIdp, OAuthError, unavailable};
use crate::ports::idp::{CertificateRecord, ClientSpec, IdpError, TokenBinding};
use chrono::Utc;
use rusqlite::{OptionalExtension, params};

/// A client certificate the mTLS listener accepted (`crate::ca::InternalCa::verify_der`):
/// chained to the internal CA, within its validity, not revoked.
pub use crate::ca::VerifiedClient as PresentedCertificate;

impl DevIdp {
    pub(super) fn create_certificate_client_now(
        &self,
        spec: &ClientSpec,
        certificate: &CertificateRecord,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(unavailable)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT client_id FROM idp_clients WHERE idempotency_key=?1",
                [idempotency_key],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        let repeat = existing.is_some();
        let client_id = match existing {
            Some(id) => id,
            None => {
                let id = format!("dev_{}", hex::encode(rand::random::<[u8; 8]>()));
                tx.execute(
                    "INSERT INTO idp_clients (client_id, idempotency_key, name, scopes, token_lifetime_secs, active, created_at) VALUES (?1,?2,?3,?4,?5,1,?6)",
                    params![id, idempotency_key, spec.name, serde_json::to_string(&spec.scopes).unwrap_or_default(), spec.token_lifetime_secs, Utc::now().to_rfc3339()],
                )
                .map_err(unavailable)?;
                tx.execute(
                    "INSERT INTO idp_client_auth (client_id, method, binding) VALUES (?1, 'tls_client_auth', ?2)",
                    params![id, super::keys::binding_name(TokenBinding::Certificate)],
                )
                .map_err(unavailable)?;
                id
            }
        };
        // A repeat names the same certificate (the executor keeps the first one it issued).
        tx.execute(
            "INSERT INTO idp_client_certs (client_id, x5t_s256, san_uri) VALUES (?1,?2,?3)
             ON CONFLICT (client_id) DO UPDATE SET x5t_s256=?2, san_uri=?3",
            params![client_id, certificate.x5t_s256, certificate.spiffe_id],
        )
        .map_err(unavailable)?;
        super::log_change(
            &tx,
            "create_certificate_client",
            &client_id,
            idempotency_key,
            repeat,
        )?;
        tx.commit().map_err(unavailable)?;
        Ok(client_id)
    }

    /// The client's registered certificate: (`x5t#S256`, SPIFFE id).
    pub(super) fn registered_certificate(
        conn: &rusqlite::Connection,
        client_id: &str,
    ) -> rusqlite::Result<Option<(String, String)>> {
        conn.query_row(
            "SELECT x5t_s256, san_uri FROM idp_client_certs WHERE client_id=?1",
            [client_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
    }

    /// RFC 8705 §2.1: the presented certificate must be the one registered for the client,
    /// by thumbprint and by SPIFFE id (`tls_client_auth_san_uri`). Every failure is the same
    /// `invalid_client` a wrong secret gets, with the reason.
    pub(super) fn authenticate_certificate(
        conn: &rusqlite::Connection,
        client_id: &str,
        presented: &PresentedCertificate,
    ) -> Result<(), OAuthError> {
        let refuse =
            |why: &str| OAuthError::invalid_client(format!("client certificate refused: {why}"));
        let Some((x5t, san)) = Self::registered_certificate(conn, client_id)
            .map_err(|e| OAuthError::server(e.to_string()))?
        else {
            return Err(refuse(
                "this client does not authenticate with a certificate (tls_client_auth)",
            ));
        };
        if san != presented.spiffe_id {
            return Err(refuse(
                "the certificate names another agent than this client's (tls_client_auth_san_uri)",
            ));
        }
        let same = subtle::ConstantTimeEq::ct_eq(x5t.as_bytes(), presented.x5t_s256.as_bytes());
        if !bool::from(same) {
            return Err(refuse(
                "it is not the certificate registered for this client (x5t#S256)",
            ));
        }
        Ok(())
    }
}
