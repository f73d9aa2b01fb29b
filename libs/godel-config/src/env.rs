//! The environment and `--set` layers: where variables come from (a trait, so tests
//! pass a map) and how `GODEL_A__B=v` / `--set a.b=v` become nested keys.

use std::collections::{BTreeMap, HashMap};

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// The prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "GODEL_";

/// Separates nesting levels in an environment variable name: `GODEL_DATABASE__URL`
/// sets `database.url`.
pub const ENV_SEPARATOR: &str = "__";

/// Where environment variables come from. The process environment in binaries
/// ([`ProcessEnv`]); a map in tests.
pub trait EnvSource {
    /// Every variable as `(name, value)`; the loader keeps those starting with
    /// [`ENV_PREFIX`].
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment. Variables that are not valid UTF-8 are skipped.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl EnvSource for HashMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl EnvSource for [(&str, &str)] {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
}

impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn vars(&self) -> Vec<(String, String)> {
        self.as_slice().vars()
    }
}

/// Variables with the prefix that are not configuration: the `godel` CLI's own
/// flags (`--token`, `--server`, `--team`, `--database-url` of `godel audit verify`).
/// Skipped, so having them set does not break `godel up` or a service's strict
/// loading.
pub const NOT_CONFIGURATION: &[&str] = &[
    "GODEL_TOKEN",
    "GODEL_AUDIT_DATABASE_URL",
    "GODEL_SERVER",
    "GODEL_TEAM",
];

/// Turns an environment variable name into a dotted key path, or `None` when it does
/// not carry configuration (wrong prefix, empty segment, [`NOT_CONFIGURATION`]).
pub(crate) fn env_key(name: &str) -> Option<String> {
    if NOT_CONFIGURATION.contains(&name) {
        return None;
    }
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let segments: Vec<String> = rest
        .split(ENV_SEPARATOR)
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(segments.join("."))
}

/// A string value from env or a flag. Structured values (`[a, b]`, `{k = v}`) are
/// parsed; scalars stay strings and the loader's lossy extraction turns `"8080"` into a
/// number or `"true"` into a bool where the target type asks for one. Keeping scalars
/// as strings means a secret such as `12345` still deserializes into a `String`.
fn parse_value(raw: &str) -> Value {
    match raw.parse::<Value>() {
        Ok(v @ (Value::Array(..) | Value::Dict(..))) => v,
        _ => Value::from(raw.to_owned()),
    }
}

/// Builds a nested dictionary from `(dotted key, raw value)` pairs; later pairs win.
fn nested(pairs: &[(String, String)]) -> Dict {
    let mut dict = Dict::new();
    for (key, raw) in pairs {
        if let Value::Dict(_, d) = figment::util::nest(key, parse_value(raw)) {
            dict = merge_dicts(dict, d);
        }
    }
    dict
}

fn merge_dicts(mut base: Dict, other: Dict) -> Dict {
    for (k, v) in other {
        let merged = match (base.remove(&k), v) {
            (Some(Value::Dict(_, a)), Value::Dict(tag, b)) => Value::Dict(tag, merge_dicts(a, b)),
            (_, v) => v,
        };
        base.insert(k, merged);
    }
    base
}

/// The `GODEL_*` environment layer.
pub(crate) struct EnvLayer {
    pairs: Vec<(String, String)>,
}

impl EnvLayer {
    pub(crate) fn new(source: &(impl EnvSource + ?Sized)) -> Self {
        let mut pairs: Vec<(String, String)> = source
            .vars()
            .into_iter()
            .filter_map(|(name, value)| Some((env_key(&name)?, value)))
            .collect();
        // Deterministic order whatever the source's iteration order is.
        pairs.sort();
        Self { pairs }
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_: &Profile, keys: &[&str]| {
            let upper: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!("{ENV_PREFIX}{}", upper.join(ENV_SEPARATOR))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        Ok(Profile::Default.collect(nested(&self.pairs)))
    }
}

/// The `--set key.path=value` layer; flags apply in the order given.
pub(crate) struct FlagLayer {
    pairs: Vec<(String, String)>,
}

impl FlagLayer {
    pub(crate) fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }
}

impl Provider for FlagLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flag")
            .interpolater(|_: &Profile, keys: &[&str]| format!("--set {}", keys.join(".")))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        Ok(Profile::Default.collect(nested(&self.pairs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_to_nested_keys() {
        assert_eq!(
            env_key("GODEL_DATABASE__URL").as_deref(),
            Some("database.url")
        );
        assert_eq!(env_key("GODEL_LOG_LEVEL").as_deref(), Some("log_level"));
        assert_eq!(env_key("GODEL_A____B"), None);
        assert_eq!(env_key("GODEL_"), None);
        assert_eq!(env_key("PATH"), None);
    }

    #[test]
    fn scalars_stay_strings_and_arrays_parse() {
        assert_eq!(parse_value("12345"), Value::from("12345".to_owned()));
        assert!(matches!(parse_value("[1, 2]"), Value::Array(..)));
    }
}
