//! Godel's gRPC contracts and event payloads, generated from `proto/godel/**`.
//!
//! - `godel_proto::{common, scheduler, orchestrator, auth, audit, events}::v1`: prost
//!   messages with proto3 JSON serde impls (pbjson), tonic clients (feature `client`)
//!   and servers (feature `server`).
//! - [`FILE_DESCRIPTOR_SET`] for `tonic-reflection`.
//! - [`convert`]: proto ids, timestamps and durations to domain values, with errors
//!   that name the field.
//! - [`cloudevent`]: the CloudEvents 1.0 JSON envelope events are published in.
//!
//! Well-known types (`Timestamp`, `Duration`) are those of [`pbjson_types`], which is
//! re-exported.

pub mod cloudevent;
pub mod convert;

macro_rules! generated {
    ($(#[$meta:meta])* $area:ident, $package:literal) => {
        $(#[$meta])*
        pub mod $area {
            #[doc = concat!("Package `", $package, "`.")]
            #[allow(
                clippy::all,
                clippy::pedantic,
                clippy::nursery,
                missing_docs,
                rustdoc::all
            )]
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
                include!(concat!(env!("OUT_DIR"), "/", $package, ".serde.rs"));
            }
        }
    };
}

generated!(
    /// Paging, the caller's identity and usage, shared by every API.
    common,
    "godel.common.v1"
);
generated!(
    /// The scheduler: tasks, plans, leases, the orchestrator registry, the DLQ.
    scheduler,
    "godel.scheduler.v1"
);
generated!(
    /// The orchestrator: agent sessions, their event streams, provider keys.
    orchestrator,
    "godel.orchestrator.v1"
);
generated!(
    /// The auth service: authentication, authorization, tokens, keys, teams, quotas.
    auth,
    "godel.auth.v1"
);
generated!(
    /// The audit log: append, query, verify, export.
    audit,
    "godel.audit.v1"
);
generated!(
    /// Event payloads published on NATS (the `data` of CloudEvents).
    events,
    "godel.events.v1"
);

/// The encoded `FileDescriptorSet` of every Godel proto file and the well-known types
/// they import, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/godel_descriptor.bin"));

pub use pbjson_types;

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    fn descriptors() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn descriptor_set_holds_every_service() {
        let fds = descriptors();
        let mut services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        services.sort();
        assert_eq!(
            services,
            [
                "godel.audit.v1.AuditService",
                "godel.auth.v1.AuthService",
                "godel.orchestrator.v1.OrchestratorService",
                "godel.orchestrator.v1.ProviderKeyService",
                "godel.scheduler.v1.SchedulerService",
            ]
        );
    }

    #[test]
    fn descriptor_set_is_self_contained() {
        let fds = descriptors();
        let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
        for file in &fds.file {
            for dependency in &file.dependency {
                assert!(
                    names.contains(&dependency.as_str()),
                    "{} imports {dependency}, which is missing",
                    file.name()
                );
            }
        }
        for package in [
            "common",
            "scheduler",
            "orchestrator",
            "auth",
            "audit",
            "events",
        ] {
            let name = format!("godel/{package}/v1/{package}.proto");
            assert!(names.contains(&name.as_str()), "{name} missing");
        }
    }

    #[cfg(feature = "server")]
    #[test]
    fn service_names_match_the_generated_code() {
        use auth::v1::auth_service_server::SERVICE_NAME as AUTH;
        use scheduler::v1::scheduler_service_server::SERVICE_NAME as SCHEDULER;
        assert_eq!(AUTH, "godel.auth.v1.AuthService");
        assert_eq!(SCHEDULER, "godel.scheduler.v1.SchedulerService");
    }

    #[test]
    fn messages_round_trip_through_the_wire_format_and_json() {
        use scheduler::v1::{Task, TaskState};

        let task = Task {
            id: godel_types::TaskId::new().to_string(),
            team_id: godel_types::TeamId::new().to_string(),
            task_type: "review".into(),
            priority: 80,
            payload_json: r#"{"pr":17}"#.into(),
            state: TaskState::DeadLettered.into(),
            epoch: u64::MAX,
            labels: [("repo".to_owned(), "web".to_owned())].into(),
            last_error: "agent crashed".into(),
            ..Default::default()
        };
        let wire = task.encode_to_vec();
        assert_eq!(Task::decode(wire.as_slice()).unwrap(), task);

        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(json["state"], "TASK_STATE_DEAD_LETTERED");
        assert_eq!(json["epoch"], u64::MAX.to_string());
        assert_eq!(json["payloadJson"], r#"{"pr":17}"#);
        assert_eq!(json["labels"]["repo"], "web");
        assert_eq!(json["lastError"], "agent crashed");
        assert_eq!(serde_json::from_value::<Task>(json).unwrap(), task);
    }
}
