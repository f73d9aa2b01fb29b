//! [`Caller`]: who makes a call, the team it acts in and what it may do there, as
//! proven by a verified access token. Services check it against the resources they
//! own with [`Caller::require`].

use std::fmt;

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_types::{ApiKeyId, TeamId, UserId};
use serde::{Deserialize, Serialize};

use crate::permission::{OrgRole, Permission, PermissionSet};

/// Who acts: a user or an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Principal {
    User(UserId),
    ApiKey(ApiKeyId),
}

/// The kind of a [`Principal`], as written in the `kind` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    ApiKey,
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrincipalKind::User => "user",
            PrincipalKind::ApiKey => "API key",
        })
    }
}

impl Principal {
    pub fn kind(&self) -> PrincipalKind {
        match self {
            Principal::User(_) => PrincipalKind::User,
            Principal::ApiKey(_) => PrincipalKind::ApiKey,
        }
    }

    /// Reads back a prefixed id (`usr_…` or `key_…`) written by its `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(user) = text.parse::<UserId>() {
            return Some(Principal::User(user));
        }
        text.parse::<ApiKeyId>().ok().map(Principal::ApiKey)
    }

    /// Reads a prefixed id that must be of `kind`.
    pub fn parse_as(kind: PrincipalKind, text: &str) -> Option<Self> {
        match kind {
            PrincipalKind::User => text.parse().ok().map(Principal::User),
            PrincipalKind::ApiKey => text.parse().ok().map(Principal::ApiKey),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(id) => fmt::Display::fmt(id, f),
            Principal::ApiKey(id) => fmt::Display::fmt(id, f),
        }
    }
}

/// The authenticated caller of a request: the principal, the team the call acts in
/// and the permissions it holds there, plus roles held across the organisation.
///
/// Built by the [`CallerVerifier`](crate::CallerVerifier) from a verified access
/// token, so it is as fresh as the token (minutes): the auth service decides, every
/// other service re-checks with [`require`](Self::require) on what it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// The team the token acts in. User tokens name one team at a time (the gateway
    /// asks auth for a token of another team to switch); API keys belong to one.
    pub team: Option<TeamId>,
    /// What the caller holds in [`team`](Self::team).
    pub permissions: PermissionSet,
    /// Roles held across the organisation (their permissions hold in every team).
    pub org_roles: Vec<OrgRole>,
    /// The sign-in session (refresh-token family) of a user's token.
    pub session: Option<String>,
    /// When the token stops being accepted (plus the verifier's leeway).
    pub expires_at: DateTime<Utc>,
}

impl Caller {
    /// Holds `role` across the organisation.
    pub fn has_org_role(&self, role: OrgRole) -> bool {
        self.org_roles.contains(&role)
    }

    pub fn is_org_admin(&self) -> bool {
        self.has_org_role(OrgRole::Admin)
    }

    /// Everything the caller holds in `team`: its organisation roles' permissions,
    /// plus its team permissions when `team` is the team it acts in.
    pub fn permissions_in(&self, team: TeamId) -> PermissionSet {
        let org = self
            .org_roles
            .iter()
            .fold(PermissionSet::EMPTY, |acc, role| {
                acc.union(role.permissions())
            });
        if self.team == Some(team) {
            org.union(self.permissions)
        } else {
            org
        }
    }

    /// May the caller use `permission` in `team`?
    pub fn holds(&self, team: TeamId, permission: Permission) -> bool {
        self.permissions_in(team).contains(permission)
    }

    /// Fails with `permission_denied` (saying why) unless the caller holds
    /// `permission` in `team`. Returned from a gRPC handler, the error becomes a
    /// `PERMISSION_DENIED` status through godel-error.
    pub fn require(&self, team: TeamId, permission: Permission) -> Result<(), Error> {
        if self.holds(team, permission) {
            return Ok(());
        }
        Err(Error::permission_denied(match self.team {
            Some(acting) if acting != team => format!(
                "{} acts in team {acting}, not in team {team} ({permission} needed)",
                self.principal
            ),
            Some(_) => format!(
                "{} does not hold {permission} in team {team}",
                self.principal
            ),
            None => format!(
                "{} acts in no team ({permission} needed in team {team})",
                self.principal
            ),
        }))
    }

    /// Fails with `permission_denied` unless the caller holds `role` across the
    /// organisation; `action` says what needed it (`creating a team`).
    pub fn require_org_role(&self, role: OrgRole, action: &str) -> Result<(), Error> {
        if self.has_org_role(role) {
            Ok(())
        } else {
            Err(Error::permission_denied(format!(
                "{action} needs the {role} role; {} does not hold it",
                self.principal
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use godel_error::ErrorCode;

    use super::*;

    fn member(team: TeamId, permissions: &[Permission]) -> Caller {
        Caller {
            principal: Principal::User(UserId::new()),
            team: Some(team),
            permissions: permissions.iter().collect(),
            org_roles: Vec::new(),
            session: None,
            expires_at: Utc::now(),
        }
    }

    #[test]
    fn a_member_holds_its_permissions_only_in_its_team() {
        let (a, b) = (TeamId::new(), TeamId::new());
        let caller = member(a, &[Permission::TasksCreate, Permission::TasksRead]);
        caller.require(a, Permission::TasksCreate).unwrap();
        let err = caller.require(a, Permission::TasksCancel).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        assert!(err.message.contains("tasks:cancel"), "{}", err.message);

        let err = caller.require(b, Permission::TasksRead).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        assert!(err.message.contains(&b.to_string()), "{}", err.message);
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::PermissionDenied);

        let nowhere = Caller {
            team: None,
            ..caller.clone()
        };
        assert!(!nowhere.holds(a, Permission::TasksRead));
        nowhere
            .require_org_role(OrgRole::Admin, "creating a team")
            .unwrap_err();
    }

    #[test]
    fn an_org_admin_holds_everything_everywhere() {
        let caller = Caller {
            org_roles: vec![OrgRole::Admin],
            ..member(TeamId::new(), &[])
        };
        let elsewhere = TeamId::new();
        for p in Permission::ALL {
            caller.require(elsewhere, *p).unwrap();
        }
        caller
            .require_org_role(OrgRole::Admin, "creating a team")
            .unwrap();
    }

    #[test]
    fn principals_print_and_parse_as_prefixed_ids() {
        let user = Principal::User(UserId::new());
        let key = Principal::ApiKey(ApiKeyId::new());
        assert_eq!(Principal::parse(&user.to_string()), Some(user));
        assert_eq!(Principal::parse(&key.to_string()), Some(key));
        assert_eq!(Principal::parse(&TeamId::new().to_string()), None);
        assert_eq!(
            Principal::parse_as(PrincipalKind::User, &key.to_string()),
            None
        );
        assert_eq!(
            Principal::parse_as(PrincipalKind::ApiKey, &key.to_string()),
            Some(key)
        );
    }
}
