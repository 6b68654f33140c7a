//! The development IdP's certificate clients (RFC 8705 `tls_client_auth`): a client holds the
//! certificate Steward's internal CA issued to its agent (`x5t#S256` and SPIFFE id, the
//! `tls_client_auth_san_uri` of §2.1.2), authenticates by presenting it in the mutual TLS
//! handshake of the mTLS listener, and gets tokens bound to it (`cnf.x5t#S256`, §3.1). The
//! listener verifies the certificate against the CA (chain, validity, revocation) before the
//! IdP sees it; the IdP matches it to the client.

use super::{DevIdp, OAuthError, unavailable};
use crate::ports::idp::{CertificateRecord, ClientSpec, IdpError, TokenBinding};
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
        let (client_id, repeat) = super::client_for_key(
            &tx,
            spec,
            idempotency_key,
            Some(("tls_client_auth", TokenBinding::Certificate)),
        )?;
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

    /// A certificate rotation: the client accepts `certificate` too, beside the ones it
    /// accepts already (the first, registered with the client, stays until it is removed).
    pub(super) fn add_certificate_now(
        &self,
        client_id: &str,
        certificate: &CertificateRecord,
    ) -> Result<(), IdpError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(unavailable)?;
        let method: Option<String> = tx
            .query_row(
                "SELECT a.method FROM idp_clients c LEFT JOIN idp_client_auth a ON a.client_id=c.client_id WHERE c.client_id=?1",
                [client_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?
            .ok_or_else(|| IdpError::UnknownClient(client_id.to_string()))?;
        if method.as_deref() != Some("tls_client_auth") {
            return Err(IdpError::Refused(format!(
                "client {client_id} does not authenticate with a certificate (tls_client_auth)"
            )));
        }
        let registered = Self::registered_certificates(&tx, client_id).map_err(unavailable)?;
        let known = registered
            .iter()
            .any(|(x5t, _)| x5t == &certificate.x5t_s256);
        if !known {
            tx.execute(
                "INSERT INTO idp_client_added_certs (client_id, x5t_s256, san_uri) VALUES (?1,?2,?3)
                 ON CONFLICT (client_id, x5t_s256) DO NOTHING",
                params![client_id, certificate.x5t_s256, certificate.spiffe_id],
            )
            .map_err(unavailable)?;
        }
        super::log_change(
            &tx,
            "add_certificate",
            client_id,
            &certificate.x5t_s256,
            known,
        )?;
        tx.commit().map_err(unavailable)
    }

    /// The client no longer accepts the certificate `x5t_s256` (whether it was registered with
    /// the client or added later); one already gone is fine.
    pub(super) fn remove_certificate_now(
        &self,
        client_id: &str,
        x5t_s256: &str,
    ) -> Result<(), IdpError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(unavailable)?;
        let exists: Option<String> = tx
            .query_row(
                "SELECT client_id FROM idp_clients WHERE client_id=?1",
                [client_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        if exists.is_none() {
            return Err(IdpError::UnknownClient(client_id.to_string()));
        }
        let mut removed = 0;
        for table in ["idp_client_certs", "idp_client_added_certs"] {
            removed += tx
                .execute(
                    &format!("DELETE FROM {table} WHERE client_id=?1 AND x5t_s256=?2"),
                    params![client_id, x5t_s256],
                )
                .map_err(unavailable)?;
        }
        super::log_change(&tx, "remove_certificate", client_id, x5t_s256, removed == 0)?;
        tx.commit().map_err(unavailable)
    }

    /// The certificates the client accepts: (`x5t#S256`, SPIFFE id), the one registered with
    /// the client first, then those a rotation added.
    pub(super) fn registered_certificates(
        conn: &rusqlite::Connection,
        client_id: &str,
    ) -> rusqlite::Result<Vec<(String, String)>> {
        let mut stmt = conn.prepare(
            "SELECT x5t_s256, san_uri FROM idp_client_certs WHERE client_id=?1
             UNION ALL
             SELECT x5t_s256, san_uri FROM idp_client_added_certs WHERE client_id=?1",
        )?;
        let rows = stmt.query_map([client_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
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
        let registered = Self::registered_certificates(conn, client_id)
            .map_err(|e| OAuthError::server(e.to_string()))?;
        if registered.is_empty() {
            return Err(refuse(
                "this client does not authenticate with a certificate (tls_client_auth)",
            ));
        }
        if registered
            .iter()
            .all(|(_, san)| san != &presented.spiffe_id)
        {
            return Err(refuse(
                "the certificate names another agent than this client's (tls_client_auth_san_uri)",
            ));
        }
        // Every registered certificate is compared (in constant time), so the answer does not
        // tell which one was close.
        let mut same = subtle::Choice::from(0);
        for (x5t, san) in &registered {
            let matches =
                subtle::ConstantTimeEq::ct_eq(x5t.as_bytes(), presented.x5t_s256.as_bytes())
                    & subtle::Choice::from(u8::from(san == &presented.spiffe_id));
            same |= matches;
        }
        if !bool::from(same) {
            return Err(refuse(
                "it is not a certificate registered for this client (x5t#S256)",
            ));
        }
        Ok(())
    }
}
