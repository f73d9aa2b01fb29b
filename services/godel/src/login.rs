//! `godel login` and `godel logout`: sign-in through the gateway for the CLI
//! (RFC 8252, loopback redirect; the gateway's `/auth/cli/…`).
//!
//! `godel login` listens on `127.0.0.1:<free port>`, makes a PKCE verifier and a
//! `state`, and sends the browser to the gateway's `/auth/cli/begin` with the S256
//! challenge. Once the user has signed in at the identity provider, the gateway
//! sends the browser to the loopback listener with a one-time code, which the CLI
//! trades with its verifier at `/auth/cli/token` for a token pair, stored by
//! [`crate::credentials::stored`]. `godel logout` revokes the stored refresh token at
//! the gateway and deletes the file.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::{LoginArgs, LogoutArgs};
use crate::credentials::stored::{self, StoredLogin, Tokens, User};

/// Runs `godel login`.
pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(sign_in(args))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `godel logout`.
pub fn logout(_args: LogoutArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(sign_out())?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What `/auth/cli/token` answers.
#[derive(Deserialize)]
struct Granted {
    #[serde(flatten)]
    tokens: Tokens,
    user: User,
}

async fn sign_in(args: LoginArgs) -> anyhow::Result<()> {
    let server = args.server.trim_end_matches('/').to_owned();
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen on a loopback port for the browser's return")?;
    let port = listener.local_addr().context("no loopback port")?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_token();
    let mut params = vec![
        ("redirect_uri", redirect_uri.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", state.as_str()),
    ];
    if let Some(idp) = &args.idp {
        params.push(("idp", idp.as_str()));
    }
    let url = reqwest::Url::parse_with_params(&format!("{server}/auth/cli/begin"), &params)
        .with_context(|| format!("`{server}` is not a valid server URL"))?;

    if args.no_browser || !open_browser(url.as_str()) {
        eprintln!("Open this URL in a browser to sign in:");
        println!("{url}");
    } else {
        eprintln!("Your browser was opened to sign in. If it was not, open:\n{url}");
    }

    let wait = Duration::from_secs(args.timeout_secs);
    let code = tokio::time::timeout(wait, receive_code(&listener, &state))
        .await
        .map_err(|_| anyhow::anyhow!("no sign-in came back within {}s", args.timeout_secs))??;

    let token_url = format!("{server}/auth/cli/token");
    let response = reqwest::Client::new()
        .post(&token_url)
        .json(&serde_json::json!({
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect_uri,
        }))
        .send()
        .await
        .with_context(|| format!("cannot reach {token_url}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let detail = response.text().await.unwrap_or_default();
        anyhow::bail!("{token_url} refused the sign-in ({status}): {detail}");
    }
    let granted: Granted = response
        .json()
        .await
        .with_context(|| format!("{token_url} answered something other than a token pair"))?;

    let path = stored::path()?;
    let previous = stored::load(&path).ok().flatten();
    stored::save(
        &path,
        &StoredLogin {
            server: server.clone(),
            tokens: granted.tokens,
            user: granted.user.clone(),
        },
    )?;
    if let Some(previous) = previous
        && let Err(e) = stored::revoke(&previous.server, &previous.tokens.refresh_token).await
    {
        eprintln!("godel: the previous login could not be revoked: {e:#}");
    }
    let who = if granted.user.email.is_empty() {
        granted.user.id.clone()
    } else {
        format!("{} <{}>", granted.user.display_name, granted.user.email)
    };
    eprintln!(
        "Signed in to {server} as {who}; credentials in {}",
        path.display()
    );
    Ok(())
}

/// Opens `url` in the desktop's browser; false when none could be started.
fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Waits for the browser's `GET /callback?code=…&state=…` and returns the code.
/// Requests for other paths or with another state are answered and ignored.
async fn receive_code(listener: &TcpListener, state: &str) -> anyhow::Result<String> {
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .context("the loopback listener failed")?;
        let Some(target) = request_target(&mut stream).await else {
            continue;
        };
        let Ok(url) = reqwest::Url::parse(&format!("http://127.0.0.1{target}")) else {
            respond(&mut stream, "400 Bad Request", "Not a sign-in.").await;
            continue;
        };
        if url.path() != "/callback" {
            respond(&mut stream, "404 Not Found", "Not a sign-in.").await;
            continue;
        }
        let query: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        if query.get("state").map(String::as_str) != Some(state) {
            respond(
                &mut stream,
                "400 Bad Request",
                "This sign-in was not started by this godel login.",
            )
            .await;
            continue;
        }
        let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
            respond(&mut stream, "400 Bad Request", "The sign-in failed.").await;
            anyhow::bail!("the sign-in came back without a code");
        };
        respond(
            &mut stream,
            "200 OK",
            "Signed in to Godel. You can close this tab and return to the terminal.",
        )
        .await;
        return Ok(code.clone());
    }
}

/// The request target of an HTTP request line (`GET <target> HTTP/1.1`).
async fn request_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut line = text.lines().next()?.split(' ');
    match (line.next(), line.next()) {
        (Some("GET"), Some(target)) if target.starts_with('/') => Some(target.to_owned()),
        _ => None,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, message: &str) {
    let body =
        format!("<!doctype html><meta charset=\"utf-8\"><title>Godel</title><p>{message}</p>\n");
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn sign_out() -> anyhow::Result<()> {
    let path = stored::path()?;
    let Some(login) = stored::load(&path)? else {
        eprintln!("Not signed in.");
        return Ok(());
    };
    stored::revoke(&login.server, &login.tokens.refresh_token)
        .await
        .with_context(|| {
            format!(
                "the login stays stored in {} (retry, or delete the file)",
                path.display()
            )
        })?;
    stored::delete(&path)?;
    eprintln!("Signed out of {}.", login.server);
    Ok(())
}
