//! The permission catalog and the built-in roles: the one place permission names are
//! defined. `docs/permissions.md` documents the same table; a test keeps them equal.
//! The auth service grants permissions; every service checks them on what it owns
//! ([`Caller::require`](crate::Caller::require)).

use std::fmt;
use std::str::FromStr;

use godel_error::Error;

macro_rules! catalog {
    ($($(#[$doc:meta])* $variant:ident = $name:literal),* $(,)?) => {
        /// A permission: `<resource>:<verb>`. Every permission Godel checks is here.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $($(#[$doc])* $variant,)*
        }

        impl Permission {
            /// Every permission of the catalog, in catalog order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// The permission's name, for example `tasks:create`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }
        }
    };
}

catalog! {
    /// Submit tasks to the team's queue.
    TasksCreate = "tasks:create",
    /// See the team's tasks, their state, results and history.
    TasksRead = "tasks:read",
    /// Cancel the team's tasks.
    TasksCancel = "tasks:cancel",
    /// Submit plans (DAGs of tasks).
    PlansCreate = "plans:create",
    /// See the team's plans.
    PlansRead = "plans:read",
    /// Cancel the team's plans.
    PlansCancel = "plans:cancel",
    /// See the team's agent sessions, their events and logs.
    SessionsRead = "sessions:read",
    /// Stop the team's agent sessions.
    SessionsStop = "sessions:stop",
    /// See the team's dead-letter queue and queue statistics.
    DlqRead = "dlq:read",
    /// Retry or discard dead-lettered tasks.
    DlqManage = "dlq:manage",
    /// See the team, its members and its roles.
    TeamsRead = "teams:read",
    /// Change the team's settings.
    TeamsManage = "teams:manage",
    /// Add and remove members and change their roles.
    MembersManage = "members:manage",
    /// Create and change the team's custom roles.
    RolesManage = "roles:manage",
    /// Create, list and revoke the team's API keys.
    KeysManage = "keys:manage",
    /// Store and rotate the team's model-provider keys.
    ProviderKeysManage = "provider_keys:manage",
    /// See the team's quotas.
    QuotasRead = "quotas:read",
    /// Change the team's quotas.
    QuotasManage = "quotas:manage",
    /// Query and verify the team's audit log.
    AuditRead = "audit:read",
}

impl Permission {
    /// Parses permission names, failing with `invalid_argument` on `field` naming the
    /// first unknown one. Duplicates are dropped; the result is sorted.
    pub fn parse_all<S: AsRef<str>>(names: &[S], field: &str) -> Result<Vec<Self>, Error> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref();
            let permission = name.parse::<Permission>().map_err(|_| {
                Error::invalid_argument(
                    field,
                    format!("unknown permission `{name}` (see docs/permissions.md)"),
                )
            })?;
            out.push(permission);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

// A `PermissionSet` is a bit per catalog entry.
const _: () = assert!(
    Permission::ALL.len() <= 64,
    "PermissionSet holds at most 64 permissions"
);

impl Permission {
    const fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

/// A set of catalog permissions (a bit each): what a caller holds in a team.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PermissionSet(u64);

impl PermissionSet {
    /// No permission.
    pub const EMPTY: PermissionSet = PermissionSet(0);

    /// Every permission of the catalog.
    pub fn all() -> Self {
        Permission::ALL.iter().copied().collect()
    }

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    pub fn insert(&mut self, permission: Permission) {
        self.0 |= permission.bit();
    }

    /// Every permission in either set.
    #[must_use]
    pub fn union(self, other: PermissionSet) -> Self {
        PermissionSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The permissions in catalog order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(move |p| self.contains(*p))
    }

    /// The permission names, in catalog order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Permission::as_str).collect()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = PermissionSet::EMPTY;
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl<'a> FromIterator<&'a Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = &'a Permission>>(iter: I) -> Self {
        iter.into_iter().copied().collect()
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Permission::as_str))
            .finish()
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not in the permission catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission `{0}`")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPermission(s.to_owned()))
    }
}

/// A role every deployment has. `org-admin` is held by users (and API keys) across
/// the organisation; the others are granted per team through memberships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinRole {
    /// Everything, in every team.
    OrgAdmin,
    /// Everything, in the teams where it is held.
    TeamAdmin,
    /// Runs work: tasks, plans and sessions, and reads the team.
    Developer,
    /// Reads the team's work.
    Viewer,
    /// Reads the audit log.
    Auditor,
}

impl BuiltinRole {
    pub const ALL: &'static [BuiltinRole] = &[
        BuiltinRole::OrgAdmin,
        BuiltinRole::TeamAdmin,
        BuiltinRole::Developer,
        BuiltinRole::Viewer,
        BuiltinRole::Auditor,
    ];

    /// Roles that can be granted in a team (all but `org-admin`).
    pub const TEAM_ROLES: &'static [BuiltinRole] = &[
        BuiltinRole::TeamAdmin,
        BuiltinRole::Developer,
        BuiltinRole::Viewer,
        BuiltinRole::Auditor,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            BuiltinRole::OrgAdmin => "org-admin",
            BuiltinRole::TeamAdmin => "team-admin",
            BuiltinRole::Developer => "developer",
            BuiltinRole::Viewer => "viewer",
            BuiltinRole::Auditor => "auditor",
        }
    }

    /// The built-in role called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.name() == name)
    }

    /// The permissions the role grants (in a team; `org-admin` in every team).
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            BuiltinRole::OrgAdmin | BuiltinRole::TeamAdmin => Permission::ALL,
            BuiltinRole::Developer => &[
                TasksCreate,
                TasksRead,
                TasksCancel,
                PlansCreate,
                PlansRead,
                PlansCancel,
                SessionsRead,
                SessionsStop,
                DlqRead,
                TeamsRead,
                QuotasRead,
            ],
            BuiltinRole::Viewer => &[
                TasksRead,
                PlansRead,
                SessionsRead,
                DlqRead,
                TeamsRead,
                QuotasRead,
            ],
            BuiltinRole::Auditor => &[AuditRead, TeamsRead],
        }
    }

    pub fn grants(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }
}

impl fmt::Display for BuiltinRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A role held across the organisation rather than in one team. Its permissions
/// hold in every team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrgRole {
    /// `org-admin`: every permission in every team, and organisation-level actions
    /// (creating teams, org-admin API keys).
    Admin,
    /// `org-auditor`: reads the audit log of every team (and sees every team), and
    /// verifies the whole audit chain. Compliance reviewers, not operators.
    Auditor,
    /// `audit-writer`: a service credential that appends records to the audit log
    /// (the gateway reporting API calls). No permission in any team: it reads
    /// nothing, and no person's role grants it, so nobody can forge records for
    /// their own team.
    AuditWriter,
}

impl OrgRole {
    pub const ALL: &'static [OrgRole] = &[OrgRole::Admin, OrgRole::Auditor, OrgRole::AuditWriter];

    pub const fn name(self) -> &'static str {
        match self {
            OrgRole::Admin => "org-admin",
            OrgRole::Auditor => "org-auditor",
            OrgRole::AuditWriter => "audit-writer",
        }
    }

    /// The organisation role called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.name() == name)
    }

    /// The permissions the role grants in every team.
    pub fn permissions(self) -> PermissionSet {
        match self {
            OrgRole::Admin => BuiltinRole::OrgAdmin.permissions().iter().collect(),
            OrgRole::Auditor => BuiltinRole::Auditor.permissions().iter().collect(),
            OrgRole::AuditWriter => PermissionSet::EMPTY,
        }
    }
}

impl fmt::Display for OrgRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for p in Permission::ALL {
            assert!(seen.insert(p.as_str()), "{p} twice");
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), *p);
            let (resource, verb) = p.as_str().split_once(':').unwrap();
            assert!(!resource.is_empty() && !verb.is_empty());
        }
        assert!("tasks:*".parse::<Permission>().is_err());
        assert!("TASKS:CREATE".parse::<Permission>().is_err());
    }

    #[test]
    fn parse_all_names_the_unknown_permission() {
        let err = Permission::parse_all(&["tasks:read", "tasks:fly"], "permissions").unwrap_err();
        assert_eq!(err.code, godel_error::ErrorCode::InvalidArgument);
        assert_eq!(err.field.as_deref(), Some("permissions"));
        assert!(err.message.contains("tasks:fly"), "{}", err.message);
        let ok = Permission::parse_all(&["tasks:read", "audit:read", "tasks:read"], "p").unwrap();
        assert_eq!(ok, [Permission::TasksRead, Permission::AuditRead]);
    }

    #[test]
    fn a_permission_set_holds_exactly_what_was_put_in() {
        let mut set = PermissionSet::EMPTY;
        assert!(set.is_empty());
        set.insert(Permission::AuditRead);
        set.insert(Permission::TasksCreate);
        set.insert(Permission::TasksCreate);
        assert_eq!(set.len(), 2);
        assert!(set.contains(Permission::TasksCreate));
        assert!(!set.contains(Permission::TasksRead));
        assert_eq!(set.names(), ["tasks:create", "audit:read"]);
        assert_eq!(format!("{set:?}"), r#"{"tasks:create", "audit:read"}"#);
        let all = PermissionSet::all();
        assert_eq!(all.len(), Permission::ALL.len());
        assert!(Permission::ALL.iter().all(|p| all.contains(*p)));
        assert_eq!(set.union(all), all);
        assert_eq!(OrgRole::Admin.permissions(), all);
        assert_eq!(OrgRole::from_name("org-admin"), Some(OrgRole::Admin));
        assert_eq!(OrgRole::Admin.name(), BuiltinRole::OrgAdmin.name());
    }

    #[test]
    fn the_documented_table_matches_the_code() {
        let doc = include_str!("../../../docs/permissions.md");
        for p in Permission::ALL {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", p.as_str())))
                .unwrap_or_else(|| panic!("{p} is not documented"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            // | `perm` | description | org-admin | team-admin | developer | viewer | auditor |
            for (i, role) in BuiltinRole::ALL.iter().enumerate() {
                let marked = cells[3 + i] == "✓";
                assert_eq!(
                    marked,
                    role.grants(*p),
                    "docs/permissions.md disagrees on {role} × {p}"
                );
            }
        }
    }
}
