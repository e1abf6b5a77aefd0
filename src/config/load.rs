//! Building the layered configuration and turning it into a typed, validated [`Config`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};

use super::{validate, Config};

/// The embedded defaults.
const DEFAULTS: &str = include_str!("../../config/citygate.toml");

/// The built-in catalog, one file per sensor kind, as (file name, contents).
pub const BUILTIN_CATALOG: &[(&str, &str)] = &[
    (
        "water_level.toml",
        include_str!("../../config/catalog/water_level.toml"),
    ),
    (
        "rainfall.toml",
        include_str!("../../config/catalog/rainfall.toml"),
    ),
    ("flow.toml", include_str!("../../config/catalog/flow.toml")),
    (
        "water_quality.toml",
        include_str!("../../config/catalog/water_quality.toml"),
    ),
    (
        "air_quality.toml",
        include_str!("../../config/catalog/air_quality.toml"),
    ),
    (
        "noise.toml",
        include_str!("../../config/catalog/noise.toml"),
    ),
    (
        "electricity_meter.toml",
        include_str!("../../config/catalog/electricity_meter.toml"),
    ),
    (
        "water_meter.toml",
        include_str!("../../config/catalog/water_meter.toml"),
    ),
    (
        "gas_meter.toml",
        include_str!("../../config/catalog/gas_meter.toml"),
    ),
    (
        "gas_detector.toml",
        include_str!("../../config/catalog/gas_detector.toml"),
    ),
    (
        "structural.toml",
        include_str!("../../config/catalog/structural.toml"),
    ),
    (
        "landslide.toml",
        include_str!("../../config/catalog/landslide.toml"),
    ),
    (
        "forest_fire.toml",
        include_str!("../../config/catalog/forest_fire.toml"),
    ),
];

/// Where a layer of user configuration comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A TOML file on disk (`-c FILE`).
    File(PathBuf),
    /// TOML text, for tests and embedded overlays; the name is used in error messages.
    Text { name: String, toml: String },
}

/// One problem with the configuration, at a key path such as
/// `catalog.water_quality.rules[1].above`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "the configuration has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![ConfigProblem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

/// Loads defaults, then `sources` in order, then the process environment.
pub fn load(sources: &[Source]) -> Result<Config, ConfigError> {
    load_with_env(sources, None)
}

/// Like [`load`], with the environment given as a map (tests) instead of the process's.
pub fn load_with_env(
    sources: &[Source],
    env: Option<HashMap<String, String>>,
) -> Result<Config, ConfigError> {
    let mut builder = config::Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .set_default("sensors", config::Map::<String, config::Value>::new())
        .map_err(|e| ConfigError::one("", e.to_string()))?;
    for (_, text) in BUILTIN_CATALOG {
        builder = builder.add_source(File::from_str(text, FileFormat::Toml));
    }
    for source in sources {
        builder = match source {
            Source::File(path) => {
                check_readable(path)?;
                builder.add_source(File::from(path.as_path()).format(FileFormat::Toml))
            }
            Source::Text { toml, .. } => builder.add_source(File::from_str(toml, FileFormat::Toml)),
        };
    }
    // `prefix_separator` keeps `CITYGATE_FOO` (single underscore) from being read as config.
    let environment = Environment::with_prefix("CITYGATE")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .source(env);
    builder = builder.add_source(environment);

    let layered = builder.build().map_err(|e| {
        let name = sources
            .iter()
            .map(|s| match s {
                Source::File(p) => p.display().to_string(),
                Source::Text { name, .. } => name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        ConfigError::one("", format!("cannot read the configuration ({name}): {e}"))
    })?;
    let tree: serde_json::Value = layered
        .try_deserialize()
        .map_err(|e| ConfigError::one("", e.to_string()))?;
    validate::check(tree)
}

fn check_readable(path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::one(
            "",
            format!("{}: not a file", path.display()),
        )),
        Err(e) => Err(ConfigError::one("", format!("{}: {e}", path.display()))),
    }
}
