//! API keys for machines: `gdl_<key id>_<secret>`, recognisable in a leak by the
//! `gdl_` prefix. The secret (256 random bits) is returned once, at creation; only
//! its SHA-256 is stored. A key belongs to one team and holds a subset of its
//! creator's permissions there (an `org-admin` key, which only an org-admin can
//! create, holds every permission everywhere). Keys can expire and be revoked.

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_proto::events::v1::IamChange;
use godel_store::sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    QueryFilter, QueryOrder,
};
use godel_types::{ApiKeyId, TeamId};

use crate::directory::find_team;
use crate::entity::api_key;
use crate::permission::Permission;
use crate::refresh::{random_token, sha256_hex};
use crate::store::{
    Auth, Principal, db_error, enqueue, iam_event, json_strings, micros, now, org_roles_from,
    org_roles_json, strings_from_json,
};
use godel_identity::OrgRole;

/// The prefix every API key starts with.
pub const API_KEY_PREFIX: &str = "gdl_";

/// An API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub team: TeamId,
    pub name: String,
    pub permissions: Vec<Permission>,
    /// Every permission in every team.
    pub org_admin: bool,
    /// Every organisation role the key holds (`org-admin` included when
    /// `org_admin`; `org-auditor`, `audit-writer` for service credentials).
    pub org_roles: Vec<OrgRole>,
    /// The first characters of the key (`gdl_…`), to recognise it.
    pub prefix: String,
    /// Who created it.
    pub created_by: Principal,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub team: TeamId,
    pub name: String,
    pub permissions: Vec<Permission>,
    /// Only an org-admin may create an org-admin key.
    pub org_admin: bool,
    /// Other organisation roles (`org-auditor`, `audit-writer`); only an org-admin
    /// may grant them.
    pub org_roles: Vec<OrgRole>,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new key and its secret, which exists nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedApiKey {
    pub key: ApiKey,
    /// The whole key to hand to the client: `gdl_<key id>_<secret>`.
    pub secret: String,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The caller an API key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCaller {
    pub key: ApiKeyId,
    pub team: TeamId,
    pub permissions: Vec<Permission>,
    pub org_admin: bool,
    /// Every organisation role held (`org-admin` included when `org_admin`).
    pub org_roles: Vec<OrgRole>,
    pub expires_at: Option<DateTime<Utc>>,
}

fn key_from(row: api_key::Model) -> Result<ApiKey, Error> {
    let names = strings_from_json(&row.permissions, "API key permissions")?;
    let permissions = Permission::parse_all(&names, "permissions").map_err(|e| {
        tracing::error!(key = %row.id, error = %e, "stored API key holds an unknown permission");
        Error::internal("a stored API key is unreadable")
    })?;
    Ok(ApiKey {
        id: ApiKeyId::from_uuid(row.id),
        team: TeamId::from_uuid(row.team_id),
        name: row.name,
        permissions,
        org_roles: org_roles_from(row.org_admin, &row.org_roles)?,
        org_admin: row.org_admin,
        prefix: row.prefix,
        created_by: Principal::parse(&row.created_by).ok_or_else(|| {
            tracing::error!(key = %row.id, "stored API key has an unreadable creator");
            Error::internal("a stored API key is unreadable")
        })?,
        created_at: row.created_at,
        expires_at: row.expires_at,
        last_used_at: row.last_used_at,
        revoked_at: row.revoked_at,
    })
}

fn rejected() -> Error {
    Error::unauthenticated("invalid API key")
}

/// Splits `gdl_<32 hex>_<secret>` into the key id and the secret.
fn parse_raw(raw: &str) -> Option<(ApiKeyId, &str)> {
    let rest = raw.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.is_empty() {
        return None;
    }
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    Some((ApiKeyId::from_uuid(uuid), secret))
}

/// Compares two equal-length strings without an early exit.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// Creates an API key for `new.team`. `creator` needs `keys:manage` there and
    /// every permission it grants the key; an `org_admin` key needs an org-admin
    /// creator.
    pub async fn create_api_key(
        &self,
        creator: Principal,
        new: NewApiKey,
    ) -> Result<CreatedApiKey, Error> {
        if new.name.trim().is_empty() {
            return Err(Error::invalid_argument("name", "an API key needs a name"));
        }
        if new.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(Error::invalid_argument(
                "expires_at",
                "the expiry must be in the future",
            ));
        }
        find_team(self.db.conn(), new.team).await?;
        let grants = self.grants(creator, new.team).await?;
        if !grants.holds(Permission::KeysManage) {
            return Err(Error::permission_denied(format!(
                "creating API keys needs {} in team {}",
                Permission::KeysManage,
                new.team
            )));
        }
        let org_admin = new.org_admin || new.org_roles.contains(&OrgRole::Admin);
        if org_admin && !grants.is_org_admin() {
            return Err(Error::permission_denied(
                "only an org-admin can create an org-admin API key",
            ));
        }
        if !new.org_roles.is_empty() && !grants.is_org_admin() {
            return Err(Error::permission_denied(
                "only an org-admin can give an API key organisation roles",
            ));
        }
        let mut permissions = new.permissions.clone();
        permissions.sort();
        permissions.dedup();
        if let Some(missing) = permissions.iter().find(|p| !grants.holds(**p)) {
            return Err(Error::permission_denied(format!(
                "cannot grant {missing}: the creator does not hold it in team {}",
                new.team
            )));
        }
        let id = ApiKeyId::new();
        let secret = format!(
            "{API_KEY_PREFIX}{}_{}",
            id.as_uuid().simple(),
            random_token("")
        );
        let Some((_, secret_part)) = parse_raw(&secret) else {
            return Err(Error::internal("generating an API key failed"));
        };
        let row = api_key::ActiveModel {
            id: ActiveValue::Set(id.as_uuid()),
            team_id: ActiveValue::Set(new.team.as_uuid()),
            name: ActiveValue::Set(new.name.clone()),
            permissions: ActiveValue::Set(json_strings(
                &permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            )),
            org_admin: ActiveValue::Set(org_admin),
            org_roles: ActiveValue::Set(org_roles_json(&new.org_roles)),
            secret_hash: ActiveValue::Set(sha256_hex(secret_part)),
            prefix: ActiveValue::Set(format!("{API_KEY_PREFIX}{}", &secret_part[..6])),
            created_by: ActiveValue::Set(creator.to_string()),
            created_at: ActiveValue::Set(now()),
            expires_at: ActiveValue::Set(new.expires_at.map(micros)),
            last_used_at: ActiveValue::Set(None),
            revoked_at: ActiveValue::Set(None),
        };
        let key = self
            .write(move |txn| Box::pin(async move { insert_key(txn, creator, row).await }))
            .await?;
        Ok(CreatedApiKey { key, secret })
    }

    /// The keys of `team`, newest first.
    pub async fn list_api_keys(
        &self,
        team: TeamId,
        include_revoked: bool,
    ) -> Result<Vec<ApiKey>, Error> {
        let mut query = api_key::Entity::find().filter(api_key::Column::TeamId.eq(team.as_uuid()));
        if !include_revoked {
            query = query.filter(api_key::Column::RevokedAt.is_null());
        }
        query
            .order_by_desc(api_key::Column::CreatedAt)
            .all(self.db.conn())
            .await
            .map_err(db_error("listing API keys"))?
            .into_iter()
            .map(key_from)
            .collect()
    }

    /// Revokes `key` of `team`; revoking a revoked key changes nothing.
    pub async fn revoke_api_key(
        &self,
        actor: Principal,
        team: TeamId,
        key: ApiKeyId,
    ) -> Result<ApiKey, Error> {
        self.write(move |txn| {
            Box::pin(async move {
                let row = find_key(txn, key)
                    .await?
                    .filter(|k| k.team_id == team.as_uuid())
                    .ok_or_else(|| Error::not_found(format!("API key {key} in team {team}")))?;
                if row.revoked_at.is_some() {
                    return key_from(row);
                }
                let at = now();
                let mut active: api_key::ActiveModel = row.into();
                active.revoked_at = ActiveValue::Set(Some(at));
                let row = active
                    .update(txn)
                    .await
                    .map_err(db_error("revoking an API key"))?;
                let event = iam_event(
                    team,
                    IamChange::ApiKeyRevoked,
                    actor,
                    key.to_string(),
                    Vec::new(),
                    at,
                )?;
                enqueue(txn, &[event]).await?;
                key_from(row)
            })
        })
        .await
    }

    /// Resolves a raw API key to the caller it stands for. Unknown, malformed,
    /// revoked and expired keys all fail with the same `unauthenticated` answer.
    pub async fn authenticate_api_key(&self, raw: &str) -> Result<KeyCaller, Error> {
        let (id, secret) = parse_raw(raw).ok_or_else(rejected)?;
        let row = find_key(self.db.conn(), id).await?.ok_or_else(rejected)?;
        if !constant_time_eq(&row.secret_hash, &sha256_hex(secret)) {
            return Err(rejected());
        }
        let at = now();
        if row.revoked_at.is_some() || row.expires_at.is_some_and(|e| e <= at) {
            return Err(rejected());
        }
        let key = key_from(row.clone())?;
        let mut active: api_key::ActiveModel = row.into();
        active.last_used_at = ActiveValue::Set(Some(at));
        active
            .update(self.db.conn())
            .await
            .map_err(db_error("recording API key use"))?;
        Ok(KeyCaller::from(key))
    }

    /// The caller key `id` stands for now (for a token already issued for it):
    /// revoked, expired and unknown keys fail `unauthenticated`.
    pub async fn api_key_caller(&self, id: ApiKeyId) -> Result<KeyCaller, Error> {
        let row = find_key(self.db.conn(), id).await?.ok_or_else(rejected)?;
        if row.revoked_at.is_some() || row.expires_at.is_some_and(|e| e <= now()) {
            return Err(rejected());
        }
        Ok(KeyCaller::from(key_from(row)?))
    }
}

impl From<ApiKey> for KeyCaller {
    fn from(key: ApiKey) -> Self {
        Self {
            key: key.id,
            team: key.team,
            permissions: key.permissions,
            org_admin: key.org_admin,
            org_roles: key.org_roles,
            expires_at: key.expires_at,
        }
    }
}

async fn find_key<C: ConnectionTrait>(
    conn: &C,
    key: ApiKeyId,
) -> Result<Option<api_key::Model>, Error> {
    api_key::Entity::find_by_id(key.as_uuid())
        .one(conn)
        .await
        .map_err(db_error("reading an API key"))
}

pub(crate) async fn insert_key(
    txn: &DatabaseTransaction,
    creator: Principal,
    row: api_key::ActiveModel,
) -> Result<ApiKey, Error> {
    let row = row
        .insert(txn)
        .await
        .map_err(db_error("inserting an API key"))?;
    let key = key_from(row)?;
    let event = iam_event(
        key.team,
        IamChange::ApiKeyCreated,
        creator,
        key.id.to_string(),
        key.permissions
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        key.created_at,
    )?;
    enqueue(txn, &[event]).await?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_keys_parse_only_in_their_exact_shape() {
        let id = ApiKeyId::new();
        let raw = format!("gdl_{}_abc_def-1", id.as_uuid().simple());
        assert_eq!(parse_raw(&raw), Some((id, "abc_def-1")));
        assert_eq!(parse_raw(&format!("gdl_{}_", id.as_uuid().simple())), None);
        assert_eq!(
            parse_raw(&format!("gdx_{}_abc", id.as_uuid().simple())),
            None
        );
        assert_eq!(parse_raw("gdl_1234_abc"), None);
        assert_eq!(parse_raw(""), None);
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
