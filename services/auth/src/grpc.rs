//! The gRPC `AuthService` over [`Auth`]: proto to domain and back, and who may call
//! what.
//!
//! `Authenticate`, `RefreshToken`, `RevokeToken`, `GetJwks` and the sign-in calls
//! (`ListIdentityProviders`, `BeginLogin`, `CompleteLogin`, over [`Oidc`]) are
//! public: the credential is in the request. Every other call needs a Godel access token in
//! `authorization: Bearer …` metadata, verified by a `godel_identity::CallerLayer`
//! around the server (the key set read straight from this service's database), and
//! the permission the RPC names in the team it touches — checked on the token's
//! claims and again on the current memberships and keys, since auth owns them and a
//! token may be minutes old.

use std::sync::Arc;

use godel_error::Error;
use godel_identity::{
    Caller, CallerLayer, CallerVerifier, Jwks, KeySource, KeySourceError, OrgRole, Permission,
    PermissionSet, Principal, VerifierConfig, caller_from_request, jwk_to_pb,
};
use godel_proto::auth::v1 as pb;
use godel_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use godel_proto::common::v1 as common;
use godel_proto::convert::{from_optional_timestamp, parse_id, to_timestamp};
use godel_types::{ApiKeyId, TeamId, UserId};
use tonic::{Request, Response, Status};
use tower::Layer;

mod convert;

use convert::{
    key_to_pb, member_to_pb, org_roles_from_names, quotas_to_pb, role_to_pb, team_to_pb,
    tokens_to_pb, user_to_pb,
};

use crate::Auth;
use crate::api_keys::{KeyCaller, NewApiKey};
use crate::authz::Grants;
use crate::oidc::{Callback, Oidc};
use crate::quotas::Quotas;
use crate::tokens::AccessToken;

/// Default and largest page sizes of the list RPCs.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The `AuthService` server, with callers verified by a [`CallerLayer`]; what
/// [`start`](crate::start) registers.
pub fn server(auth: Auth, oidc: Oidc) -> godel_identity::WithCaller<AuthServiceServer<AuthGrpc>> {
    let verifier = local_verifier(&auth);
    CallerLayer::new(verifier.clone())
        .layer(AuthServiceServer::new(AuthGrpc::new(auth, oidc, verifier)))
}

/// A verifier of this service's own tokens, reading the key set from its database.
/// Reading it is cheap, so an unknown `kid` (a key rotated a moment ago) is looked
/// up at once.
pub fn local_verifier(auth: &Auth) -> CallerVerifier {
    let config = VerifierConfig {
        issuer: auth.tokens.issuer.clone(),
        audience: auth.tokens.audience.clone(),
        leeway: auth.tokens.leeway,
        jwks_min_refetch: std::time::Duration::ZERO,
        ..VerifierConfig::default()
    };
    CallerVerifier::new(config, Arc::new(LocalKeys(auth.clone())))
}

/// The key set, from the database.
struct LocalKeys(Auth);

#[async_trait::async_trait]
impl KeySource for LocalKeys {
    async fn fetch(&self) -> Result<Jwks, KeySourceError> {
        self.0
            .jwks()
            .await
            .map_err(|e| KeySourceError::Other(e.to_string()))
    }
}

/// Serves the auth service's gRPC API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuthGrpc {
    auth: Auth,
    oidc: Oidc,
    verifier: CallerVerifier,
}

impl AuthGrpc {
    pub fn new(auth: Auth, oidc: Oidc, verifier: CallerVerifier) -> Self {
        Self {
            auth,
            oidc,
            verifier,
        }
    }

    /// The caller may use `permission` in `team`: by its token, and by the
    /// database now.
    async fn allow(
        &self,
        caller: &Caller,
        team: TeamId,
        permission: Permission,
    ) -> Result<(), Error> {
        caller.require(team, permission)?;
        self.auth.require(caller.principal, permission, team).await
    }

    /// Like [`allow`](Self::allow), for any one of `permissions`.
    async fn allow_any(
        &self,
        caller: &Caller,
        team: TeamId,
        permissions: &[Permission],
    ) -> Result<(), Error> {
        let mut denied = None;
        for permission in permissions {
            match self.allow(caller, team, *permission).await {
                Ok(()) => return Ok(()),
                Err(e) if e.code == godel_error::ErrorCode::PermissionDenied => {
                    denied.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(denied.unwrap_or_else(|| Error::permission_denied("no permission allows this")))
    }

    /// The caller must hold `org-admin`, by its token and by the database now.
    async fn allow_org_admin(&self, caller: &Caller, action: &str) -> Result<(), Error> {
        caller.require_org_role(OrgRole::Admin, action)?;
        self.auth.require_org_admin(caller.principal, action).await
    }

    /// `Authenticate` with an API key: a token of the key's team and permissions.
    async fn authenticate_key(
        &self,
        raw: &str,
        team: Option<TeamId>,
    ) -> Result<pb::AuthenticateResponse, Error> {
        let key = self.auth.authenticate_api_key(raw).await?;
        check_key_team(key.key, key.team, team)?;
        self.key_response(&key).await
    }

    /// A token standing for `key`, and who it is.
    async fn key_response(&self, key: &KeyCaller) -> Result<pb::AuthenticateResponse, Error> {
        let token = self.auth.issue_key_token(key).await?;
        let roles = key.org_roles.iter().map(|r| r.name().to_owned()).collect();
        let permissions = if key.org_admin {
            PermissionSet::all()
        } else {
            key.permissions.iter().collect()
        };
        Ok(authenticated(
            Principal::ApiKey(key.key),
            Some(key.team),
            roles,
            permissions,
            token,
        ))
    }

    /// `Authenticate` with an access token: a token of the same principal acting in
    /// `team` (default: the token's), with what it holds there now, expiring no
    /// later than the presented token.
    async fn authenticate_bearer(
        &self,
        token: &str,
        team: Option<TeamId>,
    ) -> Result<pb::AuthenticateResponse, Error> {
        let caller = self.verifier.verify(token).await?;
        let team = team.or(caller.team);
        match caller.principal {
            Principal::User(user) => {
                let (held, grants) = self.auth.user_token_grants(user, team).await?;
                if let Grants::Nothing { why } = &held {
                    return Err(Error::permission_denied(why.clone()));
                }
                let mut roles = match team {
                    Some(team) => self
                        .auth
                        .member_roles(team, user)
                        .await?
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                roles.extend(grants.org_roles.iter().map(|r| r.name().to_owned()));
                let permissions = if grants.org_roles.contains(&OrgRole::Admin) {
                    PermissionSet::all()
                } else {
                    grants.permissions
                };
                let issued = self
                    .auth
                    .sign_token(
                        caller.principal,
                        team,
                        grants,
                        caller.session.clone(),
                        Some(caller.expires_at),
                    )
                    .await?;
                Ok(authenticated(
                    caller.principal,
                    team,
                    roles,
                    permissions,
                    issued,
                ))
            }
            Principal::ApiKey(id) => {
                let mut key = self.auth.api_key_caller(id).await?;
                check_key_team(key.key, key.team, team)?;
                key.expires_at = Some(
                    key.expires_at
                        .map_or(caller.expires_at, |at| at.min(caller.expires_at)),
                );
                self.key_response(&key).await
            }
        }
    }
}

/// An API key acts only in its own team.
fn check_key_team(key: ApiKeyId, own: TeamId, asked: Option<TeamId>) -> Result<(), Error> {
    match asked {
        Some(team) if team != own => Err(Error::permission_denied(format!(
            "API key {key} acts only in its own team {own}, not in {team}"
        ))),
        _ => Ok(()),
    }
}

fn authenticated(
    principal: Principal,
    team: Option<TeamId>,
    roles: Vec<String>,
    permissions: PermissionSet,
    token: AccessToken,
) -> pb::AuthenticateResponse {
    pb::AuthenticateResponse {
        caller: Some(caller_to_pb(principal, team, roles)),
        expires_at: Some(to_timestamp(token.expires_at)),
        access_token: token.token,
        permissions: permissions.names().into_iter().map(str::to_owned).collect(),
    }
}

fn caller_to_pb(principal: Principal, team: Option<TeamId>, roles: Vec<String>) -> common::Caller {
    let kind = match principal {
        Principal::User(_) => common::SubjectKind::User,
        Principal::ApiKey(_) => common::SubjectKind::ApiKey,
    };
    common::Caller {
        subject_kind: kind.into(),
        subject_id: principal.to_string(),
        team_id: team.map(|t| t.to_string()).unwrap_or_default(),
        roles,
    }
}

/// The principal a proto caller names.
fn principal_from_pb(caller: Option<&common::Caller>) -> Result<Principal, Error> {
    let caller = caller.ok_or_else(|| Error::invalid_argument("caller", "`caller` is required"))?;
    let kind = common::SubjectKind::try_from(caller.subject_kind).unwrap_or_default();
    match kind {
        common::SubjectKind::User => Ok(Principal::User(parse_id(
            "caller.subject_id",
            &caller.subject_id,
        )?)),
        common::SubjectKind::ApiKey => Ok(Principal::ApiKey(parse_id(
            "caller.subject_id",
            &caller.subject_id,
        )?)),
        _ => Err(Error::invalid_argument(
            "caller.subject_kind",
            "only users and API keys hold permissions",
        )),
    }
}

fn team_id(field: &str, text: &str) -> Result<TeamId, Error> {
    parse_id(field, text)
}

fn optional_team(field: &str, text: &str) -> Result<Option<TeamId>, Error> {
    godel_proto::convert::parse_optional_id(field, text)
}

fn permission(field: &str, name: &str) -> Result<Permission, Error> {
    name.parse().map_err(|_| {
        Error::invalid_argument(
            field,
            format!("unknown permission `{name}` (see docs/permissions.md)"),
        )
    })
}

/// One page of `items` (already in list order): up to `page_size` items after the
/// one whose key is `page_token`.
fn paginate<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    page: Option<&common::PageRequest>,
) -> Result<(Vec<T>, common::PageResponse), Error> {
    let (size, token) = match page {
        Some(p) => (p.page_size as usize, p.page_token.as_str()),
        None => (0, ""),
    };
    let size = match size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let start = if token.is_empty() {
        0
    } else {
        items
            .iter()
            .position(|item| key(item) == token)
            .map(|i| i + 1)
            .ok_or_else(|| {
                Error::invalid_argument(
                    "page.page_token",
                    "the page token names nothing in this list (pass it back unchanged, with the same filters)",
                )
            })?
    };
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let next = if rest.len() > size {
        rest.truncate(size);
        rest.last().map(&key).unwrap_or_default()
    } else {
        String::new()
    };
    Ok((
        rest,
        common::PageResponse {
            next_page_token: next,
        },
    ))
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = request.into_inner();
        let team = optional_team("team_id", &req.team_id)?;
        let response = match req.credential {
            Some(pb::authenticate_request::Credential::ApiKey(raw)) => {
                self.authenticate_key(&raw, team).await?
            }
            Some(pb::authenticate_request::Credential::BearerToken(token)) => {
                self.authenticate_bearer(&token, team).await?
            }
            None => return Err(Error::unauthenticated("no credential").into()),
        };
        Ok(Response::new(response))
    }

    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        let subject = principal_from_pb(req.caller.as_ref())?;
        let asked = permission("permission", &req.permission)?;
        let team = team_id("team_id", &req.team_id)?;
        if subject != caller.principal {
            self.allow(&caller, team, Permission::TeamsRead).await?;
        }
        let decision = self.auth.authorize(subject, asked, team).await?;
        Ok(Response::new(pb::AuthorizeResponse {
            allowed: decision.allowed,
            reason: decision.reason,
        }))
    }

    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        let pair = self
            .auth
            .refresh(&request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(pb::RefreshTokenResponse {
            tokens: Some(tokens_to_pb(pair)),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.auth
            .revoke_refresh_token(&request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let jwks = self.auth.jwks().await?;
        Ok(Response::new(pb::GetJwksResponse {
            keys: jwks.keys.into_iter().map(jwk_to_pb).collect(),
        }))
    }

    async fn list_identity_providers(
        &self,
        _request: Request<pb::ListIdentityProvidersRequest>,
    ) -> Result<Response<pb::ListIdentityProvidersResponse>, Status> {
        let providers = self
            .oidc
            .providers()
            .map(|p| pb::IdentityProvider {
                name: p.name.clone(),
                display_name: if p.display_name.is_empty() {
                    p.name.clone()
                } else {
                    p.display_name.clone()
                },
                issuer: p.issuer.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListIdentityProvidersResponse {
            providers,
        }))
    }

    async fn begin_login(
        &self,
        request: Request<pb::BeginLoginRequest>,
    ) -> Result<Response<pb::BeginLoginResponse>, Status> {
        let req = request.into_inner();
        let started = self
            .oidc
            .begin_login(&req.provider, &req.redirect_uri)
            .await?;
        Ok(Response::new(pb::BeginLoginResponse {
            authorization_url: started.authorization_url,
            state: started.state,
            expires_at: Some(to_timestamp(started.expires_at)),
        }))
    }

    async fn complete_login(
        &self,
        request: Request<pb::CompleteLoginRequest>,
    ) -> Result<Response<pb::CompleteLoginResponse>, Status> {
        let req = request.into_inner();
        let done = self
            .oidc
            .complete_login(Callback {
                state: &req.state,
                code: &req.code,
                redirect_uri: &req.redirect_uri,
                issuer: (!req.issuer.is_empty()).then_some(req.issuer.as_str()),
            })
            .await?;
        Ok(Response::new(pb::CompleteLoginResponse {
            tokens: Some(tokens_to_pb(done.tokens)),
            user: Some(user_to_pb(done.user)),
            created: done.created,
            provider: done.provider,
            teams: done.teams.into_iter().map(team_to_pb).collect(),
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        let team = team_id("team_id", &req.team_id)?;
        self.allow(&caller, team, Permission::KeysManage).await?;
        let new = NewApiKey {
            team,
            name: req.name,
            permissions: Permission::parse_all(&req.permissions, "permissions")?,
            org_admin: req.org_admin,
            org_roles: org_roles_from_names(&req.org_roles)?,
            expires_at: from_optional_timestamp("expires_at", req.expires_at.as_ref())?,
        };
        let created = self.auth.create_api_key(caller.principal, new).await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: Some(key_to_pb(created.key)),
            secret: created.secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        let team = team_id("team_id", &req.team_id)?;
        self.allow(&caller, team, Permission::KeysManage).await?;
        let keys = self.auth.list_api_keys(team, req.include_revoked).await?;
        let (keys, page) = paginate(keys, |k| k.id.to_string(), req.page.as_ref())?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(key_to_pb).collect(),
            page: Some(page),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        let team = team_id("team_id", &req.team_id)?;
        let key: ApiKeyId = parse_id("key_id", &req.key_id)?;
        self.allow(&caller, team, Permission::KeysManage).await?;
        let key = self
            .auth
            .revoke_api_key(caller.principal, team, key)
            .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {
            key: Some(key_to_pb(key)),
        }))
    }

    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::CreateTeamResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        self.allow_org_admin(&caller, "creating a team").await?;
        let team = self
            .auth
            .create_team(caller.principal, &req.name, &req.display_name)
            .await?;
        Ok(Response::new(pb::CreateTeamResponse {
            team: Some(team_to_pb(team)),
        }))
    }

    async fn get_team(
        &self,
        request: Request<pb::GetTeamRequest>,
    ) -> Result<Response<pb::GetTeamResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let team = team_id("team_id", &request.get_ref().team_id)?;
        self.allow(&caller, team, Permission::TeamsRead).await?;
        let team = self.auth.get_team(team).await?;
        Ok(Response::new(pb::GetTeamResponse {
            team: Some(team_to_pb(team)),
        }))
    }

    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        let org_admin = caller.is_org_admin()
            && self
                .auth
                .require_org_admin(caller.principal, "listing every team")
                .await
                .is_ok();
        let teams = match caller.principal {
            _ if org_admin => self.auth.list_teams().await?,
            Principal::User(user) => self.auth.list_teams_of(user).await?,
            Principal::ApiKey(key) => {
                let key = self.auth.api_key_caller(key).await?;
                vec![self.auth.get_team(key.team).await?]
            }
        };
        let (teams, page) = paginate(teams, |t| t.id.to_string(), req.page.as_ref())?;
        Ok(Response::new(pb::ListTeamsResponse {
            teams: teams.into_iter().map(team_to_pb).collect(),
            page: Some(page),
        }))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        let team = team_id("team_id", &req.team_id)?;
        let user: UserId = parse_id("user_id", &req.user_id)?;
        self.allow(&caller, team, Permission::MembersManage).await?;
        let member = self
            .auth
            .add_member(caller.principal, team, user, &req.roles)
            .await?;
        Ok(Response::new(pb::AddMemberResponse {
            member: Some(member_to_pb(member)),
        }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        let team = team_id("team_id", &req.team_id)?;
        let user: UserId = parse_id("user_id", &req.user_id)?;
        self.allow(&caller, team, Permission::MembersManage).await?;
        self.auth
            .remove_member(caller.principal, team, user)
            .await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        let team = team_id("team_id", &req.team_id)?;
        self.allow(&caller, team, Permission::TeamsRead).await?;
        let members = self.auth.list_members(team).await?;
        let (members, page) = paginate(members, |m| m.user.to_string(), req.page.as_ref())?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members.into_iter().map(member_to_pb).collect(),
            page: Some(page),
        }))
    }

    async fn create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::CreateRoleResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        let team = team_id("team_id", &req.team_id)?;
        self.allow(&caller, team, Permission::RolesManage).await?;
        let role = self
            .auth
            .create_role(caller.principal, team, &req.name, &req.permissions)
            .await?;
        Ok(Response::new(pb::CreateRoleResponse {
            role: Some(role_to_pb(role)),
        }))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let team = team_id("team_id", &request.get_ref().team_id)?;
        self.allow(&caller, team, Permission::TeamsRead).await?;
        let roles = self.auth.list_roles(team).await?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: roles.into_iter().map(role_to_pb).collect(),
        }))
    }

    async fn get_quotas(
        &self,
        request: Request<pb::GetQuotasRequest>,
    ) -> Result<Response<pb::GetQuotasResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let team = team_id("team_id", &request.get_ref().team_id)?;
        self.allow_any(
            &caller,
            team,
            &[
                Permission::QuotasRead,
                Permission::TasksCreate,
                Permission::PlansCreate,
            ],
        )
        .await?;
        let quotas = self.auth.get_quotas(team).await?;
        Ok(Response::new(pb::GetQuotasResponse {
            quotas: Some(quotas_to_pb(quotas)),
        }))
    }

    async fn set_quotas(
        &self,
        request: Request<pb::SetQuotasRequest>,
    ) -> Result<Response<pb::SetQuotasResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let req = request.into_inner();
        let quotas = godel_proto::convert::required("quotas", req.quotas.as_ref())?;
        let team = team_id("quotas.team_id", &quotas.team_id)?;
        self.allow(&caller, team, Permission::QuotasManage).await?;
        let set = self
            .auth
            .set_quotas(
                caller.principal,
                team,
                Quotas {
                    max_concurrent_sessions: quotas.max_concurrent_sessions,
                    max_queued_tasks: quotas.max_queued_tasks,
                    rate_limit_per_minute: quotas.rate_limit_per_minute,
                    monthly_budget_micro_usd: quotas.monthly_budget_micro_usd,
                },
            )
            .await?;
        Ok(Response::new(pb::SetQuotasResponse {
            quotas: Some(quotas_to_pb(set)),
        }))
    }

    async fn set_org_roles(
        &self,
        request: Request<pb::SetOrgRolesRequest>,
    ) -> Result<Response<pb::SetOrgRolesResponse>, Status> {
        let caller = caller_from_request(&request)?;
        self.allow_org_admin(&caller, "setting organisation roles")
            .await?;
        let req = request.into_inner();
        let user = parse_id("user_id", &req.user_id)?;
        let roles = org_roles_from_names(&req.org_roles)?;
        let user = self.auth.set_org_roles(user, &roles).await?;
        Ok(Response::new(pb::SetOrgRolesResponse {
            user: Some(user_to_pb(user)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(size: u32, token: &str) -> common::PageRequest {
        common::PageRequest {
            page_size: size,
            page_token: token.to_owned(),
        }
    }

    #[test]
    fn pages_follow_each_other_to_the_end() {
        let items: Vec<u32> = (1..=5).collect();
        let key = |i: &u32| i.to_string();
        let (first, next) = paginate(items.clone(), key, Some(&page(2, ""))).unwrap();
        assert_eq!((first, next.next_page_token.as_str()), (vec![1, 2], "2"));
        let (second, next) = paginate(items.clone(), key, Some(&page(2, "2"))).unwrap();
        assert_eq!((second, next.next_page_token.as_str()), (vec![3, 4], "4"));
        let (last, next) = paginate(items.clone(), key, Some(&page(2, "4"))).unwrap();
        assert_eq!((last, next.next_page_token.as_str()), (vec![5], ""));
        let (all, next) = paginate(items.clone(), key, None).unwrap();
        assert_eq!((all.len(), next.next_page_token.as_str()), (5, ""));
        let err = paginate(items, key, Some(&page(2, "9"))).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("page.page_token"));
    }
}
