//! What a completed sign-in changes: the user (created on first sign-in, email and
//! name refreshed later) and the roles the provider's group mappings grant.
//!
//! Group mappings are applied at every sign-in, in one transaction: roles the
//! user's groups map to are added; roles an earlier sign-in granted through a
//! mapping (recorded in `idp_grants`) and no longer mapped are withdrawn; roles
//! granted by hand are never touched. A member left without roles is removed from
//! the team. Mappings naming a team or role that does not exist are skipped with a
//! warning rather than failing the sign-in. Membership changes write IAM events
//! with the signing-in user as the actor.

use std::collections::{BTreeMap, BTreeSet};

use godel_error::{Error, ErrorCode};
use godel_identity::OrgRole;
use godel_store::sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    sea_query::Expr,
};
use godel_types::{TeamId, UserId};

use super::config::{Grant, ProviderConfig};
use crate::directory::{
    add_member_in, check_team_role, find_team, find_team_by_name, remove_member_in,
};
use crate::entity::{idp_grant, member, user};
use crate::store::{Auth, Principal, db_error, now, org_roles_json, strings_from_json};

/// The organisation roles a group mapping may grant (`audit-writer` is for service
/// credentials, never people).
pub(crate) const MAPPABLE_ORG_ROLES: &[OrgRole] = &[OrgRole::Admin, OrgRole::Auditor];

/// The `idp_grants.role` of an organisation-wide grant.
fn org_role_name(role: OrgRole) -> &'static str {
    role.name()
}

/// What one sign-in's groups grant: roles per team, and organisation roles.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wanted {
    teams: BTreeMap<TeamId, BTreeSet<String>>,
    org: BTreeSet<String>,
}

impl Auth {
    /// Applies `provider`'s group mappings for `user`, who is in `groups` now.
    pub(crate) async fn apply_group_mappings(
        &self,
        provider: &ProviderConfig,
        user: UserId,
        groups: &[String],
    ) -> Result<(), Error> {
        let provider = provider.clone();
        let groups: BTreeSet<String> = groups.iter().cloned().collect();
        self.write(move |txn| {
            Box::pin(async move {
                let wanted = wanted(txn, &provider, &groups).await?;
                sync(txn, &provider.name, user, wanted).await
            })
        })
        .await
    }
}

/// Resolves the mappings matching `groups` to teams and roles that exist.
async fn wanted(
    txn: &DatabaseTransaction,
    provider: &ProviderConfig,
    groups: &BTreeSet<String>,
) -> Result<Wanted, Error> {
    let mut out = Wanted::default();
    for mapping in &provider.group_mappings {
        if !groups.contains(&mapping.group) {
            continue;
        }
        match mapping.grant() {
            Err(why) => skip(&provider.name, &mapping.group, &why),
            Ok(Grant::Org(role)) => {
                out.org.insert(org_role_name(role).to_owned());
            }
            Ok(Grant::Team { team, role }) => {
                let Some(id) = resolve_team(txn, team).await? else {
                    skip(&provider.name, &mapping.group, &format!("no team `{team}`"));
                    continue;
                };
                match check_team_role(txn, id, role).await {
                    Ok(()) => {
                        out.teams.entry(id).or_default().insert(role.to_owned());
                    }
                    Err(e) if e.code == ErrorCode::InvalidArgument => {
                        skip(&provider.name, &mapping.group, &e.message);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(out)
}

fn skip(provider: &str, group: &str, why: &str) {
    tracing::warn!(provider, group, "skipping a group mapping: {why}");
}

/// A team by `team_…` id or by name.
async fn resolve_team(txn: &DatabaseTransaction, text: &str) -> Result<Option<TeamId>, Error> {
    if let Ok(id) = text.parse::<TeamId>() {
        return match find_team(txn, id).await {
            Ok(team) => Ok(Some(team.id)),
            Err(e) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        };
    }
    Ok(find_team_by_name(txn, text).await?.map(|t| t.id))
}

/// Moves `user`'s memberships and organisation roles from what `provider` granted
/// last time to `wanted`, and records `wanted` as what it grants now.
async fn sync(
    txn: &DatabaseTransaction,
    provider: &str,
    user: UserId,
    wanted: Wanted,
) -> Result<(), Error> {
    let previous = idp_grant::Entity::find()
        .filter(idp_grant::Column::UserId.eq(user.as_uuid()))
        .filter(idp_grant::Column::Provider.eq(provider))
        .all(txn)
        .await
        .map_err(db_error("reading granted roles"))?;
    let mut before = Wanted::default();
    for row in &previous {
        match row.team_id {
            Some(team) => {
                before
                    .teams
                    .entry(TeamId::from_uuid(team))
                    .or_default()
                    .insert(row.role.clone());
            }
            None => {
                before.org.insert(row.role.clone());
            }
        }
    }
    let actor = Principal::User(user);
    let teams: BTreeSet<TeamId> = before
        .teams
        .keys()
        .chain(wanted.teams.keys())
        .copied()
        .collect();
    let none = BTreeSet::new();
    for team in teams {
        let was = before.teams.get(&team).unwrap_or(&none);
        let want = wanted.teams.get(&team).unwrap_or(&none);
        let current = member::Entity::find_by_id((team.as_uuid(), user.as_uuid()))
            .one(txn)
            .await
            .map_err(db_error("reading a membership"))?
            .map(|m| strings_from_json(&m.roles, "member roles"))
            .transpose()?
            .map(|r| r.into_iter().collect::<BTreeSet<String>>());
        let mut roles = current.clone().unwrap_or_default();
        roles.retain(|r| !was.contains(r) || want.contains(r));
        roles.extend(want.iter().cloned());
        if current.as_ref() == Some(&roles) || (current.is_none() && roles.is_empty()) {
            continue;
        }
        if roles.is_empty() {
            remove_member_in(txn, actor, team, user).await?;
        } else {
            add_member_in(txn, actor, team, user, roles.into_iter().collect()).await?;
        }
    }
    let mut wanted = wanted;
    let held: BTreeSet<OrgRole> = crate::directory::find_user(txn, user)
        .await?
        .org_roles
        .into_iter()
        .collect();
    let mut roles = held.clone();
    for role in MAPPABLE_ORG_ROLES {
        let name = org_role_name(*role);
        if held.contains(role) && !before.org.contains(name) {
            // Granted by hand: the mapping neither records nor ever withdraws it.
            wanted.org.remove(name);
        } else if wanted.org.contains(name) {
            roles.insert(*role);
        } else if before.org.contains(name) {
            roles.remove(role);
        }
    }
    if roles != held {
        let roles: Vec<OrgRole> = roles.into_iter().collect();
        user::Entity::update_many()
            .col_expr(
                user::Column::OrgAdmin,
                Expr::value(roles.contains(&OrgRole::Admin)),
            )
            .col_expr(user::Column::OrgRoles, Expr::value(org_roles_json(&roles)))
            .filter(user::Column::Id.eq(user.as_uuid()))
            .exec(txn)
            .await
            .map_err(db_error("updating a user's organisation roles"))?;
    }
    idp_grant::Entity::delete_many()
        .filter(idp_grant::Column::UserId.eq(user.as_uuid()))
        .filter(idp_grant::Column::Provider.eq(provider))
        .exec(txn)
        .await
        .map_err(db_error("replacing granted roles"))?;
    let at = now();
    let mut rows: Vec<(Option<uuid::Uuid>, String)> = Vec::new();
    for (team, roles) in &wanted.teams {
        for role in roles {
            rows.push((Some(team.as_uuid()), role.clone()));
        }
    }
    for role in &wanted.org {
        rows.push((None, role.clone()));
    }
    for (team, role) in rows {
        idp_grant::ActiveModel {
            id: ActiveValue::Set(uuid::Uuid::now_v7()),
            user_id: ActiveValue::Set(user.as_uuid()),
            provider: ActiveValue::Set(provider.to_owned()),
            team_id: ActiveValue::Set(team),
            role: ActiveValue::Set(role),
            granted_at: ActiveValue::Set(at),
        }
        .insert(txn)
        .await
        .map_err(db_error("recording a granted role"))?;
    }
    Ok(())
}
