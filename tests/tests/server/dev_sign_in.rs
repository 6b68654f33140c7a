//! The embedded default's own issuer: people of the people file sign in at the dev IdP with the
//! password `steward people password` set (device flow for `steward login`, authorization code
//! with PKCE for browsers), refresh their sign-in, and make personal API tokens for scripts.

use crate::support::*;
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest;
use std::io::{BufRead, BufReader};

/// `steward login` at the server's dev IdP; the person enters the code the CLI shows, with
/// their password, on the verification page. Returns the config dir holding the session.
fn login(s: &Server, person: &str) -> tempfile::TempDir {
    s.set_password(person);
    let config = tempfile::tempdir().unwrap();
    let mut login = steward()
        .args(["login", "--url", &s.base])
        .env("STEWARD_CONFIG_DIR", config.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(login.stdout.take().unwrap()).lines();
    let prompt = lines.next().expect("the CLI shows a code").unwrap();
    let (uri, code) = prompt
        .strip_prefix("To sign in, open ")
        .and_then(|p| p.split_once(" and enter the code: "))
        .unwrap_or_else(|| panic!("unexpected prompt: {prompt}"));
    assert_eq!(uri, s.url("/device"));
    let page = s
        .http()
        .get(format!("{uri}?user_code={code}"))
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(
        page.headers()["x-frame-options"],
        "DENY",
        "the sign-in page cannot be framed"
    );
    let entered = s
        .http()
        .post(uri)
        .form(&[
            ("user_code", code.trim()),
            ("email", person),
            ("password", Server::password_of(person).as_str()),
        ])
        .send()
        .unwrap();
    assert_eq!(entered.status().as_u16(), 200);
    assert!(entered.text().unwrap().contains("You are signed in as"));
    let status = login.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "steward login failed: {rest:?}");
    config
}

fn cli_in(s: &Server, config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let (out, stdout, stderr) = run(s.cli(args).env("STEWARD_CONFIG_DIR", config));
    (out.status.success(), stdout, stderr)
}

#[test]
fn steward_login_at_the_dev_idp_then_refresh_and_personal_tokens() {
    let s = Server::start();
    let config = login(&s, ALICE);
    let (ok, me, err) = cli_in(&s, config.path(), &["whoami"]);
    assert!(ok, "{err}");
    assert!(me.starts_with("person alice@example.com (token "), "{me}");

    // An expired access token is refreshed with the refresh token, which is replaced.
    let path = config.path().join("session.json");
    let mut session: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let first_refresh = session["refresh"]["token"].as_str().unwrap().to_string();
    session["expires_at"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(&path, session.to_string()).unwrap();
    let (ok, me, err) = cli_in(&s, config.path(), &["whoami"]);
    assert!(ok, "{err}");
    assert!(me.starts_with("person alice@example.com"), "{me}");
    let renewed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_ne!(renewed["refresh"]["token"], first_refresh.as_str());
    // The old refresh token is spent; presenting it again ends every sign-in of Alice's.
    let (status, v) = s.send_form(
        "/oauth2/v1/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "steward-cli"),
            ("refresh_token", first_refresh.as_str()),
        ],
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"], "invalid_grant");
    let (status, _) = s.send_form(
        "/oauth2/v1/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "steward-cli"),
            (
                "refresh_token",
                renewed["refresh"]["token"].as_str().unwrap(),
            ),
        ],
    );
    assert_eq!(status, 400, "a reused refresh token revokes its successors");

    // A personal token for a script: shown once, acts as Alice, listed, revoked.
    let (ok, token, err) = cli_in(
        &s,
        config.path(),
        &["tokens", "create", "--name", "ci", "--ttl", "7d"],
    );
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("stp_"), "{token}");
    assert!(err.contains("shown only now"), "{err}");
    let with_token = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--token", token.as_str()]);
        let (out, stdout, stderr) = run(&mut s.cli(&all));
        (out.status.success(), stdout, stderr)
    };
    let (ok, me, err) = with_token(&["whoami"]);
    assert!(ok, "{err}");
    assert!(
        me.starts_with("person alice@example.com (token pat_"),
        "{me}"
    );
    let id = me
        .split("(token ")
        .nth(1)
        .unwrap()
        .trim_end_matches([')', '\n'])
        .to_string();
    // A copied token cannot mint more of itself.
    let (ok, _, err) = with_token(&["tokens", "create", "--name", "more"]);
    assert!(
        !ok && err.contains("(403)") && err.contains("steward login"),
        "{err}"
    );
    let (ok, list, _) = cli_in(&s, config.path(), &["tokens", "list"]);
    assert!(ok && list.contains(&id) && list.contains("ci"), "{list}");
    assert!(!list.contains(&token), "a listing never shows the token");
    // Bob cannot revoke Alice's token (it is not his to see).
    let (status, _) = s.post_as(BOB, &format!("/api/tokens/{id}/revoke"), &json!({}));
    assert_eq!(status, 404);
    let (ok, out, err) = cli_in(&s, config.path(), &["tokens", "revoke", &id]);
    assert!(ok && out.contains("revoked"), "{out}{err}");
    let (ok, _, err) = with_token(&["whoami"]);
    assert!(
        !ok && err.contains("revoked") && err.contains("(401)"),
        "{err}"
    );
    // The automation token has no tokens to make.
    let (status, v) = s.post("/api/tokens", &json!({"name": "ci"}));
    assert_eq!(status, 403, "{v}");

    // The audit trail names the principal and where the call came from, never a token.
    let audit = s.audit();
    let calls: Vec<&Value> = audit
        .iter()
        .filter(|r| r["unmapped"]["steward_event"] == "api_call")
        .collect();
    assert!(
        calls
            .iter()
            .any(|r| r["unmapped"]["principal"]["kind"] == "person"
                && r["unmapped"]["principal"]["via"] == "sign-in"
                && r["unmapped"]["source"] == "cli"),
        "{calls:?}"
    );
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains(&token) && !text.contains(&first_refresh));
    assert!(
        audit
            .iter()
            .any(|r| r["unmapped"]["steward_event"] == "signed_in" && r["user"]["uid"] == ALICE),
        "the sign-in is audited"
    );
}

#[test]
fn wrong_passwords_are_refused_audited_and_lock_the_person_out() {
    let s = Server::start();
    s.set_password(SAM);
    let bad_before = s.health()["bad_requests"].as_u64().unwrap();
    let (_, device) = s.send_form(
        "/oauth2/v1/device/authorize",
        &[("client_id", "steward-cli")],
    );
    let code = device["user_code"].as_str().unwrap();
    for _ in 0..5 {
        let r = s
            .http()
            .post(s.url("/device"))
            .form(&[
                ("user_code", code),
                ("email", SAM),
                ("password", "not the password"),
            ])
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert!(
            r.text()
                .unwrap()
                .contains("wrong e-mail address or password")
        );
    }
    // The device code is denied after five wrong entries, and Sam is locked out for now.
    let (status, v) = s.send_form(
        "/oauth2/v1/token",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "steward-cli"),
            ("device_code", device["device_code"].as_str().unwrap()),
        ],
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("access_denied")),
        "{v}"
    );
    let (_, device) = s.send_form(
        "/oauth2/v1/device/authorize",
        &[("client_id", "steward-cli")],
    );
    let r = s
        .http()
        .post(s.url("/device"))
        .form(&[
            ("user_code", device["user_code"].as_str().unwrap()),
            ("email", SAM),
            ("password", Server::password_of(SAM).as_str()),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().unwrap().contains("locked"));
    // Someone the directory does not list gets the same answer as a wrong password.
    let r = s
        .http()
        .post(s.url("/device"))
        .form(&[
            ("user_code", device["user_code"].as_str().unwrap()),
            ("email", "mallory@example.com"),
            ("password", "anything at all"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        r.text()
            .unwrap()
            .contains("wrong e-mail address or password")
    );
    assert!(s.health()["bad_requests"].as_u64().unwrap() >= bad_before + 7);
    let refused = s
        .audit()
        .into_iter()
        .filter(|r| r["unmapped"]["steward_event"] == "sign_in_refused")
        .count();
    assert!(refused >= 7, "{refused} refused sign-ins audited");
    // A departed person gets no password at all.
    let (out, _, err) = run(steward().args([
        "people",
        "password",
        "carl.former@example.com",
        "--generate",
        "--data-dir",
        s.data_dir.to_str().unwrap(),
        "--people",
        s.people_path.to_str().unwrap(),
    ]));
    assert!(!out.status.success() && err.contains("inactive"), "{err}");
}

#[test]
fn a_browser_signs_in_with_the_authorization_code_and_pkce() {
    let s = Server::start();
    s.set_password(PRIYA);
    let verifier = "a-verifier-of-at-least-forty-three-characters-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let redirect = "http://127.0.0.1:49152/callback";
    let params = [
        ("response_type", "code"),
        ("client_id", "steward-cli"),
        ("redirect_uri", redirect),
        ("scope", "openid email"),
        ("state", "st-123"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(s.url("/oauth2/v1/authorize"))
        .query(&params)
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let mut form: Vec<(&str, &str)> = params.to_vec();
    let password = Server::password_of(PRIYA);
    form.extend([("email", PRIYA), ("password", password.as_str())]);
    let back = http
        .post(s.url("/oauth2/v1/authorize"))
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(back.status().as_u16(), 303);
    let location = reqwest::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(redirect), "{location}");
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "st-123");
    let code = &query["code"];
    let exchange = |verifier: &str| {
        s.send_form(
            "/oauth2/v1/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "steward-cli"),
                ("code", code),
                ("redirect_uri", redirect),
                ("code_verifier", verifier),
            ],
        )
    };
    let (status, tokens) = exchange(verifier);
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["id_token"].is_string());
    let (status, me) = s.send(
        s.http()
            .get(s.url("/api/whoami"))
            .bearer_auth(tokens["access_token"].as_str().unwrap()),
    );
    assert_eq!((status, me["id"].as_str()), (200, Some(PRIYA)));
    let (status, v) = exchange(verifier);
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "a code works once"
    );

    // A redirect anywhere but a loopback address or the server itself is refused on the page.
    let mut bad = params.to_vec();
    bad[2] = ("redirect_uri", "https://evil.example/callback");
    let page = http
        .get(s.url("/oauth2/v1/authorize"))
        .query(&bad)
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 400);
    assert!(page.headers().get("location").is_none());
}

/// The forgery catalogue against the running server, with tokens made from the dev IdP's own key
/// (read from the data directory, as only an attacker with the disk could): each is refused
/// with 401 or 403, audited with why, and nothing changes.
#[test]
fn forged_tokens_are_refused_audited_and_change_nothing() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let s = Server::start();
    let pem = std::fs::read(s.data_dir.join("idp-signing-key.pem")).unwrap();
    let key = EncodingKey::from_ed_pem(&pem).unwrap();
    let jwks = s.get_ok("/oauth2/v1/keys");
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_string();
    let now = chrono::Utc::now().timestamp();
    let claims = |edit: &dyn Fn(&mut Value)| {
        let mut c = json!({
            "iss": s.base, "aud": "api://steward", "sub": ALICE, "email": ALICE,
            "email_verified": true, "iat": now, "nbf": now, "exp": now + 600, "jti": "forged-1",
        });
        edit(&mut c);
        c
    };
    let signed = |c: &Value, kid: &str| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.to_string());
        jsonwebtoken::encode(&h, c, &key).unwrap()
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    // The control: a token made the same way with nothing wrong is let in.
    let genuine = signed(&claims(&|_| {}), &kid);
    let (status, me) = s.send(s.http().get(s.url("/api/whoami")).bearer_auth(&genuine));
    assert_eq!((status, me["id"].as_str()), (200, Some(ALICE)), "{me}");

    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(&|_| {}))
    );
    let hmac_with_public_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&|_| {}),
        &EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("no token", None, 401, "missing bearer token"),
        (
            "expired",
            Some(signed(&claims(&|c| c["exp"] = json!(now - 600)), &kid)),
            401,
            "expired",
        ),
        (
            "wrong issuer",
            Some(signed(
                &claims(&|c| c["iss"] = json!("https://evil.example")),
                &kid,
            )),
            401,
            "not by the issuer",
        ),
        (
            "wrong audience",
            Some(signed(&claims(&|c| c["aud"] = json!("api://other")), &kid)),
            401,
            "not meant for Steward",
        ),
        ("alg none", Some(unsigned), 401, "alg `none`"),
        (
            "HMAC with the public key",
            Some(hmac_with_public_key),
            401,
            "symmetric alg",
        ),
        (
            "unknown kid",
            Some(signed(&claims(&|_| {}), "not-a-key-of-the-issuer")),
            401,
            "is not in the issuer's JWKS",
        ),
        (
            "a person not in the directory",
            Some(signed(
                &claims(&|c| c["email"] = json!("mallory@example.com")),
                &kid,
            )),
            403,
            "not in the directory",
        ),
        (
            "an inactive person",
            Some(signed(
                &claims(&|c| c["email"] = json!("carl.former@example.com")),
                &kid,
            )),
            403,
            "no longer active",
        ),
    ];
    let body = agent_request(
        "datadog-remediation-agent-prod",
        "prod",
        ALICE,
        &["datadog:metrics:read"],
    );
    for (what, token, status, why) in cases {
        let before = s.audit_failures().len();
        let mut req = s.http().post(s.url("/api/agents")).json(&body);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let (got, v) = s.send(req);
        assert_eq!(got, status, "{what}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{what}: `{error}` should say {why}");
        if let Some(t) = &token {
            assert!(
                !error.contains(t.as_str()),
                "{what}: the token is never echoed"
            );
        }
        let failures = s.audit_failures();
        assert_eq!(failures.len(), before + 1, "{what} is audited once");
        assert!(
            failures.last().unwrap().to_string().contains(why),
            "{what}: {}",
            failures.last().unwrap()
        );
        assert!(s.agents().is_empty(), "{what} changed nothing");
    }
}
