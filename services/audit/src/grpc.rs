//! The `godel.audit.v1.AuditService` gRPC server over an [`AuditLog`].
//!
//! Team scoping by the caller's roles (auditors see their teams, org auditors all)
//! arrives with the auth service's identity metadata; until then every caller sees
//! every team.

use std::pin::Pin;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use godel_proto::audit::v1::audit_service_server::AuditService;
use godel_proto::audit::v1::{
    AppendRequest, AppendResponse, ApplyRetentionRequest, ApplyRetentionResponse, AuditFilter,
    AuditRecord, EraseSubjectRequest, EraseSubjectResponse, ExportRequest, GetRetentionRequest,
    GetRetentionResponse, QueryRequest, QueryResponse, RetentionSource, SetTeamRetentionRequest,
    SetTeamRetentionResponse, TeamRetention, VerifyRequest, VerifyResponse,
};
use godel_proto::common::v1::Caller;
use godel_proto::common::v1::PageResponse;
use godel_proto::convert::{
    from_optional_duration, from_optional_timestamp, parse_id, parse_optional_id, to_duration,
    to_timestamp,
};
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
        out.actor = Some(Caller {
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

/// Who asks, from a request's `requested_by` (required until identity travels in
/// the call's metadata).
fn requester(caller: Option<Caller>, reason: String) -> Result<Requester, godel_error::Error> {
    let caller = caller.unwrap_or_default();
    if caller.subject_id.trim().is_empty() {
        return Err(godel_error::Error::invalid_argument(
            "requested_by.subject_id",
            "`requested_by.subject_id`: say who asks",
        ));
    }
    Ok(Requester {
        actor: Actor {
            kind: ActorKind::from_number(caller.subject_kind),
            subject_id: caller.subject_id,
            team_id: parse_optional_id("requested_by.team_id", &caller.team_id)?,
            roles: caller.roles,
        },
        reason,
    })
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
        let request = request.into_inner();
        let filter = filter(request.filter)?;
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
        let request = request.into_inner();
        let by = requester(request.requested_by, request.reason)?;
        let outcome = self.log.erase_subject(&request.subject_id, &by).await?;
        Ok(Response::new(EraseSubjectResponse {
            records_scrubbed: outcome.records_scrubbed,
            record_id: outcome.record.to_string(),
        }))
    }

    async fn get_retention(
        &self,
        _request: Request<GetRetentionRequest>,
    ) -> Result<Response<GetRetentionResponse>, Status> {
        let policy = self.log.retention().await?;
        Ok(Response::new(retention_to_proto(policy)))
    }

    async fn set_team_retention(
        &self,
        request: Request<SetTeamRetentionRequest>,
    ) -> Result<Response<SetTeamRetentionResponse>, Status> {
        let request = request.into_inner();
        let team_id = parse_id("team_id", &request.team_id)?;
        let period = from_optional_duration("period", request.period.as_ref())?;
        let by = requester(request.requested_by, request.reason)?;
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
        let request = request.into_inner();
        let by = requester(request.requested_by, request.reason)?;
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
        let filter = filter(request.into_inner().filter)?;
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
