//! Layered configuration for every Godel binary.
//!
//! A config type is any `T: Serialize + DeserializeOwned + Default`. [`load`] merges,
//! each layer overriding the previous one:
//!
//! 1. `T::default()`;
//! 2. a TOML file (`--config FILE`; a file given explicitly must exist);
//! 3. `GODEL_*` environment variables, `__` separating nesting levels
//!    (`GODEL_DATABASE__URL` sets `database.url`);
//! 4. `--set key.path=value` flags, in order.
//!
//! Services flatten [`ConfigArgs`] into their clap CLI. `--dump-config` asks the binary
//! to print [`dump`] of the merged config and exit; the binary's `main` does that.
//!
//! The environment is read through [`EnvSource`], so tests pass a map instead of
//! touching the process environment ([`load_with_env`]).
//!
//! Secrets are [`Secret`] values: written like plain values in every layer, printed
//! and serialized as `[redacted]` everywhere else, including the dump.
//!
//! Errors name the offending key and the layer it came from, e.g.
//! ``invalid configuration for `server.port` from environment variable
//! GODEL_SERVER__PORT: invalid type: found string "abc", expected u16``.

pub mod duration;
mod env;
mod secret;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use env::{ENV_PREFIX, ENV_SEPARATOR, EnvSource, ProcessEnv};
pub use secret::{REDACTED, Secret};

/// Configuration flags every Godel binary accepts; `#[command(flatten)]` it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file, layered over the defaults.
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Override one key, e.g. `--set server.http_addr=0.0.0.0:8080`; repeatable, and
    /// applied after the file and `GODEL_*` environment variables.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    /// Print the effective configuration as TOML (secrets redacted) and exit.
    #[arg(long = "dump-config")]
    pub dump_config: bool,
}

/// Why configuration could not be loaded or printed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` named a file that does not exist.
    #[error("configuration file {} does not exist", path.display())]
    MissingFile {
        /// The path as given.
        path: PathBuf,
    },

    /// A `--set` argument without `=`, or with an empty key.
    #[error("`--set {arg}` is not of the form KEY=VALUE")]
    BadFlag {
        /// The argument as given.
        arg: String,
    },

    /// A value could not be read or has the wrong type or shape.
    #[error("invalid configuration for `{key}` from {origin}: {reason}")]
    Invalid {
        /// The dotted key path (`server.port`); empty when the problem is the whole
        /// document, such as a TOML syntax error.
        key: String,
        /// The layer the value came from: `environment variable GODEL_SERVER__PORT`,
        /// `TOML file /etc/godel.toml`, `command-line flag --set server.port`, …
        origin: String,
        /// What was wrong with the value.
        reason: String,
    },

    /// The configuration could not be rendered as TOML.
    #[error("configuration cannot be rendered as TOML")]
    Dump(#[source] toml::ser::Error),
}

/// Loads `T` from defaults, `args.config`, the process environment and `args.set`.
pub fn load<T>(args: &ConfigArgs) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    load_with_env(args, &ProcessEnv)
}

/// As [`load`], with environment variables taken from `env` (a map in tests).
pub fn load_with_env<T>(
    args: &ConfigArgs,
    env: &(impl EnvSource + ?Sized),
) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let flags = args
        .set
        .iter()
        .map(|a| parse_flag(a))
        .collect::<Result<Vec<_>, _>>()?;
    let figment = layered::<T>(args.config.as_deref(), env, flags)?;
    figment.extract_lossy::<T>().map_err(invalid)
}

/// Renders `config` as TOML with every [`Secret`] shown as `[redacted]` — what
/// `--dump-config` prints.
pub fn dump<T: Serialize>(config: &T) -> Result<String, ConfigError> {
    toml::to_string(config).map_err(ConfigError::Dump)
}

fn layered<T>(
    file: Option<&Path>,
    env: &(impl EnvSource + ?Sized),
    flags: Vec<(String, String)>,
) -> Result<Figment, ConfigError>
where
    T: Serialize + Default,
{
    // Serialize the defaults with secrets revealed: a default secret must reach the
    // merged value as itself, not as "[redacted]".
    let defaults =
        secret::reveal_secrets(|| figment::value::Value::serialize(T::default()).map_err(invalid))?;
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::MissingFile {
                path: path.to_owned(),
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    Ok(figment
        .merge(env::EnvLayer::new(env))
        .merge(env::FlagLayer::new(flags)))
}

fn parse_flag(arg: &str) -> Result<(String, String), ConfigError> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(ConfigError::BadFlag {
            arg: arg.to_owned(),
        }),
    }
}

/// Converts figment's error (the first one, if several) into [`ConfigError::Invalid`].
fn invalid(err: figment::Error) -> ConfigError {
    let key = err.path.join(".");
    let origin = match (&err.metadata, &err.profile) {
        (Some(md), profile) => match (&md.source, profile) {
            (Some(figment::Source::File(path)), _) => format!("{} {}", md.name, path.display()),
            (Some(figment::Source::Code(_)), _) => "the defaults".to_owned(),
            (Some(source), _) => format!("{} {source}", md.name),
            (None, Some(profile)) if !err.path.is_empty() && is_keyed_layer(&md.name) => {
                format!("{} {}", md.name, md.interpolate(profile, &err.path))
            }
            (None, _) => md.name.to_string(),
        },
        (None, _) => "the merged configuration".to_owned(),
    };
    ConfigError::Invalid {
        key,
        origin,
        reason: err.kind.to_string(),
    }
}

fn is_keyed_layer(name: &str) -> bool {
    name == "environment variable" || name == "command-line flag"
}

#[cfg(test)]
mod tests;
