//! Redaction before storage: personal data and secrets in a record are replaced by
//! `[kind:pseudonym]` before the record is hashed and stored.
//!
//! The pseudonym is the first 6 bytes (12 hex digits) of HMAC-SHA256 under the
//! service's pseudonym key, so equal values get equal pseudonyms (an auditor can
//! still see that two records concern the same address or key) while the value
//! itself cannot be recovered without the key.
//!
//! Detected, in priority order (an earlier detector wins where matches overlap):
//! provider and API keys by prefix (`sk-ant-`, `sk-proj-`, `sk-`, `ghp_`,
//! `github_pat_`, `xox?-`, `AKIA…`, Godel's `gdl_`), JWTs, `Bearer` tokens, card
//! numbers (13–19 digits that pass the Luhn check), email addresses, phone numbers,
//! IP addresses (only when configured), the configured patterns, and long
//! high-entropy tokens (≥ 32 characters mixing upper case, lower case and digits —
//! Godel ids, UUIDs and hex digests are lower case and stay readable). In JSON
//! details, the values of keys that name a secret (`password`, `token`, `secret`,
//! `authorization`, `api_key`, …) are replaced whole.

use std::net::Ipv6Addr;
use std::str::FromStr;

use regex::Regex;

use crate::canonical::hmac_sha256;
use crate::config::RedactionConfig;

/// Why the redaction rules could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("redaction pattern `{name}` is not a valid regular expression")]
    Pattern {
        name: String,
        #[source]
        source: regex::Error,
    },
    #[error("redaction pattern name `{name}` must be 1-32 characters of a-z, 0-9 and _")]
    PatternName { name: String },
}

/// Which check a detector applies to a regex match before replacing it.
#[derive(Debug, Clone, Copy)]
enum Check {
    None,
    Luhn,
    Phone,
    Ipv6,
    Entropy,
}

#[derive(Debug)]
struct Detector {
    kind: String,
    regex: Regex,
    /// The capture group holding the value (0: the whole match).
    group: usize,
    check: Check,
}

/// Replaces personal data and secrets in text with keyed pseudonyms.
#[derive(Debug)]
pub struct Redactor {
    key: Vec<u8>,
    detectors: Vec<Detector>,
    redact_ip: bool,
}

/// Text after redaction, and whether anything was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    pub changed: bool,
}

const BUILTIN: &[(&str, &str, usize)] = &[
    (
        "key",
        r"\b(?:sk-ant-[A-Za-z0-9_-]{8,}|sk-proj-[A-Za-z0-9_-]{8,}|sk-[A-Za-z0-9_-]{16,}|ghp_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|gdl_[A-Za-z0-9_-]{8,})",
        0,
    ),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        0,
    ),
    ("bearer", r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]+=*)", 1),
];

const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "private_key",
    "cookie",
    "credential",
];

impl Redactor {
    /// Builds the detectors from `config`, with `key` for the pseudonyms.
    pub fn new(key: Vec<u8>, config: &RedactionConfig) -> Result<Self, RedactError> {
        let builtin = |kind: &str, pattern: &str, group: usize, check: Check| {
            Regex::new(pattern)
                .map(|regex| Detector {
                    kind: kind.to_owned(),
                    regex,
                    group,
                    check,
                })
                .map_err(|source| RedactError::Pattern {
                    name: kind.to_owned(),
                    source,
                })
        };
        let mut detectors: Vec<Detector> = BUILTIN
            .iter()
            .map(|(kind, pattern, group)| builtin(kind, pattern, *group, Check::None))
            .collect::<Result<_, _>>()?;
        detectors.push(builtin(
            "card",
            r"\b\d(?:[ -]?\d){12,18}\b",
            0,
            Check::Luhn,
        )?);
        detectors.push(builtin(
            "email",
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            0,
            Check::None,
        )?);
        detectors.push(builtin(
            "phone",
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}\b|\+\d{8,15}\b",
            0,
            Check::Phone,
        )?);
        if config.ip_addresses {
            detectors.push(builtin(
                "ip",
                r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
                0,
                Check::None,
            )?);
            detectors.push(builtin(
                "ip",
                r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
                0,
                Check::Ipv6,
            )?);
        }
        for pattern in &config.patterns {
            let name_ok = !pattern.name.is_empty()
                && pattern.name.len() <= 32
                && pattern
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !name_ok {
                return Err(RedactError::PatternName {
                    name: pattern.name.clone(),
                });
            }
            let regex = Regex::new(&pattern.regex).map_err(|source| RedactError::Pattern {
                name: pattern.name.clone(),
                source,
            })?;
            detectors.push(Detector {
                kind: pattern.name.clone(),
                regex,
                group: 0,
                check: Check::None,
            });
        }
        detectors.push(builtin(
            "token",
            r"[A-Za-z0-9_\-+/=]{32,}",
            0,
            Check::Entropy,
        )?);
        Ok(Self {
            key,
            detectors,
            redact_ip: config.ip_addresses,
        })
    }

    /// The pseudonym of `value`: 12 hex digits of its HMAC under the key.
    pub fn pseudonym(&self, value: &str) -> String {
        hex::encode(&hmac_sha256(&self.key, value.as_bytes())[..6])
    }

    fn placeholder(&self, kind: &str, value: &str) -> String {
        format!("[{kind}:{}]", self.pseudonym(value))
    }

    /// Redacts free text.
    pub fn text(&self, input: &str) -> Redacted {
        let mut spans: Vec<(usize, usize, &str)> = Vec::new();
        for detector in &self.detectors {
            for caps in detector.regex.captures_iter(input) {
                let Some(m) = caps.get(detector.group) else {
                    continue;
                };
                let (start, end) = (m.start(), m.end());
                if spans.iter().any(|&(s, e, _)| start < e && s < end) {
                    continue;
                }
                if passes(detector.check, m.as_str()) {
                    spans.push((start, end, &detector.kind));
                }
            }
        }
        if spans.is_empty() {
            return Redacted {
                text: input.to_owned(),
                changed: false,
            };
        }
        spans.sort_by_key(|&(s, _, _)| s);
        let mut out = String::with_capacity(input.len());
        let mut at = 0;
        for (start, end, kind) in spans {
            out.push_str(&input[at..start]);
            out.push_str(&self.placeholder(kind, &input[start..end]));
            at = end;
        }
        out.push_str(&input[at..]);
        Redacted {
            text: out,
            changed: true,
        }
    }

    /// Redacts a client address field: replaced whole when IP redaction is on.
    pub fn client_ip(&self, ip: &str) -> Redacted {
        if self.redact_ip && !ip.is_empty() {
            Redacted {
                text: self.placeholder("ip", ip),
                changed: true,
            }
        } else {
            Redacted {
                text: ip.to_owned(),
                changed: false,
            }
        }
    }

    /// Redacts JSON details: every string value (and the whole value of a key naming
    /// a secret). Text that is not JSON is redacted as text.
    pub fn details(&self, input: &str) -> Redacted {
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(input) else {
            return self.text(input);
        };
        let mut changed = false;
        self.json(&mut value, &mut changed);
        if !changed {
            return Redacted {
                text: input.to_owned(),
                changed: false,
            };
        }
        Redacted {
            text: value.to_string(),
            changed: true,
        }
    }

    fn json(&self, value: &mut serde_json::Value, changed: &mut bool) {
        match value {
            serde_json::Value::String(s) => {
                let r = self.text(s);
                if r.changed {
                    *s = r.text;
                    *changed = true;
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    self.json(item, changed);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    if is_secret_key(key) && !item.is_null() {
                        let raw = match &*item {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        *item = serde_json::Value::String(self.placeholder("secret", &raw));
                        *changed = true;
                    } else {
                        self.json(item, changed);
                    }
                }
            }
            _ => {}
        }
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    SECRET_KEYS.iter().any(|s| key.contains(s))
}

fn passes(check: Check, value: &str) -> bool {
    match check {
        Check::None => true,
        Check::Luhn => luhn(value),
        Check::Phone => {
            let digits = value.chars().filter(char::is_ascii_digit).count();
            (8..=15).contains(&digits)
                && !looks_like_date(value)
                && std::net::Ipv4Addr::from_str(value).is_err()
        }
        Check::Ipv6 => value.contains(':') && Ipv6Addr::from_str(value).is_ok(),
        Check::Entropy => high_entropy(value),
    }
}

/// `2026-11-23` and similar are dates, not phone numbers.
fn looks_like_date(value: &str) -> bool {
    let parts: Vec<&str> = value.split(['-', '.', ' ']).collect();
    parts.len() == 3 && parts[0].len() == 4 && parts[1].len() <= 2 && parts[2].len() <= 2
}

/// The Luhn check over the digits of `value` (13–19 of them).
pub fn luhn(value: &str) -> bool {
    let digits: Vec<u32> = value.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn high_entropy(value: &str) -> bool {
    let upper = value.chars().any(|c| c.is_ascii_uppercase());
    let lower = value.chars().any(|c| c.is_ascii_lowercase());
    let digit = value.chars().any(|c| c.is_ascii_digit());
    if !(upper && lower && digit) {
        return false;
    }
    let mut counts = [0usize; 256];
    for b in value.bytes() {
        counts[usize::from(b)] += 1;
    }
    let len = value.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum();
    entropy >= 4.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PatternConfig, RedactionConfig};

    fn redactor(config: RedactionConfig) -> Redactor {
        Redactor::new(b"test-key".to_vec(), &config).unwrap()
    }

    fn plain() -> Redactor {
        redactor(RedactionConfig::default())
    }

    fn assert_redacted(input: &str, secret: &str, kind: &str) {
        let r = plain().text(input);
        assert!(r.changed, "{input} was not redacted");
        assert!(!r.text.contains(secret), "{secret} leaked: {}", r.text);
        assert!(
            r.text.contains(&format!("[{kind}:")),
            "{kind} missing: {}",
            r.text
        );
    }

    #[test]
    fn emails_are_replaced() {
        assert_redacted(
            "contact ada.lovelace+x@example.co.uk now",
            "ada.lovelace",
            "email",
        );
    }

    #[test]
    fn phone_numbers_are_replaced_but_dates_are_not() {
        assert_redacted("call +1 415 555 2671", "555 2671", "phone");
        assert_redacted("call (415) 555-2671", "555-2671", "phone");
        assert_redacted("call +442071838750", "2071838750", "phone");
        assert!(!plain().text("on 2026-11-23 at 12:30:45").changed);
        assert!(!plain().text("from 203.0.113.7").changed);
    }

    #[test]
    fn card_numbers_are_replaced_only_when_luhn_valid() {
        assert_redacted("card 4111 1111 1111 1111 ok", "1111 1111", "card");
        assert_redacted("card 5500-0000-0000-0004", "0000-0004", "card");
        assert!(luhn("4111111111111111"));
        assert!(!luhn("4111111111111112"));
        let r = plain().text("order 4111111111111112 shipped");
        assert!(r.text.contains("4111111111111112"), "{}", r.text);
    }

    #[test]
    fn jwts_and_bearer_tokens_are_replaced() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c3IifQ.c2lnbmF0dXJlLWJ5dGVz";
        assert_redacted(&format!("token {jwt}"), "eyJhbGci", "jwt");
        let r = plain().text("Authorization: Bearer abc.def-ghi_123");
        assert!(
            r.text.starts_with("Authorization: Bearer [bearer:"),
            "{}",
            r.text
        );
        assert!(!r.text.contains("abc.def"));
    }

    #[test]
    fn provider_keys_are_replaced_by_prefix() {
        for key in [
            "sk-ant-api03-AbCdEf123456",
            "sk-proj-AbCdEf123456789",
            "sk-AbCdEf1234567890abcd",
            "ghp_AbCdEf1234567890abcdEF",
            "github_pat_11AbCdEf1234567890abcd",
            "xoxb-123456789012-abcdef",
            "AKIAIOSFODNN7EXAMPLE",
            "gdl_4f3a9b8c7d6e",
        ] {
            assert_redacted(&format!("used {key}."), key, "key");
        }
    }

    #[test]
    fn long_high_entropy_tokens_are_replaced_but_ids_and_digests_are_not() {
        assert_redacted(
            "secret Zq8XvN3kLp2RtY7mWc4HsJ9bGd6FaE1u here",
            "Zq8XvN3kLp",
            "token",
        );
        let id = "tsk_0192f3a4b5c67d8e9fa0b1c2d3e4f5a6";
        let digest = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let r = plain().text(&format!("/v1/tasks/{id} {digest}"));
        assert!(!r.changed, "{}", r.text);
    }

    #[test]
    fn ip_addresses_only_when_configured() {
        let text = "from 203.0.113.7 and 2001:db8::1";
        assert!(!plain().text(text).changed);
        let r = redactor(RedactionConfig {
            ip_addresses: true,
            ..RedactionConfig::default()
        });
        let out = r.text(text);
        assert!(
            !out.text.contains("203.0.113.7") && !out.text.contains("2001:db8"),
            "{}",
            out.text
        );
        assert!(r.client_ip("203.0.113.7").text.starts_with("[ip:"));
        assert_eq!(plain().client_ip("203.0.113.7").text, "203.0.113.7");
        assert!(!r.text("at 12:30:45").changed);
    }

    #[test]
    fn configured_patterns_apply() {
        let r = redactor(RedactionConfig {
            patterns: vec![PatternConfig {
                name: "employee".into(),
                regex: r"EMP-\d{6}".into(),
            }],
            ..RedactionConfig::default()
        });
        let out = r.text("badge EMP-123456");
        assert!(out.text.starts_with("badge [employee:"), "{}", out.text);
        let bad = Redactor::new(
            vec![],
            &RedactionConfig {
                patterns: vec![PatternConfig {
                    name: "x".into(),
                    regex: "(".into(),
                }],
                ..RedactionConfig::default()
            },
        );
        assert!(matches!(bad, Err(RedactError::Pattern { .. })));
    }

    #[test]
    fn pseudonyms_match_for_equal_values_and_depend_on_the_key() {
        let a = plain().text("a@example.com");
        let b = plain().text("a@example.com");
        let c = plain().text("b@example.com");
        assert_eq!(a.text, b.text);
        assert_ne!(a.text, c.text);
        let other = Redactor::new(b"other".to_vec(), &RedactionConfig::default()).unwrap();
        assert_ne!(other.text("a@example.com").text, a.text);
    }

    #[test]
    fn json_details_redact_values_and_secret_keys() {
        let out = plain().details(
            r#"{"status":403,"user":{"email":"x@example.com"},"password":"hunter2","list":["ghp_AbCdEf1234567890abcdEF"]}"#,
        );
        assert!(out.changed);
        for leaked in ["x@example.com", "hunter2", "ghp_"] {
            assert!(!out.text.contains(leaked), "{leaked}: {}", out.text);
        }
        assert!(out.text.contains("\"status\":403"));
        assert!(!plain().details(r#"{"status":200}"#).changed);
    }
}
