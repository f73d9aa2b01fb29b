//! The `id!` macro and the id types it defines.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Why a string is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    #[error("expected an id starting with `{expected}_`, got `{got}`")]
    WrongPrefix { expected: &'static str, got: String },
    #[error("`{got}` is not a valid {expected} id: the part after the prefix must be a UUID")]
    BadUuid { expected: &'static str, got: String },
}

macro_rules! id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// The prefix this id is written with, without the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (for example one read from a database column).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside, for storage.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let rest = s
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or_else(|| IdParseError::WrongPrefix {
                        expected: $prefix,
                        got: s.to_owned(),
                    })?;
                Uuid::try_parse(rest).map(Self).map_err(|_| IdParseError::BadUuid {
                    expected: $prefix,
                    got: s.to_owned(),
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id!(
    /// A team: the isolation boundary for every resource.
    TeamId, "team"
);
id!(
    /// A human user, provisioned from an identity provider.
    UserId, "usr"
);
id!(
    /// A role (built-in or custom) made of permissions.
    RoleId, "role"
);
id!(
    /// A machine API key.
    ApiKeyId, "key"
);
id!(
    /// A plan: a DAG of tasks made from one intent.
    PlanId, "pln"
);
id!(
    /// A task in the scheduler's queue.
    TaskId, "tsk"
);
id!(
    /// An agent session run by an orchestrator.
    SessionId, "ses"
);
id!(
    /// An orchestrator instance registered with the scheduler.
    OrchestratorId, "orc"
);
id!(
    /// An agent profile (adapter, model, task types, limits).
    ProfileId, "prf"
);
id!(
    /// A stored secret such as a provider key.
    SecretId, "sec"
);
id!(
    /// An event: the unit of deduplication on the bus and in consumers.
    EventId, "evt"
);
id!(
    /// One record in the audit log.
    AuditRecordId, "aud"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_display_and_parse() {
        let id = TaskId::new();
        let text = id.to_string();
        assert!(text.starts_with("tsk_"), "{text}");
        assert_eq!(text.parse::<TaskId>().unwrap(), id);
    }

    #[test]
    fn rejects_an_id_of_another_kind() {
        let team = TeamId::new().to_string();
        let err = team.parse::<TaskId>().unwrap_err();
        assert!(matches!(
            err,
            IdParseError::WrongPrefix {
                expected: "tsk",
                ..
            }
        ));
    }

    #[test]
    fn rejects_a_bad_uuid() {
        let err = "tsk_nope".parse::<TaskId>().unwrap_err();
        assert!(matches!(err, IdParseError::BadUuid { .. }));
        assert!("tsk".parse::<TaskId>().is_err());
        assert!("tskx0190".parse::<TaskId>().is_err());
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = EventId::new();
        let b = EventId::new();
        assert!(a < b);
    }

    #[test]
    fn serde_uses_the_prefixed_form() {
        let id = TeamId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<TeamId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TeamId>("\"usr_0190\"").is_err());
    }
}
