//! Modbus TCP and RTU polling.
//!
//! ```text
//! [modbus] config ──resolve──► Field list ──plan──► ReadRequests (≤125 registers / 2000 bits)
//!   device task: every `interval` (on a fixed grid) run the requests through the device's
//!   link (its own TCP connection, or the shared serial line), decode each field
//!   (crate::codec::modbus), and send one Batch per poll to the pipeline.
//! ```
//! Every call is wrapped in a timeout, because tokio-modbus has none; after a timeout or a
//! transport error the connection is dropped and made again (a late reply would otherwise be
//! read as the answer to the next request). A device exception is not a transport error: it
//! marks the fields of that request bad (a dead letter naming the exception) and the rest of
//! the poll counts.

pub mod config;
pub mod device;
pub mod field;
pub mod link;
pub mod plan;
mod source;
pub mod status;

use std::collections::{BTreeMap, HashMap};

use compact_str::CompactString;

use crate::catalog::spec::KindSpec;
use crate::config::{ConfigProblem, UnknownPolicy};

pub use config::{DeviceConfig, FieldConfig, FieldType, ModbusConfig, Table, WordOrder};
pub use device::Device;
pub use field::{Field, Target};
pub use link::Endpoint;
pub use plan::{plan, PlanOptions, ReadRequest};
pub use source::ModbusSource;
pub use status::{DeviceSnapshot, DeviceStatus};

/// Devices ready to poll, and the settings of each serial line by path.
pub struct Compiled {
    pub devices: Vec<Device>,
    pub serial: HashMap<String, config::SerialConfig>,
}

/// Resolves maps and fields, plans the requests, and checks everything against the catalog.
/// A metric the device's kind does not define is an error unless `unknown_metrics` is
/// accepted (`validation.unknown_metric = "accept"`), as it is for every other source.
/// Returns every problem found, each with its key path.
pub fn compile<'a>(
    cfg: &ModbusConfig,
    catalog: impl Iterator<Item = (&'a String, &'a KindSpec)>,
    unknown_metrics: UnknownPolicy,
) -> Result<Compiled, Vec<ConfigProblem>> {
    let catalog: BTreeMap<&str, &KindSpec> = catalog.map(|(k, v)| (k.as_str(), v)).collect();
    let mut problems = Vec::new();
    let mut push = |path: String, message: String| problems.push(ConfigProblem { path, message });
    if cfg.max_concurrent == 0 {
        push("modbus.max_concurrent".into(), "must be at least 1".into());
    }

    // Maps: resolved once, problems reported under the map.
    let mut maps: BTreeMap<&str, Vec<Field>> = BTreeMap::new();
    for (name, map) in &cfg.maps {
        let at = format!("modbus.maps.{name}");
        let fields = resolve_fields(&map.registers, map.address_base, &at, &mut push);
        maps.insert(name, fields);
    }

    let mut devices = Vec::new();
    let mut serial: HashMap<String, (config::SerialConfig, usize)> = HashMap::new();
    let mut sensors: HashMap<&str, usize> = HashMap::new();
    for (i, d) in cfg.devices.iter().enumerate() {
        let at = |key: &str| format!("modbus.devices[{i}].{key}");
        if d.sensor.trim().is_empty() {
            push(at("sensor"), "must not be empty".into());
        } else if let Some(first) = sensors.insert(&d.sensor, i) {
            push(
                at("sensor"),
                format!(
                    "sensor {:?} is already polled by modbus.devices[{first}]",
                    d.sensor
                ),
            );
        }
        let kind = catalog.get(d.kind.as_str());
        if kind.is_none() {
            let known: Vec<&str> = catalog.keys().copied().collect();
            push(
                at("kind"),
                format!("unknown kind {:?} (known: {})", d.kind, known.join(", ")),
            );
        }
        let endpoint = match link::Endpoint::parse(&d.address) {
            Ok(e) => Some(e),
            Err(why) => {
                push(
                    at("address"),
                    format!("invalid address {:?}: {why}", d.address),
                );
                None
            }
        };
        match &endpoint {
            Some(link::Endpoint::Rtu(path)) => {
                if !(1..=247).contains(&d.unit_id) {
                    push(
                        at("unit_id"),
                        format!("{} is not a serial unit id (1 to 247)", d.unit_id),
                    );
                }
                let s = d.serial.clone().unwrap_or_default();
                check_serial(&s, &at("serial"), &mut push);
                match serial.get(path) {
                    Some((first, j)) if *first != s => push(
                        at("serial"),
                        format!(
                            "differs from modbus.devices[{j}].serial, which uses the same line {path}"
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        serial.insert(path.clone(), (s, i));
                    }
                }
            }
            Some(link::Endpoint::Tcp(_)) if d.serial.is_some() => {
                push(at("serial"), "is only for rtu:// addresses".into());
            }
            _ => {}
        }
        for (key, v) in [("interval", d.interval), ("timeout", d.timeout)] {
            if v.0.is_zero() {
                push(at(key), "must be longer than 0s".into());
            }
        }
        if d.offline_after_failures == 0 {
            push(at("offline_after_failures"), "must be at least 1".into());
        }
        if !(1..=125).contains(&d.max_registers) {
            push(
                at("max_registers"),
                "must be from 1 to 125 (the protocol's limit)".into(),
            );
        }
        if !(1..=2000).contains(&d.max_bits) {
            push(
                at("max_bits"),
                "must be from 1 to 2000 (the protocol's limit)".into(),
            );
        }

        let mut fields = Vec::new();
        if let Some(name) = &d.map {
            match maps.get(name.as_str()) {
                Some(f) => fields.extend(f.iter().cloned()),
                None => {
                    let known: Vec<&str> = maps.keys().copied().collect();
                    push(
                        at("map"),
                        format!(
                            "no map {name:?} under [modbus.maps] (known: {})",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        let own_fields = resolve_fields(
            &d.registers,
            d.address_base,
            &format!("modbus.devices[{i}]"),
            &mut push,
        );
        let own = own_fields.len();
        fields.extend(own_fields);
        if fields.is_empty() && d.map.is_none() {
            push(
                at("registers"),
                "the device has nothing to read: name a map or list registers".into(),
            );
        }
        let mut seen: std::collections::HashSet<(bool, &str)> = Default::default();
        let from_map = fields.len() - own;
        for (j, f) in fields.iter().enumerate() {
            // Say where the field came from: the shared map or the device's own list.
            let origin = match (&d.map, j < from_map) {
                (Some(name), true) => (at("map"), format!("map {name:?} reads ")),
                _ => (at("registers"), String::new()),
            };
            let key = match &f.target {
                Target::Metric(m) => (true, m.as_str()),
                Target::Tag(t) => (false, t.as_str()),
            };
            if !seen.insert(key) {
                let what = match &f.target {
                    Target::Metric(m) => format!("metric {m:?}"),
                    Target::Tag(t) => format!("tag {t:?}"),
                };
                push(at("registers"), format!("{what} is read twice"));
            }
            if let (Target::Metric(m), Some(k)) = (&f.target, kind) {
                if !k.metrics.contains_key(m.as_str()) && unknown_metrics == UnknownPolicy::Reject {
                    let known: Vec<&str> = k.metrics.keys().map(String::as_str).collect();
                    push(
                        origin.0,
                        format!(
                            "{}metric {m:?}, which {} does not have (known: {})",
                            origin.1,
                            d.kind,
                            known.join(", ")
                        ),
                    );
                }
            }
            let limit = if f.table.is_bits() {
                d.max_bits
            } else {
                d.max_registers
            };
            if f.count > limit {
                push(
                    at("registers"),
                    format!(
                        "a field at {} {} spans {} registers, more than max_registers = {limit}",
                        f.table.as_str(),
                        f.address,
                        f.count
                    ),
                );
            }
        }

        let opts = PlanOptions {
            merge: d.merge,
            max_gap: d.max_gap,
            max_registers: d.max_registers.clamp(1, 125),
            max_bits: d.max_bits.clamp(1, 2000),
        };
        let requests = plan(&fields, &opts);
        if let Some(endpoint) = endpoint {
            let mut tags: Vec<(CompactString, CompactString)> = d
                .tags
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect();
            tags.sort();
            devices.push(Device {
                sensor: d.sensor.as_str().into(),
                kind: d.kind.as_str().into(),
                endpoint,
                unit: d.unit_id,
                fields,
                requests,
                tags,
                interval: d.interval.0,
                timeout: d.timeout.0,
                retries: d.retries,
                offline_after_failures: d.offline_after_failures.max(1),
                backoff_max: d.backoff_max.0,
            });
        }
    }
    if problems.is_empty() {
        Ok(Compiled {
            devices,
            serial: serial.into_iter().map(|(k, (s, _))| (k, s)).collect(),
        })
    } else {
        Err(problems)
    }
}

fn resolve_fields(
    list: &[FieldConfig],
    base: u8,
    at: &str,
    push: &mut impl FnMut(String, String),
) -> Vec<Field> {
    if base > 1 {
        push(format!("{at}.address_base"), "must be 0 or 1".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for (j, f) in list.iter().enumerate() {
        match field::resolve(f, base.min(1)) {
            Ok(field) => out.push(field),
            Err(problems) => {
                for (key, message) in problems {
                    push(format!("{at}.registers[{j}].{key}"), message);
                }
            }
        }
    }
    out
}

fn check_serial(s: &config::SerialConfig, at: &str, push: &mut impl FnMut(String, String)) {
    if s.baud == 0 {
        push(format!("{at}.baud"), "must be greater than 0".into());
    }
    if !(7..=8).contains(&s.data_bits) {
        push(format!("{at}.data_bits"), "must be 7 or 8".into());
    }
    if !(1..=2).contains(&s.stop_bits) {
        push(format!("{at}.stop_bits"), "must be 1 or 2".into());
    }
}

/// Starts polling every configured device.
pub fn start(
    config: &crate::config::Config,
    ingest: crate::app::Ingest,
) -> Result<ModbusSource, Vec<ConfigProblem>> {
    let cfg = &config.modbus;
    let compiled = compile(cfg, config.catalog.iter(), config.validation.unknown_metric)?;
    Ok(source::spawn(
        compiled.devices,
        &compiled.serial,
        cfg.max_concurrent,
        ingest,
    ))
}
