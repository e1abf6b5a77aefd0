//! Hazard monitoring: combustible/toxic gas detectors, bridge structural health, landslide
//! slopes and forest fire risk.

use super::{Ctx, Meta, Out};
use crate::geo::{nth_place, District};
use crate::incidents::{self, Incident};
use crate::rng::SplitMix64;
use crate::signals::{daily_cos, local_hour, season, traffic, TippingBucket, Wander};

const GAS_SITES: [&str; 4] = ["燃气调压站", "加油站", "化工仓库", "餐饮街"];

pub(crate) struct GasDetector {
    h2s_base: f64,
    lel: Wander,
    h2s: Wander,
}

impl GasDetector {
    pub(crate) fn new(
        rng: &mut SplitMix64,
        n: usize,
        district: &District,
        meta: &mut Meta,
    ) -> Self {
        let site = GAS_SITES[rng.below(GAS_SITES.len())];
        meta.site = format!("{}{site}", nth_place(district.streets, n));
        Self {
            h2s_base: if site == "化工仓库" { 0.6 } else { 0.25 },
            lel: Wander::new(rng, 0.3, 1800.0, 3.0),
            h2s: Wander::new(rng, 0.06, 1800.0, 1.0),
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        // A healthy detector reads near zero, drifting a little around its zero point
        // (0.05..1.55 % LEL), never pinned at exactly 0 for hours.
        let mut lel = (0.8 + self.lel.step(rng, ctx.dt_s)).clamp(0.0, 2.0);
        if ctx.has(Incident::GasLeak) {
            if let Some(leak) = incidents::gas_leak_lel(ctx.elapsed_s) {
                lel = (leak + self.lel.value()).clamp(0.0, 100.0);
            }
        }
        let h2s = (self.h2s_base + self.h2s.step(rng, ctx.dt_s)).max(0.0);
        out.put("lel", lel, 3);
        out.put("h2s", h2s, 4);
    }
}

pub(crate) struct Structural {
    strain_base: f64,
    thermal_strain: f64,
    live_strain: f64,
    creep_strain_per_day: f64,
    deflection_base: f64,
    live_deflection: f64,
    tilt_base: f64,
    tilt: Wander,
}

impl Structural {
    pub(crate) fn new(rng: &mut SplitMix64) -> Self {
        Self {
            strain_base: rng.range(-200.0, 300.0),
            thermal_strain: rng.range(25.0, 45.0),
            live_strain: rng.range(15.0, 35.0),
            creep_strain_per_day: rng.range(0.1, 0.5),
            deflection_base: rng.range(-20.0, -5.0),
            live_deflection: rng.range(1.0, 3.0),
            tilt_base: rng.signed() * 0.05,
            tilt: Wander::new(rng, 0.0005, 3600.0, 0.01),
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        let h = local_hour(ctx.ts_ms);
        let heat = daily_cos(h, 15.0);
        let load = traffic(h);
        let days = ctx.elapsed_s.max(0.0) / 86_400.0;
        // Vibration from passing traffic is real high-frequency motion, not drift: it is the
        // one signal sampled as white noise, and small against the structure's limits.
        let strain = self.strain_base
            + self.thermal_strain * heat
            + self.live_strain * load
            + self.creep_strain_per_day * days
            + rng.signed() * 3.0;
        let deflection =
            self.deflection_base - 1.5 * heat - self.live_deflection * load - 0.002 * days
                + rng.signed() * 0.03;
        let tilt = self.tilt_base + 0.002 * heat + self.tilt.step(rng, ctx.dt_s);
        out.put("strain", strain, 2);
        out.put("deflection", deflection, 3);
        out.put("tilt", tilt, 6);
    }
}

pub(crate) struct Landslide {
    displacement_mm: f64,
    creep_mm_per_day: f64,
    tilt_base: f64,
    start_mm: f64,
    noise: Wander,
    tilt_noise: Wander,
    rain_factor: f64,
    bucket: TippingBucket,
}

impl Landslide {
    pub(crate) fn new(rng: &mut SplitMix64) -> Self {
        let start_mm = rng.range(0.0, 40.0);
        Self {
            displacement_mm: start_mm,
            creep_mm_per_day: rng.range(0.01, 0.03),
            tilt_base: rng.signed() * 0.5,
            start_mm,
            noise: Wander::new(rng, 0.02, 3600.0, 0.05),
            tilt_noise: Wander::new(rng, 0.0005, 3600.0, 0.01),
            rain_factor: rng.range(0.8, 1.2),
            bucket: TippingBucket::new(0.1),
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        // Wet soil creeps faster: the slope answers rain within hours.
        let wetness = ctx
            .weather
            .runoff(ctx.district, ctx.ts_ms, 0, 4.0)
            .min(20.0);
        let rate_mm_per_day = self.creep_mm_per_day + 0.004 * wetness;
        self.displacement_mm += rate_mm_per_day * ctx.dt_s / 86_400.0;
        let shown = self.displacement_mm + self.noise.step(rng, ctx.dt_s);
        let tilt = self.tilt_base
            + 0.0005 * (self.displacement_mm - self.start_mm)
            + self.tilt_noise.step(rng, ctx.dt_s);
        let rain = match ctx.prev_ts_ms {
            Some(prev) => {
                ctx.weather.rain_between(ctx.district, prev, ctx.ts_ms) * self.rain_factor
            }
            None => 0.0,
        };
        out.put("displacement", shown, 5);
        out.put("tilt", tilt, 6);
        out.put("rainfall", self.bucket.report(rain).min(200.0), 1);
    }
}

pub(crate) struct ForestFire {
    temperature: Wander,
    humidity: Wander,
    smoke: Wander,
}

impl ForestFire {
    pub(crate) fn new(rng: &mut SplitMix64) -> Self {
        Self {
            temperature: Wander::new(rng, 1.0, 2.0 * 3600.0, 3.0),
            humidity: Wander::new(rng, 3.0, 2.0 * 3600.0, 8.0),
            smoke: Wander::new(rng, 0.006, 3600.0, 0.02),
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        let dt = ctx.dt_s;
        let h = local_hour(ctx.ts_ms);
        let warmth = daily_cos(h, 14.5);
        let wet = ctx
            .weather
            .runoff(ctx.district, ctx.ts_ms, 0, 3.0)
            .min(10.0);
        let temperature =
            19.0 + 7.0 * season(ctx.ts_ms) + 5.0 * warmth + self.temperature.step(rng, dt);
        // Air dries as it warms in the afternoon and stays damp after rain.
        let raw = 68.0 + 6.0 * season(ctx.ts_ms) - 16.0 * warmth
            + 1.0 * wet
            + self.humidity.step(rng, dt);
        // Near saturation a capacitive probe flattens out rather than pinning at 100 %.
        let humidity = if raw > 92.0 {
            92.0 + (raw - 92.0) * 0.3
        } else {
            raw
        }
        .clamp(15.0, 100.0);
        let smoke = (0.02 + self.smoke.step(rng, dt)).clamp(0.0, 1.0);
        out.put("smoke", smoke, 6);
        out.put("temperature", temperature, 3);
        out.put("humidity", humidity, 3);
    }
}
