//! Sign-in through the gateway against a real OpenID provider (npm
//! `oidc-provider`, see `godel_test_utils::oidc`) and the real auth service: the
//! browser is an HTTP client with a cookie jar.

use godel_auth::{GroupMapping, OidcConfig, ProviderConfig};
use godel_proto::auth::v1::ListMembersRequest;
use godel_test_utils::oidc::{Browser, ClientSetup, Provider, provider_dir};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use super::cluster::{Cluster, Gateway};

const CLIENT_ID: &str = "godel-gateway-test";
const CLIENT_SECRET: &str = "a secret only auth holds";

/// A provider, the services with auth signing in through it, and a gateway whose
/// `/auth/callback` is the provider's registered redirect URI.
pub struct SignIn {
    pub idp: Provider,
    pub cluster: Cluster,
    pub gateway: Gateway,
    /// The team the `eng` group maps to (as `developer`).
    pub core: String,
}

/// A free loopback port, for a gateway whose URL must be known before it starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SignIn {
    /// `None` (the test skips) without node or the provider package.
    pub async fn start() -> Option<Self> {
        Self::start_with(|_| {}).await
    }

    /// As [`Self::start`], the gateway's settings adjusted by `configure`.
    pub async fn start_with(
        configure: impl FnOnce(&mut godel_gateway::GatewayConfig),
    ) -> Option<Self> {
        let package = provider_dir()?;
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let callback = format!("{base}{}", godel_gateway::CALLBACK_PATH);
        let idp = Provider::start(
            &package,
            &ClientSetup {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                redirect_uris: vec![callback.clone()],
                token_endpoint_auth_method: "client_secret_basic".into(),
                claims_in_id_token: false,
                id_token_alg: "RS256".into(),
            },
        );
        let issuer = idp.issuer.clone();
        let mapping =
            |group: &str, team: Option<&str>, role: Option<&str>, org: Option<&str>| GroupMapping {
                group: group.into(),
                team: team.map(str::to_owned),
                role: role.map(str::to_owned),
                org_role: org.map(str::to_owned),
            };
        let cluster = Cluster::start_with(|auth| {
            auth.oidc = OidcConfig {
                providers: vec![ProviderConfig {
                    name: "corp".into(),
                    display_name: "Corp SSO".into(),
                    issuer,
                    client_id: CLIENT_ID.into(),
                    client_secret: Some(CLIENT_SECRET.to_owned().into()),
                    client_auth: godel_auth::ClientAuth::ClientSecretBasic,
                    scopes: vec!["email".into(), "profile".into(), "groups".into()],
                    algorithms: vec!["RS256".into()],
                    groups_claim: "groups".into(),
                    leeway: std::time::Duration::from_secs(30),
                    redirect_uris: vec![callback],
                    group_mappings: vec![
                        mapping("eng", Some("core"), Some("developer"), None),
                        mapping("admins", None, None, Some("org-admin")),
                    ],
                }],
                ..OidcConfig::default()
            };
        })
        .await;
        let core = cluster.team("core").await;
        let mut config = cluster.gateway_config();
        config.server.http_addr = ([127, 0, 0, 1], port).into();
        config.login.public_url = Some(base);
        configure(&mut config);
        let gateway = cluster.gateway(config).await;
        Some(Self {
            idp,
            cluster,
            gateway,
            core,
        })
    }

    /// Signs `login` in through `/auth/login` and returns the browser (holding the
    /// session cookies) and where it was sent at the end.
    pub async fn browser_sign_in(&self, login: &str, redirect_to: &str) -> (Browser, String) {
        let mut browser = Browser::new();
        let start = self.gateway.url(&format!(
            "/auth/login?idp=corp&redirect_to={}",
            encode(redirect_to)
        ));
        let base = self.gateway.url("/");
        let stop = browser
            .sign_in(&start, login, |url| {
                url.as_str().starts_with(&base) && !url.path().starts_with("/auth/")
            })
            .await;
        let landed = stop
            .url
            .as_str()
            .trim_start_matches(&self.gateway.base)
            .to_owned();
        (browser, landed)
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn http() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A request carrying the browser's cookies (and `csrf` in `X-CSRF-Token`).
async fn with_cookies(
    method: Method,
    url: &str,
    browser: &Browser,
    csrf: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = http()
        .request(method, url)
        .header(reqwest::header::COOKIE, browser.cookie_header());
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

fn set_cookie<'a>(browser: &'a Browser, name: &str) -> &'a str {
    browser
        .set_cookies
        .iter()
        .rev()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {:?}", browser.set_cookies))
}

#[tokio::test]
async fn a_browser_signs_in_and_its_cookie_works_like_a_token_with_csrf_protection() {
    let Some(s) = SignIn::start().await else {
        return;
    };
    s.idp.accounts(json!({
        "carol": {"email": "carol@example.com", "name": "Carol", "groups": ["eng", "admins"]},
    }));
    let providers: Value = http()
        .get(s.gateway.url("/auth/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        providers,
        json!({"providers": [{"name": "corp", "display_name": "Corp SSO"}]})
    );

    let (browser, landed) = s.browser_sign_in("carol", "/ui/tasks?view=mine").await;
    assert_eq!(landed, "/ui/tasks?view=mine");
    // The sign-in state was bound to the browser, then cleared.
    let login_cookies: Vec<_> = browser
        .set_cookies
        .iter()
        .filter(|c| c.starts_with("godel_login="))
        .collect();
    assert_eq!(login_cookies.len(), 2, "{login_cookies:?}");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/auth"] {
        assert!(login_cookies[0].contains(attribute), "{}", login_cookies[0]);
    }
    assert!(login_cookies[1].contains("Max-Age=0"));
    assert!(!browser.cookies.contains_key("godel_login"));
    let session = set_cookie(&browser, "godel_session");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/;"] {
        assert!(session.contains(attribute), "{session}");
    }
    let csrf_cookie = set_cookie(&browser, "godel_csrf");
    assert!(!csrf_cookie.contains("HttpOnly"), "{csrf_cookie}");
    let csrf = browser.cookies["godel_csrf"].clone();
    // The session cookie is an opaque id, not a token.
    assert_eq!(browser.cookies["godel_session"].len(), 43);

    let me = with_cookies(Method::GET, &s.gateway.url("/v1/me"), &browser, None, None).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["kind"], "user");
    assert_eq!(me["org_roles"], json!(["org-admin"]));
    let user = me["principal"].as_str().unwrap().to_owned();
    assert!(user.starts_with("usr_"), "{me}");
    // The `eng` group made the new user a developer of `core`.
    let members = s
        .cluster
        .auth_as(&s.cluster.admin_key)
        .await
        .list_members(ListMembersRequest {
            team_id: s.core.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    let carol = members.iter().find(|m| m.user_id == user).unwrap();
    assert_eq!(carol.roles, vec!["developer".to_owned()]);
    assert_eq!(carol.email, "carol@example.com");

    // A state-changing request by cookie needs the CSRF token.
    let teams = s.gateway.url("/v1/teams");
    let new_team = |name: &str| Some(json!({"name": name, "display_name": name}));
    let refused = with_cookies(Method::POST, &teams, &browser, None, new_team("t-one")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("X-CSRF-Token"),
        "{body}"
    );
    let wrong = with_cookies(
        Method::POST,
        &teams,
        &browser,
        Some("not-the-token"),
        new_team("t-one"),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let created = with_cookies(
        Method::POST,
        &teams,
        &browser,
        Some(&csrf),
        new_team("t-one"),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    // A bearer token needs none.
    let token = s.cluster.token(&s.cluster.admin_key).await;
    let by_token = http()
        .post(&teams)
        .bearer_auth(token)
        .json(&json!({"name": "t-two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_token.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn sign_in_refuses_open_redirects_and_callbacks_from_another_browser() {
    let Some(s) = SignIn::start().await else {
        return;
    };
    s.idp
        .accounts(json!({"dan": {"email": "dan@example.com", "name": "Dan", "groups": []}}));
    for target in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "evil",
    ] {
        let response = http()
            .get(s.gateway.url(&format!(
                "/auth/login?idp=corp&redirect_to={}",
                encode(target)
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{target}");
        assert!(response.headers().get("location").is_none());
    }
    let unknown = http()
        .get(s.gateway.url("/auth/login?idp=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // The provider's redirect back, delivered to a browser that did not start the
    // sign-in (no login cookie), is refused; so is a replay of a used state.
    let mut browser = Browser::new();
    let callback = s.gateway.url(godel_gateway::CALLBACK_PATH);
    let stop = browser
        .sign_in(&s.gateway.url("/auth/login?idp=corp"), "dan", |url| {
            url.as_str().starts_with(&callback)
        })
        .await;
    let forged = http().get(stop.url.clone()).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let genuine = with_cookies(Method::GET, stop.url.as_str(), &browser, None, None).await;
    assert_eq!(genuine.status(), StatusCode::FOUND);
    assert_eq!(genuine.headers()["location"], "/");
    let replay = with_cookies(Method::GET, stop.url.as_str(), &browser, None, None).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_rotates_reuse_revokes_and_logout_ends_the_session() {
    let Some(s) = SignIn::start().await else {
        return;
    };
    s.idp
        .accounts(json!({"erin": {"email": "erin@example.com", "name": "Erin", "groups": []}}));
    let (browser, _) = s.browser_sign_in("erin", "/").await;
    let csrf = browser.cookies["godel_csrf"].clone();
    let refresh = s.gateway.url("/auth/refresh");
    let me = s.gateway.url("/v1/me");

    // Without the CSRF token the session is not refreshed.
    let refused = with_cookies(Method::POST, &refresh, &browser, None, None).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // Each refresh rotates the session's refresh token: were the old one kept, the
    // second refresh would present a used token and auth would end the session.
    for _ in 0..2 {
        let refreshed = with_cookies(Method::POST, &refresh, &browser, Some(&csrf), None).await;
        assert_eq!(refreshed.status(), StatusCode::OK);
        let body: Value = refreshed.json().await.unwrap();
        assert!(body["access_expires_at"].is_string(), "{body}");
        assert!(
            body.get("access_token").is_none(),
            "tokens stay in the gateway"
        );
        let ok = with_cookies(Method::GET, &me, &browser, None, None).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }

    // Logout revokes and clears; the old cookie is useless afterwards.
    let logout = s.gateway.url("/auth/logout");
    let refused = with_cookies(Method::POST, &logout, &browser, None, None).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let out = with_cookies(Method::POST, &logout, &browser, Some(&csrf), None).await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let cleared: Vec<_> = out
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("godel_session=;") && c.contains("Max-Age=0"))
    );
    let after = with_cookies(Method::GET, &me, &browser, None, None).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let again = with_cookies(Method::POST, &refresh, &browser, Some(&csrf), None).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

/// The S256 challenge of `verifier`.
fn challenge(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

/// Plays a CLI's sign-in up to the loopback redirect; returns its query.
async fn cli_code(s: &SignIn, login: &str, redirect_uri: &str, verifier: &str) -> Value {
    let begin = s.gateway.url(&format!(
        "/auth/cli/begin?idp=corp&redirect_uri={}&code_challenge={}&code_challenge_method=S256&state=cli-state-1",
        encode(redirect_uri),
        challenge(verifier),
    ));
    let stop = Browser::new()
        .sign_in(&begin, login, |url| url.as_str().starts_with(redirect_uri))
        .await;
    json!(stop.query)
}

async fn post_json(url: &str, body: Value) -> reqwest::Response {
    http().post(url).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn the_cli_flow_needs_the_verifier_and_a_reused_refresh_token_revokes_the_family() {
    let Some(s) = SignIn::start().await else {
        return;
    };
    s.idp
        .accounts(json!({"fay": {"email": "fay@example.com", "name": "Fay", "groups": ["eng"]}}));
    let redirect_uri = "http://127.0.0.1:45678/callback";
    let token_url = s.gateway.url("/auth/cli/token");

    // Only loopback redirect URIs and S256 challenges are accepted.
    for bad in [
        format!(
            "redirect_uri={}&code_challenge={}&code_challenge_method=S256&state=x",
            encode("https://evil.example/callback"),
            challenge("v")
        ),
        format!(
            "redirect_uri={}&code_challenge=abc&code_challenge_method=plain&state=x",
            encode(redirect_uri)
        ),
    ] {
        let response = http()
            .get(s.gateway.url(&format!("/auth/cli/begin?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }

    // An intercepted code is useless without the verifier, and is spent by the try.
    let verifier = "a-verifier-only-the-cli-knows-0123456789-abcdef";
    let back = cli_code(&s, "fay", redirect_uri, verifier).await;
    assert_eq!(back["state"], "cli-state-1");
    let code = back["code"].as_str().unwrap().to_owned();
    let stolen = post_json(
        &token_url,
        json!({"code": code, "code_verifier": "a guess", "redirect_uri": redirect_uri}),
    )
    .await;
    assert_eq!(stolen.status(), StatusCode::UNAUTHORIZED);
    let late = post_json(
        &token_url,
        json!({"code": code, "code_verifier": verifier, "redirect_uri": redirect_uri}),
    )
    .await;
    assert_eq!(late.status(), StatusCode::UNAUTHORIZED);

    let back = cli_code(&s, "fay", redirect_uri, verifier).await;
    let granted = post_json(
        &token_url,
        json!({"code": back["code"], "code_verifier": verifier, "redirect_uri": redirect_uri}),
    )
    .await;
    assert_eq!(granted.status(), StatusCode::OK);
    let granted: Value = granted.json().await.unwrap();
    assert_eq!(granted["user"]["email"], "fay@example.com");
    let access = granted["access_token"].as_str().unwrap();
    let me = http()
        .get(s.gateway.url("/v1/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["principal"], granted["user"]["id"]);

    // Refresh rotates; presenting the old refresh token again revokes the family.
    let refresh = s.gateway.url("/auth/refresh");
    let first = granted["refresh_token"].clone();
    let rotated = post_json(&refresh, json!({"refresh_token": first})).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    assert_ne!(rotated["refresh_token"], first);
    let reused = post_json(&refresh, json!({"refresh_token": first})).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    let revoked = post_json(&refresh, json!({"refresh_token": rotated["refresh_token"]})).await;
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_cookie_request_renews_an_expiring_access_token_and_the_session_lives_on() {
    // Every access token counts as expiring: each cookie request rotates.
    let Some(s) = SignIn::start_with(|config| {
        config.login.refresh_margin = std::time::Duration::from_secs(24 * 3600);
    })
    .await
    else {
        return;
    };
    s.idp
        .accounts(json!({"hal": {"email": "hal@example.com", "name": "Hal", "groups": []}}));
    let (browser, _) = s.browser_sign_in("hal", "/").await;
    let me = s.gateway.url("/v1/me");
    let expiry = || async {
        let response = with_cookies(Method::GET, &me, &browser, None, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["expires_at"].as_str().unwrap().to_owned()
    };
    let first = expiry().await;
    // Tokens carry whole seconds: within a few, a renewed token expires later. Each
    // request succeeding shows every rotation was kept (reusing a rotated refresh
    // token would have ended the session).
    let later = godel_test_utils::eventually(
        "a renewed access token",
        std::time::Duration::from_secs(10),
        || async {
            let now = expiry().await;
            (now > first).then_some(now)
        },
    )
    .await;
    assert!(later > first);
}
