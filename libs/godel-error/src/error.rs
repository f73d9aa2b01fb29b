//! [`Error`], its constructors and its conversion to and from [`tonic::Status`].

use std::fmt;
use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};

use crate::ErrorCode;

/// gRPC metadata key carrying [`ErrorCode::as_str`], so codes that share a gRPC code
/// (`conflict` and `aborted`) survive a round trip.
pub const CODE_METADATA_KEY: &str = "godel-code";
/// gRPC metadata key naming the input field that is wrong.
pub const FIELD_METADATA_KEY: &str = "godel-field";
/// gRPC metadata key with the number of seconds to wait before retrying.
pub const RETRY_AFTER_METADATA_KEY: &str = "retry-after";

/// An error answered to a caller: a code, a message fit for the caller, and optionally
/// the input field at fault and how long to wait before retrying.
///
/// The message is shown to API clients: it never carries secrets or internal details
/// (log those where the error is handled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// What went wrong, for the caller.
    pub message: String,
    /// The input field that is wrong (for example `task.priority`), when one is.
    pub field: Option<String>,
    /// How long to wait before retrying, when known.
    pub retry_after: Option<Duration>,
}

impl Error {
    /// An error with `code` and `message`, no field and no retry hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// Field `field` holds an unacceptable value.
    pub fn invalid_argument(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message).with_field(field)
    }

    /// `what` (for example `task tsk_…`) does not exist.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// `what` (for example `team named "core"`) already exists.
    pub fn already_exists(what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::AlreadyExists, format!("{what} already exists"))
    }

    /// The request conflicts with a concurrent change.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// The resource is not in a state the operation needs.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }

    /// The caller lacks a permission.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    /// The caller is not authenticated.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    /// A quota or rate limit is exhausted; retry after `retry_after` when given.
    pub fn resource_exhausted(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            ..Self::new(ErrorCode::ResourceExhausted, message)
        }
    }

    /// A dependency or the service is unavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// The operation was cancelled.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Cancelled, message)
    }

    /// The deadline passed.
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::DeadlineExceeded, message)
    }

    /// The operation was aborted and may be retried.
    pub fn aborted(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Aborted, message)
    }

    /// An unexpected failure. Keep `message` generic; log the cause where it happened.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// Names the input field at fault.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Sets how long the caller should wait before retrying.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The retry hint in whole seconds, rounded up (a 200 ms hint is sent as 1 s).
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after.map(|d| {
            let secs = d.as_secs();
            if d.subsec_nanos() > 0 { secs + 1 } else { secs }
        })
    }

    /// Reads an error back from a gRPC status, using the metadata written by
    /// `From<Error> for tonic::Status` when present and the bare gRPC code otherwise.
    pub fn from_status(status: &tonic::Status) -> Self {
        let metadata = status.metadata();
        let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
        let code = text(CODE_METADATA_KEY)
            .and_then(|name| name.parse().ok())
            .unwrap_or_else(|| ErrorCode::from_grpc_code(status.code()));
        let field = text(FIELD_METADATA_KEY)
            .filter(|f| !f.is_empty())
            .map(str::to_owned);
        let retry_after = text(RETRY_AFTER_METADATA_KEY)
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Self {
            code,
            message: status.message().to_owned(),
            field,
            retry_after,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field `{field}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            CODE_METADATA_KEY,
            MetadataValue::from_static(error.code.as_str()),
        );
        // A field name that is not visible ASCII cannot travel as metadata; the message
        // still names it.
        if let Some(value) = error
            .field
            .as_deref()
            .filter(|f| f.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .and_then(|f| MetadataValue::try_from(f).ok())
        {
            metadata.insert(FIELD_METADATA_KEY, value);
        }
        if let Some(seconds) = error.retry_after_seconds() {
            metadata.insert(RETRY_AFTER_METADATA_KEY, MetadataValue::from(seconds));
        }
        tonic::Status::with_metadata(error.code.grpc_code(), error.message, metadata)
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

impl From<&tonic::Status> for Error {
    fn from(status: &tonic::Status) -> Self {
        Self::from_status(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_code_field_and_hint() {
        let e = Error::invalid_argument("task.priority", "must be between 1 and 100");
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(e.field.as_deref(), Some("task.priority"));
        assert_eq!(
            e.to_string(),
            "invalid_argument: must be between 1 and 100 (field `task.priority`)"
        );

        let e = Error::not_found("task tsk_1");
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::NotFound, "task tsk_1 not found")
        );
        let e = Error::already_exists("team \"core\"");
        assert_eq!(e.message, "team \"core\" already exists");

        let e = Error::resource_exhausted("rate limit", Some(Duration::from_millis(1500)));
        assert_eq!(e.code, ErrorCode::ResourceExhausted);
        assert_eq!(e.retry_after_seconds(), Some(2));
        assert_eq!(
            Error::internal("x")
                .with_retry_after(Duration::from_secs(3))
                .retry_after_seconds(),
            Some(3)
        );

        let pairs = [
            (Error::conflict("m"), ErrorCode::Conflict),
            (
                Error::failed_precondition("m"),
                ErrorCode::FailedPrecondition,
            ),
            (Error::permission_denied("m"), ErrorCode::PermissionDenied),
            (Error::unauthenticated("m"), ErrorCode::Unauthenticated),
            (Error::unavailable("m"), ErrorCode::Unavailable),
            (Error::cancelled("m"), ErrorCode::Cancelled),
            (Error::deadline_exceeded("m"), ErrorCode::DeadlineExceeded),
            (Error::aborted("m"), ErrorCode::Aborted),
            (Error::internal("m"), ErrorCode::Internal),
        ];
        for (error, code) in pairs {
            assert_eq!(error.code, code);
            assert_eq!(error.field, None);
            assert_eq!(error.retry_after, None);
        }
    }

    #[test]
    fn status_carries_field_and_retry_after_in_metadata() {
        let error = Error::resource_exhausted("team queue is full", Some(Duration::from_secs(30)))
            .with_field("team_id");
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "team queue is full");
        assert_eq!(status.metadata().get("retry-after").unwrap(), "30");
        assert_eq!(status.metadata().get("godel-field").unwrap(), "team_id");
        assert_eq!(
            status.metadata().get("godel-code").unwrap(),
            "resource_exhausted"
        );
    }

    #[test]
    fn every_code_round_trips_through_status() {
        for code in ErrorCode::ALL {
            let error = Error::new(code, format!("{code} happened"))
                .with_field("spec.repo.url")
                .with_retry_after(Duration::from_secs(7));
            let status = tonic::Status::from(error.clone());
            assert_eq!(status.code(), code.grpc_code());
            assert_eq!(Error::from_status(&status), error);
        }
        let plain = Error::not_found("plan pln_1");
        assert_eq!(Error::from(tonic::Status::from(plain.clone())), plain);
    }

    #[test]
    fn survives_the_wire_encoding_of_headers() {
        // What a client sees: the status rebuilt from HTTP/2 trailers.
        let error = Error::conflict("task changed meanwhile: ünïcode").with_field("task.epoch");
        let mut headers = http::HeaderMap::new();
        tonic::Status::from(error.clone())
            .add_header(&mut headers)
            .unwrap();
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(Error::from_status(&status), error);
    }

    #[test]
    fn reads_statuses_from_other_servers() {
        let status = tonic::Status::unimplemented("no such method");
        let error = Error::from_status(&status);
        assert_eq!(error.code, ErrorCode::Internal);
        assert_eq!(error.message, "no such method");
        assert_eq!(error.field, None);

        let mut metadata = MetadataMap::new();
        metadata.insert("retry-after", MetadataValue::from_static("soon"));
        metadata.insert("godel-code", MetadataValue::from_static("bogus"));
        let status = tonic::Status::with_metadata(tonic::Code::Unavailable, "down", metadata);
        let error = Error::from_status(&status);
        assert_eq!(error.code, ErrorCode::Unavailable);
        assert_eq!(error.retry_after, None);
    }

    #[test]
    fn non_ascii_field_is_dropped_from_metadata_only() {
        let status = tonic::Status::from(Error::invalid_argument("naïve", "bad"));
        assert!(status.metadata().get("godel-field").is_none());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
