//! Validation shared by both implementations, so what one bus accepts the other
//! accepts too.

use crate::{BusError, ConsumerConfig, OutgoingMessage, subject};

/// Header names starting with this are reserved for the bus (`Nats-Msg-Id`, …).
pub(crate) const RESERVED_HEADER_PREFIX: &str = "Nats-";

/// Checks a message before it is published: the id and header values contain no line
/// breaks, header names are printable ASCII without `:` and not reserved.
pub(crate) fn message(msg: &OutgoingMessage) -> Result<(), BusError> {
    let invalid = |reason: String| BusError::Publish {
        subject: msg.subject.to_string(),
        reason,
    };
    if msg.id.contains(['\r', '\n']) {
        return Err(invalid("the message id contains a line break".to_owned()));
    }
    for (name, value) in &msg.headers {
        if name.is_empty() || name.contains(|c: char| !c.is_ascii_graphic() || c == ':') {
            return Err(invalid(format!(
                "header name `{name}` must be printable ASCII without `:`"
            )));
        }
        if name
            .to_ascii_lowercase()
            .starts_with(&RESERVED_HEADER_PREFIX.to_ascii_lowercase())
        {
            return Err(invalid(format!(
                "header name `{name}` is reserved for the bus"
            )));
        }
        if value.contains(['\r', '\n']) {
            return Err(invalid(format!("header `{name}` contains a line break")));
        }
    }
    Ok(())
}

/// Checks the durable name and the filters of `config`.
///
/// - durable names are non-empty and contain no `.`, `*`, `>` or whitespace (NATS
///   rules);
/// - a filter starts with `godel.v1.`, its tokens are non-empty, `>` is only the last
///   token;
/// - no two filters overlap (a message matches at most one filter), because on NATS
///   each filter is its own server-side consumer and overlapping ones would deliver
///   the same message twice.
pub(crate) fn consumer(config: &ConsumerConfig) -> Result<(), BusError> {
    let invalid = |reason: String| BusError::Consumer {
        durable_name: config.durable_name.clone(),
        reason,
    };
    let name = &config.durable_name;
    if name.is_empty()
        || name
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
    {
        return Err(invalid(
            "durable names must be non-empty without `.`, `*`, `>` or whitespace".to_owned(),
        ));
    }
    if config.max_deliver == Some(0) {
        return Err(invalid("max_deliver must be at least 1".to_owned()));
    }
    for filter in &config.filter_subjects {
        validate_filter(filter).map_err(|reason| invalid(format!("filter `{filter}` {reason}")))?;
    }
    for (i, a) in config.filter_subjects.iter().enumerate() {
        for b in &config.filter_subjects[i + 1..] {
            if overlap(a, b) {
                return Err(invalid(format!(
                    "filters `{a}` and `{b}` overlap; a message must match at most one filter"
                )));
            }
        }
    }
    Ok(())
}

/// Checks the filter of a [`crate::Bus::subscribe`].
pub(crate) fn subscription(filter: &str) -> Result<(), BusError> {
    validate_filter(filter).map_err(|reason| BusError::Subscribe {
        filter: filter.to_owned(),
        reason: format!("invalid filter: {reason}"),
    })
}

fn validate_filter(filter: &str) -> Result<(), &'static str> {
    let root = format!("{}.", subject::ROOT);
    if !filter.starts_with(&root) || filter.len() == root.len() {
        return Err("must start with `godel.v1.`");
    }
    let tokens: Vec<&str> = filter.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() || token.contains(' ') {
            return Err("has an empty token or a space");
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err("may use `>` only as the last token");
        }
        if token.len() > 1 && token.contains(['*', '>']) {
            return Err("may use `*` and `>` only as whole tokens");
        }
    }
    Ok(())
}

/// True when some subject matches both filters.
pub(crate) fn overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when `subject` matches one of `filters` (an empty list matches everything).
pub(crate) fn matches_any(filters: &[String], subject: &str) -> bool {
    filters.is_empty() || filters.iter().any(|f| subject::matches(f, subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, filters: &[&str]) -> ConsumerConfig {
        ConsumerConfig::new(name, filters.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn overlap_follows_wildcards() {
        assert!(overlap("godel.v1.team.>", "godel.v1.team.x.task.done"));
        assert!(overlap("godel.v1.team.*.task.*", "godel.v1.team.x.>"));
        assert!(overlap("godel.v1.*.x", "godel.v1.team.*"));
        assert!(!overlap("godel.v1.team.>", "godel.v1.dispatch.>"));
        assert!(!overlap(
            "godel.v1.team.*.task.*",
            "godel.v1.team.*.session.*"
        ));
        assert!(!overlap("godel.v1.team.*", "godel.v1.team.*.x"));
    }

    #[test]
    fn validates_headers() {
        let mut msg = OutgoingMessage {
            id: "evt_1".to_owned(),
            subject: crate::Subject::parse("godel.v1.dispatch.x").unwrap(),
            headers: crate::Headers::new(),
            payload: bytes::Bytes::new(),
        };
        msg.headers
            .insert("traceparent".to_owned(), "00-ab-cd-01".to_owned());
        assert!(message(&msg).is_ok());
        for (name, value) in [
            ("bad name", "v"),
            ("a:b", "v"),
            ("nats-msg-id", "v"),
            ("ok", "a\nb"),
        ] {
            let mut bad = msg.clone();
            bad.headers.insert(name.to_owned(), value.to_owned());
            assert!(message(&bad).is_err(), "{name}: {value}");
        }
        msg.id = "a\r\n".to_owned();
        assert!(message(&msg).is_err());
    }

    #[test]
    fn validates_names_and_filters() {
        assert!(consumer(&cfg("audit", &["godel.v1.team.>", "godel.v1.dispatch.*"])).is_ok());
        assert!(consumer(&cfg("all", &[])).is_ok());
        assert!(consumer(&cfg("a.b", &[])).is_err());
        assert!(consumer(&cfg("", &[])).is_err());
        assert!(consumer(&cfg("x", &["other.v1.>"])).is_err());
        assert!(consumer(&cfg("x", &["godel.v1.>.x"])).is_err());
        assert!(consumer(&cfg("x", &["godel.v1.a*"])).is_err());
        assert!(consumer(&cfg("x", &["godel.v1.team.>", "godel.v1.team.*.task.*"])).is_err());
        let mut zero = cfg("x", &[]);
        zero.max_deliver = Some(0);
        assert!(consumer(&zero).is_err());
    }
}
