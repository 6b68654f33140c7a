//! A person signs in at the OIDC test peer (npm oidc-provider, started by `tests/run`) the way
//! a person at a browser does: the device authorization grant (RFC 8628), the user code entered
//! at the issuer's `/device` page, the issuer's login form, then the token poll. The issuer
//! signs a JWT access token for Steward's audience that names the person by `email`.

use serde_json::Value;
use std::collections::BTreeMap;

/// The audience of people's tokens at the test peer (`PEOPLE_AUDIENCE` in provider.mjs).
pub const AUDIENCE: &str = "api://steward";
/// The public client people sign in with at the test peer.
pub const CLIENT_ID: &str = "steward-cli";

const HOW: &str = "run tests/run, which installs and starts oidc-provider with \
    OIDC_PEOPLE_PASSWORD and exports STEWARD_TEST_OIDC_ISSUER and \
    STEWARD_TEST_OIDC_PEOPLE_PASSWORD";

pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => panic!("{name} is not set: {HOW}"),
    }
}

/// The test peer's issuer URL.
pub fn issuer() -> String {
    env("STEWARD_TEST_OIDC_ISSUER")
}

/// A browser's cookie jar, enough for one sign-in.
#[derive(Default)]
struct Browser {
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn http() -> reqwest::blocking::Client {
        shared::tls::install_crypto_provider();
        reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn send(&mut self, req: reqwest::blocking::RequestBuilder) -> reqwest::blocking::Response {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let resp = req
            .header("cookie", cookie)
            .send()
            .expect("the issuer answers");
        for set in resp.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies.insert(k.trim().into(), v.trim().into());
            }
        }
        resp
    }
}

/// Signs `login` in with `password` and returns the access token the issuer grants
/// `steward-cli` for Steward's audience; `Err` with the issuer's answer when it refuses.
pub fn sign_in(login: &str, password: &str) -> Result<String, String> {
    let issuer = issuer();
    let http = Browser::http();
    let device: Value = http
        .post(format!("{issuer}/device/auth"))
        .form(&[
            ("client_id", CLIENT_ID),
            ("scope", "openid email"),
            ("resource", AUDIENCE),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let user_code = device["user_code"].as_str().expect("a user code");
    let device_code = device["device_code"].as_str().expect("a device code");
    approve_device(user_code, login, password)?;
    let token: Value = http
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", CLIENT_ID),
            ("resource", AUDIENCE),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    token["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no access token: {token}"))
}

/// At the issuer's `/device` page, as a person at a browser: enters `user_code`, signs in as
/// `login` with `password` and lands on the success page. `Err` with the issuer's answer when
/// the sign-in is refused.
pub fn approve_device(user_code: &str, login: &str, password: &str) -> Result<(), String> {
    let issuer = issuer();
    let http = Browser::http();
    let mut browser = Browser::default();
    let page = browser
        .send(http.get(format!("{issuer}/device")))
        .text()
        .unwrap();
    let xsrf = page
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the device page carries its xsrf value")
        .to_string();
    let confirmed = browser.send(http.post(format!("{issuer}/device")).form(&[
        ("xsrf", xsrf.as_str()),
        ("user_code", user_code),
        ("confirm", "yes"),
    ]));
    let interaction = location(&confirmed);
    let mut resp = browser.send(
        http.post(format!("{issuer}{interaction}/login"))
            .form(&[("login", login), ("password", password)]),
    );
    if resp.status().as_u16() == 401 {
        return Err(resp.text().unwrap_or_default());
    }
    // Follow the issuer back to the device flow's success page.
    for _ in 0..5 {
        if !resp.status().is_redirection() {
            break;
        }
        let next = location(&resp);
        let url = if next.starts_with("http") {
            next
        } else {
            format!("{issuer}{next}")
        };
        resp = browser.send(http.get(url));
    }
    assert_eq!(
        resp.status().as_u16(),
        200,
        "the sign-in ends on the success page"
    );
    Ok(())
}

fn location(resp: &reqwest::blocking::Response) -> String {
    resp.headers()
        .get("location")
        .unwrap_or_else(|| panic!("a redirect, got HTTP {}", resp.status()))
        .to_str()
        .unwrap()
        .to_string()
}
