//! The access token in gRPC metadata: `authorization: Bearer <token>`.
//!
//! Server side, either verify in the handler
//! (`verifier.verify_request(&request).await?`), or wrap the whole server in a
//! [`CallerLayer`], which verifies once per call and leaves the outcome in the
//! request's extensions for [`caller_from_request`]:
//!
//! ```ignore
//! let server = CallerLayer::new(verifier).layer(SchedulerServiceServer::new(handler));
//! // in a handler:
//! let caller = godel_identity::caller_from_request(&request)?;
//! caller.require(team, Permission::TasksCreate)?;
//! ```
//!
//! Client side, [`attach_token`] or a [`BearerInterceptor`] puts a token on
//! outgoing calls; a service calling another on a caller's behalf forwards the
//! caller's token ([`forward_token`]).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use godel_error::Error;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Request, Status};

use crate::caller::Caller;
use crate::token::VerifyError;
use crate::verifier::CallerVerifier;

/// The metadata key the token travels in.
pub const AUTHORIZATION: &str = "authorization";
const BEARER: &str = "Bearer ";

/// The token in `authorization: Bearer <token>`, if the metadata has one. Any other
/// shape of the header is malformed.
pub fn bearer_token(metadata: &MetadataMap) -> Result<Option<&str>, VerifyError> {
    let Some(value) = metadata.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| VerifyError::Malformed)?;
    let token = text
        .get(..BEARER.len())
        .filter(|scheme| scheme.eq_ignore_ascii_case(BEARER))
        .map(|_| text[BEARER.len()..].trim())
        .filter(|t| !t.is_empty())
        .ok_or(VerifyError::Malformed)?;
    Ok(Some(token))
}

impl CallerVerifier {
    /// Verifies the token in the request's metadata: the caller, or
    /// `UNAUTHENTICATED` (`UNAVAILABLE` when the keys cannot be had).
    pub async fn verify_request<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.verify_metadata(request.metadata())
            .await
            .map_err(Status::from)
    }

    /// Verifies the token in `metadata`.
    pub async fn verify_metadata(&self, metadata: &MetadataMap) -> Result<Caller, VerifyError> {
        let token = bearer_token(metadata)?.ok_or(VerifyError::Missing)?;
        self.verify(token).await
    }
}

/// What [`CallerLayer`] found, stored in the request's extensions.
#[derive(Debug, Clone)]
struct Verified(Result<Caller, VerifyError>);

/// The caller [`CallerLayer`] verified for this request, or why there is none
/// (`UNAUTHENTICATED`; `UNAVAILABLE` when the keys cannot be had). Public RPCs
/// simply do not call it.
pub fn caller_from_request<T>(request: &Request<T>) -> Result<Caller, Status> {
    match request.extensions().get::<Verified>() {
        Some(Verified(Ok(caller))) => Ok(caller.clone()),
        Some(Verified(Err(e))) => Err(e.clone().into()),
        None => {
            tracing::error!("caller_from_request on a server without CallerLayer");
            Err(Error::internal("caller verification is not installed on this server").into())
        }
    }
}

/// A tower layer for a tonic server: verifies each call's token (when it has one)
/// before the handler runs, for [`caller_from_request`].
#[derive(Debug, Clone)]
pub struct CallerLayer {
    verifier: CallerVerifier,
}

impl CallerLayer {
    pub fn new(verifier: CallerVerifier) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for CallerLayer {
    type Service = WithCaller<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithCaller {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// A service wrapped by [`CallerLayer`]. Keeps the inner service's gRPC name.
#[derive(Debug, Clone)]
pub struct WithCaller<S> {
    inner: S,
    verifier: CallerVerifier,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for WithCaller<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for WithCaller<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; take the ready one and leave the clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let metadata = MetadataMap::from_headers(request.headers().clone());
            let outcome = verifier.verify_metadata(&metadata).await;
            if let Err(e @ VerifyError::KeysUnavailable) = &outcome {
                tracing::warn!(error = %e, "cannot verify a caller");
            }
            request.extensions_mut().insert(Verified(outcome));
            inner.call(request).await
        })
    }
}

/// The metadata value `Bearer <token>`; a token that cannot travel as ASCII
/// metadata is `invalid_argument`.
fn bearer_value(token: &str) -> Result<AsciiMetadataValue, Error> {
    let invalid =
        || Error::invalid_argument(AUTHORIZATION, "an access token must be visible ASCII");
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    AsciiMetadataValue::try_from(format!("{BEARER}{token}")).map_err(|_| invalid())
}

/// Sends `token` with `request` (`authorization: Bearer <token>`).
pub fn attach_token<T>(request: &mut Request<T>, token: &str) -> Result<(), Error> {
    request
        .metadata_mut()
        .insert(AUTHORIZATION, bearer_value(token)?);
    Ok(())
}

/// Sends the token `incoming` came with on `outgoing` too, so the next service sees
/// the same caller. Does nothing when `incoming` has no token.
pub fn forward_token<A, B>(incoming: &Request<A>, outgoing: &mut Request<B>) {
    if let Some(value) = incoming.metadata().get(AUTHORIZATION) {
        outgoing.metadata_mut().insert(AUTHORIZATION, value.clone());
    }
}

/// A client interceptor sending one token with every call:
/// `AuthServiceClient::with_interceptor(channel, BearerInterceptor::new(&token)?)`.
#[derive(Debug, Clone)]
pub struct BearerInterceptor {
    value: AsciiMetadataValue,
}

impl BearerInterceptor {
    pub fn new(token: &str) -> Result<Self, Error> {
        Ok(Self {
            value: bearer_value(token)?,
        })
    }
}

impl tonic::service::Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(AUTHORIZATION, self.value.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_read_back_and_other_schemes_are_malformed() {
        let mut request = Request::new(());
        assert_eq!(bearer_token(request.metadata()), Ok(None));
        attach_token(&mut request, "abc.def.ghi").unwrap();
        assert_eq!(bearer_token(request.metadata()), Ok(Some("abc.def.ghi")));

        let mut forwarded = Request::new(());
        forward_token(&request, &mut forwarded);
        assert_eq!(bearer_token(forwarded.metadata()), Ok(Some("abc.def.ghi")));

        for bad in ["Basic abc", "Bearer ", "abc.def.ghi", "Bearer"] {
            let mut r = Request::new(());
            r.metadata_mut().insert(AUTHORIZATION, bad.parse().unwrap());
            assert_eq!(
                bearer_token(r.metadata()),
                Err(VerifyError::Malformed),
                "{bad}"
            );
        }
        let mut lower = Request::new(());
        lower
            .metadata_mut()
            .insert(AUTHORIZATION, "bearer t".parse().unwrap());
        assert_eq!(bearer_token(lower.metadata()), Ok(Some("t")));
        for bad in ["tök", "a b", "a\nb", ""] {
            assert!(attach_token(&mut Request::new(()), bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn without_the_layer_there_is_no_caller() {
        let err = caller_from_request(&Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
    }
}
