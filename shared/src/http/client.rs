//! The typed admin client: the CLI (and anything else) calls the admin API through it, with the
//! routes of [`super::routes`] and the bodies and replies of [`crate::admin`], so no path or
//! body shape is written twice.

use super::routes::{self, Route, Verb};
use crate::admin::*;
use crate::engine::Started;
use crate::engine::detection::Detected;
use crate::engine::discovery::DiscoveryReport;
use crate::engine::lifecycle::SweepReport;
use crate::engine::reviews::CampaignProgress;
use crate::secret::Secret;
use serde::Serialize;
use serde::de::DeserializeOwned;
use statemachines::Agent;
use std::time::Duration;

/// Every call's deadline: the API answers in milliseconds; a hung server must not hang the CLI.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach steward at {base} (is `steward serve` running?): {message}")]
    Unreachable { base: String, message: String },
    /// The API refused the request; the body says what was wrong.
    #[error("{}", describe(*.status, .body))]
    Refused { status: u16, body: ErrorBody },
    #[error(
        "steward answered {route} with {status} and a body the client does not understand: {message}"
    )]
    Unexpected {
        route: String,
        status: u16,
        message: String,
    },
    /// The base URL is not one the bearer token may be sent to: nothing was sent.
    #[error("not calling {base}: {why}")]
    Insecure { base: String, why: String },
}

impl ClientError {
    /// The HTTP status of a refusal, if the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            ClientError::Unreachable { .. } | ClientError::Insecure { .. } => None,
        }
    }
}

/// An error body as lines a person can act on: the error, its status, then each reason.
pub fn describe(status: u16, body: &ErrorBody) -> String {
    let mut out = format!("{} ({status})", body.error);
    for r in &body.reasons {
        out.push_str(&format!("\n  - {}: {}", r.field, r.message));
    }
    out
}

/// A client of one Steward admin API.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

/// How the CLI names itself to the server (the audit trail's `source` is `cli`).
pub const USER_AGENT_PREFIX: &str = "steward-cli/";

/// Whether the bearer token may be sent to `base`: https anywhere, plain http only to this
/// machine (127.0.0.0/8, ::1, `localhost`), where nobody on the network reads it. Anything else
/// would hand the token (an admin token, or a person's session) to whoever watches the wire.
pub fn check_base(base: &str) -> Result<(), ClientError> {
    let refuse = |why: String| ClientError::Insecure {
        base: base.to_string(),
        why,
    };
    let url = url::Url::parse(base).map_err(|e| {
        refuse(format!(
            "not a URL ({e}); give one such as https://steward.example.com"
        ))
    })?;
    check_url(&url).map_err(refuse)
}

/// [`check_base`] for a parsed URL (also every redirect's target): the reason when refused.
fn check_url(url: &url::Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if crate::jwks::is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "plain http would send the bearer token unencrypted to {}; use https:// (plain http \
             only to a loopback address: 127.0.0.0/8, ::1 or localhost)",
            url.host_str().unwrap_or("?")
        )),
        other => Err(format!(
            "`{other}:` is not http(s); use https:// (plain http only to a loopback address)"
        )),
    }
}

/// Redirects are followed only to where [`check_base`] would let the token go (reqwest drops
/// the Authorization header on a redirect to another host; this also keeps an https server
/// from redirecting the call to plain http).
fn redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error("too many redirects");
        }
        match check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(why) => {
                let why = format!("refused a redirect to {}: {why}", attempt.url());
                attempt.error(why)
            }
        }
    })
}

/// No query string.
const NO_QUERY: Option<&()> = None;
/// No body.
const NO_BODY: Option<&()> = None;

impl AdminClient {
    /// `base`: the server's URL (`http://127.0.0.1:8080`); `token`: its admin token. Refused
    /// ([`ClientError::Insecure`]) unless `base` is https or plain http to this machine.
    pub fn new(base: &str, token: Secret) -> Result<Self, ClientError> {
        check_base(base)?;
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(format!("{USER_AGENT_PREFIX}{}", env!("CARGO_PKG_VERSION")))
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .redirect(redirects())
            .build()
            .map_err(|e| ClientError::Unreachable {
                base: base.into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        route: &Route,
        args: &[&str],
        query: Option<&(impl Serialize + ?Sized)>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let url = format!("{}{}", self.base, route.url(args));
        let method = match route.verb {
            Verb::Get => reqwest::Method::GET,
            Verb::Post => reqwest::Method::POST,
        };
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose());
        if let Some(q) = query {
            req = req.query(q);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            base: self.base.clone(),
            message: e.to_string(),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(unreachable)?.to_vec();
        if status >= 400 {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => ClientError::Refused { status, body },
                Err(_) => ClientError::Unexpected {
                    route: route.name(),
                    status,
                    message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                },
            });
        }
        Ok((status, bytes))
    }

    /// Calls `route` and reads its JSON reply as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        route: &Route,
        args: &[&str],
        query: Option<&(impl Serialize + ?Sized)>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.send(route, args, query, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            route: route.name(),
            status,
            message: e.to_string(),
        })
    }

    /// Calls `route` and returns its reply as text (the audit export, reports).
    pub async fn text(
        &self,
        route: &Route,
        args: &[&str],
        query: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<String, ClientError> {
        let (_, bytes) = self.send(route, args, query, NO_BODY).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(&routes::HEALTH, &[], NO_QUERY, NO_BODY).await
    }

    /// The queue depth, dead letters and refused requests behind health.
    pub async fn health_counts(&self) -> Result<HealthCounts, ClientError> {
        self.call(&routes::HEALTH_COUNTS, &[], NO_QUERY, NO_BODY)
            .await
    }

    /// Who the server takes the caller to be.
    pub async fn whoami(&self) -> Result<Me, ClientError> {
        self.call(&routes::WHOAMI, &[], NO_QUERY, NO_BODY).await
    }

    pub async fn agents(&self) -> Result<Vec<Agent>, ClientError> {
        self.call(&routes::LIST_AGENTS, &[], NO_QUERY, NO_BODY)
            .await
    }

    pub async fn request_agent(&self, body: &AgentRequestBody) -> Result<Started, ClientError> {
        self.call(&routes::REQUEST_AGENT, &[], NO_QUERY, Some(body))
            .await
    }

    pub async fn rotate_key(
        &self,
        agent: &str,
        body: &crate::admin::KeyBody,
    ) -> Result<Started, ClientError> {
        self.call(&routes::ROTATE_KEY, &[agent], NO_QUERY, Some(body))
            .await
    }

    pub async fn rotate_certificate(
        &self,
        agent: &str,
        body: &crate::admin::CertificateBody,
    ) -> Result<Started, ClientError> {
        self.call(&routes::ROTATE_CERTIFICATE, &[agent], NO_QUERY, Some(body))
            .await
    }

    pub async fn confirm_key(
        &self,
        agent: &str,
        kid: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(&routes::CONFIRM_KEY, &[agent, kid], NO_QUERY, NO_BODY)
            .await
    }

    pub async fn confirm_certificate(
        &self,
        agent: &str,
        certificate: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(
            &routes::CONFIRM_CERTIFICATE,
            &[agent, certificate],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }

    pub async fn key_nonce(&self) -> Result<crate::admin::KeyNonce, ClientError> {
        self.call(&routes::KEY_NONCE, &[], NO_QUERY, NO_BODY).await
    }

    pub async fn agent(&self, agent: &str) -> Result<AgentView, ClientError> {
        self.call(&routes::SHOW_AGENT, &[agent], NO_QUERY, NO_BODY)
            .await
    }

    /// A `tls_client_auth` agent's current certificate, PEM.
    pub async fn agent_certificate(&self, agent: &str) -> Result<String, ClientError> {
        self.text(&routes::AGENT_CERTIFICATE, &[agent], NO_QUERY)
            .await
    }

    pub async fn agent_history(&self, agent: &str) -> Result<Vec<AgentHistoryEntry>, ClientError> {
        self.call(&routes::AGENT_HISTORY, &[agent], NO_QUERY, NO_BODY)
            .await
    }

    pub async fn change_scopes(
        &self,
        agent: &str,
        body: &ScopeChangeBody,
    ) -> Result<Started, ClientError> {
        self.call(&routes::CHANGE_SCOPES, &[agent], NO_QUERY, Some(body))
            .await
    }

    pub async fn reassign_owner(
        &self,
        agent: &str,
        body: &OwnerBody,
    ) -> Result<OwnerAssigned, ClientError> {
        self.call(&routes::REASSIGN_OWNER, &[agent], NO_QUERY, Some(body))
            .await
    }

    pub async fn rotate(&self, agent: &str, body: &RotateBody) -> Result<Started, ClientError> {
        self.call(&routes::ROTATE, &[agent], NO_QUERY, Some(body))
            .await
    }

    pub async fn decommission(
        &self,
        agent: &str,
        body: &DecommissionBody,
    ) -> Result<Started, ClientError> {
        self.call(&routes::DECOMMISSION, &[agent], NO_QUERY, Some(body))
            .await
    }

    pub async fn renew(&self, agent: &str, body: &RenewBody) -> Result<Started, ClientError> {
        self.call(&routes::RENEW, &[agent], NO_QUERY, Some(body))
            .await
    }

    pub async fn freeze(&self, agent: &str, body: &FreezeBody) -> Result<Detected, ClientError> {
        self.call(&routes::FREEZE, &[agent], NO_QUERY, Some(body))
            .await
    }

    pub async fn unfreeze(&self, agent: &str, body: &FreezeBody) -> Result<Started, ClientError> {
        self.call(&routes::UNFREEZE, &[agent], NO_QUERY, Some(body))
            .await
    }

    pub async fn shadow_agents(&self) -> Result<Vec<Agent>, ClientError> {
        self.call(&routes::LIST_SHADOW_AGENTS, &[], NO_QUERY, NO_BODY)
            .await
    }

    pub async fn claim_shadow_agent(
        &self,
        client: &str,
        body: &ClaimBody,
    ) -> Result<Started, ClientError> {
        self.call(&routes::CLAIM_SHADOW_AGENT, &[client], NO_QUERY, Some(body))
            .await
    }

    pub async fn release_shadow_agent(
        &self,
        client: &str,
        body: &ReleaseBody,
    ) -> Result<Released, ClientError> {
        self.call(
            &routes::RELEASE_SHADOW_AGENT,
            &[client],
            NO_QUERY,
            Some(body),
        )
        .await
    }

    pub async fn discover(&self) -> Result<DiscoveryReport, ClientError> {
        self.call(&routes::DISCOVER, &[], NO_QUERY, NO_BODY).await
    }

    pub async fn sweep(&self) -> Result<SweepReport, ClientError> {
        self.call(&routes::SWEEP, &[], NO_QUERY, NO_BODY).await
    }

    pub async fn campaigns(&self) -> Result<Vec<CampaignProgress>, ClientError> {
        self.call(&routes::LIST_CAMPAIGNS, &[], NO_QUERY, NO_BODY)
            .await
    }

    pub async fn launch_campaign(&self, body: &CampaignBody) -> Result<Started, ClientError> {
        self.call(&routes::LAUNCH_CAMPAIGN, &[], NO_QUERY, Some(body))
            .await
    }

    pub async fn campaign(&self, id: &str) -> Result<CampaignProgress, ClientError> {
        self.call(&routes::CAMPAIGN_PROGRESS, &[id], NO_QUERY, NO_BODY)
            .await
    }

    /// The evidence report as text in `format` (`json`, `csv` or `md`).
    pub async fn campaign_report(&self, id: &str, format: &str) -> Result<String, ClientError> {
        let q = ReportQuery {
            format: Some(format.into()),
        };
        self.text(&routes::CAMPAIGN_REPORT, &[id], Some(&q)).await
    }

    pub async fn answer_review(
        &self,
        item: &str,
        body: &ReviewAnswerBody,
    ) -> Result<ReviewAnswered, ClientError> {
        self.call(&routes::ANSWER_REVIEW, &[item], NO_QUERY, Some(body))
            .await
    }

    pub async fn workflow(&self, id: &str) -> Result<WorkflowView, ClientError> {
        self.call(&routes::SHOW_WORKFLOW, &[id], NO_QUERY, NO_BODY)
            .await
    }

    pub async fn cancel_workflow(
        &self,
        id: &str,
        body: &CancelBody,
    ) -> Result<CancelRequested, ClientError> {
        self.call(&routes::CANCEL_WORKFLOW, &[id], NO_QUERY, Some(body))
            .await
    }

    pub async fn approvals(&self, all: bool) -> Result<Vec<ApprovalView>, ClientError> {
        let q = ApprovalsQuery { all };
        self.call(&routes::LIST_APPROVALS, &[], Some(&q), NO_BODY)
            .await
    }

    /// One approval by id (pending or decided), from the listing: `None` when there is none.
    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalView>, ClientError> {
        Ok(self
            .approvals(true)
            .await?
            .into_iter()
            .find(|a| a.request.id == id))
    }

    pub async fn approve(
        &self,
        id: &str,
        body: &DecisionBody,
    ) -> Result<DecisionQueued, ClientError> {
        self.call(&routes::APPROVE, &[id], NO_QUERY, Some(body))
            .await
    }

    pub async fn deny(&self, id: &str, body: &DecisionBody) -> Result<DecisionQueued, ClientError> {
        self.call(&routes::DENY, &[id], NO_QUERY, Some(body)).await
    }

    /// The whole audit trail, page by page: `each` gets every JSON line in seq order (so an
    /// export of millions of records is never held at once) and returns `false` to stop.
    pub async fn audit_lines(&self, each: impl FnMut(&str) -> bool) -> Result<(), ClientError> {
        self.audit_lines_by(AUDIT_PAGE_MAX, each).await
    }

    /// [`AdminClient::audit_lines`], asking for `page` records at a time (at most
    /// [`AUDIT_PAGE_MAX`]).
    pub async fn audit_lines_by(
        &self,
        page: usize,
        mut each: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let size = page.clamp(1, AUDIT_PAGE_MAX);
        let mut after = 0;
        loop {
            let before = after;
            let q = AuditQuery {
                after,
                limit: Some(size),
            };
            let page = self.text(&routes::EXPORT_AUDIT, &[], Some(&q)).await?;
            let mut rows = 0;
            for line in page.lines() {
                rows += 1;
                if let Some(seq) = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["unmapped"]["audit_seq"].as_u64())
                {
                    after = after.max(seq);
                }
                if !each(line) {
                    return Ok(());
                }
            }
            // A short page is the last; a page that did not move the cursor would repeat forever.
            if rows < size || after == before {
                return Ok(());
            }
        }
    }

    /// The whole audit trail as JSON lines, in one string.
    pub async fn audit(&self) -> Result<String, ClientError> {
        let mut out = String::new();
        self.audit_lines(|line| {
            out.push_str(line);
            out.push('\n');
            true
        })
        .await?;
        Ok(out)
    }

    /// The latest signed seal of the trail.
    pub async fn audit_seal(&self) -> Result<crate::audit::seal::Seal, ClientError> {
        self.call(&routes::AUDIT_SEAL, &[], NO_QUERY, NO_BODY).await
    }

    pub async fn notifications(&self) -> Result<serde_json::Value, ClientError> {
        self.call(&routes::NOTIFICATIONS, &[], NO_QUERY, NO_BODY)
            .await
    }

    pub async fn dead_letters(&self) -> Result<Vec<crate::ports::queue::DeadLetter>, ClientError> {
        self.call(&routes::DEAD_LETTERS, &[], NO_QUERY, NO_BODY)
            .await
    }

    pub async fn idp_clients(&self) -> Result<Vec<IdpClientView>, ClientError> {
        self.call(&routes::IDP_CLIENTS, &[], NO_QUERY, NO_BODY)
            .await
    }

    pub async fn create_token(&self, body: &TokenCreateBody) -> Result<TokenCreated, ClientError> {
        self.call(&routes::CREATE_TOKEN, &[], NO_QUERY, Some(body))
            .await
    }

    pub async fn tokens(&self) -> Result<Vec<TokenView>, ClientError> {
        self.call(&routes::LIST_TOKENS, &[], NO_QUERY, NO_BODY)
            .await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenView, ClientError> {
        self.call(
            &routes::REVOKE_TOKEN,
            &[id],
            NO_QUERY,
            Some(&serde_json::json!({})),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_over_https_or_to_this_machine_only() {
        for ok in [
            "https://steward.example.com",
            "https://203.0.113.7:8443/",
            "http://127.0.0.1:8080",
            "http://127.1.2.3:9",
            "http://[::1]:8080",
            "http://localhost:8080",
            "http://LOCALHOST",
        ] {
            assert!(check_base(ok).is_ok(), "{ok}");
            assert!(AdminClient::new(ok, Secret::new("t")).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com",
            "http://steward.example.com:8080/",
            "http://10.0.0.5:8080",
            "http://0.0.0.0:8080",
            "http://[::ffff:7f00:1]:8080",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
        ] {
            let e = AdminClient::new(bad, Secret::new("t"))
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            let text = e.to_string();
            assert!(matches!(e, ClientError::Insecure { .. }), "{bad}: {text}");
            assert!(
                text.contains("use https://") && text.contains("plain http"),
                "{bad}: {text}"
            );
            assert_eq!(e.status(), None);
        }
        for bad in [
            "ftp://127.0.0.1/",
            "127.0.0.1:8080",
            "steward.example.com",
            "",
        ] {
            let e = check_base(bad).expect_err(bad);
            assert!(e.to_string().contains("https://"), "{bad}: {e}");
        }
    }
}
