//! Sign-in through the identity providers auth knows (`oidc.providers`), under
//! `/auth`, without authentication:
//!
//! - `GET /auth/providers`: the providers to offer;
//! - `GET /auth/login?idp=&redirect_to=`: starts a browser sign-in (auth's
//!   `BeginLogin` with this gateway's `/auth/callback` as redirect URI), binds it to
//!   the browser with the [`cookie::LOGIN`] cookie, and redirects to the provider;
//! - `GET /auth/callback`: checks the cookie against `state`, finishes the sign-in
//!   (`CompleteLogin`) and either starts a session ([`session`]: cookies, then a
//!   redirect to `redirect_to`, a local path only) or, for a CLI, hands it a
//!   one-time code (see [`cli`]);
//! - `POST /auth/refresh` and `POST /auth/logout`: for the session cookie (with
//!   `X-CSRF-Token`), or for a token pair held by a client (`{"refresh_token"}`).
//!
//! The provider's client secret and the PKCE verifier towards the provider stay in
//! auth; browsers hold only opaque ids (session, sign-in state) whose records are
//! sealed in the cache ([`sealed`]). Losing the cache ends every browser session.

mod cli;
pub(crate) mod cookie;
mod redirect;
mod sealed;
pub(crate) mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use godel_cache::Cache;
use godel_error::Error;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::auth::v1::{
    BeginLoginRequest, CompleteLoginRequest, CompleteLoginResponse, ListIdentityProvidersRequest,
    RefreshTokenRequest, TokenPair,
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::LoginConfig;
use cookie::Attributes;
use sealed::Sealed;
use session::Sessions;

/// The path providers send browsers back to, under `login.public_url`.
pub const CALLBACK_PATH: &str = "/auth/callback";

/// Why the login settings are unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `login.{setting}`: {reason}")]
pub struct InvalidLogin {
    pub setting: &'static str,
    pub reason: String,
}

/// A sign-in in progress, kept under its `state` until the callback.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Flow {
    /// A browser, sent to `redirect_to` once signed in.
    Browser { redirect_to: String },
    /// `godel login`, waiting on `redirect_uri` for a one-time code.
    Cli {
        redirect_uri: String,
        code_challenge: String,
        client_state: String,
    },
}

/// What the `/auth` routes share.
pub(crate) struct Login {
    callback_url: String,
    secure: bool,
    flow_timeout: Duration,
    cli_code_ttl: Duration,
    auth: AuthServiceClient<Channel>,
    flows: Sealed,
    cli_codes: Sealed,
    sessions: Sessions,
    timeout: Duration,
}

impl Login {
    /// The login routes' state, or `None` when `config.public_url` is unset.
    pub(crate) fn new(
        config: &LoginConfig,
        cache: &Arc<dyn Cache>,
        auth: AuthServiceClient<Channel>,
        timeout: Duration,
    ) -> Result<Option<Arc<Self>>, InvalidLogin> {
        let Some(public_url) = &config.public_url else {
            return Ok(None);
        };
        let origin = origin(public_url)?;
        if !config.secure_cookies && !is_http_loopback(&origin) {
            return Err(InvalidLogin {
                setting: "secure_cookies",
                reason: format!(
                    "cookies can be sent without `Secure` only to a plain-http loopback \
                     origin, not `{origin}`"
                ),
            });
        }
        let sessions = Sessions::new(
            Sealed::new(cache.clone(), "session"),
            auth.clone(),
            config.refresh_margin,
            timeout,
        );
        Ok(Some(Arc::new(Self {
            callback_url: format!("{origin}{CALLBACK_PATH}"),
            secure: config.secure_cookies,
            flow_timeout: config.flow_timeout,
            cli_code_ttl: config.cli_code_ttl,
            auth,
            flows: Sealed::new(cache.clone(), "login"),
            cli_codes: Sealed::new(cache.clone(), "cli-code"),
            sessions,
            timeout,
        })))
    }

    /// The browser sessions, for authenticating `/v1` requests by cookie.
    pub(crate) fn sessions(&self) -> Sessions {
        self.sessions.clone()
    }

    fn attributes(&self, path: &'static str, http_only: bool) -> Attributes {
        Attributes {
            path,
            http_only,
            secure: self.secure,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Starts a sign-in with `idp` (the only provider when `None`) for `flow`, and
    /// answers with the redirect to the provider and the login cookie.
    async fn begin(&self, idp: Option<String>, flow: Flow) -> Result<Response, Error> {
        let provider = match idp.filter(|p| !p.is_empty()) {
            Some(p) => p,
            None => self.only_provider().await?,
        };
        let begun = self
            .auth
            .clone()
            .begin_login(self.request(BeginLoginRequest {
                provider,
                redirect_uri: self.callback_url.clone(),
            }))
            .await
            .map_err(|s| Error::from_status(&s))?
            .into_inner();
        let until = begun
            .expires_at
            .as_ref()
            .and_then(|t| godel_proto::convert::from_timestamp("expires_at", t).ok())
            .map_or(self.flow_timeout, |at: DateTime<Utc>| {
                (at - Utc::now()).to_std().unwrap_or_default()
            });
        let ttl = self.flow_timeout.min(until);
        self.flows.put(&begun.state, &flow, ttl).await?;
        let mut response = found(&begun.authorization_url)?;
        response.headers_mut().append(
            header::SET_COOKIE,
            cookie::set(
                cookie::LOGIN,
                &begun.state,
                ttl,
                self.attributes("/auth", true),
            ),
        );
        Ok(response)
    }

    async fn only_provider(&self) -> Result<String, Error> {
        let providers = self
            .auth
            .clone()
            .list_identity_providers(self.request(ListIdentityProvidersRequest {}))
            .await
            .map_err(|s| Error::from_status(&s))?
            .into_inner()
            .providers;
        match providers.as_slice() {
            [only] => Ok(only.name.clone()),
            [] => Err(Error::not_found("identity provider (none is configured)")),
            many => Err(Error::invalid_argument(
                "idp",
                format!(
                    "name the identity provider: `idp` is one of {}",
                    many.iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

/// The `/auth` routes.
pub(crate) fn router(login: Arc<Login>) -> Router {
    Router::new()
        .route("/auth/providers", get(providers))
        .route("/auth/login", get(begin_browser))
        .route(CALLBACK_PATH, get(callback))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/cli/begin", get(cli::begin))
        .route("/auth/cli/token", post(cli::token))
        .with_state(login)
}

#[derive(Serialize)]
struct Provider {
    name: String,
    display_name: String,
}

#[derive(Serialize)]
struct Providers {
    providers: Vec<Provider>,
}

async fn providers(State(login): State<Arc<Login>>) -> Result<Json<Providers>, Error> {
    let listed = login
        .auth
        .clone()
        .list_identity_providers(login.request(ListIdentityProvidersRequest {}))
        .await
        .map_err(|s| Error::from_status(&s))?
        .into_inner();
    Ok(Json(Providers {
        providers: listed
            .providers
            .into_iter()
            .map(|p| Provider {
                name: p.name,
                display_name: p.display_name,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
struct BeginQuery {
    idp: Option<String>,
    redirect_to: Option<String>,
}

async fn begin_browser(
    State(login): State<Arc<Login>>,
    Query(query): Query<BeginQuery>,
) -> Result<Response, Error> {
    let redirect_to = redirect::local_path(query.redirect_to.as_deref())?;
    login.begin(query.idp, Flow::Browser { redirect_to }).await
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

/// The provider's redirect back: answered, whatever the outcome, with the login
/// cookie cleared.
async fn callback(
    State(login): State<Arc<Login>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let (result, mut response) = match finish(&login, &headers, query).await {
        Ok(response) => ("ok", response),
        Err(error) => {
            let result = match error.code {
                godel_error::ErrorCode::Unauthenticated => "refused",
                _ => "failed",
            };
            tracing::info!(error = %error, "a sign-in did not complete");
            (result, error.into_response())
        }
    };
    metrics::counter!("godel_gateway_sign_ins_total", "result" => result).increment(1);
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie::clear(cookie::LOGIN, login.attributes("/auth", true)),
    );
    response
}

async fn finish(
    login: &Login,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Result<Response, Error> {
    let state = query.state.unwrap_or_default();
    let bound = cookie::read(headers, cookie::LOGIN).is_some_and(|c| sealed::same(c, &state));
    if state.is_empty() || !bound {
        return Err(Error::unauthenticated(
            "sign-in refused: it was not started by this browser (start again at /auth/login)",
        ));
    }
    let Some(flow) = login.flows.take::<Flow>(&state).await? else {
        return Err(Error::unauthenticated(
            "sign-in refused: unknown, used or expired sign-in (start again at /auth/login)",
        ));
    };
    if let Some(error) = query.error {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(Error::unauthenticated(format!(
            "the identity provider refused the sign-in: {error}"
        )));
    }
    let completed = login
        .auth
        .clone()
        .complete_login(login.request(CompleteLoginRequest {
            state,
            code: query.code.unwrap_or_default(),
            redirect_uri: login.callback_url.clone(),
            issuer: query.iss.unwrap_or_default(),
        }))
        .await
        .map_err(|s| Error::from_status(&s))?
        .into_inner();
    match flow {
        Flow::Browser { redirect_to } => start_session(login, &completed, &redirect_to).await,
        Flow::Cli {
            redirect_uri,
            code_challenge,
            client_state,
        } => {
            cli::hand_over(
                login,
                completed,
                cli::Waiting {
                    redirect_uri,
                    code_challenge,
                    client_state,
                },
            )
            .await
        }
    }
}

async fn start_session(
    login: &Login,
    completed: &CompleteLoginResponse,
    redirect_to: &str,
) -> Result<Response, Error> {
    let tokens = completed.tokens.clone().unwrap_or_default();
    let started = login.sessions.start(&tokens).await?;
    let redirect_to = redirect::local_path(Some(redirect_to))?;
    let mut response = found(&redirect_to)?;
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookie::set(
            cookie::SESSION,
            &started.id,
            started.max_age,
            login.attributes("/", true),
        ),
    );
    headers.append(
        header::SET_COOKIE,
        cookie::set(
            cookie::CSRF,
            &started.csrf,
            started.max_age,
            login.attributes("/", false),
        ),
    );
    Ok(response)
}

/// `{"refresh_token": "gdr_…"}`: a client holding its own token pair (`godel login`).
#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// A token pair handed to a client.
#[derive(Serialize, Deserialize)]
pub(crate) struct Tokens {
    access_token: String,
    access_expires_at: DateTime<Utc>,
    refresh_token: String,
    refresh_expires_at: DateTime<Utc>,
}

impl Tokens {
    fn of(pair: &TokenPair) -> Result<Self, Error> {
        let (access_expires_at, refresh_expires_at) = session::expiries(pair)?;
        Ok(Self {
            access_token: pair.access_token.clone(),
            access_expires_at,
            refresh_token: pair.refresh_token.clone(),
            refresh_expires_at,
        })
    }
}

/// What `POST /auth/refresh` answers a session: when its new access token expires.
#[derive(Serialize)]
struct Refreshed {
    access_expires_at: DateTime<Utc>,
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid_argument("body", format!("invalid JSON body: {e}")))
}

/// The session cookie's id, after checking the request's `X-CSRF-Token`.
async fn session_of(
    login: &Login,
    headers: &HeaderMap,
) -> Result<Option<(String, session::Record)>, Error> {
    let Some(id) = cookie::read(headers, cookie::SESSION) else {
        return Ok(None);
    };
    let record = login.sessions.load(id).await?;
    record.check_csrf(
        headers
            .get(cookie::CSRF_HEADER)
            .and_then(|v| v.to_str().ok()),
    )?;
    Ok(Some((id.to_owned(), record)))
}

async fn refresh(
    State(login): State<Arc<Login>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Error> {
    if !bytes.is_empty() {
        let request: RefreshBody = body(&bytes)?;
        let tokens = login
            .auth
            .clone()
            .refresh_token(login.request(RefreshTokenRequest {
                refresh_token: request.refresh_token,
            }))
            .await
            .map_err(|s| Error::from_status(&s))?
            .into_inner()
            .tokens
            .unwrap_or_default();
        return Ok(Json(Tokens::of(&tokens)?).into_response());
    }
    let Some((id, _)) = session_of(&login, &headers).await? else {
        return Err(Error::unauthenticated(
            "no session cookie and no `refresh_token` in the body",
        ));
    };
    let record = login.sessions.refresh(&id, true).await?;
    Ok(Json(Refreshed {
        access_expires_at: record.access_expires_at,
    })
    .into_response())
}

async fn logout(
    State(login): State<Arc<Login>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Error> {
    if !bytes.is_empty() {
        let request: RefreshBody = body(&bytes)?;
        session::revoke(&login.auth, &request.refresh_token, login.timeout).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if let Some((id, _)) = session_of(&login, &headers).await? {
        login.sessions.end(&id).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookie::clear(cookie::SESSION, login.attributes("/", true)),
    );
    headers.append(
        header::SET_COOKIE,
        cookie::clear(cookie::CSRF, login.attributes("/", false)),
    );
    Ok(response)
}

/// A `302 Found` to `location`.
fn found(location: &str) -> Result<Response, Error> {
    let value = HeaderValue::from_str(location)
        .map_err(|_| Error::internal("a redirect location is not a valid header value"))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, value)]).into_response())
}

/// `scheme://host[:port]` of `url`, which must be nothing more.
fn origin(url: &str) -> Result<String, InvalidLogin> {
    let url = url.trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => {
            Ok(url.to_owned())
        }
        _ => Err(InvalidLogin {
            setting: "public_url",
            reason: format!(
                "`{url}` is not an origin such as `https://godel.example.com` (no path)"
            ),
        }),
    }
}

fn is_http_loopback(origin: &str) -> bool {
    let Some(host_port) = origin.strip_prefix("http://") else {
        return false;
    };
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_url_is_an_origin_and_plain_cookies_need_loopback() {
        assert_eq!(
            origin("https://godel.example.com/").ok().as_deref(),
            Some("https://godel.example.com")
        );
        assert!(origin("https://godel.example.com/app").is_err());
        assert!(origin("ftp://x").is_err());
        assert!(is_http_loopback("http://127.0.0.1:7700"));
        assert!(is_http_loopback("http://localhost:7700"));
        assert!(is_http_loopback("http://[::1]:7700"));
        assert!(!is_http_loopback("https://localhost:7700"));
        assert!(!is_http_loopback("http://godel.example.com"));
        assert!(!is_http_loopback("http://localhost.evil.example"));
    }
}
