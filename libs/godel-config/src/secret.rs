//! [`Secret`]: a configuration value that never shows up in logs, `Debug` output or
//! `--dump-config`.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a [`Secret`] prints and serializes as outside the configuration loader.
pub const REDACTED: &str = "[redacted]";

thread_local! {
    /// How many [`reveal_secrets`] scopes are open on this thread.
    static REVEAL_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` with secrets serializing as their real values on this thread.
///
/// Only the loader uses this, to feed `T::default()` into the defaults layer without
/// replacing a default secret with [`REDACTED`]. Serialization is synchronous, so a
/// thread-local scope covers exactly the serialization done inside `f`.
pub(crate) fn reveal_secrets<R>(f: impl FnOnce() -> R) -> R {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            REVEAL_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    REVEAL_DEPTH.with(|d| d.set(d.get() + 1));
    let _restore = Restore;
    f()
}

fn revealing() -> bool {
    REVEAL_DEPTH.with(|d| d.get() > 0)
}

/// A secret configuration value: a database URL with a password, a signing key, a
/// provider key.
///
/// `Debug` and `Display` print `[redacted]`, and so does serialization (which is what
/// `--dump-config` and any JSON/TOML rendering of a config use). Deserialization is
/// transparent: a secret is written in TOML, env or `--set` exactly like the plain
/// value. Read it with [`Secret::expose`] at the one place that needs it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value. Call this where the value is used, never to log it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the secret value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if revealing() {
            self.0.serialize(serializer)
        } else {
            serializer.serialize_str(REDACTED)
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_redact() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        let toml = toml::to_string(&std::collections::BTreeMap::from([("k", s.clone())]))
            .expect("serializes");
        assert!(!toml.contains("hunter2"), "{toml}");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn reveal_scope_is_restored() {
        let s = Secret::new(7u32);
        let inside = reveal_secrets(|| toml::Value::try_from(&s).expect("serializes"));
        assert_eq!(inside, toml::Value::Integer(7));
        let outside = toml::Value::try_from(&s).expect("serializes");
        assert_eq!(outside, toml::Value::String(REDACTED.to_owned()));
    }
}
