//! Where sign-in may send a browser afterwards, and what a CLI may ask for.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use godel_error::Error;
use sha2::{Digest, Sha256};

/// `redirect_to` of `/auth/login`: a path on this gateway (open-redirect
/// protection). Refuses absolute and scheme-relative URLs (`https://…`, `//host`,
/// `/\host`), backslashes and control characters anywhere.
pub(crate) fn local_path(redirect_to: Option<&str>) -> Result<String, Error> {
    let Some(path) = redirect_to.filter(|p| !p.is_empty()) else {
        return Ok("/".to_owned());
    };
    let bad = || {
        Error::invalid_argument(
            "redirect_to",
            "`redirect_to` must be a path on this server, starting with a single `/`",
        )
    };
    let mut chars = path.chars();
    if chars.next() != Some('/') || matches!(chars.next(), Some('/' | '\\')) {
        return Err(bad());
    }
    if path.len() > 2048 || path.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(bad());
    }
    Ok(path.to_owned())
}

/// `redirect_uri` of `/auth/cli/begin`: a loopback URL of the CLI (RFC 8252 §7.3),
/// `http://127.0.0.1:<port>/<path>` or `http://[::1]:<port>/<path>`, without query
/// or fragment.
pub(crate) fn loopback(redirect_uri: &str) -> Result<(), Error> {
    let bad = || {
        Error::invalid_argument(
            "redirect_uri",
            "`redirect_uri` must be `http://127.0.0.1:<port>/<path>` or `http://[::1]:<port>/<path>`",
        )
    };
    let rest = ["http://127.0.0.1:", "http://[::1]:"]
        .iter()
        .find_map(|prefix| redirect_uri.strip_prefix(prefix))
        .ok_or_else(bad)?;
    let (port, path) = rest.split_at(rest.find('/').ok_or_else(bad)?);
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    let path_ok = path.len() <= 256
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
    if !path_ok {
        return Err(bad());
    }
    Ok(())
}

/// A client-chosen token (`state`) echoed back unchanged: 1-256 unreserved
/// characters, so it needs no escaping in a URL.
pub(crate) fn client_state(state: &str) -> Result<(), Error> {
    let ok = !state.is_empty()
        && state.len() <= 256
        && state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            "state",
            "`state` must be 1-256 characters of A-Z a-z 0-9 - . _ ~",
        ))
    }
}

/// A PKCE S256 code challenge (RFC 7636): 43 base64url characters.
pub(crate) fn code_challenge(challenge: &str, method: Option<&str>) -> Result<(), Error> {
    if method != Some("S256") {
        return Err(Error::invalid_argument(
            "code_challenge_method",
            "`code_challenge_method` must be `S256`",
        ));
    }
    let decoded = URL_SAFE_NO_PAD.decode(challenge).ok();
    if challenge.len() != 43 || decoded.map(|d| d.len()) != Some(32) {
        return Err(Error::invalid_argument(
            "code_challenge",
            "`code_challenge` must be the base64url (no padding) SHA-256 of the verifier",
        ));
    }
    Ok(())
}

/// The S256 challenge of `verifier`.
pub(crate) fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_redirect_targets() {
        assert_eq!(local_path(None).ok().as_deref(), Some("/"));
        assert_eq!(
            local_path(Some("/ui/tasks?x=1")).ok().as_deref(),
            Some("/ui/tasks?x=1")
        );
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "/ok\\..\\evil",
            "evil",
            "/a\nb",
            "javascript:alert(1)",
        ] {
            assert!(local_path(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_redirects_are_cli_targets() {
        assert!(loopback("http://127.0.0.1:4312/callback").is_ok());
        assert!(loopback("http://[::1]:80/").is_ok());
        for bad in [
            "http://127.0.0.1/callback",
            "http://127.0.0.1:0/callback",
            "http://127.0.0.1:80",
            "https://127.0.0.1:80/callback",
            "http://localhost:80/callback",
            "http://127.0.0.1.evil.example:80/callback",
            "http://127.0.0.1:80@evil.example/callback",
            "http://127.0.0.1:80/callback?x=1",
        ] {
            assert!(loopback(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pkce_challenges_are_s256() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = challenge_of(verifier);
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(code_challenge(&challenge, Some("S256")).is_ok());
        assert!(code_challenge(&challenge, Some("plain")).is_err());
        assert!(code_challenge("short", Some("S256")).is_err());
        assert!(client_state("abc-_.~1").is_ok());
        assert!(client_state("a&b").is_err());
    }
}
