//! The mTLS listener (RFC 8705): a second listener of `steward serve`, TLS with a server
//! certificate from the internal CA, that asks every client for a certificate and verifies the
//! ones it gets against the same CA. It serves the development IdP's token and introspection
//! endpoints: a `tls_client_auth` agent authenticates there by its certificate alone and gets
//! tokens bound to it (`cnf.x5t#S256`); a bound token introspects active only over a connection
//! presenting that certificate. A connection without a certificate is let in
//! (`allow_unauthenticated`), so introspection can answer "no certificate" in words.
//!
//! The handshake checks the chain only; what a certificate may do is decided per request
//! against the registry (validity, SPIFFE id, revocation: `Engine::check_client_certificate`).
//! The CA's certificate and CRL are on the main listener (`GET /ca/certificate`, `GET /ca/crl`).
//! Why: docs/adr/0034-mtls-listener.md.

use super::connections::Limits;
use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration, Utc};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use shared::ca::InternalCa;
use shared::http::App;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// Where the CA's certificate and CRL are served (public, on the main listener).
pub const CA_CERTIFICATE_PATH: &str = "/ca/certificate";
pub const CA_CRL_PATH: &str = "/ca/crl";

/// The listener's certificate lives this long and is issued again a day before it ends.
const SERVER_CERTIFICATE_DAYS: u32 = 30;

/// The end-entity certificate (DER) a mutual TLS connection presented, carried to the
/// handlers as a request extension. Only the mTLS listener sets it.
#[derive(Clone, Debug)]
pub struct ClientCertificate(pub Arc<Vec<u8>>);

/// The listener's server certificate: issued by the CA for its names at start, and again when
/// a handshake finds it within a day of its end (the key is new each time, in memory only).
#[derive(Debug)]
struct ServerCertificates {
    ca: Arc<InternalCa>,
    ips: Vec<IpAddr>,
    current: Mutex<(Arc<CertifiedKey>, DateTime<Utc>)>,
}

impl ServerCertificates {
    fn issue(
        ca: &InternalCa,
        ips: &[IpAddr],
    ) -> anyhow::Result<(Arc<CertifiedKey>, DateTime<Utc>)> {
        let issued =
            ca.issue_server_certificate(&["localhost"], ips, SERVER_CERTIFICATE_DAYS, Utc::now())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_pkcs8_der.clone()));
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&key)
            .map_err(|e| anyhow::anyhow!("the listener's key cannot sign: {e}"))?;
        let chain = vec![CertificateDer::from(issued.certificate_der.clone())];
        Ok((Arc::new(CertifiedKey::new(chain, signer)), issued.not_after))
    }
}

impl ResolvesServerCert for ServerCertificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if Utc::now() + Duration::days(1) > current.1 {
            match Self::issue(&self.ca, &self.ips) {
                Ok(renewed) => *current = renewed,
                Err(e) => {
                    tracing::error!(error = %e, "could not renew the mTLS listener's certificate")
                }
            }
        }
        Some(current.0.clone())
    }
}

/// The TLS settings: a server certificate from `ca` for `localhost` and `ips`, and client
/// certificates asked for, verified against `ca` when given, not required.
pub fn tls_config(ca: Arc<InternalCa>, ips: Vec<IpAddr>) -> anyhow::Result<rustls::ServerConfig> {
    shared::tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.certificate_der().to_vec()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let first = ServerCertificates::issue(&ca, &ips)?;
    let resolver = ServerCertificates {
        ca,
        ips,
        current: Mutex::new(first),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `app` over TLS on `listener`, forever: each request carries its peer
/// (`ConnectInfo`) and, when the client presented one, its certificate ([`ClientCertificate`]).
/// The handshake must finish within the header deadline; at most `limits.max_connections`
/// connections are open at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    limits: Limits,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an mTLS connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let deadline = limits.request;
        let handshake = limits.header_read;
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "mTLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "mTLS handshake not finished in time");
                    return;
                }
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| ClientCertificate(Arc::new(c.as_ref().to_vec())));
            let service = TowerToHyperService::new(tower::service_fn(
                move |mut request: axum::http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    if let Some(c) = &certificate {
                        request.extensions_mut().insert(c.clone());
                    }
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
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "mTLS connection ended");
            }
            drop(slot);
        });
    }
}

/// The default mTLS address: loopback, the main listener's port + 1 (an ephemeral port when
/// the main one is).
pub fn default_address(main: SocketAddr) -> SocketAddr {
    let port = match main.port() {
        0 => 0,
        p => p.checked_add(1).unwrap_or(0),
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[derive(Clone)]
struct CaEdge {
    app: App,
    ca: Arc<InternalCa>,
}

#[derive(serde::Deserialize)]
struct CrlQuery {
    format: Option<String>,
}

/// `GET /ca/certificate` (the CA certificate, PEM) and `GET /ca/crl` (the CRL, DER, or PEM with
/// `?format=pem`): public, as relying parties need them.
pub fn ca_router(app: App, ca: Arc<InternalCa>) -> Router {
    Router::new()
        .route(CA_CERTIFICATE_PATH, get(ca_certificate))
        .route(CA_CRL_PATH, get(crl))
        .with_state(CaEdge { app, ca })
}

async fn ca_certificate(State(edge): State<CaEdge>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        edge.ca.certificate_pem().to_string(),
    )
        .into_response()
}

async fn crl(State(edge): State<CaEdge>, Query(q): Query<CrlQuery>) -> Response {
    let pem = match q.format.as_deref() {
        None | Some("der") => false,
        Some("pem") => true,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({
                    "error": format!("CRL format `{}` is not one of der, pem", other.chars().take(40).collect::<String>())
                })),
            )
                .into_response();
        }
    };
    let now = edge.app.engine.clock.now();
    let crl = match edge.app.engine.certificate_revocations().await {
        Ok(revocations) => edge.ca.crl(&revocations, now),
        Err(e) => {
            tracing::error!(error = %e, "could not read the revoked certificates");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": "the revoked certificates could not be read; try again"})),
            )
                .into_response();
        }
    };
    match crl {
        Ok(crl) if pem => {
            ([(header::CONTENT_TYPE, "application/x-pem-file")], crl.pem).into_response()
        }
        Ok(crl) => ([(header::CONTENT_TYPE, "application/pkix-crl")], crl.der).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not sign the CRL");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": "the CRL could not be signed; try again"})),
            )
                .into_response()
        }
    }
}
