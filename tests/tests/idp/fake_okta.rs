//! A local fake of Okta's Management and OAuth APIs, following the documented request and
//! response shapes (Okta's Management and OAuth 2.0 API references), and these facts:
//! - Apps API (`/api/v1/apps`: list with `q`, `filter`, `limit`, `after` and `Link` headers;
//!   create, get, replace, delete of an inactive app; `lifecycle/activate|deactivate`);
//! - client secrets (`/credentials/secrets`): at most two (a third is E0000001), `client_secret`
//!   only in the create answer, only an inactive secret can be deleted, the only active secret
//!   cannot be deactivated;
//! - `private_key_jwt` apps: created with `settings.oauthClient.jwks.keys` and no secret; their
//!   JSON Web Keys (`/credentials/jwks`: list, add (ACTIVE unless the body says `INACTIVE`),
//!   get, `lifecycle/activate|deactivate`, delete) are named by Okta's `id` (`pks…`), apart
//!   from the JWK's `kid`; signing keys only, RSA (2048 bits or more) or EC; a unique `kid`
//!   per app, at most 50 keys; only an INACTIVE key can be deleted, and the only ACTIVE key of
//!   a `private_key_jwt` app cannot be deactivated (E0000001, with Okta's documented causes);
//!   a JWK with a private member is refused and recorded as a problem;
//! - scope consent grants (`/grants`), `DELETE /tokens` (refresh tokens only);
//! - the System Log (`/api/v1/logs`, `after` cursor, a `next` link on every page as in polling);
//! - token endpoints (`/oauth2/v1/token`, `/oauth2/{id}/v1/token`): client_credentials with
//!   `client_secret_basic` for agents' apps, and `private_key_jwt` (RS256) for a trusted
//!   service app (OAuth for Okta), whose access tokens then work on the Management API;
//! - `private_key_jwt` for agents' key apps at any token endpoint: the assertion's key is
//!   found by the header's `kid` among the app's ACTIVE keys (without a `kid`, only when the
//!   app has one key), its signature verified, `iss` = `sub` = the client id, `aud` = the token
//!   URL called, `exp` at most an hour ahead, a `jti` used once; a DPoP-bound app
//!   (`dpop_bound_access_tokens`) also needs a DPoP proof (RFC 9449) for `POST` at that URL,
//!   with the server's nonce (400 `use_dpop_nonce` and a `DPoP-Nonce` header first), and gets
//!   `token_type: DPoP`;
//! - `Authorization: SSWS <token>` (401 E0000011 otherwise);
//! - rate limits per bucket (`apps`, `logs`, each token path) in fixed windows aligned to the
//!   epoch, `X-Rate-Limit-*` on every answer, 429 E0000047 beyond the limit, and a count of
//!   the requests that arrived in each window;
//! - faults on demand: the next N matching calls answer 500 or 429;
//! - holds on demand: the next call to a path waits until the test lets it go.
//!
//! Any scope string is known. Client ids are the app ids, as for Okta apps created without one.
#![allow(dead_code)] // tests use different parts

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// The SSWS API token the fake accepts.
pub const API_TOKEN: &str = "00fakeOktaApiToken-0123456789abcdefABCDEF";

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Authorization` header as sent (tests check its scheme; this is a test fake).
    pub authorization: Option<String>,
    /// The body as sent (tests check what reaches Okta).
    pub body: String,
    pub bucket: String,
    pub status: u16,
    pub at: SystemTime,
}

/// After letting `skip` matching calls through, answer the next `times` calls matching
/// `method` (any if `None`) and `path_prefix` with `status`; a 429 says the window resets
/// `reset_in_secs` from now.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    pub method: Option<String>,
    pub path_prefix: String,
    pub skip: u32,
    pub status: u16,
    pub times: u32,
    pub reset_in_secs: u64,
}

/// A call held at the fake: [`Hold::arrived`] once it came in, and it is answered (as it
/// would have been) only after [`Hold::release`].
#[derive(Debug, Clone, Default)]
pub struct Hold {
    arrived: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

impl Hold {
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    pub fn release(&self) {
        self.release.notify_one();
    }
}

#[derive(Debug, Clone)]
struct SecretRec {
    id: String,
    value: String,
    status: &'static str,
    created: String,
}

/// One of an app's JSON Web Keys: `jwk` holds its public members (with `kid`, `use`, `alg`).
#[derive(Debug, Clone)]
struct JwkRec {
    id: String,
    jwk: Value,
    status: &'static str,
    created: String,
    last_updated: String,
}

#[derive(Debug, Clone)]
struct GrantRec {
    id: String,
    scope_id: String,
    issuer: String,
    created: String,
}

#[derive(Debug, Clone)]
struct AppRec {
    seq: u64,
    id: String,
    name: String,
    label: String,
    status: &'static str,
    created: String,
    last_updated: String,
    auth_method: String,
    oauth_settings: Value,
    profile: Value,
    secrets: Vec<SecretRec>,
    jwks: Vec<JwkRec>,
    grants: Vec<GrantRec>,
    refresh_revocations: u32,
}

impl AppRec {
    fn key_auth(&self) -> bool {
        self.auth_method == "private_key_jwt"
    }

    fn dpop_bound(&self) -> bool {
        self.oauth_settings["dpop_bound_access_tokens"] == true
    }
}

#[derive(Debug, Clone, Copy)]
struct Limit {
    limit: u32,
    window_secs: u64,
}

/// A token the fake issued at a token endpoint.
#[derive(Debug, Clone)]
pub struct Issued {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires_in: u64,
}

struct Inner {
    base: String,
    api_token: String,
    apps: Vec<AppRec>,
    seq: u64,
    calls: Vec<Call>,
    limits: HashMap<String, Limit>,
    /// Requests that arrived per (bucket, window start), including refused ones.
    arrivals: BTreeMap<(String, u64), u32>,
    faults: Vec<Fault>,
    /// (method, exact path, hold): the next such call waits.
    holds: Vec<(String, String, Hold)>,
    max_page: usize,
    logs: Vec<Value>,
    /// Service apps trusted for OAuth for Okta: client id → RSA public key (PEM).
    service_apps: HashMap<String, String>,
    management_tokens: Vec<String>,
    management_token_lifetime: u64,
    issued: Vec<Issued>,
    problems: Vec<String>,
    /// People, as the Users API returns them (`{id, status, profile}`).
    users: Vec<Value>,
    /// `jti`s of the client assertions and DPoP proofs accepted so far.
    used_jtis: std::collections::HashSet<String>,
    /// The DPoP nonce the token endpoints ask for.
    dpop_nonce: String,
}

pub struct FakeOkta {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn epoch_secs() -> u64 {
    now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Okta's timestamps: ISO 8601 at second resolution with `.000Z`.
fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S.000Z")
        .to_string()
}

fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let tail: String = (0..17)
        .map(|_| ALPHABET[rand::random::<u8>() as usize % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{tail}")
}

fn bucket_of(path: &str) -> String {
    if path.starts_with("/api/v1/apps") {
        "apps".into()
    } else if path.starts_with("/api/v1/logs") {
        "logs".into()
    } else {
        path.to_string()
    }
}

/// An answer under construction.
struct Out {
    status: StatusCode,
    headers: HeaderMap,
    body: Option<Value>,
}

impl Out {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Some(body),
        }
    }
    fn empty(status: u16) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: None,
        }
    }
    fn link(mut self, href: &str, rel: &str) -> Self {
        self.headers.append(
            "link",
            HeaderValue::from_str(&format!("<{href}>; rel=\"{rel}\"")).unwrap(),
        );
        self
    }
}

/// Okta's error body.
fn okta_error(status: u16, code: &str, summary: &str, causes: &[&str]) -> Out {
    Out::json(
        status,
        json!({
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": random_id("oae"),
            "errorCauses": causes.iter().map(|c| json!({"errorSummary": c})).collect::<Vec<_>>(),
        }),
    )
}

fn not_found(what: &str) -> Out {
    okta_error(
        404,
        "E0000007",
        &format!("Not found: Resource not found: {what}"),
        &[],
    )
}

fn validation(what: &str, causes: &[&str]) -> Out {
    okta_error(
        400,
        "E0000001",
        &format!("Api validation failed: {what}"),
        causes,
    )
}

/// RFC 6749 §5.2 error body, as Okta's token endpoints answer.
fn oauth_error(status: u16, error: &str, description: &str) -> Out {
    Out::json(
        status,
        json!({"error": error, "error_description": description}),
    )
}

#[derive(Clone)]
struct AppState {
    inner: Arc<Mutex<Inner>>,
}

impl FakeOkta {
    /// Starts the fake on 127.0.0.1 in a thread of its own; it stops when dropped.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fake Okta");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let inner = Arc::new(Mutex::new(Inner {
            base: base.clone(),
            api_token: API_TOKEN.into(),
            apps: Vec::new(),
            seq: 0,
            calls: Vec::new(),
            limits: HashMap::new(),
            arrivals: BTreeMap::new(),
            faults: Vec::new(),
            holds: Vec::new(),
            max_page: 200,
            logs: Vec::new(),
            service_apps: HashMap::new(),
            management_tokens: Vec::new(),
            management_token_lifetime: 3600,
            issued: Vec::new(),
            problems: Vec::new(),
            users: Vec::new(),
            used_jtis: std::collections::HashSet::new(),
            dpop_nonce: random_id("dpn"),
        }));
        let app = Router::new().fallback(handle).with_state(AppState {
            inner: inner.clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for the fake Okta");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self {
            base,
            inner,
            _stop: stop,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// `limit` requests per `window_secs` in `bucket` (`apps`, `logs`, or a token path).
    pub fn set_rate_limit(&self, bucket: &str, limit: u32, window_secs: u64) {
        self.lock().limits.insert(
            bucket.into(),
            Limit {
                limit,
                window_secs: window_secs.max(1),
            },
        );
    }

    /// The most apps one page holds (Okta: 200), whatever `limit` asks.
    pub fn set_max_page(&self, n: usize) {
        self.lock().max_page = n.max(1);
    }

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// The next `times` calls (any) answer 500 E0000009.
    pub fn fail_next(&self, times: u32) {
        self.inject(Fault {
            path_prefix: "/".into(),
            status: 500,
            times,
            ..Fault::default()
        });
    }

    /// The next `times` calls (any) answer 429 E0000047 with a reset `reset_in_secs` ahead.
    pub fn throttle_next(&self, times: u32, reset_in_secs: u64) {
        self.inject(Fault {
            path_prefix: "/".into(),
            status: 429,
            times,
            reset_in_secs,
            ..Fault::default()
        });
    }

    /// Trusts a service app for OAuth for Okta: client assertions signed with the private key
    /// of `public_pem` get access tokens that work on the Management API.
    pub fn trust_service_app(&self, client_id: &str, public_pem: &str) {
        self.lock()
            .service_apps
            .insert(client_id.into(), public_pem.into());
    }

    pub fn set_management_token_lifetime(&self, secs: u64) {
        self.lock().management_token_lifetime = secs;
    }

    /// Appends System Log events (each should carry `uuid` and `published`).
    pub fn push_log_events(&self, events: impl IntoIterator<Item = Value>) {
        self.lock().logs.extend(events);
    }

    /// Holds the next `method` call to exactly `path` until the returned hold is released.
    pub fn hold_next(&self, method: &str, path: &str) -> Hold {
        let hold = Hold::default();
        self.lock()
            .holds
            .push((method.into(), path.into(), hold.clone()));
        hold
    }

    /// Adds a person (as an admin would); returns their user id. `status` is Okta's
    /// (`ACTIVE`, `SUSPENDED`, `DEPROVISIONED`, ...); the login is the e-mail address.
    pub fn seed_user(
        &self,
        email: &str,
        first: &str,
        last: &str,
        status: &str,
        manager_id: Option<&str>,
    ) -> String {
        let id = random_id("00u");
        let mut profile =
            json!({"firstName": first, "lastName": last, "email": email, "login": email});
        if let Some(m) = manager_id {
            profile["managerId"] = json!(m);
        }
        self.lock()
            .users
            .push(json!({"id": id, "status": status, "created": timestamp(), "profile": profile}));
        id.clone()
    }

    /// Changes a person's login (so only a search by e-mail finds them).
    pub fn set_login(&self, id: &str, login: &str) {
        if let Some(u) = self.lock().users.iter_mut().find(|u| u["id"] == id) {
            u["profile"]["login"] = json!(login);
        }
    }

    /// Adds an app directly (as an admin would in the console); returns its id.
    pub fn seed_app(&self, label: &str, grant_types: &[&str]) -> String {
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        let ts = timestamp();
        let id = random_id("0oa");
        let application_type = if grant_types.contains(&"client_credentials") {
            "service"
        } else {
            "web"
        };
        inner.apps.push(AppRec {
            seq,
            id: id.clone(),
            name: "oidc_client".into(),
            label: label.into(),
            status: "ACTIVE",
            created: ts.clone(),
            last_updated: ts.clone(),
            auth_method: "client_secret_basic".into(),
            oauth_settings: json!({"grant_types": grant_types, "application_type": application_type, "response_types": ["token"]}),
            profile: json!({}),
            secrets: vec![SecretRec {
                id: random_id("ocs"),
                value: random_secret(),
                status: "ACTIVE",
                created: ts,
            }],
            jwks: Vec::new(),
            grants: Vec::new(),
            refresh_revocations: 0,
        });
        id
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn calls_to(&self, method: &str, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.path == path)
            .collect()
    }

    /// Requests that arrived per window of `bucket` (window start in epoch seconds, count).
    pub fn arrivals(&self, bucket: &str) -> Vec<(u64, u32)> {
        self.lock()
            .arrivals
            .iter()
            .filter(|((b, _), _)| b == bucket)
            .map(|((_, w), n)| (*w, *n))
            .collect()
    }

    /// How many answers were 429.
    pub fn rate_limited(&self) -> usize {
        self.lock().calls.iter().filter(|c| c.status == 429).count()
    }

    /// The app as `GET /api/v1/apps/{id}` shows it.
    pub fn app(&self, id: &str) -> Option<Value> {
        let inner = self.lock();
        let base = inner.base.clone();
        inner
            .apps
            .iter()
            .find(|a| a.id == id)
            .map(|a| app_json(a, &base))
    }

    pub fn app_count(&self) -> usize {
        self.lock().apps.len()
    }

    /// The values of an app's secrets (to check none leaks into logs or errors).
    pub fn secret_values(&self, id: &str) -> Vec<String> {
        self.lock()
            .apps
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.secrets.iter().map(|s| s.value.clone()).collect())
            .unwrap_or_default()
    }

    /// An app's JSON Web Keys as `GET /credentials/jwks` lists them.
    pub fn jwks(&self, id: &str) -> Vec<Value> {
        let inner = self.lock();
        let href = format!("{}/api/v1/apps/{id}", inner.base);
        inner
            .apps
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.jwks.iter().map(|k| jwk_json(k, &href)).collect())
            .unwrap_or_default()
    }

    pub fn refresh_revocations(&self, id: &str) -> u32 {
        self.lock()
            .apps
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.refresh_revocations)
            .unwrap_or(0)
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.lock().issued.clone()
    }

    /// Shape problems found in what the client sent.
    pub fn assert_well_formed(&self) {
        let inner = self.lock();
        assert!(
            inner.problems.is_empty(),
            "malformed Okta calls: {:#?}",
            inner.problems
        );
    }
}

fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 48]>())
}

/// Okta's `secret_hash`: a short digest of the secret (22 characters).
fn secret_hash(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(value.as_bytes())[..16])
}

fn app_json(a: &AppRec, base: &str) -> Value {
    let href = format!("{base}/api/v1/apps/{}", a.id);
    let lifecycle = if a.status == "ACTIVE" {
        "deactivate"
    } else {
        "activate"
    };
    let mut oauth_settings = a.oauth_settings.clone();
    oauth_settings["issuer_mode"] = json!("DYNAMIC");
    if a.key_auth() || !a.jwks.is_empty() {
        oauth_settings["jwks"] =
            json!({"keys": a.jwks.iter().map(|k| jwk_json(k, &href)).collect::<Vec<_>>()});
    }
    json!({
        "id": a.id,
        "name": a.name,
        "label": a.label,
        "status": a.status,
        "created": a.created,
        "lastUpdated": a.last_updated,
        "signOnMode": "OPENID_CONNECT",
        "features": [],
        "accessibility": {"selfService": false, "errorRedirectUrl": null, "loginRedirectUrl": null},
        "visibility": {"autoLaunch": false, "autoSubmitToolbar": false, "hide": {"iOS": true, "web": true}},
        "credentials": {
            "userNameTemplate": {"template": "${source.login}", "type": "BUILT_IN"},
            "oauthClient": {
                "autoKeyRotation": true,
                "client_id": a.id,
                "token_endpoint_auth_method": a.auth_method,
            },
        },
        "settings": {"app": {}, "oauthClient": oauth_settings},
        "profile": a.profile,
        "_links": {
            "self": {"href": href},
            lifecycle: {"href": format!("{href}/lifecycle/{lifecycle}"), "hints": {"allow": ["POST"]}},
            "groups": {"href": format!("{href}/groups")},
            "users": {"href": format!("{href}/users")},
        },
    })
}

fn secret_json(s: &SecretRec, app_href: &str, with_value: bool) -> Value {
    let href = format!("{app_href}/credentials/secrets/{}", s.id);
    let links = if s.status == "ACTIVE" {
        json!({"deactivate": {"href": format!("{href}/lifecycle/deactivate"), "hints": {"allow": ["POST"]}}})
    } else {
        json!({
            "activate": {"href": format!("{href}/lifecycle/activate"), "hints": {"allow": ["POST"]}},
            "delete": {"href": href, "hints": {"allow": ["DELETE"]}},
        })
    };
    let mut v = json!({
        "id": s.id,
        "status": s.status,
        "secret_hash": secret_hash(&s.value),
        "created": s.created,
        "lastUpdated": s.created,
        "_links": links,
    });
    if with_value {
        v["client_secret"] = json!(s.value);
    }
    v
}

fn jwk_json(k: &JwkRec, app_href: &str) -> Value {
    let href = format!("{app_href}/credentials/jwks/{}", k.id);
    let links = if k.status == "ACTIVE" {
        json!({"deactivate": {"href": format!("{href}/lifecycle/deactivate"), "hints": {"allow": ["POST"]}}})
    } else {
        json!({
            "activate": {"href": format!("{href}/lifecycle/activate"), "hints": {"allow": ["POST"]}},
            "delete": {"href": href, "hints": {"allow": ["DELETE"]}},
        })
    };
    let mut v = k.jwk.clone();
    v["id"] = json!(k.id);
    v["status"] = json!(k.status);
    v["created"] = json!(k.created);
    v["lastUpdated"] = json!(k.last_updated);
    v["_links"] = links;
    v
}

/// JWK members that hold private key material.
const PRIVATE_MEMBERS: [&str; 9] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"];

/// Okta's `Api validation failed: JsonWebKey` answer with one cause.
fn jwk_invalid(cause: &str) -> Out {
    validation("JsonWebKey", &[cause])
}

/// Checks a signing JWK an app is given (create, replace or add) against the app's other keys,
/// and returns the record to keep. A private member is refused (the caller records a problem).
fn check_jwk(key: &Value, others: &[JwkRec], status: &'static str) -> Result<JwkRec, Box<Out>> {
    let bad = |cause: &str| Box::new(jwk_invalid(cause));
    let Some(o) = key.as_object() else {
        return Err(bad("A JSON Web Key is a JSON object."));
    };
    if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| o.contains_key(**m)) {
        return Err(bad(&format!(
            "The JSON Web Key has the private member '{m}': only public keys are accepted."
        )));
    }
    let text = |n: &str| o.get(n).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") {
        return Err(bad("This fake models signing keys ('use': 'sig') only."));
    }
    let members: &[&str] = match (text("kty"), text("crv")) {
        (Some("EC"), Some("P-256" | "P-384" | "P-521")) => &["kty", "crv", "x", "y"],
        (Some("RSA"), _) => &["kty", "n", "e"],
        _ => {
            return Err(bad(
                "'kty' must be RSA, or EC with crv P-256, P-384 or P-521.",
            ));
        }
    };
    if members.iter().any(|m| text(m).is_none()) {
        return Err(bad("The JSON Web Key is missing a public member."));
    }
    let Ok(parsed) = shared::jwks::parse_jwk(key) else {
        return Err(bad("The JSON Web Key is not a usable public key."));
    };
    if parsed.kind == shared::jwks::KeyKind::Rsa
        && URL_SAFE_NO_PAD
            .decode(text("n").unwrap_or("").trim_end_matches('='))
            .map(|n| n.len() * 8)
            .unwrap_or(0)
            < 2048
    {
        return Err(bad(
            "RSA key length in the 'jwks' is less than '2,048' bits for the given key.",
        ));
    }
    if others.len() >= 50 {
        return Err(bad(
            "You can't create a new key. You have reached the maximum number of keys allowed (50). To add another key, you must first delete an existing one.",
        ));
    }
    let kid = text("kid").filter(|k| !k.is_empty());
    if !others.is_empty() && (kid.is_none() || others.iter().any(|r| r.jwk.get("kid").is_none())) {
        return Err(bad(
            "Each key should have a unique kid when adding multiple keys. Use the Apps API to update the JWKS to add a kid for the existing key, or delete the existing key and re-add the key with a kid using the JWKS APIs.",
        ));
    }
    if kid.is_some() && others.iter().any(|r| r.jwk["kid"].as_str() == kid) {
        return Err(bad("All keys in the 'jwks' must have a unique `kid`."));
    }
    let mut jwk = serde_json::Map::new();
    for m in members.iter().chain(&["kid", "use", "alg"]) {
        if let Some(v) = o.get(*m) {
            jwk.insert((*m).into(), v.clone());
        }
    }
    let ts = timestamp();
    Ok(JwkRec {
        id: random_id("pks"),
        jwk: Value::Object(jwk),
        status,
        created: ts.clone(),
        last_updated: ts,
    })
}

/// The keys of an app's `settings.oauthClient.jwks` (create or replace), checked together.
fn check_jwks(keys: &Value, kept: &[JwkRec]) -> Result<Vec<JwkRec>, Box<Out>> {
    let mut out: Vec<JwkRec> = Vec::new();
    for key in keys.as_array().map(Vec::as_slice).unwrap_or_default() {
        let same = kept.iter().find(|r| {
            key["kid"].as_str().is_some() && r.jwk["kid"].as_str() == key["kid"].as_str()
        });
        match same {
            // A replace that repeats a key keeps it as it is (its id and status).
            Some(r) => {
                if out.iter().any(|o| o.jwk["kid"] == r.jwk["kid"]) {
                    return Err(Box::new(jwk_invalid(
                        "All keys in the 'jwks' must have a unique `kid`.",
                    )));
                }
                out.push(r.clone());
            }
            None => {
                let status = if key["status"] == "INACTIVE" {
                    "INACTIVE"
                } else {
                    "ACTIVE"
                };
                out.push(check_jwk(key, &out, status)?);
            }
        }
    }
    Ok(out)
}

fn has_private_member(v: &Value) -> bool {
    match v {
        Value::Object(o) => {
            PRIVATE_MEMBERS.iter().any(|m| o.contains_key(*m)) && o.contains_key("kty")
                || o.values().any(has_private_member)
        }
        Value::Array(a) => a.iter().any(has_private_member),
        _ => false,
    }
}

fn grant_json(g: &GrantRec, app: &AppRec, base: &str) -> Value {
    let href = format!("{base}/api/v1/apps/{}", app.id);
    json!({
        "id": g.id,
        "status": "ACTIVE",
        "created": g.created,
        "createdBy": {"id": "00ufakeadmin", "type": "User"},
        "lastUpdated": g.created,
        "issuer": g.issuer,
        "clientId": app.id,
        "scopeId": g.scope_id,
        "source": "ADMIN",
        "_embedded": {"scope": {"id": g.scope_id}},
        "_links": {
            "app": {"href": href, "title": app.label},
            "self": {"href": format!("{href}/grants/{}", g.id), "hints": {"allow": ["GET", "DELETE"]}},
            "client": {"href": format!("{base}/oauth2/v1/clients/{}", app.id), "title": app.label},
        },
    })
}

async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let held = {
        let mut inner = state.inner.lock().unwrap();
        let pos = inner
            .holds
            .iter()
            .position(|(m, p, _)| m == method.as_str() && p == uri.path());
        pos.map(|i| inner.holds.remove(i).2)
    };
    if let Some(hold) = held {
        hold.arrived.notify_one();
        hold.release.notified().await;
    }
    let mut inner = state.inner.lock().unwrap();
    let path = uri.path().to_string();
    if path.starts_with("/api/")
        && serde_json::from_slice::<Value>(&body).is_ok_and(|v| has_private_member(&v))
    {
        inner
            .problems
            .push(format!("{method} {path} carried a private key member"));
    }
    let query_string = uri.query().unwrap_or("").to_string();
    let query: HashMap<String, String> = form_urlencoded::parse(query_string.as_bytes())
        .into_owned()
        .collect();
    let bucket = bucket_of(&path);
    let at = now();
    let epoch = epoch_secs();

    // Rate limit: every arrival counts, refused or not.
    let limit = inner.limits.get(&bucket).copied().unwrap_or(Limit {
        limit: 10_000,
        window_secs: 1,
    });
    let window = epoch / limit.window_secs * limit.window_secs;
    let reset = window + limit.window_secs;
    let count = {
        let n = inner.arrivals.entry((bucket.clone(), window)).or_insert(0);
        *n += 1;
        *n
    };

    let mut fault = None;
    for f in inner.faults.iter_mut() {
        let matches = f.times > 0
            && path.starts_with(&f.path_prefix)
            && f.method.as_deref().is_none_or(|m| m == method.as_str());
        if !matches {
            continue;
        }
        if f.skip > 0 {
            f.skip -= 1;
            continue;
        }
        f.times -= 1;
        fault = Some(f.clone());
        break;
    }
    let mut out = if let Some(f) = fault {
        if f.status == 429 {
            let mut o = okta_error(
                429,
                "E0000047",
                "API call exceeded rate limit due to too many requests.",
                &[],
            );
            let reset = epoch + f.reset_in_secs;
            o.headers.insert("x-rate-limit-limit", limit.limit.into());
            o.headers.insert("x-rate-limit-remaining", 0u32.into());
            o.headers.insert("x-rate-limit-reset", reset.into());
            o
        } else {
            okta_error(f.status, "E0000009", "Internal Server Error", &[])
        }
    } else if count > limit.limit {
        okta_error(
            429,
            "E0000047",
            "API call exceeded rate limit due to too many requests.",
            &[],
        )
    } else {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        route(
            &mut inner, &method, &segments, &query, &headers, &body, &path,
        )
    };
    if !out.headers.contains_key("x-rate-limit-limit") {
        out.headers.insert("x-rate-limit-limit", limit.limit.into());
        out.headers.insert(
            "x-rate-limit-remaining",
            limit.limit.saturating_sub(count).into(),
        );
        out.headers.insert("x-rate-limit-reset", reset.into());
    }
    inner.calls.push(Call {
        method: method.to_string(),
        path: path.clone(),
        query: query_string,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: String::from_utf8_lossy(&body).into_owned(),
        bucket,
        status: out.status.as_u16(),
        at,
    });
    drop(inner);
    let mut response = Response::builder().status(out.status);
    for (k, v) in out.headers.iter() {
        response = response.header(k, v);
    }
    match out.body {
        Some(b) => response
            .header("content-type", "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => response.body(Body::empty()).unwrap(),
    }
}

fn route(
    inner: &mut Inner,
    method: &Method,
    segments: &[&str],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    path: &str,
) -> Out {
    let m = method.as_str();
    // Token endpoints authenticate the client, not the admin.
    match segments {
        ["oauth2", "v1", "token"] if m == "POST" => {
            return token(inner, true, path, headers, body);
        }
        ["oauth2", _, "v1", "token"] if m == "POST" => {
            return token(inner, false, path, headers, body);
        }
        _ => {}
    }
    if !admin_authorized(inner, headers) {
        return okta_error(401, "E0000011", "Invalid token provided", &[]);
    }
    let json_body = || -> Result<Value, Box<Out>> {
        let is_json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(Box::new(okta_error(
                415,
                "E0000001",
                "Api validation failed: Content-Type must be application/json",
                &[],
            )));
        }
        serde_json::from_slice(body).map_err(|e| {
            Box::new(okta_error(
                400,
                "E0000003",
                "The request body was not well-formed.",
                &[&e.to_string()],
            ))
        })
    };
    match (m, segments) {
        ("GET", ["api", "v1", "apps"]) => list_apps(inner, query),
        ("POST", ["api", "v1", "apps"]) => match json_body() {
            Ok(b) => create_app(
                inner,
                &b,
                query.get("activate").map(String::as_str) != Some("false"),
            ),
            Err(o) => *o,
        },
        ("GET", ["api", "v1", "logs"]) => logs(inner, query),
        ("GET", ["api", "v1", "users"]) => {
            // Only the search Steward sends: `profile.email eq "<email>"`.
            let Some(email) = query
                .get("search")
                .and_then(|q| q.strip_prefix("profile.email eq \""))
                .and_then(|q| q.strip_suffix('"'))
            else {
                inner
                    .problems
                    .push(format!("unexpected user search: {query:?}"));
                return validation("search", &["unsupported search expression"]);
            };
            let found: Vec<Value> = inner
                .users
                .iter()
                .filter(|u| {
                    u["profile"]["email"]
                        .as_str()
                        .is_some_and(|e| e.eq_ignore_ascii_case(email))
                })
                .cloned()
                .collect();
            Out::json(200, json!(found))
        }
        ("GET", ["api", "v1", "users", id]) => {
            let found = inner.users.iter().find(|u| {
                u["id"] == *id
                    || u["profile"]["login"]
                        .as_str()
                        .is_some_and(|l| l.eq_ignore_ascii_case(id))
            });
            match found {
                Some(u) => Out::json(200, u.clone()),
                None => not_found(&format!("{id} (User)")),
            }
        }
        (_, ["api", "v1", "apps", id, rest @ ..]) => {
            let id = id.to_string();
            let Some(pos) = inner.apps.iter().position(|a| a.id == id) else {
                return not_found(&format!("{id} (AppInstance)"));
            };
            app_route(inner, pos, m, rest, json_body)
        }
        _ => {
            inner.problems.push(format!("unexpected call: {m} {path}"));
            not_found(path)
        }
    }
}

fn admin_authorized(inner: &Inner, headers: &HeaderMap) -> bool {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if let Some(token) = auth.strip_prefix("SSWS ") {
        return token == inner.api_token;
    }
    if let Some(token) = auth.strip_prefix("Bearer ") {
        return inner.management_tokens.iter().any(|t| t == token);
    }
    false
}

fn list_apps(inner: &mut Inner, query: &HashMap<String, String>) -> Out {
    let q = query.get("q").cloned().unwrap_or_default();
    let filter = match query.get("filter") {
        None => None,
        Some(f) => match parse_filter(f) {
            Some(parsed) => Some(parsed),
            None => {
                return okta_error(400, "E0000031", "Invalid search criteria.", &[f]);
            }
        },
    };
    let limit = match query.get("limit").map(|l| l.parse::<i64>()) {
        None => inner.max_page,
        Some(Ok(n)) if n < 0 => inner.max_page,
        Some(Ok(n)) => (n as usize).clamp(1, inner.max_page),
        Some(Err(_)) => return validation("limit", &["limit: must be a number"]),
    };
    let after: u64 = match query.get("after").map(|a| a.parse()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return validation("after", &["after: not a cursor this fake issued"]),
    };
    let base = inner.base.clone();
    let matching: Vec<&AppRec> = inner
        .apps
        .iter()
        .filter(|a| a.seq > after)
        .filter(|a| q.is_empty() || a.label.starts_with(&q) || a.name.starts_with(&q))
        .filter(|a| match &filter {
            None => true,
            Some((field, value)) => match field.as_str() {
                "name" => &a.name == value,
                "status" => a.status == value,
                _ => &a.id == value,
            },
        })
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|a| app_json(a, &base))
        .collect();
    let mut self_url = reqwest::Url::parse(&format!("{base}/api/v1/apps")).unwrap();
    self_url.query_pairs_mut().extend_pairs(query.iter());
    let mut out = Out::json(200, Value::Array(page)).link(self_url.as_str(), "self");
    if matching.len() > limit {
        let last = matching[limit - 1].seq;
        let mut next = reqwest::Url::parse(&format!("{base}/api/v1/apps")).unwrap();
        {
            let mut pairs = next.query_pairs_mut();
            for (k, v) in query.iter().filter(|(k, _)| k.as_str() != "after") {
                pairs.append_pair(k, v);
            }
            pairs.append_pair("after", &last.to_string());
        }
        out = out.link(next.as_str(), "next");
    }
    out
}

/// `field eq "value"` for the fields Okta documents (`id`, `status`, `name`).
fn parse_filter(f: &str) -> Option<(String, String)> {
    let mut parts = f.splitn(3, ' ');
    let field = parts.next()?;
    let op = parts.next()?;
    let value = parts.next()?;
    if op != "eq" || !["id", "status", "name"].contains(&field) {
        return None;
    }
    let value = value.strip_prefix('"')?.strip_suffix('"')?;
    Some((field.into(), value.into()))
}

fn create_app(inner: &mut Inner, body: &Value, activate: bool) -> Out {
    let mut causes: Vec<String> = Vec::new();
    let label = body["label"].as_str().unwrap_or("").trim().to_string();
    if label.is_empty() {
        causes.push("label: The field cannot be left blank".into());
    }
    if body["signOnMode"] != "OPENID_CONNECT" {
        causes.push("signOnMode: this fake models OPENID_CONNECT apps only".into());
    }
    let name = body["name"].as_str().unwrap_or("oidc_client").to_string();
    let oauth = &body["settings"]["oauthClient"];
    let grant_types: Vec<&str> = oauth["grant_types"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if grant_types.is_empty() {
        causes.push("grant_types: At least one grant type is required".into());
    }
    if grant_types.contains(&"client_credentials") && oauth["application_type"] != "service" {
        causes.push(
            "grant_types: 'client_credentials' is only allowed for service applications".into(),
        );
    }
    let auth_method = body["credentials"]["oauthClient"]["token_endpoint_auth_method"]
        .as_str()
        .unwrap_or("client_secret_basic")
        .to_string();
    if ![
        "client_secret_basic",
        "client_secret_post",
        "client_secret_jwt",
        "private_key_jwt",
        "none",
    ]
    .contains(&auth_method.as_str())
    {
        causes.push("token_endpoint_auth_method: not a supported method".into());
    }
    if !body["profile"].is_null() && !body["profile"].is_object() {
        causes.push("profile: must be an object".into());
    }
    let key_auth = auth_method == "private_key_jwt";
    if key_auth
        && oauth["jwks"]["keys"]
            .as_array()
            .is_none_or(|k| k.is_empty())
        && oauth["jwks_uri"].is_null()
    {
        causes.push(
            "jwks: A JWKS or a jwks_uri is required when token_endpoint_auth_method is private_key_jwt".into(),
        );
    }
    if !causes.is_empty() {
        let what = causes[0].split(':').next().unwrap_or("app").to_string();
        let refs: Vec<&str> = causes.iter().map(String::as_str).collect();
        return validation(&what, &refs);
    }
    let jwks = match check_jwks(&oauth["jwks"]["keys"], &[]) {
        Ok(k) => k,
        Err(o) => return *o,
    };
    let mut oauth = oauth.clone();
    if let Some(o) = oauth.as_object_mut() {
        o.remove("jwks");
    }
    inner.seq += 1;
    let ts = timestamp();
    let first = SecretRec {
        id: random_id("ocs"),
        value: random_secret(),
        status: "ACTIVE",
        created: ts.clone(),
    };
    // A private_key_jwt app authenticates with its keys: Okta makes no secret for it.
    let secrets = if key_auth {
        Vec::new()
    } else {
        vec![first.clone()]
    };
    let app = AppRec {
        seq: inner.seq,
        id: random_id("0oa"),
        name,
        label,
        status: if activate { "ACTIVE" } else { "INACTIVE" },
        created: ts.clone(),
        last_updated: ts,
        auth_method,
        oauth_settings: oauth,
        profile: if body["profile"].is_object() {
            body["profile"].clone()
        } else {
            json!({})
        },
        secrets,
        jwks,
        grants: Vec::new(),
        refresh_revocations: 0,
    };
    let mut v = app_json(&app, &inner.base);
    // Okta shows the first secret in the create answer.
    if !key_auth {
        v["credentials"]["oauthClient"]["client_secret"] = json!(first.value);
    }
    inner.apps.push(app);
    Out::json(200, v)
}

fn app_route(
    inner: &mut Inner,
    pos: usize,
    m: &str,
    rest: &[&str],
    json_body: impl Fn() -> Result<Value, Box<Out>>,
) -> Out {
    let base = inner.base.clone();
    let href = format!("{base}/api/v1/apps/{}", inner.apps[pos].id);
    let app = &mut inner.apps[pos];
    match (m, rest) {
        ("GET", []) => Out::json(200, app_json(app, &base)),
        ("PUT", []) => {
            let body = match json_body() {
                Ok(b) => b,
                Err(o) => return *o,
            };
            let label = body["label"].as_str().unwrap_or("").trim().to_string();
            if label.is_empty() {
                return validation("label", &["label: The field cannot be left blank"]);
            }
            if !body["credentials"]["oauthClient"]["client_secret"].is_null() {
                inner.problems.push(format!(
                    "PUT /api/v1/apps/{} carried a client_secret",
                    inner.apps[pos].id
                ));
                return validation(
                    "client_secret",
                    &["client_secret: manage secrets with /credentials/secrets"],
                );
            }
            let app = &mut inner.apps[pos];
            // A replace sets the JWKS to the keys it names (keeping the ones it repeats).
            let jwks = if body["settings"]["oauthClient"]["jwks"]["keys"].is_array() {
                match check_jwks(&body["settings"]["oauthClient"]["jwks"]["keys"], &app.jwks) {
                    Ok(k) => Some(k),
                    Err(o) => return *o,
                }
            } else {
                None
            };
            if app.key_auth() && jwks.as_ref().is_some_and(Vec::is_empty) {
                return jwk_invalid("A private_key_jwt client needs at least one key.");
            }
            app.label = label;
            if body["profile"].is_object() {
                app.profile = body["profile"].clone();
            }
            if body["settings"]["oauthClient"].is_object() {
                let mut s = body["settings"]["oauthClient"].clone();
                if let Some(o) = s.as_object_mut() {
                    o.remove("issuer_mode");
                    o.remove("jwks");
                }
                app.oauth_settings = s;
            }
            if let Some(k) = jwks {
                app.jwks = k;
            }
            app.last_updated = timestamp();
            Out::json(200, app_json(app, &base))
        }
        ("DELETE", []) => {
            // Okta deletes only inactive apps ("Deletes an inactive application").
            if app.status == "ACTIVE" {
                return okta_error(403, "E0000056", "Delete application forbidden.", &[]);
            }
            inner.apps.remove(pos);
            Out::empty(204)
        }
        ("POST", ["lifecycle", action @ ("activate" | "deactivate")]) => {
            app.status = if *action == "activate" {
                "ACTIVE"
            } else {
                "INACTIVE"
            };
            app.last_updated = timestamp();
            Out::json(200, json!({}))
        }
        ("GET", ["credentials", "secrets"]) => Out::json(
            200,
            Value::Array(
                app.secrets
                    .iter()
                    .map(|s| secret_json(s, &href, false))
                    .collect(),
            ),
        ),
        ("POST", ["credentials", "secrets"]) => {
            let body = match json_body() {
                Ok(b) => b,
                Err(o) => return *o,
            };
            if app.secrets.len() >= 2 {
                return validation(
                    "OAuth2ClientSecretMediated",
                    &["You've reached the maximum number of client secrets per client."],
                );
            }
            let value = match body["client_secret"].as_str() {
                Some(v) if v.len() < 14 => {
                    return validation(
                        "OAuth2ClientSecretMediated",
                        &["client_secret: The minimum length is 14 characters."],
                    );
                }
                Some(v) => v.to_string(),
                None => random_secret(),
            };
            let s = SecretRec {
                id: random_id("ocs"),
                value,
                status: if body["status"] == "INACTIVE" {
                    "INACTIVE"
                } else {
                    "ACTIVE"
                },
                created: timestamp(),
            };
            app.secrets.push(s.clone());
            Out::json(201, secret_json(&s, &href, true))
        }
        (_, ["credentials", "secrets", sid, tail @ ..]) => {
            let Some(i) = app.secrets.iter().position(|s| s.id == *sid) else {
                return not_found(&format!("{sid} (OAuth2ClientSecret)"));
            };
            match (m, tail) {
                ("GET", []) => Out::json(200, secret_json(&app.secrets[i], &href, false)),
                ("DELETE", []) => {
                    if app.secrets[i].status == "ACTIVE" {
                        return validation(
                            "OAuth2ClientSecretMediated",
                            &[
                                "You can't delete an active client secret. Deactivate the secret before deleting it.",
                            ],
                        );
                    }
                    app.secrets.remove(i);
                    Out::empty(204)
                }
                ("POST", ["lifecycle", "deactivate"]) => {
                    let others_active = app
                        .secrets
                        .iter()
                        .enumerate()
                        .any(|(j, s)| j != i && s.status == "ACTIVE");
                    if app.secrets[i].status == "ACTIVE" && !others_active {
                        return validation(
                            "OAuth2ClientSecretMediated",
                            &["You can't deactivate the only active client secret."],
                        );
                    }
                    app.secrets[i].status = "INACTIVE";
                    Out::json(200, secret_json(&app.secrets[i], &href, false))
                }
                ("POST", ["lifecycle", "activate"]) => {
                    app.secrets[i].status = "ACTIVE";
                    Out::json(200, secret_json(&app.secrets[i], &href, false))
                }
                _ => okta_error(
                    405,
                    "E0000022",
                    "The endpoint does not support the provided HTTP method",
                    &[],
                ),
            }
        }
        ("GET", ["credentials", "jwks"]) => Out::json(
            200,
            Value::Array(app.jwks.iter().map(|k| jwk_json(k, &href)).collect()),
        ),
        ("POST", ["credentials", "jwks"]) => {
            let body = match json_body() {
                Ok(b) => b,
                Err(o) => return *o,
            };
            let status = if body["status"] == "INACTIVE" {
                "INACTIVE"
            } else {
                "ACTIVE"
            };
            match check_jwk(&body, &app.jwks, status) {
                Ok(k) => {
                    app.jwks.push(k.clone());
                    Out::json(201, jwk_json(&k, &href))
                }
                Err(o) => *o,
            }
        }
        (_, ["credentials", "jwks", key_id, tail @ ..]) => {
            let Some(i) = app.jwks.iter().position(|k| k.id == *key_id) else {
                return not_found(&format!("{key_id} (OAuth2ClientJsonWebKey)"));
            };
            match (m, tail) {
                ("GET", []) => Out::json(200, jwk_json(&app.jwks[i], &href)),
                ("DELETE", []) => {
                    if app.jwks[i].status == "ACTIVE" {
                        return jwk_invalid(
                            "You can't delete an active JSON Web Key. Deactivate the key before deleting it.",
                        );
                    }
                    app.jwks.remove(i);
                    Out::empty(204)
                }
                ("POST", ["lifecycle", "deactivate"]) => {
                    let others_active = app
                        .jwks
                        .iter()
                        .enumerate()
                        .any(|(j, k)| j != i && k.status == "ACTIVE");
                    if app.key_auth() && app.jwks[i].status == "ACTIVE" && !others_active {
                        return jwk_invalid(
                            "Can't deactivate the only active JSON Web Key when the value for `token_endpoint_auth_method` is `private_key_jwt`.",
                        );
                    }
                    app.jwks[i].status = "INACTIVE";
                    app.jwks[i].last_updated = timestamp();
                    Out::json(200, jwk_json(&app.jwks[i], &href))
                }
                ("POST", ["lifecycle", "activate"]) => {
                    app.jwks[i].status = "ACTIVE";
                    app.jwks[i].last_updated = timestamp();
                    Out::json(200, jwk_json(&app.jwks[i], &href))
                }
                _ => okta_error(
                    405,
                    "E0000022",
                    "The endpoint does not support the provided HTTP method",
                    &[],
                ),
            }
        }
        ("GET", ["grants"]) => {
            let app = &inner.apps[pos];
            Out::json(
                200,
                Value::Array(
                    app.grants
                        .iter()
                        .map(|g| grant_json(g, app, &base))
                        .collect(),
                ),
            )
        }
        ("POST", ["grants"]) => {
            let body = match json_body() {
                Ok(b) => b,
                Err(o) => return *o,
            };
            let scope = body["scopeId"].as_str().unwrap_or("").to_string();
            let issuer = body["issuer"].as_str().unwrap_or("").to_string();
            if scope.is_empty() || scope.contains(char::is_whitespace) {
                return validation("scopeId", &["scopeId: a scope name is required"]);
            }
            if issuer != base {
                return validation(
                    "issuer",
                    &["issuer: must be the issuer of the org authorization server"],
                );
            }
            if app.grants.iter().any(|g| g.scope_id == scope) {
                return validation(
                    "scopeId",
                    &["scopeId: the scope is already granted to this app"],
                );
            }
            let g = GrantRec {
                id: random_id("oag"),
                scope_id: scope,
                issuer,
                created: timestamp(),
            };
            app.grants.push(g.clone());
            let app = &inner.apps[pos];
            Out::json(201, grant_json(&g, app, &base))
        }
        (_, ["grants", gid]) => {
            let Some(i) = app.grants.iter().position(|g| g.id == *gid) else {
                return not_found(&format!("{gid} (OAuth2ScopeConsentGrant)"));
            };
            match m {
                "GET" => {
                    let app = &inner.apps[pos];
                    Out::json(200, grant_json(&app.grants[i], app, &base))
                }
                "DELETE" => {
                    app.grants.remove(i);
                    Out::empty(204)
                }
                _ => okta_error(
                    405,
                    "E0000022",
                    "The endpoint does not support the provided HTTP method",
                    &[],
                ),
            }
        }
        ("GET", ["tokens"]) => Out::json(200, json!([])),
        ("DELETE", ["tokens"]) => {
            app.refresh_revocations += 1;
            Out::empty(204)
        }
        _ => {
            let what = format!("{m} {href}/{}", rest.join("/"));
            inner.problems.push(format!("unexpected call: {what}"));
            not_found(&what)
        }
    }
}

fn logs(inner: &mut Inner, query: &HashMap<String, String>) -> Out {
    if query.get("sortOrder").is_some_and(|s| s != "ASCENDING") {
        inner
            .problems
            .push("a poller must read the System Log in ASCENDING order".into());
    }
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if n <= 1000 => n,
        _ => return validation("limit", &["limit: an integer between 0 and 1000"]),
    };
    let start = match (query.get("after"), query.get("since")) {
        (Some(after), _) => match after
            .strip_prefix("c")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n.min(inner.logs.len()),
            None => return validation("after", &["after: not a cursor this fake issued"]),
        },
        (None, Some(since)) => {
            let Ok(since) = chrono::DateTime::parse_from_rfc3339(since) else {
                return validation("since", &["since: not an ISO 8601 timestamp"]);
            };
            inner
                .logs
                .iter()
                .position(|e| {
                    e["published"]
                        .as_str()
                        .and_then(|p| chrono::DateTime::parse_from_rfc3339(p).ok())
                        .is_some_and(|p| p >= since)
                })
                .unwrap_or(inner.logs.len())
        }
        (None, None) => 0,
    };
    let end = (start + limit).min(inner.logs.len());
    let page: Vec<Value> = inner.logs[start..end].to_vec();
    let base = inner.base.clone();
    let link = |after: usize| {
        let mut u = reqwest::Url::parse(&format!("{base}/api/v1/logs")).unwrap();
        {
            let mut pairs = u.query_pairs_mut();
            pairs.append_pair("limit", &limit.to_string());
            pairs.append_pair("sortOrder", "ASCENDING");
            pairs.append_pair("after", &format!("c{after}"));
        }
        u.to_string()
    };
    // Polling: a next link on every page, even an empty one.
    Out::json(200, Value::Array(page))
        .link(&link(start), "self")
        .link(&link(end), "next")
}

fn token(inner: &mut Inner, org: bool, path: &str, headers: &HeaderMap, body: &Bytes) -> Out {
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return oauth_error(400, "invalid_request", "The request body must be a form.");
    }
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            400,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        );
    }
    let requested: Vec<String> = form
        .get("scope")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return oauth_error(400, "invalid_request", "Unsupported client_assertion_type.");
        }
        let iss = unverified_claims(assertion)
            .and_then(|c| c["iss"].as_str().map(str::to_string))
            .unwrap_or_default();
        if !inner.service_apps.contains_key(&iss) {
            let url = format!("{}{path}", inner.base);
            return key_client_token(inner, &url, assertion, headers, requested);
        }
        if !org {
            return oauth_error(
                400,
                "invalid_request",
                "Okta API scopes are issued by the org authorization server only.",
            );
        }
        return management_token(inner, assertion, requested);
    }
    let Some((client_id, secret)) = basic_credentials(headers) else {
        return oauth_error(401, "invalid_client", "No client credentials found.");
    };
    let failed = || {
        oauth_error(
            401,
            "invalid_client",
            "Client authentication failed. Either the client or the client credentials are invalid.",
        )
    };
    let Some(app) = inner.apps.iter().find(|a| a.id == client_id) else {
        return failed();
    };
    if !app
        .secrets
        .iter()
        .any(|s| s.status == "ACTIVE" && s.value == secret)
    {
        return failed();
    }
    if app.status != "ACTIVE" {
        return oauth_error(401, "invalid_client", "The client is not active.");
    }
    if requested.is_empty() {
        return oauth_error(400, "invalid_scope", "No scopes were requested.");
    }
    if let Some(s) = requested
        .iter()
        .find(|s| !app.grants.iter().any(|g| &g.scope_id == *s))
    {
        return oauth_error(
            400,
            "invalid_scope",
            &format!(
                "The requested scope is invalid, unknown, or malformed: {s} is not granted to this client."
            ),
        );
    }
    let expires_in = app.profile["stewardTokenLifetimeSecs"]
        .as_u64()
        .unwrap_or(3600);
    inner.issued.push(Issued {
        client_id: client_id.clone(),
        scopes: requested.clone(),
        expires_in,
    });
    Out::json(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "access_token": format!("fake-at-{}", hex::encode(rand::random::<[u8; 16]>())),
            "scope": requested.join(" "),
        }),
    )
}

/// A JWT's claims, unverified (to find whose key verifies it).
fn unverified_claims(jwt: &str) -> Option<Value> {
    jwt.split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
}

/// client_credentials for an agent's `private_key_jwt` app at the token endpoint `url`.
fn key_client_token(
    inner: &mut Inner,
    url: &str,
    assertion: &str,
    headers: &HeaderMap,
    requested: Vec<String>,
) -> Out {
    let invalid = |why: &str| oauth_error(401, "invalid_client", why);
    let failed = || {
        invalid(
            "Client authentication failed. Either the client or the client credentials are invalid.",
        )
    };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return invalid("The client_assertion is not a JWT.");
    };
    let Some(claims) = unverified_claims(assertion) else {
        return invalid("The client_assertion is not a JWT.");
    };
    let client_id = claims["iss"].as_str().unwrap_or("").to_string();
    let Some(pos) = inner.apps.iter().position(|a| a.id == client_id) else {
        return failed();
    };
    let app = &inner.apps[pos];
    if !app.key_auth() {
        return failed();
    }
    // The key: by the header's kid; without one, only an app with a single key.
    let key = match header.kid.as_deref() {
        Some(kid) => app.jwks.iter().find(|k| k.jwk["kid"] == kid),
        None if app.jwks.len() == 1 => app.jwks.first(),
        None => return invalid("The client_assertion JWT kid is invalid."),
    };
    let Some(key) = key.filter(|k| k.status == "ACTIVE") else {
        return invalid("The client_assertion JWT kid is invalid.");
    };
    let Ok(verify) = shared::jwks::parse_jwk(&key.jwk) else {
        return invalid("The client's key is not usable.");
    };
    if !verify.fits(header.alg) {
        return invalid("The client_assertion alg does not fit the client's key.");
    }
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[url]);
    v.set_issuer(std::slice::from_ref(&client_id));
    v.sub = Some(client_id.clone());
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    if let Err(e) = jsonwebtoken::decode::<Value>(assertion, &verify.key, &v) {
        return invalid(&format!("The client_assertion is invalid: {e}"));
    }
    let now = epoch_secs() as i64;
    if claims["exp"].as_i64().is_none_or(|exp| exp > now + 3600) {
        return invalid("The client_assertion token has an expiration too far into the future.");
    }
    if let Some(jti) = claims["jti"].as_str()
        && !inner.used_jtis.insert(format!("assertion:{jti}"))
    {
        return invalid("The client_assertion token has already been used.");
    }
    let app = &inner.apps[pos];
    if app.status != "ACTIVE" {
        return oauth_error(401, "invalid_client", "The client is not active.");
    }
    let dpop = app.dpop_bound();
    if dpop && let Err(o) = check_dpop(inner, url, headers) {
        return *o;
    }
    let app = &inner.apps[pos];
    if requested.is_empty() {
        return oauth_error(400, "invalid_scope", "No scopes were requested.");
    }
    if let Some(s) = requested
        .iter()
        .find(|s| !app.grants.iter().any(|g| &g.scope_id == *s))
    {
        return oauth_error(
            400,
            "invalid_scope",
            &format!(
                "The requested scope is invalid, unknown, or malformed: {s} is not granted to this client."
            ),
        );
    }
    let expires_in = app.profile["stewardTokenLifetimeSecs"]
        .as_u64()
        .unwrap_or(3600);
    inner.issued.push(Issued {
        client_id,
        scopes: requested.clone(),
        expires_in,
    });
    Out::json(
        200,
        json!({
            "token_type": if dpop { "DPoP" } else { "Bearer" },
            "expires_in": expires_in,
            "access_token": format!("fake-at-{}", hex::encode(rand::random::<[u8; 16]>())),
            "scope": requested.join(" "),
        }),
    )
}

/// The DPoP proof of a token request at `url` (RFC 9449 §4.3), with Okta's nonce.
fn check_dpop(inner: &mut Inner, url: &str, headers: &HeaderMap) -> Result<(), Box<Out>> {
    let invalid = |why: &str| Box::new(oauth_error(400, "invalid_dpop_proof", why));
    let Some(proof) = headers.get("dpop").and_then(|v| v.to_str().ok()) else {
        return Err(invalid("The DPoP proof JWT header is missing."));
    };
    let Ok(header) = jsonwebtoken::decode_header(proof) else {
        return Err(invalid("The DPoP proof is not a JWT."));
    };
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err(invalid("The DPoP proof's typ must be dpop+jwt."));
    }
    let Some(jwk) = header
        .jwk
        .as_ref()
        .and_then(|j| serde_json::to_value(j).ok())
    else {
        return Err(invalid("The DPoP proof has no jwk header."));
    };
    if has_private_member(&json!([jwk])) {
        return Err(invalid("The DPoP proof's jwk holds a private key."));
    }
    let Ok(key) = shared::jwks::parse_jwk(&jwk) else {
        return Err(invalid("The DPoP proof's jwk is not usable."));
    };
    if !key.fits(header.alg) {
        return Err(invalid("The DPoP proof's alg does not fit its jwk."));
    }
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.set_required_spec_claims::<&str>(&[]);
    let Ok(data) = jsonwebtoken::decode::<Value>(proof, &key.key, &v) else {
        return Err(invalid("The DPoP proof's signature is invalid."));
    };
    let c = data.claims;
    if c["htm"] != "POST" || c["htu"] != url {
        return Err(invalid(
            "The DPoP proof's htm or htu does not match the request.",
        ));
    }
    let now = epoch_secs() as i64;
    if c["iat"].as_i64().is_none_or(|iat| (iat - now).abs() > 60) {
        return Err(invalid(
            "The DPoP proof was not minted right before it was used.",
        ));
    }
    if c["nonce"].as_str() != Some(inner.dpop_nonce.as_str()) {
        let mut o = oauth_error(
            400,
            "use_dpop_nonce",
            "Authorization server requires nonce in DPoP proof.",
        );
        o.headers.insert(
            "dpop-nonce",
            HeaderValue::from_str(&inner.dpop_nonce).unwrap(),
        );
        return Err(Box::new(o));
    }
    let Some(jti) = c["jti"].as_str() else {
        return Err(invalid("The DPoP proof has no jti."));
    };
    if !inner.used_jtis.insert(format!("dpop:{jti}")) {
        return Err(invalid("The DPoP proof's jti was already used."));
    }
    Ok(())
}

fn management_token(inner: &mut Inner, assertion: &str, requested: Vec<String>) -> Out {
    let invalid = |why: &str| oauth_error(401, "invalid_client", why);
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return invalid("The client_assertion is not a JWT.");
    };
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return invalid("The client_assertion must be signed with RS256.");
    }
    // Which service app: the unverified `iss`, then its key must verify the signature.
    let Some(claims) = assertion
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return invalid("The client_assertion is not a JWT.");
    };
    let client_id = claims["iss"].as_str().unwrap_or("").to_string();
    let Some(pem) = inner.service_apps.get(&client_id) else {
        return invalid(
            "Client authentication failed. Either the client or the client credentials are invalid.",
        );
    };
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()) else {
        return invalid("the fake holds an unusable key");
    };
    let audience = format!("{}/oauth2/v1/token", inner.base);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(std::slice::from_ref(&client_id));
    validation.sub = Some(client_id.clone());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    if let Err(e) = jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
        return invalid(&format!("The client_assertion is invalid: {e}"));
    }
    if claims["jti"].as_str().is_none_or(str::is_empty) {
        return invalid("The client_assertion must have a jti.");
    }
    if requested.is_empty() || requested.iter().any(|s| !s.starts_with("okta.")) {
        return oauth_error(
            400,
            "invalid_scope",
            "The requested scope is invalid, unknown, or malformed.",
        );
    }
    let token = format!("fake-okta-at-{}", hex::encode(rand::random::<[u8; 16]>()));
    inner.management_tokens.push(token.clone());
    inner.issued.push(Issued {
        client_id,
        scopes: requested.clone(),
        expires_in: inner.management_token_lifetime,
    });
    Out::json(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": inner.management_token_lifetime,
            "access_token": token,
            "scope": requested.join(" "),
        }),
    )
}

/// `Authorization: Basic` with both parts form-encoded (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(user), unescape(pass)))
}
