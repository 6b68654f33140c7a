//! Key clients: RFC 7591 registration with `private_key_jwt` and a `jwks`, RFC 7592 updates of
//! that `jwks` for adding, deactivating and removing keys, and a client-assertion token request
//! to prove a key works.
//!
//! RFC 7592 has no per-key state: a key is active exactly when it is in the registered `jwks`.
//! The vault record keeps every key the client holds or held and was not removed (public JWKs
//! only), so a deactivated key is still listed (inactive) and can be registered again.

use super::*;

/// A key of a key client as its vault record keeps it: the public JWK only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KeyDoc {
    /// The RFC 7638 thumbprint.
    pub(super) kid: String,
    /// The public JWK as JSON text, as registered (to register it again on reactivation).
    pub(super) jwk: String,
}

impl KeyDoc {
    pub(super) fn of(key: &AgentKey) -> Self {
        Self {
            kid: key.kid.clone(),
            jwk: key.jwk.clone(),
        }
    }
}

/// `key` checked again before it leaves the process: only the public members of its JWK (a
/// private member is refused, and never repeated), and its `kid` must be the JWK's RFC 7638
/// thumbprint. Returns the key as sent and its JWK.
pub(super) fn checked_key(key: &AgentKey) -> Result<(AgentKey, Value), IdpError> {
    let jwk: Value = serde_json::from_str(&key.jwk)
        .map_err(|_| IdpError::Refused(format!("key {}: its public JWK is not JSON", key.kid)))?;
    let public = crate::agent_key::public_key(&jwk).map_err(|e| {
        IdpError::Refused(format!(
            "key {}: {e}",
            key.kid.chars().take(64).collect::<String>()
        ))
    })?;
    if public.kid != key.kid {
        return Err(IdpError::Refused(format!(
            "key `{}` is named by something other than its RFC 7638 thumbprint `{}`",
            key.kid.chars().take(64).collect::<String>(),
            public.kid
        )));
    }
    let jwk = serde_json::from_str(&public.jwk)
        .map_err(|e| IdpError::Refused(format!("key {}: {e}", public.kid)))?;
    Ok((public, jwk))
}

/// The JWKs of a registration's `jwks` (empty when it has none).
fn registered_jwks(m: &Map<String, Value>) -> Vec<Value> {
    m.get("jwks")
        .and_then(|j| j.get("keys"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A registered JWK's key id: its RFC 7638 thumbprint (what Steward names keys by), else its
/// `kid`.
fn kid_of(jwk: &Value) -> Option<String> {
    crate::agent_key::thumbprint(jwk)
        .ok()
        .or_else(|| jwk.get("kid").and_then(Value::as_str).map(str::to_string))
}

fn registered_kids(m: &Map<String, Value>) -> Vec<String> {
    registered_jwks(m).iter().filter_map(kid_of).collect()
}

/// Checks a key client's registration answer: the method, the key and the binding asked for.
pub(super) fn check_key_client(
    m: &Map<String, Value>,
    client_id: &str,
    key: &AgentKey,
    dpop: bool,
) -> Result<(), IdpError> {
    let method = str_field(m, "token_endpoint_auth_method");
    if method != Some(PRIVATE_KEY_JWT) {
        return Err(IdpError::Refused(format!(
            "the server registered client {client_id} with token_endpoint_auth_method `{}` \
             instead of `{PRIVATE_KEY_JWT}`",
            method.unwrap_or("<none>")
        )));
    }
    if !registered_kids(m).contains(&key.kid) {
        return Err(IdpError::Refused(format!(
            "the server registered client {client_id} without key {} in its jwks",
            key.kid
        )));
    }
    if dpop && m.get("dpop_bound_access_tokens") != Some(&Value::Bool(true)) {
        return Err(IdpError::Refused(format!(
            "the server registered client {client_id} without dpop_bound_access_tokens \
             (RFC 9449 §5.2), so its tokens would not be bound to the agent's key"
        )));
    }
    Ok(())
}

impl Endpoints {
    /// Refuses early, with the reason, what the server's metadata says it does not do.
    pub(super) fn check_key_support(&self, dpop: bool) -> Result<(), IdpError> {
        if let Some(methods) = &self.auth_methods
            && !methods.iter().any(|m| m == PRIVATE_KEY_JWT)
        {
            return Err(IdpError::Refused(format!(
                "the server does not accept {PRIVATE_KEY_JWT} (its \
                 token_endpoint_auth_methods_supported: {}); use credential kind `secret` with it",
                methods.join(", ")
            )));
        }
        if dpop && self.dpop_algs.is_none() {
            return Err(IdpError::Refused(
                "the server does not do DPoP (no dpop_signing_alg_values_supported in its \
                 metadata), so its tokens cannot be bound to the agent's key; use token binding \
                 `none` with it"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl OAuthDcr {
    /// The port's `create_key_client`, once per idempotency key like `create_client`.
    pub(super) async fn register_key_client(
        &self,
        spec: &ClientSpec,
        key: &AgentKey,
        binding: TokenBinding,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        let (key, jwk) = checked_key(key)?;
        let dpop = match binding {
            TokenBinding::None => false,
            TokenBinding::Dpop => true,
            TokenBinding::Certificate => {
                return Err(IdpError::Refused(
                    "certificate-bound tokens (RFC 8705) are issued over mutual TLS with the \
                     agent's certificate, and this adapter registers key clients \
                     (private_key_jwt) without one; bind them by DPoP instead"
                        .into(),
                ));
            }
        };
        let _g = self.lock.lock().await;
        let key_name = self.idempotency_name(idempotency_key);
        // A repeat whose first answer was lost: the client exists, with its key.
        if let Some(reg) = self
            .registered_before(idempotency_key, ClientKind::Key)
            .await?
        {
            return Ok(reg.client_id);
        }
        let (reg, _) = self
            .register(
                spec,
                idempotency_key,
                NewAuth::Key {
                    key: &key,
                    jwk: &jwk,
                    dpop,
                },
            )
            .await?;
        self.store(
            &key_name,
            &IdempotencyDoc {
                client_id: reg.client_id.clone(),
            },
        )
        .await?;
        tracing::info!(
            client_id = %reg.client_id,
            kid = %key.kid,
            binding = binding.as_str(),
            "registered an OAuth key client (RFC 7591, private_key_jwt)"
        );
        Ok(reg.client_id)
    }

    /// The live key client `client_id` and its current registration.
    async fn key_client(
        &self,
        client_id: &str,
    ) -> Result<(Registration, Map<String, Value>), IdpError> {
        let reg = self.live_registration(client_id).await?;
        let current = self.read_live(&reg).await?;
        if str_field(&current, "token_endpoint_auth_method") != Some(PRIVATE_KEY_JWT) {
            return Err(IdpError::Refused(format!(
                "client {client_id} authenticates with `{}`, not {PRIVATE_KEY_JWT}: keys are for \
                 clients made by create_key_client",
                str_field(&current, "token_endpoint_auth_method").unwrap_or("client_secret_basic")
            )));
        }
        Ok((reg, current))
    }

    /// An RFC 7592 update registering exactly `jwks`, checked against the server's answer.
    async fn register_jwks(
        &self,
        reg: &mut Registration,
        current: &Map<String, Value>,
        jwks: Vec<Value>,
        kid: &str,
        present: bool,
    ) -> Result<(), IdpError> {
        let mut body = update_body(current);
        body.insert("jwks".into(), json!({ "keys": jwks }));
        let resp = self.update_keeping_secret(reg, body).await?;
        if registered_kids(&resp).iter().any(|k| k == kid) != present {
            return Err(IdpError::Refused(format!(
                "the server kept client {}'s jwks as they were, so key {kid} could not be {}",
                reg.client_id,
                if present { "registered" } else { "taken out" }
            )));
        }
        Ok(())
    }

    pub(super) async fn add_client_key(
        &self,
        client_id: &str,
        key: &AgentKey,
    ) -> Result<(), IdpError> {
        let (key, jwk) = checked_key(key)?;
        let _g = self.lock.lock().await;
        let (mut reg, current) = self.key_client(client_id).await?;
        // Remembered first: a key the server holds is always one the record can list.
        let keys = reg.keys.get_or_insert_with(Vec::new);
        if !keys.iter().any(|k| k.kid == key.kid) {
            keys.push(KeyDoc::of(&key));
            self.save_registration(&reg).await?;
        }
        let mut jwks = registered_jwks(&current);
        if jwks
            .iter()
            .any(|j| kid_of(j).as_deref() == Some(key.kid.as_str()))
        {
            return Ok(());
        }
        jwks.push(jwk);
        self.register_jwks(&mut reg, &current, jwks, &key.kid, true)
            .await?;
        tracing::info!(client_id, kid = %key.kid, "added a key to an OAuth client (RFC 7592)");
        Ok(())
    }

    pub(super) async fn set_client_key_active(
        &self,
        client_id: &str,
        kid: &str,
        active: bool,
    ) -> Result<(), IdpError> {
        let _g = self.lock.lock().await;
        let (mut reg, current) = self.key_client(client_id).await?;
        let mut jwks = registered_jwks(&current);
        let registered = jwks.iter().position(|j| kid_of(j).as_deref() == Some(kid));
        let known = reg.keys.iter().flatten().find(|k| k.kid == kid).cloned();
        match (active, registered, known) {
            (true, Some(_), _) | (false, None, Some(_)) => Ok(()),
            (_, None, None) => Err(IdpError::Refused(format!(
                "client {client_id} holds no key {kid}"
            ))),
            (true, None, Some(k)) => {
                let jwk: Value = serde_json::from_str(&k.jwk).map_err(|e| {
                    IdpError::Unavailable(format!("the vault record of key {kid}: {e}"))
                })?;
                jwks.push(jwk);
                self.register_jwks(&mut reg, &current, jwks, kid, true)
                    .await?;
                tracing::info!(client_id, kid, "registered a key again (RFC 7592)");
                Ok(())
            }
            (false, Some(i), known) => {
                // Remembered first (a key registered elsewhere has no record yet), so that it
                // can be listed and put back.
                if known.is_none() {
                    let public = crate::agent_key::public_key(&jwks[i]).map_err(|e| {
                        IdpError::Refused(format!("client {client_id}'s key {kid}: {e}"))
                    })?;
                    reg.keys
                        .get_or_insert_with(Vec::new)
                        .push(KeyDoc::of(&public));
                    self.save_registration(&reg).await?;
                }
                jwks.remove(i);
                self.register_jwks(&mut reg, &current, jwks, kid, false)
                    .await?;
                tracing::info!(
                    client_id,
                    kid,
                    "took a key out of an OAuth client's jwks (RFC 7592), kept as inactive"
                );
                Ok(())
            }
        }
    }

    pub(super) async fn remove_client_key(
        &self,
        client_id: &str,
        kid: &str,
    ) -> Result<(), IdpError> {
        let _g = self.lock.lock().await;
        let (mut reg, current) = self.key_client(client_id).await?;
        let mut jwks = registered_jwks(&current);
        let before = jwks.len();
        jwks.retain(|j| kid_of(j).as_deref() != Some(kid));
        if jwks.len() != before {
            self.register_jwks(&mut reg, &current, jwks, kid, false)
                .await?;
        }
        if let Some(keys) = &mut reg.keys
            && keys.iter().any(|k| k.kid == kid)
        {
            keys.retain(|k| k.kid != kid);
            self.save_registration(&reg).await?;
        }
        tracing::info!(
            client_id,
            kid,
            "removed a key from an OAuth client (RFC 7592)"
        );
        Ok(())
    }

    /// The record's keys, oldest first, active when registered; then keys registered
    /// elsewhere (active).
    pub(super) async fn client_keys(&self, client_id: &str) -> Result<Vec<ClientKey>, IdpError> {
        let _g = self.lock.lock().await;
        let reg = self.live_registration(client_id).await?;
        let current = self.read_live(&reg).await?;
        let registered = registered_kids(&current);
        let mut out: Vec<ClientKey> = reg
            .keys
            .iter()
            .flatten()
            .map(|k| ClientKey {
                kid: k.kid.clone(),
                active: registered.contains(&k.kid),
            })
            .collect();
        for kid in registered {
            if !out.iter().any(|k| k.kid == kid) {
                out.push(ClientKey { kid, active: true });
            }
        }
        Ok(out)
    }

    /// A client_credentials token with a client assertion signed by `key`, and a DPoP proof
    /// by the same key when the client is registered with `dpop_bound_access_tokens`.
    pub(super) async fn test_client_key(
        &self,
        client_id: &str,
        key: &AgentKeyPair,
    ) -> Result<(), IdpError> {
        let (scopes, dpop) = {
            let _g = self.lock.lock().await;
            match self.registration(client_id).await? {
                Some(reg) if !reg.deleted => self
                    .read(&reg)
                    .await?
                    .map(|m| {
                        let bound = m.get("dpop_bound_access_tokens") == Some(&Value::Bool(true));
                        (scopes_of(&m), bound)
                    })
                    .unwrap_or_default(),
                // Not ours, or deleted: ask anyway, the server decides.
                _ => (Vec::new(), false),
            }
        };
        self.token_with(
            client_id,
            ClientAuth::Key(key),
            &scopes,
            dpop.then_some(key),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_leaves_with_its_public_members_only_and_its_thumbprint() {
        let pair = AgentKeyPair::generate().unwrap();
        let (key, jwk) = checked_key(pair.public()).unwrap();
        assert_eq!(&key, pair.public());
        assert_eq!(jwk["kid"], json!(key.kid));
        for m in ["d", "p", "q"] {
            assert!(jwk.get(m).is_none(), "{jwk}");
        }
        // A private member is refused without being repeated.
        let mut leaky = pair.public_jwk();
        leaky["d"] = json!("cHJpdmF0ZS1zY2FsYXI");
        let e = checked_key(&AgentKey {
            kid: key.kid.clone(),
            jwk: leaky.to_string(),
        })
        .unwrap_err()
        .to_string();
        assert!(!e.contains("cHJpdmF0ZS1zY2FsYXI"), "{e}");
        // A kid that is not the thumbprint is refused.
        let other = AgentKeyPair::generate().unwrap();
        assert!(
            checked_key(&AgentKey {
                kid: other.public().kid.clone(),
                jwk: key.jwk.clone(),
            })
            .is_err()
        );
    }

    #[test]
    fn registered_keys_are_named_by_thumbprint() {
        let pair = AgentKeyPair::generate().unwrap();
        let mut jwk = pair.public_jwk();
        jwk["kid"] = json!("a-name-given-elsewhere");
        let m = json!({"jwks": {"keys": [jwk]}});
        assert_eq!(
            registered_kids(m.as_object().unwrap()),
            vec![pair.public().kid.clone()]
        );
        assert!(registered_kids(json!({}).as_object().unwrap()).is_empty());
    }

    #[test]
    fn a_key_client_registration_is_checked() {
        let pair = AgentKeyPair::generate().unwrap();
        let key = pair.public();
        let ok = json!({"token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [pair.public_jwk()]}, "dpop_bound_access_tokens": true});
        assert!(check_key_client(ok.as_object().unwrap(), "c", key, true).is_ok());
        let unbound = json!({"token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [pair.public_jwk()]}});
        assert!(check_key_client(unbound.as_object().unwrap(), "c", key, false).is_ok());
        assert!(check_key_client(unbound.as_object().unwrap(), "c", key, true).is_err());
        let secret = json!({"token_endpoint_auth_method": "client_secret_basic",
            "jwks": {"keys": [pair.public_jwk()]}});
        assert!(check_key_client(secret.as_object().unwrap(), "c", key, false).is_err());
        let keyless = json!({"token_endpoint_auth_method": "private_key_jwt"});
        assert!(check_key_client(keyless.as_object().unwrap(), "c", key, false).is_err());
    }
}
