//! Authorization: may a caller use a permission in a team?
//!
//! - A user holding `org-admin` may do everything in every team.
//! - Any other user may act only in teams they are a member of, with the union of
//!   the permissions of their roles there (built-in or the team's custom roles).
//! - An API key acts only in its own team, with its own permission set; an
//!   `org-admin` key (created by an org-admin) may do everything everywhere. Revoked
//!   and expired keys may do nothing.

use godel_error::Error;
use godel_store::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use godel_types::TeamId;

use crate::directory::role_from;
use crate::entity::{api_key, role, user};
use crate::permission::{BuiltinRole, Permission};
use crate::store::{Auth, Principal, db_error, now, org_roles_from, strings_from_json};
use godel_identity::OrgRole;

/// An authorization decision and why, for logs and the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

impl Decision {
    fn allow(reason: String) -> Self {
        Self {
            allowed: true,
            reason,
        }
    }

    fn deny(reason: String) -> Self {
        Self {
            allowed: false,
            reason,
        }
    }
}

/// What a caller holds in one team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grants {
    /// Every permission; `via` names why (`org-admin`).
    Everything { via: String },
    /// The permissions of each named source (a role, or the API key itself).
    Sources(Vec<(String, Vec<Permission>)>),
    /// Nothing, and why.
    Nothing { why: String },
}

impl Grants {
    pub(crate) fn holds(&self, permission: Permission) -> bool {
        match self {
            Grants::Everything { .. } => true,
            Grants::Sources(sources) => sources.iter().any(|(_, p)| p.contains(&permission)),
            Grants::Nothing { .. } => false,
        }
    }

    pub(crate) fn is_org_admin(&self) -> bool {
        matches!(self, Grants::Everything { .. })
    }
}

impl Auth {
    /// Decides whether `caller` may use `permission` in `team`. Unknown callers are
    /// denied (not an error); only database failures are errors.
    pub async fn authorize(
        &self,
        caller: Principal,
        permission: Permission,
        team: TeamId,
    ) -> Result<Decision, Error> {
        let grants = self.grants(caller, team).await?;
        Ok(match grants {
            Grants::Everything { via } => {
                Decision::allow(format!("{via} grants every permission in every team"))
            }
            Grants::Nothing { why } => Decision::deny(why),
            Grants::Sources(sources) => {
                match sources.iter().find(|(_, p)| p.contains(&permission)) {
                    Some((source, _)) => Decision::allow(format!("{source} grants {permission}")),
                    None => {
                        let held: Vec<&str> = sources.iter().map(|(s, _)| s.as_str()).collect();
                        Decision::deny(format!(
                            "{permission} is not granted in team {team} (holds: {})",
                            held.join(", ")
                        ))
                    }
                }
            }
        })
    }

    /// Like [`authorize`](Self::authorize), but a denial is a `permission_denied`
    /// error carrying the reason.
    pub async fn require(
        &self,
        caller: Principal,
        permission: Permission,
        team: TeamId,
    ) -> Result<(), Error> {
        let decision = self.authorize(caller, permission, team).await?;
        if decision.allowed {
            Ok(())
        } else {
            Err(Error::permission_denied(decision.reason))
        }
    }

    /// Fails with `permission_denied` unless `caller` holds `org-admin` now (a user
    /// marked so, or a valid org-admin API key); `action` says what needed it.
    pub async fn require_org_admin(&self, caller: Principal, action: &str) -> Result<(), Error> {
        // An org-admin holds everything in every team, so any team id asks the same
        // question; a team that does not exist grants nothing else.
        let anywhere = TeamId::from_uuid(uuid::Uuid::nil());
        if self.grants(caller, anywhere).await?.is_org_admin() {
            Ok(())
        } else {
            Err(Error::permission_denied(format!(
                "{action} needs the org-admin role; {caller} does not hold it"
            )))
        }
    }

    /// Every permission `caller` holds in `team`.
    pub(crate) async fn grants(&self, caller: Principal, team: TeamId) -> Result<Grants, Error> {
        match caller {
            Principal::User(id) => {
                let Some(person) = user::Entity::find_by_id(id.as_uuid())
                    .one(self.db.conn())
                    .await
                    .map_err(db_error("reading a user"))?
                else {
                    return Ok(Grants::Nothing {
                        why: format!("unknown user {id}"),
                    });
                };
                if person.org_admin {
                    return Ok(Grants::Everything {
                        via: "role org-admin".to_owned(),
                    });
                }
                let org_sources = org_role_sources(&org_roles_from(false, &person.org_roles)?);
                let Some(roles) = self.member_roles(team, id).await? else {
                    if !org_sources.is_empty() {
                        return Ok(Grants::Sources(org_sources));
                    }
                    return Ok(Grants::Nothing {
                        why: format!("{id} is not a member of team {team}"),
                    });
                };
                let mut sources = org_sources;
                let mut custom = Vec::new();
                for name in roles {
                    match BuiltinRole::from_name(&name) {
                        Some(BuiltinRole::OrgAdmin) => {}
                        Some(builtin) => {
                            sources.push((format!("role {name}"), builtin.permissions().to_vec()))
                        }
                        None => custom.push(name),
                    }
                }
                if !custom.is_empty() {
                    let rows = role::Entity::find()
                        .filter(role::Column::TeamId.eq(team.as_uuid()))
                        .filter(role::Column::Name.is_in(custom))
                        .all(self.db.conn())
                        .await
                        .map_err(db_error("reading roles"))?;
                    for row in rows {
                        let role = role_from(row)?;
                        sources.push((format!("role {}", role.name), role.permissions));
                    }
                }
                Ok(Grants::Sources(sources))
            }
            Principal::ApiKey(id) => {
                let Some(key) = api_key::Entity::find_by_id(id.as_uuid())
                    .one(self.db.conn())
                    .await
                    .map_err(db_error("reading an API key"))?
                else {
                    return Ok(Grants::Nothing {
                        why: format!("unknown API key {id}"),
                    });
                };
                if key.revoked_at.is_some() {
                    return Ok(Grants::Nothing {
                        why: format!("API key {id} is revoked"),
                    });
                }
                if key.expires_at.is_some_and(|at| at <= now()) {
                    return Ok(Grants::Nothing {
                        why: format!("API key {id} has expired"),
                    });
                }
                if key.org_admin {
                    return Ok(Grants::Everything {
                        via: format!("org-admin API key {id}"),
                    });
                }
                let org_sources = org_role_sources(&org_roles_from(false, &key.org_roles)?);
                if key.team_id != team.as_uuid() {
                    if !org_sources.is_empty() {
                        return Ok(Grants::Sources(org_sources));
                    }
                    return Ok(Grants::Nothing {
                        why: format!("API key {id} belongs to another team than {team}"),
                    });
                }
                let names = strings_from_json(&key.permissions, "API key permissions")?;
                let permissions = Permission::parse_all(&names, "permissions").map_err(|e| {
                    tracing::error!(key = %id, error = %e, "stored API key holds an unknown permission");
                    Error::internal("a stored API key is unreadable")
                })?;
                let mut sources = org_sources;
                sources.push((format!("API key {id}"), permissions));
                Ok(Grants::Sources(sources))
            }
        }
    }
}

/// What organisation roles besides `org-admin` grant in every team, as named
/// sources (`role org-auditor`).
fn org_role_sources(roles: &[OrgRole]) -> Vec<(String, Vec<Permission>)> {
    roles
        .iter()
        .filter(|role| **role != OrgRole::Admin)
        .map(|role| (format!("role {role}"), role.permissions().iter().collect()))
        .filter(|(_, permissions): &(String, Vec<Permission>)| !permissions.is_empty())
        .collect()
}
