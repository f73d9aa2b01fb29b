//! RFC 9457 problem details built from an [`Error`], and (feature `axum`) the HTTP
//! responses that carry them.

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode};

/// Media type of a problem document.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Prefix of every problem `type` URI; the code's snake_case name follows.
const TYPE_PREFIX: &str = "urn:godel:problem:";

/// An RFC 9457 problem details document, with Godel's extension members `code`,
/// `field` and `retry_after_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:godel:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// The request path this occurrence is about, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The stable error code ([`ErrorCode::as_str`]).
    pub code: ErrorCode,
    /// The input field that is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before retrying (also sent as the `Retry-After` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl Problem {
    /// The problem document describing `error`.
    pub fn from_error(error: &Error) -> Self {
        Self {
            type_: format!("{TYPE_PREFIX}{}", error.code),
            title: error.code.title().to_owned(),
            status: error.code.http_status().as_u16(),
            detail: error.message.clone(),
            instance: None,
            code: error.code,
            field: error.field.clone(),
            retry_after_seconds: error.retry_after_seconds(),
        }
    }

    /// Sets the `instance` member (usually the request path).
    #[must_use]
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The error this problem describes (for clients of the public API).
    pub fn to_error(&self) -> Error {
        Error {
            code: self.code,
            message: self.detail.clone(),
            field: self.field.clone(),
            retry_after: self.retry_after_seconds.map(std::time::Duration::from_secs),
        }
    }

    /// The document as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and integers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl From<&Error> for Problem {
    fn from(error: &Error) -> Self {
        Self::from_error(error)
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        Self::from_error(&error)
    }
}

impl From<Problem> for Error {
    fn from(problem: Problem) -> Self {
        problem.to_error()
    }
}

#[cfg(feature = "axum")]
mod response {
    use axum::response::{IntoResponse, Response};
    use http::{HeaderValue, StatusCode, header};

    use super::{PROBLEM_CONTENT_TYPE, Problem};
    use crate::Error;

    impl IntoResponse for Problem {
        fn into_response(self) -> Response {
            let status =
                StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, self.to_json()).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
            );
            if let Some(seconds) = self.retry_after_seconds {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    }

    impl IntoResponse for Error {
        fn into_response(self) -> Response {
            Problem::from_error(&self).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn problem_from_error() {
        let error = Error::resource_exhausted("rate limit exceeded", Some(Duration::from_secs(12)))
            .with_field("team_id");
        let problem = Problem::from_error(&error).with_instance("/v1/tasks");
        assert_eq!(problem.type_, "urn:godel:problem:resource_exhausted");
        assert_eq!(problem.title, "Resource exhausted");
        assert_eq!(problem.status, 429);
        assert_eq!(problem.detail, "rate limit exceeded");
        assert_eq!(problem.retry_after_seconds, Some(12));
        let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:godel:problem:resource_exhausted",
                "title": "Resource exhausted",
                "status": 429,
                "detail": "rate limit exceeded",
                "instance": "/v1/tasks",
                "code": "resource_exhausted",
                "field": "team_id",
                "retry_after_seconds": 12
            })
        );
        assert_eq!(Error::from(problem), error);
    }

    #[test]
    fn optional_members_are_left_out() {
        let problem = Problem::from(Error::not_found("task tsk_1"));
        let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["code", "detail", "status", "title", "type"]);
        let back: Problem = serde_json::from_value(json).unwrap();
        assert_eq!(back, problem);
    }

    #[test]
    fn every_code_has_its_status() {
        for code in ErrorCode::ALL {
            let problem = Problem::from(Error::new(code, "x"));
            assert_eq!(problem.status, code.http_status().as_u16());
            assert_eq!(problem.code, code);
        }
    }

    #[cfg(feature = "axum")]
    mod axum_response {
        use axum::response::IntoResponse;

        use super::*;

        async fn body(response: axum::response::Response) -> serde_json::Value {
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }

        #[tokio::test]
        async fn error_answers_problem_json_with_retry_after() {
            let error = Error::resource_exhausted("slow down", Some(Duration::from_millis(2500)));
            let response = error.into_response();
            assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            assert_eq!(response.headers()["retry-after"], "3");
            let json = body(response).await;
            assert_eq!(json["code"], "resource_exhausted");
            assert_eq!(json["status"], 429);
            assert_eq!(json["detail"], "slow down");
        }

        #[tokio::test]
        async fn no_retry_after_header_without_a_hint() {
            let response = Error::invalid_argument("name", "must not be empty").into_response();
            assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);
            assert!(response.headers().get("retry-after").is_none());
            let json = body(response).await;
            assert_eq!(json["field"], "name");
        }
    }
}
