//! [`ErrorCode`] and its gRPC and HTTP mappings.

use std::fmt;
use std::str::FromStr;

use http::StatusCode;

/// What kind of failure an [`Error`](crate::Error) is; decides the gRPC code and the
/// HTTP status the error is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or a field holds a value that is never acceptable.
    InvalidArgument,
    /// The addressed resource does not exist (or the caller may not know it exists).
    NotFound,
    /// A resource with the same identity (id, name, idempotency key) already exists.
    AlreadyExists,
    /// The request conflicts with a concurrent change of the same resource; re-read and
    /// retry.
    Conflict,
    /// The resource is not in a state the operation needs (for example a stale epoch,
    /// or cancelling a finished task); retrying the same request will not help.
    FailedPrecondition,
    /// The caller is known but lacks the permission.
    PermissionDenied,
    /// The caller is not authenticated (missing, expired or invalid credentials).
    Unauthenticated,
    /// A quota, rate limit or capacity is exhausted; retry later (see `retry_after`).
    ResourceExhausted,
    /// A dependency or the service itself is unavailable; retry with backoff.
    Unavailable,
    /// The operation was cancelled, usually by the caller.
    Cancelled,
    /// The deadline passed before the operation finished.
    DeadlineExceeded,
    /// The operation was aborted (for example a transaction conflict); retry.
    Aborted,
    /// A bug or an unexpected failure; details are in the service's logs, not here.
    Internal,
}

/// HTTP 499 "client closed request", which `http` has no constant for.
const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 13] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::AlreadyExists,
        Self::Conflict,
        Self::FailedPrecondition,
        Self::PermissionDenied,
        Self::Unauthenticated,
        Self::ResourceExhausted,
        Self::Unavailable,
        Self::Cancelled,
        Self::DeadlineExceeded,
        Self::Aborted,
        Self::Internal,
    ];

    /// The gRPC status code this error is sent with.
    pub const fn grpc_code(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::Conflict | Self::Aborted => tonic::Code::Aborted,
            Self::FailedPrecondition => tonic::Code::FailedPrecondition,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::ResourceExhausted => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Cancelled => tonic::Code::Cancelled,
            Self::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status this error is answered with on the public API.
    pub const fn http_status(self) -> StatusCode {
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::Conflict | Self::FailedPrecondition | Self::Aborted => {
                StatusCode::CONFLICT
            }
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Cancelled => CLIENT_CLOSED_REQUEST,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable snake_case name, used in problem details, metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::Conflict => "conflict",
            Self::FailedPrecondition => "failed_precondition",
            Self::PermissionDenied => "permission_denied",
            Self::Unauthenticated => "unauthenticated",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Unavailable => "unavailable",
            Self::Cancelled => "cancelled",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Aborted => "aborted",
            Self::Internal => "internal",
        }
    }

    /// A short human title (the `title` of a problem document).
    pub const fn title(self) -> &'static str {
        match self {
            Self::InvalidArgument => "Invalid argument",
            Self::NotFound => "Not found",
            Self::AlreadyExists => "Already exists",
            Self::Conflict => "Conflict",
            Self::FailedPrecondition => "Failed precondition",
            Self::PermissionDenied => "Permission denied",
            Self::Unauthenticated => "Unauthenticated",
            Self::ResourceExhausted => "Resource exhausted",
            Self::Unavailable => "Unavailable",
            Self::Cancelled => "Cancelled",
            Self::DeadlineExceeded => "Deadline exceeded",
            Self::Aborted => "Aborted",
            Self::Internal => "Internal error",
        }
    }

    /// The code a bare gRPC status code stands for, when nothing more precise is known.
    ///
    /// `ABORTED` reads back as [`ErrorCode::Aborted`] (a [`ErrorCode::Conflict`] is told
    /// apart by the `godel-code` metadata, see [`Error::from_status`](crate::Error::from_status));
    /// codes Godel never sends map to the nearest one.
    pub const fn from_grpc_code(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Self::InvalidArgument,
            tonic::Code::NotFound => Self::NotFound,
            tonic::Code::AlreadyExists => Self::AlreadyExists,
            tonic::Code::Aborted => Self::Aborted,
            tonic::Code::FailedPrecondition => Self::FailedPrecondition,
            tonic::Code::PermissionDenied => Self::PermissionDenied,
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            tonic::Code::ResourceExhausted => Self::ResourceExhausted,
            tonic::Code::Unavailable => Self::Unavailable,
            tonic::Code::Cancelled => Self::Cancelled,
            tonic::Code::DeadlineExceeded => Self::DeadlineExceeded,
            tonic::Code::Ok
            | tonic::Code::Unknown
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::DataLoss => Self::Internal,
        }
    }

    /// True when the same request may succeed if sent again later.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Conflict
                | Self::ResourceExhausted
                | Self::Unavailable
                | Self::DeadlineExceeded
                | Self::Aborted
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not the name of an [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a known error code")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_and_http_mappings() {
        use tonic::Code;
        let expected = [
            (ErrorCode::InvalidArgument, Code::InvalidArgument, 400),
            (ErrorCode::NotFound, Code::NotFound, 404),
            (ErrorCode::AlreadyExists, Code::AlreadyExists, 409),
            (ErrorCode::Conflict, Code::Aborted, 409),
            (ErrorCode::FailedPrecondition, Code::FailedPrecondition, 409),
            (ErrorCode::PermissionDenied, Code::PermissionDenied, 403),
            (ErrorCode::Unauthenticated, Code::Unauthenticated, 401),
            (ErrorCode::ResourceExhausted, Code::ResourceExhausted, 429),
            (ErrorCode::Unavailable, Code::Unavailable, 503),
            (ErrorCode::Cancelled, Code::Cancelled, 499),
            (ErrorCode::DeadlineExceeded, Code::DeadlineExceeded, 504),
            (ErrorCode::Aborted, Code::Aborted, 409),
            (ErrorCode::Internal, Code::Internal, 500),
        ];
        assert_eq!(expected.len(), ErrorCode::ALL.len());
        for (code, grpc, http) in expected {
            assert_eq!(code.grpc_code(), grpc, "{code}");
            assert_eq!(code.http_status().as_u16(), http, "{code}");
        }
    }

    #[test]
    fn names_are_stable_snake_case_and_parse_back() {
        let names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "invalid_argument",
                "not_found",
                "already_exists",
                "conflict",
                "failed_precondition",
                "permission_denied",
                "unauthenticated",
                "resource_exhausted",
                "unavailable",
                "cancelled",
                "deadline_exceeded",
                "aborted",
                "internal",
            ]
        );
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), code);
            assert_eq!(code.to_string(), code.as_str());
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(
            "NotFound".parse::<ErrorCode>(),
            Err(UnknownErrorCode("NotFound".into()))
        );
    }

    #[test]
    fn bare_grpc_codes_read_back() {
        for code in ErrorCode::ALL {
            let back = ErrorCode::from_grpc_code(code.grpc_code());
            // Conflict shares ABORTED with Aborted; everything else is one-to-one.
            let expected = if code == ErrorCode::Conflict {
                ErrorCode::Aborted
            } else {
                code
            };
            assert_eq!(back, expected);
        }
        assert_eq!(
            ErrorCode::from_grpc_code(tonic::Code::Unknown),
            ErrorCode::Internal
        );
        assert_eq!(
            ErrorCode::from_grpc_code(tonic::Code::Unimplemented),
            ErrorCode::Internal
        );
        assert_eq!(
            ErrorCode::from_grpc_code(tonic::Code::OutOfRange),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn retryable_codes() {
        assert!(ErrorCode::Unavailable.is_retryable());
        assert!(ErrorCode::ResourceExhausted.is_retryable());
        assert!(!ErrorCode::InvalidArgument.is_retryable());
        assert!(!ErrorCode::FailedPrecondition.is_retryable());
        assert!(!ErrorCode::Internal.is_retryable());
    }
}
