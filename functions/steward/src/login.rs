//! `steward login`, `logout` and `whoami`. A person signs in at the organisation's issuer with
//! the OAuth 2.0 device authorization grant (RFC 8628): the CLI shows a code, the person enters
//! it at the issuer in any browser and proves who they are there, and the CLI receives the
//! token. It is kept in `<config dir>/session.json` (mode 0600) and sent on every admin call;
//! when it has expired and the issuer gave a refresh token, a new one is fetched with it. The
//! config dir is `STEWARD_CONFIG_DIR`, else `$XDG_CONFIG_HOME/steward`, else
//! `~/.config/steward`. Without `--issuer`, people sign in at the server itself: the embedded
//! default's development IdP.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// What the issuer's device grant needs; defaults from the same variables the server reads.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// The organisation's OpenID Connect issuer; default: the server (`--url`), whose
    /// development IdP signs in the people of its people file.
    #[arg(long, env = "STEWARD_OIDC_ISSUER")]
    pub issuer: Option<String>,
    /// Base URL of a running `steward serve`.
    #[arg(long, env = "STEWARD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The public client registered at the issuer for the CLI.
    #[arg(long, env = "STEWARD_OIDC_CLIENT_ID", default_value = "steward-cli")]
    pub client_id: String,
    /// Steward's audience, sent as the RFC 8707 `resource` (issuers that fix the audience per
    /// authorization server ignore it).
    #[arg(long, env = "STEWARD_OIDC_AUDIENCE")]
    pub audience: Option<String>,
    #[arg(long, default_value = "openid email offline_access")]
    pub scope: String,
}

/// A signed-in person's token, as kept between commands.
#[derive(Serialize, Deserialize)]
pub struct Session {
    pub issuer: String,
    pub access_token: String,
    pub expires_at: DateTime<Utc>,
    /// When the issuer allows refreshing: the refresh token, and where and as whom to use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
}

#[derive(Serialize, Deserialize)]
pub struct Refresh {
    pub token: String,
    pub token_endpoint: String,
    pub client_id: String,
}

impl Session {
    fn from_answer(
        issuer: &str,
        answer: &Value,
        token_endpoint: &str,
        client_id: &str,
    ) -> anyhow::Result<Self> {
        let access_token = answer["access_token"]
            .as_str()
            .context("the issuer's answer has no access_token")?
            .to_string();
        let expires_in = answer["expires_in"].as_i64().unwrap_or(300);
        Ok(Session {
            issuer: issuer.to_string(),
            access_token,
            expires_at: Utc::now() + chrono::Duration::seconds(expires_in),
            refresh: answer["refresh_token"].as_str().map(|t| Refresh {
                token: t.to_string(),
                token_endpoint: token_endpoint.to_string(),
                client_id: client_id.to_string(),
            }),
        })
    }

    fn save(&self) -> anyhow::Result<()> {
        let dir = config_dir()?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = session_path()?;
        shared::embedded::vault::write_private(&path, serde_json::to_string(self)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }
}

fn http() -> anyhow::Result<reqwest::Client> {
    shared::tls::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("STEWARD_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("steward"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("no config directory: set STEWARD_CONFIG_DIR or HOME")?;
    Ok(PathBuf::from(home).join(".config").join("steward"))
}

fn session_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("session.json"))
}

/// The signed-in person's token, when there is a session; an expired session is an error that
/// says what to do (it is never silently replaced by the admin token).
pub async fn current_token() -> anyhow::Result<Option<String>> {
    let path = session_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let session: Session = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a Steward session; run `steward logout`",
            path.display()
        )
    })?;
    // A minute of margin: a token about to expire would be refused on the way.
    if session.expires_at > Utc::now() + chrono::Duration::seconds(60) {
        return Ok(Some(session.access_token));
    }
    let expired = || {
        anyhow::anyhow!(
            "your sign-in at {} expired at {}: run `steward login` again, or `steward logout` to use the admin token",
            session.issuer,
            session.expires_at.format("%Y-%m-%d %H:%M UTC")
        )
    };
    let Some(refresh) = &session.refresh else {
        return Err(expired());
    };
    let answer: Value = http()?
        .post(&refresh.token_endpoint)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.token.as_str()),
            ("client_id", refresh.client_id.as_str()),
        ])
        .send()
        .await
        .with_context(|| format!("refreshing the sign-in at {}", session.issuer))?
        .json()
        .await
        .context("the refresh answer is not JSON")?;
    if let Some(e) = answer["error"].as_str() {
        return Err(expired().context(format!(
            "the issuer refused to refresh it: {e} {}",
            answer["error_description"].as_str().unwrap_or_default()
        )));
    }
    let renewed = Session::from_answer(
        &session.issuer,
        &answer,
        &refresh.token_endpoint,
        &refresh.client_id,
    )?;
    renewed.save()?;
    Ok(Some(renewed.access_token))
}

pub async fn login(a: LoginArgs) -> anyhow::Result<()> {
    let issuer = a
        .issuer
        .as_deref()
        .unwrap_or(&a.url)
        .trim()
        .trim_end_matches('/')
        .to_string();
    shared::jwks::url_is_https(&issuer)
        .map_err(|why| anyhow::anyhow!("the issuer {issuer} {why}"))?;
    let http = http()?;
    let meta = shared::sign_in::discovery_document(&http, &issuer)
        .await
        .map_err(anyhow::Error::msg)?;
    let endpoint = |name: &str| {
        meta[name].as_str().map(str::to_string).with_context(|| {
            format!("the issuer offers no {name}: enable the device authorization grant there")
        })
    };
    let device_endpoint = endpoint("device_authorization_endpoint")?;
    let token_endpoint = endpoint("token_endpoint")?;

    let mut form = vec![
        ("client_id", a.client_id.as_str()),
        ("scope", a.scope.as_str()),
    ];
    if let Some(aud) = &a.audience {
        form.push(("resource", aud));
    }
    let device: Value = http
        .post(&device_endpoint)
        .form(&form)
        .send()
        .await?
        .json()
        .await
        .context("the device authorization answer is not JSON")?;
    if let Some(e) = device["error"].as_str() {
        bail!(
            "the issuer refused the sign-in: {e} {}",
            device["error_description"].as_str().unwrap_or_default()
        );
    }
    let (Some(device_code), Some(user_code), Some(uri)) = (
        device["device_code"].as_str(),
        device["user_code"].as_str(),
        device["verification_uri"].as_str(),
    ) else {
        bail!("the device authorization answer lacks device_code, user_code or verification_uri");
    };
    let mut interval = Duration::from_secs(device["interval"].as_u64().unwrap_or(5).max(1));
    let deadline = std::time::Instant::now()
        + Duration::from_secs(device["expires_in"].as_u64().unwrap_or(600));
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "To sign in, open {uri} and enter the code: {user_code}"
        )?;
        if let Some(complete) = device["verification_uri_complete"].as_str() {
            writeln!(out, "(or open {complete})")?;
        }
        out.flush()?;
    }

    let mut form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
        ("client_id", a.client_id.as_str()),
    ];
    if let Some(aud) = &a.audience {
        form.push(("resource", aud));
    }
    let token = loop {
        if std::time::Instant::now() >= deadline {
            bail!("the code expired before the sign-in was completed; run `steward login` again");
        }
        tokio::time::sleep(interval).await;
        let answer: Value = http
            .post(&token_endpoint)
            .form(&form)
            .send()
            .await?
            .json()
            .await
            .context("the token answer is not JSON")?;
        match answer["error"].as_str() {
            None => break answer,
            Some("authorization_pending") => {}
            Some("slow_down") => interval += Duration::from_secs(5),
            Some("access_denied") => bail!("the sign-in was declined at the issuer"),
            Some("expired_token") => {
                bail!(
                    "the code expired before the sign-in was completed; run `steward login` again"
                )
            }
            Some(e) => bail!(
                "the issuer refused the token: {e} {}",
                answer["error_description"].as_str().unwrap_or_default()
            ),
        }
    };
    let session = Session::from_answer(&issuer, &token, &token_endpoint, &a.client_id)?;
    session.save()?;
    println!(
        "Signed in at {issuer} until {}; `steward whoami` shows who Steward takes you to be.",
        session.expires_at.format("%Y-%m-%d %H:%M UTC")
    );
    Ok(())
}

pub fn logout() -> anyhow::Result<()> {
    let path = session_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => println!("Signed out: {} removed.", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("Not signed in."),
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    Ok(())
}
