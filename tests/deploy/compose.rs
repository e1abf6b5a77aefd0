//! docker-compose.yml as the compose client resolves it (`config`, with `.env.example` as the
//! env file), and what a service mounts, runs and gets in its environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const NO_COMPOSE: &str = "neither `docker compose` nor `docker-compose` is installed: apt-get install docker-compose (or run scripts/test, which installs it)";

pub fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

pub fn yaml(path: &str) -> Yaml {
    parse_yaml(&read(path), path)
}

pub fn parse_yaml(text: &str, what: &str) -> Yaml {
    let mut docs =
        YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{what} holds one YAML document");
    docs.remove(0)
}

/// The compose client's command: the Docker CLI plugin, else the standalone v1 tool.
fn compose_command() -> Command {
    let plugin = Command::new("docker").args(["compose", "version"]).output();
    if plugin.is_ok_and(|o| o.status.success()) {
        let mut c = Command::new("docker");
        c.arg("compose");
        return c;
    }
    let standalone = Command::new("docker-compose").arg("version").output();
    if standalone.is_ok_and(|o| o.status.success()) {
        return Command::new("docker-compose");
    }
    panic!("{NO_COMPOSE}");
}

/// `compose -f docker-compose.yml --env-file <.env.example with every secret filled> config`:
/// the file as the client reads it once a user has set the secrets. Panics with the client's
/// message if it refuses the file.
pub fn resolved() -> Yaml {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join(".env");
    let filled: String = env_example()
        .into_iter()
        .map(|(k, v)| {
            let v = if v.is_empty() {
                format!("test-{}", k.to_lowercase())
            } else {
                v
            };
            format!("{k}={v}\n")
        })
        .collect();
    std::fs::write(&env_file, filled).expect("write the env file");
    let out = config_with(&env_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the compose client refuses docker-compose.yml:\n{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_yaml(&stdout, "the compose client's `config` output")
}

/// The compose client's `config` with `env_file` as the only source of the project's
/// variables.
pub fn config_with(env_file: &Path) -> std::process::Output {
    compose_command()
        .current_dir(ROOT)
        // The project's own variables must come from the env file, not from whoever runs
        // the test.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()),
        )
        .arg("-f")
        .arg("docker-compose.yml")
        .arg("--env-file")
        .arg(env_file)
        .arg("config")
        .output()
        .unwrap_or_else(|e| panic!("{NO_COMPOSE} ({e})"))
}

/// `.env.example` as KEY → value (comments and blank lines skipped).
pub fn env_example() -> BTreeMap<String, String> {
    read(".env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!(".env.example: not KEY=value: {l}"));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

pub fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(items) => items.iter().map(scalar).collect(),
        Yaml::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Yaml::BadValue | Yaml::Null => Vec::new(),
        other => panic!("expected a list of strings, found {other:?}"),
    }
}

/// A scalar as the string a container would see.
pub fn scalar(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

/// One bind mount or volume of a service.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The host path of a bind mount; `None` for a named volume.
    pub host: Option<PathBuf>,
    pub target: String,
}

pub struct Service<'a> {
    pub name: &'a str,
    pub yaml: &'a Yaml,
}

impl<'a> Service<'a> {
    pub fn of(resolved: &'a Yaml, name: &'a str) -> Service<'a> {
        let yaml = &resolved["services"][name];
        assert!(
            !yaml.is_badvalue(),
            "docker-compose.yml has no service {name}"
        );
        Service { name, yaml }
    }

    pub fn command(&self) -> Vec<String> {
        strings(&self.yaml["command"])
    }

    pub fn entrypoint(&self) -> Vec<String> {
        strings(&self.yaml["entrypoint"])
    }

    pub fn environment(&self) -> BTreeMap<String, String> {
        match &self.yaml["environment"] {
            Yaml::Hash(h) => h
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Yaml::Null => String::new(),
                        v => scalar(v),
                    };
                    (scalar(k), value)
                })
                .collect(),
            Yaml::Array(items) => items
                .iter()
                .map(|i| {
                    let s = scalar(i);
                    let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// Mounts in either syntax the clients print: v1's `src:dst[:mode]` strings, v2's maps.
    pub fn mounts(&self) -> Vec<Mount> {
        let Yaml::Array(items) = &self.yaml["volumes"] else {
            return Vec::new();
        };
        items
            .iter()
            .map(|v| match v {
                Yaml::String(s) => {
                    let parts: Vec<&str> = s.split(':').collect();
                    let (src, dst) = match parts.as_slice() {
                        [src, dst] | [src, dst, _] => (*src, *dst),
                        _ => panic!("{}: unexpected volume {s:?}", self.name),
                    };
                    Mount {
                        host: src.starts_with('/').then(|| PathBuf::from(src)),
                        target: dst.to_owned(),
                    }
                }
                Yaml::Hash(_) => Mount {
                    host: (v["type"].as_str() == Some("bind"))
                        .then(|| PathBuf::from(scalar(&v["source"]))),
                    target: scalar(&v["target"]),
                },
                other => panic!("{}: unexpected volume {other:?}", self.name),
            })
            .collect()
    }

    /// The host file behind a path inside the container, through a bind mount of the file
    /// itself or of a directory above it.
    pub fn host_path(&self, container_path: &str) -> Option<PathBuf> {
        self.mounts().into_iter().find_map(|m| {
            let host = m.host?;
            if container_path == m.target {
                return Some(host);
            }
            let rest = container_path.strip_prefix(&format!("{}/", m.target))?;
            Some(host.join(rest))
        })
    }

    /// The named volume mounted at `target` (or above it), if any.
    pub fn volume_at(&self, container_path: &str) -> Option<Mount> {
        self.mounts().into_iter().find(|m| {
            m.host.is_none()
                && (container_path == m.target
                    || container_path.starts_with(&format!("{}/", m.target)))
        })
    }

    /// `-c FILE` arguments of the command, in order.
    pub fn config_args(&self) -> Vec<String> {
        let cmd = self.command();
        cmd.windows(2)
            .filter(|w| w[0] == "-c" || w[0] == "--config")
            .map(|w| w[1].clone())
            .collect()
    }
}

/// `host:port` of an `http://host:port/...` or `mqtt://host:port` URL.
pub fn url_host_port(url: &str) -> (String, u16) {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("not a URL: {url}"));
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url} names no port"));
    (
        host.to_owned(),
        port.parse()
            .unwrap_or_else(|e| panic!("{url}: port {port:?}: {e}")),
    )
}
