//! Request tracing for servers and clients: [`ServerTraceLayer`] opens a server span per
//! HTTP or gRPC request continuing the caller's `traceparent`; [`TraceContextInterceptor`]
//! sends the current span's context with every gRPC call a client makes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;

use crate::propagation::{extract_headers, inject_metadata, set_parent};

/// A tower layer for axum routers and tonic servers: each request runs inside an INFO
/// span (`otel.kind = server`) whose parent is the remote span from the request's
/// `traceparent` header (gRPC metadata travels as HTTP/2 headers).
///
/// gRPC requests (content type `application/grpc…`) are named after their method
/// (`grpc.health.v1.Health/Check`) and carry `rpc.*` attributes; other requests are
/// named `HTTP <method>` and carry `http.*`/`url.path` attributes.
#[derive(Debug, Clone, Default)]
pub struct ServerTraceLayer {
    skip_prefixes: Arc<[String]>,
}

impl ServerTraceLayer {
    /// A layer tracing every request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests whose path starts with one of `prefixes` (health probes, metrics
    /// scrapes) pass through without a span.
    pub fn skip_paths<I, P>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.skip_prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }
}

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace {
            inner,
            skip_prefixes: self.skip_prefixes.clone(),
        }
    }
}

/// The service [`ServerTraceLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
    skip_prefixes: Arc<[String]>,
}

fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

fn request_span<B>(req: &http::Request<B>) -> Span {
    let path = req.uri().path();
    let span = if is_grpc(req) {
        let method = path.trim_start_matches('/');
        let (service, rpc) = method.split_once('/').unwrap_or((method, ""));
        tracing::info_span!(
            "grpc.request",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %rpc,
            rpc.grpc.status_code = Empty,
        )
    } else {
        tracing::info_span!(
            "http.request",
            otel.name = %format_args!("HTTP {}", req.method()),
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %req.method(),
            url.path = %path,
            http.response.status_code = Empty,
        )
    };
    set_parent(&span, extract_headers(req.headers()));
    span
}

impl<S, B, ResBody> Service<http::Request<B>> for ServerTrace<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ServerTraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if self
            .skip_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
        {
            return ServerTraceFuture {
                inner: self.inner.call(req),
                span: None,
            };
        }
        let span = request_span(&req);
        let inner = span.in_scope(|| self.inner.call(req));
        ServerTraceFuture {
            inner,
            span: Some(span),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ServerTrace`]: polls the handler inside the request
    /// span and records the response status on it.
    pub struct ServerTraceFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
    }
}

impl<F, ResBody, E> Future for ServerTraceFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(span) = this.span.as_ref() else {
            return this.inner.poll(cx);
        };
        let _entered = span.enter();
        let result = std::task::ready!(this.inner.poll(cx));
        match &result {
            Ok(resp) => record_response(span, resp),
            Err(_) => {
                span.record("otel.status_code", "error");
            }
        }
        Poll::Ready(result)
    }
}

fn record_response<B>(span: &Span, resp: &http::Response<B>) {
    let status = resp.status();
    span.record("http.response.status_code", status.as_u16());
    // A gRPC error without a body ends in a trailers-only response: the status is in
    // the headers. Statuses sent in trailers are not visible here.
    let grpc_status = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    if let Some(code) = grpc_status {
        span.record("rpc.grpc.status_code", code);
    }
    if status.is_server_error() || grpc_status.is_some_and(|c| c != 0) {
        span.record("otel.status_code", "error");
    }
}

/// A tonic client interceptor that writes the current span's trace context into each
/// call's metadata: `FooClient::with_interceptor(channel, TraceContextInterceptor)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_metadata(req.metadata_mut());
        Ok(req)
    }
}
