//! Smart meters: three-phase electricity meters and building water and gas meters. Counters
//! integrate the reported rate over the time since the previous report, so `energy_total`
//! always agrees with `active_power` and volumes with flow rates.

use super::{Ctx, Meta, Out};
use crate::geo::{nth_place, District};
use crate::incidents::{self, Incident};
use crate::rng::SplitMix64;
use crate::signals::{bump, local_hour, plateau, Wander};

#[derive(Clone, Copy)]
enum Customer {
    Residential,
    Commercial,
    Industrial,
}

impl Customer {
    /// Share of rated load in use at local hour `h`.
    fn load(self, h: f64) -> f64 {
        match self {
            Customer::Residential => {
                0.22 + 0.18 * bump(h, 7.5, 1.0)
                    + 0.5 * bump(h, 20.0, 1.8)
                    + 0.12 * plateau(h, 11.0, 14.0, 1.0)
            }
            Customer::Commercial => 0.15 + 0.75 * plateau(h, 9.0, 21.0, 1.0),
            Customer::Industrial => 0.35 + 0.55 * plateau(h, 7.5, 18.5, 0.75),
        }
    }
}

pub(crate) struct Electricity {
    customer: Customer,
    rated_kw: f64,
    /// Per-phase share of the load around 1/3; sums to zero.
    imbalance: [f64; 3],
    nominal_v: f64,
    load: Wander,
    volts: [Wander; 3],
    frequency: Wander,
    base_pf: f64,
    pf: Wander,
    energy_kwh: f64,
}

impl Electricity {
    pub(crate) fn new(
        rng: &mut SplitMix64,
        n: usize,
        district: &District,
        meta: &mut Meta,
    ) -> Self {
        let roll = rng.unit();
        let (customer, rated_kw, suffix) = if roll < 0.6 {
            (Customer::Residential, rng.range(40.0, 150.0), "小区配电房")
        } else if roll < 0.85 {
            (Customer::Commercial, rng.range(50.0, 250.0), "商业中心")
        } else {
            (Customer::Industrial, rng.range(150.0, 400.0), "工业园")
        };
        meta.site = format!("{}{suffix}", nth_place(district.streets, n));
        let a = rng.signed() * 0.05;
        let b = rng.signed() * 0.05;
        Self {
            customer,
            rated_kw,
            imbalance: [a, b, -a - b],
            nominal_v: rng.range(222.0, 228.0),
            load: Wander::new(rng, 0.06, 1200.0, 0.3),
            volts: [
                Wander::new(rng, 0.8, 900.0, 6.0),
                Wander::new(rng, 0.8, 900.0, 6.0),
                Wander::new(rng, 0.8, 900.0, 6.0),
            ],
            frequency: Wander::new(rng, 0.02, 300.0, 0.2),
            base_pf: rng.range(0.88, 0.95),
            pf: Wander::new(rng, 0.01, 3600.0, 0.05),
            energy_kwh: (rng.range(1_000.0, 500_000.0) * 100.0).round() / 100.0,
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        let dt = ctx.dt_s;
        let h = local_hour(ctx.ts_ms);
        let share = (self.customer.load(h) * (1.0 + self.load.step(rng, dt))).clamp(0.05, 1.0);
        let power_kw = self.rated_kw * share;
        // Heavier load, longer drop along the feeder.
        let mut volts = [0.0; 3];
        for (v, w) in volts.iter_mut().zip(self.volts.iter_mut()) {
            *v = self.nominal_v - 6.0 * share + w.step(rng, dt);
        }
        if ctx.has(Incident::VoltageSag) {
            let depth = incidents::voltage_sag_depth(ctx.elapsed_s);
            // The feeder's own variation stays on top of the sag, so the low phase is not flat.
            volts[0] -= depth * (self.nominal_v - incidents::SAG_VOLTAGE_V);
        }
        let pf = (self.base_pf + self.pf.step(rng, dt)).clamp(0.8, 0.99);
        let mut amps = [0.0; 3];
        for ((i, v), imb) in amps.iter_mut().zip(volts).zip(self.imbalance) {
            *i = power_kw / 3.0 * (1.0 + imb) * 1000.0 / (v * pf);
        }
        self.energy_kwh += power_kw * dt / 3600.0;

        out.put("voltage_a", volts[0], 3);
        out.put("voltage_b", volts[1], 3);
        out.put("voltage_c", volts[2], 3);
        out.put("current_a", amps[0], 3);
        out.put("current_b", amps[1], 3);
        out.put("current_c", amps[2], 3);
        out.put("active_power", power_kw, 4);
        out.put("power_factor", pf, 5);
        out.put("frequency", 50.0 + self.frequency.step(rng, dt), 4);
        out.put("energy_total", self.energy_kwh, 3);
    }
}

#[derive(Clone, Copy)]
enum Utility {
    Water,
    Gas,
}

/// A building's water or gas meter: flow follows the households' day, volume counts it up.
pub(crate) struct Usage {
    utility: Utility,
    /// Mean flow of the whole building, m³/h.
    mean_m3h: f64,
    wiggle: Wander,
    volume_m3: f64,
}

impl Usage {
    pub(crate) fn water(
        rng: &mut SplitMix64,
        n: usize,
        district: &District,
        meta: &mut Meta,
    ) -> Self {
        Self::new(Utility::Water, 0.025, rng, n, district, meta)
    }

    pub(crate) fn gas(
        rng: &mut SplitMix64,
        n: usize,
        district: &District,
        meta: &mut Meta,
    ) -> Self {
        Self::new(Utility::Gas, 0.02, rng, n, district, meta)
    }

    fn new(
        utility: Utility,
        per_household_m3h: f64,
        rng: &mut SplitMix64,
        n: usize,
        district: &District,
        meta: &mut Meta,
    ) -> Self {
        let households = rng.range(50.0, 300.0).round();
        meta.site = format!("{}小区", nth_place(district.streets, n));
        Self {
            utility,
            mean_m3h: households * per_household_m3h,
            wiggle: Wander::new(rng, 0.08, 900.0, 0.6),
            volume_m3: (rng.range(1_000.0, 200_000.0) * 100.0).round() / 100.0,
        }
    }

    /// Share of the mean flow at local hour `h`. Buildings never go fully dry at night
    /// (a few taps, a water heater pilot), but the night floor is low.
    fn profile(&self, h: f64) -> f64 {
        match self.utility {
            Utility::Water => {
                0.12 + 0.9 * bump(h, 7.3, 1.2) + 0.5 * bump(h, 12.0, 1.2) + 1.0 * bump(h, 20.0, 1.8)
            }
            Utility::Gas => {
                0.04 + 1.2 * bump(h, 7.0, 0.8) + 1.6 * bump(h, 11.8, 0.8) + 2.0 * bump(h, 18.3, 1.0)
            }
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        let h = local_hour(ctx.ts_ms);
        let flow = self.mean_m3h * self.profile(h) * (1.0 + self.wiggle.step(rng, ctx.dt_s));
        let flow = flow.max(0.0);
        self.volume_m3 += flow * ctx.dt_s / 3600.0;
        out.put("volume_total", self.volume_m3, 6);
        out.put("flow_rate", flow, 6);
    }
}
