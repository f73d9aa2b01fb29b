//! The gRPC `ProviderKeyService` over [`ProviderKeys`]: set, rotate and list a
//! team's provider keys. Secrets come in and are never returned; the requests
//! (which hold them) are never logged.
//!
//! Every call needs `provider_keys:manage` in the request's team, checked on the
//! caller's verified access token ([`authorize`]).

use godel_config::Secret;
use godel_identity::Permission;
use godel_proto::convert::{parse_id, to_optional_timestamp, to_timestamp};
use godel_proto::orchestrator::v1 as pb;
use godel_proto::orchestrator::v1::provider_key_service_server::ProviderKeyService;
use godel_types::TeamId;
use tonic::{Request, Response, Status};

use crate::keys::{ProviderKey, ProviderKeys};

/// Serves the provider-key API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProviderKeyGrpc {
    keys: ProviderKeys,
}

impl ProviderKeyGrpc {
    pub fn new(keys: ProviderKeys) -> Self {
        Self { keys }
    }
}

/// The team `team_id` names, once the caller proved to hold
/// `provider_keys:manage` there (the service's one team check, [`super::team`]).
fn authorize<T>(request: &Request<T>, team_id: &str) -> Result<TeamId, Status> {
    super::team(request, team_id, Permission::ProviderKeysManage)
}

fn key_to_pb(key: &ProviderKey) -> pb::ProviderKey {
    pb::ProviderKey {
        id: key.id.to_string(),
        team_id: key.team_id.to_string(),
        provider: key.provider.clone(),
        name: key.name.clone(),
        hint: key.hint.clone(),
        version: key.version,
        created_at: Some(to_timestamp(key.created_at)),
        rotated_at: to_optional_timestamp(key.rotated_at),
    }
}

#[tonic::async_trait]
impl ProviderKeyService for ProviderKeyGrpc {
    async fn set_provider_key(
        &self,
        request: Request<pb::SetProviderKeyRequest>,
    ) -> Result<Response<pb::SetProviderKeyResponse>, Status> {
        let team = authorize(&request, &request.get_ref().team_id)?;
        let req = request.into_inner();
        let key = self
            .keys
            .set(team, &req.provider, &req.name, Secret::new(req.secret))
            .await?;
        Ok(Response::new(pb::SetProviderKeyResponse {
            key: Some(key_to_pb(&key)),
        }))
    }

    async fn rotate_provider_key(
        &self,
        request: Request<pb::RotateProviderKeyRequest>,
    ) -> Result<Response<pb::RotateProviderKeyResponse>, Status> {
        let team = authorize(&request, &request.get_ref().team_id)?;
        let req = request.into_inner();
        let id = parse_id("key_id", &req.key_id)?;
        let key = self.keys.rotate(team, id, Secret::new(req.secret)).await?;
        Ok(Response::new(pb::RotateProviderKeyResponse {
            key: Some(key_to_pb(&key)),
        }))
    }

    async fn list_provider_keys(
        &self,
        request: Request<pb::ListProviderKeysRequest>,
    ) -> Result<Response<pb::ListProviderKeysResponse>, Status> {
        let team = authorize(&request, &request.get_ref().team_id)?;
        let keys = self.keys.list(team).await?;
        Ok(Response::new(pb::ListProviderKeysResponse {
            keys: keys.iter().map(key_to_pb).collect(),
        }))
    }
}
