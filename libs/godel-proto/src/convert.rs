//! Conversions between proto fields and domain values, with errors that name the field.
//!
//! Proto ids are strings in the prefixed text form of `godel-types`; timestamps and
//! durations are the well-known types from `pbjson-types`. Every failure is an
//! [`Error`] with code `invalid_argument` and the offending field set, ready to be
//! returned from a gRPC handler.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_types::IdParseError;
use pbjson_types::{Duration, Timestamp};

/// Parses the id in field `field`. An empty string is reported as missing.
pub fn parse_id<T>(field: &str, s: &str) -> Result<T, Error>
where
    T: FromStr<Err = IdParseError>,
{
    if s.is_empty() {
        return Err(Error::invalid_argument(
            field,
            format!("`{field}` is required"),
        ));
    }
    s.parse()
        .map_err(|e: IdParseError| Error::invalid_argument(field, format!("`{field}`: {e}")))
}

/// Parses an id that may be left empty (empty means none).
pub fn parse_optional_id<T>(field: &str, s: &str) -> Result<Option<T>, Error>
where
    T: FromStr<Err = IdParseError>,
{
    if s.is_empty() {
        return Ok(None);
    }
    parse_id(field, s).map(Some)
}

/// Parses a repeated id field; an error names the element (`depends_on[2]`).
pub fn parse_ids<T, S>(field: &str, ids: &[S]) -> Result<Vec<T>, Error>
where
    T: FromStr<Err = IdParseError>,
    S: AsRef<str>,
{
    ids.iter()
        .enumerate()
        .map(|(i, s)| parse_id(&format!("{field}[{i}]"), s.as_ref()))
        .collect()
}

/// Returns the message in a required message field, or an error naming it.
pub fn required<'a, T>(field: &str, value: Option<&'a T>) -> Result<&'a T, Error> {
    value.ok_or_else(|| Error::invalid_argument(field, format!("`{field}` is required")))
}

/// A proto timestamp for `time`.
pub fn to_timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp::from(time)
}

/// A proto timestamp for `time`, if any.
pub fn to_optional_timestamp(time: Option<DateTime<Utc>>) -> Option<Timestamp> {
    time.map(Timestamp::from)
}

/// Reads the timestamp in field `field`.
pub fn from_timestamp(field: &str, timestamp: &Timestamp) -> Result<DateTime<Utc>, Error> {
    DateTime::<Utc>::try_from(*timestamp).map_err(|e| {
        Error::invalid_argument(field, format!("`{field}` is not a valid timestamp: {e}"))
    })
}

/// Reads an optional timestamp field (unset means none).
pub fn from_optional_timestamp(
    field: &str,
    timestamp: Option<&Timestamp>,
) -> Result<Option<DateTime<Utc>>, Error> {
    timestamp.map(|t| from_timestamp(field, t)).transpose()
}

/// Reads a required timestamp field.
pub fn from_required_timestamp(
    field: &str,
    timestamp: Option<&Timestamp>,
) -> Result<DateTime<Utc>, Error> {
    from_timestamp(field, required(field, timestamp)?)
}

/// A proto duration for `duration`.
pub fn to_duration(duration: std::time::Duration) -> Duration {
    Duration::from(duration)
}

/// Reads the duration in field `field`; negative durations are rejected.
pub fn from_duration(field: &str, duration: &Duration) -> Result<std::time::Duration, Error> {
    let invalid = || Error::invalid_argument(field, format!("`{field}` is not a valid duration"));
    let seconds = u64::try_from(duration.seconds).map_err(|_| invalid())?;
    let nanos = u32::try_from(duration.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(invalid)?;
    Ok(std::time::Duration::new(seconds, nanos))
}

/// Reads an optional duration field (unset means none).
pub fn from_optional_duration(
    field: &str,
    duration: Option<&Duration>,
) -> Result<Option<std::time::Duration>, Error> {
    duration.map(|d| from_duration(field, d)).transpose()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use godel_error::ErrorCode;
    use godel_types::{TaskId, TeamId};

    use super::*;

    #[test]
    fn parses_ids_of_the_right_kind() {
        let id = TaskId::new();
        assert_eq!(parse_id::<TaskId>("task_id", &id.to_string()).unwrap(), id);
        assert_eq!(parse_optional_id::<TaskId>("plan_id", "").unwrap(), None);
        assert_eq!(
            parse_optional_id::<TaskId>("task_id", &id.to_string()).unwrap(),
            Some(id)
        );
    }

    #[test]
    fn id_errors_name_the_field() {
        let team = TeamId::new().to_string();
        let err = parse_id::<TaskId>("task_id", &team).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert_eq!(err.field.as_deref(), Some("task_id"));
        assert!(err.message.contains("`tsk_`"), "{}", err.message);
        assert!(err.message.contains(&team), "{}", err.message);

        let err = parse_id::<TeamId>("team_id", "").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("team_id"));
        assert_eq!(err.message, "`team_id` is required");

        let err = parse_optional_id::<TaskId>("plan_id", "pln_x").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("plan_id"));
    }

    #[test]
    fn repeated_ids_name_the_element() {
        let a = TaskId::new();
        let b = TaskId::new();
        let ids = vec![a.to_string(), b.to_string()];
        assert_eq!(
            parse_ids::<TaskId, _>("depends_on", &ids).unwrap(),
            vec![a, b]
        );

        let bad = vec![a.to_string(), "tsk_nope".to_owned()];
        let err = parse_ids::<TaskId, _>("depends_on", &bad).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("depends_on[1]"));
        assert!(
            parse_ids::<TaskId, String>("depends_on", &[])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let time = Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        let ts = to_timestamp(time);
        assert_eq!(ts.seconds, time.timestamp());
        assert_eq!(ts.nanos, 123_456_789);
        assert_eq!(from_timestamp("created_at", &ts).unwrap(), time);
        assert_eq!(from_optional_timestamp("x", None).unwrap(), None);
        assert_eq!(
            from_optional_timestamp("x", to_optional_timestamp(Some(time)).as_ref()).unwrap(),
            Some(time)
        );
        let err = from_required_timestamp("not_before", None).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("not_before"));
    }

    #[test]
    fn invalid_timestamps_are_rejected() {
        let bad = Timestamp {
            seconds: 0,
            nanos: -5,
        };
        let err = from_timestamp("not_before", &bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert_eq!(err.field.as_deref(), Some("not_before"));
    }

    #[test]
    fn durations_round_trip_and_reject_negatives() {
        let d = std::time::Duration::from_millis(1500);
        let proto = to_duration(d);
        assert_eq!((proto.seconds, proto.nanos), (1, 500_000_000));
        assert_eq!(from_duration("retry_after", &proto).unwrap(), d);
        assert_eq!(from_optional_duration("retry_after", None).unwrap(), None);
        let negative = Duration {
            seconds: -1,
            nanos: 0,
        };
        let err = from_duration("retry_after", &negative).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("retry_after"));
        let overflowing = Duration {
            seconds: i64::MAX,
            nanos: 1_000_000_000,
        };
        assert!(from_duration("retry_after", &overflowing).is_err());
    }
}
