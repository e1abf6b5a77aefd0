//! Turns the layered config tree into a [`Config`], gathering every problem before failing.
//!
//! serde stops at the first error, so the tree is deserialized piece by piece (each section,
//! each kind, metric, rule, profile and sensor on its own) and every failed piece adds one
//! problem with its full key path. Checks that serde cannot express (a rule naming a metric
//! its kind lacks, levels in the wrong order, an unknown time zone) run on the pieces that did
//! parse, so one mistake does not hide another.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::load::{ConfigError, ConfigProblem};
use super::{
    AlertsConfig, Config, GatewayConfig, HttpConfig, SensorSpec, SqliteConfig, UnknownPolicy,
    ValidationConfig,
};
use crate::catalog::spec::{
    parse_hhmm, KindSpec, Levels, MetricSpec, ProfileSpec, RuleOverride, RuleSpec, ScheduleSpec,
};
use crate::sources::mqtt::config::{BrokerConfig, MqttConfig};

const TOP_KEYS: &[&str] = &[
    "gateway",
    "http",
    "sqlite",
    "validation",
    "alerts",
    "catalog",
    "sensors",
    "broker",
    "mqtt",
    "modbus",
    "outbox",
    "sinks",
];

#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserializes one piece; on failure records the problem at its full path.
    fn de<T: DeserializeOwned>(&mut self, path: &str, value: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let at = join(path, if inner == "." { "" } else { &inner });
                let (at, message) = humanize(at, &e.into_inner().to_string());
                self.push(at, message);
                None
            }
        }
    }

    /// A required section: missing means a problem.
    fn section<T: DeserializeOwned>(
        &mut self,
        root: &mut Map<String, Value>,
        key: &str,
    ) -> Option<T> {
        match root.remove(key) {
            Some(v) => self.de(key, v),
            None => {
                self.push(key, "missing section");
                None
            }
        }
    }

    /// An array of pieces, each deserialized on its own; kept with their index so that later
    /// checks name the right element.
    fn array<T: DeserializeOwned>(&mut self, path: &str, value: Option<Value>) -> Vec<(usize, T)> {
        let mut out = Vec::new();
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, v) in items.into_iter().enumerate() {
                    if let Some(t) = self.de(&format!("{path}[{i}]"), v) {
                        out.push((i, t));
                    }
                }
            }
            Some(other) => self.push(
                path,
                format!(
                    "expected an array ([[{path}]]), found {}",
                    type_name(&other)
                ),
            ),
        }
        out
    }

    /// A table of pieces keyed by name, each deserialized on its own.
    fn table<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: Option<Value>,
    ) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    if let Some(t) = self.de(&join(path, &k), v) {
                        out.insert(k, t);
                    }
                }
            }
            Some(other) => self.push(
                path,
                format!("expected a table, found {}", type_name(&other)),
            ),
        }
        out
    }
}

fn join(path: &str, inner: &str) -> String {
    if inner.is_empty() {
        path.to_string()
    } else if path.is_empty() {
        inner.to_string()
    } else if inner.starts_with('[') {
        format!("{path}{inner}")
    } else {
        format!("{path}.{inner}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// Rewrites serde's wording into what a config author needs: which key, and what it wants.
fn humanize(path: String, msg: &str) -> (String, String) {
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return (join(&path, field), "required key is missing".to_string());
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let expected = rest
            .split_once("expected ")
            .map(|(_, e)| e.replace('`', ""))
            .unwrap_or_default();
        let at = if path.ends_with(field) {
            path
        } else {
            join(&path, field)
        };
        let message = if expected.is_empty() {
            "unknown key".to_string()
        } else {
            format!("unknown key (expected {expected})")
        };
        return (at, message);
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let value = rest.split('`').next().unwrap_or_default();
        let expected = rest
            .split_once("expected ")
            .map(|(_, e)| e.replace('`', ""))
            .unwrap_or_default();
        return (
            path,
            format!("unknown value {value:?} (expected {expected})"),
        );
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let expected = match expected {
                "f64" | "f32" => "a number",
                "usize" | "u64" | "u32" | "u16" | "u8" | "i64" | "i32" => "a whole number",
                "a boolean" => "true or false",
                other => other,
            };
            return (path, format!("expected {expected}, found {found}"));
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return (path, format!("expected {expected}, found {found}"));
        }
    }
    (path, msg.to_string())
}

pub(super) fn check(tree: Value) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    let mut root = match tree {
        Value::Object(map) => map,
        other => {
            p.push(
                "",
                format!("expected a table at the top, found {}", type_name(&other)),
            );
            return Err(ConfigError { problems: p.0 });
        }
    };
    let unknown: Vec<String> = root
        .keys()
        .filter(|k| !TOP_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in unknown {
        p.push(
            k,
            format!("unknown section (expected one of {})", TOP_KEYS.join(", ")),
        );
    }

    let gateway: Option<GatewayConfig> = p.section(&mut root, "gateway");
    let http: Option<HttpConfig> = p.section(&mut root, "http");
    let sqlite: Option<SqliteConfig> = p.section(&mut root, "sqlite");
    let validation: Option<ValidationConfig> = p.section(&mut root, "validation");
    let alerts = alerts(&mut p, root.remove("alerts"));
    let catalog = catalog(&mut p, root.remove("catalog"));
    let sensors: BTreeMap<String, SensorSpec> = p.table("sensors", root.remove("sensors"));
    let broker: Option<BrokerConfig> = p.section(&mut root, "broker");
    let mqtt: Vec<(usize, MqttConfig)> = p.array("mqtt", root.remove("mqtt"));
    let kinds: BTreeSet<String> = catalog.keys().cloned().collect();
    for problem in crate::sources::mqtt::check_config(&mqtt, &kinds) {
        p.0.push(problem);
    }
    if let Some(a) = &alerts {
        let connections: Vec<MqttConfig> = mqtt.iter().map(|(_, m)| m.clone()).collect();
        p.0.extend(a.mqtt.validate(&connections));
    }
    let mut sensors = sensors;
    let modbus: Option<crate::sources::modbus::ModbusConfig> = match root.remove("modbus") {
        None | Some(Value::Null) => Some(Default::default()),
        Some(v) => p.de("modbus", v),
    };
    if let Some(m) = &modbus {
        let unknown = validation
            .as_ref()
            .map_or(UnknownPolicy::Reject, |v| v.unknown_metric);
        if let Err(problems) =
            crate::sources::modbus::compile(m, catalog.iter().map(|(k, v)| (k, &v.spec)), unknown)
        {
            p.0.extend(problems);
        }
        polled_sensors(&mut p, m, &kinds, &mut sensors);
    }

    let outbox: Option<crate::outbox::OutboxConfig> = p.section(&mut root, "outbox");
    if outbox.as_ref().is_some_and(|o| o.max_bytes == 0) {
        p.push("outbox.max_bytes", "must be greater than 0");
    }
    let sinks = sinks(&mut p, root.remove("sinks"));

    if let Some(g) = &gateway {
        check_gateway(&mut p, g);
        if g.shutdown_timeout.0.is_zero() {
            p.push("gateway.shutdown_timeout", "must be longer than 0s");
        }
    }
    if let Some(h) = &http {
        if h.max_body_bytes == 0 {
            p.push("http.max_body_bytes", "must be greater than 0");
        }
        if h.max_sse_clients == 0 {
            p.push("http.max_sse_clients", "must be at least 1");
        }
        if h.max_connections == 0 {
            p.push("http.max_connections", "must be at least 1");
        }
        if !(h.ingest_rate_per_ip >= 0.0 && h.ingest_rate_per_ip.is_finite()) {
            p.push(
                "http.ingest_rate_per_ip",
                "must be a number of requests per second, 0 or more (0: no limit)",
            );
        }
        let token = h.auth.token_source();
        for (key, message) in token.problems() {
            p.push(format!("http.auth.{key}"), message);
        }
        if h.auth.protect_reads && !token.is_set() {
            p.push(
                "http.auth.protect_reads",
                "needs a token: set token_env or token_file",
            );
        }
        // Zero would close every connection or time out every request at once.
        for (key, d) in [
            ("header_read_timeout", h.header_read_timeout),
            ("request_timeout", h.request_timeout),
            ("idle_timeout", h.idle_timeout),
        ] {
            if d.0.is_zero() {
                p.push(format!("http.{key}"), "must be longer than 0s");
            }
        }
        if let Some(tls) = &h.tls {
            for (key, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if let Err(e) = std::fs::File::open(path) {
                    p.push(
                        format!("http.tls.{key}"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                }
            }
        }
    }
    if let Some(s) = &sqlite {
        if s.retention.0.is_zero() {
            p.push("sqlite.retention", "must be longer than 0s");
        }
        if s.prune_interval.0.is_zero() {
            p.push("sqlite.prune_interval", "must be longer than 0s");
        }
    }
    if let Some(v) = &validation {
        if v.flatline_count < 2 {
            p.push("validation.flatline_count", "must be at least 2");
        }
        // The pipeline keeps a run's length in 30 bits and its span in 32-bit milliseconds
        // (per series, 100,000s of them): a flatline past either could never be seen.
        if v.flatline_count > crate::pipeline::MAX_RUN {
            p.push(
                "validation.flatline_count",
                format!("must be at most {}", crate::pipeline::MAX_RUN),
            );
        }
        if v.flatline_duration.as_millis() > i64::from(crate::pipeline::MAX_RUN_SPAN_MS) {
            p.push(
                "validation.flatline_duration",
                "must be at most 49 days (4,294,967,295 ms)",
            );
        }
        if v.max_sensors == 0 {
            p.push("validation.max_sensors", "must be at least 1");
        }
        if v.max_sensor_id_len == 0 {
            p.push("validation.max_sensor_id_len", "must be at least 1");
        }
        if !(v.sensor_rate >= 0.0 && v.sensor_rate.is_finite()) {
            p.push(
                "validation.sensor_rate",
                "must be a number of readings per second, 0 or more (0: no limit)",
            );
        }
        for (key, d) in [
            ("max_future_skew", v.max_future_skew),
            ("max_age", v.max_age),
            ("flatline_duration", v.flatline_duration),
        ] {
            if d.0 > std::time::Duration::from_secs(100 * 365 * 24 * 3600) {
                p.push(format!("validation.{key}"), "must be at most 100 years");
            }
        }
        if v.max_future_skew.0.is_zero() {
            p.push("validation.max_future_skew", "must be longer than 0s");
        }
        if v.max_age.0.is_zero() {
            p.push("validation.max_age", "must be longer than 0s");
        }
    }
    for (id, sensor) in &sensors {
        check_sensor(&mut p, id, sensor, &catalog);
    }
    if validation
        .as_ref()
        .is_some_and(|v| v.max_sensors < sensors.len())
    {
        // Every configured sensor has state from the start: the cap would leave no room.
        p.push(
            "validation.max_sensors",
            format!(
                "is below the {} sensors configured (under [sensors] and Modbus devices)",
                sensors.len()
            ),
        );
    }

    match (
        gateway, http, sqlite, validation, alerts, broker, modbus, outbox,
    ) {
        (
            Some(gateway),
            Some(http),
            Some(sqlite),
            Some(validation),
            Some(alerts),
            Some(broker),
            Some(modbus),
            Some(outbox),
        ) if p.0.is_empty() => Ok(Config {
            gateway,
            http,
            sqlite,
            validation,
            alerts,
            catalog: catalog.into_iter().map(|(k, v)| (k, v.spec)).collect(),
            sensors,
            broker,
            mqtt: mqtt.into_iter().map(|(_, m)| m).collect(),
            modbus,
            outbox,
            sinks,
        }),
        _ => Err(ConfigError { problems: p.0 }),
    }
}

/// `[alerts]`: `[alerts.mqtt]` and each `[[alerts.webhooks]]` on its own, so that one bad
/// output does not hide another's problems; webhook names must be unique (they key the
/// delivery cursors). `[alerts.mqtt]` is checked against `[[mqtt]]` by the caller.
fn alerts(p: &mut Problems, value: Option<Value>) -> Option<AlertsConfig> {
    let mut map = match value {
        None => {
            p.push("alerts", "missing section");
            return None;
        }
        Some(Value::Object(map)) => map,
        Some(other) => return p.de("alerts", other),
    };
    let mqtt = match map.remove("mqtt") {
        None | Some(Value::Null) => Some(Default::default()),
        Some(v) => p.de("alerts.mqtt", v),
    };
    let webhooks: Vec<(usize, crate::alerts::webhook::WebhookConfig)> =
        p.array("alerts.webhooks", map.remove("webhooks"));
    let mut names = BTreeSet::new();
    for (i, w) in &webhooks {
        let at = format!("alerts.webhooks[{i}]");
        p.0.extend(w.validate(&at));
        if !w.name.trim().is_empty() && !names.insert(w.name.clone()) {
            p.push(
                format!("{at}.name"),
                format!(
                    "another webhook is already named {:?}; names must be unique",
                    w.name
                ),
            );
        }
    }
    let rest: Option<AlertsConfig> = p.de("alerts", Value::Object(map));
    let mut alerts = rest?;
    alerts.mqtt = mqtt?;
    alerts.webhooks = webhooks.into_iter().map(|(_, w)| w).collect();
    Some(alerts)
}

/// `[sinks]`: each `[[sinks.influxdb]]` on its own, so that one bad sink does not hide
/// another's problems; sink names must be unique (they key the outbox cursors).
fn sinks(p: &mut Problems, value: Option<Value>) -> crate::sinks::SinksConfig {
    let mut map = match value {
        None | Some(Value::Null) => return Default::default(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            p.push(
                "sinks",
                format!("expected a table, found {}", type_name(&other)),
            );
            return Default::default();
        }
    };
    let influxdb: Vec<(usize, crate::sinks::influxdb::config::InfluxConfig)> =
        p.array("sinks.influxdb", map.remove("influxdb"));
    for k in map.keys() {
        p.push(
            format!("sinks.{k}"),
            "unknown sink type (expected influxdb)",
        );
    }
    let mut names = BTreeSet::new();
    for (i, s) in &influxdb {
        let at = format!("sinks.influxdb[{i}]");
        p.0.extend(s.validate(&at));
        if s.name.trim().is_empty() {
            p.push(format!("{at}.name"), "must not be empty");
        } else if !names.insert(s.name.clone()) {
            p.push(
                format!("{at}.name"),
                format!(
                    "another sink is already named {:?}; names must be unique",
                    s.name
                ),
            );
        }
    }
    crate::sinks::SinksConfig {
        influxdb: influxdb.into_iter().map(|(_, s)| s).collect(),
    }
}

/// A polled device is a configured sensor: one not listed under `[sensors]` is added with its
/// kind and the device's tags, so that its deadman runs from startup and it is welcome under
/// `unknown_sensor = "reject"`. One that is listed must agree on the kind.
fn polled_sensors(
    p: &mut Problems,
    m: &crate::sources::modbus::ModbusConfig,
    kinds: &BTreeSet<String>,
    sensors: &mut BTreeMap<String, SensorSpec>,
) {
    let listed: BTreeSet<String> = sensors.keys().cloned().collect();
    for (i, d) in m.devices.iter().enumerate() {
        match sensors.get(&d.sensor) {
            // A sensor polled twice is reported by the Modbus checks.
            Some(_) if !listed.contains(&d.sensor) => {}
            Some(spec) if spec.kind != d.kind => p.push(
                format!("modbus.devices[{i}].kind"),
                format!(
                    "sensor {:?} is listed under [sensors] with kind {}, not {}",
                    d.sensor, spec.kind, d.kind
                ),
            ),
            // An unknown kind is reported against the device already.
            Some(_) => {}
            None if !kinds.contains(&d.kind) => {}
            None => {
                sensors.insert(
                    d.sensor.clone(),
                    SensorSpec {
                        kind: d.kind.clone(),
                        tags: d.tags.clone(),
                        ..SensorSpec::default()
                    },
                );
            }
        }
    }
}

fn check_gateway(p: &mut Problems, g: &GatewayConfig) {
    if chrono_tz::Tz::from_str(&g.timezone).is_err() {
        p.push(
            "gateway.timezone",
            format!(
                "unknown time zone {:?} (use an IANA name like \"Asia/Shanghai\")",
                g.timezone
            ),
        );
    }
    if g.batch_max == 0 {
        p.push("gateway.batch_max", "must be at least 1");
    }
    if g.channel_capacity == 0 {
        p.push("gateway.channel_capacity", "must be at least 1");
    }
    if g.deadman_interval.0.is_zero() {
        p.push("gateway.deadman_interval", "must be longer than 0s");
    }
    // Each is an OS thread; past what the OS allows, the runtime would fail to start with a
    // panic instead of a config error.
    if g.worker_threads > MAX_WORKER_THREADS {
        p.push(
            "gateway.worker_threads",
            format!("must be at most {MAX_WORKER_THREADS} (0 means one per CPU core)"),
        );
    }
}

const MAX_WORKER_THREADS: usize = 1024;

/// A kind as parsed, with the raw names of its pieces so that references to a piece that
/// failed to parse are not reported a second time.
struct ParsedKind {
    spec: KindSpec,
    metric_names: BTreeSet<String>,
    rule_names: BTreeSet<String>,
    profile_names: BTreeSet<String>,
}

fn catalog(p: &mut Problems, value: Option<Value>) -> BTreeMap<String, ParsedKind> {
    let mut out = BTreeMap::new();
    let map = match value {
        None | Some(Value::Null) => return out,
        Some(Value::Object(map)) => map,
        Some(other) => {
            p.push(
                "catalog",
                format!("expected a table of kinds, found {}", type_name(&other)),
            );
            return out;
        }
    };
    for (kind, value) in map {
        let path = format!("catalog.{kind}");
        if let Some(parsed) = parse_kind(p, &path, value) {
            out.insert(kind, parsed);
        }
    }
    out
}

/// The pipeline keeps a metric's or a rule's index within its kind in 16 bits (per-sensor state
/// is the gateway's memory at scale), so a kind may not have more of either.
const MAX_PER_KIND: usize = u16::MAX as usize;

fn check_per_kind(p: &mut Problems, path: &str, what: &str, n: usize) {
    if n > MAX_PER_KIND {
        p.push(
            format!("{path}.{what}"),
            format!("{n} {what}; a kind may have at most {MAX_PER_KIND}"),
        );
    }
}

fn parse_kind(p: &mut Problems, path: &str, value: Value) -> Option<ParsedKind> {
    let mut map = match value {
        Value::Object(map) => map,
        other => {
            p.push(
                path,
                format!("expected a table, found {}", type_name(&other)),
            );
            return None;
        }
    };
    let metrics_v = map.remove("metrics");
    let rules_v = map.remove("rules");
    let profiles_v = map.remove("profiles");
    let metric_names = names_of_table(&metrics_v);
    let profile_names = names_of_table(&profiles_v);

    let base: Option<KindSpec> = p.de(path, Value::Object(map));
    let metrics: BTreeMap<String, MetricSpec> = p.table(&format!("{path}.metrics"), metrics_v);
    if metric_names.is_empty() {
        p.push(
            format!("{path}.metrics"),
            "a kind needs at least one metric",
        );
    }
    for (name, m) in &metrics {
        check_metric(p, &format!("{path}.metrics.{name}"), m);
    }
    check_per_kind(p, path, "metrics", metric_names.len());

    let mut rules = Vec::new();
    let mut rule_names = BTreeSet::new();
    match rules_v {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let rpath = format!("{path}.rules[{i}]");
                if let Some(name) = item.get("name").and_then(Value::as_str) {
                    if crate::pipeline::RESERVED_RULES.contains(&name) {
                        p.push(
                            format!("{rpath}.name"),
                            format!(
                                "rule name {name:?} is reserved for the gateway's own alerts ({})",
                                crate::pipeline::RESERVED_RULES.join(", ")
                            ),
                        );
                    }
                    if !rule_names.insert(name.to_string()) {
                        p.push(
                            format!("{rpath}.name"),
                            format!("rule name {name:?} is used twice in this kind"),
                        );
                    }
                }
                if let Some(rule) = p.de::<RuleSpec>(&rpath, item) {
                    check_rule(p, &rpath, &rule, &metric_names);
                    rules.push(rule);
                }
            }
        }
        Some(other) => p.push(
            format!("{path}.rules"),
            format!(
                "expected an array of rules ([[{path}.rules]]), found {}",
                type_name(&other)
            ),
        ),
    }

    check_per_kind(p, path, "rules", rules.len());

    let profiles: BTreeMap<String, ProfileSpec> = p.table(&format!("{path}.profiles"), profiles_v);
    for (name, profile) in &profiles {
        for (rule, o) in &profile.rules {
            let opath = format!("{path}.profiles.{name}.rules.{rule}");
            if !rule_names.contains(rule) {
                p.push(&opath, format!("no rule named {rule:?} in this kind"));
            }
            check_override(p, &opath, o, rules.iter().find(|r| &r.name == rule));
        }
    }

    // A kind whose own keys are bad still exists for the checks of its sensors and routes,
    // so that one typo is reported once, not again as "unknown kind" everywhere.
    let mut spec = base.unwrap_or_default();
    for (rule, o) in &spec.overrides {
        let opath = format!("{path}.overrides.{rule}");
        if !rule_names.contains(rule) {
            p.push(&opath, format!("no rule named {rule:?} in this kind"));
        }
        check_override(p, &opath, o, rules.iter().find(|r| &r.name == rule));
    }
    if let Some(d) = spec.offline_after {
        if d.0.is_zero() {
            p.push(format!("{path}.offline_after"), "must be longer than 0s");
        }
    }
    if let Some(dp) = &spec.default_profile {
        if !profile_names.contains(dp) {
            p.push(
                format!("{path}.default_profile"),
                format!("no profile named {dp:?} in this kind"),
            );
        }
    }
    spec.metrics = metrics;
    spec.rules = rules;
    spec.profiles = profiles;
    Some(ParsedKind {
        spec,
        metric_names,
        rule_names,
        profile_names,
    })
}

fn names_of_table(v: &Option<Value>) -> BTreeSet<String> {
    match v {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

fn check_metric(p: &mut Problems, path: &str, m: &MetricSpec) {
    if !m.min.is_finite() || !m.max.is_finite() || m.min >= m.max {
        p.push(
            format!("{path}.max"),
            format!(
                "the range {}..{} is empty: max must be above min",
                m.min, m.max
            ),
        );
    }
    if let Some(r) = m.max_rate_per_hour {
        if !(r > 0.0 && r.is_finite()) {
            p.push(
                format!("{path}.max_rate_per_hour"),
                "must be a positive number",
            );
        }
    }
    if let Some(r) = m.rollover {
        if !m.counter {
            p.push(
                format!("{path}.rollover"),
                "only counters roll over: set counter = true",
            );
        }
        if !(r > 0.0 && r.is_finite()) {
            p.push(format!("{path}.rollover"), "must be a positive number");
        }
    }
}

fn check_levels(p: &mut Problems, path: &str, levels: Option<&Levels>, rising: bool) {
    let Some(levels) = levels else { return };
    if levels.is_empty() {
        p.push(
            path,
            "no levels given (use info, warning, major or critical)",
        );
        return;
    }
    let mut prev: Option<(crate::model::Severity, f64)> = None;
    for (sev, v) in levels.iter() {
        if !v.is_finite() {
            p.push(format!("{path}.{sev}"), "must be a finite number");
        }
        if let Some((psev, pv)) = prev {
            let ordered = if rising { v >= pv } else { v <= pv };
            if !ordered {
                let dir = if rising { "at or above" } else { "at or below" };
                p.push(
                    format!("{path}.{sev}"),
                    format!("{sev} level {v} must be {dir} the {psev} level {pv}"),
                );
            }
        }
        prev = Some((sev, v));
    }
}

fn check_rule(p: &mut Problems, path: &str, rule: &RuleSpec, metrics: &BTreeSet<String>) {
    if rule.name.trim().is_empty() {
        p.push(format!("{path}.name"), "must not be empty");
    }
    if !metrics.contains(&rule.metric) {
        p.push(
            format!("{path}.metric"),
            format!("no metric named {:?} in this kind", rule.metric),
        );
    }
    check_levels(p, &format!("{path}.above"), rule.above.as_ref(), true);
    check_levels(p, &format!("{path}.below"), rule.below.as_ref(), false);
    match (rule.window, rule.aggregate) {
        (Some(_), None) => p.push(
            format!("{path}.aggregate"),
            "a window needs an aggregate (sum, mean, max or min)",
        ),
        (None, Some(_)) => p.push(
            format!("{path}.window"),
            "an aggregate needs a window, e.g. window = \"3h\"",
        ),
        (Some(w), Some(_)) if w.0.is_zero() => {
            p.push(format!("{path}.window"), "must be longer than 0s")
        }
        _ => {}
    }
    if rule.window.is_some() && rule.rate_per.is_some() {
        p.push(
            format!("{path}.rate_per"),
            "a rule compares either a window aggregate or a rate, not both",
        );
    }
    if let Some(r) = rule.rate_per {
        if r.0.is_zero() {
            p.push(format!("{path}.rate_per"), "must be longer than 0s");
        }
    }
    if !(rule.hysteresis >= 0.0 && rule.hysteresis.is_finite()) {
        p.push(
            format!("{path}.hysteresis"),
            "must be zero or a positive number",
        );
    }
    check_schedule(p, path, &rule.schedule);
}

fn check_schedule(p: &mut Problems, path: &str, schedule: &[ScheduleSpec]) {
    for (i, span) in schedule.iter().enumerate() {
        let spath = format!("{path}.schedule[{i}]");
        let from = parse_hhmm(&span.from);
        let to = parse_hhmm(&span.to);
        if from.is_none() {
            p.push(
                format!("{spath}.from"),
                format!("expected a local time \"HH:MM\", found {:?}", span.from),
            );
        }
        if to.is_none() {
            p.push(
                format!("{spath}.to"),
                format!("expected a local time \"HH:MM\", found {:?}", span.to),
            );
        }
        if from.is_some() && from == to {
            p.push(&spath, "from and to are the same time: the span is empty");
        }
        if span.above.is_none() && span.below.is_none() {
            p.push(&spath, "a schedule span needs above or below levels");
        }
        check_levels(p, &format!("{spath}.above"), span.above.as_ref(), true);
        check_levels(p, &format!("{spath}.below"), span.below.as_ref(), false);
    }
}

fn check_override(p: &mut Problems, opath: &str, o: &RuleOverride, rule: Option<&RuleSpec>) {
    check_levels(p, &format!("{opath}.above"), o.above.as_ref(), true);
    check_levels(p, &format!("{opath}.below"), o.below.as_ref(), false);
    if let Some(schedule) = &o.schedule {
        check_schedule(p, opath, schedule);
    }
    if let Some(h) = o.hysteresis {
        if !(h >= 0.0 && h.is_finite()) {
            p.push(
                format!("{opath}.hysteresis"),
                "must be zero or a positive number",
            );
        }
    }
    // A schedule that covers the whole day always wins over above/below, so such an
    // override would silently do nothing.
    if let Some(rule) = rule {
        let moves_levels = o.above.is_some() || o.below.is_some();
        if moves_levels && o.schedule.is_none() && covers_whole_day(&rule.schedule) {
            p.push(
                opath,
                format!(
                    "rule {:?} has a time-of-day schedule covering the whole day, which wins over above/below: override `schedule` instead",
                    rule.name
                ),
            );
        }
    }
}

fn covers_whole_day(schedule: &[ScheduleSpec]) -> bool {
    let mut covered = [false; 24 * 60];
    for span in schedule {
        let (Some(from), Some(to)) = (parse_hhmm(&span.from), parse_hhmm(&span.to)) else {
            continue;
        };
        let mut m = from;
        while m != to {
            covered[m as usize] = true;
            m = (m + 1) % (24 * 60);
        }
    }
    !schedule.is_empty() && covered.iter().all(|c| *c)
}

fn check_sensor(
    p: &mut Problems,
    id: &str,
    sensor: &SensorSpec,
    catalog: &BTreeMap<String, ParsedKind>,
) {
    let path = format!("sensors.{id}");
    if id.trim().is_empty() {
        p.push(&path, "a sensor id must not be empty");
    }
    let Some(kind) = catalog.get(&sensor.kind) else {
        let kinds: Vec<&str> = catalog.keys().map(String::as_str).collect();
        p.push(
            format!("{path}.kind"),
            format!(
                "unknown kind {:?} (known kinds: {})",
                sensor.kind,
                kinds.join(", ")
            ),
        );
        return;
    };
    if let Some(profile) = &sensor.profile {
        if kind.profile_names.is_empty() {
            p.push(
                format!("{path}.profile"),
                format!("kind {} has no profiles", sensor.kind),
            );
        } else if !kind.profile_names.contains(profile) {
            let known: Vec<&str> = kind.profile_names.iter().map(String::as_str).collect();
            p.push(
                format!("{path}.profile"),
                format!(
                    "kind {} has no profile {profile:?} (known: {})",
                    sensor.kind,
                    known.join(", ")
                ),
            );
        }
    }
    for (rule, o) in &sensor.rules {
        let opath = format!("{path}.rules.{rule}");
        if !kind.rule_names.contains(rule) {
            p.push(
                &opath,
                format!("kind {} has no rule named {rule:?}", sensor.kind),
            );
        }
        check_override(
            p,
            &opath,
            o,
            kind.spec.rules.iter().find(|r| &r.name == rule),
        );
    }
    for (metric, o) in &sensor.metrics {
        let mpath = format!("{path}.metrics.{metric}");
        if !kind.metric_names.contains(metric) {
            p.push(
                &mpath,
                format!("kind {} has no metric named {metric:?}", sensor.kind),
            );
        }
        // An override of one bound must still make a range with the kind's other bound.
        let base = kind.spec.metrics.get(metric);
        let min = o.min.or(base.map(|m| m.min));
        let max = o.max.or(base.map(|m| m.max));
        if let (Some(min), Some(max)) = (min, max) {
            if !(min.is_finite() && max.is_finite() && min < max) {
                let at = if o.max.is_some() { "max" } else { "min" };
                p.push(
                    format!("{mpath}.{at}"),
                    format!("the range {min}..{max} is empty: max must be above min"),
                );
            }
        }
        if let Some(r) = o.max_rate_per_hour {
            if !(r > 0.0 && r.is_finite()) {
                p.push(
                    format!("{mpath}.max_rate_per_hour"),
                    "must be a positive number",
                );
            }
        }
    }
    for key in sensor.tags.keys() {
        if key.trim().is_empty() {
            p.push(format!("{path}.tags"), "a tag name must not be empty");
        }
    }
    if let Some(d) = sensor.offline_after {
        if d.0.is_zero() {
            p.push(format!("{path}.offline_after"), "must be longer than 0s");
        }
    }
}
