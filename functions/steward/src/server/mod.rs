//! The all-in-one local server: the admin API and the public edges (the one router of
//! `shared::http`, the same the `api` Lambda function serves), the dev IdP's token endpoint,
//! and the worker and timer tick in-process. Binds 127.0.0.1 by default; the admin API needs
//! the bearer token stored (0600) in the data directory. A second listener, TLS with client
//! certificates from the internal CA (`mtls`), serves the token and introspection endpoints to
//! `tls_client_auth` agents.

pub mod connections;
mod jobs;
pub mod mtls;
mod sign_in;
mod token;
pub use token::TrustedProxies;

use base64::Engine as _;
use jobs::{Job, poll_okta_log, seals, supervise, sweeps, ticks, work};
use shared::http::{App, AppParts, BearerTokens, LocalViews};
use shared::idp::dev::failures::FailureLimits;
use shared::secret::Secret;
use shared::wiring::embedded::Embedded;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Shortest admin token accepted from the file (the generated one has 47 characters).
const ADMIN_TOKEN_MIN_CHARS: usize = 32;

/// Reads the admin token from `<data>/admin-token`, creating it (0600) on first start. A file
/// that is empty or short (truncated by hand, restored badly) refuses to start: a blank token
/// must never be what a request without one is compared with.
pub fn admin_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-token");
    let (token, _) = shared::embedded::vault::read_or_create_private(&path, || {
        format!(
            "stw_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        )
    })?;
    anyhow::ensure!(
        token.chars().count() >= ADMIN_TOKEN_MIN_CHARS,
        "{} holds {} characters; an admin token needs at least {ADMIN_TOKEN_MIN_CHARS}: delete the file to have a new one made at start",
        path.display(),
        token.chars().count()
    );
    Ok(token)
}

/// The console channel's notices, which only the embedded default keeps.
struct ConsoleNotices(Arc<shared::embedded::console::Console>);

impl LocalViews for ConsoleNotices {
    fn notifications(&self) -> Result<serde_json::Value, String> {
        let notices = self.0.notices().map_err(|e| e.to_string())?;
        serde_json::to_value(notices).map_err(|e| e.to_string())
    }
}

/// The local server's whole router: the shared surface plus the dev IdP's endpoints (and the
/// CA's certificate and CRL when `mtls` names the CA and the mTLS listener's base URL); with
/// the dev IdP's state, which the mTLS listener's router shares.
pub fn router(
    stack: &Embedded,
    admin_token: Secret,
    proxies: TrustedProxies,
    failures: FailureLimits,
    mtls: Option<(Arc<shared::ca::InternalCa>, String)>,
) -> (axum::Router, token::Edge) {
    let app = App::new(AppParts {
        engine: stack.engine.clone(),
        auth: Arc::new(BearerTokens {
            admin: admin_token,
            people: Some(stack.people_tokens.clone()),
            directory: stack.engine.directory.clone(),
            tokens: stack.db.clone(),
        }),
        tokens: stack.db.clone(),
        slack: stack.slack.clone(),
        okta_hook_secret: stack.okta_hook_secret.clone(),
        ssf: stack.ssf.clone(),
        local: Some(Arc::new(ConsoleNotices(stack.console.clone()))),
        dashboard: dashboard(stack),
    });
    let edge = token::Edge::new(
        app.clone(),
        stack.idp.clone(),
        stack.people_at_dev_idp,
        proxies,
        failures,
        mtls.clone(),
    );
    let mut routes = shared::http::router(app.clone()).merge(token::router(edge.clone()));
    if let Some((ca, _)) = mtls {
        routes = routes.merge(mtls::ca_router(app, ca));
    }
    (routes, edge)
}

/// Opens the internal CA (made on first use, kept in the vault) with the policy's trust domain
/// and certificate lifetime.
pub async fn open_ca(stack: &Embedded) -> anyhow::Result<Arc<shared::ca::InternalCa>> {
    let credentials = &stack.engine.policy.credentials;
    let settings = shared::ca::CaSettings {
        lifetime_days: credentials.certificate_lifetime_days,
        ..shared::ca::CaSettings::new(credentials.trust_domain.clone())
    };
    let vault: &dyn shared::ports::Vault = &*stack.vault;
    let ca = shared::ca::InternalCa::open(vault, settings, chrono::Utc::now()).await?;
    Ok(Arc::new(ca))
}

/// The dashboard, reached where the server is (the dev IdP's issuer URL), signing people in at
/// the people's issuer.
fn dashboard(stack: &Embedded) -> Option<Arc<shared::dashboard::Dashboard>> {
    match shared::dashboard::Dashboard::new(
        stack.idp.issuer(),
        stack.people_tokens.clone(),
        shared::dashboard::CLIENT_ID,
        stack.db.clone(),
    ) {
        Ok(d) => Some(Arc::new(d)),
        Err(why) => {
            tracing::warn!(%why, "the dashboard is off");
            None
        }
    }
}

/// How often the server's background jobs run, every job on.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// Due timers become events.
    pub tick: Duration,
    /// The Okta System Log is read (when Okta is configured).
    pub okta_log: Duration,
    /// The rotation and expiry sweep runs.
    pub sweep: Duration,
}

/// How often the server's background jobs run; `None` turns a periodic job off. The timer
/// tick cannot be off: nothing due would ever happen.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub tick: Duration,
    /// `None`: the Okta System Log is not read.
    pub okta_log: Option<Duration>,
    /// `None`: the sweep runs only when asked (`POST /api/sweep`).
    pub sweep: Option<Duration>,
}

impl From<Intervals> for Schedule {
    fn from(i: Intervals) -> Self {
        Schedule {
            tick: i.tick,
            okta_log: Some(i.okta_log),
            sweep: Some(i.sweep),
        }
    }
}

/// Starts the server on `listener` with the worker, the tick, the sweep and (with Okta) the
/// System Log poller; returns when `shutdown` fires, or with an error when a job stops.
pub async fn serve(
    stack: Embedded,
    listener: tokio::net::TcpListener,
    every: impl Into<Schedule>,
    proxies: TrustedProxies,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(stack, listener, None, every, proxies, shutdown).await
}

/// [`serve`], with the mTLS listener on `mtls` when given (it runs as long as the server).
pub async fn serve_with(
    stack: Embedded,
    listener: tokio::net::TcpListener,
    mtls: Option<tokio::net::TcpListener>,
    every: impl Into<Schedule>,
    proxies: TrustedProxies,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let every = every.into();
    let token = Secret::new(admin_token(&stack.data_dir)?);
    let engine = &stack.engine;
    let lanes = jobs::worker_lanes_from_env().map_err(anyhow::Error::msg)?;
    let mut jobs: Vec<(&'static str, Job)> = jobs::WORKER_NAMES[..lanes]
        .iter()
        .map(|name| -> (&'static str, Job) {
            (name, Box::pin(work(engine.clone(), stack.queue.clone())))
        })
        .collect();
    jobs.extend([
        (
            "timer tick",
            Box::pin(ticks(engine.clone(), every.tick)) as Job,
        ),
        (
            "audit seal",
            Box::pin(seals(
                engine.clone(),
                stack.audit_sealer.clone(),
                stack.adopt_unsealed_trail,
                shared::audit::seal::SEAL_EVERY,
            )),
        ),
    ]);
    tracing::info!(
        key = %stack.audit_sealer.public_key(),
        "the audit trail is sealed every minute with this key: pin it for `steward audit verify --key`"
    );
    if let Some(period) = every.sweep {
        jobs.push(("sweep", Box::pin(sweeps(engine.clone(), period))));
    }
    if let (Some(okta), Some(period)) = (stack.okta.clone(), every.okta_log) {
        jobs.push((
            "Okta System Log poller",
            Box::pin(poll_okta_log(engine.clone(), okta, period)),
        ));
    }
    let failures = FailureLimits::from_env().map_err(anyhow::Error::msg)?;
    let limits = connections::limits_from_env().map_err(anyhow::Error::msg)?;
    let mtls = match mtls {
        Some(l) => {
            let ca = open_ca(&stack).await?;
            let addr = l.local_addr()?;
            let mut ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
            if !addr.ip().is_unspecified() && !ips.contains(&addr.ip()) {
                ips.push(addr.ip());
            }
            let tls = mtls::tls_config(ca.clone(), ips)?;
            Some((l, tls, ca, format!("https://{addr}")))
        }
        None => None,
    };
    let (app, edge) = router(
        &stack,
        token,
        proxies,
        failures,
        mtls.as_ref()
            .map(|(_, _, ca, base)| (ca.clone(), base.clone())),
    );
    if let Some((l, tls, _, _)) = mtls {
        jobs.push((
            "mTLS listener",
            Box::pin(mtls::serve(l, tls, token::mtls_router(edge), limits)),
        ));
    }
    // Each request carries its peer: the source IP detection rules compare with a baseline.
    let server = connections::serve(listener, app, limits, shutdown);
    supervise(async { server.await.map_err(Into::into) }, jobs).await
}

pub fn bound(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
