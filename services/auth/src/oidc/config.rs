//! The `oidc` settings: the identity providers users sign in with, and how their
//! groups become Godel roles.

use std::time::Duration;

use godel_config::Secret;
use godel_identity::{BuiltinRole, OrgRole};
use serde::{Deserialize, Serialize};

/// Single sign-on. With no providers, sign-in is through API keys and the bootstrap
/// admin only (`godel up`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The identity providers, each with a unique `name`.
    pub providers: Vec<ProviderConfig>,
    /// How long a started sign-in may take before `CompleteLogin` refuses it.
    #[serde(with = "godel_config::duration")]
    pub login_timeout: Duration,
    /// How long a provider's discovery document is trusted before it is fetched
    /// again.
    #[serde(with = "godel_config::duration")]
    pub discovery_ttl: Duration,
    /// How long a provider's key set is trusted before it is fetched again.
    #[serde(with = "godel_config::duration")]
    pub jwks_ttl: Duration,
    /// The shortest time between two key-set fetches triggered by an unknown `kid`,
    /// so forged tokens cannot make the service hammer the provider.
    #[serde(with = "godel_config::duration")]
    pub jwks_min_refetch: Duration,
    /// Timeout of each HTTP request to a provider.
    #[serde(with = "godel_config::duration")]
    pub http_timeout: Duration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            login_timeout: Duration::from_secs(10 * 60),
            discovery_ttl: Duration::from_secs(3600),
            jwks_ttl: Duration::from_secs(3600),
            jwks_min_refetch: Duration::from_secs(30),
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// How the client authenticates at the provider's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (the OIDC default).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A public client: only `client_id`, PKCE protects the code.
    None,
}

/// One identity provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Names the provider in `BeginLogin` (`corp`); 1-63 of a-z, 0-9, `-`.
    pub name: String,
    /// A name for people (`Example Corp SSO`); defaults to `name`.
    #[serde(default)]
    pub display_name: String,
    /// The issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`
    /// and ID tokens must name exactly this `iss`.
    pub issuer: String,
    pub client_id: String,
    /// Absent for a public client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret<String>>,
    /// How to authenticate at the token endpoint; a client without a secret is
    /// always `none`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Requested scopes; `openid` is added when missing.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// ID-token signature algorithms accepted. `none` and HMAC algorithms are
    /// refused at start.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The claim holding the user's groups (a list of strings, or one string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Clock skew tolerated on `exp`, `iat` and `nbf` of ID tokens.
    #[serde(default = "default_leeway", with = "godel_config::duration")]
    pub leeway: Duration,
    /// Where the provider may send the browser back. A loopback URL
    /// (`http://127.0.0.1/…`, `http://[::1]/…`) matches any port (RFC 8252 §7.3,
    /// for `godel login`); others must match exactly.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Groups that grant roles. Applied at every sign-in: roles a mapping granted
    /// earlier are withdrawn when the group is gone; roles granted by hand stay.
    #[serde(default)]
    pub group_mappings: Vec<GroupMapping>,
}

/// A group of the provider and what it grants: a role in a team, or an
/// organisation role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMapping {
    pub group: String,
    /// The team (`team_…` id or team name) `role` is granted in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// A built-in team role (`team-admin`, `developer`, `viewer`, `auditor`) or a
    /// custom role of `team`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// An organisation role (`org-admin` or `org-auditor`), instead of `team` and
    /// `role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_role: Option<String>,
}

/// What a valid mapping grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant<'a> {
    Team { team: &'a str, role: &'a str },
    Org(OrgRole),
}

impl GroupMapping {
    /// What the mapping grants, or why it is invalid.
    pub(crate) fn grant(&self) -> Result<Grant<'_>, String> {
        match (&self.team, &self.role, &self.org_role) {
            (Some(team), Some(role), None) => {
                if BuiltinRole::from_name(role) == Some(BuiltinRole::OrgAdmin) {
                    return Err(
                        "`org-admin` is an organisation role: use `org_role = \"org-admin\"`"
                            .to_owned(),
                    );
                }
                Ok(Grant::Team { team, role })
            }
            (None, None, Some(name)) => match OrgRole::from_name(name) {
                Some(role) if super::provision::MAPPABLE_ORG_ROLES.contains(&role) => {
                    Ok(Grant::Org(role))
                }
                Some(_) => Err(format!(
                    "organisation role `{name}` cannot be granted by a group mapping (only `org-admin` and `org-auditor`)"
                )),
                None => Err(format!("unknown organisation role `{name}`")),
            },
            _ => Err("set either `team` and `role`, or `org_role`".to_owned()),
        }
    }
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(str::to_owned).to_vec()
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(str::to_owned).to_vec()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

/// Why the `oidc` settings are unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `oidc.providers` (provider `{provider}`): {reason}")]
pub struct InvalidProvider {
    pub provider: String,
    pub reason: String,
}

impl OidcConfig {
    /// Checks what would otherwise only fail at the first sign-in.
    pub fn check(&self) -> Result<(), InvalidProvider> {
        let mut names = std::collections::HashSet::new();
        for p in &self.providers {
            let bad = |reason: String| InvalidProvider {
                provider: p.name.clone(),
                reason,
            };
            let name_ok = !p.name.is_empty()
                && p.name.len() <= 63
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !name_ok {
                return Err(bad(
                    "the name must be 1-63 characters of a-z, 0-9, `-`".into()
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(bad("two providers have this name".into()));
            }
            if !(p.issuer.starts_with("https://") || p.issuer.starts_with("http://")) {
                return Err(bad(format!("issuer `{}` is not an http(s) URL", p.issuer)));
            }
            if p.client_id.is_empty() {
                return Err(bad("`client_id` is empty".into()));
            }
            if p.client_auth != ClientAuth::None && p.client_secret.is_none() {
                return Err(bad(
                    "a confidential client needs `client_secret` (or set `client_auth = \"none\"`)"
                        .into(),
                ));
            }
            if p.algorithms.is_empty() {
                return Err(bad("`algorithms` is empty".into()));
            }
            for alg in &p.algorithms {
                crate::oidc::id_token::allowed_algorithm(alg).map_err(bad)?;
            }
            if p.redirect_uris.is_empty() {
                return Err(bad("`redirect_uris` is empty".into()));
            }
            for m in &p.group_mappings {
                m.grant()
                    .map_err(|e| bad(format!("group mapping for `{}`: {e}", m.group)))?;
            }
        }
        Ok(())
    }
}

impl ProviderConfig {
    /// The scopes to request, `openid` first.
    pub(crate) fn scope(&self) -> String {
        let mut scopes = vec!["openid"];
        scopes.extend(
            self.scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "openid"),
        );
        scopes.join(" ")
    }

    /// How the client authenticates, taking a missing secret into account.
    pub(crate) fn client_auth(&self) -> ClientAuth {
        match &self.client_secret {
            None => ClientAuth::None,
            Some(_) => self.client_auth,
        }
    }

    /// `uri` is one of the allowed redirect URIs (loopback ones on any port).
    pub(crate) fn allows_redirect(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|allowed| allowed == uri || same_loopback(allowed, uri))
    }
}

/// Both are `http` loopback URLs equal but for the port.
fn same_loopback(allowed: &str, uri: &str) -> bool {
    fn split(u: &str) -> Option<(&str, &str)> {
        let rest = u.strip_prefix("http://")?;
        let (host_port, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let host = if let Some(v6) = host_port.strip_prefix("[::1]") {
            (v6.is_empty() || v6.starts_with(':')).then_some("[::1]")?
        } else {
            let host = host_port.split(':').next()?;
            (host == "127.0.0.1").then_some(host)?
        };
        let port = host_port[host.len()..].trim_start_matches(':');
        port.chars()
            .all(|c| c.is_ascii_digit())
            .then_some((host, path))
    }
    matches!((split(allowed), split(uri)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> ProviderConfig {
        serde_json::from_value(serde_json::json!({
            "name": "corp",
            "issuer": "https://idp.example.com",
            "client_id": "godel",
            "client_secret": "s",
            "redirect_uris": ["https://godel.example.com/auth/callback", "http://127.0.0.1/callback"],
            "group_mappings": [
                {"group": "eng", "team": "core", "role": "developer"},
                {"group": "admins", "org_role": "org-admin"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn defaults_and_checks() {
        let p = provider();
        assert_eq!(p.algorithms, ["RS256", "ES256", "EdDSA"]);
        assert_eq!(p.groups_claim, "groups");
        assert_eq!(p.scope(), "openid email profile");
        let ok = OidcConfig {
            providers: vec![p.clone()],
            ..OidcConfig::default()
        };
        ok.check().unwrap();
        for (change, what) in [
            (
                Box::new(|p: &mut ProviderConfig| p.algorithms = vec!["none".into()])
                    as Box<dyn Fn(&mut ProviderConfig)>,
                "none",
            ),
            (Box::new(|p| p.algorithms = vec!["HS256".into()]), "HS256"),
            (Box::new(|p| p.client_secret = None), "client_secret"),
            (Box::new(|p| p.redirect_uris.clear()), "redirect_uris"),
            (
                Box::new(|p| {
                    p.group_mappings.push(GroupMapping {
                        group: "x".into(),
                        team: Some("t".into()),
                        role: Some("org-admin".into()),
                        org_role: None,
                    })
                }),
                "org_role",
            ),
        ] {
            let mut p = provider();
            change(&mut p);
            let err = OidcConfig {
                providers: vec![p],
                ..OidcConfig::default()
            }
            .check()
            .unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
        }
    }

    #[test]
    fn group_mappings_grant_people_org_roles_but_not_service_ones() {
        let org = |name: &str| GroupMapping {
            group: "g".into(),
            team: None,
            role: None,
            org_role: Some(name.into()),
        };
        assert_eq!(org("org-admin").grant(), Ok(Grant::Org(OrgRole::Admin)));
        assert_eq!(org("org-auditor").grant(), Ok(Grant::Org(OrgRole::Auditor)));
        let err = org("audit-writer").grant().unwrap_err();
        assert!(err.contains("cannot be granted"), "{err}");
        assert!(org("org-overlord").grant().unwrap_err().contains("unknown"));
    }

    #[test]
    fn loopback_redirects_match_on_any_port_others_exactly() {
        let p = provider();
        assert!(p.allows_redirect("https://godel.example.com/auth/callback"));
        assert!(!p.allows_redirect("https://godel.example.com/auth/callback/x"));
        assert!(!p.allows_redirect("https://evil.example.com/auth/callback"));
        assert!(p.allows_redirect("http://127.0.0.1:53211/callback"));
        assert!(p.allows_redirect("http://127.0.0.1/callback"));
        assert!(!p.allows_redirect("http://127.0.0.1:53211/other"));
        assert!(!p.allows_redirect("http://127.0.0.1.evil.com:1/callback"));
        assert!(!p.allows_redirect("http://localhost:1/callback"));
    }
}
