//! The canonical encoding of audit records, the hashes the chain is built from, and
//! the keyed pseudonyms redaction uses.
//!
//! Every variable-length field is written as its length (8 bytes, big-endian)
//! followed by its UTF-8 bytes; integers are 8 bytes big-endian; digests are their
//! 32 raw bytes. Fields are written in a fixed order, after a domain-separation tag,
//! so two different records never encode to the same bytes.
//!
//! - **payload digest** = SHA-256(`"godel.audit.payload.v1"` ‖ actor kind ‖ actor id ‖
//!   actor team ‖ role count ‖ roles… ‖ action ‖ resource ‖ outcome ‖ trace id ‖
//!   client ip ‖ details ‖ redacted (0 or 1))
//! - **record hash** = SHA-256(`"godel.audit.chain.v1"` ‖ prev hash ‖ sequence ‖ record id
//!   ‖ occurred at (nanoseconds since the Unix epoch, signed) ‖ team id ‖ payload digest)
//! - the first record's prev hash is 32 zero bytes ([`GENESIS`]).
//!
//! The chain covers the payload only through its digest, so a retention or erasure
//! step may remove or scrub a payload row and the chain still verifies.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The prev hash of the first record.
pub const GENESIS: Hash = [0; 32];

const PAYLOAD_TAG: &str = "godel.audit.payload.v1";
const CHAIN_TAG: &str = "godel.audit.chain.v1";
const CHECKPOINT_TAG: &str = "godel.audit.checkpoint.v1";

/// The redactable part of a record: what the payload table stores.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload {
    pub actor_kind: i32,
    pub actor_id: String,
    pub actor_team_id: String,
    pub actor_roles: Vec<String>,
    pub action: String,
    pub resource: String,
    pub outcome: i32,
    pub trace_id: String,
    pub client_ip: String,
    pub details: String,
    /// Whether redaction replaced anything in this record.
    pub redacted: bool,
}

/// The immutable part of a record: what the chain table stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntry {
    pub sequence: u64,
    pub record_id: String,
    pub occurred_at_ns: i64,
    pub team_id: String,
    pub payload_digest: Hash,
    pub prev_hash: Hash,
    pub hash: Hash,
}

struct Encoder(Sha256);

impl Encoder {
    fn new(tag: &str) -> Self {
        let mut e = Self(Sha256::new());
        e.str(tag);
        e
    }

    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.update(s.as_bytes());
    }

    fn u64(&mut self, n: u64) {
        self.0.update(n.to_be_bytes());
    }

    fn i64(&mut self, n: i64) {
        self.0.update(n.to_be_bytes());
    }

    fn hash(&mut self, h: &Hash) {
        self.0.update(h);
    }

    fn finish(self) -> Hash {
        self.0.finalize().into()
    }
}

impl Payload {
    /// SHA-256 of the canonical encoding (see the module doc).
    pub fn digest(&self) -> Hash {
        let mut e = Encoder::new(PAYLOAD_TAG);
        e.i64(i64::from(self.actor_kind));
        e.str(&self.actor_id);
        e.str(&self.actor_team_id);
        e.u64(self.actor_roles.len() as u64);
        for role in &self.actor_roles {
            e.str(role);
        }
        e.str(&self.action);
        e.str(&self.resource);
        e.i64(i64::from(self.outcome));
        e.str(&self.trace_id);
        e.str(&self.client_ip);
        e.str(&self.details);
        e.u64(u64::from(self.redacted));
        e.finish()
    }
}

/// The hash of the record at `sequence` (see the module doc).
pub fn record_hash(
    prev_hash: &Hash,
    sequence: u64,
    record_id: &str,
    occurred_at_ns: i64,
    team_id: &str,
    payload_digest: &Hash,
) -> Hash {
    let mut e = Encoder::new(CHAIN_TAG);
    e.hash(prev_hash);
    e.u64(sequence);
    e.str(record_id);
    e.i64(occurred_at_ns);
    e.str(team_id);
    e.hash(payload_digest);
    e.finish()
}

impl ChainEntry {
    /// The hash this entry's fields give; equal to `hash` when the entry is intact.
    pub fn recompute(&self) -> Hash {
        record_hash(
            &self.prev_hash,
            self.sequence,
            &self.record_id,
            self.occurred_at_ns,
            &self.team_id,
            &self.payload_digest,
        )
    }
}

/// The bytes a checkpoint signature covers: tag ‖ sequence ‖ head hash ‖ time
/// (nanoseconds since the Unix epoch).
pub fn checkpoint_message(sequence: u64, head_hash: &Hash, time_ns: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + CHECKPOINT_TAG.len() + 8 + 32 + 8);
    out.extend_from_slice(&(CHECKPOINT_TAG.len() as u64).to_be_bytes());
    out.extend_from_slice(CHECKPOINT_TAG.as_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(head_hash);
    out.extend_from_slice(&time_ns.to_be_bytes());
    out
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Hash {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block_key.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block_key.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// Parses a 64-character hex digest.
pub fn parse_hash(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_cases() {
        // Test case 2: key "Jefe".
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a 131-byte key, longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn length_prefixes_keep_field_boundaries_apart() {
        let a = Payload {
            action: "ab".into(),
            resource: "c".into(),
            ..Payload::default()
        };
        let b = Payload {
            action: "a".into(),
            resource: "bc".into(),
            ..Payload::default()
        };
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn the_hash_covers_every_chain_field() {
        let base = record_hash(&GENESIS, 1, "aud_x", 5, "team_y", &[1; 32]);
        assert_ne!(
            base,
            record_hash(&[1; 32], 1, "aud_x", 5, "team_y", &[1; 32])
        );
        assert_ne!(
            base,
            record_hash(&GENESIS, 2, "aud_x", 5, "team_y", &[1; 32])
        );
        assert_ne!(
            base,
            record_hash(&GENESIS, 1, "aud_z", 5, "team_y", &[1; 32])
        );
        assert_ne!(
            base,
            record_hash(&GENESIS, 1, "aud_x", 6, "team_y", &[1; 32])
        );
        assert_ne!(
            base,
            record_hash(&GENESIS, 1, "aud_x", 5, "team_z", &[1; 32])
        );
        assert_ne!(
            base,
            record_hash(&GENESIS, 1, "aud_x", 5, "team_y", &[2; 32])
        );
    }
}
