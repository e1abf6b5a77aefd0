//! config/examples/city.toml loads, validates, and agrees with the simulator: its stations
//! have the levels and classes the fleet simulates, and every sensor a scenario drives is in it.

use std::path::{Path, PathBuf};

use citygate::config::{load, Source};
use citygate_sim::{Fleet, FleetConfig, Scenario};

fn city_toml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/city.toml")
}

fn city() -> citygate::config::Config {
    match load(&[Source::File(city_toml())]) {
        Ok(c) => c,
        Err(e) => panic!("city.toml must load: {e}"),
    }
}

#[test]
fn city_toml_has_station_levels_classes_and_modbus_devices() {
    let c = city();
    let wl = &c.sensors["wl-qc-01"];
    assert_eq!(wl.kind, "water_level");
    let level = wl.rules["level"].above.expect("level thresholds");
    assert_eq!((level.warning, level.critical), (Some(27.67), Some(29.3)));
    assert_eq!(wl.tags["district"], "清城区");
    assert_eq!(c.sensors["wq-qc-01"].profile.as_deref(), Some("II"));
    assert_eq!(c.sensors["wq-lz-01"].profile.as_deref(), Some("III"));
    assert_eq!(c.sensors["wq-bj-mb-05"].profile.as_deref(), Some("II"));
    assert_eq!(c.sensors["gd-park-01"].kind, "gas_detector");
    assert_eq!(c.modbus.devices.len(), 5);
    assert!(c
        .modbus
        .devices
        .iter()
        .all(|d| d.address == "tcp://127.0.0.1:5020"));
}

#[test]
fn city_toml_agrees_with_the_simulated_fleet_and_the_scenarios() {
    let c = city();
    let fleet = Fleet::new(FleetConfig {
        per_kind: 7,
        seed: 42,
        ..FleetConfig::default()
    });
    let mut checked = 0;
    for s in fleet.sensors() {
        let Some(spec) = c.sensors.get(&s.id) else {
            continue;
        };
        assert_eq!(spec.kind, s.kind, "{}", s.id);
        if let Some(l) = s.levels {
            let above = spec.rules["level"].above.expect("levels");
            assert_eq!(above.warning, Some(l.warning), "{}", s.id);
            assert_eq!(above.critical, Some(l.guaranteed), "{}", s.id);
            checked += 1;
        }
        if let Some(class) = s.water_class {
            assert_eq!(spec.profile.as_deref(), Some(class), "{}", s.id);
            checked += 1;
        }
    }
    assert_eq!(checked, 14, "7 stations and 7 sections are configured");
    for scenario in Scenario::ALL {
        for id in scenario.sensors() {
            assert!(
                c.sensors.contains_key(id),
                "{} drives {id}, which city.toml lacks",
                scenario.name()
            );
        }
    }
}

#[test]
fn check_config_accepts_city_toml() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_citygate"))
        .args(["check-config", "-c"])
        .arg(city_toml())
        .output()
        .expect("the citygate binary runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
