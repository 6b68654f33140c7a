//! One agent's posture: where it stands with its reviews, its risk factors and score, and the
//! zero-trust checklist.

use super::*;

/// Where an agent stands with its access reviews.
pub(super) enum Review {
    /// Reviewed within the period.
    Current(String),
    /// Registered within the period, never reviewed.
    NotYetDue(String),
    Overdue(String),
}

/// Everything one assessment needs besides the agent.
pub(super) struct Ctx<'a> {
    pub(super) policy: &'a Policy,
    pub(super) now: DateTime<Utc>,
    pub(super) audit_streaming: bool,
    /// Client id → how many reported agent records use it.
    pub(super) clients: BTreeMap<&'a str, usize>,
    pub(super) review_months: u32,
    /// Reviews at or after this are within the period.
    pub(super) review_since: DateTime<Utc>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(input: &PostureInput<'a>) -> Self {
        let mut clients = BTreeMap::new();
        for a in input.agents.iter().filter(|a| reported(a.status)) {
            if let Some(c) = a.client_id.as_deref() {
                *clients.entry(c).or_insert(0) += 1;
            }
        }
        let policy = input.policy;
        let review_months = match policy.reviews.every_months {
            0 => DEFAULT_REVIEW_MONTHS,
            n => n,
        };
        let answer_within = i64::try_from(policy.reviews.duration_secs)
            .ok()
            .and_then(Duration::try_seconds)
            .unwrap_or_else(Duration::zero);
        let review_since = input
            .now
            .checked_sub_months(Months::new(review_months))
            .unwrap_or(input.now)
            - answer_within;
        Self {
            policy,
            now: input.now,
            audit_streaming: input.audit_streaming,
            clients,
            review_months,
            review_since,
        }
    }

    pub(super) fn review(&self, a: &Agent) -> Review {
        match &a.last_review {
            Some(r) if r.at >= self.review_since => Review::Current(format!(
                "reviewed {} in campaign {} ({})",
                r.at.date_naive(),
                r.campaign,
                r.decision
            )),
            Some(r) => Review::Overdue(format!(
                "last reviewed {} in campaign {}; reviews are due every {}",
                r.at.date_naive(),
                r.campaign,
                plural(self.review_months as usize, "month", "months")
            )),
            None if a.created_at >= self.review_since => Review::NotYetDue(format!(
                "not yet due: registered {}, reviews every {}",
                a.created_at.date_naive(),
                plural(self.review_months as usize, "month", "months")
            )),
            None => Review::Overdue(format!(
                "never reviewed since it was registered {}",
                a.created_at.date_naive()
            )),
        }
    }

    /// Why nobody re-certified its access at the last review, if so.
    pub(super) fn unanswered(&self, a: &Agent) -> Option<String> {
        if let Some(r) = &a.last_review
            && r.decision.starts_with("unanswered")
        {
            return Some(format!(
                "nobody answered its review in campaign {} ({})",
                r.campaign, r.decision
            ));
        }
        a.flags.iter().find_map(|f| match f {
            AgentFlag::ReviewUnanswered { campaign, .. } => {
                Some(format!("nobody answered its review in campaign {campaign}"))
            }
            _ => None,
        })
    }

    /// Why it has no accountable owner, if so.
    pub(super) fn no_owner(&self, a: &Agent) -> Option<String> {
        if a.status == AgentStatus::Unregistered {
            return Some("unregistered shadow agent: nobody has claimed it".into());
        }
        if a.owner.trim().is_empty() {
            return Some("no owner recorded".into());
        }
        a.flags.iter().find_map(|f| match f {
            AgentFlag::OwnerLost { owner, since } => Some(format!(
                "owner {owner} left on {}; no new owner yet",
                since.date_naive()
            )),
            _ => None,
        })
    }

    pub(super) fn assess(&self, a: &Agent) -> AgentPosture {
        let factors = self.factors(a);
        let score = factors
            .iter()
            .map(|f| u32::from(f.points))
            .sum::<u32>()
            .min(100) as u8;
        AgentPosture {
            agent_id: a.id.clone(),
            name: a.name.clone(),
            owner: a.owner.clone(),
            environment: a.environment.clone(),
            status: a.status,
            score,
            level: RiskLevel::of(score),
            factors,
            checklist: self.checklist(a),
        }
    }

    pub(super) fn factors(&self, a: &Agent) -> Vec<Factor> {
        let mut out = Vec::new();
        let mut add = |name: &str, points: u32, detail: String| {
            if points > 0 {
                out.push(Factor {
                    name: name.into(),
                    points: points.min(100) as u8,
                    detail,
                });
            }
        };

        let n = a.scopes.len();
        if n > 2 {
            add(
                "scope_breadth",
                (3 * (n as u32 - 2)).min(15),
                format!("{} (3 points each beyond 2)", plural(n, "scope", "scopes")),
            );
        }

        let sensitive: Vec<&str> = a
            .scopes
            .iter()
            .filter(|s| self.policy.is_sensitive(s))
            .map(String::as_str)
            .collect();
        if !sensitive.is_empty() {
            add(
                "sensitive_scopes",
                (10 * sensitive.len() as u32).min(20),
                format!("holds {}", sensitive.join(", ")),
            );
        }

        let max_age = self.policy.rotation_max_age_days(&a.environment);
        match a.credential_age_days(self.now) {
            Some(age) if age > i64::from(max_age) => add(
                "credential_age",
                20,
                format!(
                    "secret is {age} days old; the {} maximum is {max_age} days",
                    a.environment
                ),
            ),
            Some(age) if age * 4 > i64::from(max_age) * 3 => add(
                "credential_age",
                8,
                format!(
                    "secret is {age} days old, past ¾ of the {} maximum of {max_age} days",
                    a.environment
                ),
            ),
            Some(_) => {}
            None => {
                if let Some(c) = &a.client_id {
                    add(
                        "credential_age",
                        10,
                        format!("client {c} has a secret of unknown age"),
                    );
                }
            }
        }

        let life = a.token_lifetime_secs;
        if life > TOKEN_LIFETIME_CEILING_SECS {
            add(
                "token_lifetime",
                15,
                format!(
                    "tokens live {}, over the {} ceiling",
                    minutes(life),
                    minutes(TOKEN_LIFETIME_CEILING_SECS)
                ),
            );
        } else if life > DEFAULT_MAX_TOKEN_LIFETIME_SECS {
            add(
                "token_lifetime",
                5,
                format!(
                    "tokens live {}, over {}",
                    minutes(life),
                    minutes(DEFAULT_MAX_TOKEN_LIFETIME_SECS)
                ),
            );
        }

        let mut points = 0;
        let mut seen = Vec::new();
        for f in &a.flags {
            match f {
                AgentFlag::Anomaly {
                    rule,
                    severity,
                    detail,
                    ..
                } => {
                    points += severity_points(*severity);
                    seen.push(format!("{} {rule}: {detail}", severity.as_str()));
                }
                AgentFlag::Frozen { reason, .. } => {
                    points += 10;
                    seen.push(format!("frozen: {reason}"));
                }
                AgentFlag::FreezeRequested { reason, .. } => {
                    points += 10;
                    seen.push(format!("freeze requested: {reason}"));
                }
                _ => {}
            }
        }
        add("anomalies", points.min(40), seen.join("; "));

        if let Some(why) = self.no_owner(a) {
            add("no_owner", 20, why);
        }
        if let Review::Overdue(why) = self.review(a) {
            add("review_overdue", 10, why);
        }
        if let Some(why) = self.unanswered(a) {
            add("review_unanswered", 10, why);
        }
        out
    }

    pub(super) fn checklist(&self, a: &Agent) -> Vec<Check> {
        let check = |item: &str, ok: bool, detail: String| Check {
            item: item.into(),
            ok,
            detail,
        };
        let mut out = Vec::with_capacity(item::ALL.len());

        out.push(match a.client_id.as_deref() {
            None => check(
                item::DEDICATED_CLIENT,
                false,
                format!("no client at the identity provider ({})", a.status.as_str()),
            ),
            Some(c) => match self.clients.get(c).copied().unwrap_or(1) {
                0 | 1 => check(
                    item::DEDICATED_CLIENT,
                    true,
                    format!("client {c} is used by this agent only"),
                ),
                n => check(
                    item::DEDICATED_CLIENT,
                    false,
                    format!(
                        "client {c} is shared with {}",
                        plural(n - 1, "other agent record", "other agent records")
                    ),
                ),
            },
        });

        let excluded: Vec<&str> = a
            .scopes
            .iter()
            .filter(|s| self.policy.is_excluded(s))
            .map(String::as_str)
            .collect();
        let unapproved: Vec<&str> = a
            .scopes
            .iter()
            .filter(|s| !self.policy.is_excluded(s) && !self.policy.is_approved(s))
            .map(String::as_str)
            .collect();
        let unanswered = self.unanswered(a);
        let mut problems = Vec::new();
        if !excluded.is_empty() {
            problems.push(format!("excluded by policy: {}", excluded.join(", ")));
        }
        if !unapproved.is_empty() {
            problems.push(format!(
                "not in the approved scopes: {}",
                unapproved.join(", ")
            ));
        }
        if let Some(why) = &unanswered {
            problems.push(format!("{why}: access not re-certified"));
        }
        out.push(if problems.is_empty() {
            let review = match &a.last_review {
                Some(r) => format!("its last review was answered ({})", r.decision),
                None => "no review yet".into(),
            };
            check(
                item::MINIMAL_SCOPES,
                true,
                format!(
                    "{}, all approved by policy and none excluded; {review}",
                    plural(a.scopes.len(), "scope", "scopes")
                ),
            )
        } else {
            check(item::MINIMAL_SCOPES, false, problems.join("; "))
        });

        let life = a.token_lifetime_secs;
        out.push(check(
            item::SHORT_LIVED_TOKENS,
            life <= TOKEN_LIFETIME_CEILING_SECS,
            format!(
                "tokens live {} (at most {})",
                minutes(life),
                minutes(TOKEN_LIFETIME_CEILING_SECS)
            ),
        ));

        let bound = ROTATION_CHECK_DAYS.min(self.policy.rotation_max_age_days(&a.environment));
        out.push(match a.credential_age_days(self.now) {
            Some(age) => check(
                item::ROTATION,
                age <= i64::from(bound),
                format!("secret is {age} days old (at most {bound})"),
            ),
            None if a.client_id.is_some() => check(
                item::ROTATION,
                false,
                format!("secret of unknown age (at most {bound} days)"),
            ),
            None => check(item::ROTATION, false, "no secret issued yet".into()),
        });

        out.push(match a.credential_kind {
            CredentialKind::Secret => check(
                item::NO_SHARED_SECRET,
                false,
                "authenticates with a client secret: whoever copies it can use it".into(),
            ),
            // The IdP holds only the public half, but the private key is in the vault and is
            // handed out like a secret: whoever copies it can use it.
            CredentialKind::PrivateKeyJwt if a.steward_holds_key() => check(
                item::NO_SHARED_SECRET,
                false,
                "authenticates with a key Steward generated and hands out from the vault (key custody steward): copyable like a secret; have the agent keep its own key"
                    .into(),
            ),
            CredentialKind::PrivateKeyJwt => check(
                item::NO_SHARED_SECRET,
                true,
                "authenticates with its own key (private_key_jwt): Steward holds only the public half"
                    .into(),
            ),
            CredentialKind::TlsClientAuth => check(
                item::NO_SHARED_SECRET,
                true,
                "authenticates with its own certificate (tls_client_auth)".into(),
            ),
        });

        out.push(match a.token_binding {
            TokenBinding::Dpop => check(
                item::BOUND_TOKENS,
                true,
                "tokens are DPoP-bound to its key (RFC 9449)".into(),
            ),
            TokenBinding::Certificate => check(
                item::BOUND_TOKENS,
                true,
                "tokens are bound to its client certificate (mTLS, RFC 8705)".into(),
            ),
            TokenBinding::None => {
                let required = self.policy.credentials.binding_in(&a.environment);
                let mut detail = "bearer tokens: whoever holds one can use it".to_string();
                if required != TokenBinding::None {
                    detail.push_str(&format!(
                        "; {} now requires {}-bound tokens",
                        a.environment,
                        required.as_str()
                    ));
                }
                check(item::BOUND_TOKENS, false, detail)
            }
        });

        out.push(match self.no_owner(a) {
            Some(why) => check(item::OWNER_ASSIGNED, false, why),
            None => check(item::OWNER_ASSIGNED, true, format!("owner {}", a.owner)),
        });

        out.push(match self.review(a) {
            Review::Current(d) | Review::NotYetDue(d) => check(item::REVIEWED, true, d),
            Review::Overdue(d) => check(item::REVIEWED, false, d),
        });

        out.push(check(
            item::AUDIT_STREAMING,
            self.audit_streaming,
            if self.audit_streaming {
                "the audit trail streams out of Steward as it is written".into()
            } else {
                "the audit trail stays in Steward's store (no export configured)".into()
            },
        ));
        out
    }
}
