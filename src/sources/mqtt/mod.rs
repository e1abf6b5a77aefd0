//! The MQTT source: broker connections (rumqttc), topic routes, at-least-once delivery.
//!
//! See `source.rs` for the delivery design (manual acks after commit, in order, across
//! reconnects), `route.rs` for topic patterns, `v4.rs`/`v5.rs` for the protocol glue.

pub mod config;
mod event_loop;
mod route;
mod source;
mod status;
pub(crate) mod tls;
mod v4;
mod v5;

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::ConfigProblem;
use config::MqttConfig;

pub use route::{check_filter, Captures, Pattern, PatternError, Resolved, Router};
pub(crate) use source::{parse_url, password_source};
pub use source::{start, MqttError, MqttSource};
pub use status::{SourceStatus, StatusSnapshot};
pub(crate) use v4::describe as describe_v4_error;

/// Checks `[[mqtt]]` beyond what serde checks. `mqtt` holds each connection with its index
/// in the file, for key paths like `mqtt[0].routes[1].topic`.
pub fn check_config(mqtt: &[(usize, MqttConfig)], kinds: &BTreeSet<String>) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut push = |path: String, message: String| problems.push(ConfigProblem { path, message });
    let mut names: Vec<(&str, usize)> = Vec::new();
    for (i, m) in mqtt {
        let at = |key: &str| format!("mqtt[{i}].{key}");
        if m.name.trim().is_empty() {
            push(at("name"), "must not be empty".into());
        } else if let Some((_, first)) = names.iter().find(|(n, _)| *n == m.name) {
            push(
                at("name"),
                format!("{:?} is already the name of mqtt[{first}]", m.name),
            );
        } else {
            names.push((&m.name, *i));
        }
        match source::parse_url(&m.url) {
            Err(why) => push(at("url"), format!("invalid url {:?}: {why}", m.url)),
            Ok((false, _, _)) if m.tls.is_some() => push(
                at("tls"),
                "is set but the url is mqtt:// (use mqtts:// for TLS)".into(),
            ),
            Ok(_) => {}
        }
        if m.client_id.is_empty() {
            push(
                at("client_id"),
                "must not be empty (the broker keeps the session under it)".into(),
            );
        }
        let password = source::password_source(m);
        if password.is_set() && m.username.is_none() {
            push(at("username"), "is required when a password is set".into());
        }
        for (key, message) in password.problems() {
            push(at(&key), message);
        }
        if let Some(tls) = &m.tls {
            match (&tls.cert_file, &tls.key_file) {
                (Some(_), None) => push(at("tls.key_file"), "is required with cert_file".into()),
                (None, Some(_)) => push(at("tls.cert_file"), "is required with key_file".into()),
                _ => {}
            }
            for (key, file) in [
                ("tls.ca_file", &tls.ca_file),
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if let Some(path) = file {
                    if let Err(e) = std::fs::File::open(path) {
                        push(at(key), format!("cannot read {}: {e}", path.display()));
                    }
                }
            }
        }
        // rumqttc panics on a keepalive under 1 s; under 5 s a busy broker drops the client.
        if m.keepalive.0 < Duration::from_secs(5) {
            push(
                at("keepalive"),
                format!("must be at least 5s (is {})", m.keepalive),
            );
        }
        if m.reconnect_min.0.is_zero() {
            push(at("reconnect_min"), "must be longer than 0s".into());
        } else if m.reconnect_min.0 > m.reconnect_max.0 {
            push(
                at("reconnect_max"),
                format!(
                    "must not be shorter than reconnect_min ({})",
                    m.reconnect_min
                ),
            );
        }
        if m.inflight == 0 {
            push(at("inflight"), "must be at least 1".into());
        }
        if m.max_packet_size < 1024 {
            push(at("max_packet_size"), "must be at least 1024 bytes".into());
        }
        if m.max_topic_len == 0 {
            push(at("max_topic_len"), "must be at least 1 byte".into());
        }
        for (j, r) in m.routes.iter().enumerate() {
            let at = |key: &str| format!("mqtt[{i}].routes[{j}].{key}");
            match Pattern::parse(&r.topic) {
                Err(e) => push(
                    at("topic"),
                    format!("invalid topic pattern {:?}: {e}", r.topic),
                ),
                Ok(p) => {
                    if r.format == config::RouteFormat::Value
                        && !(p.has("sensor") && p.has("metric"))
                    {
                        push(
                            at("topic"),
                            "a value route needs {sensor} and {metric} placeholders (a bare number names neither)".into(),
                        );
                    }
                    for tag in p.tag_names() {
                        if r.tags.contains_key(tag) {
                            push(
                                at(&format!("tags.{tag}")),
                                format!("is also a placeholder of the topic, {{{tag}}}"),
                            );
                        }
                    }
                }
            }
            if let Some(kind) = &r.kind {
                if !kinds.contains(kind) {
                    let known: Vec<&str> = kinds.iter().map(String::as_str).collect();
                    push(
                        at("kind"),
                        format!("unknown kind {kind:?} (known kinds: {})", known.join(", ")),
                    );
                }
            }
            if let Some(filter) = &r.subscribe {
                if let Err(e) = check_filter(filter) {
                    push(
                        at("subscribe"),
                        format!("invalid subscription filter {filter:?}: {e}"),
                    );
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests;
