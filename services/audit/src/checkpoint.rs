//! Signed checkpoints of the chain head, written outside the database.
//!
//! A checkpoint is an Ed25519 signature over (sequence, head hash, time) — see
//! [`checkpoint_message`] — stored as one JSON file per checkpoint,
//! `checkpoint-<sequence, 20 digits>.json`, in the configured directory. Someone who
//! can rewrite the database but not that directory (or the signing key) cannot make
//! the chain agree with the checkpoints again. The public key is written next to the
//! signing key as `<signing key file>.pub`, for verifiers outside the service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use godel_store::Db;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::canonical::{Hash, checkpoint_message, parse_hash};
use crate::config::CheckpointConfig;
use crate::error::AuditError;
use crate::{keys, store};

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".json";

/// A signed statement that the chain's record `sequence` had hash `head_hash` at `time_ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub sequence: u64,
    pub head_hash: Hash,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: i64,
    pub signature: [u8; 64],
}

/// The file format.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    sequence: u64,
    head_hash: String,
    time_unix_nanos: i64,
    /// Hex Ed25519 signature over the canonical checkpoint message.
    signature: String,
    /// Hex public key that signed it (informational: verifiers use their own copy).
    public_key: String,
}

/// What a checkpoint file on disk says, after checking its signature.
pub(crate) type Loaded = BTreeMap<u64, Result<Hash, String>>;

/// Writes checkpoints: every `every_records` records (after an append) and on a timer.
pub struct Checkpointer {
    dir: PathBuf,
    key: SigningKey,
    every_records: u64,
    /// The sequence of the last checkpoint written (0: none).
    last: Mutex<u64>,
}

impl Checkpointer {
    /// Loads (or creates) the signing key, writes its public key next to it and
    /// creates the directory.
    pub fn open(config: &CheckpointConfig) -> Result<Self, AuditError> {
        let seed =
            keys::load_or_create(&config.signing_key_file).map_err(|source| AuditError::Key {
                purpose: "checkpoint signing",
                source,
            })?;
        let key = SigningKey::from_bytes(&seed);
        let mut public = config.signing_key_file.clone().into_os_string();
        public.push(".pub");
        let public = PathBuf::from(public);
        std::fs::write(&public, hex::encode(key.verifying_key().as_bytes())).map_err(|source| {
            AuditError::CheckpointIo {
                path: public.clone(),
                source,
            }
        })?;
        std::fs::create_dir_all(&config.dir).map_err(|source| AuditError::CheckpointIo {
            path: config.dir.clone(),
            source,
        })?;
        let last = last_sequence(&config.dir)?;
        Ok(Self {
            dir: config.dir.clone(),
            key,
            every_records: config.every_records,
            last: Mutex::new(last),
        })
    }

    /// Signs `message` with the checkpoint key (the records of retention runs and
    /// erasures are signed too; see [`crate::coverage`]).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The key verifiers check checkpoint signatures with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a checkpoint of the current head unless the last one already covers it.
    pub async fn write(&self, db: &Db) -> Result<Option<Checkpoint>, AuditError> {
        let mut last = self.last.lock().await;
        let (sequence, head_hash) = store::head(db).await?;
        if sequence == 0 || sequence <= *last {
            return Ok(None);
        }
        let time_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let signature = self
            .key
            .sign(&checkpoint_message(sequence, &head_hash, time_ns))
            .to_bytes();
        let file = CheckpointFile {
            sequence,
            head_hash: hex::encode(head_hash),
            time_unix_nanos: time_ns,
            signature: hex::encode(signature),
            public_key: hex::encode(self.key.verifying_key().as_bytes()),
        };
        let path = self.dir.join(file_name(sequence));
        let tmp = self.dir.join(format!(".{}.tmp", file_name(sequence)));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::CheckpointIo { path, source }
        };
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| io(&tmp)(std::io::Error::other(e)))?;
        tokio::fs::write(&tmp, json).await.map_err(io(&tmp))?;
        tokio::fs::rename(&tmp, &path).await.map_err(io(&path))?;
        *last = sequence;
        tracing::debug!(sequence, "audit checkpoint written");
        Ok(Some(Checkpoint {
            sequence,
            head_hash,
            time_ns,
            signature,
        }))
    }

    /// Writes a checkpoint when at least `every_records` records arrived since the
    /// last one.
    pub async fn after_append(&self, db: &Db, head: u64) -> Result<(), AuditError> {
        if self.every_records == 0 {
            return Ok(());
        }
        let due = head >= self.last.lock().await.saturating_add(self.every_records);
        if due {
            self.write(db).await?;
        }
        Ok(())
    }
}

/// Reads every checkpoint file in `dir` and checks its signature with `key`.
pub(crate) async fn load(dir: &Path, key: &VerifyingKey) -> Result<Loaded, AuditError> {
    let io = |source| AuditError::CheckpointIo {
        path: dir.to_owned(),
        source,
    };
    let mut out = Loaded::new();
    let mut entries = tokio::fs::read_dir(dir).await.map_err(io)?;
    while let Some(entry) = entries.next_entry().await.map_err(io)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(sequence) = sequence_of(&name) else {
            continue;
        };
        let path = entry.path();
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|source| AuditError::CheckpointIo { path, source })?;
        out.insert(sequence, check(sequence, &bytes, key));
    }
    Ok(out)
}

/// The head hash a checkpoint file vouches for, or why it does not.
fn check(sequence: u64, bytes: &[u8], key: &VerifyingKey) -> Result<Hash, String> {
    let file: CheckpointFile = serde_json::from_slice(bytes)
        .map_err(|e| format!("checkpoint {sequence} is not a checkpoint file: {e}"))?;
    if file.sequence != sequence {
        return Err(format!(
            "checkpoint file {sequence} says sequence {}",
            file.sequence
        ));
    }
    let head = parse_hash(&file.head_hash)
        .ok_or_else(|| format!("checkpoint {sequence}: head_hash is not 64 hex digits"))?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(&file.signature, &mut sig)
        .map_err(|_| format!("checkpoint {sequence}: signature is not 128 hex digits"))?;
    key.verify(
        &checkpoint_message(sequence, &head, file.time_unix_nanos),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| format!("checkpoint {sequence}: the signature does not verify"))?;
    Ok(head)
}

fn file_name(sequence: u64) -> String {
    format!("{PREFIX}{sequence:020}{SUFFIX}")
}

fn sequence_of(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

fn last_sequence(dir: &Path) -> Result<u64, AuditError> {
    let io = |source| AuditError::CheckpointIo {
        path: dir.to_owned(),
        source,
    };
    let mut last = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(seq) = sequence_of(&entry.file_name().to_string_lossy()) {
            last = last.max(seq);
        }
    }
    Ok(last)
}
