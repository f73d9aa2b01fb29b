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

/// Shorthand for results whose error is an [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
