use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct AppConfig {
    name: String,
    server: ServerSection,
    database: DatabaseSection,
    tags: Vec<String>,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            name: "app".to_owned(),
            server: ServerSection::default(),
            database: DatabaseSection::default(),
            tags: vec!["a".to_owned()],
        }
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct ServerSection {
    port: u16,
    #[serde(with = "crate::duration")]
    grace: Duration,
    debug: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            port: 8080,
            grace: Duration::from_secs(30),
            debug: false,
        }
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct DatabaseSection {
    url: Secret<String>,
    pool_size: u32,
    admin_password: Option<Secret<String>>,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: Secret::from("postgres://godel:default-pw@localhost/godel"),
            pool_size: 4,
            admin_password: None,
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn toml_file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    f.write_all(contents.as_bytes()).expect("write temp file");
    f
}

fn args(file: Option<&tempfile::NamedTempFile>, set: &[&str]) -> ConfigArgs {
    ConfigArgs {
        config: file.map(|f| f.path().to_owned()),
        set: set.iter().map(|s| (*s).to_owned()).collect(),
        dump_config: false,
    }
}

fn load_test(
    file: Option<&tempfile::NamedTempFile>,
    vars: &[(&str, &str)],
    set: &[&str],
) -> Result<AppConfig, ConfigError> {
    load_with_env(&args(file, set), &env(vars))
}

#[test]
fn defaults_alone_give_default_including_secrets() {
    let cfg = load_test(None, &[], &[]).expect("loads");
    assert_eq!(cfg, AppConfig::default());
    assert_eq!(
        cfg.database.url.expose(),
        "postgres://godel:default-pw@localhost/godel"
    );
}

#[test]
fn each_layer_overrides_the_previous() {
    let file = toml_file("name = \"from-file\"\n[server]\nport = 1\ndebug = true\n");

    let cfg = load_test(Some(&file), &[], &[]).expect("file");
    assert_eq!((cfg.server.port, cfg.name.as_str()), (1, "from-file"));
    assert!(cfg.server.debug);
    assert_eq!(
        cfg.server.grace,
        Duration::from_secs(30),
        "untouched default survives"
    );

    let cfg = load_test(Some(&file), &[("GODEL_SERVER__PORT", "2")], &[]).expect("env");
    assert_eq!(cfg.server.port, 2, "env beats file");
    assert_eq!(cfg.name, "from-file", "file value not set in env survives");

    let cfg = load_test(
        Some(&file),
        &[("GODEL_SERVER__PORT", "2")],
        &["server.port=3"],
    )
    .expect("flag");
    assert_eq!(cfg.server.port, 3, "flag beats env");

    let cfg = load_test(None, &[], &["server.port=4", "server.port=5"]).expect("flags");
    assert_eq!(cfg.server.port, 5, "later flag beats earlier flag");
}

#[test]
fn nested_keys_and_typed_values_from_env_and_flags() {
    let cfg = load_test(
        None,
        &[
            ("GODEL_DATABASE__POOL_SIZE", "7"),
            ("GODEL_SERVER__DEBUG", "true"),
            ("GODEL_SERVER__GRACE", "1m30s"),
            ("GODEL_TAGS", "[x, y]"),
            ("NOT_GODEL_NAME", "ignored"),
        ],
        &["name=flagged", "server.grace=250ms"],
    )
    .expect("loads");
    assert_eq!(cfg.database.pool_size, 7);
    assert!(cfg.server.debug);
    assert_eq!(cfg.server.grace, Duration::from_millis(250));
    assert_eq!(cfg.tags, vec!["x".to_owned(), "y".to_owned()]);
    assert_eq!(cfg.name, "flagged");
}

#[test]
fn bad_env_value_names_key_and_variable() {
    let err = load_test(None, &[("GODEL_SERVER__PORT", "eighty")], &[]).expect_err("bad port");
    let ConfigError::Invalid { key, origin, .. } = &err else {
        panic!("unexpected {err:?}")
    };
    assert_eq!(key, "server.port");
    assert!(origin.contains("GODEL_SERVER__PORT"), "{origin}");
    let msg = err.to_string();
    assert!(
        msg.contains("server.port") && msg.contains("GODEL_SERVER__PORT"),
        "{msg}"
    );
}

#[test]
fn bad_file_value_names_key_and_file() {
    let file = toml_file("[server]\nport = \"x\"\n");
    let err = load_test(Some(&file), &[], &[]).expect_err("bad port");
    let ConfigError::Invalid { key, origin, .. } = &err else {
        panic!("unexpected {err:?}")
    };
    assert_eq!(key, "server.port");
    assert!(
        origin.contains(&file.path().display().to_string()),
        "{origin}"
    );
}

#[test]
fn bad_flag_value_names_key_and_flag() {
    let err = load_test(None, &[], &["server.port=99999"]).expect_err("overflow");
    let ConfigError::Invalid { key, origin, .. } = &err else {
        panic!("unexpected {err:?}")
    };
    assert_eq!(key, "server.port");
    assert!(origin.contains("--set server.port"), "{origin}");

    let err = load_test(None, &[], &["server.grace=soon"]).expect_err("bad duration");
    assert!(err.to_string().contains("server.grace"), "{err}");

    let err = load_test(None, &[], &["no-equals-sign"]).expect_err("bad syntax");
    assert!(matches!(err, ConfigError::BadFlag { .. }), "{err:?}");
}

#[test]
fn syntax_error_in_file_names_the_file() {
    let file = toml_file("[server\nport = 1\n");
    let err = load_test(Some(&file), &[], &[]).expect_err("syntax");
    assert!(
        err.to_string().contains(&file.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn missing_explicit_file_is_an_error_naming_it() {
    let args = ConfigArgs {
        config: Some("/nonexistent/godel-test.toml".into()),
        ..ConfigArgs::default()
    };
    let err = load_with_env::<AppConfig>(&args, &env(&[])).expect_err("missing");
    assert!(matches!(err, ConfigError::MissingFile { .. }));
    assert!(
        err.to_string().contains("/nonexistent/godel-test.toml"),
        "{err}"
    );
}

#[test]
fn secret_from_env_survives_loading_and_is_absent_from_dump_and_debug() {
    let cfg = load_test(
        None,
        &[
            ("GODEL_DATABASE__URL", "postgres://u:s3cr3t-value@db/godel"),
            ("GODEL_DATABASE__ADMIN_PASSWORD", "12345"),
        ],
        &[],
    )
    .expect("loads");
    assert_eq!(
        cfg.database.url.expose(),
        "postgres://u:s3cr3t-value@db/godel"
    );
    assert_eq!(
        cfg.database
            .admin_password
            .as_ref()
            .map(|s| s.expose().as_str()),
        Some("12345")
    );

    let dumped = dump(&cfg).expect("dump");
    assert!(!dumped.contains("s3cr3t-value"), "{dumped}");
    assert!(!dumped.contains("12345"), "{dumped}");
    assert!(!dumped.contains("default-pw"), "{dumped}");
    assert!(dumped.contains(REDACTED), "{dumped}");
    let debug = format!("{cfg:?}");
    assert!(
        !debug.contains("s3cr3t-value") && !debug.contains("12345"),
        "{debug}"
    );
}

#[test]
fn dump_is_valid_toml_carrying_the_merged_values() {
    let cfg = load_test(None, &[("GODEL_SERVER__PORT", "9")], &["name=dumped"]).expect("loads");
    let dumped = dump(&cfg).expect("dump");
    let reparsed: toml::Value = toml::from_str(&dumped).expect("valid toml");
    assert_eq!(reparsed["server"]["port"].as_integer(), Some(9));
    assert_eq!(reparsed["server"]["grace"].as_str(), Some("30s"));
    assert_eq!(reparsed["name"].as_str(), Some("dumped"));
}

#[test]
fn flags_parse_through_clap() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
    }
    let cli = Cli::parse_from([
        "svc",
        "--config",
        "/etc/godel.toml",
        "--set",
        "a.b=1",
        "--set",
        "c=x=y",
        "--dump-config",
    ]);
    assert_eq!(
        cli.config.config.as_deref(),
        Some(std::path::Path::new("/etc/godel.toml"))
    );
    assert_eq!(cli.config.set, vec!["a.b=1".to_owned(), "c=x=y".to_owned()]);
    assert!(cli.config.dump_config);
    assert_eq!(
        parse_flag("c=x=y").expect("flag"),
        ("c".to_owned(), "x=y".to_owned())
    );
}

/// A strict configuration, as every service's is.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Strict {
    name: String,
}

#[test]
fn the_cli_variables_are_not_configuration_but_typos_are_errors() {
    let args = ConfigArgs::default();
    let cfg: Strict = load_with_env(
        &args,
        &env(&[
            ("GODEL_NAME", "n"),
            ("GODEL_TOKEN", "gdl_x"),
            ("GODEL_AUDIT_DATABASE_URL", "postgres://x"),
        ]),
    )
    .expect("the CLI's own variables are skipped");
    assert_eq!(cfg.name, "n");
    let err = load_with_env::<Strict>(&args, &env(&[("GODEL_NAEM", "n")])).unwrap_err();
    assert!(
        err.to_string().contains("GODEL_NAEM") || format!("{err:?}").contains("naem"),
        "{err:?}"
    );
}
