//! The `godel.audit.v1.AuditService` gRPC server over an [`AuditLog`].
//!
//! Every call is checked against the caller its access token proves ([`server`]
//! installs the verification):
//! - `Append`: the `audit-writer` organisation role (the service credential the
//!   gateway reports API calls with) or `org-admin`. Team roles never grant it, so
//!   nobody can write records about their own team.
//! - `Query`, `Export`: `org-auditor` and `org-admin` read every team (and records
//!   outside any team); anyone else reads only a team where they hold `audit:read`
//!   — the filter's team, or the team the token acts in when the filter names none.
//! - `Verify`, `GetRetention`: `audit:read` (in the acting team, or organisation-wide).
//! - `EraseSubject`, `SetTeamRetention`, `ApplyRetention`: `org-admin`; the caller and
//!   the reason are written into the record of what was done.

use std::pin::Pin;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use godel_identity::{
    Caller, CallerLayer, CallerVerifier, OrgRole, Permission, PrincipalKind, caller_from_request,
};
use godel_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use godel_proto::audit::v1::{
    AppendRequest, AppendResponse, ApplyRetentionRequest, ApplyRetentionResponse, AuditFilter,
    AuditRecord, EraseSubjectRequest, EraseSubjectResponse, ExportRequest, GetRetentionRequest,
    GetRetentionResponse, QueryRequest, QueryResponse, RetentionSource, SetTeamRetentionRequest,
    SetTeamRetentionResponse, TeamRetention, VerifyRequest, VerifyResponse,
};
use godel_proto::common::v1::PageResponse;
use godel_proto::convert::{
    from_optional_duration, from_optional_timestamp, parse_id, parse_optional_id, to_duration,
    to_timestamp,
};
use godel_types::TeamId;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::AuditError;
use crate::log::AuditLog;
use crate::record::{Actor, ActorKind, NewRecord, Outcome, Record, RecordBody};
use crate::retention::{PolicySource, Requester, RetentionPolicy};
use crate::store::Filter;

/// Records per page while exporting.
const EXPORT_PAGE: u32 = 500;

/// The gRPC handler.
#[derive(Clone)]
pub struct AuditGrpc {
    log: Arc<AuditLog>,
}

impl AuditGrpc {
    pub fn new(log: Arc<AuditLog>) -> Self {
        Self { log }
    }
}

/// The gRPC service over `log`, verifying each call's token with `verifier`.
pub fn server(
    log: Arc<AuditLog>,
    verifier: CallerVerifier,
) -> godel_identity::WithCaller<AuditServiceServer<AuditGrpc>> {
    use tower::Layer;
    CallerLayer::new(verifier).layer(AuditServiceServer::new(AuditGrpc::new(log)))
}

/// Which teams' records a caller may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadScope {
    /// Every team, and records outside any team.
    Organisation,
    Team(TeamId),
}

/// The caller's read scope for a request naming `asked` (or no team): organisation
/// roles granting `audit:read` read everything; otherwise `audit:read` is required
/// in the asked team, or in the acting team when none is asked.
fn read_scope(caller: &Caller, asked: Option<TeamId>) -> Result<ReadScope, godel_error::Error> {
    let org_wide = caller
        .org_roles
        .iter()
        .any(|role| role.permissions().contains(Permission::AuditRead));
    if org_wide {
        return Ok(ReadScope::Organisation);
    }
    let team = asked.or(caller.team).ok_or_else(|| {
        godel_error::Error::permission_denied(format!(
            "{} acts in no team; reading the audit log needs audit:read in a team",
            caller.principal
        ))
    })?;
    caller.require(team, Permission::AuditRead)?;
    Ok(ReadScope::Team(team))
}

/// `filter` narrowed to what `caller` may read.
fn scoped(caller: &Caller, mut filter: Filter) -> Result<Filter, godel_error::Error> {
    if let ReadScope::Team(team) = read_scope(caller, filter.team_id)? {
        filter.team_id = Some(team);
    }
    Ok(filter)
}

/// Append needs the `audit-writer` or `org-admin` organisation role.
fn require_writer(caller: &Caller) -> Result<(), godel_error::Error> {
    if caller.has_org_role(OrgRole::Admin) {
        return Ok(());
    }
    caller.require_org_role(OrgRole::AuditWriter, "appending audit records")
}

fn invalid(field: &str, reason: &str) -> AuditError {
    AuditError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The filter a proto `AuditFilter` describes.
fn filter(proto: Option<AuditFilter>) -> Result<Filter, godel_error::Error> {
    let f = proto.unwrap_or_default();
    let some = |s: String| (!s.is_empty()).then_some(s);
    Ok(Filter {
        team_id: parse_optional_id("filter.team_id", &f.team_id)?,
        actor_id: some(f.actor_id),
        action: some(f.action),
        resource: some(f.resource),
        outcome: (f.outcome != 0).then_some(Outcome::from_number(f.outcome)),
        since: from_optional_timestamp("filter.since", f.since.as_ref())?,
        until: from_optional_timestamp("filter.until", f.until.as_ref())?,
        trace_id: some(f.trace_id.to_ascii_lowercase()),
    })
}

/// A record to append; an unset `occurred_at` is now. `sequence`, `prev_hash` and
/// `hash` are ignored.
fn new_record(i: usize, r: AuditRecord) -> Result<NewRecord, godel_error::Error> {
    let field = |name: &str| format!("records[{i}].{name}");
    let actor = r.actor.unwrap_or_default();
    Ok(NewRecord {
        id: parse_id(&field("id"), &r.id)?,
        occurred_at: from_optional_timestamp(&field("occurred_at"), r.occurred_at.as_ref())?
            .unwrap_or_else(chrono::Utc::now),
        team_id: parse_optional_id(&field("team_id"), &r.team_id)?,
        body: RecordBody {
            actor: Actor {
                kind: ActorKind::from_number(actor.subject_kind),
                subject_id: actor.subject_id,
                team_id: parse_optional_id(&field("actor.team_id"), &actor.team_id)?,
                roles: actor.roles,
            },
            action: r.action,
            resource: r.resource,
            outcome: Outcome::from_number(r.outcome),
            trace_id: r.trace_id,
            client_ip: r.client_ip,
            details_json: r.details_json,
        },
    })
}

/// The proto form of a stored record (an erased body leaves its fields empty).
fn to_proto(r: Record) -> AuditRecord {
    let mut out = AuditRecord {
        id: r.id.to_string(),
        occurred_at: Some(to_timestamp(r.occurred_at)),
        team_id: r.team_id.map(|t| t.to_string()).unwrap_or_default(),
        sequence: r.sequence,
        prev_hash: hex::encode(r.prev_hash),
        hash: hex::encode(r.hash),
        ..AuditRecord::default()
    };
    if let Some(body) = r.body {
        out.actor = Some(godel_proto::common::v1::Caller {
            subject_kind: body.actor.kind.number(),
            subject_id: body.actor.subject_id,
            team_id: body
                .actor
                .team_id
                .map(|t| t.to_string())
                .unwrap_or_default(),
            roles: body.actor.roles,
        });
        out.action = body.action;
        out.resource = body.resource;
        out.outcome = body.outcome.number();
        out.trace_id = body.trace_id;
        out.client_ip = body.client_ip;
        out.details_json = body.details_json;
    }
    out
}

/// The caller as the actor of the record describing what it asked for.
fn requester(caller: &Caller, reason: String) -> Requester {
    Requester {
        actor: Actor {
            kind: match caller.principal.kind() {
                PrincipalKind::User => ActorKind::User,
                PrincipalKind::ApiKey => ActorKind::ApiKey,
            },
            subject_id: caller.principal.to_string(),
            team_id: caller.team,
            roles: caller
                .org_roles
                .iter()
                .map(|role| role.name().to_owned())
                .collect(),
        },
        reason,
    }
}

fn retention_to_proto(policy: RetentionPolicy) -> GetRetentionResponse {
    GetRetentionResponse {
        default_period: Some(to_duration(policy.default_period)),
        teams: policy
            .teams
            .into_iter()
            .map(|t| TeamRetention {
                team_id: t.team_id.to_string(),
                period: Some(to_duration(t.period)),
                source: match t.source {
                    PolicySource::Config => RetentionSource::Config,
                    PolicySource::Api => RetentionSource::Api,
                }
                .into(),
            })
            .collect(),
        interval: Some(to_duration(policy.interval)),
    }
}

fn encode_cursor(sequence: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("s{sequence}"))
}

fn decode_cursor(token: &str) -> Result<Option<u64>, AuditError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || invalid("page.page_token", "is not a token this service issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix('s')
        .and_then(|n| n.parse().ok())
        .map(Some)
        .ok_or_else(bad)
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<AuditRecord, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditGrpc {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        require_writer(&caller_from_request(&request)?)?;
        let records = request
            .into_inner()
            .records
            .into_iter()
            .enumerate()
            .map(|(i, r)| new_record(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = self.log.append(records).await?;
        Ok(Response::new(AppendResponse {
            appended: outcome.appended,
            duplicates: outcome.duplicates,
        }))
    }

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        let caller = caller_from_request(&request)?;
        let request = request.into_inner();
        let filter = scoped(&caller, filter(request.filter)?)?;
        let page = request.page.unwrap_or_default();
        let cursor = decode_cursor(&page.page_token)?;
        let (records, next) = self.log.query(&filter, page.page_size, cursor).await?;
        Ok(Response::new(QueryResponse {
            records: records.into_iter().map(to_proto).collect(),
            page: Some(PageResponse {
                next_page_token: next.map(encode_cursor).unwrap_or_default(),
            }),
        }))
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        read_scope(&caller_from_request(&request)?, None)?;
        let request = request.into_inner();
        if request.to_sequence != 0 && request.to_sequence < request.from_sequence {
            return Err(invalid("to_sequence", "must not be before from_sequence").into());
        }
        let report = self
            .log
            .verify(request.from_sequence, request.to_sequence)
            .await?;
        let mut response = VerifyResponse {
            ok: report.ok(),
            records_checked: report.records_checked,
            checkpoints_matched: report.checkpoints_matched,
            erased_payloads: report.erased_payloads,
            ..VerifyResponse::default()
        };
        match report.damage {
            Some(d) => {
                response.first_bad_sequence = d.sequence;
                response.damage = d.kind.to_proto().into();
                response.damage_kind = d.kind.name().to_owned();
                response.detail = d.detail;
            }
            None => {
                response.detail = format!(
                    "{} records intact ({} with erased payloads), {} checkpoints matched",
                    report.records_checked, report.erased_payloads, report.checkpoints_matched
                );
            }
        }
        Ok(Response::new(response))
    }

    async fn erase_subject(
        &self,
        request: Request<EraseSubjectRequest>,
    ) -> Result<Response<EraseSubjectResponse>, Status> {
        let caller = caller_from_request(&request)?;
        caller.require_org_role(OrgRole::Admin, "erasing a subject's data")?;
        let request = request.into_inner();
        let by = requester(&caller, request.reason);
        let outcome = self.log.erase_subject(&request.subject_id, &by).await?;
        Ok(Response::new(EraseSubjectResponse {
            records_scrubbed: outcome.records_scrubbed,
            record_id: outcome.record.to_string(),
        }))
    }

    async fn get_retention(
        &self,
        request: Request<GetRetentionRequest>,
    ) -> Result<Response<GetRetentionResponse>, Status> {
        read_scope(&caller_from_request(&request)?, None)?;
        let policy = self.log.retention().await?;
        Ok(Response::new(retention_to_proto(policy)))
    }

    async fn set_team_retention(
        &self,
        request: Request<SetTeamRetentionRequest>,
    ) -> Result<Response<SetTeamRetentionResponse>, Status> {
        let caller = caller_from_request(&request)?;
        caller.require_org_role(OrgRole::Admin, "changing a team's audit retention")?;
        let request = request.into_inner();
        let team_id = parse_id("team_id", &request.team_id)?;
        let period = from_optional_duration("period", request.period.as_ref())?;
        let by = requester(&caller, request.reason);
        let (policy, record) = self.log.set_team_retention(team_id, period, &by).await?;
        Ok(Response::new(SetTeamRetentionResponse {
            retention: Some(retention_to_proto(policy)),
            record_id: record.to_string(),
        }))
    }

    async fn apply_retention(
        &self,
        request: Request<ApplyRetentionRequest>,
    ) -> Result<Response<ApplyRetentionResponse>, Status> {
        let caller = caller_from_request(&request)?;
        caller.require_org_role(OrgRole::Admin, "applying audit retention")?;
        let request = request.into_inner();
        let by = requester(&caller, request.reason);
        let outcome = self.log.apply_retention(chrono::Utc::now(), &by).await?;
        Ok(Response::new(ApplyRetentionResponse {
            payloads_removed: outcome.payloads_removed,
            record_id: outcome.record.map(|r| r.to_string()).unwrap_or_default(),
        }))
    }

    type ExportStream = RecordStream;

    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let caller = caller_from_request(&request)?;
        let filter = scoped(&caller, filter(request.into_inner().filter)?)?;
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_PAGE as usize);
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut after = None;
            loop {
                let page = match log.export_page(&filter, after, EXPORT_PAGE).await {
                    Ok(page) => page,
                    Err(err) => {
                        let _ = tx.send(Err(Status::from(err))).await;
                        return;
                    }
                };
                let last_page = page.len() < EXPORT_PAGE as usize;
                after = page.last().map(|r| r.sequence);
                for record in page {
                    if tx.send(Ok(to_proto(record))).await.is_err() {
                        return; // the client went away
                    }
                }
                if last_page {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
