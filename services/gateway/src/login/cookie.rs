//! The cookies of browser sign-in, read from `Cookie` and written as `Set-Cookie`.
//!
//! - [`LOGIN`]: the `state` of a sign-in in progress, binding the provider's
//!   callback to the browser that started it (`Path=/auth`, HttpOnly, minutes);
//! - [`SESSION`]: the opaque session id (HttpOnly): the session's tokens stay in
//!   the gateway's cache, never in the browser;
//! - [`CSRF`]: the session's CSRF token, readable by the page's scripts so they can
//!   echo it in `X-CSRF-Token` on requests that change state.
//!
//! All are `SameSite=Lax` (the provider's redirect back is a top-level GET, which
//! Lax lets through) and `Secure` unless `login.secure_cookies` is off.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

pub(crate) const LOGIN: &str = "godel_login";
pub(crate) const SESSION: &str = "godel_session";
pub(crate) const CSRF: &str = "godel_csrf";
/// The header that must echo the [`CSRF`] cookie.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// How a cookie is set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attributes {
    pub(crate) path: &'static str,
    pub(crate) http_only: bool,
    pub(crate) secure: bool,
}

/// A `Set-Cookie` value; `max_age` zero deletes the cookie.
pub(crate) fn set(name: &str, value: &str, max_age: Duration, at: Attributes) -> HeaderValue {
    let mut cookie = format!(
        "{name}={value}; Path={}; Max-Age={}; SameSite=Lax",
        at.path,
        max_age.as_secs()
    );
    if at.http_only {
        cookie.push_str("; HttpOnly");
    }
    if at.secure {
        cookie.push_str("; Secure");
    }
    // Names are constants and values base64url: always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value deleting cookie `name`.
pub(crate) fn clear(name: &str, at: Attributes) -> HeaderValue {
    set(name, "", Duration::ZERO, at)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name_and_written_with_their_attributes() {
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            "a=1; godel_session_x=no; godel_session=abc"
                .parse()
                .unwrap(),
        );
        headers.append(http::header::COOKIE, "godel_csrf=def".parse().unwrap());
        assert_eq!(read(&headers, SESSION), Some("abc"));
        assert_eq!(read(&headers, CSRF), Some("def"));
        assert_eq!(read(&headers, LOGIN), None);

        let at = Attributes {
            path: "/",
            http_only: true,
            secure: true,
        };
        assert_eq!(
            set(SESSION, "abc", Duration::from_secs(60), at),
            "godel_session=abc; Path=/; Max-Age=60; SameSite=Lax; HttpOnly; Secure"
        );
        let plain = Attributes {
            http_only: false,
            secure: false,
            ..at
        };
        assert_eq!(
            clear(CSRF, plain),
            "godel_csrf=; Path=/; Max-Age=0; SameSite=Lax"
        );
    }
}
