//! `godel login --no-browser` and `godel logout` as a user runs them: the real
//! binary against a real gateway and auth service signing in through a real
//! OpenID provider (npm `oidc-provider`, see `godel_test_utils::oidc`); the test
//! plays the browser. Skips without node or the provider package (fails under
//! `CI=true`).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use godel_auth::{AuthConfig, ClientAuth, OidcConfig, ProviderConfig};
use godel_bus::BusConfig;
use godel_cache::CacheConfig;
use godel_gateway::{GatewayConfig, UpstreamsConfig};
use godel_runtime::{RunningService, ServerConfig};
use godel_store::DatabaseConfig;
use godel_test_utils::oidc::{Browser, ClientSetup, Provider, provider_dir};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const CLIENT_ID: &str = "godel-cli-test";
const CLIENT_SECRET: &str = "kept by auth, never by the CLI";

/// A provider, auth signing in through it, and a gateway serving `/auth`.
struct Stack {
    idp: Provider,
    base: String,
    stop: CancellationToken,
    _services: Vec<RunningService>,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Option<Self> {
        let package = provider_dir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let callback = format!("{base}{}", godel_gateway::CALLBACK_PATH);
        let idp = Provider::start(
            &package,
            &ClientSetup {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                redirect_uris: vec![callback.clone()],
                token_endpoint_auth_method: "client_secret_post".into(),
                claims_in_id_token: true,
                id_token_alg: "ES256".into(),
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let bus = godel_bus::connect(&BusConfig::default()).await.unwrap();
        let stop = CancellationToken::new();
        let auth = godel_auth::start(
            AuthConfig {
                server: ServerConfig::local(),
                database: DatabaseConfig {
                    url: format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display())
                        .into(),
                    ..DatabaseConfig::default()
                },
                oidc: OidcConfig {
                    providers: vec![ProviderConfig {
                        name: "corp".into(),
                        display_name: "Corp SSO".into(),
                        issuer: idp.issuer.clone(),
                        client_id: CLIENT_ID.into(),
                        client_secret: Some(CLIENT_SECRET.to_owned().into()),
                        client_auth: ClientAuth::ClientSecretPost,
                        scopes: vec!["email".into(), "profile".into()],
                        algorithms: vec!["ES256".into()],
                        groups_claim: "groups".into(),
                        leeway: Duration::from_secs(30),
                        redirect_uris: vec![callback],
                        group_mappings: Vec::new(),
                    }],
                    ..OidcConfig::default()
                },
                ..AuthConfig::default()
            },
            godel_auth::Dependencies { bus: bus.clone() },
            stop.clone(),
        )
        .await
        .unwrap();
        let auth_url = format!("http://{}", auth.grpc_addr());
        let mut config = GatewayConfig {
            server: ServerConfig::local(),
            upstreams: UpstreamsConfig {
                auth: auth_url.clone(),
                scheduler: auth_url.clone(),
                orchestrator: auth_url.clone(),
                audit: auth_url,
                ..Default::default()
            },
            cache: CacheConfig::default(),
            ..Default::default()
        };
        config.server.http_addr = ([127, 0, 0, 1], port).into();
        config.login.public_url = Some(base.clone());
        let cache = godel_cache::connect(&config.cache).await.unwrap();
        let gateway = godel_gateway::start(
            config,
            godel_gateway::Dependencies {
                cache: Arc::clone(&cache),
                bus,
            },
            stop.clone(),
        )
        .await
        .unwrap();
        Some(Self {
            idp,
            base,
            stop,
            _services: vec![auth, gateway],
            _dir: dir,
        })
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `godel <args>` with `home` as the user's home and config directory.
fn godel(home: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_godel"));
    command
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env_remove("GODEL_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn refresh(base: &str, refresh_token: &Value) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{base}/auth/refresh"))
        .json(&json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn godel_login_stores_a_private_login_and_godel_logout_revokes_it() {
    let Some(stack) = Stack::start().await else {
        return;
    };
    stack.idp.accounts(json!({
        "gus": {"email": "gus@example.com", "name": "Gus", "groups": []},
    }));
    let home = tempfile::tempdir().unwrap();

    let mut login = godel(
        home.path(),
        &[
            "login",
            "--no-browser",
            "--server",
            &stack.base,
            "--timeout",
            "60",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(login.stdout.take().unwrap()).lines();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("godel login prints the sign-in URL")
            .unwrap()
            .expect("godel login exited before printing the URL");
        if line.starts_with("http") {
            break line;
        }
    };
    let parsed = reqwest::Url::parse(&url).unwrap();
    assert_eq!(parsed.path(), "/auth/cli/begin");
    let params: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
    let loopback = params["redirect_uri"].clone();
    assert!(loopback.starts_with("http://127.0.0.1:"), "{loopback}");
    assert_eq!(params["code_challenge_method"], "S256");

    // The browser: sign in at the provider, then follow the gateway's redirect to
    // the CLI's loopback listener.
    let stop = Browser::new()
        .sign_in(&url, "gus", |target| target.as_str().starts_with(&loopback))
        .await;
    let page = reqwest::get(stop.url.clone()).await.unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Signed in"));

    let status = tokio::time::timeout(Duration::from_secs(30), login.wait())
        .await
        .expect("godel login finishes")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut login.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "godel login failed: {stderr}");
    assert!(stderr.contains("gus@example.com"), "{stderr}");

    let file = home.path().join("config/godel/credentials.json");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["server"], stack.base.as_str());
    assert_eq!(stored["user"]["email"], "gus@example.com");
    let me = reqwest::Client::new()
        .get(format!("{}/v1/me", stack.base))
        .bearer_auth(stored["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), reqwest::StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["principal"], stored["user"]["id"]);

    // A command finding the stored access token expired renews it (and stores the
    // rotated pair) before calling; here the call itself then fails (no audit
    // service), after the renewal.
    let mut expired = stored.clone();
    expired["access_expires_at"] = json!("2000-01-01T00:00:00Z");
    std::fs::write(&file, serde_json::to_vec(&expired).unwrap()).unwrap();
    let verify = godel(
        home.path(),
        &["audit", "verify", "--server", "http://127.0.0.1:9"],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(verify.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        stderr.contains("cannot reach the audit service"),
        "{stderr}"
    );
    let renewed: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_ne!(renewed["refresh_token"], stored["refresh_token"]);
    assert!(
        renewed["access_expires_at"].as_str().unwrap() > "2001",
        "{renewed}"
    );
    assert_eq!(mode(&file), 0o600);
    // The first refresh token was rotated away; its reuse would revoke the family,
    // so the renewed pair is what logout revokes.
    let stored = renewed;

    let logout = godel(home.path(), &["logout"]).output().await.unwrap();
    assert!(
        logout.status.success(),
        "{}",
        String::from_utf8_lossy(&logout.stderr)
    );
    assert!(!file.exists(), "godel logout leaves the credentials file");
    // The stored refresh token was revoked, not just forgotten.
    assert_eq!(
        refresh(&stack.base, &stored["refresh_token"]).await,
        reqwest::StatusCode::UNAUTHORIZED
    );
}
