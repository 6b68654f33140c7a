//! Onboarding scenarios.

use super::*;
use statemachines::{Ctx, Policy};

scenarios![
    scenario_onboarding_without_sensitive_scope_provisions_at_once,
    scenario_onboarding_with_sensitive_scope_waits_for_approval,
    scenario_onboarding_claim_of_an_existing_client_waits_for_a_security_approver,
    scenario_onboarding_token_lifetime_defaults_to_policy_max,
    scenario_onboarding_requester_in_security_group_is_not_asked_to_approve,
    scenario_onboarding_approve_creates_client_with_requested_grant,
    scenario_onboarding_deny_ends_without_provisioning,
    scenario_onboarding_expiry_ends_without_provisioning,
    scenario_onboarding_cancel_while_waiting_ends_without_provisioning,
    scenario_onboarding_client_created_activates_agent,
    scenario_onboarding_client_created_without_approval_is_granted_by_steward,
    scenario_onboarding_command_failed_marks_failed_and_tells_owner,
    scenario_onboarding_refuses_excluded_scope,
    scenario_onboarding_refuses_scope_not_approved,
    scenario_onboarding_refuses_unknown_owner,
    scenario_onboarding_refuses_inactive_owner,
    scenario_onboarding_refuses_bad_name,
    scenario_onboarding_refuses_env_mismatch_between_name_and_environment,
    scenario_onboarding_refuses_environment_outside_policy,
    scenario_onboarding_refuses_lifetime_over_max,
    scenario_onboarding_refuses_zero_lifetime,
    scenario_onboarding_refuses_expiry_date_not_in_future,
    scenario_onboarding_refuses_duplicate_scope,
    scenario_onboarding_reports_every_problem_at_once,
    scenario_onboarding_refuses_self_approval,
    scenario_onboarding_refuses_self_approval_despite_case_and_spaces,
    scenario_onboarding_refuses_approver_outside_allowed_set,
    scenario_onboarding_refuses_decision_after_expiry,
    scenario_onboarding_refuses_wrong_approval_id,
    scenario_onboarding_refuses_early_expiry_timer,
    scenario_onboarding_refuses_unknown_timer,
    scenario_onboarding_refuses_results_before_approval,
    scenario_onboarding_refuses_cancel_during_provisioning,
    scenario_onboarding_refuses_second_decision_and_stale_timer_once_approved,
    scenario_onboarding_terminal_states_accept_no_event,
    scenario_onboarding_refuses_cancel_by_outsider,
    scenario_onboarding_records_approver_as_listed,
    scenario_onboarding_key_client_holds_the_agents_key_and_no_secret,
    scenario_onboarding_refuses_credential_kind_outside_environment_policy,
    scenario_onboarding_refuses_key_kind_without_key_and_key_without_key_kind,
    scenario_onboarding_certificate_client_is_made_from_the_csr_under_the_policy,
    scenario_onboarding_steward_held_key_is_generated_and_vaulted_like_a_secret,
    scenario_onboarding_refuses_steward_held_keys_where_they_do_not_apply,
];

fn agent_key() -> statemachines::credential::AgentKey {
    statemachines::credential::AgentKey {
        kid: "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".into(),
        jwk: r#"{"kty":"EC","crv":"P-256","x":"x","y":"y","kid":"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"}"#.into(),
    }
}

fn keyed_request() -> AgentRequest {
    AgentRequest {
        credential: statemachines::credential::CredentialKind::PrivateKeyJwt,
        public_key: Some(agent_key()),
        key_custody: Default::default(),
        ..plain_request()
    }
}

/// A policy where prod allows only agent-held keys, with DPoP-bound tokens.
fn keys_only_in_prod() -> &'static Policy {
    use statemachines::credential::{CredentialKind, TokenBinding};
    let mut p = policy().clone();
    p.credentials
        .kinds
        .insert("prod".into(), vec![CredentialKind::PrivateKeyJwt]);
    p.credentials
        .binding
        .insert("prod".into(), TokenBinding::Dpop);
    Box::leak(Box::new(p))
}

fn start_under(
    policy: &'static Policy,
    request: AgentRequest,
) -> Result<Step<OnboardingState>, Rejected> {
    statemachines::workflow::start::<Onboarding>(
        onboarding_input(request),
        &Ctx {
            now: now(),
            policy,
            workflow_id: WORKFLOW_ID,
        },
    )
}

/// A `private_key_jwt` agent: the client is made with the key the agent proved it holds and
/// the binding its environment requires; it becomes active with no vault version at all.
fn scenario_onboarding_key_client_holds_the_agents_key_and_no_secret() {
    use statemachines::credential::{CredentialKind, KeyStatus, TokenBinding};
    let step = start_under(keys_only_in_prod(), keyed_request()).unwrap();
    let OnboardingState::Provisioning { agent, .. } = &step.state else {
        panic!("expected Provisioning, got {:?}", step.state)
    };
    assert_eq!(agent.credential_kind, CredentialKind::PrivateKeyJwt);
    assert_eq!(agent.token_binding, TokenBinding::Dpop);
    assert_eq!(agent.keys.len(), 1);
    assert_eq!(agent.keys[0].key, agent_key());
    assert_eq!(agent.keys[0].status, KeyStatus::Active);
    match idp_commands(&step.commands).as_slice() {
        [IdpCommand::CreateClient { key, binding, .. }] => {
            assert_eq!(key.as_ref(), Some(&agent_key()));
            assert_eq!(*binding, TokenBinding::Dpop);
        }
        other => panic!("expected one CreateClient, got {other:?}"),
    }

    let done = accepted::<Onboarding>(
        &step.state,
        Event::KeyClientCreated {
            client_id: CLIENT_ID.into(),
            kid: agent_key().kid,
        },
        at(5),
    );
    let OnboardingState::Active { agent, .. } = &done.state else {
        panic!("expected Active, got {:?}", done.state)
    };
    assert_eq!(agent.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(agent.secret_version, None, "nothing is in the vault");
    assert_eq!(agent.credential_issued_at, Some(at(5)));
    let told = done
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Notify { body, .. } => Some(body.clone()),
            _ => None,
        })
        .expect("the owner is told");
    assert!(
        told.contains("no secret") && told.contains(&agent_key().kid),
        "{told}"
    );
}

/// Policy per environment: prod allows only key-bound agents, dev keeps every kind.
fn scenario_onboarding_refuses_credential_kind_outside_environment_policy() {
    assert_rejected(
        start_under(keys_only_in_prod(), plain_request()),
        "credential",
        "credential `secret` is not allowed in environment `prod` (allowed: private_key_jwt)",
    );
    let dev = AgentRequest {
        name: "datadog-remediation-agent-dev".into(),
        environment: "dev".into(),
        ..plain_request()
    };
    assert!(start_under(keys_only_in_prod(), dev).is_ok());
}

/// A key kind needs its key; a secret agent carries none; a certificate agent needs its CSR,
/// and only it may carry one.
fn scenario_onboarding_refuses_key_kind_without_key_and_key_without_key_kind() {
    use statemachines::credential::CredentialKind;
    assert_rejected(
        start::<Onboarding>(
            onboarding_input(AgentRequest {
                public_key: None,
                key_custody: Default::default(),
                ..keyed_request()
            }),
            now(),
        ),
        "credential",
        "needs its public key",
    );
    assert_rejected(
        start::<Onboarding>(
            onboarding_input(AgentRequest {
                credential: CredentialKind::Secret,
                ..keyed_request()
            }),
            now(),
        ),
        "public_jwk",
        "only for credential private_key_jwt",
    );
    assert_rejected(
        start::<Onboarding>(
            onboarding_input(AgentRequest {
                credential: CredentialKind::TlsClientAuth,
                public_key: None,
                key_custody: Default::default(),
                ..plain_request()
            }),
            now(),
        ),
        "csr",
        "needs a certificate signing request",
    );
    assert_rejected(
        start::<Onboarding>(
            onboarding_input(AgentRequest {
                csr: Some(CSR.into()),
                ..plain_request()
            }),
            now(),
        ),
        "csr",
        "only for credential tls_client_auth, not `secret`",
    );
    assert_rejected(
        start::<Onboarding>(
            onboarding_input(AgentRequest {
                csr: Some("MIIB".into()),
                ..certificate_request()
            }),
            now(),
        ),
        "csr",
        "must be PEM",
    );
    assert_rejected(
        start::<Onboarding>(
            onboarding_input(AgentRequest {
                csr: Some(format!("{CSR}{}", "A".repeat(20_000))),
                ..certificate_request()
            }),
            now(),
        ),
        "csr",
        "at most 16384",
    );
}

/// A well-formed PEM request (the machine does not read it; the API and the CA do).
pub(crate) const CSR: &str =
    "-----BEGIN CERTIFICATE REQUEST-----\nMIIBzzCCAXQCAQAw\n-----END CERTIFICATE REQUEST-----\n";

pub(crate) fn certificate_request() -> AgentRequest {
    AgentRequest {
        credential: statemachines::credential::CredentialKind::TlsClientAuth,
        csr: Some(CSR.into()),
        ..plain_request()
    }
}

/// A `tls_client_auth` agent: the client is made with a certificate issued from its CSR under
/// the policy's trust domain and lifetime; it becomes active holding the certificate's public
/// facts, with nothing in the vault.
fn scenario_onboarding_certificate_client_is_made_from_the_csr_under_the_policy() {
    use statemachines::credential::{CertificateRecord, CredentialKind, TokenBinding};
    let mut p = policy().clone();
    p.credentials
        .binding
        .insert("prod".into(), TokenBinding::Certificate);
    p.credentials.trust_domain = "agents.example.com".into();
    p.credentials.certificate_lifetime_days = 14;
    let p: &'static Policy = Box::leak(Box::new(p));
    // Certificate binding is for certificate agents only.
    assert_rejected(
        start_under(p, keyed_request()),
        "credential",
        "requires certificate-bound tokens",
    );
    let step = start_under(p, certificate_request()).unwrap();
    let OnboardingState::Provisioning { agent, .. } = &step.state else {
        panic!("expected Provisioning, got {:?}", step.state)
    };
    assert_eq!(agent.credential_kind, CredentialKind::TlsClientAuth);
    assert_eq!(agent.token_binding, TokenBinding::Certificate);
    assert_eq!(agent.csr.as_deref(), Some(CSR));
    assert!(agent.keys.is_empty() && agent.certificates.is_empty());
    let order = match idp_commands(&step.commands).as_slice() {
        [
            IdpCommand::CreateClient {
                key: None,
                binding: TokenBinding::Certificate,
                certificate: Some(order),
                ..
            },
        ] => order.clone(),
        other => panic!("expected one CreateClient with a certificate, got {other:?}"),
    };
    assert_eq!(order.csr, CSR);
    assert_eq!(order.trust_domain, "agents.example.com");
    assert_eq!(order.lifetime_days, 14);

    let issued = CertificateRecord {
        serial: "4f2a".into(),
        spiffe_id: format!("spiffe://agents.example.com/agent/{}", agent.name),
        x5t_s256: "x5t-of-the-certificate".into(),
        not_before: at(5),
        not_after: at(5 + 14 * 86_400),
        revoked: None,
    };
    let done = accepted::<Onboarding>(
        &step.state,
        Event::CertificateClientCreated {
            client_id: CLIENT_ID.into(),
            certificate: issued.clone(),
        },
        at(5),
    );
    let OnboardingState::Active { agent, .. } = &done.state else {
        panic!("expected Active, got {:?}", done.state)
    };
    assert_eq!(agent.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(agent.secret_version, None, "nothing is in the vault");
    assert_eq!(agent.certificates, std::slice::from_ref(&issued));
    let told = done
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Notify { body, .. } => Some(body.clone()),
            _ => None,
        })
        .expect("the owner is told");
    assert!(
        told.contains(&issued.spiffe_id) && told.contains("/certificate"),
        "{told}"
    );
}

pub(crate) fn awaiting_onboarding() -> OnboardingState {
    started::<Onboarding>(onboarding_input(sensitive_request())).state
}

/// Provisioning after `APPROVER` approved one hour in.
pub(crate) fn approved_onboarding() -> OnboardingState {
    accepted::<Onboarding>(&awaiting_onboarding(), approve(APPROVER), at(3600)).state
}

pub(crate) fn create_client_of(commands: &[Command]) -> (&str, &str, &[String], u32) {
    match idp_commands(commands).as_slice() {
        [
            IdpCommand::CreateClient {
                agent_id,
                name,
                scopes,
                token_lifetime_secs,
                adopt: None,
                key: None,
                binding: _,
                certificate: None,
                generate_key: false,
            },
        ] => (agent_id, name, scopes, *token_lifetime_secs),
        other => panic!("expected exactly one CreateClient, got {other:?}"),
    }
}

fn scenario_onboarding_without_sensitive_scope_provisions_at_once() {
    let step = started::<Onboarding>(onboarding_input(plain_request()));

    let OnboardingState::Provisioning { agent, approval } = &step.state else {
        panic!("expected Provisioning, got {:?}", step.state)
    };
    assert_eq!(*approval, None, "no approval was needed, none is recorded");
    assert_eq!(agent.status, AgentStatus::Provisioning);
    assert_eq!(agent.requested_by, REQUESTER);
    assert_eq!(
        agent.client_id, None,
        "no client before the identity provider answers"
    );

    let (agent_id, name, scopes, lifetime) = create_client_of(&step.commands);
    assert_eq!((agent_id, name), (AGENT_ID, AGENT_NAME));
    assert_eq!(scopes, strings(&[METRICS_READ, ORDERS_READ]));
    assert_eq!(lifetime, 600);

    assert!(
        !step
            .commands
            .iter()
            .any(|c| matches!(c, Command::RequestApproval(_) | Command::SetTimer { .. })),
        "{:?}",
        names(&step.commands)
    );
    assert_eq!(audit_kinds(&step.commands), [AuditKind::AgentRequested]);
    assert_eq!(
        audit_of(&step.commands, AuditKind::AgentRequested).actor,
        Actor::Person(REQUESTER.into())
    );
    assert_eq!(
        saved_agents(&step.commands),
        [agent],
        "the registry record is saved with the state"
    );
}

/// A shadow claim takes over a client Steward did not create: its grants are set and its
/// secrets replaced, so whatever uses them stops working. A security approver decides first,
/// even when no scope is sensitive.
fn scenario_onboarding_claim_of_an_existing_client_waits_for_a_security_approver() {
    let step = started::<Onboarding>(OnboardingInput {
        adopt_client: Some("dev_console_client".into()),
        ..onboarding_input(plain_request())
    });
    let OnboardingState::AwaitingApproval { agent, approval } = &step.state else {
        panic!("expected AwaitingApproval, got {:?}", step.state)
    };
    assert_eq!(approval.action, "claim");
    assert_eq!(agent.client_id.as_deref(), Some("dev_console_client"));
    assert!(!approval.approvers.is_empty());
    assert!(
        !approval.approvers.iter().any(|a| a == REQUESTER),
        "the claimer does not approve their own claim"
    );
    assert!(
        idp_commands(&step.commands).is_empty(),
        "nothing touches the client before the decision: {:?}",
        names(&step.commands)
    );
    assert!(settlements(&step.commands).is_empty());

    // However the claim ends, the shadow workflow is told: denied, the client is a shadow
    // agent again; approved and created, it is adopted. An ordinary onboarding tells nobody.
    let denied = accepted::<Onboarding>(&step.state, deny(APPROVER), at(60));
    assert_eq!(
        settlements(&denied.commands),
        [("dev_console_client", false)],
        "{:?}",
        names(&denied.commands)
    );
    let approved = accepted::<Onboarding>(&step.state, approve(APPROVER), at(60));
    assert!(
        settlements(&approved.commands).is_empty(),
        "not yet: still provisioning"
    );
    let active = accepted::<Onboarding>(&approved.state, client_created(), at(120));
    assert_eq!(
        settlements(&active.commands),
        [("dev_console_client", true)]
    );
    let failed = accepted::<Onboarding>(
        &approved.state,
        command_failed("idp.create_client"),
        at(120),
    );
    assert_eq!(
        settlements(&failed.commands),
        [("dev_console_client", false)]
    );
    let ordinary = started::<Onboarding>(onboarding_input(sensitive_request()));
    let ordinary = accepted::<Onboarding>(&ordinary.state, deny(APPROVER), at(60));
    assert!(settlements(&ordinary.commands).is_empty());
}

/// The claims settled by these commands: (client id, adopted).
fn settlements(commands: &[Command]) -> Vec<(&str, bool)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::SettleShadowClaim {
                client_id,
                onboarding,
                adopted,
                ..
            } => {
                assert_eq!(onboarding, WORKFLOW_ID);
                Some((client_id.as_str(), *adopted))
            }
            _ => None,
        })
        .collect()
}

fn scenario_onboarding_with_sensitive_scope_waits_for_approval() {
    let step = started::<Onboarding>(onboarding_input(sensitive_request()));

    let OnboardingState::AwaitingApproval { agent, approval } = &step.state else {
        panic!("expected AwaitingApproval, got {:?}", step.state)
    };
    assert_eq!(agent.status, AgentStatus::PendingApproval);
    assert!(
        idp_commands(&step.commands).is_empty(),
        "nothing reaches the identity provider before approval"
    );

    assert_eq!(approval.id, APPROVAL_ID);
    assert_eq!(approval.action, "onboard");
    assert_eq!(approval.sensitive_scopes, [MONITORS_WRITE]);
    assert_eq!(approval.scopes_added, [METRICS_READ, MONITORS_WRITE]);
    assert_eq!(approval.requester, REQUESTER);
    assert_eq!(approval.approvers, APPROVERS);
    assert_eq!(approval.token_lifetime_secs, 600);
    assert_eq!(approval.requested_at, now());
    assert_eq!(approval.expires_at, approval_expires_at());

    assert!(
        step.commands
            .contains(&Command::RequestApproval(approval.clone()))
    );
    assert!(step.commands.contains(&Command::SetTimer {
        name: APPROVAL_EXPIRY_TIMER.into(),
        at: approval_expires_at()
    }));
    assert_eq!(
        audit_kinds(&step.commands),
        [AuditKind::AgentRequested, AuditKind::ApprovalRequested]
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::ApprovalRequested).scopes,
        [MONITORS_WRITE]
    );
    assert_eq!(saved_agents(&step.commands), [agent]);
}

fn scenario_onboarding_token_lifetime_defaults_to_policy_max() {
    let step = started::<Onboarding>(onboarding_input(AgentRequest {
        token_lifetime_secs: None,
        ..plain_request()
    }));
    assert_eq!(step.state.agent().token_lifetime_secs, 900);
    assert_eq!(create_client_of(&step.commands).3, 900);
}

fn scenario_onboarding_requester_in_security_group_is_not_asked_to_approve() {
    let input = onboarding_input(sensitive_request());
    let step = started::<Onboarding>(OnboardingInput {
        requester: APPROVER.into(),
        ..input
    });
    let OnboardingState::AwaitingApproval { approval, .. } = &step.state else {
        panic!("expected AwaitingApproval")
    };
    assert_eq!(
        approval.approvers,
        [OTHER_APPROVER],
        "the requester is never among the approvers of their own request"
    );
}

fn scenario_onboarding_approve_creates_client_with_requested_grant() {
    let when = at(3600);
    let step = accepted::<Onboarding>(&awaiting_onboarding(), approve(APPROVER), when);

    let OnboardingState::Provisioning { agent, approval } = &step.state else {
        panic!("expected Provisioning, got {:?}", step.state)
    };
    assert_eq!(
        *approval,
        Some(RecordedApproval {
            approval_id: APPROVAL_ID.into(),
            approver: APPROVER.into(),
            approvers: strings(&[APPROVER]),
            at: when,
            scopes: strings(&[MONITORS_WRITE])
        })
    );
    assert_eq!(agent.status, AgentStatus::Provisioning);
    assert_eq!(agent.updated_at, when);

    assert!(step.commands.contains(&Command::CancelTimer {
        name: APPROVAL_EXPIRY_TIMER.into()
    }));
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Approved {
            by: APPROVER.into(),
            at: when,
            reason: Some("ok for INC-4711".into())
        },
    }));
    let (agent_id, name, scopes, lifetime) = create_client_of(&step.commands);
    assert_eq!((agent_id, name), (AGENT_ID, AGENT_NAME));
    assert_eq!(
        scopes,
        strings(&[METRICS_READ, MONITORS_WRITE]),
        "the client gets exactly the requested scopes"
    );
    assert_eq!(
        lifetime, 600,
        "the client gets the requested token lifetime"
    );

    let decided = audit_of(&step.commands, AuditKind::ApprovalDecided);
    assert_eq!(decided.actor, Actor::Person(APPROVER.into()));
    assert_eq!(decided.approval_id.as_deref(), Some(APPROVAL_ID));
    assert_eq!(saved_agents(&step.commands), [agent]);
}

fn scenario_onboarding_deny_ends_without_provisioning() {
    let when = at(60);
    let step = accepted::<Onboarding>(&awaiting_onboarding(), deny(OTHER_APPROVER), when);

    let OnboardingState::Denied {
        agent,
        approval_id,
        by,
        reason,
    } = &step.state
    else {
        panic!("expected Denied, got {:?}", step.state)
    };
    assert_eq!(
        (approval_id.as_str(), by.as_str(), reason.as_deref()),
        (APPROVAL_ID, OTHER_APPROVER, Some("use the read-only scope"))
    );
    assert_eq!(agent.status, AgentStatus::Denied);
    assert!(Onboarding::is_terminal(&step.state));

    assert!(idp_commands(&step.commands).is_empty());
    assert!(step.commands.contains(&Command::CancelTimer {
        name: APPROVAL_EXPIRY_TIMER.into()
    }));
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Denied {
            by: OTHER_APPROVER.into(),
            at: when,
            reason: Some("use the read-only scope".into())
        },
    }));
    let audit = audit_of(&step.commands, AuditKind::ApprovalDecided);
    assert!(
        audit.message.contains("denied") && audit.message.contains("use the read-only scope"),
        "{}",
        audit.message
    );
    assert_eq!(saved_agents(&step.commands), [agent]);
}

fn scenario_onboarding_expiry_ends_without_provisioning() {
    // the timer fires at its due time exactly
    let step = accepted::<Onboarding>(
        &awaiting_onboarding(),
        expiry_timer(),
        approval_expires_at(),
    );

    let OnboardingState::Expired { agent, approval_id } = &step.state else {
        panic!("expected Expired, got {:?}", step.state)
    };
    assert_eq!(approval_id, APPROVAL_ID);
    assert_eq!(agent.status, AgentStatus::Expired);
    assert!(idp_commands(&step.commands).is_empty());
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Expired {
            at: approval_expires_at()
        },
    }));
    assert_eq!(
        audit_of(&step.commands, AuditKind::ApprovalExpired).actor,
        Actor::Schedule(APPROVAL_EXPIRY_TIMER.into())
    );
    assert_eq!(saved_agents(&step.commands), [agent]);
}

fn scenario_onboarding_cancel_while_waiting_ends_without_provisioning() {
    let when = at(120);
    let step = accepted::<Onboarding>(&awaiting_onboarding(), cancel(REQUESTER), when);

    let OnboardingState::Cancelled { agent, by, reason } = &step.state else {
        panic!("expected Cancelled, got {:?}", step.state)
    };
    assert_eq!(*by, Actor::Person(REQUESTER.into()));
    assert_eq!(reason, "no longer needed");
    assert_eq!(agent.status, AgentStatus::Cancelled);
    assert!(idp_commands(&step.commands).is_empty());
    assert!(step.commands.contains(&Command::CancelTimer {
        name: APPROVAL_EXPIRY_TIMER.into()
    }));
    assert!(step.commands.contains(&Command::CloseApproval {
        approval_id: APPROVAL_ID.into(),
        outcome: ApprovalOutcome::Cancelled { at: when }
    }));
    let audit = audit_of(&step.commands, AuditKind::RequestCancelled);
    assert_eq!(audit.actor, Actor::Person(REQUESTER.into()));
    assert!(
        audit.message.contains("no longer needed"),
        "{}",
        audit.message
    );
    assert_eq!(saved_agents(&step.commands), [agent]);
}

fn scenario_onboarding_client_created_activates_agent() {
    let when = at(3700);
    let step = accepted::<Onboarding>(&approved_onboarding(), client_created(), when);

    let OnboardingState::Active { agent, approval } = &step.state else {
        panic!("expected Active, got {:?}", step.state)
    };
    assert_eq!(agent.status, AgentStatus::Active);
    assert_eq!(agent.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(agent.secret_version.as_deref(), Some(SECRET_VERSION));
    assert_eq!(agent.credential_issued_at, Some(when));
    assert_eq!(agent.scopes, [METRICS_READ, MONITORS_WRITE]);
    assert_eq!(
        approval.as_ref().map(|a| a.approver.as_str()),
        Some(APPROVER),
        "the approval stays with the active agent"
    );
    assert!(Onboarding::is_terminal(&step.state));
    assert!(idp_commands(&step.commands).is_empty());

    assert_eq!(
        audit_kinds(&step.commands),
        [AuditKind::AgentRegistered, AuditKind::ScopesGranted]
    );
    let registered = audit_of(&step.commands, AuditKind::AgentRegistered);
    assert_eq!(registered.actor, Actor::Person(REQUESTER.into()));
    assert!(
        registered.message.contains(CLIENT_ID),
        "{}",
        registered.message
    );
    let granted = audit_of(&step.commands, AuditKind::ScopesGranted);
    assert_eq!(
        granted.actor,
        Actor::Person(APPROVER.into()),
        "the grant is attributed to the approver"
    );
    assert_eq!(granted.approval_id.as_deref(), Some(APPROVAL_ID));
    assert_eq!(granted.scopes, [METRICS_READ, MONITORS_WRITE]);

    assert_eq!(saved_agents(&step.commands), [agent]);
    let notes = notifications(&step.commands);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].0, OWNER);
    assert!(
        !notes[0].2.contains(SECRET_VERSION),
        "the notification does not carry secret material: {}",
        notes[0].2
    );
}

fn scenario_onboarding_client_created_without_approval_is_granted_by_steward() {
    let provisioning = started::<Onboarding>(onboarding_input(plain_request())).state;
    let step = accepted::<Onboarding>(&provisioning, client_created(), at(5));
    let OnboardingState::Active { approval, .. } = &step.state else {
        panic!("expected Active, got {:?}", step.state)
    };
    assert_eq!(*approval, None);
    let granted = audit_of(&step.commands, AuditKind::ScopesGranted);
    assert_eq!(granted.actor, Actor::System);
    assert_eq!(granted.approval_id, None);
}

fn scenario_onboarding_command_failed_marks_failed_and_tells_owner() {
    let step = accepted::<Onboarding>(
        &approved_onboarding(),
        command_failed("idp.create_client"),
        at(3700),
    );

    let OnboardingState::Failed { agent, reason } = &step.state else {
        panic!("expected Failed, got {:?}", step.state)
    };
    assert_eq!(reason, "idp.create_client failed: 403 Forbidden");
    assert_eq!(agent.status, AgentStatus::Failed);
    assert_eq!(agent.client_id, None);
    assert!(idp_commands(&step.commands).is_empty());

    let failed = audit_of(&step.commands, AuditKind::ProvisioningFailed);
    assert!(!failed.success, "a failure is audited as unsuccessful");
    assert_eq!(failed.message, *reason);
    let notes = notifications(&step.commands);
    assert_eq!(notes.len(), 1);
    assert_eq!((notes[0].0, notes[0].2), (OWNER, reason.as_str()));
    assert_eq!(saved_agents(&step.commands), [agent]);
}

// ---- refused requests ----------------------------------------------------------------------

pub(crate) fn start_onboarding(request: AgentRequest) -> Result<Step<OnboardingState>, Rejected> {
    start::<Onboarding>(onboarding_input(request), now())
}

fn scenario_onboarding_refuses_excluded_scope() {
    let r = AgentRequest {
        scopes: strings(&[METRICS_READ, OKTA_USERS_MANAGE]),
        ..plain_request()
    };
    let rejected = assert_rejected(
        start_onboarding(r),
        "scopes",
        "scope `okta:users:manage` is excluded by policy and is never granted",
    );
    assert_eq!(
        rejected.reasons.len(),
        1,
        "only the excluded scope is wrong: {rejected}"
    );
}

fn scenario_onboarding_refuses_scope_not_approved() {
    let r = AgentRequest {
        scopes: strings(&[UNLISTED]),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "scopes",
        "scope `github:repo:admin` is not in the policy's approved scopes",
    );
}

fn scenario_onboarding_refuses_unknown_owner() {
    let input = OnboardingInput {
        owner_status: OwnerStatus::Unknown,
        ..onboarding_input(plain_request())
    };
    assert_rejected(
        start::<Onboarding>(input, now()),
        "owner",
        "owner alice@example.com is not a person in the directory",
    );
}

fn scenario_onboarding_refuses_inactive_owner() {
    let input = OnboardingInput {
        owner_status: OwnerStatus::Inactive,
        ..onboarding_input(plain_request())
    };
    assert_rejected(
        start::<Onboarding>(input, now()),
        "owner",
        "owner alice@example.com is not an active person in the directory",
    );
}

fn scenario_onboarding_refuses_bad_name() {
    for name in [
        "Datadog-Remediation-Agent-prod",
        "datadog-remediation-bot-prod",
        "datadog--agent-prod",
        "-agent-prod",
    ] {
        let r = AgentRequest {
            name: name.into(),
            ..plain_request()
        };
        assert_rejected(
            start_onboarding(r),
            "name",
            &format!(
                "name `{name}` does not follow the naming pattern `{{function}}-agent-{{env}}`"
            ),
        );
    }
}

fn scenario_onboarding_refuses_env_mismatch_between_name_and_environment() {
    let r = AgentRequest {
        name: "datadog-remediation-agent-dev".into(),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "name",
        "name `datadog-remediation-agent-dev` says environment `dev` but the request is for `prod`",
    );
}

fn scenario_onboarding_refuses_environment_outside_policy() {
    let r = AgentRequest {
        name: "datadog-remediation-agent-qa".into(),
        environment: "qa".into(),
        ..plain_request()
    };
    let rejected = assert_rejected(
        start_onboarding(r),
        "environment",
        "environment `qa` is not one of the policy's environments (dev, staging, prod)",
    );
    assert_eq!(rejected.reasons.len(), 1, "{rejected}");
}

fn scenario_onboarding_refuses_lifetime_over_max() {
    let r = AgentRequest {
        token_lifetime_secs: Some(1800),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "token_lifetime",
        "token lifetime 30 min exceeds the policy maximum of 15 min",
    );
    // one second over is over
    let r = AgentRequest {
        token_lifetime_secs: Some(901),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "token_lifetime",
        "token lifetime 901 s exceeds the policy maximum of 15 min",
    );
    // the maximum itself is allowed
    let r = AgentRequest {
        token_lifetime_secs: Some(900),
        ..plain_request()
    };
    assert!(start_onboarding(r).is_ok());
}

fn scenario_onboarding_refuses_zero_lifetime() {
    let r = AgentRequest {
        token_lifetime_secs: Some(0),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "token_lifetime",
        "token lifetime must be greater than zero",
    );
}

fn scenario_onboarding_refuses_expiry_date_not_in_future() {
    let yesterday = today().pred_opt().unwrap();
    let r = AgentRequest {
        expires_on: Some(yesterday),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "expires_on",
        "expiry date 2025-03-09 is not in the future",
    );
    let r = AgentRequest {
        expires_on: Some(today()),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "expires_on",
        "expiry date 2025-03-10 is not in the future",
    );
    let r = AgentRequest {
        expires_on: today().succ_opt(),
        ..plain_request()
    };
    assert!(start_onboarding(r).is_ok(), "tomorrow is in the future");
}

fn scenario_onboarding_refuses_duplicate_scope() {
    let r = AgentRequest {
        scopes: strings(&[METRICS_READ, ORDERS_READ, METRICS_READ]),
        ..plain_request()
    };
    assert_rejected(
        start_onboarding(r),
        "scopes",
        "scope `datadog:metrics:read` is listed twice",
    );
}

fn scenario_onboarding_reports_every_problem_at_once() {
    let r = AgentRequest {
        name: "Bad Name".into(),
        owner: " ".into(),
        team: "".into(),
        purpose: "".into(),
        scopes: vec![],
        token_lifetime_secs: Some(0),
        ..plain_request()
    };
    let input = OnboardingInput {
        owner_status: OwnerStatus::Unknown,
        ..onboarding_input(r)
    };
    let rejected = start::<Onboarding>(input, now()).expect_err("everything is wrong");
    let fields: BTreeSet<&str> = rejected.reasons.iter().map(|r| r.field.as_str()).collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "name",
            "owner",
            "team",
            "purpose",
            "scopes",
            "token_lifetime"
        ]),
        "{rejected}"
    );
    assert!(
        rejected.to_string().contains("a team is required; "),
        "reasons are joined for display: {rejected}"
    );
}

// ---- refused events ------------------------------------------------------------------------

fn scenario_onboarding_refuses_self_approval() {
    // the requester is the owner, not a security approver
    let awaiting = awaiting_onboarding();
    assert_rejected(
        on::<Onboarding>(&awaiting, approve(REQUESTER), at(60)),
        "approver",
        "alice@example.com requested this change and cannot approve it",
    );
    // a security approver who requested the agent themselves cannot approve it either
    let input = OnboardingInput {
        requester: APPROVER.into(),
        ..onboarding_input(sensitive_request())
    };
    let awaiting = started::<Onboarding>(input).state;
    let before = awaiting.clone();
    assert_rejected(
        on::<Onboarding>(&awaiting, approve(APPROVER), at(60)),
        "approver",
        "sec-lead@example.com requested this change and cannot approve it: another approver must decide",
    );
    assert_eq!(awaiting, before);
    // the other approver can
    assert!(matches!(
        accepted::<Onboarding>(&awaiting, approve(OTHER_APPROVER), at(60)).state,
        OnboardingState::Provisioning { .. }
    ));
}

fn scenario_onboarding_refuses_self_approval_despite_case_and_spaces() {
    let input = OnboardingInput {
        requester: APPROVER.into(),
        ..onboarding_input(sensitive_request())
    };
    let awaiting = started::<Onboarding>(input).state;
    for disguised in [
        "SEC-LEAD@example.com",
        "  sec-lead@example.com ",
        "Sec-Lead@Example.Com",
    ] {
        assert_rejected(
            on::<Onboarding>(&awaiting, approve(disguised), at(60)),
            "approver",
            "requested this change and cannot approve it",
        );
        assert_rejected(
            on::<Onboarding>(&awaiting, deny(disguised), at(60)),
            "approver",
            "requested this change and cannot approve it",
        );
    }
}

fn scenario_onboarding_refuses_approver_outside_allowed_set() {
    let awaiting = awaiting_onboarding();
    for event in [approve(OUTSIDER), deny(OUTSIDER), approve(COLLEAGUE)] {
        assert_rejected(
            on::<Onboarding>(&awaiting, event, at(60)),
            "approver",
            "is not an allowed approver for approval wf-0001-approval-1",
        );
    }
    // the refusal goes back to whoever tried (a Slack clicker): it never names the approvers
    let rejected = on::<Onboarding>(&awaiting, approve(OUTSIDER), at(60)).unwrap_err();
    for approver in APPROVERS {
        assert!(!rejected.to_string().contains(approver), "{rejected}");
    }
}

fn scenario_onboarding_refuses_decision_after_expiry() {
    let awaiting = awaiting_onboarding();
    let late = approval_expires_at() + chrono::Duration::seconds(1);
    for event in [approve(APPROVER), deny(APPROVER)] {
        assert_rejected(
            on::<Onboarding>(&awaiting, event, late),
            "approval",
            "approval wf-0001-approval-1 expired at 2025-03-11T09:00:00+00:00",
        );
    }
    // a decision at the expiry instant still counts
    assert!(on::<Onboarding>(&awaiting, approve(APPROVER), approval_expires_at()).is_ok());
}

fn scenario_onboarding_refuses_wrong_approval_id() {
    let awaiting = awaiting_onboarding();
    let event = decided("wf-0002-approval-1", APPROVER, Decision::Approve, None);
    assert_rejected(
        on::<Onboarding>(&awaiting, event, at(60)),
        "approval_id",
        "datadog-remediation-agent-prod is waiting for approval wf-0001-approval-1, not wf-0002-approval-1",
    );
}

fn scenario_onboarding_refuses_early_expiry_timer() {
    let awaiting = awaiting_onboarding();
    let early = approval_expires_at() - chrono::Duration::seconds(1);
    assert_rejected(
        on::<Onboarding>(&awaiting, expiry_timer(), early),
        "timer",
        "approval wf-0001-approval-1 does not expire until 2025-03-11T09:00:00+00:00",
    );
}

fn scenario_onboarding_refuses_unknown_timer() {
    let awaiting = awaiting_onboarding();
    let event = Event::TimerFired {
        name: "reminder".into(),
    };
    assert_rejected(
        on::<Onboarding>(&awaiting, event, approval_expires_at()),
        "event",
        "TimerFired does not apply to onboarding in state AwaitingApproval",
    );
}

fn scenario_onboarding_refuses_results_before_approval() {
    let awaiting = awaiting_onboarding();
    for event in [
        client_created(),
        grants_set(&strings(&[METRICS_READ]), 600),
        command_failed("approval.request"),
    ] {
        let label = event.label();
        assert_rejected(
            on::<Onboarding>(&awaiting, event, at(60)),
            "event",
            &format!("{label} does not apply to onboarding in state AwaitingApproval"),
        );
    }
}

fn scenario_onboarding_refuses_cancel_during_provisioning() {
    for provisioning in [
        approved_onboarding(),
        started::<Onboarding>(onboarding_input(plain_request())).state,
    ] {
        assert_rejected(
            on::<Onboarding>(&provisioning, cancel(REQUESTER), at(3700)),
            "state",
            "provisioning of datadog-remediation-agent-prod has started and cannot be cancelled; decommission the agent instead",
        );
    }
}

fn scenario_onboarding_refuses_second_decision_and_stale_timer_once_approved() {
    let provisioning = approved_onboarding();
    for event in [
        deny(OTHER_APPROVER),
        approve(OTHER_APPROVER),
        expiry_timer(),
    ] {
        let label = event.label();
        assert_rejected(
            on::<Onboarding>(&provisioning, event, approval_expires_at()),
            "event",
            &format!("{label} does not apply to onboarding in state Provisioning"),
        );
    }
}

pub(crate) fn terminal_onboardings() -> Vec<OnboardingState> {
    let awaiting = awaiting_onboarding();
    let provisioning = approved_onboarding();
    vec![
        accepted::<Onboarding>(&provisioning, client_created(), at(3700)).state,
        accepted::<Onboarding>(&provisioning, command_failed("idp.create_client"), at(3700)).state,
        accepted::<Onboarding>(&awaiting, deny(APPROVER), at(60)).state,
        accepted::<Onboarding>(&awaiting, expiry_timer(), approval_expires_at()).state,
        accepted::<Onboarding>(&awaiting, cancel(REQUESTER), at(60)).state,
    ]
}

fn scenario_onboarding_terminal_states_accept_no_event() {
    let terminals = terminal_onboardings();
    let names: BTreeSet<&str> = terminals.iter().map(Onboarding::state_name).collect();
    assert_eq!(
        names,
        BTreeSet::from(["Active", "Failed", "Denied", "Expired", "Cancelled"])
    );
    for state in &terminals {
        assert!(Onboarding::is_terminal(state));
        for event in every_event() {
            let expected = format!(
                "{} does not apply to onboarding in state {}",
                event.label(),
                Onboarding::state_name(state)
            );
            assert_rejected(
                on::<Onboarding>(state, event, approval_expires_at()),
                "event",
                &expected,
            );
        }
    }
}

// ---- review follow-ups -------------------------------------------------------------
fn scenario_onboarding_refuses_cancel_by_outsider() {
    assert_rejected(
        on::<Onboarding>(&awaiting_onboarding(), cancel(OUTSIDER), at(60)),
        "by",
        "may not cancel approval",
    );
    // an approver may withdraw it
    let step = accepted::<Onboarding>(&awaiting_onboarding(), cancel(APPROVER), at(60));
    assert!(matches!(step.state, OnboardingState::Cancelled { .. }));
}

// ---- review follow-ups -------------------------------------------------------------
fn scenario_onboarding_records_approver_as_listed() {
    let shouted = format!("  {}  ", APPROVER.to_uppercase());
    let step = accepted::<Onboarding>(&awaiting_onboarding(), approve(&shouted), at(60));
    let OnboardingState::Provisioning {
        approval: Some(recorded),
        ..
    } = &step.state
    else {
        panic!(
            "expected Provisioning with a recorded approval, got {:?}",
            step.state
        )
    };
    assert_eq!(
        recorded.approver, APPROVER,
        "the approver is stored as the policy lists them"
    );
    assert_eq!(
        audit_of(&step.commands, AuditKind::ApprovalDecided).actor,
        Actor::Person(APPROVER.into())
    );
}

fn steward_key_request() -> AgentRequest {
    AgentRequest {
        public_key: None,
        key_custody: statemachines::credential::KeyCustody::Steward,
        ..keyed_request()
    }
}

/// `key_custody = "steward"`: no public key in the request; the client is made with a key the
/// executor generates (`generate_key`), the agent becomes active with the vault version that
/// holds the private key, and the owner learns where it is.
fn scenario_onboarding_steward_held_key_is_generated_and_vaulted_like_a_secret() {
    use statemachines::credential::{KeyCustody, TokenBinding};
    let step = start_under(keys_only_in_prod(), steward_key_request()).unwrap();
    let OnboardingState::Provisioning { agent, .. } = &step.state else {
        panic!("expected Provisioning, got {:?}", step.state)
    };
    assert_eq!(agent.key_custody, KeyCustody::Steward);
    assert!(agent.steward_holds_key() && agent.vaulted_credential());
    assert!(agent.keys.is_empty(), "no agent-held key");
    match idp_commands(&step.commands).as_slice() {
        [
            IdpCommand::CreateClient {
                key: None,
                generate_key: true,
                binding,
                ..
            },
        ] => assert_eq!(*binding, TokenBinding::Dpop),
        other => panic!("expected one CreateClient generating the key, got {other:?}"),
    }
    let done = accepted::<Onboarding>(
        &step.state,
        Event::ClientCreated {
            client_id: CLIENT_ID.into(),
            secret_version: SECRET_VERSION.into(),
        },
        at(5),
    );
    let OnboardingState::Active { agent, .. } = &done.state else {
        panic!("expected Active, got {:?}", done.state)
    };
    assert_eq!(agent.secret_version.as_deref(), Some(SECRET_VERSION));
    let told = done
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Notify { body, .. } => Some(body.clone()),
            _ => None,
        })
        .expect("the owner is told");
    assert!(
        told.contains("private key is in the vault") && told.contains("steward agents credentials"),
        "{told}"
    );
}

/// Steward-held keys: only for `private_key_jwt`, never with a public key of the agent's, and
/// not where the policy's `steward_keys` forbids them.
fn scenario_onboarding_refuses_steward_held_keys_where_they_do_not_apply() {
    use statemachines::credential::{CredentialKind, KeyCustody};
    assert_rejected(
        start_under(
            keys_only_in_prod(),
            AgentRequest {
                public_key: Some(agent_key()),
                ..steward_key_request()
            },
        ),
        "public_jwk",
        "send no public_jwk",
    );
    assert_rejected(
        start::<Onboarding>(
            onboarding_input(AgentRequest {
                credential: CredentialKind::Secret,
                key_custody: KeyCustody::Steward,
                ..plain_request()
            }),
            now(),
        ),
        "key_custody",
        "only for credential private_key_jwt",
    );
    let mut p = keys_only_in_prod().clone();
    p.credentials.steward_keys.insert("prod".into(), false);
    let p: &'static Policy = Box::leak(Box::new(p));
    assert_rejected(
        start_under(p, steward_key_request()),
        "key_custody",
        "Steward-held keys are not allowed in environment `prod`",
    );
    assert!(
        start_under(p, keyed_request()).is_ok(),
        "agent-held keys still are"
    );
}
