//! Domain values to their proto messages, for the answers of the `AuthService`.

use godel_error::Error;
use godel_identity::OrgRole;
use godel_proto::auth::v1 as pb;
use godel_proto::convert::{to_optional_timestamp, to_timestamp};

use crate::api_keys::ApiKey;
use crate::directory::{Member, Role, Team, User};
use crate::quotas::TeamQuotas;
use crate::refresh::TokenPair;

pub(super) fn team_to_pb(t: Team) -> pb::Team {
    pb::Team {
        id: t.id.to_string(),
        name: t.name,
        display_name: t.display_name,
        created_at: Some(to_timestamp(t.created_at)),
    }
}

pub(super) fn member_to_pb(m: Member) -> pb::Member {
    pb::Member {
        team_id: m.team.to_string(),
        user_id: m.user.to_string(),
        email: m.email,
        display_name: m.display_name,
        roles: m.roles,
        added_at: Some(to_timestamp(m.added_at)),
    }
}

pub(super) fn role_to_pb(r: Role) -> pb::Role {
    pb::Role {
        id: r.id.map(|id| id.to_string()).unwrap_or_default(),
        team_id: r.team.map(|t| t.to_string()).unwrap_or_default(),
        name: r.name,
        permissions: r
            .permissions
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        built_in: r.built_in,
    }
}

pub(super) fn key_to_pb(k: ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        team_id: k.team.to_string(),
        name: k.name,
        permissions: k
            .permissions
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        org_admin: k.org_admin,
        org_roles: org_role_names(&k.org_roles),
        prefix: k.prefix,
        created_by: k.created_by.to_string(),
        created_at: Some(to_timestamp(k.created_at)),
        expires_at: to_optional_timestamp(k.expires_at),
        last_used_at: to_optional_timestamp(k.last_used_at),
        revoked_at: to_optional_timestamp(k.revoked_at),
    }
}

pub(super) fn quotas_to_pb(q: TeamQuotas) -> pb::Quotas {
    pb::Quotas {
        team_id: q.team.to_string(),
        max_concurrent_sessions: q.quotas.max_concurrent_sessions,
        max_queued_tasks: q.quotas.max_queued_tasks,
        rate_limit_per_minute: q.quotas.rate_limit_per_minute,
        monthly_budget_micro_usd: q.quotas.monthly_budget_micro_usd,
    }
}

pub(super) fn user_to_pb(u: User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        issuer: u.issuer,
        subject: u.subject,
        email: u.email,
        display_name: u.display_name,
        org_admin: u.org_admin,
        org_roles: org_role_names(&u.org_roles),
        created_at: Some(to_timestamp(u.created_at)),
    }
}

pub(super) fn tokens_to_pb(t: TokenPair) -> pb::TokenPair {
    pb::TokenPair {
        access_token: t.access_token,
        access_expires_at: Some(to_timestamp(t.access_expires_at)),
        refresh_token: t.refresh_token,
        refresh_expires_at: Some(to_timestamp(t.refresh_expires_at)),
    }
}

fn org_role_names(roles: &[OrgRole]) -> Vec<String> {
    roles.iter().map(|r| r.name().to_owned()).collect()
}

/// Organisation roles by name; an unknown name is `invalid_argument` naming it.
pub(super) fn org_roles_from_names(names: &[String]) -> Result<Vec<OrgRole>, Error> {
    names
        .iter()
        .map(|name| {
            OrgRole::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = OrgRole::ALL.iter().map(|r| r.name()).collect();
                Error::invalid_argument(
                    "org_roles",
                    format!(
                        "unknown organisation role `{name}` (known: {})",
                        known.join(", ")
                    ),
                )
            })
        })
        .collect()
}
