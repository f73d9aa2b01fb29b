//! Godel's error vocabulary: one set of error codes, mapped once to gRPC status codes
//! and HTTP statuses.
//!
//! Services return [`Error`] from their gRPC handlers (it converts into a
//! [`tonic::Status`] that carries the wrong input field and a retry hint in metadata),
//! the gateway reads it back with [`Error::from_status`] and answers the public API
//! with an RFC 9457 [`Problem`] (`application/problem+json`), so a scheduler's
//! `RESOURCE_EXHAUSTED` reaches an HTTP client as `429` with a `Retry-After` header.

mod code;
mod error;
mod problem;

pub use code::{ErrorCode, UnknownErrorCode};
pub use error::{CODE_METADATA_KEY, Error, FIELD_METADATA_KEY, RETRY_AFTER_METADATA_KEY};
pub use problem::{PROBLEM_CONTENT_TYPE, Problem};

/// `error: cause: cause…` — an error and its sources on one line, for logs and for
/// messages stored with a resource.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Shorthand for results whose error is an [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
