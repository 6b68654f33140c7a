//! One function per operation of the route table: each takes the authenticated caller (admin
//! routes) and the typed body or query, calls the engine, and returns a typed reply or an
//! [`ApiError`] with its status.

use super::routes::{Op, Route, Verb};
use super::{ApiError, App, Body, Caller, Params};
use crate::admin::*;
use crate::audit;
use crate::engine::Started;
use crate::engine::discovery::DiscoveryReport;
use crate::engine::lifecycle::SweepReport;
use crate::engine::reviews::CampaignProgress;
use crate::inbound::Reply;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use statemachines::rotation::RotationReason;
use statemachines::{Actor, Agent, Decision};

type Answer<T> = Result<T, ApiError>;

/// The handler of `route`: the match is exhaustive, so an operation without a handler does
/// not compile.
pub(super) fn handler(route: &Route) -> MethodRouter<App> {
    let r: MethodRouter<App> = match route.op {
        Op::Health => on(route, health),
        Op::SlackInteractions => on(route, slack_interactions),
        Op::OktaHookVerification => on(route, okta_hook),
        Op::OktaHookDelivery => on(route, okta_hook),
        Op::SharedSignals => on(route, shared_signals),
        Op::Whoami => on(route, whoami),
        Op::ListAgents => on(route, list_agents),
        Op::RequestAgent => on(route, request_agent),
        Op::KeyNonce => on(route, key_nonce),
        Op::ShowAgent => on(route, show_agent),
        Op::AgentHistory => on(route, agent_history),
        Op::AgentGrants => on(route, agent_grants),
        Op::AgentCertificate => on(route, agent_certificate),
        Op::ChangeScopes => on(route, change_scopes),
        Op::ReassignOwner => on(route, reassign_owner),
        Op::Rotate => on(route, rotate),
        Op::RotateKey => on(route, rotate_key),
        Op::ConfirmKey => on(route, confirm_key),
        Op::ConfirmCertificate => on(route, confirm_certificate),
        Op::RotateCertificate => on(route, rotate_certificate),
        Op::Decommission => on(route, decommission),
        Op::Renew => on(route, renew),
        Op::Freeze => on(route, freeze),
        Op::Unfreeze => on(route, unfreeze),
        Op::ListShadowAgents => on(route, list_shadow_agents),
        Op::ClaimShadowAgent => on(route, claim_shadow_agent),
        Op::ReleaseShadowAgent => on(route, release_shadow_agent),
        Op::Discover => on(route, discover),
        Op::Sweep => on(route, sweep),
        Op::ListCampaigns => on(route, list_campaigns),
        Op::LaunchCampaign => on(route, launch_campaign),
        Op::CampaignProgress => on(route, campaign_progress),
        Op::CampaignReport => on(route, campaign_report),
        Op::AnswerReview => on(route, answer_review),
        Op::ShowWorkflow => on(route, show_workflow),
        Op::CancelWorkflow => on(route, cancel_workflow),
        Op::ListApprovals => on(route, list_approvals),
        Op::Approve => on(route, approve),
        Op::Deny => on(route, deny),
        Op::ExportAudit => on(route, export_audit),
        Op::AuditSeal => on(route, audit_seal),
        Op::Notifications => on(route, notifications),
        Op::HealthCounts => on(route, health_counts),
        Op::DeadLetters => on(route, dead_letters),
        Op::IdpClients => on(route, idp_clients),
        Op::CreateToken => on(route, create_token),
        Op::ListTokens => on(route, list_tokens),
        Op::RevokeToken => on(route, revoke_token),
    };
    match super::body_limit(route) {
        Some(limit) => r.layer(axum::extract::DefaultBodyLimit::max(limit)),
        None => r,
    }
}

/// `handler` at the route's method, as the table declares it.
fn on<H, T>(route: &Route, handler: H) -> MethodRouter<App>
where
    H: axum::handler::Handler<T, App>,
    T: 'static,
{
    match route.verb {
        Verb::Get => get(handler),
        Verb::Post => post(handler),
    }
}

/// 202 for a new workflow, 200 when the identical request was already received.
fn started(s: Started) -> (StatusCode, Json<Started>) {
    let status = if s.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(s))
}

fn reply(r: Result<Reply, crate::engine::EngineError>) -> Response {
    match r {
        Ok(reply) => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
            match reply.body {
                Some(b) => (status, Json(b)).into_response(),
                None => status.into_response(),
            }
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

// ---------- public edges ----------

/// Liveness only: anyone may ask, so it touches no storage and discloses no figures.
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Slack's interactivity requests, signed by Slack (not by an admin credential).
async fn slack_interactions(
    State(app): State<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(slack) = &app.slack else {
        app.refuse("Slack interaction", "Slack is not configured on this deployment (set the Slack bot token and signing secret)").await;
        return ApiError::not_found("Slack is not configured on this deployment").into_response();
    };
    use crate::inbound::slack as interactions;
    // Anyone can send a forged or stale signature: counted and recorded within the window's
    // budget, like every unauthenticated refusal, not one audit write each.
    let now = app.engine.clock.now();
    if let Some(why) = interactions::unauthenticated(&slack.signing_secret, &headers, &body, now) {
        app.refuse(interactions::REFUSED, &why).await;
        return reply(Ok(interactions::unauthenticated_reply(&why)));
    }
    reply(
        interactions::handle(
            &app.engine,
            &slack.signing_secret,
            Some(&slack.web),
            &headers,
            &body,
        )
        .await,
    )
}

/// Okta event hooks: the one-time verification GET and the deliveries, checked against the
/// hook's Authorization value.
async fn okta_hook(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(secret) = &app.okta_hook_secret else {
        app.refuse(
            "Okta event hook request",
            "the Okta event hook is not configured on this deployment (set its hook secret)",
        )
        .await;
        return ApiError::not_found("the Okta event hook is not configured on this deployment")
            .into_response();
    };
    use crate::inbound::okta_hook;
    // Anyone can send a wrong or missing Authorization: counted and recorded within the
    // window's budget, like every unauthenticated refusal, not one audit write each.
    if let Some(why) = okta_hook::unauthenticated(secret, &headers) {
        app.refuse(okta_hook::REFUSED, why).await;
        return reply(Ok(okta_hook::unauthenticated_reply(why)));
    }
    reply(okta_hook::handle(&app.engine, secret, method.as_str(), &headers, &body).await)
}

/// Shared Signals pushes (RFC 8935), verified against the transmitter's keys.
async fn shared_signals(
    State(app): State<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(receiver) = &app.ssf else {
        app.refuse("Shared Signals SET", "no Shared Signals transmitter is configured on this deployment (set its issuer, audience and JWKS URL)").await;
        // RFC 8935 §2.3's error shape, as a transmitter expects.
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"err": "invalid_request", "description": "no Shared Signals transmitter is configured on this deployment"})),
        )
            .into_response();
    };
    use crate::inbound::ssf;
    // A SET that does not verify is counted and recorded within the window's budget, like
    // every unauthenticated refusal, not one audit write each.
    match receiver
        .verify(&headers, &body, app.engine.clock.now())
        .await
    {
        Ok(set) => reply(ssf::accept_verified(&app.engine, set).await),
        Err(rejected) => {
            app.refuse(ssf::REFUSED, &rejected.to_string()).await;
            reply(Ok(rejected.reply()))
        }
    }
}

// ---------- agents ----------

async fn whoami(caller: Caller) -> Answer<Json<Me>> {
    Ok(Json(match caller.principal {
        super::Principal::Person { id, token_id, .. } => Me {
            kind: "person".into(),
            id,
            token_id: Some(token_id),
        },
        super::Principal::Automation { name } => Me {
            kind: "automation".into(),
            id: name,
            token_id: None,
        },
    }))
}

async fn list_agents(State(app): State<App>, _: Caller) -> Answer<Json<Vec<Agent>>> {
    Ok(Json(app.engine.store.agents().await?))
}

async fn request_agent(
    State(app): State<App>,
    caller: Caller,
    Body(b): Body<AgentRequestBody>,
) -> Answer<impl IntoResponse> {
    // The caller is the requester, whoever the owner is; the record keeps both.
    let mut request = b.request;
    if request.public_key.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "public_key is not a request field: send public_jwk and key_proof",
        ));
    }
    // A tls_client_auth agent's CSR is checked before the request is taken: it must verify
    // (its self-signature proves the key) and claim nothing Steward trusts but the agent.
    if let Some(csr) = &request.csr
        && request.credential == statemachines::credential::CredentialKind::TlsClientAuth
    {
        let actor = Actor::Person(caller.acting());
        app.engine
            .accept_agent_csr(&request.name, csr, &actor)
            .await?;
    }
    match (b.public_jwk, b.key_proof) {
        (None, None) => {}
        (Some(jwk), Some(proof)) => {
            let actor = Actor::Person(caller.acting());
            request.public_key = Some(
                app.engine
                    .accept_agent_key(&request.name, &jwk, &proof, &actor)
                    .await?,
            );
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "public_jwk and key_proof go together: the key, and a JWT it signed over a nonce from POST /api/key-nonces",
            ));
        }
    }
    Ok(started(
        app.engine.request_agent(request, &caller.acting()).await?,
    ))
}

/// `POST /api/agents/{agent}/keys`: rotate a key-bound agent to a new key the caller proved.
async fn rotate_key(
    State(app): State<App>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(b): Body<KeyBody>,
) -> Answer<impl IntoResponse> {
    let record = find(&app, &agent).await?;
    let person = caller.acting();
    let key = app
        .engine
        .accept_agent_key(
            &record.name,
            &b.public_jwk,
            &b.key_proof,
            &Actor::Person(person.clone()),
        )
        .await?;
    Ok(started(
        app.engine
            .request_key_rotation(&record.id, key, &person)
            .await?,
    ))
}

/// `POST /api/agents/{agent}/certificates`: rotate a `tls_client_auth` agent's certificate
/// to one issued from the new CSR (checked as at onboarding).
async fn rotate_certificate(
    State(app): State<App>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(b): Body<crate::admin::CertificateBody>,
) -> Answer<impl IntoResponse> {
    let record = find(&app, &agent).await?;
    let person = caller.acting();
    Ok(started(
        app.engine
            .request_certificate_rotation(&record.id, &b.csr, &person)
            .await?,
    ))
}

/// `GET /api/agents/{agent}/certificate`: a `tls_client_auth` agent's current client
/// certificate, PEM (public: the key stays with the agent).
async fn agent_certificate(
    State(app): State<App>,
    _: Caller,
    Path(agent): Path<String>,
) -> Answer<Response> {
    let record = find(&app, &agent).await?;
    let Some(stored) = app
        .engine
        .agent_certificate(&record)
        .await
        .map_err(ApiError::unavailable)?
    else {
        let why =
            if record.credential_kind == statemachines::credential::CredentialKind::TlsClientAuth {
                format!(
                    "{} has no certificate yet ({}): it is issued when its client is created",
                    record.name,
                    record.status.as_str()
                )
            } else {
                format!(
                    "{} authenticates with `{}`, not a certificate (tls_client_auth)",
                    record.name,
                    record.credential_kind.as_str()
                )
            };
        return Err(ApiError::not_found(why));
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-pem-file"),
    );
    // What a script needs without parsing the PEM.
    for (name, value) in [
        ("x-certificate-serial", stored.record.serial.as_str()),
        ("x-certificate-spiffe-id", stored.record.spiffe_id.as_str()),
        ("x-certificate-x5t-s256", stored.record.x5t_s256.as_str()),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    Ok((headers, stored.pem).into_response())
}

/// `POST /api/agents/{agent}/keys/{kid}/in-use`: the owner confirms the agent switched to the
/// new key, where the identity provider does not report which key signed a grant.
async fn confirm_key(
    State(app): State<App>,
    caller: Caller,
    Path((agent, kid)): Path<(String, String)>,
) -> Answer<impl IntoResponse> {
    let workflow_id = app
        .engine
        .confirm_key_in_use(&agent, &kid, &caller.acting())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "workflow_id": workflow_id })),
    ))
}

/// `POST /api/agents/{agent}/certificates/{certificate}/in-use`: the owner confirms the agent
/// switched to its new certificate (by serial or `x5t#S256`), where the identity provider does
/// not report which certificate a grant used.
async fn confirm_certificate(
    State(app): State<App>,
    caller: Caller,
    Path((agent, certificate)): Path<(String, String)>,
) -> Answer<impl IntoResponse> {
    let workflow_id = app
        .engine
        .confirm_certificate_in_use(&agent, &certificate, &caller.acting())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "workflow_id": workflow_id })),
    ))
}

/// `POST /api/key-nonces`: a nonce for an agent key's proof of possession.
async fn key_nonce(State(app): State<App>, _: Caller) -> Answer<Json<KeyNonce>> {
    let (nonce, expires_at) = app.engine.key_nonce().await?;
    Ok(Json(KeyNonce { nonce, expires_at }))
}

async fn find(app: &App, agent: &str) -> Answer<Agent> {
    app.engine
        .find_agent(agent)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no agent with id or name `{agent}`")))
}

async fn show_agent(
    State(app): State<App>,
    _: Caller,
    Path(agent): Path<String>,
) -> Answer<Json<AgentView>> {
    let agent = find(&app, &agent).await?;
    let workflows = app
        .engine
        .store
        .instances_for_agent(&agent.id)
        .await?
        .into_iter()
        .map(|i| WorkflowSummary {
            pending_commands: i.pending.len(),
            id: i.id,
            kind: i.kind,
            state: i.state_name,
            terminal: i.terminal,
            updated_at: i.updated_at,
        })
        .collect();
    Ok(Json(AgentView { agent, workflows }))
}

async fn agent_history(
    State(app): State<App>,
    _: Caller,
    Path(agent): Path<String>,
) -> Answer<Json<Vec<AgentHistoryEntry>>> {
    let agent = find(&app, &agent).await?;
    let store = &app.engine.store;
    let mut out = Vec::new();
    for i in store.instances_for_agent(&agent.id).await? {
        for entry in store.history(&i.id).await? {
            out.push(AgentHistoryEntry {
                workflow_id: i.id.clone(),
                kind: i.kind.clone(),
                entry,
            });
        }
    }
    out.sort_by_key(|e| e.entry.at);
    Ok(Json(out))
}

/// The agent's token grants (and refusals) as the identity provider reported them, oldest
/// first: by default the last 24 hours, at most [`GRANTS_PAGE_MAX`].
async fn agent_grants(
    State(app): State<App>,
    _: Caller,
    Path(agent): Path<String>,
    Params(q): Params<GrantsQuery>,
) -> Answer<Json<Vec<crate::ports::store::GrantEvidence>>> {
    let agent = find(&app, &agent).await?;
    let Some(client_id) = agent.client_id.as_deref() else {
        return Ok(Json(vec![]));
    };
    let since = q
        .since
        .unwrap_or_else(|| app.engine.clock.now() - chrono::Duration::hours(24));
    let limit = q.limit.unwrap_or(GRANTS_PAGE_MAX).min(GRANTS_PAGE_MAX);
    Ok(Json(
        app.engine.store.grants(client_id, since, limit).await?,
    ))
}

async fn change_scopes(
    State(app): State<App>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(b): Body<ScopeChangeBody>,
) -> Answer<impl IntoResponse> {
    Ok(started(
        app.engine
            .request_scope_change(&agent, b.request, &caller.acting())
            .await?,
    ))
}

async fn reassign_owner(
    State(app): State<App>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(b): Body<OwnerBody>,
) -> Answer<impl IntoResponse> {
    let workflow_id = app
        .engine
        .reassign_owner(&agent, &b.owner, &caller.acting())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(OwnerAssigned {
            workflow_id,
            owner: b.owner,
            status: "owner assignment queued".into(),
        }),
    ))
}

async fn rotate(
    State(app): State<App>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(RotateBody {}): Body<RotateBody>,
) -> Answer<impl IntoResponse> {
    let by = caller.acting();
    Ok(started(
        app.engine
            .request_rotation(
                &agent,
                RotationReason::OnDemand { by: by.clone() },
                Actor::Person(by),
            )
            .await?,
    ))
}

async fn decommission(
    State(app): State<App>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(b): Body<DecommissionBody>,
) -> Answer<impl IntoResponse> {
    Ok(started(
        app.engine
            .request_decommission(&agent, &caller.acting(), &b.reason)
            .await?,
    ))
}

async fn renew(
    State(app): State<App>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(b): Body<RenewBody>,
) -> Answer<impl IntoResponse> {
    Ok(started(
        app.engine
            .request_renewal(&agent, b.until, &caller.acting(), &b.reason)
            .await?,
    ))
}

async fn freeze(
    State(app): State<App>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(b): Body<FreezeBody>,
) -> Answer<impl IntoResponse> {
    let d = app
        .engine
        .freeze_now(&agent, &caller.acting(), &b.reason)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}

async fn unfreeze(
    State(app): State<App>,
    caller: Caller,
    Path(agent): Path<String>,
    Body(b): Body<FreezeBody>,
) -> Answer<impl IntoResponse> {
    Ok(started(
        app.engine
            .request_unfreeze(&agent, &caller.acting(), &b.reason)
            .await?,
    ))
}

// ---------- shadow agents ----------

async fn list_shadow_agents(State(app): State<App>, _: Caller) -> Answer<Json<Vec<Agent>>> {
    Ok(Json(app.engine.shadow_agents().await?))
}

async fn claim_shadow_agent(
    State(app): State<App>,
    caller: Caller,
    Path(client): Path<String>,
    Body(b): Body<ClaimBody>,
) -> Answer<impl IntoResponse> {
    Ok(started(
        app.engine
            .claim_shadow(&client, b.claim, &caller.acting())
            .await?,
    ))
}

async fn release_shadow_agent(
    State(app): State<App>,
    caller: Caller,
    Path(client): Path<String>,
    Body(b): Body<ReleaseBody>,
) -> Answer<impl IntoResponse> {
    let workflow_id = app
        .engine
        .release_shadow(&client, &caller.acting(), &b.reason)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Released { workflow_id })))
}

async fn discover(State(app): State<App>, _: Caller) -> Answer<Json<DiscoveryReport>> {
    if app.engine.config.identity_provider_elsewhere {
        app.engine.queue_discovery().await?;
        return Ok(Json(DiscoveryReport {
            queued: true,
            ..Default::default()
        }));
    }
    Ok(Json(app.engine.discover().await?))
}

async fn sweep(State(app): State<App>, _: Caller) -> Answer<Json<SweepReport>> {
    Ok(Json(app.engine.sweep().await?))
}

// ---------- access reviews ----------

async fn list_campaigns(State(app): State<App>, _: Caller) -> Answer<Json<Vec<CampaignProgress>>> {
    Ok(Json(app.engine.campaigns().await?))
}

async fn launch_campaign(
    State(app): State<App>,
    caller: Caller,
    Body(b): Body<CampaignBody>,
) -> Answer<impl IntoResponse> {
    Ok(started(
        app.engine
            .launch_campaign(b.request(), Actor::Person(caller.acting()))
            .await?,
    ))
}

async fn campaign_progress(
    State(app): State<App>,
    _: Caller,
    Path(id): Path<String>,
) -> Answer<Json<CampaignProgress>> {
    Ok(Json(app.engine.campaign_progress(&id).await?))
}

/// The evidence report: `?format=json` (default), `csv` or `md`.
async fn campaign_report(
    State(app): State<App>,
    _: Caller,
    Path(id): Path<String>,
    Params(q): Params<ReportQuery>,
) -> Answer<Response> {
    let format = q.format.as_deref().unwrap_or("json");
    let kind = match format {
        "json" => "application/json",
        "csv" => "text/csv; charset=utf-8",
        "md" | "markdown" => "text/markdown; charset=utf-8",
        other => {
            let why = format!("report format `{other}` is not one of json, csv, md");
            return Err(ApiError::new(StatusCode::BAD_REQUEST, why));
        }
    };
    let report = app.engine.campaign_report(&id).await?;
    let text = match format {
        "json" => report.to_json(),
        "csv" => report.to_csv(),
        _ => report.to_markdown(),
    };
    Ok(([(header::CONTENT_TYPE, kind)], text).into_response())
}

async fn answer_review(
    State(app): State<App>,
    caller: Caller,
    Path(item): Path<String>,
    Body(b): Body<ReviewAnswerBody>,
) -> Answer<impl IntoResponse> {
    let by = caller.acting();
    let decision = match b.decision() {
        Ok(d) => d,
        Err(why) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, why));
        }
    };
    app.engine
        .decide_review(&item, &by, decision, b.reason.clone())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReviewAnswered {
            item,
            decision: b.decision,
            by,
        }),
    ))
}

// ---------- workflows and approvals ----------

async fn show_workflow(
    State(app): State<App>,
    _: Caller,
    Path(id): Path<String>,
) -> Answer<Json<WorkflowView>> {
    let store = &app.engine.store;
    let Some(workflow) = store.instance(&id).await? else {
        return Err(ApiError::not_found(format!("no workflow `{id}`")));
    };
    let history = store.history(&id).await?;
    Ok(Json(WorkflowView { workflow, history }))
}

async fn cancel_workflow(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<CancelBody>,
) -> Answer<impl IntoResponse> {
    app.engine.cancel(&id, &caller.acting(), &b.reason).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelRequested {
            workflow_id: id,
            status: "cancel requested".into(),
        }),
    ))
}

async fn list_approvals(
    State(app): State<App>,
    _: Caller,
    Params(q): Params<ApprovalsQuery>,
) -> Answer<Json<Vec<ApprovalView>>> {
    let records = app.engine.store.approvals(!q.all).await?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| ApprovalView {
                status: r.status().into(),
                action_hash: r.action_hash,
                request: r.request,
                outcome: r.outcome,
            })
            .collect(),
    ))
}

async fn approve(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Answer<impl IntoResponse> {
    decide(app, caller, id, b, Decision::Approve).await
}

async fn deny(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<DecisionBody>,
) -> Answer<impl IntoResponse> {
    decide(app, caller, id, b, Decision::Deny).await
}

async fn decide(
    app: App,
    caller: Caller,
    id: String,
    b: DecisionBody,
    decision: Decision,
) -> Answer<(StatusCode, Json<DecisionQueued>)> {
    let record = app
        .engine
        .decide(
            &id,
            &caller.acting(),
            decision,
            b.reason,
            b.action_hash.as_deref(),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DecisionQueued {
            approval_id: id,
            workflow_id: record.request.workflow_id,
            decision,
            status: "decision queued: the workflow applies it and records the outcome".into(),
        }),
    ))
}

// ---------- records ----------

/// The audit trail as JSON lines, oldest first.
async fn export_audit(
    State(app): State<App>,
    _: Caller,
    Params(q): Params<AuditQuery>,
) -> Answer<Response> {
    let limit = q.limit.unwrap_or(AUDIT_PAGE_MAX).min(AUDIT_PAGE_MAX);
    let rows = app.engine.store.audit(q.after, limit).await?;
    let mut text = String::new();
    for r in &rows {
        text.push_str(&audit::export_line(r));
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response())
}

/// The latest signed seal of the trail (`steward audit verify` checks the trail against it).
async fn audit_seal(State(app): State<App>, _: Caller) -> Answer<Json<audit::seal::Seal>> {
    match audit::seal::latest(app.engine.store.as_ref()).await? {
        Some(seal) => Ok(Json(seal)),
        None => Err(ApiError::not_found(
            "the audit trail has not been sealed yet: the server seals it every minute (on AWS, the scheduler's tick)",
        )),
    }
}

async fn notifications(State(app): State<App>, _: Caller) -> Answer<Json<serde_json::Value>> {
    let Some(local) = &app.local else {
        return Err(ApiError::not_found(
            "notifications are kept only by the embedded default's console channel; this deployment sends them to Slack",
        ));
    };
    local
        .notifications()
        .map(Json)
        .map_err(ApiError::unavailable)
}

/// What health leaves out, for a signed-in caller: each figure counted, nothing read.
async fn health_counts(State(app): State<App>, _: Caller) -> Answer<Json<HealthCounts>> {
    let queue = &app.engine.queue;
    Ok(Json(HealthCounts {
        status: "ok".into(),
        queue_depth: queue.depth().await?,
        dead_letters: queue.dead_letter_count().await?,
        bad_requests: app.bad_requests(),
    }))
}

async fn dead_letters(
    State(app): State<App>,
    _: Caller,
) -> Answer<Json<Vec<crate::ports::queue::DeadLetter>>> {
    Ok(Json(app.engine.queue.dead_letters(DEAD_LETTERS_MAX).await?))
}

/// The identity provider's clients (what it holds, as opposed to the registry), each with the
/// ids of its secrets, never their values.
async fn idp_clients(State(app): State<App>, _: Caller) -> Answer<Json<Vec<IdpClientView>>> {
    if app.engine.config.identity_provider_elsewhere {
        return Err(ApiError::not_found(
            "this deployment lists the identity provider's clients only in its worker, the one function that holds the identity provider; GET /api/agents and GET /api/shadow-agents show what Steward knows of them",
        ));
    }
    let idp = &app.engine.executor.idp;
    let mut out = Vec::new();
    for client in idp.list_clients().await.map_err(ApiError::unavailable)? {
        let secret_ids = idp
            .secret_ids(&client.client_id)
            .await
            .map_err(ApiError::unavailable)?;
        out.push(IdpClientView { client, secret_ids });
    }
    Ok(Json(out))
}

// ---------- personal API tokens ----------

/// The signed-in person (the role table lets only people here).
fn signed_in(caller: &Caller) -> Answer<(&str, super::Credential)> {
    match &caller.principal {
        super::Principal::Person { id, via, .. } => Ok((id, *via)),
        super::Principal::Automation { .. } => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "personal tokens belong to people: sign in with `steward login`",
        )),
    }
}

async fn create_token(
    State(app): State<App>,
    caller: Caller,
    Body(b): Body<TokenCreateBody>,
) -> Answer<impl IntoResponse> {
    let (person, via) = signed_in(&caller)?;
    // A copied personal token must not be able to mint more of itself.
    if via == super::Credential::PersonalToken {
        let why = "a personal token cannot create tokens: sign in with `steward login` first";
        return Err(ApiError::new(StatusCode::FORBIDDEN, why));
    }
    let now = app.engine.clock.now();
    match crate::personal_token::mint(app.tokens.as_ref(), person, &b.name, b.ttl.as_deref(), now)
        .await
    {
        Ok((record, token)) => Ok((
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "no-store")],
            Json(TokenCreated {
                view: TokenView::from(&record),
                token: token.expose().to_string(),
            }),
        )),
        Err(crate::personal_token::PersonalTokenError::Store(e)) => Err(ApiError::unavailable(e)),
        Err(e) => {
            let why = e.to_string();
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why))
        }
    }
}

async fn list_tokens(State(app): State<App>, caller: Caller) -> Answer<Json<Vec<TokenView>>> {
    let (person, _) = signed_in(&caller)?;
    let tokens = app
        .tokens
        .tokens_of(person)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(tokens.iter().map(TokenView::from).collect()))
}

async fn revoke_token(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer<Json<TokenView>> {
    let (person, _) = signed_in(&caller)?;
    let tokens = &app.tokens;
    // Someone else's token answers like a missing one: ids are not revealed across people.
    let mine = match tokens.token(&id).await.map_err(ApiError::unavailable)? {
        Some(t) if t.person == person => t,
        _ => {
            let why = format!("you have no personal token `{}`", crate::jwks::shown(&id));
            return Err(ApiError::not_found(why));
        }
    };
    tokens
        .revoke_token(&mine.id, app.engine.clock.now())
        .await
        .map_err(ApiError::unavailable)?;
    let now = tokens
        .token(&mine.id)
        .await
        .map_err(ApiError::unavailable)?
        .unwrap_or(mine);
    Ok(Json(TokenView::from(&now)))
}
