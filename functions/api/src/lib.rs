//! The `api` function: Steward's HTTP surface on AWS. It serves the one router of
//! `shared::http` (the same the local server mounts) through `lambda_http`, for API Gateway
//! HTTP API and function URL events (payload format 2.0). Admin routes need an IAM-signed
//! caller, whom API Gateway's IAM authorizer names in the request context (automation), or a
//! person's token from the organisation's OIDC issuer, which the function verifies itself.

use lambda_http::request::RequestContext;
use shared::http::{
    App, AppParts, Authenticate, Caller, Unauthenticated, bearer, person_caller, personal_caller,
};
use shared::ports::{Directory, PersonalTokens};
use shared::sign_in::PersonTokens;
use shared::wiring::aws::{AwsStack, LiveStack};
use std::sync::Arc;

pub use lambda_http;

/// The callers of the admin API on AWS: an IAM principal API Gateway's IAM authorizer verified
/// (SigV4) is automation, named by its ARN; a person calls with a token from the organisation's
/// OIDC issuer, which the function verifies itself (whatever authorizer ran before) and checks
/// against the directory.
pub struct ApiCallers {
    pub people: Option<Arc<PersonTokens>>,
    pub directory: Arc<dyn Directory>,
    pub tokens: Arc<dyn PersonalTokens>,
}

#[async_trait::async_trait]
impl Authenticate for ApiCallers {
    async fn authenticate(
        &self,
        request: &lambda_http::http::request::Parts,
    ) -> Result<Caller, Unauthenticated> {
        let arn = match request.extensions.get::<RequestContext>() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx
                .authorizer
                .as_ref()
                .and_then(|a| a.iam.as_ref())
                .and_then(|i| i.user_arn.clone()),
            _ => None,
        };
        if let Some(principal) = arn.filter(|a| !a.is_empty()) {
            return Ok(Caller::automation(principal));
        }
        let token = Some(bearer(request)).filter(|t| !t.is_empty());
        if let Some(t) = token.filter(|t| shared::personal_token::looks_personal(t)) {
            return personal_caller(self.tokens.as_ref(), self.directory.as_ref(), t).await;
        }
        match (&self.people, token) {
            (Some(people), Some(token)) => {
                person_caller(people, self.directory.as_ref(), token).await
            }
            _ => Err(Unauthenticated {
                status: lambda_http::http::StatusCode::FORBIDDEN,
                why: "the request is not signed with IAM credentials and carries no person's token"
                    .into(),
                hint: match self.people {
                    Some(_) => "sign it with SigV4, or send `Authorization: Bearer <token>` from the organisation's issuer".into(),
                    None => "sign it with SigV4 (the route must use AWS_IAM authorization)".into(),
                },
            }),
        }
    }
}

/// Where the dashboard is reached and the client it signs people in as, from
/// `STEWARD_DASHBOARD_URL` and `STEWARD_DASHBOARD_CLIENT_ID` (the template sets both, or
/// neither, when `DashboardClientId` is given).
#[derive(Debug, Clone)]
pub struct DashboardSettings {
    pub url: String,
    pub client_id: String,
}

pub const DASHBOARD_URL_ENV: &str = "STEWARD_DASHBOARD_URL";
pub const DASHBOARD_CLIENT_ENV: &str = "STEWARD_DASHBOARD_CLIENT_ID";

impl DashboardSettings {
    pub fn from_env() -> Result<Option<Self>, String> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        match (var(DASHBOARD_URL_ENV), var(DASHBOARD_CLIENT_ENV)) {
            (None, None) => Ok(None),
            (Some(url), Some(client_id)) => Ok(Some(Self { url, client_id })),
            _ => Err(format!(
                "set both {DASHBOARD_URL_ENV} and {DASHBOARD_CLIENT_ENV} for the dashboard, or neither"
            )),
        }
    }
}

impl DashboardSettings {
    /// The dashboard over `stack`'s table (its sessions), signing people in at `people`'s
    /// issuer. Built once per container: it does not change with the pushed configuration.
    pub fn dashboard(
        &self,
        stack: &AwsStack,
        people: Option<&Arc<PersonTokens>>,
    ) -> Result<Arc<shared::dashboard::Dashboard>, String> {
        let people = people.ok_or(
            "the dashboard signs people in with their issuer: set STEWARD_OIDC_ISSUER too",
        )?;
        Ok(Arc::new(shared::dashboard::Dashboard::new(
            &self.url,
            people.clone(),
            self.client_id.clone(),
            stack.store.clone(),
        )?))
    }
}

/// The router the function serves, over the stack built once at start: the admin API, the
/// Shared Signals route and, when configured, the dashboard.
pub fn router(
    stack: &AwsStack,
    ssf: Option<Arc<shared::inbound::ssf::SsfReceiver>>,
    people: Option<Arc<PersonTokens>>,
    dashboard: Option<Arc<shared::dashboard::Dashboard>>,
) -> axum::Router {
    shared::http::router(App::new(AppParts {
        engine: stack.engine.clone(),
        auth: Arc::new(ApiCallers {
            people,
            directory: stack.engine.directory.clone(),
            tokens: stack.store.clone(),
        }),
        tokens: stack.store.clone(),
        // Slack and Okta have their own functions (and secrets); only the routes are here.
        slack: None,
        okta_hook_secret: None,
        ssf,
        local: None,
        dashboard,
    }))
}

/// The router of the configuration in force (`LiveStack`): each request is served by the
/// router built for the latest pushed policy and people file.
#[derive(Clone)]
pub struct LiveRouter(Arc<LiveStack<axum::Router>>);

impl LiveRouter {
    pub fn new(live: LiveStack<axum::Router>) -> Self {
        Self(Arc::new(live))
    }
}

impl tower::Service<lambda_http::Request> for LiveRouter {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: lambda_http::Request) -> Self::Future {
        use lambda_http::RequestExt;
        use tracing::Instrument;
        let live = self.0.clone();
        let request_id = request
            .lambda_context_ref()
            .map(|c| c.request_id.clone())
            .unwrap_or_default();
        let span = tracing::info_span!("invocation", request_id = %request_id);
        Box::pin(
            async move {
                let router = (*live.current().await).clone();
                tower::ServiceExt::oneshot(router, request).await
            }
            .instrument(span),
        )
    }
}
