//! Teams, users, memberships and custom roles. Every change writes an IAM event to
//! the outbox in the same transaction.

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_proto::events::v1::IamChange;
use godel_store::sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder,
};
use godel_types::{RoleId, TeamId, UserId};

use crate::entity::{member, role, team, user};
use crate::permission::{BuiltinRole, Permission};
use crate::store::{
    Auth, Principal, db_error, enqueue, iam_event, is_unique_violation, json_strings, now,
    org_roles_from, org_roles_json, strings_from_json,
};
use godel_identity::OrgRole;

/// A team: the isolation boundary for every resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: TeamId,
    /// Unique and URL-safe (`core-infra`).
    pub name: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

/// A person, identified by their identity provider's `(iss, sub)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub issuer: String,
    pub subject: String,
    pub email: String,
    pub display_name: String,
    /// Holds the `org-admin` role: every permission in every team.
    pub org_admin: bool,
    /// Every organisation role held (`org-admin` included when `org_admin`).
    pub org_roles: Vec<OrgRole>,
    pub created_at: DateTime<Utc>,
}

/// What an identity provider says about a person signing in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: String,
    pub display_name: String,
}

/// A user's membership in a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub team: TeamId,
    pub user: UserId,
    pub email: String,
    pub display_name: String,
    /// Role names (built-in team roles or the team's custom roles).
    pub roles: Vec<String>,
    pub added_at: DateTime<Utc>,
}

/// A named set of permissions: built in (no id, no team) or a team's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: Option<RoleId>,
    pub team: Option<TeamId>,
    pub name: String,
    pub permissions: Vec<Permission>,
    pub built_in: bool,
}

impl Role {
    fn builtin(role: BuiltinRole) -> Self {
        Self {
            id: None,
            team: None,
            name: role.name().to_owned(),
            permissions: role.permissions().to_vec(),
            built_in: true,
        }
    }
}

fn team_from(row: team::Model) -> Team {
    Team {
        id: TeamId::from_uuid(row.id),
        name: row.name,
        display_name: row.display_name,
        created_at: row.created_at,
    }
}

fn user_from(row: user::Model) -> Result<User, Error> {
    Ok(User {
        id: UserId::from_uuid(row.id),
        org_roles: org_roles_from(row.org_admin, &row.org_roles)?,
        issuer: row.issuer,
        subject: row.subject,
        email: row.email,
        display_name: row.display_name,
        org_admin: row.org_admin,
        created_at: row.created_at,
    })
}

pub(crate) fn role_from(row: role::Model) -> Result<Role, Error> {
    let names = strings_from_json(&row.permissions, "role permissions")?;
    let permissions = Permission::parse_all(&names, "permissions").map_err(|e| {
        tracing::error!(role = %row.name, error = %e, "stored role holds an unknown permission");
        Error::internal("a stored role is unreadable")
    })?;
    Ok(Role {
        id: Some(RoleId::from_uuid(row.id)),
        team: Some(TeamId::from_uuid(row.team_id)),
        name: row.name,
        permissions,
        built_in: false,
    })
}

/// Team names: 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit.
fn validate_name(name: &str, field: &str, what: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            field,
            format!(
                "{what} `{name}` must be 1-63 characters of a-z, 0-9 and `-`, not starting with `-`"
            ),
        ))
    }
}

impl Auth {
    /// Creates a team. When `actor` is a user, they become its first `team-admin`.
    pub async fn create_team(
        &self,
        actor: Principal,
        name: &str,
        display_name: &str,
    ) -> Result<Team, Error> {
        validate_name(name, "name", "team name")?;
        let (name, display_name) = (name.to_owned(), display_name.to_owned());
        self.write(move |txn| {
            Box::pin(async move { create_team_in(txn, actor, &name, &display_name).await })
        })
        .await
    }

    pub async fn get_team(&self, team: TeamId) -> Result<Team, Error> {
        find_team(self.db.conn(), team).await
    }

    /// Every team, by name.
    pub async fn list_teams(&self) -> Result<Vec<Team>, Error> {
        let rows = team::Entity::find()
            .order_by_asc(team::Column::Name)
            .all(self.db.conn())
            .await
            .map_err(db_error("listing teams"))?;
        Ok(rows.into_iter().map(team_from).collect())
    }

    /// The teams `user` is a member of, by name.
    pub async fn list_teams_of(&self, user: UserId) -> Result<Vec<Team>, Error> {
        let ids: Vec<_> = member::Entity::find()
            .filter(member::Column::UserId.eq(user.as_uuid()))
            .all(self.db.conn())
            .await
            .map_err(db_error("listing memberships"))?
            .into_iter()
            .map(|m| m.team_id)
            .collect();
        let rows = team::Entity::find()
            .filter(team::Column::Id.is_in(ids))
            .order_by_asc(team::Column::Name)
            .all(self.db.conn())
            .await
            .map_err(db_error("listing teams"))?;
        Ok(rows.into_iter().map(team_from).collect())
    }

    /// Finds the user `identity` names by `(issuer, subject)`, creating them on first
    /// sign-in; a later sign-in refreshes the email and display name. Returns the
    /// user and whether this call created it. Safe to call concurrently.
    pub async fn provision_user(&self, identity: &UserIdentity) -> Result<(User, bool), Error> {
        if identity.issuer.is_empty() || identity.subject.is_empty() {
            return Err(Error::invalid_argument(
                "subject",
                "an identity needs an issuer and a subject",
            ));
        }
        for _ in 0..2 {
            if let Some(row) = find_user_by_identity(self.db.conn(), identity).await? {
                if row.email == identity.email && row.display_name == identity.display_name {
                    return Ok((user_from(row)?, false));
                }
                let mut active: user::ActiveModel = row.into();
                active.email = ActiveValue::Set(identity.email.clone());
                active.display_name = ActiveValue::Set(identity.display_name.clone());
                let row = active
                    .update(self.db.conn())
                    .await
                    .map_err(db_error("updating a user"))?;
                return Ok((user_from(row)?, false));
            }
            match insert_user(self.db.conn(), identity, false).await {
                Ok(user) => return Ok((user, true)),
                // Someone provisioned the same identity at the same time: read theirs.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(db_error("inserting a user")(e)),
            }
        }
        Err(Error::aborted("provisioning the user raced; retry"))
    }

    pub async fn get_user(&self, user: UserId) -> Result<User, Error> {
        find_user(self.db.conn(), user).await
    }

    /// Grants or withdraws the `org-admin` role.
    pub async fn set_org_admin(&self, user: UserId, org_admin: bool) -> Result<User, Error> {
        let row = user::Entity::find_by_id(user.as_uuid())
            .one(self.db.conn())
            .await
            .map_err(db_error("reading a user"))?
            .ok_or_else(|| Error::not_found(format!("user {user}")))?;
        let mut active: user::ActiveModel = row.into();
        active.org_admin = ActiveValue::Set(org_admin);
        let row = active
            .update(self.db.conn())
            .await
            .map_err(db_error("updating a user"))?;
        user_from(row)
    }

    /// Sets the organisation roles `user` holds to exactly `roles` (`org-admin`
    /// and `org-auditor`; `audit-writer` is for service API keys, not people).
    pub async fn set_org_roles(&self, user: UserId, roles: &[OrgRole]) -> Result<User, Error> {
        if roles.contains(&OrgRole::AuditWriter) {
            return Err(Error::invalid_argument(
                "org_roles",
                "`audit-writer` is a service role: give it to an API key, not a person",
            ));
        }
        let row = user::Entity::find_by_id(user.as_uuid())
            .one(self.db.conn())
            .await
            .map_err(db_error("reading a user"))?
            .ok_or_else(|| Error::not_found(format!("user {user}")))?;
        let mut active: user::ActiveModel = row.into();
        active.org_admin = ActiveValue::Set(roles.contains(&OrgRole::Admin));
        active.org_roles = ActiveValue::Set(org_roles_json(roles));
        let row = active
            .update(self.db.conn())
            .await
            .map_err(db_error("updating a user"))?;
        user_from(row)
    }

    /// Adds `user` to `team` with `roles`, or replaces the roles of a member.
    /// Roles are built-in team roles (`team-admin`, `developer`, `viewer`,
    /// `auditor`) or the team's custom roles; at least one.
    pub async fn add_member(
        &self,
        actor: Principal,
        team: TeamId,
        user: UserId,
        roles: &[String],
    ) -> Result<Member, Error> {
        let roles = roles.to_vec();
        self.write(move |txn| {
            Box::pin(async move { add_member_in(txn, actor, team, user, roles).await })
        })
        .await
    }

    /// Removes `user` from `team`.
    pub async fn remove_member(
        &self,
        actor: Principal,
        team: TeamId,
        user: UserId,
    ) -> Result<(), Error> {
        self.write(move |txn| {
            Box::pin(async move { remove_member_in(txn, actor, team, user).await })
        })
        .await
    }

    /// The members of `team`, in the order they joined.
    pub async fn list_members(&self, team: TeamId) -> Result<Vec<Member>, Error> {
        find_team(self.db.conn(), team).await?;
        let rows = member::Entity::find()
            .filter(member::Column::TeamId.eq(team.as_uuid()))
            .order_by_asc(member::Column::AddedAt)
            .all(self.db.conn())
            .await
            .map_err(db_error("listing members"))?;
        let user_ids: Vec<_> = rows.iter().map(|m| m.user_id).collect();
        let users = user::Entity::find()
            .filter(user::Column::Id.is_in(user_ids))
            .all(self.db.conn())
            .await
            .map_err(db_error("listing users"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(u) = users.iter().find(|u| u.id == row.user_id) else {
                continue;
            };
            out.push(Member {
                team,
                user: UserId::from_uuid(row.user_id),
                email: u.email.clone(),
                display_name: u.display_name.clone(),
                roles: strings_from_json(&row.roles, "member roles")?,
                added_at: row.added_at,
            });
        }
        Ok(out)
    }

    /// The role names `user` holds in `team`, or `None` when not a member.
    pub async fn member_roles(
        &self,
        team: TeamId,
        user: UserId,
    ) -> Result<Option<Vec<String>>, Error> {
        let row = member::Entity::find_by_id((team.as_uuid(), user.as_uuid()))
            .one(self.db.conn())
            .await
            .map_err(db_error("reading a membership"))?;
        row.map(|m| strings_from_json(&m.roles, "member roles"))
            .transpose()
    }

    /// Creates a custom role of `team` made of catalog permissions. Unknown
    /// permissions fail with `invalid_argument` naming them; the name must not be a
    /// built-in role's.
    pub async fn create_role(
        &self,
        actor: Principal,
        team: TeamId,
        name: &str,
        permissions: &[String],
    ) -> Result<Role, Error> {
        validate_name(name, "name", "role name")?;
        if BuiltinRole::from_name(name).is_some() {
            return Err(Error::already_exists(format!("built-in role `{name}`")));
        }
        let permissions = Permission::parse_all(permissions, "permissions")?;
        if permissions.is_empty() {
            return Err(Error::invalid_argument(
                "permissions",
                "a role needs at least one permission",
            ));
        }
        let name = name.to_owned();
        self.write(move |txn| {
            Box::pin(async move {
                find_team(txn, team).await?;
                let id = RoleId::new();
                let names: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
                let at = now();
                let inserted = role::ActiveModel {
                    id: ActiveValue::Set(id.as_uuid()),
                    team_id: ActiveValue::Set(team.as_uuid()),
                    name: ActiveValue::Set(name.clone()),
                    permissions: ActiveValue::Set(json_strings(&names)),
                    created_at: ActiveValue::Set(at),
                }
                .insert(txn)
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        return Err(Error::already_exists(format!(
                            "role `{name}` in team {team}"
                        )));
                    }
                    Err(e) => return Err(db_error("inserting a role")(e)),
                }
                let event = iam_event(
                    team,
                    IamChange::RoleCreated,
                    actor,
                    id.to_string(),
                    vec![name.clone()],
                    at,
                )?;
                enqueue(txn, &[event]).await?;
                Ok(Role {
                    id: Some(id),
                    team: Some(team),
                    name,
                    permissions,
                    built_in: false,
                })
            })
        })
        .await
    }

    /// The built-in roles, then `team`'s own roles by name.
    pub async fn list_roles(&self, team: TeamId) -> Result<Vec<Role>, Error> {
        let mut roles: Vec<Role> = BuiltinRole::ALL.iter().map(|r| Role::builtin(*r)).collect();
        let rows = role::Entity::find()
            .filter(role::Column::TeamId.eq(team.as_uuid()))
            .order_by_asc(role::Column::Name)
            .all(self.db.conn())
            .await
            .map_err(db_error("listing roles"))?;
        for row in rows {
            roles.push(role_from(row)?);
        }
        Ok(roles)
    }
}

/// How many users exist (the bootstrap runs only when there are none).
pub(crate) async fn user_count<C: ConnectionTrait>(conn: &C) -> Result<u64, Error> {
    user::Entity::find()
        .count(conn)
        .await
        .map_err(db_error("counting users"))
}

pub(crate) async fn find_team<C: ConnectionTrait>(conn: &C, team: TeamId) -> Result<Team, Error> {
    team::Entity::find_by_id(team.as_uuid())
        .one(conn)
        .await
        .map_err(db_error("reading a team"))?
        .map(team_from)
        .ok_or_else(|| Error::not_found(format!("team {team}")))
}

pub(crate) async fn find_user<C: ConnectionTrait>(conn: &C, user: UserId) -> Result<User, Error> {
    user::Entity::find_by_id(user.as_uuid())
        .one(conn)
        .await
        .map_err(db_error("reading a user"))?
        .map(user_from)
        .ok_or_else(|| Error::not_found(format!("user {user}")))?
}

async fn find_user_by_identity<C: ConnectionTrait>(
    conn: &C,
    identity: &UserIdentity,
) -> Result<Option<user::Model>, Error> {
    user::Entity::find()
        .filter(user::Column::Issuer.eq(identity.issuer.clone()))
        .filter(user::Column::Subject.eq(identity.subject.clone()))
        .one(conn)
        .await
        .map_err(db_error("reading a user"))
}

pub(crate) async fn insert_user<C: ConnectionTrait>(
    conn: &C,
    identity: &UserIdentity,
    org_admin: bool,
) -> Result<User, godel_store::sea_orm::DbErr> {
    let row = user::ActiveModel {
        id: ActiveValue::Set(UserId::new().as_uuid()),
        issuer: ActiveValue::Set(identity.issuer.clone()),
        subject: ActiveValue::Set(identity.subject.clone()),
        email: ActiveValue::Set(identity.email.clone()),
        display_name: ActiveValue::Set(identity.display_name.clone()),
        org_admin: ActiveValue::Set(org_admin),
        org_roles: ActiveValue::Set(json_strings::<&str>(&[])),
        created_at: ActiveValue::Set(now()),
    }
    .insert(conn)
    .await?;
    user_from(row).map_err(|e| godel_store::sea_orm::DbErr::Custom(e.message))
}

pub(crate) async fn create_team_in(
    txn: &DatabaseTransaction,
    actor: Principal,
    name: &str,
    display_name: &str,
) -> Result<Team, Error> {
    let id = TeamId::new();
    let at = now();
    let inserted = team::ActiveModel {
        id: ActiveValue::Set(id.as_uuid()),
        name: ActiveValue::Set(name.to_owned()),
        display_name: ActiveValue::Set(display_name.to_owned()),
        created_at: ActiveValue::Set(at),
    }
    .insert(txn)
    .await;
    let row = match inserted {
        Ok(row) => row,
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::already_exists(format!("team named `{name}`")));
        }
        Err(e) => return Err(db_error("inserting a team")(e)),
    };
    let created = iam_event(
        id,
        IamChange::TeamCreated,
        actor,
        id.to_string(),
        Vec::new(),
        at,
    )?;
    enqueue(txn, &[created]).await?;
    if let Principal::User(user) = actor {
        add_member_in(
            txn,
            actor,
            id,
            user,
            vec![BuiltinRole::TeamAdmin.name().to_owned()],
        )
        .await?;
    }
    Ok(team_from(row))
}

pub(crate) async fn add_member_in(
    txn: &DatabaseTransaction,
    actor: Principal,
    team: TeamId,
    user: UserId,
    mut roles: Vec<String>,
) -> Result<Member, Error> {
    find_team(txn, team).await?;
    let person = find_user(txn, user).await?;
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(Error::invalid_argument(
            "roles",
            "a member needs at least one role",
        ));
    }
    for name in &roles {
        check_team_role(txn, team, name).await?;
    }
    let at = now();
    let existing = member::Entity::find_by_id((team.as_uuid(), user.as_uuid()))
        .one(txn)
        .await
        .map_err(db_error("reading a membership"))?;
    let (change, added_at) = match existing {
        Some(row) => {
            let added_at = row.added_at;
            let mut active: member::ActiveModel = row.into();
            active.roles = ActiveValue::Set(json_strings(&roles));
            active
                .update(txn)
                .await
                .map_err(db_error("updating a membership"))?;
            (IamChange::MemberUpdated, added_at)
        }
        None => {
            member::ActiveModel {
                team_id: ActiveValue::Set(team.as_uuid()),
                user_id: ActiveValue::Set(user.as_uuid()),
                roles: ActiveValue::Set(json_strings(&roles)),
                added_at: ActiveValue::Set(at),
            }
            .insert(txn)
            .await
            .map_err(db_error("inserting a membership"))?;
            (IamChange::MemberAdded, at)
        }
    };
    let event = iam_event(team, change, actor, user.to_string(), roles.clone(), at)?;
    enqueue(txn, &[event]).await?;
    Ok(Member {
        team,
        user,
        email: person.email,
        display_name: person.display_name,
        roles,
        added_at,
    })
}

pub(crate) async fn remove_member_in(
    txn: &DatabaseTransaction,
    actor: Principal,
    team: TeamId,
    user: UserId,
) -> Result<(), Error> {
    let deleted = member::Entity::delete_by_id((team.as_uuid(), user.as_uuid()))
        .exec(txn)
        .await
        .map_err(db_error("removing a member"))?;
    if deleted.rows_affected == 0 {
        return Err(Error::not_found(format!("member {user} of team {team}")));
    }
    let event = iam_event(
        team,
        IamChange::MemberRemoved,
        actor,
        user.to_string(),
        Vec::new(),
        now(),
    )?;
    enqueue(txn, &[event]).await
}

/// The team called `name`, if any.
pub(crate) async fn find_team_by_name<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> Result<Option<Team>, Error> {
    Ok(team::Entity::find()
        .filter(team::Column::Name.eq(name))
        .one(conn)
        .await
        .map_err(db_error("reading a team"))?
        .map(team_from))
}

/// `name` must be a built-in team role or one of `team`'s custom roles.
pub(crate) async fn check_team_role<C: ConnectionTrait>(
    conn: &C,
    team: TeamId,
    name: &str,
) -> Result<(), Error> {
    if BuiltinRole::from_name(name) == Some(BuiltinRole::OrgAdmin) {
        return Err(Error::invalid_argument(
            "roles",
            "`org-admin` is held across the organisation, not granted in a team",
        ));
    }
    if BuiltinRole::from_name(name).is_some() {
        return Ok(());
    }
    let found = role::Entity::find()
        .filter(role::Column::TeamId.eq(team.as_uuid()))
        .filter(role::Column::Name.eq(name))
        .count(conn)
        .await
        .map_err(db_error("reading a role"))?;
    if found == 0 {
        return Err(Error::invalid_argument(
            "roles",
            format!("unknown role `{name}` in team {team}"),
        ));
    }
    Ok(())
}
