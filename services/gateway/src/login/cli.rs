//! Sign-in for `godel login` (RFC 8252, native apps), keeping the provider's client
//! secret in the server:
//!
//! 1. the CLI listens on a loopback port, makes a PKCE verifier and opens the
//!    browser at `GET /auth/cli/begin?idp=&redirect_uri=http://127.0.0.1:<port>/…
//!    &code_challenge=&code_challenge_method=S256&state=`;
//! 2. the browser signs in at the provider, which sends it back to the gateway's
//!    `/auth/callback` (the only redirect URI registered at the provider);
//! 3. the gateway finishes the sign-in and sends the browser to the CLI's loopback
//!    URL with a one-time code (`?code=&state=`), valid `login.cli_code_ttl`;
//! 4. the CLI trades the code, its verifier and the same `redirect_uri` at
//!    `POST /auth/cli/token` for the token pair.
//!
//! A code intercepted on its way to the loopback (another local program, a log) is
//! useless without the verifier, which never left the CLI; a code is tried once.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::Response;
use godel_error::Error;
use godel_proto::auth::v1::CompleteLoginResponse;
use serde::{Deserialize, Serialize};

use super::redirect;
use super::sealed::{new_secret, same};
use super::{Flow, Login, Tokens, found};

#[derive(Deserialize)]
pub(super) struct BeginQuery {
    idp: Option<String>,
    redirect_uri: String,
    code_challenge: String,
    code_challenge_method: Option<String>,
    state: String,
}

pub(super) async fn begin(
    State(login): State<Arc<Login>>,
    Query(query): Query<BeginQuery>,
) -> Result<Response, Error> {
    redirect::loopback(&query.redirect_uri)?;
    redirect::code_challenge(
        &query.code_challenge,
        query.code_challenge_method.as_deref(),
    )?;
    redirect::client_state(&query.state)?;
    login
        .begin(
            query.idp,
            Flow::Cli {
                redirect_uri: query.redirect_uri,
                code_challenge: query.code_challenge,
                client_state: query.state,
            },
        )
        .await
}

/// A CLI waiting on its loopback listener.
pub(super) struct Waiting {
    pub(super) redirect_uri: String,
    pub(super) code_challenge: String,
    pub(super) client_state: String,
}

/// The signed-in user, as the CLI shows it.
#[derive(Serialize, Deserialize)]
struct User {
    id: String,
    email: String,
    display_name: String,
}

/// What a one-time code stands for until the CLI trades it.
#[derive(Serialize, Deserialize)]
struct Grant {
    redirect_uri: String,
    code_challenge: String,
    tokens: Tokens,
    user: User,
}

/// Keeps the sign-in for the CLI under a one-time code and sends the browser to
/// the CLI's loopback listener with it.
pub(super) async fn hand_over(
    login: &Login,
    completed: CompleteLoginResponse,
    waiting: Waiting,
) -> Result<Response, Error> {
    let user = completed.user.unwrap_or_default();
    let grant = Grant {
        redirect_uri: waiting.redirect_uri,
        code_challenge: waiting.code_challenge,
        tokens: Tokens::of(&completed.tokens.unwrap_or_default())?,
        user: User {
            id: user.id,
            email: user.email,
            display_name: user.display_name,
        },
    };
    let code = new_secret();
    login
        .cli_codes
        .put(&code, &grant, login.cli_code_ttl)
        .await?;
    // The redirect URI has no query (checked at begin); the code is base64url and
    // the state unreserved characters: nothing needs escaping.
    found(&format!(
        "{}?code={code}&state={}",
        grant.redirect_uri, waiting.client_state
    ))
}

#[derive(Deserialize)]
pub(super) struct TokenRequest {
    code: String,
    code_verifier: String,
    redirect_uri: String,
}

/// The answer to a CLI: its token pair and who it signed in as.
#[derive(Serialize)]
pub(super) struct TokenResponse {
    #[serde(flatten)]
    tokens: Tokens,
    user: User,
}

pub(super) async fn token(
    State(login): State<Arc<Login>>,
    crate::call::Body(request): crate::call::Body<TokenRequest>,
) -> Result<Json<TokenResponse>, Error> {
    let refused = || Error::unauthenticated("unknown, used or expired code, or wrong verifier");
    let grant: Grant = login
        .cli_codes
        .take(&request.code)
        .await?
        .ok_or_else(refused)?;
    let verified = same(
        &redirect::challenge_of(&request.code_verifier),
        &grant.code_challenge,
    );
    if !verified || grant.redirect_uri != request.redirect_uri {
        // The code is spent either way: whoever tried it did not start the sign-in,
        // or got it wrong once.
        super::session::revoke(&login.auth, &grant.tokens.refresh_token, login.timeout).await?;
        return Err(refused());
    }
    Ok(Json(TokenResponse {
        tokens: grant.tokens,
        user: grant.user,
    }))
}
