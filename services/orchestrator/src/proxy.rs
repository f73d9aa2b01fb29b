//! The LLM proxy: the only way a session's agent reaches a model provider.
//!
//! Agents call it as if it were the provider — OpenAI Chat Completions
//! (`POST /v1/chat/completions`) and Responses (`POST /v1/responses`), Anthropic
//! Messages (`POST /v1/messages`, also `?beta=true`, and
//! `/v1/messages/count_tokens`) — with their session token as `Authorization:
//! Bearer` or `x-api-key`. The proxy checks the token ([`tokens`]), refuses a
//! session whose budget is spent (HTTP 402), decrypts the team's provider key
//! ([`crate::keys`]), maps the model id, and forwards the request with the real key
//! in place of the token; the response (SSE or JSON) streams back unbuffered while
//! [`meter`] reads its usage, which is priced and appended to the session's log as
//! a `usage` event. Neither keys nor tokens are ever logged.
//!
//! A planner asks through the same endpoints on behalf of a person: with that
//! caller's Godel access token as the bearer and the team in `x-godel-team`. The
//! caller needs `plans:create` in the team; the team's key is used, and the call's
//! usage is metered for the team (metrics and log) — there is no session to charge.

pub mod api;
mod forward;
pub mod meter;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use godel_error::{Error, ErrorCode};
use godel_identity::{CallerVerifier, Permission};
use godel_store::Db;
use godel_types::{SessionId, TeamId};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ProxyConfig;
use crate::keys::ProviderKeys;
use crate::session::{Session, Sessions, Usage};
use api::{Api, ProxyError};
use meter::{Meter, Tokens};
use tokens::Binding;

/// Calls answered, by `api` and HTTP `status`.
const REQUESTS: &str = "godel_llm_proxy_requests_total";
/// Metered tokens, by `team`, `api` and `direction` (`input` | `output`).
const TOKENS: &str = "godel_llm_proxy_tokens_total";
/// Metered cost in micro-USD, by `team`.
const COST: &str = "godel_llm_proxy_cost_micro_usd_total";

struct ProxyState {
    config: ProxyConfig,
    db: Db,
    keys: ProviderKeys,
    sessions: Sessions,
    /// Verifies planners' callers; `None`: only session tokens are accepted.
    verifier: Option<CallerVerifier>,
    client: reqwest::Client,
}

/// The header naming the team a planning call is made for.
pub const TEAM_HEADER: &str = "x-godel-team";

/// Whom a call is for.
enum Principal {
    /// An agent, with its session token.
    Session {
        binding: Binding,
        session: Box<Session>,
    },
    /// A planner acting for a caller holding `plans:create` in `team`.
    Planner { team: TeamId },
}

impl Principal {
    fn team(&self) -> TeamId {
        match self {
            Self::Session { binding, .. } => binding.team_id,
            Self::Planner { team } => *team,
        }
    }

    fn session_id(&self) -> Option<SessionId> {
        match self {
            Self::Session { session, .. } => Some(session.id),
            Self::Planner { .. } => None,
        }
    }
}

/// A bound, not yet serving, LLM proxy.
pub struct LlmProxy {
    listener: TcpListener,
    base_url: String,
    router: Router,
}

impl std::fmt::Debug for LlmProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmProxy")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl LlmProxy {
    /// Binds `config.listen`; tokens are checked in `db`, keys read from `keys`,
    /// usage recorded through `sessions`; planners' callers are verified with
    /// `verifier` (without one, only session tokens are accepted).
    pub async fn bind(
        config: ProxyConfig,
        db: Db,
        keys: ProviderKeys,
        sessions: Sessions,
        verifier: Option<CallerVerifier>,
    ) -> Result<Self, Error> {
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            Error::unavailable(format!(
                "the LLM proxy cannot listen on {}: {e}",
                config.listen
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::unavailable(format!("the LLM proxy has no address: {e}")))?;
        let base_url = config
            .public_url
            .clone()
            .filter(|u| !u.is_empty())
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{addr}"));
        let client = reqwest::Client::builder()
            .connect_timeout(config.upstream_timeout)
            .read_timeout(config.upstream_timeout)
            .build()
            .map_err(|e| Error::internal(format!("cannot build the LLM proxy's client: {e}")))?;
        let limit = config.max_request_bytes;
        let state = Arc::new(ProxyState {
            config,
            db,
            keys,
            sessions,
            verifier,
            client,
        });
        let router = Router::new()
            .route(
                Api::ChatCompletions.path(),
                post(
                    |s: State<Arc<ProxyState>>, u: Uri, h: HeaderMap, b: Bytes| {
                        handle(s, Api::ChatCompletions, u, h, b)
                    },
                ),
            )
            .route(
                Api::Responses.path(),
                post(
                    |s: State<Arc<ProxyState>>, u: Uri, h: HeaderMap, b: Bytes| {
                        handle(s, Api::Responses, u, h, b)
                    },
                ),
            )
            .route(
                Api::Messages.path(),
                post(
                    |s: State<Arc<ProxyState>>, u: Uri, h: HeaderMap, b: Bytes| {
                        handle(s, Api::Messages, u, h, b)
                    },
                ),
            )
            .route(
                Api::CountTokens.path(),
                post(
                    |s: State<Arc<ProxyState>>, u: Uri, h: HeaderMap, b: Bytes| {
                        handle(s, Api::CountTokens, u, h, b)
                    },
                ),
            )
            .fallback(|uri: Uri| async move {
                let api = if uri.path().starts_with("/v1/messages") {
                    Api::Messages
                } else {
                    Api::ChatCompletions
                };
                ProxyError::new(
                    api,
                    StatusCode::NOT_FOUND,
                    format!("the Godel LLM proxy does not serve {}", uri.path()),
                )
            })
            .layer(DefaultBodyLimit::max(limit))
            .with_state(state);
        tracing::info!(%addr, %base_url, "LLM proxy listening");
        Ok(Self {
            listener,
            base_url,
            router,
        })
    }

    /// The base URL agents are given (`http://host:port`, no path).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Serves until `stop` is cancelled, then lets open responses finish.
    pub async fn serve(self, stop: CancellationToken) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }
}

/// The session token the agent sent: `Authorization: Bearer …`, else `x-api-key`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A planning call: `token` is a Godel access token whose caller holds
/// `plans:create` in the team named by [`TEAM_HEADER`].
async fn planner(state: &ProxyState, headers: &HeaderMap, token: &str) -> Result<Principal, Error> {
    let Some(verifier) = &state.verifier else {
        return Err(Error::unauthenticated(tokens::Refusal::Unknown.message()));
    };
    let caller = verifier.verify(token).await.map_err(|e| {
        Error::unauthenticated(format!(
            "neither a session token nor a valid access token: {e}"
        ))
    })?;
    let team = headers
        .get(TEAM_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Error::invalid_argument(
                TEAM_HEADER,
                "a planning call names its team in x-godel-team",
            )
        })?
        .parse::<TeamId>()
        .map_err(|_| Error::invalid_argument(TEAM_HEADER, "not a team id (`team_…`)"))?;
    caller.require(team, Permission::PlansCreate)?;
    Ok(Principal::Planner { team })
}

fn status_of(error: &Error) -> StatusCode {
    match error.code {
        // A missing or undecryptable team key is the team's setup, not the agent's
        // request.
        ErrorCode::FailedPrecondition => StatusCode::FORBIDDEN,
        code => code.http_status(),
    }
}

/// Whether `session` spent its budget (as bound to the token).
fn budget_spent(binding: &Binding, usage: &Usage) -> Option<String> {
    let tokens = usage.input_tokens + usage.output_tokens;
    if binding.max_tokens > 0 && tokens >= binding.max_tokens {
        return Some(format!(
            "the session's token budget is spent ({tokens} of {} tokens used)",
            binding.max_tokens
        ));
    }
    if binding.max_cost_micro_usd > 0 && usage.cost_micro_usd >= binding.max_cost_micro_usd {
        return Some(format!(
            "the session's cost budget is spent ({} of {} micro-USD used)",
            usage.cost_micro_usd, binding.max_cost_micro_usd
        ));
    }
    None
}

/// The name of the team key for `provider`: the session payload's
/// `llm.keys.<provider>`, else the configured default.
fn key_name<'a>(config: &'a ProxyConfig, session: &'a Session, provider: &str) -> &'a str {
    session
        .payload
        .get("llm")
        .and_then(|llm| llm.get("keys"))
        .and_then(|keys| keys.get(provider))
        .and_then(serde_json::Value::as_str)
        .unwrap_or(&config.default_key_name)
}

/// The request body to send upstream: the model id mapped, and Chat Completions
/// streams asked to end with their usage. Returns the body and the upstream model.
fn rewrite(config: &ProxyConfig, api: Api, body: &Bytes) -> Result<(Bytes, String), String> {
    let mut json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the request body is not JSON: {e}"))?;
    let Some(object) = json.as_object_mut() else {
        return Err("the request body must be a JSON object".to_owned());
    };
    let mut changed = false;
    let mut model = object
        .get("model")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(upstream) = config.models.get(&model) {
        model = upstream.clone();
        object.insert("model".to_owned(), model.clone().into());
        changed = true;
    }
    let streaming = object
        .get("stream")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if api == Api::ChatCompletions && streaming {
        let options = object
            .entry("stream_options")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(options) = options.as_object_mut()
            && options.get("include_usage") != Some(&serde_json::Value::Bool(true))
        {
            options.insert("include_usage".to_owned(), true.into());
            changed = true;
        }
    }
    if !changed {
        return Ok((body.clone(), model));
    }
    serde_json::to_vec(&json)
        .map(|b| (Bytes::from(b), model))
        .map_err(|e| format!("cannot re-encode the request: {e}"))
}

async fn handle(
    State(state): State<Arc<ProxyState>>,
    api: Api,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = match forward(&state, api, &uri, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    metrics::counter!(REQUESTS, "api" => api.as_str(), "status" => response.status().as_str().to_owned())
        .increment(1);
    response
}

async fn forward(
    state: &ProxyState,
    api: Api,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ProxyError> {
    let refuse = |status, message: String| ProxyError::new(api, status, message);
    let failed = |error: Error| ProxyError::new(api, status_of(&error), error.message);

    let token = presented_token(headers).ok_or_else(|| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "missing session token (Authorization: Bearer or x-api-key)".to_owned(),
        )
    })?;
    let principal = if token.starts_with(tokens::PREFIX) {
        let binding = tokens::check(state.db.conn(), token, Utc::now())
            .await
            .map_err(failed)?
            .map_err(|refusal| refuse(StatusCode::UNAUTHORIZED, refusal.message().to_owned()))?;
        let session = state
            .sessions
            .get(binding.team_id, binding.session_id)
            .await
            .map_err(failed)?;
        if session.state.is_terminal() {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                tokens::Refusal::Revoked.message().to_owned(),
            ));
        }
        if api != Api::CountTokens
            && let Some(message) = budget_spent(&binding, &session.usage)
        {
            tracing::info!(session_id = %session.id, api = api.as_str(), "LLM request refused: budget spent");
            return Err(refuse(StatusCode::PAYMENT_REQUIRED, message));
        }
        Principal::Session {
            binding,
            session: Box::new(session),
        }
    } else {
        planner(state, headers, token).await.map_err(failed)?
    };
    let (body, model) = rewrite(&state.config, api, &body)
        .map_err(|message| refuse(StatusCode::BAD_REQUEST, message))?;

    let provider = api.provider();
    let upstream = state.config.providers.get(provider).ok_or_else(|| {
        refuse(
            StatusCode::BAD_GATEWAY,
            format!("no upstream is configured for provider `{provider}`"),
        )
    })?;
    let name = match &principal {
        Principal::Session { session, .. } => key_name(&state.config, session, provider),
        Principal::Planner { .. } => &state.config.default_key_name,
    };
    let team = principal.team();
    let session_id = principal.session_id();
    let (key, secret) = state
        .keys
        .reveal(team, provider, name)
        .await
        .map_err(failed)?;
    let mut url = format!("{}{}", upstream.base_url.trim_end_matches('/'), api.path());
    if let Some(query) = uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let mut out_headers = forward::request_headers(headers);
    let auth = if provider == "anthropic" {
        ("x-api-key", HeaderValue::from_str(secret.expose()))
    } else {
        (
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", secret.expose())),
        )
    };
    let mut auth_value = auth.1.map_err(|_| {
        refuse(
            StatusCode::FORBIDDEN,
            format!("provider key {} is not a valid header value", key.id),
        )
    })?;
    auth_value.set_sensitive(true);
    out_headers.insert(auth.0, auth_value);
    drop(secret);

    let response = state
        .client
        .post(url)
        .headers(out_headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(session_id = ?session_id, team_id = %team, provider, error = %e.without_url(), "LLM upstream unreachable");
            refuse(
                StatusCode::BAD_GATEWAY,
                format!("the `{provider}` upstream cannot be reached"),
            )
        })?;
    let status = response.status();
    let response_headers = forward::response_headers(response.headers());
    let sse = response_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    tracing::debug!(session_id = ?session_id, team_id = %team, api = api.as_str(), %model, status = status.as_u16(), "LLM request forwarded");

    let record = Recorder {
        team,
        sessions: state.sessions.clone(),
        prices: state.config.prices.clone(),
        session: session_id,
        api,
        model,
    };
    let metered = forward::MeteredBody::new(
        response.bytes_stream(),
        Meter::new(api, sse),
        move |tokens| record.spawn(tokens),
    );
    let mut out = Response::new(Body::from_stream(metered));
    *out.status_mut() = status;
    *out.headers_mut() = response_headers;
    Ok(out)
}

/// Records one call's usage once its response ended: in the team's metrics, and in
/// its session's log (a planning call has none: it is logged).
struct Recorder {
    team: TeamId,
    sessions: Sessions,
    prices: std::collections::BTreeMap<String, crate::config::ModelPrice>,
    session: Option<SessionId>,
    api: Api,
    model: String,
}

impl Recorder {
    fn spawn(self, tokens: Option<Tokens>) {
        let Some(tokens) = tokens else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let usage = Usage {
            input_tokens: tokens.input,
            output_tokens: tokens.output,
            cost_micro_usd: meter::price(&self.prices, &self.model, tokens),
        };
        let team = self.team.to_string();
        let api = self.api.as_str();
        metrics::counter!(TOKENS, "team" => team.clone(), "api" => api, "direction" => "input")
            .increment(usage.input_tokens);
        metrics::counter!(TOKENS, "team" => team.clone(), "api" => api, "direction" => "output")
            .increment(usage.output_tokens);
        metrics::counter!(COST, "team" => team).increment(usage.cost_micro_usd);
        let Some(session) = self.session else {
            tracing::info!(
                team_id = %self.team,
                api,
                model = %self.model,
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                cost_micro_usd = usage.cost_micro_usd,
                "planning call metered"
            );
            return;
        };
        runtime.spawn(async move {
            let raw = serde_json::json!({
                "source": "llm_proxy",
                "api": self.api.as_str(),
                "model": self.model,
            })
            .to_string();
            if let Err(error) = self.sessions.record_usage(session, usage, raw).await {
                tracing::error!(session_id = %session, error = %error, "cannot record LLM usage");
            }
        });
    }
}
