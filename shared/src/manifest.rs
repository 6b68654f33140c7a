//! Agent manifests (`agent.toml`): an agent request as a file, checkable in CI with
//! `steward validate`.

use crate::ports::directory::Directory;
use chrono::NaiveDate;
use serde::Deserialize;
use statemachines::onboarding::OwnerStatus;
use statemachines::{AgentRequest, Policy};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid agent manifest: {message}")]
    Syntax { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    name: String,
    owner: String,
    team: String,
    environment: String,
    purpose: String,
    scopes: Vec<String>,
    /// e.g. "15m"; the policy maximum when absent.
    token_lifetime: Option<String>,
    expires_on: Option<toml::value::Datetime>,
    /// `secret` (default), `private_key_jwt` or `tls_client_auth`.
    credential: Option<String>,
    /// For `private_key_jwt`: the agent's private key file (PKCS#8 PEM), relative to the
    /// manifest. `steward request` reads it where it runs to send the public key and a proof of
    /// possession; the private key itself is sent nowhere.
    key: Option<String>,
    /// For `private_key_jwt`: `agent` (default: the agent keeps its key, named by `key`) or
    /// `steward` (Steward generates the key pair and keeps the private key in the vault, for an
    /// agent that cannot keep one; no `key` file).
    key_custody: Option<String>,
    /// For `tls_client_auth`: the agent's certificate signing request (PEM), relative to the
    /// manifest, made with the key the agent keeps. The request is public and is sent as it
    /// is; the internal CA certifies its key under the agent's SPIFFE id.
    csr: Option<String>,
}

/// A manifest with where its agent's private key is, for `private_key_jwt`.
#[derive(Debug)]
pub struct Manifest {
    pub request: AgentRequest,
    pub key_file: Option<std::path::PathBuf>,
}

/// Reads a manifest and resolves its `key` file against the manifest's folder.
pub fn load_manifest(path: &Path) -> Result<Manifest, ManifestError> {
    let request = load(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let file: ManifestFile = toml::from_str(&text).map_err(|e| ManifestError::Syntax {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let key_file = file
        .key
        .map(|k| path.parent().unwrap_or_else(|| Path::new(".")).join(k));
    Ok(Manifest { request, key_file })
}

pub fn load(path: &Path) -> Result<AgentRequest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut request = parse(&text, &path.display().to_string())?;
    // The CSR file is read where the manifest is (its path is relative to the manifest).
    if let Ok(ManifestFile { csr: Some(csr), .. }) = toml::from_str::<ManifestFile>(&text) {
        let csr_path = path.parent().unwrap_or_else(|| Path::new(".")).join(csr);
        let pem = std::fs::read_to_string(&csr_path).map_err(|source| ManifestError::Read {
            path: csr_path.display().to_string(),
            source,
        })?;
        request.csr = Some(pem);
    }
    Ok(request)
}

/// A manifest's request from its text. A `csr` file it names is not read here (the text has no
/// folder): [`load`] reads it.
pub fn parse(text: &str, origin: &str) -> Result<AgentRequest, ManifestError> {
    let syntax = |message: String| ManifestError::Syntax {
        path: origin.into(),
        message,
    };
    let file: ManifestFile = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
    let token_lifetime_secs = match file.token_lifetime {
        None => None,
        Some(t) => {
            let d = humantime::parse_duration(&t).map_err(|e| {
                syntax(format!(
                    "token_lifetime: `{t}` is not a duration like `15m` ({e})"
                ))
            })?;
            Some(
                u32::try_from(d.as_secs())
                    .map_err(|_| syntax(format!("token_lifetime: `{t}` is far too long")))?,
            )
        }
    };
    let expires_on = match file.expires_on {
        None => None,
        Some(d) => Some(
            NaiveDate::parse_from_str(&d.to_string(), "%Y-%m-%d")
                .map_err(|_| syntax(format!("expires_on: `{d}` must be a date like 2027-06-30")))?,
        ),
    };
    let credential = match file.credential.as_deref() {
        None => Default::default(),
        Some(c) => c
            .parse()
            .map_err(|e: String| syntax(format!("credential: {e}")))?,
    };
    if file.key.is_some() && credential != statemachines::credential::CredentialKind::PrivateKeyJwt
    {
        return Err(syntax(
            "key: only a private_key_jwt agent has a key file (set credential = \"private_key_jwt\")".into(),
        ));
    }
    let key_custody = match file.key_custody.as_deref() {
        None | Some("agent") => statemachines::credential::KeyCustody::Agent,
        Some("steward") => statemachines::credential::KeyCustody::Steward,
        Some(other) => {
            return Err(syntax(format!(
                "key_custody: `{other}` is not a key custody (agent, steward)"
            )));
        }
    };
    if key_custody == statemachines::credential::KeyCustody::Steward && file.key.is_some() {
        return Err(syntax(
            "key: with key_custody = \"steward\" Steward generates the key pair; name no key file"
                .into(),
        ));
    }
    if file.csr.is_some() && credential != statemachines::credential::CredentialKind::TlsClientAuth
    {
        return Err(syntax(
            "csr: only a tls_client_auth agent has a certificate signing request (set credential = \"tls_client_auth\")".into(),
        ));
    }
    Ok(AgentRequest {
        credential,
        public_key: None,
        key_custody,
        csr: None,
        name: file.name,
        owner: file.owner,
        team: file.team,
        environment: file.environment,
        purpose: file.purpose,
        scopes: file.scopes,
        token_lifetime_secs,
        expires_on,
    })
}

/// The verdict on one manifest file.
#[derive(Debug)]
pub struct Verdict {
    pub path: String,
    pub problems: Vec<String>,
}

/// Checks manifests against the policy (and the directory, when given) without changing anything.
pub async fn validate(
    paths: &[impl AsRef<Path>],
    policy: &Policy,
    directory: Option<&dyn Directory>,
    today: NaiveDate,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let path = p.display().to_string();
        let mut problems = Vec::new();
        match load(p) {
            Err(e) => problems.push(e.to_string()),
            Ok(req) => {
                if let Err(r) = req.check(policy, today) {
                    problems.extend(
                        r.reasons
                            .into_iter()
                            .map(|r| format!("{}: {}", r.field, r.message)),
                    );
                }
                if let Some(dir) = directory {
                    match dir.owner_status(&req.owner).await {
                        Ok(OwnerStatus::Active) => {}
                        Ok(OwnerStatus::Inactive) => problems.push(format!(
                            "owner: {} is not an active person in the directory",
                            req.owner
                        )),
                        Ok(OwnerStatus::Unknown) => problems.push(format!(
                            "owner: {} is not a person in the directory",
                            req.owner
                        )),
                        Err(e) => problems.push(format!("owner: directory lookup failed: {e}")),
                    }
                }
            }
        }
        out.push(Verdict { path, problems });
    }
    out
}
