//! Warnings about an insecure setup, given at startup (in the log) and by `check-config`:
//! a listener on a non-loopback address with no authentication, and secrets that every user
//! on the host can read. They are warnings, not errors: a gateway inside a closed network may
//! mean it, but it should never be so by accident.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Warnings about the loaded configuration: unauthenticated listeners open beyond this host,
/// and world-readable files that hold secrets or TLS keys.
pub fn startup_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let http = &config.http;
    if !is_local(http.listen) {
        if !http.auth.token_source().is_set() {
            out.push(format!(
                "SECURITY: http.listen = {} is reachable beyond this host and no API token is \
                 set: anyone who can reach it can ingest readings and acknowledge alerts. Set \
                 http.auth.token_env or http.auth.token_file (SECURITY.md), or listen on 127.0.0.1",
                http.listen
            ));
        } else if http.tls.is_none() {
            out.push(format!(
                "SECURITY: http.listen = {} is reachable beyond this host without [http.tls]: \
                 the API token crosses the network in clear text",
                http.listen
            ));
        }
    }
    if config.broker.enabled {
        for (key, addr) in [
            ("listen", Some(config.broker.listen)),
            ("listen_v5", config.broker.listen_v5),
        ] {
            let Some(addr) = addr else { continue };
            if !is_local(addr) {
                out.push(format!(
                    "SECURITY: broker.{key} = {addr} is reachable beyond this host and the \
                     embedded broker has no authentication: anyone who can reach it can publish \
                     readings under any sensor id and read every topic. Listen on 127.0.0.1, or \
                     put an authenticating broker (mosquitto with a password file and TLS) in \
                     front and set broker.enabled = false (SECURITY.md)"
                ));
            }
        }
    }
    for (key, path) in secret_files(config) {
        if let Some(mode) = world_readable(path) {
            out.push(format!(
                "SECURITY: {key} = {} holds a secret and is readable by every user on this host \
                 (mode {mode:o}): chmod 600 it",
                path.display()
            ));
        }
    }
    out
}

/// Warnings about the config files themselves: one readable by every user on the host that
/// holds a credential in a url (`user:password@`, or a `token=`-like query parameter).
/// Passwords and tokens have no config key of their own (they come from `*_env` or `*_file`),
/// so a url is where a secret typed into a config file ends up.
pub fn config_file_warnings(files: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for file in files {
        let Some(mode) = world_readable(file) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let lines: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, line)| line_has_credential(line))
            .map(|(i, _)| i + 1)
            .collect();
        if !lines.is_empty() {
            let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
            out.push(format!(
                "SECURITY: {} is readable by every user on this host (mode {mode:o}) and holds \
                 a credential in a url (line {}): chmod 600 it, or move the secret to a \
                 *_env / *_file setting",
                file.display(),
                lines.join(", ")
            ));
        }
    }
    out
}

/// Loopback only (`127.0.0.0/8`, `::1`). An unspecified address (`0.0.0.0`) is every
/// interface, so it is not local.
fn is_local(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The file's permission bits if "others" may read it.
#[cfg(unix)]
fn world_readable(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o004 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn world_readable(_path: &Path) -> Option<u32> {
    None
}

/// Every file the config names that holds a secret or a private key, with its key path.
fn secret_files(config: &Config) -> Vec<(String, &Path)> {
    let mut out: Vec<(String, &Path)> = Vec::new();
    if let Some(p) = &config.http.auth.token_file {
        out.push(("http.auth.token_file".into(), p));
    }
    if let Some(tls) = &config.http.tls {
        out.push(("http.tls.key_file".into(), &tls.key_file));
    }
    for (i, m) in config.mqtt.iter().enumerate() {
        if let Some(p) = &m.password_file {
            out.push((format!("mqtt[{i}].password_file"), p));
        }
        if let Some(p) = m.tls.as_ref().and_then(|t| t.key_file.as_ref()) {
            out.push((format!("mqtt[{i}].tls.key_file"), p));
        }
    }
    if let Some(p) = &config.alerts.mqtt.password_file {
        out.push(("alerts.mqtt.password_file".into(), p));
    }
    for (i, w) in config.alerts.webhooks.iter().enumerate() {
        if let Some(p) = &w.secret_file {
            out.push((format!("alerts.webhooks[{i}].secret_file"), p));
        }
    }
    for (i, s) in config.sinks.influxdb.iter().enumerate() {
        if let Some(p) = &s.token_file {
            out.push((format!("sinks.influxdb[{i}].token_file"), p));
        }
        if let Some(p) = &s.password_file {
            out.push((format!("sinks.influxdb[{i}].password_file"), p));
        }
    }
    out
}

/// Query parameters that carry a credential in the wild (webhook receivers, chat hooks).
const SECRET_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "password",
    "sig",
    "signature",
];

/// A line of TOML with a quoted url that carries a password or a secret-looking parameter.
fn line_has_credential(line: &str) -> bool {
    let code = match line.find('#') {
        // A `#` inside a url (a fragment) is rare in config; a comment is not config.
        Some(i) if !line[..i].contains("://") => &line[..i],
        _ => line,
    };
    code.split(['"', '\''])
        .filter(|s| s.contains("://"))
        .any(|s| match reqwest::Url::parse(s.trim()) {
            Ok(url) => {
                url.password().is_some()
                    || url
                        .query_pairs()
                        .any(|(k, _)| SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
            }
            Err(_) => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_found_and_plain_urls_are_not() {
        assert!(line_has_credential(
            r#"url = "https://alice:s3cret@hooks.example.org/x""#
        ));
        assert!(line_has_credential(
            r#"url = "https://hooks.example.org/x?token=abc""#
        ));
        assert!(!line_has_credential(
            r#"url = "https://hooks.example.org/x?channel=ops""#
        ));
        assert!(!line_has_credential(r#"url = "mqtt://127.0.0.1:1883""#));
        assert!(!line_has_credential(
            r#"# url = "https://alice:s3cret@example.org""#
        ));
    }

    fn load(toml: &str) -> Config {
        crate::config::load(&[crate::config::Source::Text {
            name: "test".into(),
            toml: toml.into(),
        }])
        .expect("valid config")
    }

    #[test]
    fn the_defaults_listen_on_loopback_and_draw_no_warning() {
        let c = load("");
        assert!(c.http.listen.ip().is_loopback(), "{}", c.http.listen);
        assert!(c.broker.listen.ip().is_loopback(), "{}", c.broker.listen);
        for m in &c.mqtt {
            assert!(m.url.contains("127.0.0.1"), "{}", m.url);
        }
        assert_eq!(startup_warnings(&c), Vec::<String>::new());
    }

    #[test]
    fn open_listeners_without_auth_are_warned_about() {
        let c = load("[http]\nlisten = \"0.0.0.0:8080\"\n[broker]\nlisten = \"0.0.0.0:1883\"\n");
        let w = startup_warnings(&c);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(w[0].contains("http.listen = 0.0.0.0:8080") && w[0].contains("no API token"));
        assert!(
            w[1].contains("broker.listen = 0.0.0.0:1883") && w[1].contains("no authentication")
        );

        let with_token = load(
            "[http]\nlisten = \"0.0.0.0:8080\"\n[http.auth]\ntoken_env = \"T\"\n[broker]\nenabled = false\n",
        );
        let w = startup_warnings(&with_token);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].contains("clear text"), "{}", w[0]);
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_files_with_secrets_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").expect("write");
        let conf = dir.path().join("citygate.toml");
        std::fs::write(
            &conf,
            "[[alerts.webhooks]]\nname = \"ops\"\nurl = \"https://ops:pw@hooks.example.org/a\"\n",
        )
        .expect("write");
        let c = load(&format!(
            "[http.auth]\ntoken_file = {:?}\n",
            token.display().to_string()
        ));
        for (mode, warned) in [(0o644, true), (0o600, false), (0o640, false)] {
            for f in [&token, &conf] {
                std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode)).expect("chmod");
            }
            let w = startup_warnings(&c);
            assert_eq!(w.len(), usize::from(warned), "mode {mode:o}: {w:#?}");
            let f = config_file_warnings(std::slice::from_ref(&conf));
            assert_eq!(f.len(), usize::from(warned), "mode {mode:o}: {f:#?}");
            if warned {
                assert!(w[0].contains("http.auth.token_file"), "{}", w[0]);
                assert!(f[0].contains("line 3"), "{}", f[0]);
                assert!(!f[0].contains("pw@") && !w[0].contains("s3cret"));
            }
        }
    }
}
