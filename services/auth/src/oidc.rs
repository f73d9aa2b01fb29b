//! Single sign-on: the auth service as an OpenID Connect relying party of any
//! number of identity providers (`oidc.providers`).
//!
//! A sign-in is two calls. [`Oidc::begin_login`] picks a fresh `state` and `nonce`
//! and a PKCE S256 challenge, stores them (`pending`) and returns the provider's
//! authorization URL. The provider sends the browser back to the redirect URI with
//! a code; [`Oidc::complete_login`] takes the state (once), trades the code at the
//! token endpoint with the PKCE verifier, verifies the ID token ([`id_token`]:
//! signature against the provider's JWKS, algorithm allow-list, `iss`, `aud`/`azp`,
//! times, `nonce`), completes the claims from the userinfo endpoint when the ID
//! token lacks the email, name or groups, provisions the user by `(iss, sub)`, applies the group
//! mappings (`provision`) and starts a sign-in session (a Godel token pair, see
//! [`refresh`](crate::refresh)).
//!
//! Discovery documents and key sets are cached per provider (`provider`).

pub mod config;
pub mod id_token;
mod pending;
mod provider;
mod provision;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use godel_error::Error;

use crate::directory::{Team, User, UserIdentity};
use crate::refresh::TokenPair;
use crate::store::Auth;
use config::{InvalidProvider, OidcConfig, ProviderConfig};
use provider::Provider;

/// A started sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStart {
    /// Where to send the browser.
    pub authorization_url: String,
    /// The state the provider returns with the code.
    pub state: String,
    pub expires_at: DateTime<Utc>,
}

/// A completed sign-in.
#[derive(Debug, Clone)]
pub struct CompletedLogin {
    pub user: User,
    /// This sign-in created the user.
    pub created: bool,
    pub provider: String,
    pub tokens: TokenPair,
    /// The user's teams after the group mappings were applied.
    pub teams: Vec<Team>,
}

/// What `CompleteLogin` received at the redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback<'a> {
    pub state: &'a str,
    pub code: &'a str,
    pub redirect_uri: &'a str,
    /// The `iss` parameter, when the provider sent one (RFC 9207).
    pub issuer: Option<&'a str>,
}

/// The configured identity providers and the sign-ins through them. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Oidc {
    auth: Auth,
    providers: Arc<Vec<Arc<Provider>>>,
    login_timeout: std::time::Duration,
}

/// Why the relying party could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(transparent)]
    Config(#[from] InvalidProvider),
    #[error("cannot build the HTTP client for identity providers")]
    Http(#[source] reqwest::Error),
}

impl Oidc {
    /// The relying party for `config`'s providers, signing users in to `auth`.
    /// Nothing is fetched yet: a provider that is down fails only its sign-ins.
    pub fn new(auth: Auth, config: &OidcConfig) -> Result<Self, OidcError> {
        config.check()?;
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(OidcError::Http)?;
        let providers = config
            .providers
            .iter()
            .map(|p| Arc::new(Provider::new(p.clone(), config, http.clone())))
            .collect();
        Ok(Self {
            auth,
            providers: Arc::new(providers),
            login_timeout: config.login_timeout,
        })
    }

    /// The providers, in configuration order.
    pub fn providers(&self) -> impl Iterator<Item = &ProviderConfig> {
        self.providers.iter().map(|p| &p.config)
    }

    fn provider(&self, name: &str) -> Result<&Arc<Provider>, Error> {
        self.providers
            .iter()
            .find(|p| p.config.name == name)
            .ok_or_else(|| Error::not_found(format!("identity provider `{name}`")))
    }

    /// Starts a sign-in with `provider` that returns to `redirect_uri`.
    pub async fn begin_login(
        &self,
        provider: &str,
        redirect_uri: &str,
    ) -> Result<LoginStart, Error> {
        let provider = self.provider(provider)?;
        if !provider.config.allows_redirect(redirect_uri) {
            return Err(Error::invalid_argument(
                "redirect_uri",
                format!(
                    "`{redirect_uri}` is not a redirect URI of identity provider `{}`",
                    provider.config.name
                ),
            ));
        }
        let discovery = provider.discovery().await?;
        let started = self
            .auth
            .start_login(&provider.config.name, redirect_uri, self.login_timeout)
            .await?;
        let mut url = reqwest::Url::parse(&discovery.authorization_endpoint).map_err(|e| {
            tracing::warn!(provider = %provider.config.name, error = %e, "bad authorization_endpoint");
            Error::unavailable("the identity provider's authorization endpoint is not a URL")
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &provider.config.scope())
            .append_pair("state", &started.state)
            .append_pair("nonce", &started.nonce)
            .append_pair("code_challenge", &started.code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(LoginStart {
            authorization_url: url.into(),
            state: started.state,
            expires_at: started.expires_at,
        })
    }

    /// Completes the sign-in `callback.state` names (see the module docs).
    pub async fn complete_login(&self, callback: Callback<'_>) -> Result<CompletedLogin, Error> {
        let pending = self.auth.take_login(callback.state).await?;
        if pending.redirect_uri != callback.redirect_uri {
            return Err(Error::unauthenticated(
                "sign-in refused: the redirect URI is not the one the sign-in started with",
            ));
        }
        let provider = self.provider(&pending.provider)?;
        if let Some(issuer) = callback.issuer
            && issuer != provider.config.issuer
        {
            return Err(Error::unauthenticated(
                "sign-in refused: the callback names another issuer",
            ));
        }
        if callback.code.is_empty() {
            return Err(Error::unauthenticated("sign-in refused: no code"));
        }
        let tokens = provider
            .exchange_code(callback.code, &pending.redirect_uri, &pending.code_verifier)
            .await?;
        let mut claims = provider
            .verify_id_token(&tokens.id_token, pending.nonce_sha256)
            .await?;
        provider
            .complete_claims(&mut claims, tokens.access_token.as_deref())
            .await?;
        let email = claims.email.clone().unwrap_or_default();
        let display_name = claims
            .name
            .clone()
            .or_else(|| claims.preferred_username.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                if email.is_empty() {
                    claims.sub.clone()
                } else {
                    email.clone()
                }
            });
        let (user, created) = self
            .auth
            .provision_user(&UserIdentity {
                issuer: claims.iss.clone(),
                subject: claims.sub.clone(),
                email,
                display_name,
            })
            .await?;
        let groups = claims.strings(&provider.config.groups_claim);
        self.auth
            .apply_group_mappings(&provider.config, user.id, &groups)
            .await?;
        let user = self.auth.get_user(user.id).await?;
        let tokens = self.auth.start_session(user.id, None).await?;
        let teams = self.auth.list_teams_of(user.id).await?;
        tracing::info!(
            provider = %provider.config.name,
            user = %user.id,
            created,
            groups = groups.len(),
            "signed in through an identity provider"
        );
        Ok(CompletedLogin {
            user,
            created,
            provider: provider.config.name.clone(),
            tokens,
            teams,
        })
    }
}
