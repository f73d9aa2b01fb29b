//! The first start of a deployment without an identity provider (`godel up`): an
//! org-admin user, a `default` team, and an org-admin API key returned once.

use godel_error::Error;
use godel_store::sea_orm::ActiveValue;
use godel_types::ApiKeyId;

use crate::api_keys::{API_KEY_PREFIX, CreatedApiKey, insert_key};
use crate::directory::{Team, User, UserIdentity, create_team_in, insert_user, user_count};
use crate::entity::api_key;
use crate::permission::Permission;
use crate::refresh::{random_token, sha256_hex};
use crate::store::{Auth, Principal, db_error, is_unique_violation, json_strings, now};

/// The issuer of the bootstrap admin's identity (no identity provider).
pub const BOOTSTRAP_ISSUER: &str = "godel:bootstrap";
/// The subject of the bootstrap admin's identity.
pub const BOOTSTRAP_SUBJECT: &str = "admin";
/// The name of the team the bootstrap creates.
pub const DEFAULT_TEAM: &str = "default";

/// What the first start created. `api_key.secret` is shown this once.
#[derive(Debug, Clone)]
pub struct BootstrapAdmin {
    pub user: User,
    pub team: Team,
    pub api_key: CreatedApiKey,
}

impl Auth {
    /// On an empty database (no users), creates in one transaction an org-admin
    /// user, the `default` team with that user as `team-admin` (its creator), and an org-admin API
    /// key in it, and returns them. Returns `None` when any user exists, so later
    /// starts (and a concurrent start that lost the race) change nothing.
    pub async fn bootstrap(&self) -> Result<Option<BootstrapAdmin>, Error> {
        let outcome = self
            .write(|txn| {
                Box::pin(async move {
                    if user_count(txn).await? > 0 {
                        return Ok(None);
                    }
                    let identity = UserIdentity {
                        issuer: BOOTSTRAP_ISSUER.to_owned(),
                        subject: BOOTSTRAP_SUBJECT.to_owned(),
                        email: String::new(),
                        display_name: "Administrator".to_owned(),
                    };
                    let user = match insert_user(txn, &identity, true).await {
                        Ok(user) => user,
                        Err(e) if is_unique_violation(&e) => return Ok(None),
                        Err(e) => return Err(db_error("inserting the first admin")(e)),
                    };
                    let actor = Principal::User(user.id);
                    let team = create_team_in(txn, actor, DEFAULT_TEAM, "Default").await?;
                    let id = ApiKeyId::new();
                    let secret_part = random_token("");
                    let secret = format!("{API_KEY_PREFIX}{}_{secret_part}", id.as_uuid().simple());
                    let names: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
                    let row = api_key::ActiveModel {
                        id: ActiveValue::Set(id.as_uuid()),
                        team_id: ActiveValue::Set(team.id.as_uuid()),
                        name: ActiveValue::Set("bootstrap admin".to_owned()),
                        permissions: ActiveValue::Set(json_strings(&names)),
                        org_admin: ActiveValue::Set(true),
                        org_roles: ActiveValue::Set(json_strings::<&str>(&[])),
                        secret_hash: ActiveValue::Set(sha256_hex(&secret_part)),
                        prefix: ActiveValue::Set(format!("{API_KEY_PREFIX}{}", &secret_part[..6])),
                        created_by: ActiveValue::Set(user.id.to_string()),
                        created_at: ActiveValue::Set(now()),
                        expires_at: ActiveValue::Set(None),
                        last_used_at: ActiveValue::Set(None),
                        revoked_at: ActiveValue::Set(None),
                    };
                    let key = insert_key(txn, actor, row).await?;
                    Ok(Some(BootstrapAdmin {
                        user,
                        team,
                        api_key: CreatedApiKey { key, secret },
                    }))
                })
            })
            .await;
        match outcome {
            Ok(done) => Ok(done),
            // A concurrent first start committed its admin first.
            Err(e) if e.code == godel_error::ErrorCode::AlreadyExists => Ok(None),
            Err(e) => Err(e),
        }
    }
}
