//! `godel audit verify`: checks the audit log's hash chain and signed checkpoints,
//! through the audit service's `Verify` or directly on its database and checkpoint
//! directory (for reviews without the service).
//!
//! Exit codes: 0 intact, 1 damaged (the first damaged record is named), 2 the check
//! could not run.
//!
//! `godel audit query` is in [`query`].

pub mod query;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use godel_config::Secret;
use godel_proto::audit::v1::audit_service_client::AuditServiceClient;
use godel_proto::audit::v1::{Damage, VerifyRequest};
use godel_store::DatabaseConfig;

use crate::cli::AuditVerifyArgs;

/// The log is damaged.
const DAMAGED: u8 = 1;
/// The check could not run.
const CANNOT_CHECK: u8 = 2;

/// What a verification found, from either source.
#[derive(Debug)]
struct Outcome {
    records_checked: u64,
    erased_payloads: u64,
    checkpoints_matched: u64,
    /// (sequence, kind, detail) of the first damage.
    damage: Option<(u64, String, String)>,
}

/// Where to verify.
enum Source {
    Server {
        url: String,
        /// `--token` / `GODEL_TOKEN`; else the stored login.
        token: Option<String>,
        auth_server: String,
    },
    Offline {
        database: DatabaseConfig,
        checkpoint_dir: PathBuf,
        public_key: PathBuf,
    },
}

/// Runs `godel audit verify`.
pub fn verify(args: AuditVerifyArgs) -> anyhow::Result<ExitCode> {
    if args.to != 0 && args.to < args.from {
        anyhow::bail!("--to {} is before --from {}", args.to, args.from);
    }
    let source = source(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        match &source {
            Source::Server {
                url,
                token,
                auth_server,
            } => online(url, token.as_deref(), auth_server, args.from, args.to).await,
            Source::Offline {
                database,
                checkpoint_dir,
                public_key,
            } => offline(database, checkpoint_dir, public_key, args.from, args.to).await,
        }
    });
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => {
            eprintln!("godel: the audit log could not be checked: {err:#}");
            return Ok(ExitCode::from(CANNOT_CHECK));
        }
    };
    print!("{}", report(&outcome));
    Ok(match outcome.damage {
        None => ExitCode::SUCCESS,
        Some(_) => ExitCode::from(DAMAGED),
    })
}

/// Offline when a data directory or database is named, else the server.
fn source(args: &AuditVerifyArgs) -> anyhow::Result<Source> {
    let database = |url: String| DatabaseConfig {
        url: Secret::new(url),
        schema: args.schema.clone(),
        max_connections: 2,
        ..DatabaseConfig::default()
    };
    if let Some(dir) = &args.data_dir {
        let db_file = dir.join("audit.db");
        if !db_file.exists() {
            anyhow::bail!(
                "{} does not exist: is this a `godel up` data directory?",
                db_file.display()
            );
        }
        return Ok(Source::Offline {
            database: database(format!("sqlite://{}?mode=ro", db_file.display())),
            checkpoint_dir: args
                .checkpoint_dir
                .clone()
                .unwrap_or_else(|| dir.join("audit-checkpoints")),
            public_key: args
                .public_key
                .clone()
                .unwrap_or_else(|| dir.join("audit-checkpoint-signing.key.pub")),
        });
    }
    if let Some(url) = &args.database_url {
        let (Some(checkpoint_dir), Some(public_key)) = (&args.checkpoint_dir, &args.public_key)
        else {
            anyhow::bail!("--database-url needs --checkpoint-dir and --public-key");
        };
        return Ok(Source::Offline {
            database: database(url.clone()),
            checkpoint_dir: checkpoint_dir.clone(),
            public_key: public_key.clone(),
        });
    }
    if args.checkpoint_dir.is_some() || args.public_key.is_some() || args.schema.is_some() {
        anyhow::bail!(
            "--checkpoint-dir, --public-key and --schema are for offline checks: add --database-url or --data-dir"
        );
    }
    if args.token.is_none()
        && crate::credentials::stored::load(&crate::credentials::stored::path()?)?.is_none()
    {
        anyhow::bail!(
            "checking a running audit service needs a credential with audit:read: pass --token (or set GODEL_TOKEN) with an access token or API key, sign in with `godel login`, or check offline with --data-dir"
        );
    }
    Ok(Source::Server {
        url: args.server.clone(),
        token: args.token.clone(),
        auth_server: args.auth_server.clone(),
    })
}

async fn online(
    url: &str,
    credential: Option<&str>,
    auth_server: &str,
    from: u64,
    to: u64,
) -> anyhow::Result<Outcome> {
    let token = crate::credentials::resolve(credential, auth_server).await?;
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("`{url}` is not a valid address"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the audit service at {url}"))?;
    let interceptor = godel_identity::BearerInterceptor::new(&token)
        .map_err(|e| anyhow::anyhow!("the access token cannot be sent: {}", e.message))?;
    let mut client = AuditServiceClient::with_interceptor(channel, interceptor);
    let response = client
        .verify(VerifyRequest {
            from_sequence: from,
            to_sequence: to,
        })
        .await
        .with_context(|| format!("the audit service at {url} refused to verify"))?
        .into_inner();
    let damage = (!response.ok).then(|| {
        let kind = if response.damage_kind.is_empty() {
            Damage::try_from(response.damage)
                .map(|d| d.as_str_name().to_ascii_lowercase())
                .unwrap_or_else(|_| "unknown".to_owned())
        } else {
            response.damage_kind.clone()
        };
        (response.first_bad_sequence, kind, response.detail.clone())
    });
    Ok(Outcome {
        records_checked: response.records_checked,
        erased_payloads: response.erased_payloads,
        checkpoints_matched: response.checkpoints_matched,
        damage,
    })
}

async fn offline(
    database: &DatabaseConfig,
    checkpoint_dir: &Path,
    public_key: &Path,
    from: u64,
    to: u64,
) -> anyhow::Result<Outcome> {
    let report = godel_audit::verify_offline(database, checkpoint_dir, public_key, from, to)
        .await
        .map_err(anyhow::Error::new)?;
    Ok(Outcome {
        records_checked: report.records_checked,
        erased_payloads: report.erased_payloads,
        checkpoints_matched: report.checkpoints_matched,
        damage: report
            .damage
            .map(|d| (d.sequence, d.kind.name().to_owned(), d.detail)),
    })
}

/// The lines printed on stdout.
fn report(o: &Outcome) -> String {
    let counts = format!(
        "records checked: {}\nerased payloads: {}\ncheckpoints checked: {}\n",
        o.records_checked, o.erased_payloads, o.checkpoints_matched
    );
    match &o.damage {
        None => format!("audit log intact\n{counts}"),
        Some((sequence, kind, detail)) => {
            format!("audit log DAMAGED at record {sequence}: {kind}\n{detail}\n{counts}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_report_names_the_record_and_kind_first() {
        let out = report(&Outcome {
            records_checked: 4,
            erased_payloads: 0,
            checkpoints_matched: 1,
            damage: Some((5, "modified".into(), "record 5 was changed".into())),
        });
        assert_eq!(
            out.lines().next(),
            Some("audit log DAMAGED at record 5: modified")
        );
        assert!(out.contains("records checked: 4\n"), "{out}");
    }
}
