//! The local server's connections: hyper with the deadlines and the cap `axum::serve` does not
//! set (it installs no timer, so hyper's header-read timeout never applies). A client that
//! trickles its headers, sends nothing, or holds connections open cannot exhaust the server:
//! - the request head must arrive within [`Limits::header_read`], counted from the connection's
//!   start and again while a kept-alive connection waits for its next request (HTTP/1.1, what
//!   a TLS proxy in front or a local client speaks);
//! - a request is answered within [`Limits::request`] (its body read included), else 408;
//! - at most [`Limits::max_connections`] connections are open; the next one waits in the
//!   kernel's backlog until one closes.

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// How long the server waits for each part of a client's work.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub request: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// How long open connections may finish after shutdown is asked.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown`, then lets open connections finish (up to
/// [`DRAIN`]). Each request carries its peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: the server sits behind a TLS proxy or on loopback, where clients speak
    // it; and hyper's HTTP/1 reads the head under the deadline from the first byte a connection
    // could send, also while a kept-alive connection waits for its next request.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the connection slots are never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let deadline = limits.request;
        let service = TowerToHyperService::new(tower::service_fn(
            move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move {
                    match tokio::time::timeout(deadline, app.oneshot(request)).await {
                        Ok(answer) => answer,
                        Err(_) => Ok((
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "the request was not complete within {} s",
                                deadline.as_secs()
                            ),
                        )
                            .into_response()),
                    }
                }
            },
        ));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("connections still open {} s after shutdown were dropped", DRAIN.as_secs());
        }
    }
    Ok(())
}

/// Limits from the environment (`STEWARD_HEADER_TIMEOUT`, `STEWARD_REQUEST_TIMEOUT`,
/// `STEWARD_MAX_CONNECTIONS`), the defaults where unset; an unreadable value is refused.
pub fn limits_from_env() -> Result<Limits, String> {
    let mut limits = Limits::default();
    let duration = |name: &str, value: String| {
        humantime::parse_duration(value.trim())
            .ok()
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
            .ok_or_else(|| {
                format!("{name} must be a duration from 1ms to 1h (e.g. 10s), not `{value}`")
            })
    };
    if let Ok(v) = std::env::var("STEWARD_HEADER_TIMEOUT") {
        limits.header_read = duration("STEWARD_HEADER_TIMEOUT", v)?;
    }
    if let Ok(v) = std::env::var("STEWARD_REQUEST_TIMEOUT") {
        limits.request = duration("STEWARD_REQUEST_TIMEOUT", v)?;
    }
    if let Ok(v) = std::env::var("STEWARD_MAX_CONNECTIONS") {
        limits.max_connections = v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| {
                format!("STEWARD_MAX_CONNECTIONS must be a number from 1 to 100000, not `{v}`")
            })?;
    }
    Ok(limits)
}
