//! The receiver: checks one SET in the documented order against the cached JWKS.

use super::*;

/// The receiver for one transmitter: settings plus the cached JWKS. Build it once per process.
pub struct SsfReceiver {
    settings: SsfSettings,
    keys: Keys,
}

impl SsfReceiver {
    /// Checks the settings; reads a JWKS file or document now (a URL is fetched on the first
    /// SET, so a transmitter outage does not stop Steward from starting).
    pub fn new(settings: SsfSettings) -> Result<Self, SsfConfigError> {
        settings.check()?;
        let https_only = match &settings.jwks {
            JwksSource::Url(url) => jwks_url_is_https(url)?,
            _ => false,
        };
        let keys = Keys::new(
            settings.jwks.clone(),
            settings.jwks_min_refresh,
            https_only,
            "the transmitter's",
        )
        .map_err(|e| match e {
            crate::jwks::KeysError::Client(m) => SsfConfigError::Client(m),
            crate::jwks::KeysError::Keys { origin, reason } => {
                SsfConfigError::Keys { origin, reason }
            }
        })?;
        Ok(Self { settings, keys })
    }

    pub fn settings(&self) -> &SsfSettings {
        &self.settings
    }

    /// Checks one push request at `now` (the engine's clock) and maps its events. Touches no
    /// storage: the replay check on `jti` is [`handle`]'s.
    pub async fn verify(
        &self,
        headers: &(impl Headers + ?Sized),
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<VerifiedSet, Rejected> {
        use SetErr::*;
        if let Some(expected) = &self.settings.authorization {
            let presented = headers.get("authorization").map(str::trim).unwrap_or("");
            if presented.is_empty() {
                return Err(refuse(AuthenticationFailed, "missing Authorization header"));
            }
            // Hashing first keeps the comparison constant-time whatever the lengths.
            let same: bool = Sha256::digest(presented.as_bytes())
                .ct_eq(&Sha256::digest(expected.expose().trim().as_bytes()))
                .into();
            if !same {
                return Err(refuse(AuthenticationFailed, "wrong Authorization header"));
            }
        }
        let content_type = headers.get("content-type").unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case(CONTENT_TYPE) {
            let why = if content_type.trim().is_empty() {
                format!("no Content-Type; a SET is sent as {CONTENT_TYPE}")
            } else {
                format!(
                    "Content-Type must be {CONTENT_TYPE}, not `{}`",
                    shown(content_type)
                )
            };
            return Err(refuse(InvalidRequest, why));
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(refuse(
                InvalidRequest,
                format!(
                    "the body is {} bytes; a SET may have at most {MAX_BODY_BYTES}",
                    body.len()
                ),
            ));
        }
        let token = std::str::from_utf8(body)
            .map_err(|_| refuse(InvalidRequest, "the body is not a compact JWS (not text)"))?
            .trim();
        let parts: Vec<&str> = token.split('.').collect();
        let &[header_b64, claims_b64, signature_b64] = parts.as_slice() else {
            let why = if parts.len() == 5 {
                "the body is a JWE; Steward accepts signed, unencrypted SETs only"
            } else {
                "the body is not a compact JWS (header.payload.signature)"
            };
            return Err(refuse(InvalidRequest, why));
        };
        let header = json_object(header_b64)
            .ok_or_else(|| refuse(InvalidRequest, "the JWS header is not base64url JSON"))?;

        // The algorithm first: nothing of an unsigned or HMAC token is looked at further.
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| refuse(InvalidRequest, "the JWS header has no `alg`"))?;
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(refuse(
                AuthenticationFailed,
                "unsigned SET (alg `none`) refused",
            ));
        }
        if alg_name.to_ascii_uppercase().starts_with("HS") {
            return Err(refuse(
                InvalidKey,
                format!(
                    "symmetric alg `{}` refused: SETs must be signed with the transmitter's private key",
                    shown(alg_name)
                ),
            ));
        }
        let alg = Algorithm::from_str(alg_name)
            .ok()
            .filter(|a| ACCEPTED_ALGS.contains(a))
            .ok_or_else(|| {
                refuse(
                    InvalidKey,
                    format!(
                        "alg `{}` is not accepted (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)",
                        shown(alg_name)
                    ),
                )
            })?;
        let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
        let typ_ok = typ.eq_ignore_ascii_case("secevent+jwt")
            || typ.eq_ignore_ascii_case("application/secevent+jwt");
        if !typ_ok {
            let why = if typ.is_empty() {
                "the JWS header has no typ; a SET's is `secevent+jwt` (RFC 8417 §2.3)".to_string()
            } else {
                format!(
                    "the JWS header's typ must be `secevent+jwt` (RFC 8417 §2.3), not `{}`",
                    shown(typ)
                )
            };
            return Err(refuse(InvalidRequest, why));
        }
        if header.contains_key("crit") {
            return Err(refuse(
                InvalidRequest,
                "the JWS header marks extensions critical (`crit`); Steward understands none",
            ));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => {
                return Err(refuse(
                    InvalidRequest,
                    "the JWS header's `kid` is not a string",
                ));
            }
        };

        let key = self.key_for(kid, alg).await?;
        let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
        let verified =
            jsonwebtoken::crypto::verify(signature_b64, signing_input.as_bytes(), &key.key, alg)
                .unwrap_or(false);
        if !verified {
            return Err(refuse(
                AuthenticationFailed,
                format!(
                    "the signature does not verify with the transmitter's key{}",
                    kid.map(|k| format!(" `{}`", shown(k))).unwrap_or_default()
                ),
            ));
        }

        let claims = json_object(claims_b64)
            .ok_or_else(|| refuse(InvalidRequest, "the SET's claims are not a JSON object"))?;
        self.check_claims(&claims, now)
    }

    pub(super) fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedSet, Rejected> {
        use SetErr::*;
        match claims.get("iss").and_then(Value::as_str) {
            Some(iss) if iss == self.settings.issuer => {}
            Some(iss) => {
                return Err(refuse(
                    InvalidIssuer,
                    format!(
                        "iss `{}` is not the configured transmitter `{}`",
                        shown(iss),
                        self.settings.issuer
                    ),
                ));
            }
            None => return Err(refuse(InvalidIssuer, "the SET has no `iss`")),
        }
        let ours = |v: &Value| v.as_str() == Some(self.settings.audience.as_str());
        let aud_ok = match claims.get("aud") {
            Some(Value::Array(items)) => items.iter().any(ours),
            Some(v) => ours(v),
            None => false,
        };
        if !aud_ok {
            return Err(refuse(
                InvalidAudience,
                format!("aud does not contain `{}`", self.settings.audience),
            ));
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite())
            .and_then(|t| DateTime::from_timestamp(t.floor() as i64, 0))
            .ok_or_else(|| refuse(InvalidRequest, "the SET has no numeric `iat`"))?;
        let age = now.signed_duration_since(iat);
        let max_age =
            chrono::Duration::from_std(self.settings.max_age).unwrap_or(chrono::Duration::MAX);
        let skew =
            chrono::Duration::from_std(self.settings.future_skew).unwrap_or(chrono::Duration::MAX);
        if age > max_age {
            return Err(refuse(
                InvalidRequest,
                format!(
                    "the SET was issued {} s ago; Steward accepts SETs up to {} s old",
                    age.num_seconds(),
                    max_age.num_seconds()
                ),
            ));
        }
        if -age > skew {
            return Err(refuse(
                InvalidRequest,
                format!(
                    "the SET's iat is {} s in the future (more than the {} s allowed for clock skew)",
                    (-age).num_seconds(),
                    skew.num_seconds()
                ),
            ));
        }
        if let Some(exp) = claims.get("exp") {
            let expired = exp
                .as_f64()
                .and_then(|t| DateTime::from_timestamp(t.floor() as i64, 0))
                .is_none_or(|exp| exp.checked_add_signed(skew).is_some_and(|e| e < now));
            if expired {
                return Err(refuse(InvalidRequest, "the SET has expired (`exp`)"));
            }
        }
        let jti = match claims.get("jti").and_then(Value::as_str) {
            Some(j) if !j.trim().is_empty() && j.len() <= MAX_JTI_LEN => j.to_string(),
            Some(j) if !j.trim().is_empty() => {
                return Err(refuse(
                    InvalidRequest,
                    format!("the SET's jti is longer than {MAX_JTI_LEN} characters"),
                ));
            }
            _ => return Err(refuse(InvalidRequest, "the SET has no `jti`")),
        };
        let events = match claims.get("events") {
            Some(Value::Object(events)) if !events.is_empty() => events,
            _ => {
                return Err(refuse(
                    InvalidRequest,
                    "the SET's `events` claim must be an object with at least one event",
                ));
            }
        };
        let mut subjects = Subjects::default();
        if let Some(sub_id) = claims.get("sub_id") {
            subjects.collect(sub_id, 0);
        }
        let txn = claims.get("txn").and_then(Value::as_str);
        let several = events.len() > 1;
        let mut received = Vec::with_capacity(events.len());
        for (event_type, payload) in events {
            let Value::Object(payload) = payload else {
                return Err(refuse(
                    InvalidRequest,
                    format!(
                        "the payload of event `{}` is not an object",
                        shown(event_type)
                    ),
                ));
            };
            // CAEP/RISC events defined before SSF may carry their subject inside the event.
            let mut subjects = subjects.clone();
            if let Some(subject) = payload.get("subject") {
                subjects.collect(subject, 0);
            }
            let event_id = if several {
                format!("{jti}#{event_type}")
            } else {
                jti.clone()
            };
            received.push(Received {
                source: "ssf",
                event_id,
                event_type: event_type.clone(),
                subject: if subjects.ids.is_empty() {
                    "no subject given".into()
                } else {
                    subjects.ids.join(", ")
                },
                published: Some(iat),
                signal: map_event(event_type, payload, &subjects, txn),
            });
        }
        Ok(VerifiedSet {
            jti,
            issued_at: iat,
            events: received,
        })
    }

    /// The key for `kid` and `alg` (see [`Keys::key_for`]), as a SET refusal.
    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, Rejected> {
        self.keys.key_for(kid, alg).await.map_err(|e| match e {
            KeyError::Unavailable(m) => Rejected::Unavailable(m),
            KeyError::Invalid(m) => refuse(SetErr::InvalidKey, m),
        })
    }
}
