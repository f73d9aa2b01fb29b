//! A real OpenID provider for sign-in tests — npm `oidc-provider` (installed by
//! `scripts/oidc-provider.sh`, found through `OIDC_PROVIDER_DIR` or in
//! `target/oidc-provider`) running `support/oidc-provider.mjs` — and a [`Browser`]
//! that goes through its development login and consent forms over plain HTTP.
//!
//! Without node or the package, [`provider_dir`] says why and the test skips,
//! except under `CI=true`, where it panics.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The provider script.
pub fn provider_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/oidc-provider.mjs")
}

/// Where the provider package is, or `None` (after printing why) when the test
/// cannot run.
pub fn provider_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("OIDC_PROVIDER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/oidc-provider")
        });
    let why = if Command::new("node").arg("--version").output().is_err() {
        "node is not installed".to_owned()
    } else if !dir.join("node_modules/oidc-provider/package.json").exists() {
        format!(
            "npm oidc-provider is not installed in {} (run scripts/oidc-provider.sh)",
            dir.display()
        )
    } else {
        return Some(dir);
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the sign-in tests need a real OpenID provider: {why}");
    }
    eprintln!("skipping: {why}");
    None
}

/// How the provider's one client is registered.
#[derive(Debug, Clone)]
pub struct ClientSetup {
    pub client_id: String,
    pub client_secret: String,
    /// Where the provider may send browsers back, exactly.
    pub redirect_uris: Vec<String>,
    /// `client_secret_basic` or `client_secret_post`.
    pub token_endpoint_auth_method: String,
    /// false: the ID token carries only `sub`, the rest is at the userinfo endpoint.
    pub claims_in_id_token: bool,
    /// `RS256` or `ES256`.
    pub id_token_alg: String,
}

/// A running `oidc-provider`, killed on drop.
pub struct Provider {
    child: Child,
    pub issuer: String,
    accounts: PathBuf,
    /// Kept open: the provider must not write into a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
    dir: tempfile::TempDir,
}

impl Provider {
    /// Starts the provider from the package in `package` (see [`provider_dir`]).
    pub fn start(package: &Path, client: &ClientSetup) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("oidc-provider")
            .tempdir()
            .expect("a scratch directory");
        let accounts = dir.path().join("accounts.json");
        std::fs::write(&accounts, "{}").expect("writing accounts.json");
        let config = dir.path().join("config.json");
        let json = serde_json::json!({
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "redirect_uris": client.redirect_uris,
            "accounts_file": accounts,
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "claims_in_id_token": client.claims_in_id_token,
            "id_token_alg": client.id_token_alg,
        });
        std::fs::write(&config, json.to_string()).expect("writing config.json");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
        let mut child = Command::new("node")
            .arg(provider_script())
            .arg(package)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting node");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let started: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            panic!("oidc-provider did not start ({e}): {line:?}; its stderr:\n{log}")
        });
        let issuer = started["issuer"]
            .as_str()
            .expect("the provider prints its issuer")
            .to_owned();
        Self {
            child,
            issuer,
            accounts,
            _stdout: stdout,
            dir,
        }
    }

    /// Sets who can sign in, with which claims (read at every sign-in):
    /// `{"<login>": {"email": …, "name": …, "groups": […]}}`.
    pub fn accounts(&self, accounts: serde_json::Value) {
        std::fs::write(&self.accounts, accounts.to_string()).expect("writing accounts.json");
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.path().join("stderr.log"))
        {
            eprintln!("oidc-provider stderr:\n{log}");
        }
    }
}

/// The value of attribute `name` in an HTML tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].replace("&amp;", "&"))
}

/// The first form of `html`: its action and its inputs' names and values.
fn form(html: &str) -> (String, Vec<(String, String)>) {
    let start = html.find("<form").expect("a form on the page");
    let tag_end = html[start..].find('>').expect("a form tag") + start;
    let action = attribute(&html[start..tag_end], "action").expect("a form action");
    let end = html[start..].find("</form>").expect("a closed form") + start;
    let inputs = html[start..end]
        .split("<input")
        .skip(1)
        .filter_map(|i| {
            let tag = &i[..i.find('>').unwrap_or(i.len())];
            Some((
                attribute(tag, "name")?,
                attribute(tag, "value").unwrap_or_default(),
            ))
        })
        .collect();
    (action, inputs)
}

/// Where a [`Browser`] walk stopped: the redirect it was told to stop at.
#[derive(Debug, Clone)]
pub struct Stop {
    /// The absolute URL of the redirect target.
    pub url: reqwest::Url,
    /// Its query parameters.
    pub query: BTreeMap<String, String>,
}

/// A browser played by an HTTP client: one cookie jar for every host (a real
/// browser shares cookies across ports of one host, which is all tests use), cookie
/// paths ignored, `Max-Age=0` honoured.
#[derive(Debug, Default)]
pub struct Browser {
    pub cookies: BTreeMap<String, String>,
    /// Every `Set-Cookie` value received, in order.
    pub set_cookies: Vec<String>,
}

impl Browser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `Cookie` header the jar sends.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Takes the `Set-Cookie` headers of `response` into the jar.
    pub fn remember(&mut self, headers: &reqwest::header::HeaderMap) {
        for value in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            self.set_cookies.push(text.to_owned());
            let mut parts = text.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let expired = parts.any(|p| p.trim().eq_ignore_ascii_case("max-age=0"));
            if expired || value.is_empty() {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    /// Follows redirects from `url`, keeping cookies, signs in as `login` on the
    /// provider's development login form, consents, and stops at the first
    /// redirect whose target `stop_at` accepts (without requesting it).
    pub async fn sign_in(
        &mut self,
        url: &str,
        login: &str,
        stop_at: impl Fn(&reqwest::Url) -> bool,
    ) -> Stop {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        let mut at = reqwest::Url::parse(url).expect("an absolute URL");
        let mut next = http.get(at.clone());
        for _ in 0..20 {
            let response = next
                .header(reqwest::header::COOKIE, self.cookie_header())
                .send()
                .await
                .expect("the request is answered");
            self.remember(response.headers());
            if response.status().is_redirection() {
                let location = response.headers()[reqwest::header::LOCATION]
                    .to_str()
                    .expect("a text Location");
                let target = at.join(location).expect("a valid Location");
                if stop_at(&target) {
                    return Stop {
                        query: target.query_pairs().into_owned().collect(),
                        url: target,
                    };
                }
                at = target.clone();
                next = http.get(target);
                continue;
            }
            let status = response.status();
            let html = response.text().await.unwrap_or_default();
            assert!(status.is_success(), "{status} at {at}: {html}");
            let (action, mut fields) = form(&html);
            if fields.iter().any(|(name, _)| name == "login") {
                fields.retain(|(name, _)| name != "login" && name != "password");
                fields.push(("login".into(), login.into()));
                fields.push(("password".into(), "any".into()));
            }
            at = at.join(&action).expect("a valid form action");
            next = http.post(at.clone()).form(&fields);
        }
        panic!("the sign-in never reached the expected redirect");
    }
}
