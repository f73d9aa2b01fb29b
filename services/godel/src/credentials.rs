//! The credential a CLI command calls services with: `--token` / `GODEL_TOKEN` (a
//! Godel access token, or an API key `gdl_…` exchanged at the auth service for a
//! short-lived access token) first, else the login `godel login` stored
//! ([`stored`]), its access token renewed at the gateway when it has expired.

pub mod stored;

use anyhow::Context;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::auth::v1::{AuthenticateRequest, authenticate_request::Credential};

/// The prefix of API key secrets.
const API_KEY_PREFIX: &str = "gdl_";

/// An access token for `credential`: itself when it is one, else the token auth's
/// `Authenticate` issues for the API key.
pub async fn access_token(credential: &str, auth_server: &str) -> anyhow::Result<String> {
    let credential = credential.trim();
    if credential.is_empty() {
        anyhow::bail!("the credential is empty: pass an access token or an API key (`gdl_…`)");
    }
    if !credential.starts_with(API_KEY_PREFIX) {
        return Ok(credential.to_owned());
    }
    let mut client = AuthServiceClient::connect(auth_server.to_owned())
        .await
        .with_context(|| format!("cannot reach the auth service at {auth_server}"))?;
    let response = client
        .authenticate(AuthenticateRequest {
            credential: Some(Credential::ApiKey(credential.to_owned())),
            team_id: String::new(),
        })
        .await
        .with_context(|| format!("the auth service at {auth_server} refused the API key"))?;
    Ok(response.into_inner().access_token)
}

/// The access token to call with: from `credential` (`--token` / `GODEL_TOKEN`)
/// when given, else from the stored login.
pub async fn resolve(credential: Option<&str>, auth_server: &str) -> anyhow::Result<String> {
    if let Some(credential) = credential {
        return access_token(credential, auth_server).await;
    }
    let path = stored::path()?;
    match stored::access_token(&path).await? {
        Some(token) => Ok(token),
        None => anyhow::bail!(
            "no credential: pass --token (or set GODEL_TOKEN) with an access token or API key, \
             or sign in with `godel login`"
        ),
    }
}
