//! `tls_client_auth` agents' certificates (RFC 8705) from the internal CA (`crate::ca`):
//! - a CSR enters a request only once it verifies and claims nothing else Steward trusts
//!   ([`Engine::accept_agent_csr`]);
//! - the executor issues the certificate when it creates the client, once per command key: the
//!   issued certificate is kept in the vault under [`certificate_secret_id`] as the version
//!   named by the command's key, so a repeat (a redelivery after a crash) answers with the
//!   certificate the first run issued, and two runs at once both take the one the vault kept;
//! - the registry keeps the certificate's public facts and its revocation
//!   ([`statemachines::credential::CertificateRecord`]), written with the audit record of the
//!   step that revoked it; the CRL and the mTLS listener read the revocations from there
//!   ([`revocations_of`], [`Engine::check_client_certificate`]).
//!
//! Nothing here holds a private key: the agent keeps its own, and the CA's stays in the vault
//! and in [`InternalCa`]. Why: docs/adr/0034-mtls-listener.md.

use super::executor::{ExecError, Executor};
use super::{Engine, EngineError};
use crate::ca::{CaError, CaSettings, InternalCa, RevocationReason, Revocations, VerifiedClient};
use crate::ports::idp::ClientSpec;
use crate::ports::vault::{Stage, version_id_for};
use crate::secret::Secret;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use statemachines::credential::{CertificateOrder, CertificateRecord};
use statemachines::{Actor, Agent, Event, Rejected};

/// The vault id under which an agent's issued certificate is kept (public data: kept there for
/// the idempotency of the command that issued it, not for secrecy).
pub fn certificate_secret_id(agent_id: &str) -> String {
    format!("steward/certificates/{agent_id}")
}

/// What the vault keeps of an issued certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCertificate {
    /// The certificate, PEM.
    pub pem: String,
    pub record: CertificateRecord,
}

/// The revoked serials the registry records hold, as the CA reads them.
pub fn revocations_of<'a>(agents: impl IntoIterator<Item = &'a Agent>) -> Revocations {
    let mut revocations = Revocations::new();
    for cert in agents.into_iter().flat_map(|a| &a.certificates) {
        if let Some(r) = &cert.revoked {
            // Serials come from the CA and always read; a record that does not is skipped.
            let _ = revocations.revoke(&cert.serial, reason_of(&r.reason), r.at);
        }
    }
    revocations
}

fn reason_of(name: &str) -> RevocationReason {
    match name {
        "key_compromise" => RevocationReason::KeyCompromise,
        "affiliation_changed" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessation_of_operation" => RevocationReason::CessationOfOperation,
        "certificate_hold" => RevocationReason::CertificateHold,
        "privilege_withdrawn" => RevocationReason::PrivilegeWithdrawn,
        _ => RevocationReason::Unspecified,
    }
}

fn ca_settings(order: &CertificateOrder) -> CaSettings {
    CaSettings {
        lifetime_days: order.lifetime_days,
        ..CaSettings::new(order.trust_domain.clone())
    }
}

impl Executor {
    /// The certificate an earlier run of the command `key` issued and vaulted, if any.
    async fn issued_certificate(
        &self,
        agent_id: &str,
        key: &str,
    ) -> Result<Option<StoredCertificate>, String> {
        let Some((version, value)) = self
            .vault
            .get(&certificate_secret_id(agent_id), Stage::Current)
            .await
            .map_err(|e| format!("reading the issued certificate: {e}"))?
        else {
            return Ok(None);
        };
        if version != version_id_for(key) {
            return Ok(None);
        }
        serde_json::from_str(value.expose())
            .map(Some)
            .map_err(|_| "the vaulted certificate record is unreadable".to_string())
    }

    /// The certificate the command `key` issues for the agent: the one an earlier run issued
    /// and vaulted, or a new one from the CA, vaulted as the agent's current certificate.
    async fn issue_once(
        &self,
        command: &'static str,
        key: &str,
        agent_id: &str,
        agent_name: &str,
        order: &CertificateOrder,
    ) -> Result<StoredCertificate, ExecError> {
        let fail = |message: String, retryable: bool| ExecError {
            command,
            message,
            retryable,
            retry_after: None,
        };
        if let Some(stored) = self
            .issued_certificate(agent_id, key)
            .await
            .map_err(|e| fail(e, true))?
        {
            return Ok(stored);
        }
        // Asked first, so an adapter that cannot register the client never gets a CA made for
        // it (on AWS the agent vault is wired to secret rotation).
        if !self.idp.certificate_clients() {
            return Err(fail(
                "this identity provider adapter does not register tls_client_auth clients; use credential kind `secret` or `private_key_jwt` with it".into(),
                false,
            ));
        }
        let now = Utc::now();
        let ca_failed = |what: &str, e: CaError| {
            let retryable = matches!(e, CaError::Vault(_));
            fail(format!("{what}: {e}"), retryable)
        };
        let ca = InternalCa::open(&*self.vault, ca_settings(order), now)
            .await
            .map_err(|e| ca_failed("opening the internal CA", e))?;
        let issued = ca
            .issue(&order.csr, agent_name, now)
            .map_err(|e| ca_failed("issuing the agent's certificate", e))?;
        let stored = StoredCertificate {
            record: CertificateRecord {
                serial: issued.serial,
                spiffe_id: issued.spiffe_id,
                x5t_s256: issued.x5t_s256,
                not_before: issued.not_before,
                not_after: issued.not_after,
                revoked: None,
            },
            pem: issued.pem,
        };
        let json = serde_json::to_string(&stored)
            .map_err(|e| fail(format!("writing the certificate record: {e}"), false))?;
        // Two runs at once write the same version: the vault keeps the first, and both read it
        // back. A new version becomes the current one (what the agent fetches).
        self.vault
            .put(
                &certificate_secret_id(agent_id),
                &version_id_for(key),
                &Secret::new(json),
                Stage::Current,
            )
            .await
            .map_err(|e| fail(format!("keeping the issued certificate: {e}"), true))?;
        self.issued_certificate(agent_id, key)
            .await
            .map_err(|e| fail(e, true))?
            .ok_or_else(|| {
                fail(
                    "the vault returns no certificate under the version just written".into(),
                    true,
                )
            })
    }

    /// `IdpCommand::CreateClient` for a `tls_client_auth` agent: the CA certifies the CSR's
    /// key (once per command key), and the IdP registers a client that authenticates with that
    /// certificate.
    pub(super) async fn create_certificate_client(
        &self,
        key: &str,
        spec: &ClientSpec,
        order: &CertificateOrder,
    ) -> Result<Option<Event>, ExecError> {
        let stored = self
            .issue_once("idp.create_client", key, &spec.agent_id, &spec.name, order)
            .await?;
        let client_id = self
            .idp
            .create_certificate_client(spec, &stored.record, &stored.pem, key)
            .await
            .map_err(|e| ExecError {
                command: "idp.create_client",
                message: e.to_string(),
                retryable: e.retryable(),
                retry_after: None,
            })?;
        Ok(Some(Event::CertificateClientCreated {
            client_id,
            certificate: stored.record,
        }))
    }

    /// `IdpCommand::AddCertificate` (a certificate rotation): the CA certifies the new CSR's
    /// key (once per command key) and the IdP accepts that certificate for the client beside
    /// the current one.
    pub(super) async fn add_certificate(
        &self,
        key: &str,
        agent_id: &str,
        agent_name: &str,
        client_id: &str,
        order: &CertificateOrder,
    ) -> Result<Option<Event>, ExecError> {
        let stored = self
            .issue_once("idp.add_certificate", key, agent_id, agent_name, order)
            .await?;
        self.idp
            .add_certificate(client_id, &stored.record, &stored.pem)
            .await
            .map_err(|e| ExecError {
                command: "idp.add_certificate",
                message: e.to_string(),
                retryable: e.retryable(),
                retry_after: None,
            })?;
        Ok(Some(Event::CertificateAdded {
            certificate: stored.record,
        }))
    }
}

impl Engine {
    /// Checks a `tls_client_auth` request's CSR before the request is taken: it verifies (its
    /// self-signature is the proof that the requester holds the key) and claims no identity
    /// Steward trusts but the agent's own. A refusal is audited and changes nothing.
    pub async fn accept_agent_csr(
        &self,
        agent_name: &str,
        csr: &str,
        actor: &Actor,
    ) -> Result<(), EngineError> {
        let trust_domain = &self.policy.credentials.trust_domain;
        match crate::ca::check_csr(csr, trust_domain, agent_name) {
            // The policy's naming check refuses the name with its own reasons.
            Ok(()) | Err(CaError::AgentName(_)) => Ok(()),
            Err(e) => {
                let why = e.to_string();
                self.audit_refusal(
                    &format!("certificate signing request for agent {agent_name}"),
                    actor,
                    None,
                    None,
                    &why,
                )
                .await?;
                Err(EngineError::Rejected(Rejected::new("csr", why)))
            }
        }
    }

    /// Every revoked certificate serial in the registry (what the CRL lists).
    pub async fn certificate_revocations(&self) -> Result<Revocations, EngineError> {
        Ok(revocations_of(&self.store.agents().await?))
    }

    /// The agent's current certificate (the newest it holds, revoked or not) with its PEM, as
    /// the vault keeps it; `None` when none was issued (or it is not recorded yet).
    pub async fn agent_certificate(
        &self,
        agent: &Agent,
    ) -> Result<Option<StoredCertificate>, crate::ports::vault::VaultError> {
        // The newest certificate not revoked for good (one on hold is still the agent's): a
        // rotation abandoned at its first-use deadline revoked the newest issued, and the one
        // before it is the one that works.
        let Some(current) = agent
            .certificates
            .iter()
            .rev()
            .find(|c| !c.revoked_for_good())
            .or(agent.certificates.last())
        else {
            return Ok(None);
        };
        // The vault keeps the newest issued as current and the one before as previous.
        for stage in [Stage::Current, Stage::Previous] {
            let stored = self
                .executor
                .vault
                .get(&certificate_secret_id(&agent.id), stage)
                .await?;
            if let Some(s) = stored
                .and_then(|(_, v)| serde_json::from_str::<StoredCertificate>(v.expose()).ok())
                .filter(|s| s.record.serial == current.serial)
            {
                return Ok(Some(StoredCertificate {
                    pem: s.pem,
                    record: current.clone(),
                }));
            }
        }
        Ok(None)
    }

    /// Whether the client certificate `der` a mutual TLS connection presented may stand for an
    /// agent now: issued by `ca`, within its validity, a client certificate of an agent in the
    /// trust domain, and not revoked. Revocations are read from the records of the agent its
    /// SPIFFE id names and, when the request names one, of the client's agent (a name can be
    /// used again after a decommission). Returns what the IdP matches to its client, or why not.
    pub async fn check_client_certificate(
        &self,
        ca: &InternalCa,
        der: &[u8],
        client_id: Option<&str>,
    ) -> Result<VerifiedClient, String> {
        let now = self.clock.now();
        // Read first without revocations: the certificate names the agent whose records hold them.
        let verified = ca
            .verify_der(der, &Revocations::new(), now)
            .map_err(|e| e.to_string())?;
        let mut agents = Vec::new();
        let lookups = async {
            if let Some(a) = self.store.agent_by_name(&verified.agent_name).await? {
                agents.push(a);
            }
            if let Some(id) = client_id
                && let Some(a) = self.store.agent_by_client(id).await?
            {
                agents.push(a);
            }
            Ok::<_, crate::ports::store::StoreError>(())
        };
        if let Err(e) = lookups.await {
            tracing::error!(error = %e, "could not read revocations for a client certificate");
            return Err("the certificate's revocation could not be checked; try again".into());
        }
        let revocations = revocations_of(&agents);
        ca.verify_der(der, &revocations, now)
            .map_err(|e| e.to_string())
    }
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::ca::VerifiedClient;
    use crate::embedded::console::Console;
    use crate::embedded::sqlite::{Db, Durability};
    use crate::embedded::vault::FileVault;
    use crate::idp::dev::{ClientAuth, DevIdp};
    use crate::ports::{IdentityProvider, Vault};
    use statemachines::credential::TokenBinding;
    use statemachines::{Command, IdpCommand};
    use std::sync::Arc;

    const EXAMPLE: &str = include_str!("../../../policy.example.toml");

    struct Fixture {
        executor: Executor,
        idp: Arc<DevIdp>,
        vault: Arc<FileVault>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap());
        let idp = Arc::new(
            DevIdp::open(
                db.clone(),
                &dir.path().join("idp-signing-key.pem"),
                "http://127.0.0.1:8080",
            )
            .unwrap(),
        );
        let vault = Arc::new(FileVault::open(&dir.path().join("vault")).unwrap());
        Fixture {
            executor: Executor {
                idp: idp.clone(),
                vault: vault.clone(),
                people: Arc::new(Console::new(db)),
            },
            idp,
            vault,
            _dir: dir,
        }
    }

    fn csr() -> (rcgen::KeyPair, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, csr)
    }

    fn create(csr: &str) -> Command {
        Command::Idp(IdpCommand::CreateClient {
            agent_id: "agt-1".into(),
            name: "ledger-agent-prod".into(),
            scopes: vec!["ledger:read".into()],
            token_lifetime_secs: 600,
            adopt: None,
            key: None,
            binding: TokenBinding::Certificate,
            certificate: Some(CertificateOrder {
                csr: csr.into(),
                trust_domain: "steward.test".into(),
                lifetime_days: 7,
            }),
            generate_key: false,
        })
    }

    fn created(event: Option<Event>) -> (String, CertificateRecord) {
        match event {
            Some(Event::CertificateClientCreated {
                client_id,
                certificate,
            }) => (client_id, certificate),
            other => panic!("expected CertificateClientCreated, got {other:?}"),
        }
    }

    /// A repeat of the command (a redelivery after a crash), and two runs at once, answer with
    /// the certificate and the client the first run made; another command key is another one.
    #[tokio::test]
    async fn the_certificate_is_issued_once_per_command_key() {
        let fx = fixture();
        let (_, csr) = csr();
        let command = create(&csr);
        let (client, first) = created(fx.executor.run("cmd-1", &command).await.unwrap());
        assert_eq!(
            first.spiffe_id,
            "spiffe://steward.test/agent/ledger-agent-prod"
        );
        assert!(first.not_after - first.not_before <= chrono::Duration::days(7));
        let (again_client, again) = created(fx.executor.run("cmd-1", &command).await.unwrap());
        assert_eq!((again_client, &again), (client.clone(), &first));

        let other = fixture();
        let (a, b) = tokio::join!(
            other.executor.run("cmd-2", &command),
            other.executor.run("cmd-2", &command)
        );
        let (a, b) = (created(a.unwrap()), created(b.unwrap()));
        assert_eq!(a, b, "two runs at once take the certificate the vault kept");

        // The vault keeps the (public) certificate under the agent, no key.
        let (_, stored) = fx
            .vault
            .get(&certificate_secret_id("agt-1"), Stage::Current)
            .await
            .unwrap()
            .unwrap();
        assert!(stored.expose().contains("BEGIN CERTIFICATE"));
        assert!(!stored.expose().contains("PRIVATE KEY"));

        // The IdP authenticates the registered certificate only, and binds the token to it.
        let presented = |x5t: &str, spiffe: &str| VerifiedClient {
            spiffe_id: spiffe.into(),
            agent_name: "ledger-agent-prod".into(),
            x5t_s256: x5t.into(),
            serial: first.serial.clone(),
            not_after: first.not_after,
        };
        let ok = presented(&first.x5t_s256, &first.spiffe_id);
        let token = fx
            .idp
            .grant(
                ClientAuth::Certificate {
                    client_id: &client,
                    certificate: &ok,
                },
                None,
                None,
                Utc::now(),
            )
            .unwrap();
        assert_eq!(token.binding, TokenBinding::Certificate);
        assert_eq!(token.token_type, "Bearer");
        let now = Utc::now().timestamp();
        let active = fx
            .idp
            .introspect_with(&token.access_token, None, Some(&ok), now);
        assert!(active.active, "{active:?}");
        assert_eq!(
            active.claims.unwrap()["cnf"]["x5t#S256"],
            first.x5t_s256.as_str()
        );
        let copied = fx.idp.introspect(&token.access_token, None, now);
        assert!(!copied.active);
        for wrong in [
            presented("another-thumbprint", &first.spiffe_id),
            presented(&first.x5t_s256, "spiffe://steward.test/agent/other-agent"),
        ] {
            let e = fx
                .idp
                .grant(
                    ClientAuth::Certificate {
                        client_id: &client,
                        certificate: &wrong,
                    },
                    None,
                    None,
                    Utc::now(),
                )
                .unwrap_err();
            assert_eq!(e.error, "invalid_client", "{e}");
        }
        // A certificate client has no secret to authenticate with otherwise.
        assert!(fx.idp.secret_ids(&client).await.unwrap().is_empty());
        let e = fx
            .idp
            .issue_token(&client, "guess", None, Utc::now())
            .unwrap_err();
        assert_eq!(e.error, "invalid_client");
    }

    /// A CSR that does not verify is no certificate: the command fails for good, nothing is
    /// registered at the IdP.
    #[tokio::test]
    async fn a_bad_csr_fails_the_command_for_good() {
        let fx = fixture();
        let (_, good) = csr();
        let bad = good.replace("CERTIFICATE REQUEST", "PUBLIC KEY");
        let e = fx.executor.run("cmd-1", &create(&bad)).await.unwrap_err();
        assert!(!e.retryable, "{e}");
        assert!(fx.idp.list_clients().await.unwrap().is_empty());
    }

    #[test]
    fn the_policy_sets_the_lifetime_and_trust_domain_within_limits() {
        let p = crate::policy_file::parse(EXAMPLE, "policy.example.toml").unwrap();
        assert_eq!(p.credentials.certificate_lifetime_days, 30);
        assert_eq!(p.credentials.trust_domain, "steward.local");
        let with = |extra: &str| format!("{EXAMPLE}\n[credentials]\n{extra}\n");
        let p = crate::policy_file::parse(
            &with("certificate_lifetime_days = 90\ntrust_domain = \"agents.example.com\""),
            "p.toml",
        )
        .unwrap();
        let order = p.credentials.certificate_order("csr");
        assert_eq!(
            (order.lifetime_days, order.trust_domain.as_str()),
            (90, "agents.example.com")
        );
        for (extra, expected) in [
            (
                "certificate_lifetime_days = 91",
                "certificate_lifetime_days = 91 is out of range",
            ),
            (
                "certificate_lifetime_days = 0",
                "certificate_lifetime_days = 0 is out of range",
            ),
            (
                "trust_domain = \"Steward.Example\"",
                "is not a SPIFFE trust domain",
            ),
        ] {
            let e = crate::policy_file::parse(&with(extra), "p.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{extra}: {e}");
        }
    }

    #[test]
    fn revocations_come_from_the_records() {
        use statemachines::credential::CertificateRevocation;
        let record = |serial: &str, revoked: Option<&str>| CertificateRecord {
            serial: serial.into(),
            spiffe_id: "spiffe://steward.test/agent/a".into(),
            x5t_s256: "x".into(),
            not_before: Utc::now(),
            not_after: Utc::now(),
            revoked: revoked.map(|reason| CertificateRevocation {
                at: Utc::now(),
                reason: reason.into(),
            }),
        };
        let mut agent: Agent = serde_json::from_value(serde_json::json!({
            "id": "agt-1", "name": "a", "owner": "o@example.com", "team": "t",
            "environment": "prod", "purpose": "p", "scopes": [], "token_lifetime_secs": 600,
            "expires_on": null, "status": "decommissioned", "client_id": null,
            "secret_version": null, "credential_issued_at": null, "requested_by": "o@example.com",
            "created_at": Utc::now(), "updated_at": Utc::now()
        }))
        .unwrap();
        agent.certificates = vec![
            record("0a01", Some("cessation_of_operation")),
            record("0a02", None),
            record("0a03", Some("key_compromise")),
        ];
        let r = revocations_of([&agent]);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r.get("0a01").unwrap().reason,
            RevocationReason::CessationOfOperation
        );
        assert_eq!(
            r.get("0a03").unwrap().reason,
            RevocationReason::KeyCompromise
        );
        assert!(r.get("0a02").is_none());
    }
}
