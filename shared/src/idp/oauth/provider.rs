//! The `IdentityProvider` port on the registration calls (key clients: `keys.rs`; certificate
//! clients: `certificates.rs`).

use super::*;

#[async_trait]
impl IdentityProvider for OAuthDcr {
    async fn create_client(
        &self,
        spec: &ClientSpec,
        idempotency_key: &str,
    ) -> Result<CreatedClient, IdpError> {
        let _g = self.lock.lock().await;
        let key_name = self.idempotency_name(idempotency_key);
        if let Some(mut reg) = self
            .registered_before(idempotency_key, ClientKind::Secret)
            .await?
        {
            // A repeat whose first answer was lost: nobody holds that secret, replace it.
            let s = self.rotate(&mut reg).await?;
            return Ok(CreatedClient {
                client_id: reg.client_id,
                secret_id: s.secret_id,
                secret: s.secret,
            });
        }
        let (reg, secret) = self
            .register(spec, idempotency_key, NewAuth::Secret)
            .await?;
        let secret = secret.ok_or_else(|| IdpError::Refused("no client_secret".into()))?;
        self.store(
            &key_name,
            &IdempotencyDoc {
                client_id: reg.client_id.clone(),
            },
        )
        .await?;
        tracing::info!(client_id = %reg.client_id, "registered an OAuth client (RFC 7591)");
        Ok(CreatedClient {
            client_id: reg.client_id,
            secret_id: secret_id(reg.secret_serial),
            secret,
        })
    }

    async fn set_grants(
        &self,
        client_id: &str,
        scopes: &[String],
        token_lifetime_secs: u32,
    ) -> Result<(), IdpError> {
        let scope = scope_value(scopes)?;
        let _g = self.lock.lock().await;
        let mut reg = self.live_registration(client_id).await?;
        let current = self.read_live(&reg).await?;
        let mut body = update_body(&current);
        body.insert("scope".into(), json!(scope));
        if let Some(f) = &self.settings.token_lifetime_field {
            body.insert(f.clone(), json!(token_lifetime_secs));
        }
        let resp = self.update_keeping_secret(&mut reg, body).await?;
        self.check_registered(&resp, scopes, token_lifetime_secs)
    }

    async fn set_active(&self, client_id: &str, active: bool) -> Result<(), IdpError> {
        let _g = self.lock.lock().await;
        let mut reg = self.live_registration(client_id).await?;
        let current = self.read_live(&reg).await?;
        let mut body = update_body(&current);
        let mut grants: Vec<Value> = current
            .get("grant_types")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        grants.retain(|g| g.as_str() != Some(GRANT));
        if active {
            grants.push(json!(GRANT));
        }
        body.insert("grant_types".into(), Value::Array(grants));
        let resp = self.update_keeping_secret(&mut reg, body).await?;
        if grants_token(&resp) != active {
            return Err(IdpError::Refused(format!(
                "the server kept client {client_id}'s grant_types as they were, so it cannot be \
                 {} here (RFC 7592 has no lifecycle; this adapter emulates it with the \
                 client_credentials grant)",
                if active { "activated" } else { "deactivated" }
            )));
        }
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientInfo>, IdpError> {
        let _g = self.lock.lock().await;
        let Some(reg) = self.registration(client_id).await? else {
            return Ok(None);
        };
        if reg.deleted {
            return Ok(None);
        }
        Ok(self.read(&reg).await?.map(|m| self.info(&reg, &m)))
    }

    async fn list_clients(&self) -> Result<Vec<ClientInfo>, IdpError> {
        let _g = self.lock.lock().await;
        let mut out = Vec::new();
        for client_id in self.index().await?.clients {
            let Some(reg) = self.registration(&client_id).await? else {
                continue;
            };
            if reg.deleted {
                continue;
            }
            match self.read(&reg).await? {
                Some(m) => out.push(self.info(&reg, &m)),
                None => tracing::warn!(
                    client_id,
                    "a client this adapter registered is gone at the server, or no longer \
                     accepts its registration access token"
                ),
            }
        }
        Ok(out)
    }

    async fn add_secret(
        &self,
        client_id: &str,
        _idempotency_key: &str,
    ) -> Result<NewSecret, IdpError> {
        // One secret per client: every call replaces the current one, a repeat included
        // (the port's "a repeat replaces the secret the first call made").
        let _g = self.lock.lock().await;
        let mut reg = self.live_registration(client_id).await?;
        if reg.is_key_client() {
            return Err(IdpError::Refused(format!(
                "client {client_id} authenticates with {PRIVATE_KEY_JWT}: it has no secret to \
                 rotate; add a key instead"
            )));
        }
        if reg.is_certificate_client() {
            return Err(IdpError::Refused(format!(
                "client {client_id} authenticates with a certificate (RFC 8705): it has no \
                 secret to rotate; rotate its certificate instead"
            )));
        }
        self.rotate(&mut reg).await
    }

    async fn remove_secret(&self, client_id: &str, secret_id_: &str) -> Result<(), IdpError> {
        let _g = self.lock.lock().await;
        let reg = self.live_registration(client_id).await?;
        if reg.is_key_client() || reg.is_certificate_client() {
            // A key or certificate client has no secret: any id names one already gone.
            return Ok(());
        }
        if secret_id_ == secret_id(reg.secret_serial) {
            return Err(IdpError::Refused(format!(
                "{secret_id_} is the only secret of client {client_id} (RFC 7592 clients hold \
                 one); rotate it with add_secret instead"
            )));
        }
        // Any other id is a replaced secret: already gone.
        Ok(())
    }

    async fn secret_ids(&self, client_id: &str) -> Result<Vec<String>, IdpError> {
        let _g = self.lock.lock().await;
        let reg = self.live_registration(client_id).await?;
        self.read_live(&reg).await?;
        if reg.is_key_client() || reg.is_certificate_client() {
            return Ok(Vec::new());
        }
        Ok(vec![secret_id(reg.secret_serial)])
    }

    async fn test_secret(&self, client_id: &str, secret: &Secret) -> Result<(), IdpError> {
        let scopes = {
            let _g = self.lock.lock().await;
            match self.registration(client_id).await? {
                Some(reg) if !reg.deleted => self
                    .read(&reg)
                    .await?
                    .map(|m| scopes_of(&m))
                    .unwrap_or_default(),
                // Not ours, or deleted: ask anyway, the server decides.
                _ => Vec::new(),
            }
        };
        self.token(client_id, secret, &scopes).await.map(|_| ())
    }

    async fn revoke_tokens(&self, client_id: &str) -> Result<TokenRevocation, IdpError> {
        let _g = self.lock.lock().await;
        let reg = self.live_registration(client_id).await?;
        let m = self.read_live(&reg).await?;
        let lifetime = self.info(&reg, &m).token_lifetime_secs;
        let until = if lifetime > 0 {
            format!("at most {lifetime} s, the client's token lifetime")
        } else {
            "the server's default token lifetime".to_string()
        };
        Ok(TokenRevocation {
            revoked: "nothing: RFC 7009 revokes one token at a time by its value, and Steward \
                      does not hold the tokens its agents obtain"
                .into(),
            outstanding: Some(format!(
                "access tokens already issued to {client_id} stay valid until they expire \
                 ({until}), unless their holder revokes them at the revocation endpoint; \
                 deactivate the client to stop new ones"
            )),
        })
    }

    async fn delete_client(&self, client_id: &str) -> Result<(), IdpError> {
        let _g = self.lock.lock().await;
        match self.registration(client_id).await? {
            Some(r) if r.deleted => Ok(()),
            Some(mut r) => {
                self.remove(&mut r).await?;
                tracing::info!(client_id, "deleted an OAuth client (RFC 7592)");
                Ok(())
            }
            None => Err(IdpError::Refused(format!(
                "no registration record for client {client_id}: this adapter did not register \
                 it (or its vault record is lost), so it holds no registration access token to \
                 delete it with; delete it at the server"
            ))),
        }
    }

    async fn create_key_client(
        &self,
        spec: &ClientSpec,
        key: &AgentKey,
        binding: TokenBinding,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        self.register_key_client(spec, key, binding, idempotency_key)
            .await
    }

    async fn add_key(&self, client_id: &str, key: &AgentKey) -> Result<(), IdpError> {
        self.add_client_key(client_id, key).await
    }

    async fn set_key_active(
        &self,
        client_id: &str,
        kid: &str,
        active: bool,
    ) -> Result<(), IdpError> {
        self.set_client_key_active(client_id, kid, active).await
    }

    async fn remove_key(&self, client_id: &str, kid: &str) -> Result<(), IdpError> {
        self.remove_client_key(client_id, kid).await
    }

    async fn keys(&self, client_id: &str) -> Result<Vec<ClientKey>, IdpError> {
        self.client_keys(client_id).await
    }

    async fn test_key(&self, client_id: &str, key: &AgentKeyPair) -> Result<(), IdpError> {
        self.test_client_key(client_id, key).await
    }

    fn certificate_clients(&self) -> bool {
        self.settings.certificate_clients.is_some()
    }

    async fn create_certificate_client(
        &self,
        spec: &ClientSpec,
        certificate: &CertificateRecord,
        pem: &str,
        idempotency_key: &str,
    ) -> Result<String, IdpError> {
        self.register_certificate_client(spec, certificate, pem, idempotency_key)
            .await
    }

    async fn add_certificate(
        &self,
        client_id: &str,
        certificate: &CertificateRecord,
        pem: &str,
    ) -> Result<(), IdpError> {
        self.add_client_certificate(client_id, certificate, pem)
            .await
    }

    async fn remove_certificate(&self, client_id: &str, x5t_s256: &str) -> Result<(), IdpError> {
        self.remove_client_certificate(client_id, x5t_s256).await
    }
}
