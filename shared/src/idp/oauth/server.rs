//! The authorization server's own endpoints: discovery (with RFC 8705's mTLS aliases),
//! client-credentials tokens (with a secret or an RFC 7523 client assertion, and an RFC 9449
//! DPoP proof when asked), RFC 7662 introspection and RFC 7009 revocation.

use super::*;

impl OAuthDcr {
    /// Discovers the server's endpoints once: `<issuer>/.well-known/openid-configuration`, else
    /// RFC 8414's `/.well-known/oauth-authorization-server[/<issuer path>]`. The metadata's
    /// `issuer` must equal the configured one; every endpoint must be https (or loopback http).
    pub async fn endpoints(&self) -> Result<&Endpoints, IdpError> {
        self.endpoints.get_or_try_init(|| self.discover()).await
    }

    pub(super) async fn discover(&self) -> Result<Endpoints, IdpError> {
        let issuer = &self.settings.issuer;
        let base = Url::parse(issuer).map_err(|e| IdpError::Refused(e.to_string()))?;
        let oidc = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let mut rfc8414 = base.clone();
        let path = base.path().trim_end_matches('/');
        rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        let mut tried = Vec::new();
        let mut meta = None;
        for url in [oidc, rfc8414.to_string()] {
            let resp = self
                .http
                .get(&url)
                .header("accept", "application/json")
                .send()
                .await
                .map_err(|e| unavailable("OAuth discovery", e))?;
            let status = resp.status();
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                return Err(IdpError::Unavailable(format!(
                    "OAuth discovery: {url} answered {status}"
                )));
            }
            if status.is_success() {
                let m: Map<String, Value> = resp.json().await.map_err(|e| {
                    IdpError::Refused(format!("OAuth discovery: {url} is not JSON metadata: {e}"))
                })?;
                meta = Some(m);
                break;
            }
            tried.push(format!("{url} ({status})"));
        }
        let Some(meta) = meta else {
            return Err(IdpError::Refused(format!(
                "no OAuth server metadata at {}; is {ISSUER_ENV} the server's issuer URL?",
                tried.join(" or ")
            )));
        };
        if str_field(&meta, "issuer") != Some(issuer.as_str()) {
            return Err(IdpError::Refused(format!(
                "the server names its issuer `{}`, not `{issuer}` (RFC 8414 §3.3 requires them \
                 equal); set {ISSUER_ENV} to the server's issuer",
                str_field(&meta, "issuer").unwrap_or("<none>")
            )));
        }
        let url_in = |m: &Map<String, Value>, name: &str| -> Result<Option<Url>, IdpError> {
            let Some(v) = str_field(m, name) else {
                return Ok(None);
            };
            let url = Url::parse(v)
                .map_err(|e| IdpError::Refused(format!("the server's {name} `{v}`: {e}")))?;
            check_transport(&url).map_err(|e| IdpError::Refused(e.to_string()))?;
            Ok(Some(url))
        };
        let endpoint = |name: &str| url_in(&meta, name);
        let no_aliases = Map::new();
        let aliases = meta
            .get("mtls_endpoint_aliases")
            .and_then(Value::as_object)
            .unwrap_or(&no_aliases);
        let token = endpoint("token_endpoint")?.ok_or_else(|| {
            IdpError::Refused("the server's metadata has no token_endpoint".into())
        })?;
        let registration = endpoint("registration_endpoint")?.ok_or_else(|| {
            IdpError::Refused(
                "the server does not offer dynamic client registration (no \
                 registration_endpoint in its metadata): this adapter needs RFC 7591"
                    .into(),
            )
        })?;
        let strings = |name: &str| {
            meta.get(name).and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
        };
        Ok(Endpoints {
            token,
            registration,
            revocation: endpoint("revocation_endpoint")?,
            introspection: endpoint("introspection_endpoint")?,
            auth_methods: strings("token_endpoint_auth_methods_supported"),
            dpop_algs: strings("dpop_signing_alg_values_supported"),
            certificate_bound_tokens: meta.get("tls_client_certificate_bound_access_tokens")
                == Some(&Value::Bool(true)),
            mtls_token: url_in(aliases, "token_endpoint")?,
            mtls_introspection: url_in(aliases, "introspection_endpoint")?,
            mtls_revocation: url_in(aliases, "revocation_endpoint")?,
        })
    }

    /// `req` with the client's authentication and `form` as its body. A key signs a client
    /// assertion for the token endpoint URL (RFC 7523 §3; servers accept it at their other
    /// endpoints too). The assertion goes in the body and nowhere else.
    async fn authenticated(
        &self,
        req: RequestBuilder,
        client_id: &str,
        auth: ClientAuth<'_>,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<RequestBuilder, IdpError> {
        Ok(match auth {
            ClientAuth::Secret(secret) => client_auth(req, client_id, secret).form(&form),
            ClientAuth::Key(key) => {
                let audience = self.endpoints().await?.token.to_string();
                form.push(("client_id", client_id.to_string()));
                form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE.to_string()));
                form.push((
                    "client_assertion",
                    key.client_assertion(client_id, &audience, Utc::now()),
                ));
                req.form(&form)
            }
        })
    }

    /// A client_credentials token for `client_id` (client_secret_basic), for `scopes` (none:
    /// the server's default for the client), for the configured resource if any.
    pub async fn token(
        &self,
        client_id: &str,
        secret: &Secret,
        scopes: &[String],
    ) -> Result<AccessToken, IdpError> {
        self.token_with(client_id, ClientAuth::Secret(secret), scopes, None)
            .await
    }

    /// A client_credentials token for `client_id` authenticated by `auth`, for `scopes` (none:
    /// the server's default for the client), for the configured resource if any. With `dpop`,
    /// the request carries an RFC 9449 DPoP proof signed by that key, and a server that does
    /// DPoP binds the token to it (`token_type` `DPoP`, `cnf.jkt` the key's thumbprint).
    pub async fn token_with(
        &self,
        client_id: &str,
        auth: ClientAuth<'_>,
        scopes: &[String],
        dpop: Option<&AgentKeyPair>,
    ) -> Result<AccessToken, IdpError> {
        let endpoint = self.endpoints().await?.token.clone();
        let mut form = vec![("grant_type", GRANT.to_string())];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        if let Some(r) = &self.settings.resource {
            form.push(("resource", r.clone()));
        }
        let mut req = self.http.post(endpoint.clone());
        if let Some(key) = dpop {
            // §4.2: htu is the request's URI without query and fragment (the endpoint has none
            // that matter here); no access token yet, so no `ath`.
            req = req.header(
                "DPoP",
                key.dpop_proof("POST", endpoint.as_str(), None, Utc::now()),
            );
        }
        let req = self.authenticated(req, client_id, auth, form).await?;
        let (status, body) = send(req, "token request").await?;
        if !status.is_success() {
            return Err(error_from(status, body, "token request"));
        }
        #[derive(Deserialize)]
        struct Wire {
            access_token: String,
            #[serde(default)]
            token_type: String,
            #[serde(default)]
            expires_in: Option<u64>,
            #[serde(default)]
            scope: Option<String>,
        }
        let w: Wire = parse(body, "token response")?;
        Ok(AccessToken {
            access_token: Secret::new(w.access_token),
            token_type: w.token_type,
            expires_in: w.expires_in,
            scope: w.scope,
        })
    }

    /// RFC 7662: asks the server about `token`, authenticating as `as_client` (client id and
    /// secret). Servers usually answer only about the caller's own tokens.
    pub async fn introspect(
        &self,
        token: &Secret,
        as_client: (&str, &Secret),
    ) -> Result<Introspection, IdpError> {
        self.introspect_with(token, as_client.0, ClientAuth::Secret(as_client.1))
            .await
    }

    /// RFC 7662 as [`introspect`](Self::introspect), authenticating as `client_id` by `auth`
    /// (a key client introspects its own tokens with a client assertion).
    pub async fn introspect_with(
        &self,
        token: &Secret,
        client_id: &str,
        auth: ClientAuth<'_>,
    ) -> Result<Introspection, IdpError> {
        let Some(endpoint) = self.endpoints().await?.introspection.clone() else {
            return Err(IdpError::Refused(
                "the server does not offer token introspection (no introspection_endpoint in \
                 its metadata)"
                    .into(),
            ));
        };
        let form = vec![
            ("token", token.expose().to_string()),
            ("token_type_hint", "access_token".to_string()),
        ];
        let req = self
            .authenticated(self.http.post(endpoint), client_id, auth, form)
            .await?;
        let (status, body) = send(req, "token introspection").await?;
        if !status.is_success() {
            return Err(error_from(status, body, "token introspection"));
        }
        parse(body, "introspection response")
    }

    /// RFC 7009: revokes `token`, authenticating as `as_client` (the client it was issued to).
    /// An unknown or already revoked token is success, as the RFC says.
    pub async fn revoke(&self, token: &Secret, as_client: (&str, &Secret)) -> Result<(), IdpError> {
        self.revoke_with(token, as_client.0, ClientAuth::Secret(as_client.1))
            .await
    }

    /// RFC 7009 as [`revoke`](Self::revoke), authenticating as `client_id` by `auth`.
    pub async fn revoke_with(
        &self,
        token: &Secret,
        client_id: &str,
        auth: ClientAuth<'_>,
    ) -> Result<(), IdpError> {
        let Some(endpoint) = self.endpoints().await?.revocation.clone() else {
            return Err(IdpError::Refused(
                "the server does not offer token revocation (no revocation_endpoint in its \
                 metadata)"
                    .into(),
            ));
        };
        let form = vec![
            ("token", token.expose().to_string()),
            ("token_type_hint", "access_token".to_string()),
        ];
        let req = self
            .authenticated(self.http.post(endpoint), client_id, auth, form)
            .await?;
        let (status, body) = send(req, "token revocation").await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(error_from(status, body, "token revocation"))
        }
    }
}
