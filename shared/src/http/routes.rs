//! Every HTTP route Steward serves, declared once. The router mounts exactly these (one handler
//! per [`Op`], checked by the compiler), the typed client builds its URLs from them, and the
//! parity test walks them on the local server and through the Lambda handler.

use std::fmt::Write as _;

/// What a route does: one variant per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Health,
    SlackInteractions,
    OktaHookVerification,
    OktaHookDelivery,
    SharedSignals,
    Whoami,
    ListAgents,
    RequestAgent,
    KeyNonce,
    ShowAgent,
    AgentHistory,
    AgentGrants,
    AgentCertificate,
    ChangeScopes,
    ReassignOwner,
    Rotate,
    RotateKey,
    ConfirmKey,
    RotateCertificate,
    ConfirmCertificate,
    Decommission,
    Renew,
    Freeze,
    Unfreeze,
    ListShadowAgents,
    ClaimShadowAgent,
    ReleaseShadowAgent,
    Discover,
    Sweep,
    ListCampaigns,
    LaunchCampaign,
    CampaignProgress,
    CampaignReport,
    AnswerReview,
    ShowWorkflow,
    CancelWorkflow,
    ListApprovals,
    Approve,
    Deny,
    ExportAudit,
    AuditSeal,
    Notifications,
    HealthCounts,
    DeadLetters,
    IdpClients,
    CreateToken,
    ListTokens,
    RevokeToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    Post,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// An authenticated principal (a signed-in person, a person's personal token, or
    /// automation), checked against the role table (`roles::who_may`).
    Admin,
    /// Anyone; the route checks its own credential (Slack's signature, Okta's hook secret, the
    /// Shared Signals transmitter's keys) or reveals nothing (health: only that it answers).
    Public,
}

/// One route: what it does, where, and who may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub op: Op,
    pub verb: Verb,
    /// The path template; `{name}` segments are filled by [`Route::url`].
    pub path: &'static str,
    pub access: Access,
    /// Served only where the embedded default runs (the console's notices): elsewhere the
    /// route answers 404 and says so.
    pub embedded_only: bool,
}

const fn admin(op: Op, verb: Verb, path: &'static str) -> Route {
    Route {
        op,
        verb,
        path,
        access: Access::Admin,
        embedded_only: false,
    }
}

const fn public(op: Op, verb: Verb, path: &'static str) -> Route {
    Route {
        op,
        verb,
        path,
        access: Access::Public,
        embedded_only: false,
    }
}

use Verb::{Get, Post};

pub const HEALTH: Route = public(Op::Health, Get, "/health");
pub const SLACK_INTERACTIONS: Route = public(Op::SlackInteractions, Post, "/slack/interactions");
pub const OKTA_HOOK_VERIFICATION: Route = public(Op::OktaHookVerification, Get, "/hooks/okta");
pub const OKTA_HOOK_DELIVERY: Route = public(Op::OktaHookDelivery, Post, "/hooks/okta");
pub const SHARED_SIGNALS: Route = public(Op::SharedSignals, Post, "/ssf/events");

pub const WHOAMI: Route = admin(Op::Whoami, Get, "/api/whoami");
pub const LIST_AGENTS: Route = admin(Op::ListAgents, Get, "/api/agents");
pub const REQUEST_AGENT: Route = admin(Op::RequestAgent, Post, "/api/agents");
pub const KEY_NONCE: Route = admin(Op::KeyNonce, Post, "/api/key-nonces");
pub const SHOW_AGENT: Route = admin(Op::ShowAgent, Get, "/api/agents/{agent}");
pub const AGENT_HISTORY: Route = admin(Op::AgentHistory, Get, "/api/agents/{agent}/history");
pub const AGENT_GRANTS: Route = admin(Op::AgentGrants, Get, "/api/agents/{agent}/grants");
pub const AGENT_CERTIFICATE: Route =
    admin(Op::AgentCertificate, Get, "/api/agents/{agent}/certificate");
pub const CHANGE_SCOPES: Route = admin(Op::ChangeScopes, Post, "/api/agents/{agent}/scopes");
pub const REASSIGN_OWNER: Route = admin(Op::ReassignOwner, Post, "/api/agents/{agent}/owner");
pub const ROTATE: Route = admin(Op::Rotate, Post, "/api/agents/{agent}/rotate");
pub const ROTATE_KEY: Route = admin(Op::RotateKey, Post, "/api/agents/{agent}/keys");
pub const CONFIRM_KEY: Route = admin(
    Op::ConfirmKey,
    Post,
    "/api/agents/{agent}/keys/{kid}/in-use",
);
pub const ROTATE_CERTIFICATE: Route = admin(
    Op::RotateCertificate,
    Post,
    "/api/agents/{agent}/certificates",
);
pub const CONFIRM_CERTIFICATE: Route = admin(
    Op::ConfirmCertificate,
    Post,
    "/api/agents/{agent}/certificates/{certificate}/in-use",
);
pub const DECOMMISSION: Route = admin(Op::Decommission, Post, "/api/agents/{agent}/decommission");
pub const RENEW: Route = admin(Op::Renew, Post, "/api/agents/{agent}/renew");
pub const FREEZE: Route = admin(Op::Freeze, Post, "/api/agents/{agent}/freeze");
pub const UNFREEZE: Route = admin(Op::Unfreeze, Post, "/api/agents/{agent}/unfreeze");
pub const LIST_SHADOW_AGENTS: Route = admin(Op::ListShadowAgents, Get, "/api/shadow-agents");
pub const CLAIM_SHADOW_AGENT: Route = admin(
    Op::ClaimShadowAgent,
    Post,
    "/api/shadow-agents/{client}/claim",
);
pub const RELEASE_SHADOW_AGENT: Route = admin(
    Op::ReleaseShadowAgent,
    Post,
    "/api/shadow-agents/{client}/release",
);
pub const DISCOVER: Route = admin(Op::Discover, Post, "/api/discovery");
pub const SWEEP: Route = admin(Op::Sweep, Post, "/api/sweep");
pub const LIST_CAMPAIGNS: Route = admin(Op::ListCampaigns, Get, "/api/campaigns");
pub const LAUNCH_CAMPAIGN: Route = admin(Op::LaunchCampaign, Post, "/api/campaigns");
pub const CAMPAIGN_PROGRESS: Route = admin(Op::CampaignProgress, Get, "/api/campaigns/{id}");
pub const CAMPAIGN_REPORT: Route = admin(Op::CampaignReport, Get, "/api/campaigns/{id}/report");
pub const ANSWER_REVIEW: Route = admin(Op::AnswerReview, Post, "/api/reviews/{item}/decision");
pub const SHOW_WORKFLOW: Route = admin(Op::ShowWorkflow, Get, "/api/workflows/{id}");
pub const CANCEL_WORKFLOW: Route = admin(Op::CancelWorkflow, Post, "/api/workflows/{id}/cancel");
pub const LIST_APPROVALS: Route = admin(Op::ListApprovals, Get, "/api/approvals");
pub const APPROVE: Route = admin(Op::Approve, Post, "/api/approvals/{id}/approve");
pub const DENY: Route = admin(Op::Deny, Post, "/api/approvals/{id}/deny");
pub const EXPORT_AUDIT: Route = admin(Op::ExportAudit, Get, "/api/audit");
pub const AUDIT_SEAL: Route = admin(Op::AuditSeal, Get, "/api/audit/seal");
pub const NOTIFICATIONS: Route = Route {
    embedded_only: true,
    ..admin(Op::Notifications, Get, "/api/notifications")
};
pub const HEALTH_COUNTS: Route = admin(Op::HealthCounts, Get, "/api/health");
pub const DEAD_LETTERS: Route = admin(Op::DeadLetters, Get, "/api/dead-letters");
pub const IDP_CLIENTS: Route = admin(Op::IdpClients, Get, "/api/idp/clients");
pub const CREATE_TOKEN: Route = admin(Op::CreateToken, Post, "/api/tokens");
pub const LIST_TOKENS: Route = admin(Op::ListTokens, Get, "/api/tokens");
pub const REVOKE_TOKEN: Route = admin(Op::RevokeToken, Post, "/api/tokens/{id}/revoke");

/// The whole surface, in the order the docs list it.
pub const ROUTES: &[Route] = &[
    HEALTH,
    SLACK_INTERACTIONS,
    OKTA_HOOK_VERIFICATION,
    OKTA_HOOK_DELIVERY,
    SHARED_SIGNALS,
    WHOAMI,
    LIST_AGENTS,
    REQUEST_AGENT,
    KEY_NONCE,
    SHOW_AGENT,
    AGENT_HISTORY,
    AGENT_GRANTS,
    AGENT_CERTIFICATE,
    CHANGE_SCOPES,
    REASSIGN_OWNER,
    ROTATE,
    ROTATE_KEY,
    CONFIRM_KEY,
    ROTATE_CERTIFICATE,
    CONFIRM_CERTIFICATE,
    DECOMMISSION,
    RENEW,
    FREEZE,
    UNFREEZE,
    LIST_SHADOW_AGENTS,
    CLAIM_SHADOW_AGENT,
    RELEASE_SHADOW_AGENT,
    DISCOVER,
    SWEEP,
    LIST_CAMPAIGNS,
    LAUNCH_CAMPAIGN,
    CAMPAIGN_PROGRESS,
    CAMPAIGN_REPORT,
    ANSWER_REVIEW,
    SHOW_WORKFLOW,
    CANCEL_WORKFLOW,
    LIST_APPROVALS,
    APPROVE,
    DENY,
    EXPORT_AUDIT,
    AUDIT_SEAL,
    NOTIFICATIONS,
    HEALTH_COUNTS,
    DEAD_LETTERS,
    IDP_CLIENTS,
    CREATE_TOKEN,
    LIST_TOKENS,
    REVOKE_TOKEN,
];

impl Route {
    /// The names of the path's `{…}` segments, in order.
    pub fn params(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }

    /// The path with `args` in its `{…}` segments, in order, each percent-encoded.
    ///
    /// # Panics
    /// When `args` has not one value per segment: a programming error in the caller.
    pub fn url(&self, args: &[&str]) -> String {
        let mut args = args.iter();
        let mut out = String::with_capacity(self.path.len() + 16);
        for (i, segment) in self.path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            if segment.starts_with('{') {
                let value = args
                    .next()
                    .unwrap_or_else(|| panic!("{} needs a value for {segment}", self.path));
                encode_segment(value, &mut out);
            } else {
                out.push_str(segment);
            }
        }
        assert!(args.next().is_none(), "{} got too many values", self.path);
        out
    }

    /// `METHOD /path`, as logs and errors name a route.
    pub fn name(&self) -> String {
        format!("{} {}", self.verb.as_str(), self.path)
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (and `@`, common in names).
fn encode_segment(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_operation_has_one_route_and_every_route_is_distinct() {
        let ops: HashSet<Op> = ROUTES.iter().map(|r| r.op).collect();
        assert_eq!(ops.len(), ROUTES.len(), "an operation is listed twice");
        let places: HashSet<(Verb, &str)> = ROUTES.iter().map(|r| (r.verb, r.path)).collect();
        assert_eq!(
            places.len(),
            ROUTES.len(),
            "two routes share a method and path"
        );
        for r in ROUTES {
            assert_eq!(
                r.access == Access::Admin,
                r.path.starts_with("/api/"),
                "{}: admin routes live under /api/, public ones outside it",
                r.name()
            );
        }
    }

    #[test]
    fn urls_fill_and_encode_segments() {
        assert_eq!(SHOW_AGENT.url(&["a b/c"]), "/api/agents/a%20b%2Fc");
        assert_eq!(
            APPROVE.url(&["apr-1"]),
            "/api/approvals/apr-1/approve".to_string()
        );
        assert_eq!(LIST_AGENTS.url(&[]), "/api/agents");
        assert_eq!(
            CLAIM_SHADOW_AGENT.params().collect::<Vec<_>>(),
            vec!["client"]
        );
    }

    #[test]
    #[should_panic(expected = "needs a value")]
    fn a_missing_segment_is_a_programming_error() {
        let _ = ROTATE.url(&[]);
    }
}
