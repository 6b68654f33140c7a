//! Registered clients: the vault records the adapter keeps per client (RFC 7592 token and URI,
//! the index, idempotency keys) and the RFC 7591/7592 calls that create, update, rotate and
//! delete them.

use super::*;

/// What the adapter keeps per registered client (in the vault: it holds the RFC 7592 token).
#[derive(Debug)]
pub(super) struct Registration {
    pub(super) client_id: String,
    pub(super) uri: String,
    pub(super) token: Secret,
    /// Counts the client's secrets: the current secret's id is `sec-<serial>`.
    pub(super) secret_serial: u64,
    pub(super) deleted: bool,
    /// The idempotency key of the `create_client` that registered it (Steward's mark).
    pub(super) idempotency_key: Option<String>,
    /// `Some` for a key client (`create_key_client`, private_key_jwt): every key it holds or
    /// held and was not removed, oldest first, active or not (see [`KeyDoc`]).
    pub(super) keys: Option<Vec<KeyDoc>>,
    /// `Some` for a certificate client (`create_certificate_client`, RFC 8705): the
    /// certificates registered for it and not removed, oldest first (see [`CertificateDoc`]).
    pub(super) certificates: Option<Vec<CertificateDoc>>,
}

impl Registration {
    pub(super) fn is_key_client(&self) -> bool {
        self.keys.is_some()
    }

    pub(super) fn is_certificate_client(&self) -> bool {
        self.certificates.is_some()
    }

    /// How the client authenticates, in words for refusals.
    pub(super) fn authenticates_with(&self) -> &'static str {
        if self.is_key_client() {
            "a key (private_key_jwt)"
        } else if self.is_certificate_client() {
            "a certificate (RFC 8705)"
        } else {
            "a secret"
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct RegistrationDoc {
    pub(super) client_id: String,
    pub(super) registration_client_uri: String,
    pub(super) registration_access_token: String,
    pub(super) secret_serial: u64,
    #[serde(default)]
    pub(super) deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) keys: Option<Vec<KeyDoc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) certificates: Option<Vec<CertificateDoc>>,
}

/// How a new client authenticates at the token endpoint.
pub(super) enum NewAuth<'a> {
    /// `client_secret_basic`: the server issues the secret.
    Secret,
    /// `private_key_jwt` with one key (checked: public members only), its tokens bound by DPoP
    /// when `dpop`.
    Key {
        key: &'a AgentKey,
        jwk: &'a Value,
        dpop: bool,
    },
    /// RFC 8705 with one certificate (checked against its record), tokens bound to it.
    Certificate {
        method: CertificateClients,
        certificate: &'a CheckedCertificate,
    },
}

#[derive(Serialize, Deserialize, Default)]
pub(super) struct IndexDoc {
    pub(super) clients: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct IdempotencyDoc {
    pub(super) client_id: String,
}

/// How a client the adapter registers authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientKind {
    Secret,
    Key,
    Certificate,
}

impl OAuthDcr {
    // --- vault records -----------------------------------------------------------------------

    pub(super) fn client_name(&self, client_id: &str) -> String {
        format!("{}/client/{}", self.prefix, short_hash(client_id, 16))
    }
    pub(super) fn index_name(&self) -> String {
        format!("{}/clients", self.prefix)
    }
    pub(super) fn idempotency_name(&self, key: &str) -> String {
        format!("{}/idempotency/{}", self.prefix, short_hash(key, 16))
    }

    pub(super) async fn load<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, IdpError> {
        let Some((_, value)) = self
            .vault
            .get(name, Stage::Current)
            .await
            .map_err(|e| unavailable("vault", e))?
        else {
            return Ok(None);
        };
        serde_json::from_str(value.expose())
            .map(Some)
            .map_err(|e| IdpError::Unavailable(format!("vault record {name} is unreadable: {e}")))
    }

    pub(super) async fn store<T: Serialize>(&self, name: &str, doc: &T) -> Result<(), IdpError> {
        let value =
            Secret::new(serde_json::to_string(doc).map_err(|e| unavailable("vault record", e))?);
        // A fresh version per write; the value may hold a token, so the id is not derived from it.
        let version = hex::encode(rand::random::<[u8; 16]>());
        self.vault
            .put(name, &version, &value, Stage::Current)
            .await
            .map_err(|e| unavailable("vault", e))
    }

    pub(super) async fn registration(
        &self,
        client_id: &str,
    ) -> Result<Option<Registration>, IdpError> {
        let doc: Option<RegistrationDoc> = self.load(&self.client_name(client_id)).await?;
        Ok(doc.map(|d| Registration {
            client_id: d.client_id,
            uri: d.registration_client_uri,
            token: Secret::new(d.registration_access_token),
            secret_serial: d.secret_serial,
            deleted: d.deleted,
            idempotency_key: d.idempotency_key,
            keys: d.keys,
            certificates: d.certificates,
        }))
    }

    /// The client an earlier call with `idempotency_key` registered, if it is still there (a
    /// repeat whose first answer was lost; call it holding `self.lock`). Refused when that
    /// client authenticates otherwise than `kind`, the kind the caller makes.
    pub(super) async fn registered_before(
        &self,
        idempotency_key: &str,
        kind: ClientKind,
    ) -> Result<Option<Registration>, IdpError> {
        let Some(IdempotencyDoc { client_id }) =
            self.load(&self.idempotency_name(idempotency_key)).await?
        else {
            return Ok(None);
        };
        let Some(reg) = self.registration(&client_id).await? else {
            return Ok(None);
        };
        if reg.deleted || self.read(&reg).await?.is_none() {
            return Ok(None);
        }
        let (same, what) = match kind {
            ClientKind::Secret => (
                !reg.is_key_client() && !reg.is_certificate_client(),
                "a secret",
            ),
            ClientKind::Key => (reg.is_key_client(), "a key"),
            ClientKind::Certificate => (reg.is_certificate_client(), "a certificate"),
        };
        if !same {
            return Err(IdpError::Refused(format!(
                "idempotency key {idempotency_key} created client {client_id}, which \
                 authenticates with {}, not {what}",
                reg.authenticates_with()
            )));
        }
        Ok(Some(reg))
    }

    /// The live registration of `client_id`, or `UnknownClient`.
    pub(super) async fn live_registration(
        &self,
        client_id: &str,
    ) -> Result<Registration, IdpError> {
        match self.registration(client_id).await? {
            Some(r) if !r.deleted => Ok(r),
            _ => Err(IdpError::UnknownClient(client_id.into())),
        }
    }

    pub(super) async fn save_registration(&self, r: &Registration) -> Result<(), IdpError> {
        let doc = RegistrationDoc {
            client_id: r.client_id.clone(),
            registration_client_uri: r.uri.clone(),
            registration_access_token: r.token.expose().to_string(),
            secret_serial: r.secret_serial,
            deleted: r.deleted,
            idempotency_key: r.idempotency_key.clone(),
            keys: r.keys.clone(),
            certificates: r.certificates.clone(),
        };
        self.store(&self.client_name(&r.client_id), &doc).await
    }

    pub(super) async fn index(&self) -> Result<IndexDoc, IdpError> {
        Ok(self.load(&self.index_name()).await?.unwrap_or_default())
    }

    pub(super) async fn index_add(&self, client_id: &str) -> Result<(), IdpError> {
        let mut idx = self.index().await?;
        if !idx.clients.iter().any(|c| c == client_id) {
            idx.clients.push(client_id.into());
            self.store(&self.index_name(), &idx).await?;
        }
        Ok(())
    }

    pub(super) async fn index_remove(&self, client_id: &str) -> Result<(), IdpError> {
        let mut idx = self.index().await?;
        let before = idx.clients.len();
        idx.clients.retain(|c| c != client_id);
        if idx.clients.len() != before {
            self.store(&self.index_name(), &idx).await?;
        }
        Ok(())
    }

    // --- RFC 7591 / 7592 ---------------------------------------------------------------------

    pub(super) fn registration_url(&self, uri: &str) -> Result<Url, IdpError> {
        let url = Url::parse(uri).map_err(|e| {
            IdpError::Refused(format!("the server's registration_client_uri `{uri}`: {e}"))
        })?;
        check_transport(&url).map_err(|e| IdpError::Refused(e.to_string()))?;
        Ok(url)
    }

    /// RFC 7592 read. `None`: the server says the client is gone (§2.1 answers 401 then; some
    /// servers 404), or it no longer accepts the stored registration access token.
    pub(super) async fn read(
        &self,
        r: &Registration,
    ) -> Result<Option<Map<String, Value>>, IdpError> {
        let url = self.registration_url(&r.uri)?;
        let req = self
            .http
            .get(url)
            .bearer_auth(r.token.expose())
            .header("accept", "application/json");
        let (status, body) = send(req, "reading a client registration").await?;
        match status {
            s if s.is_success() => parse(body, "client registration").map(Some),
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => Ok(None),
            s => Err(error_from(s, body, "reading a client registration")),
        }
    }

    pub(super) async fn read_live(&self, r: &Registration) -> Result<Map<String, Value>, IdpError> {
        self.read(r)
            .await?
            .ok_or_else(|| IdpError::UnknownClient(r.client_id.clone()))
    }

    /// RFC 7592 update with `body` (a whole registration). Takes up a rotated registration
    /// access token or URI into `r` and saves it before anything else can fail.
    pub(super) async fn update(
        &self,
        r: &mut Registration,
        body: Map<String, Value>,
    ) -> Result<Map<String, Value>, IdpError> {
        let url = self.registration_url(&r.uri)?;
        let req = self
            .http
            .put(url)
            .bearer_auth(r.token.expose())
            .header("accept", "application/json")
            .json(&Value::Object(body));
        let (status, resp) = send(req, "updating a client registration").await?;
        match status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => {
                return Err(IdpError::UnknownClient(r.client_id.clone()));
            }
            s => return Err(error_from(s, resp, "updating a client registration")),
        }
        let resp: Map<String, Value> = parse(resp, "client registration")?;
        let mut changed = false;
        if let Some(t) = str_field(&resp, "registration_access_token")
            && t != r.token.expose()
        {
            r.token = Secret::new(t);
            changed = true;
        }
        if let Some(u) = str_field(&resp, "registration_client_uri")
            && u != r.uri
        {
            self.registration_url(u)?;
            r.uri = u.to_string();
            changed = true;
        }
        if changed {
            self.save_registration(r).await?;
        }
        Ok(resp)
    }

    /// An update that must keep the client's secret: sends the current secret back (RFC 7592
    /// §2.2), and if the server replaced it anyway, records that and says so.
    pub(super) async fn update_keeping_secret(
        &self,
        r: &mut Registration,
        body: Map<String, Value>,
    ) -> Result<Map<String, Value>, IdpError> {
        let sent = str_field(&body, "client_secret").map(str::to_string);
        let resp = self.update(r, body).await?;
        let got = str_field(&resp, "client_secret");
        if let (Some(sent), Some(got)) = (sent.as_deref(), got)
            && sent != got
        {
            r.secret_serial += 1;
            self.save_registration(r).await?;
            return Err(IdpError::Refused(format!(
                "the server replaced the secret of client {} on a metadata update; rotate it \
                 (add_secret) to hand the agent a working secret",
                r.client_id
            )));
        }
        Ok(resp)
    }

    /// Rotation: an RFC 7592 update without `client_secret` (§2.2: an omitted field is
    /// deleted), which the server answers with a new secret.
    pub(super) async fn rotate(&self, r: &mut Registration) -> Result<NewSecret, IdpError> {
        let current = self.read_live(r).await?;
        let old = str_field(&current, "client_secret").map(str::to_string);
        let mut body = update_body(&current);
        body.remove("client_secret");
        let resp = self.update(r, body).await?;
        let new = str_field(&resp, "client_secret");
        match new {
            Some(n) if old.as_deref() != Some(n) => {
                r.secret_serial += 1;
                self.save_registration(r).await?;
                Ok(NewSecret {
                    secret_id: secret_id(r.secret_serial),
                    secret: Secret::new(n),
                })
            }
            _ => Err(IdpError::Refused(format!(
                "the server did not issue a new client_secret when client {} omitted it from an \
                 RFC 7592 update, so its secret cannot be rotated here (with oidc-provider, \
                 register through an initial access token carrying a rotation policy; see \
                 docs/adr/0013-oauth-dcr-adapter.md)",
                r.client_id
            ))),
        }
    }

    /// Checks that the server registered what was asked (RFC 7591 §3.2.1: it may replace
    /// values, and the response says what it registered).
    pub(super) fn check_registered(
        &self,
        m: &Map<String, Value>,
        scopes: &[String],
        lifetime: u32,
    ) -> Result<(), IdpError> {
        let got = scopes_of(m);
        if !same_scopes(&got, scopes) {
            return Err(IdpError::Refused(format!(
                "the server registered scope `{}` instead of `{}`",
                got.join(" "),
                scopes.join(" ")
            )));
        }
        if let Some(f) = &self.settings.token_lifetime_field {
            let echoed = m.get(f).and_then(Value::as_u64);
            if echoed != Some(u64::from(lifetime)) {
                return Err(IdpError::Refused(format!(
                    "the server did not register a token lifetime of {lifetime} s in client \
                     metadata `{f}` (it answered {}), so tokens would live its default \
                     lifetime; set {TOKEN_LIFETIME_FIELD_ENV} to the field it supports, or to \
                     empty to accept its default",
                    m.get(f).map_or("nothing".to_string(), Value::to_string)
                )));
            }
        }
        Ok(())
    }

    pub(super) fn info(&self, r: &Registration, m: &Map<String, Value>) -> ClientInfo {
        let lifetime = self
            .settings
            .token_lifetime_field
            .as_ref()
            .and_then(|f| m.get(f))
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let created_at = m
            .get("client_id_issued_at")
            .and_then(Value::as_i64)
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        ClientInfo {
            client_id: r.client_id.clone(),
            name: str_field(m, "client_name").unwrap_or_default().into(),
            scopes: scopes_of(m),
            token_lifetime_secs: lifetime,
            active: grants_token(m),
            created_at,
            steward_key: r.idempotency_key.clone(),
        }
    }

    /// RFC 7591 registration of a client_credentials client, recorded in the vault. A secret
    /// client comes back with its secret, a key client without.
    pub(super) async fn register(
        &self,
        spec: &ClientSpec,
        idempotency_key: &str,
        auth: NewAuth<'_>,
    ) -> Result<(Registration, Option<Secret>), IdpError> {
        let scope = scope_value(&spec.scopes)?;
        let endpoints = self.endpoints().await?;
        let endpoint = endpoints.registration.clone();
        let mut body = json!({
            "client_name": spec.name,
            "grant_types": [GRANT],
            "response_types": [],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": scope,
        });
        if let (Some(f), Some(obj)) = (&self.settings.token_lifetime_field, body.as_object_mut()) {
            obj.insert(f.clone(), json!(spec.token_lifetime_secs));
        }
        match &auth {
            NewAuth::Secret => {}
            NewAuth::Key { jwk, dpop, .. } => {
                endpoints.check_key_support(*dpop)?;
                body["token_endpoint_auth_method"] = json!(PRIVATE_KEY_JWT);
                body["jwks"] = json!({ "keys": [jwk] });
                if *dpop {
                    body["dpop_bound_access_tokens"] = json!(true);
                }
            }
            NewAuth::Certificate {
                method,
                certificate,
            } => {
                endpoints.check_certificate_support(*method)?;
                certificate_metadata(&mut body, *method, certificate);
            }
        }
        let mut req = self
            .http
            .post(endpoint)
            .header("accept", "application/json")
            .json(&body);
        if let Some(t) = &self.settings.initial_access_token {
            req = req.bearer_auth(t.expose());
        }
        let (status, resp) = send(req, "registering a client").await?;
        if !status.is_success() {
            return Err(error_from(status, resp, "registering a client"));
        }
        let m: Map<String, Value> = parse(resp, "registration response")?;
        let client_id = str_field(&m, "client_id")
            .ok_or_else(|| IdpError::Refused("the registration response has no client_id".into()))?
            .to_string();
        let (Some(uri), Some(token)) = (
            str_field(&m, "registration_client_uri"),
            str_field(&m, "registration_access_token"),
        ) else {
            return Err(IdpError::Refused(format!(
                "the server registered client {client_id} without RFC 7592 management \
                 (no registration_access_token or registration_client_uri), so Steward cannot \
                 rotate or delete it; delete it at the server, and enable RFC 7592 there"
            )));
        };
        // A key or certificate client's secret, should a server issue one anyway, is not used
        // (nor kept).
        let secret = match auth {
            NewAuth::Secret => str_field(&m, "client_secret").map(Secret::new),
            NewAuth::Key { .. } | NewAuth::Certificate { .. } => None,
        };
        let mut reg = Registration {
            client_id: client_id.clone(),
            uri: uri.into(),
            token: Secret::new(token),
            secret_serial: if secret.is_some() { 1 } else { 0 },
            deleted: false,
            // Kept with the record from the start: the client is listed only once it is there.
            idempotency_key: Some(idempotency_key.into()),
            keys: match &auth {
                NewAuth::Key { key, .. } => Some(vec![KeyDoc::of(key)]),
                NewAuth::Secret | NewAuth::Certificate { .. } => None,
            },
            certificates: match &auth {
                NewAuth::Certificate { certificate, .. } => Some(vec![certificate.doc()]),
                NewAuth::Secret | NewAuth::Key { .. } => None,
            },
        };
        // Recorded first: without the registration access token the client is unmanageable.
        self.save_registration(&reg).await?;
        self.index_add(&client_id).await?;
        let problem = match (&auth, self.registration_url(uri)) {
            (_, Err(e)) => Some(e),
            (NewAuth::Secret, _) if secret.is_none() => Some(IdpError::Refused(format!(
                "the server registered client {client_id} without a client_secret"
            ))),
            (NewAuth::Key { key, dpop, .. }, _) => check_key_client(&m, &client_id, key, *dpop)
                .err()
                .or_else(|| {
                    self.check_registered(&m, &spec.scopes, spec.token_lifetime_secs)
                        .err()
                }),
            (
                NewAuth::Certificate {
                    method,
                    certificate,
                },
                _,
            ) => check_certificate_client(&m, &client_id, *method, certificate)
                .err()
                .or_else(|| {
                    self.check_registered(&m, &spec.scopes, spec.token_lifetime_secs)
                        .err()
                }),
            (NewAuth::Secret, Ok(_)) => self
                .check_registered(&m, &spec.scopes, spec.token_lifetime_secs)
                .err(),
        };
        if let Some(problem) = problem {
            // Not what was asked: take it back rather than leave a client nobody wants.
            if let Err(e) = self.remove(&mut reg).await {
                tracing::warn!(client_id, error = %e, "could not delete a refused registration");
            }
            return Err(problem);
        }
        Ok((reg, secret))
    }

    /// RFC 7592 delete, then the record becomes a tombstone and leaves the index.
    pub(super) async fn remove(&self, r: &mut Registration) -> Result<(), IdpError> {
        let url = self.registration_url(&r.uri)?;
        let req = self.http.delete(url).bearer_auth(r.token.expose());
        let (status, body) = send(req, "deleting a client").await?;
        match status {
            // §2.3: 401 for a client that does not exist (any more).
            s if s.is_success() || s == StatusCode::UNAUTHORIZED || s == StatusCode::NOT_FOUND => {}
            s => return Err(error_from(s, body, "deleting a client")),
        }
        r.deleted = true;
        r.token = Secret::new("");
        self.save_registration(r).await?;
        self.index_remove(&r.client_id).await
    }
}
