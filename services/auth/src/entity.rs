//! The sea-orm entities of the auth tables (created by `migrations::identity`). Domain
//! code converts rows to its own types; nothing outside this crate sees a row.

pub(crate) mod team {
    use godel_store::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "teams")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        #[sea_orm(unique, column_type = "Text")]
        pub name: String,
        #[sea_orm(column_type = "Text")]
        pub display_name: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod user {
    use godel_store::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub issuer: String,
        #[sea_orm(column_type = "Text")]
        pub subject: String,
        #[sea_orm(column_type = "Text")]
        pub email: String,
        #[sea_orm(column_type = "Text")]
        pub display_name: String,
        pub org_admin: bool,
        /// Organisation roles besides `org-admin`, a JSON array of names.
        #[sea_orm(column_type = "JsonBinary")]
        pub org_roles: Json,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod member {
    use godel_store::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub team_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        /// Role names, a JSON array of strings.
        #[sea_orm(column_type = "JsonBinary")]
        pub roles: Json,
        pub added_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod role {
    use godel_store::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "roles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub team_id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub name: String,
        /// Permission names, a JSON array of strings.
        #[sea_orm(column_type = "JsonBinary")]
        pub permissions: Json,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod api_key {
    use godel_store::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub team_id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub name: String,
        /// Permission names, a JSON array of strings.
        #[sea_orm(column_type = "JsonBinary")]
        pub permissions: Json,
        pub org_admin: bool,
        /// Organisation roles besides `org-admin`, a JSON array of names.
        #[sea_orm(column_type = "JsonBinary")]
        pub org_roles: Json,
        /// SHA-256 of the secret, hex.
        #[sea_orm(column_type = "Text")]
        pub secret_hash: String,
        #[sea_orm(column_type = "Text")]
        pub prefix: String,
        #[sea_orm(column_type = "Text")]
        pub created_by: String,
        pub created_at: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
        pub last_used_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod refresh_family {
    use godel_store::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_families")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub team_id: Option<Uuid>,
        pub created_at: DateTimeUtc,
        /// The absolute end of the session: no token of the family is valid after it.
        pub expires_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
        #[sea_orm(column_type = "Text", nullable)]
        pub revoked_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod refresh_token {
    use godel_store::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        /// SHA-256 of the token, hex.
        #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
        pub token_hash: String,
        pub family_id: Uuid,
        pub created_at: DateTimeUtc,
        /// Set when the token was exchanged for its successor.
        pub rotated_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod signing_key {
    use godel_store::sea_orm::entity::prelude::*;

    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signing_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
        pub kid: String,
        #[sea_orm(column_type = "Text")]
        pub algorithm: String,
        /// The Ed25519 private key seed (32 bytes). Never leaves this crate.
        pub private_key: Vec<u8>,
        /// The Ed25519 public key (32 bytes).
        pub public_key: Vec<u8>,
        pub created_at: DateTimeUtc,
        /// Set when a newer key took over signing; the key still verifies tokens
        /// until `retired_at` + the access-token lifetime + leeway.
        pub retired_at: Option<DateTimeUtc>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SigningKey")
                .field("kid", &self.kid)
                .field("algorithm", &self.algorithm)
                .field("created_at", &self.created_at)
                .field("retired_at", &self.retired_at)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod quota {
    use godel_store::sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "quotas")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub team_id: Uuid,
        pub max_concurrent_sessions: Option<i64>,
        pub max_queued_tasks: Option<i64>,
        pub rate_limit_per_minute: Option<i64>,
        pub monthly_budget_micro_usd: Option<i64>,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod oidc_login {
    use godel_store::sea_orm::entity::prelude::*;

    /// A sign-in in progress, between `BeginLogin` and `CompleteLogin`.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oidc_logins")]
    pub struct Model {
        /// SHA-256 of the `state`, hex.
        #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
        pub state_hash: String,
        #[sea_orm(column_type = "Text")]
        pub provider: String,
        /// SHA-256 of the `nonce`, hex.
        #[sea_orm(column_type = "Text")]
        pub nonce_hash: String,
        /// With the state, derives the PKCE verifier (neither alone does).
        pub pkce_salt: Vec<u8>,
        #[sea_orm(column_type = "Text")]
        pub redirect_uri: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("OidcLogin")
                .field("provider", &self.provider)
                .field("redirect_uri", &self.redirect_uri)
                .field("expires_at", &self.expires_at)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod idp_grant {
    use godel_store::sea_orm::entity::prelude::*;

    /// A role a provider's group mapping granted a user: in a team, or (no team)
    /// across the organisation.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idp_grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub provider: String,
        pub team_id: Option<Uuid>,
        #[sea_orm(column_type = "Text")]
        pub role: String,
        pub granted_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
