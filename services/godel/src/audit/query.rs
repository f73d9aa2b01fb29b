//! `godel audit query`: the team's audit records through the gateway
//! (`GET /v1/teams/{team}/audit/records`, newest first), filtered by action and by
//! time. The route pages newest first, so `--until` skips the newer records and
//! `--since` stops at the first older one.
//!
//! Exit codes: 0 done, 2 an error (printed with its fix).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::cli::{AuditQueryArgs, Output};
use crate::rest::{Api, query};
use crate::work::render::{state_name, text};
use crate::work::{emit, print_json, run};

/// Records asked for per page.
const PAGE: u32 = 100;

/// `godel audit query`.
pub fn run_query(args: AuditQueryArgs) -> anyhow::Result<ExitCode> {
    run(async move {
        let api = Api::connect(&args.api).await?;
        let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
        let mut records: Vec<Value> = Vec::new();
        let mut token = String::new();
        'pages: loop {
            let query = query(&[
                ("page_size", Some(PAGE.to_string())),
                ("action", args.action.clone()),
                ("page_token", (!token.is_empty()).then(|| token.clone())),
            ]);
            let page = api
                .get(&api.team_path(&format!("/audit/records{query}")))
                .await?;
            for record in page["records"].as_array().into_iter().flatten() {
                let at = occurred_at(record);
                if let (Some(until), Some(at)) = (args.until, at)
                    && at >= until
                {
                    continue;
                }
                if let (Some(since), Some(at)) = (args.since, at)
                    && at < since
                {
                    break 'pages;
                }
                records.push(record.clone());
                if records.len() >= limit {
                    break 'pages;
                }
            }
            token = text(&page["page"]["nextPageToken"]);
            if token.is_empty() {
                break;
            }
        }
        match args.api.output {
            Output::Json => print_json(&json!({"records": records}))?,
            Output::Text => {
                if records.is_empty() {
                    emit("No audit records match.\n")?;
                }
                for record in &records {
                    emit(&format!("{}\n", line(record)))?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn occurred_at(record: &Value) -> Option<DateTime<Utc>> {
    record["occurredAt"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A record in a line: time, outcome, action, actor, resource.
fn line(record: &Value) -> String {
    format!(
        "{}  {:<9} {:<24} {:<32} {}",
        text(&record["occurredAt"]),
        state_name(&record["outcome"], "OUTCOME_"),
        text(&record["action"]),
        text(&record["actor"]["subjectId"]),
        text(&record["resource"]),
    )
}
