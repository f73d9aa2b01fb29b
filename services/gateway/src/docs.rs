//! The interactive API docs page, `GET /v1/docs`: Swagger UI (`swagger-ui-dist`
//! 5.17.14, vendored under `assets/swagger-ui/`) on `/v1/openapi.json`. Every file is
//! compiled in and served by the gateway itself, so the page works offline; no
//! credential is needed to read it (calls made from it need one, entered under
//! "Authorize").

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};

const INDEX: &str = include_str!("../assets/swagger-ui/index.html");
const INIT: &str = include_str!("../assets/swagger-ui/init.js");
const BUNDLE: &str = include_str!("../assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &str = include_str!("../assets/swagger-ui/swagger-ui.css");

/// Only this origin's scripts and styles (Swagger UI sets inline styles and loads
/// its images as data URIs).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// The docs page and its assets.
pub(crate) fn router() -> Router {
    Router::new()
        .route(
            "/v1/docs",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/v1/docs/init.js",
            get(|| async { asset(INIT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/v1/docs/swagger-ui-bundle.js",
            get(|| async { asset(BUNDLE, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/v1/docs/swagger-ui.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
