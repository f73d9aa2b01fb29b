//! The profile RPCs of `SchedulerService` (see [`crate::profiles`]).

use godel_error::Error;
use godel_proto::convert::{from_optional_duration, to_duration, to_optional_timestamp};
use godel_proto::scheduler::v1 as pb;

use super::team;
use crate::profiles::{Profile, ProfileLimits, ProfileSpec, Profiles, task_types};

pub(super) fn to_pb(p: &Profile) -> pb::Profile {
    pb::Profile {
        id: p.id.to_string(),
        team_id: p.team_id.map(|t| t.to_string()).unwrap_or_default(),
        name: p.spec.name.clone(),
        adapter: p.spec.adapter.clone(),
        model: p.spec.model.clone(),
        task_types: p
            .spec
            .task_types
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        runtime: p.spec.runtime.clone(),
        limits: Some(pb::ProfileLimits {
            max_duration: p.spec.limits.max_duration.map(to_duration),
            max_tokens: p.spec.limits.max_tokens,
            max_cost_micro_usd: p.spec.limits.max_cost_micro_usd,
        }),
        estimated_cost_micro_usd: p.spec.estimated_cost_micro_usd,
        preference: p.spec.preference,
        builtin: p.is_builtin(),
        created_at: to_optional_timestamp(p.created_at),
        updated_at: to_optional_timestamp(p.updated_at),
    }
}

fn spec(p: pb::Profile) -> Result<ProfileSpec, Error> {
    let limits = p.limits.unwrap_or_default();
    Ok(ProfileSpec {
        name: p.name,
        adapter: p.adapter,
        model: p.model,
        task_types: task_types(&p.task_types, "profile.task_types")?,
        runtime: if p.runtime.is_empty() {
            "process".to_owned()
        } else {
            p.runtime
        },
        limits: ProfileLimits {
            max_duration: from_optional_duration(
                "profile.limits.max_duration",
                limits.max_duration.as_ref(),
            )?,
            max_tokens: limits.max_tokens,
            max_cost_micro_usd: limits.max_cost_micro_usd,
        },
        estimated_cost_micro_usd: p.estimated_cost_micro_usd,
        preference: p.preference,
    })
}

pub(super) async fn put(
    profiles: &Profiles,
    req: pb::PutProfileRequest,
) -> Result<pb::PutProfileResponse, Error> {
    let team = team(&req.team_id)?;
    let profile = req
        .profile
        .ok_or_else(|| Error::invalid_argument("profile", "say which profile to save"))?;
    let saved = profiles.put(team, spec(profile)?).await?;
    Ok(pb::PutProfileResponse {
        profile: Some(to_pb(&saved)),
    })
}

pub(super) async fn list(
    profiles: &Profiles,
    req: pb::ListProfilesRequest,
) -> Result<pb::ListProfilesResponse, Error> {
    let team = team(&req.team_id)?;
    Ok(pb::ListProfilesResponse {
        profiles: profiles.list(team).await?.iter().map(to_pb).collect(),
    })
}

pub(super) async fn delete(
    profiles: &Profiles,
    req: pb::DeleteProfileRequest,
) -> Result<pb::DeleteProfileResponse, Error> {
    profiles.delete(team(&req.team_id)?, &req.name).await?;
    Ok(pb::DeleteProfileResponse {})
}
