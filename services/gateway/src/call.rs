//! [`Ctx`]: what a route handler knows about its request — the verified caller, the
//! token to forward, the trace — and how it calls an internal service with them.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use godel_error::Error;
use godel_identity::{Caller, Permission};
use godel_types::TeamId;
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::authn::Authenticated;
use crate::pipeline::{RequestMeta, status_problem};
use crate::state::AppState;

/// The authenticated request, for handlers behind [`crate::pipeline::guard`].
pub(crate) struct Ctx {
    pub(crate) state: AppState,
    who: Arc<Authenticated>,
    meta: Option<RequestMeta>,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let who = parts
            .extensions
            .get::<Arc<Authenticated>>()
            .cloned()
            .ok_or_else(|| Error::internal("route served without authentication"))?;
        Ok(Self {
            state: state.clone(),
            who,
            meta: parts.extensions.get::<RequestMeta>().cloned(),
        })
    }
}

impl Ctx {
    pub(crate) fn caller(&self) -> &Caller {
        &self.who.caller
    }

    /// Refuses callers without `permission` in `team` (403, no data); the services
    /// check again on what they own.
    pub(crate) fn require(&self, team: TeamId, permission: Permission) -> Result<(), Error> {
        self.who.caller.require(team, permission)
    }

    /// A gRPC request carrying the caller's access token, the trace context and the
    /// upstream deadline.
    pub(crate) fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Error> {
        let mut request = self.stream_request(message)?;
        request.set_timeout(self.state.upstream_timeout);
        Ok(request)
    }

    /// A gRPC request like [`Ctx::request`] but without the upstream deadline: for a
    /// server stream that lasts as long as its subject (an event stream).
    pub(crate) fn stream_request<T>(&self, message: T) -> Result<tonic::Request<T>, Error> {
        let mut request = tonic::Request::new(message);
        godel_identity::attach_token(&mut request, &self.who.token)?;
        if let Some(meta) = &self.meta {
            godel_telemetry::propagation::inject_context_metadata(
                &meta.trace,
                request.metadata_mut(),
            );
            if let Ok(value) = meta.request_id.parse() {
                request
                    .metadata_mut()
                    .insert(crate::pipeline::REQUEST_ID, value);
            }
        }
        Ok(request)
    }
}

/// The problem for a failed upstream call.
pub(crate) fn upstream(status: tonic::Status) -> Error {
    Error::from_status(&status)
}

/// A JSON request body whose rejections (bad JSON, wrong content type, too large) are
/// problem documents.
pub(crate) struct Body<T>(pub(crate) T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let path = req.uri().path().to_owned();
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_problem(&rejection, &path)),
        }
    }
}

fn json_problem(rejection: &JsonRejection, path: &str) -> Response {
    status_problem(rejection.status(), rejection.body_text(), path).into_response()
}

/// A path id that is not of the expected kind: 404, as for an id that does not exist.
pub(crate) fn parse_path_id<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, Error> {
    text.parse()
        .map_err(|_| Error::not_found(format!("{what} `{text}`")))
}
