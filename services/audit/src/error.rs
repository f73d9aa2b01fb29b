//! The audit log's errors.

use crate::keys::KeyError;
use crate::redact::RedactError;

/// Why an audit-log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("database operation failed: {operation}")]
    Db {
        operation: &'static str,
        #[source]
        source: godel_store::sea_orm::DbErr,
    },
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    #[error("cannot load the {purpose} key")]
    Key {
        purpose: &'static str,
        #[source]
        source: KeyError,
    },
    #[error("the redaction rules are invalid")]
    Redact(#[from] RedactError),
    #[error("checkpoint file operation failed on {path}")]
    CheckpointIo {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the chain entry at sequence {sequence} is unreadable: {reason}")]
    Corrupt { sequence: u64, reason: String },
    #[error("the chain has reached the largest sequence number")]
    ChainFull,
    #[error("cannot open the audit database")]
    Connect(#[source] godel_store::StoreError),
}

impl From<AuditError> for tonic::Status {
    fn from(err: AuditError) -> Self {
        let error = match &err {
            AuditError::Invalid { field, reason } => {
                godel_error::Error::invalid_argument(field.clone(), format!("`{field}`: {reason}"))
            }
            other => {
                tracing::error!(error = %godel_error::chain(other), "audit operation failed");
                godel_error::Error::internal("the audit log failed; see the service's logs")
            }
        };
        error.into()
    }
}
