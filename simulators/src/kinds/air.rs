//! Ambient air (GB 3095) and environmental noise (GB 3096), both driven by road traffic.

use super::{Ctx, Meta, Out};
use crate::rng::SplitMix64;
use crate::signals::{daylight, local_hour, smoothstep, traffic, Wander, HOUR_MS};

pub(crate) struct Air {
    base_pm25: f64,
    pm25: Wander,
    pm10_ratio: Wander,
    no2: Wander,
    so2: Wander,
    co: Wander,
    o3: Wander,
}

impl Air {
    pub(crate) fn new(rng: &mut SplitMix64) -> Self {
        Self {
            base_pm25: rng.range(25.0, 38.0),
            pm25: Wander::new(rng, 3.0, 3600.0, 15.0),
            pm10_ratio: Wander::new(rng, 0.08, 7200.0, 0.2),
            no2: Wander::new(rng, 5.0, 3600.0, 30.0),
            so2: Wander::new(rng, 1.5, 7200.0, 5.0),
            co: Wander::new(rng, 0.06, 3600.0, 0.3),
            o3: Wander::new(rng, 6.0, 3600.0, 25.0),
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        let dt = ctx.dt_s;
        let h = local_hour(ctx.ts_ms);
        let t = traffic(h);
        // Rain washes particles out of the air.
        let rain_last_hour = ctx
            .weather
            .rain_between(ctx.district, ctx.ts_ms - HOUR_MS, ctx.ts_ms);
        let washout = 1.0 / (1.0 + 0.08 * rain_last_hour);
        let pm25 =
            (self.base_pm25 * (0.75 + 0.45 * t) * washout + self.pm25.step(rng, dt)).max(3.0);
        let pm10 = pm25 * (1.55 + self.pm10_ratio.step(rng, dt));
        let no2 = (12.0 + 45.0 * t + self.no2.step(rng, dt)).max(2.0);
        let so2 = (7.0 + 4.0 * t + self.so2.step(rng, dt)).max(1.0);
        let co = (0.45 + 0.5 * t + self.co.step(rng, dt)).max(0.1);
        // Ozone is photochemical: it follows the sun an hour or two late, and traffic NO
        // titrates it away at rush hour.
        let o3 =
            (20.0 + 105.0 * daylight(h - 1.5) * (1.0 - 0.25 * t) + self.o3.step(rng, dt)).max(2.0);
        out.put("pm25", pm25, 3);
        out.put("pm10", pm10, 3);
        out.put("so2", so2, 4);
        out.put("no2", no2, 3);
        out.put("o3", o3, 3);
        out.put("co", co, 4);
    }
}

/// GB 3096-2008 functional classes and their day/night limits, dB(A).
const NOISE_CLASSES: [(&str, f64, f64); 5] = [
    ("1", 55.0, 45.0),
    ("2", 60.0, 50.0),
    ("2", 60.0, 50.0),
    ("3", 65.0, 55.0),
    ("4a", 70.0, 55.0),
];

pub(crate) struct Noise {
    day_limit: f64,
    night_limit: f64,
    noise: Wander,
}

impl Noise {
    pub(crate) fn new(rng: &mut SplitMix64, meta: &mut Meta) -> Self {
        let (class, day_limit, night_limit) = NOISE_CLASSES[rng.below(NOISE_CLASSES.len())];
        meta.noise_class = Some(class);
        Self {
            day_limit,
            night_limit,
            noise: Wander::new(rng, 0.8, 600.0, 20.0),
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        let h = local_hour(ctx.ts_ms);
        // A compliant site: day level 1-5 dB under its class limit, night 3.5-7.5 dB under.
        // The evening fall ends by 21:45, before the night limit starts at 22:00, and the
        // morning rise starts after 06:00, when the day limit is already in force.
        let day = self.day_limit - 5.0 + 2.0 * traffic(h);
        let night = self.night_limit - 5.5;
        let dayness = smoothstep((h - 6.15) / 1.0) * smoothstep((21.75 - h) / 1.25);
        let laeq = night + (day - night) * dayness + self.noise.step(rng, ctx.dt_s);
        out.put("laeq", laeq, 2);
    }
}
