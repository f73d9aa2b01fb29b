//! The provider APIs the proxy serves, and errors in each API's own shape (so an
//! agent shows the message instead of failing to parse it).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An endpoint of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens` (forwarded, not metered).
    CountTokens,
}

impl Api {
    /// The path, as agents call it and as forwarded upstream.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Responses => "/v1/responses",
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// The provider whose key and upstream serve it.
    pub fn provider(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Responses => "openai",
            Self::Messages | Self::CountTokens => "anthropic",
        }
    }

    /// The name recorded with metered usage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Responses => "responses",
            Self::Messages => "messages",
            Self::CountTokens => "count_tokens",
        }
    }

    fn is_anthropic(self) -> bool {
        self.provider() == "anthropic"
    }
}

/// A refusal or failure of the proxy itself, answered in `api`'s error shape:
/// OpenAI `{"error": {"message", "type", "param", "code"}}`, Anthropic
/// `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub api: Api,
    pub status: StatusCode,
    pub message: String,
}

impl ProxyError {
    pub fn new(api: Api, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            api,
            status,
            message: message.into(),
        }
    }

    /// The error's type (and, for OpenAI, its code) by status, as the provider
    /// names them.
    fn kinds(&self) -> (&'static str, &'static str) {
        let anthropic = self.api.is_anthropic();
        match self.status {
            StatusCode::UNAUTHORIZED if anthropic => ("authentication_error", ""),
            StatusCode::UNAUTHORIZED => ("invalid_request_error", "invalid_api_key"),
            StatusCode::PAYMENT_REQUIRED if anthropic => ("billing_error", ""),
            StatusCode::PAYMENT_REQUIRED => ("insufficient_quota", "budget_exhausted"),
            StatusCode::FORBIDDEN => ("permission_error", "permission_denied"),
            StatusCode::NOT_FOUND if anthropic => ("not_found_error", ""),
            StatusCode::NOT_FOUND => ("invalid_request_error", "not_found"),
            StatusCode::PAYLOAD_TOO_LARGE if anthropic => ("request_too_large", ""),
            s if s.is_client_error() => ("invalid_request_error", "invalid_request"),
            _ if anthropic => ("api_error", ""),
            _ => ("server_error", "proxy_error"),
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let (kind, code) = self.kinds();
        let body = if self.api.is_anthropic() {
            serde_json::json!({
                "type": "error",
                "error": { "type": kind, "message": self.message },
            })
        } else {
            serde_json::json!({
                "error": {
                    "message": self.message,
                    "type": kind,
                    "param": null,
                    "code": code,
                },
            })
        };
        (self.status, axum::Json(body)).into_response()
    }
}
