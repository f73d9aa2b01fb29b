//! What every `/v1` request goes through, outside in:
//!
//! 1. [`edge`] (every request): a request id (`X-Request-Id`, the client's when it is
//!    sane, else a new UUID) and a W3C trace context (the server span's, else the
//!    incoming `traceparent`, else a new trace) on the request and the response, and
//!    every error response turned into `application/problem+json`;
//! 2. [`guard`] (every authenticated route, after routing): authentication, the rate
//!    limit, and one audit record of the call whatever its outcome.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use godel_error::{Error, ErrorCode, PROBLEM_CONTENT_TYPE, Problem};
use godel_proto::audit::v1::{AuditRecord, Outcome};
use godel_proto::common::v1::{Caller as PbCaller, SubjectKind};
use godel_types::AuditRecordId;
use http::{HeaderValue, Method, StatusCode, header};
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use crate::authn::Authenticated;
use crate::state::AppState;

/// The request id header, read and echoed.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// The request's id and trace, for handlers (forwarded to the services) and the audit.
#[derive(Clone)]
pub(crate) struct RequestMeta {
    pub(crate) request_id: String,
    pub(crate) trace: Context,
    pub(crate) trace_id: String,
}

/// Layer 1: request id, trace context, problem+json for every error.
pub(crate) async fn edge(mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let trace = request_trace(req.headers());
    let trace_id = trace.span().span_context().trace_id().to_string();
    let path = req.uri().path().to_owned();
    req.extensions_mut().insert(RequestMeta {
        request_id: request_id.clone(),
        trace: trace.clone(),
        trace_id,
    });
    let response = next.run(req).await;
    let mut response = problem_for(response, &path).await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID, value);
    }
    godel_telemetry::propagation::inject_context_headers(&trace, headers);
    if headers.get("tracestate").is_some_and(HeaderValue::is_empty) {
        headers.remove("tracestate");
    }
    response
}

/// The trace this request belongs to: the server span's, the caller's, or a new one.
fn request_trace(headers: &http::HeaderMap) -> Context {
    let current = godel_telemetry::propagation::current_context();
    if current.span().span_context().is_valid() {
        return current;
    }
    let incoming = godel_telemetry::propagation::extract_headers(headers);
    if incoming.span().span_context().is_valid() {
        return incoming;
    }
    let trace = uuid::Uuid::new_v4().as_u128().to_be_bytes();
    let span = uuid::Uuid::new_v4().as_u128().to_be_bytes();
    let mut span_id = [0u8; 8];
    span_id.copy_from_slice(&span[..8]);
    let sc = SpanContext::new(
        TraceId::from_bytes(trace),
        SpanId::from_bytes(span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(sc)
}

/// An error response that is not problem+json already (axum's own 404, 405, 413 …)
/// replaced by the problem document for its status.
async fn problem_for(response: Response, path: &str) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_CONTENT_TYPE.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).trim().to_owned();
    status_problem(status, detail, path).into_response()
}

/// The problem document for a bare HTTP status.
pub(crate) fn status_problem(status: StatusCode, detail: String, path: &str) -> Problem {
    let code = match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthenticated,
        StatusCode::FORBIDDEN => ErrorCode::PermissionDenied,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::CONFLICT => ErrorCode::Conflict,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => ErrorCode::DeadlineExceeded,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::InvalidArgument,
    };
    let detail = if detail.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        detail
    };
    let mut problem = Problem::from_error(&Error::new(code, detail)).with_instance(path);
    // Keep the precise status (405, 413, 415 …) the code alone would not give.
    problem.status = status.as_u16();
    problem
}

/// Layer 2: authentication, rate limit and the audit record of the call.
pub(crate) async fn guard(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let template = matched
        .as_ref()
        .map_or(path.as_str(), MatchedPath::as_str)
        .to_owned();
    let meta = req.extensions().get::<RequestMeta>().cloned();
    let call = CallFacts {
        action: action_of(&method, &template),
        resource: path.clone(),
        team: team_in_path(&path),
        client_ip: client_ip(&req, state.trust_forwarded_for),
        meta,
    };
    // An address that failed to authenticate too often gets no more API-key checks
    // (each one a call to auth) until its budget recovers.
    if let Some(wait) = state.limiter.blocked_for(&call.client_ip)
        && crate::authn::presents_api_key(req.headers())
    {
        let retry = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let error = Error::resource_exhausted(
            "too many failed authentications from this address; retry later",
            Some(Duration::from_secs(retry.max(1))),
        );
        let response = Problem::from_error(&error)
            .with_instance(&path)
            .into_response();
        state.audit.record(call.record(None, response.status()));
        return response;
    }
    let authenticated = match state.authn.authenticate(&method, req.headers()).await {
        Ok(a) => a,
        Err(error) => {
            if error.code == ErrorCode::Unauthenticated {
                state.limiter.failed_authentication(&call.client_ip).await;
            }
            let response = Problem::from_error(&error)
                .with_instance(&path)
                .into_response();
            state.audit.record(call.record(None, response.status()));
            return response;
        }
    };
    let decision = match state.limiter.check(&authenticated).await {
        Ok(decision) => decision,
        Err(error) => {
            let response = Problem::from_error(&error)
                .with_instance(&path)
                .into_response();
            state
                .audit
                .record(call.record(Some(&authenticated), response.status()));
            return response;
        }
    };
    if let Some(decision) = decision.filter(|d| !d.allowed) {
        let mut response = Problem::from_error(&decision.error())
            .with_instance(&path)
            .into_response();
        decision.write_headers(response.headers_mut());
        state
            .audit
            .record(call.record(Some(&authenticated), response.status()));
        return response;
    }
    req.extensions_mut().insert(Arc::new(authenticated.clone()));
    let mut response = next.run(req).await;
    if let Some(decision) = decision {
        decision.write_headers(response.headers_mut());
    }
    state
        .audit
        .record(call.record(Some(&authenticated), response.status()));
    response
}

/// What the audit record of a call says apart from who made it and how it ended.
struct CallFacts {
    action: String,
    resource: String,
    team: Option<String>,
    client_ip: String,
    meta: Option<RequestMeta>,
}

impl CallFacts {
    fn record(&self, who: Option<&Authenticated>, status: StatusCode) -> AuditRecord {
        let outcome = match status {
            s if s.is_success() || s.is_redirection() => Outcome::Success,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => {
                Outcome::Denied
            }
            _ => Outcome::Failure,
        };
        let actor = who.map(|a| PbCaller {
            subject_kind: match a.caller.principal.kind() {
                godel_identity::PrincipalKind::User => SubjectKind::User,
                godel_identity::PrincipalKind::ApiKey => SubjectKind::ApiKey,
            } as i32,
            subject_id: a.caller.principal.to_string(),
            team_id: a.caller.team.map(|t| t.to_string()).unwrap_or_default(),
            roles: a.caller.org_roles.iter().map(ToString::to_string).collect(),
        });
        let (request_id, trace_id) = self
            .meta
            .as_ref()
            .map(|m| (m.request_id.clone(), m.trace_id.clone()))
            .unwrap_or_default();
        AuditRecord {
            id: AuditRecordId::new().to_string(),
            occurred_at: Some(godel_proto::convert::to_timestamp(chrono::Utc::now())),
            team_id: self.team.clone().unwrap_or_default(),
            actor,
            action: self.action.clone(),
            resource: self.resource.clone(),
            outcome: outcome as i32,
            trace_id,
            client_ip: self.client_ip.clone(),
            details_json: serde_json::json!({
                "http_status": status.as_u16(),
                "request_id": request_id,
            })
            .to_string(),
            ..Default::default()
        }
    }
}

/// The audit action of a route: `<resource>.<verb>`.
fn action_of(method: &Method, template: &str) -> String {
    crate::routes::ACTIONS
        .iter()
        .find(|(m, path, _)| *m == method.as_str() && *path == template)
        .map_or_else(
            || format!("api.{}", method.as_str().to_ascii_lowercase()),
            |(_, _, action)| (*action).to_owned(),
        )
}

/// The `team_…` of a `/v1/teams/{team_id}/…` path.
fn team_in_path(path: &str) -> Option<String> {
    path.strip_prefix("/v1/teams/")
        .and_then(|rest| rest.split('/').next())
        .filter(|team| team.starts_with("team_"))
        .map(str::to_owned)
}

/// The client's address: the first `X-Forwarded-For` hop when the load balancer in
/// front is trusted to set it (`api.trust_forwarded_for`), else the peer of the
/// connection; empty when unknown.
fn client_ip(req: &Request, trust_forwarded_for: bool) -> String {
    let forwarded = trust_forwarded_for
        .then(|| req.headers())
        .and_then(|h| h.get("x-forwarded-for"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    forwarded
        .or_else(|| {
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip().to_string())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teams_are_read_from_team_scoped_paths_only() {
        assert_eq!(
            team_in_path("/v1/teams/team_abc/tasks").as_deref(),
            Some("team_abc")
        );
        assert_eq!(team_in_path("/v1/teams").as_deref(), None);
        assert_eq!(team_in_path("/v1/me").as_deref(), None);
    }
}
