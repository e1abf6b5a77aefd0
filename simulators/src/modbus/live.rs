//! Live values for the example devices: realistic, changing, and quiet under the default
//! rules. Every noise source is rate limited (see `signals.rs`), so consecutive polls never
//! look like a spike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::devices::{
    GasDetectorValues, MeterValues, SondeValues, WaterMeterValues, GAS_DETECTOR_UNITS, METER_UNIT,
    SONDE_UNIT, WATER_METER_UNIT,
};
use super::sim::Sim;
use crate::rng::SplitMix64;
use crate::signals::{bump, daily_cos, local_hour, plateau, Wander};

/// Longest step taken at once: after a suspend the counters must not leap.
const MAX_STEP_S: f64 = 60.0;

/// The state behind the live values of units 1 to 5.
#[derive(Debug)]
pub struct LiveDevices {
    rng: SplitMix64,
    last_ms: i64,
    meter: MeterValues,
    meter_noise: MeterNoise,
    water: WaterMeterValues,
    water_noise: Wander,
    sonde: SondeValues,
    sonde_noise: [Wander; 6],
    gas: [GasDetector; 2],
}

#[derive(Debug)]
struct MeterNoise {
    load: Wander,
    voltage: [Wander; 3],
    power_factor: Wander,
    frequency: Wander,
}

/// A gas detector reads a little above zero, with a rare small bump (a passing vehicle,
/// a whiff from a drain) that lasts a minute or two.
#[derive(Debug)]
struct GasDetector {
    baseline: Wander,
    bump: Option<GasBump>,
    values: GasDetectorValues,
}

#[derive(Debug)]
struct GasBump {
    elapsed_s: f64,
    length_s: f64,
    lel_peak: f64,
    h2s_peak: f64,
}

/// On average one bump per detector every six hours.
const GAS_BUMP_EVERY_S: f64 = 6.0 * 3600.0;

impl LiveDevices {
    /// Starts from the fixed values at `now_ms` (epoch ms); `seed` picks the noise.
    pub fn new(seed: u64, now_ms: i64) -> LiveDevices {
        let mut rng = SplitMix64::new(seed);
        let meter_noise = MeterNoise {
            load: Wander::new(&mut rng, 0.5, 600.0, 6.0),
            voltage: std::array::from_fn(|_| Wander::new(&mut rng, 1.2, 300.0, 20.0)),
            power_factor: Wander::new(&mut rng, 0.015, 900.0, 0.1),
            frequency: Wander::new(&mut rng, 0.03, 120.0, 0.5),
        };
        let water_noise = Wander::new(&mut rng, 0.15, 300.0, 2.0);
        // pH, DO, NH3-N, turbidity, temperature, COD: (typical swing, per-hour limit).
        let sonde_noise = [
            (0.08, 0.1),
            (0.2, 0.3),
            (0.05, 0.05),
            (2.5, 3.0),
            (0.3, 0.5),
            (1.5, 1.0),
        ]
        .map(|(amp, rate)| Wander::new(&mut rng, amp, 3600.0, rate));
        let gas =
            [GasDetectorValues::FIXED, GasDetectorValues::FIXED_SECOND].map(|values| GasDetector {
                baseline: Wander::new(&mut rng, 0.2, 600.0, 1.0),
                bump: None,
                values,
            });
        let mut live = LiveDevices {
            rng,
            last_ms: now_ms,
            meter: MeterValues::FIXED,
            meter_noise,
            water: WaterMeterValues::FIXED,
            water_noise,
            sonde: SondeValues::FIXED,
            sonde_noise,
            gas,
        };
        live.step(now_ms);
        live
    }

    /// Advances to `now_ms` and writes the new values into the sim's units 1 to 5.
    pub fn update(&mut self, sim: &Sim, now_ms: i64) {
        self.step(now_ms);
        sim.update(METER_UNIT, |b| self.meter.write(b));
        sim.update(WATER_METER_UNIT, |b| self.water.write(b));
        sim.update(SONDE_UNIT, |b| self.sonde.write(b));
        for (unit, gas) in GAS_DETECTOR_UNITS.into_iter().zip(&self.gas) {
            sim.update(unit, |b| gas.values.write(b));
        }
    }

    pub fn meter(&self) -> &MeterValues {
        &self.meter
    }

    pub fn water_meter(&self) -> &WaterMeterValues {
        &self.water
    }

    pub fn sonde(&self) -> &SondeValues {
        &self.sonde
    }

    /// Units 4 and 5.
    pub fn gas_detectors(&self) -> [&GasDetectorValues; 2] {
        [&self.gas[0].values, &self.gas[1].values]
    }

    fn step(&mut self, now_ms: i64) {
        let dt = ((now_ms - self.last_ms) as f64 / 1000.0).clamp(0.0, MAX_STEP_S);
        self.last_ms = now_ms.max(self.last_ms);
        let h = local_hour(now_ms);
        let rng = &mut self.rng;

        // A residential feeder: morning and evening peaks, a daytime plateau.
        let n = &mut self.meter_noise;
        let load_kw = (2.5
            + 2.5 * bump(h, 8.0, 1.5)
            + 1.5 * plateau(h, 10.0, 17.0, 1.5)
            + 5.0 * bump(h, 19.5, 2.5)
            + n.load.step(rng, dt))
        .clamp(0.5, 15.0);
        let pf = (0.94 + n.power_factor.step(rng, dt)).clamp(0.88, 0.99);
        // Voltage sags a little under load and sits higher at night.
        // Phase a carries a little more of the load than b and c.
        let shares = [1.04, 0.98, 0.98];
        let phases = n.voltage.iter_mut().zip(shares).enumerate();
        for (i, (noise, share)) in phases {
            let v = (227.0 + 1.5 * daily_cos(h, 4.0) - 0.2 * load_kw + noise.step(rng, dt))
                .clamp(220.0, 232.0);
            self.meter.voltage[i] = v;
            self.meter.current[i] = load_kw * 1000.0 / 3.0 * share / (v * pf);
        }
        self.meter.active_power_w = load_kw * 1000.0;
        self.meter.power_factor = pf;
        self.meter.frequency = (50.0 + n.frequency.step(rng, dt)).clamp(49.9, 50.1);
        self.meter.energy_kwh += load_kw * dt / 3600.0;

        // Household draw: little at night, peaks at breakfast and dinner.
        let draw = 0.03
            + 1.2 * bump(h, 7.5, 1.2)
            + 0.4 * plateau(h, 10.0, 17.0, 1.5)
            + 1.0 * bump(h, 19.0, 1.8);
        let flow = (draw * (1.0 + self.water_noise.step(rng, dt))).max(0.0);
        self.water.flow_m3h = flow;
        self.water.volume_l += flow * 1000.0 * dt / 3600.0;

        // Photosynthesis lifts pH and DO in the afternoon; water warms after noon.
        let s = &mut self.sonde_noise;
        self.sonde.ph = (7.2 + 0.15 * daily_cos(h, 15.0) + s[0].step(rng, dt)).clamp(6.6, 8.4);
        self.sonde.dissolved_oxygen =
            (7.0 + 0.6 * daily_cos(h, 15.0) + s[1].step(rng, dt)).clamp(5.5, 9.0);
        self.sonde.ammonia_nitrogen = (0.4 + s[2].step(rng, dt)).clamp(0.05, 0.9);
        self.sonde.turbidity = (12.0 + s[3].step(rng, dt)).clamp(1.0, 40.0);
        self.sonde.temperature =
            (18.5 + 1.2 * daily_cos(h, 16.0) + s[4].step(rng, dt)).clamp(5.0, 35.0);
        self.sonde.cod = (14.0 + s[5].step(rng, dt)).clamp(5.0, 19.0);

        for gas in &mut self.gas {
            gas.step(rng, dt);
        }
    }
}

impl GasDetector {
    fn step(&mut self, rng: &mut SplitMix64, dt: f64) {
        if self.bump.is_none() && rng.unit() < dt / GAS_BUMP_EVERY_S {
            self.bump = Some(GasBump {
                elapsed_s: 0.0,
                length_s: rng.range(60.0, 180.0),
                lel_peak: rng.range(2.0, 6.0),
                h2s_peak: rng.range(0.0, 2.0),
            });
        }
        // A triangle: up for the first half, down for the second.
        let (lel_bump, h2s_bump) = match &mut self.bump {
            Some(b) => {
                b.elapsed_s += dt;
                let x = (b.elapsed_s / b.length_s).min(1.0);
                let shape = 1.0 - (2.0 * x - 1.0).abs();
                (b.lel_peak * shape, b.h2s_peak * shape)
            }
            None => (0.0, 0.0),
        };
        if self
            .bump
            .as_ref()
            .is_some_and(|b| b.elapsed_s >= b.length_s)
        {
            self.bump = None;
        }
        self.values.lel = (0.4 + self.baseline.step(rng, dt)).max(0.0) + lel_bump;
        self.values.h2s = h2s_bump;
        self.values.fault = false;
    }
}

/// Updates a sim's units 1 to 5 with live values every second until dropped.
#[derive(Debug)]
pub struct LiveUpdates {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LiveUpdates {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts live values on `sim` (which should hold the example units); needs a tokio runtime.
pub fn spawn_live(sim: Sim, seed: u64) -> LiveUpdates {
    let mut live = LiveDevices::new(seed, wall_ms());
    live.update(&sim, wall_ms());
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            live.update(&sim, wall_ms());
        }
    });
    LiveUpdates { task }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn a_simulated_day_stays_plausible_and_counters_only_rise() {
        // 2024-11-22T00:00:00+08:00.
        let start = 1_732_204_800_000;
        let mut live = LiveDevices::new(7, start);
        let (mut energy, mut volume) = (live.meter().energy_kwh, live.water_meter().volume_l);
        let (mut min_load, mut max_load) = (f64::MAX, f64::MIN);
        let mut night_flow = 0.0;
        let mut evening_flow = 0.0;
        for s in 1..=86_400 / 5 {
            let now = start + s * 5_000;
            live.step(now);
            let m = live.meter();
            for v in m.voltage {
                assert!((220.0..=232.0).contains(&v), "voltage {v}");
            }
            assert!((49.9..=50.1).contains(&m.frequency));
            assert!(m.energy_kwh >= energy);
            energy = m.energy_kwh;
            min_load = min_load.min(m.active_power_w);
            max_load = max_load.max(m.active_power_w);
            let w = live.water_meter();
            assert!(w.volume_l >= volume);
            volume = w.volume_l;
            if (now - start) / HOUR_MS == 3 {
                night_flow = w.flow_m3h;
            }
            if (now - start) / HOUR_MS == 19 {
                evening_flow = w.flow_m3h;
            }
            let q = live.sonde();
            assert!((6.0..=9.0).contains(&q.ph) && q.dissolved_oxygen >= 5.0 && q.cod <= 20.0);
            for g in live.gas_detectors() {
                assert!((0.0..10.0).contains(&g.lel) && g.h2s < 5.0, "{g:?}");
            }
        }
        assert!(
            energy > MeterValues::FIXED.energy_kwh + 50.0,
            "a day of load: {energy}"
        );
        assert!(
            max_load > 2.0 * min_load,
            "a daily load curve: {min_load}..{max_load}"
        );
        assert!(
            evening_flow > 5.0 * night_flow,
            "night {night_flow}, evening {evening_flow}"
        );
    }
}
