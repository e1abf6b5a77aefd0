//! Hydrology and water quality: water level, rainfall, river flow, GB 3838 sections.
//!
//! Rivers answer their district's rain through [`Weather::runoff`]: hours later, smoothly.

use super::{Ctx, Meta, Out};
use crate::geo::{nth_place, District};
use crate::incidents::{self, Incident};
use crate::rng::SplitMix64;
use crate::signals::{daily_cos, local_hour, season, TippingBucket, Wander, HOUR_MS};
use crate::weather::Weather;
use crate::StationLevels;

/// How a reach answers rain: gain, delay and time to peak.
struct RiverResponse {
    lag_ms: i64,
    peak_h: f64,
}

impl RiverResponse {
    fn new(rng: &mut SplitMix64) -> Self {
        Self {
            lag_ms: (rng.range(0.0, 3.0) * HOUR_MS as f64) as i64,
            peak_h: rng.range(8.0, 14.0),
        }
    }

    /// Runoff in mm-equivalents, capped so a wet week cannot push a river out of its class.
    fn runoff(&self, weather: &Weather, ctx: &Ctx) -> f64 {
        weather
            .runoff(ctx.district, ctx.ts_ms, self.lag_ms, self.peak_h)
            .min(20.0)
    }
}

pub(crate) struct Level {
    base_m: f64,
    m_per_mm: f64,
    response: RiverResponse,
    demo_reach: bool,
    noise: Wander,
}

impl Level {
    pub(crate) fn new(rng: &mut SplitMix64, incidents: &[Incident], meta: &mut Meta) -> Self {
        let response = RiverResponse::new(rng);
        if incidents.contains(&Incident::LevelRise) {
            meta.levels = Some(StationLevels {
                warning: incidents::LEVEL_WARNING_M,
                guaranteed: incidents::LEVEL_GUARANTEED_M,
            });
            return Self {
                base_m: incidents::LEVEL_NORMAL_M,
                m_per_mm: 0.0,
                response,
                demo_reach: true,
                noise: Wander::new(rng, 0.002, 600.0, 0.1),
            };
        }
        let base_m = (rng.range(4.0, 28.0) * 100.0).round() / 100.0;
        // Normal rain lifts a river by at most ~1 m; the warning level sits well above that.
        let warning = ((base_m + rng.range(2.4, 3.8)) * 100.0).round() / 100.0;
        let guaranteed = ((warning + rng.range(1.2, 2.5)) * 100.0).round() / 100.0;
        meta.levels = Some(StationLevels {
            warning,
            guaranteed,
        });
        Self {
            base_m,
            m_per_mm: rng.range(0.025, 0.04),
            response,
            demo_reach: false,
            noise: Wander::new(rng, 0.005, 1800.0, 0.1),
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        let noise = self.noise.step(rng, ctx.dt_s);
        let level = if self.demo_reach {
            incidents::level_rise_m(ctx.elapsed_s) + noise
        } else {
            self.base_m
                + 0.3 * season(ctx.ts_ms)
                + self.m_per_mm * self.response.runoff(ctx.weather, ctx)
                + noise
        };
        out.put("level", level, 5);
    }
}

pub(crate) struct Rain {
    /// Local exposure: gauges of one district catch more or less of the same shower.
    factor: f64,
    offset_ms: i64,
    bucket: TippingBucket,
}

impl Rain {
    pub(crate) fn new(rng: &mut SplitMix64) -> Self {
        Self {
            factor: rng.range(0.75, 1.25),
            offset_ms: (rng.signed() * 20.0 * 60_000.0) as i64,
            bucket: TippingBucket::new(0.1),
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, out: &mut Out) {
        let mut mm = match ctx.prev_ts_ms {
            Some(prev) => {
                ctx.weather.rain_between(
                    ctx.district,
                    prev + self.offset_ms,
                    ctx.ts_ms + self.offset_ms,
                ) * self.factor
            }
            None => 0.0,
        };
        if ctx.has(Incident::Cloudburst) && ctx.prev_ts_ms.is_some() {
            mm += incidents::cloudburst_fallen_mm(ctx.elapsed_s)
                - incidents::cloudburst_fallen_mm(ctx.elapsed_s - ctx.dt_s);
        }
        out.put("rainfall", self.bucket.report(mm).min(200.0), 1);
    }
}

pub(crate) struct Flow {
    base_m3s: f64,
    response: RiverResponse,
    noise: Wander,
}

impl Flow {
    pub(crate) fn new(rng: &mut SplitMix64, district: &District, n: usize) -> Self {
        let river = nth_place(district.rivers, n);
        let (lo, hi) = if river.contains("北江") {
            (800.0, 1500.0)
        } else if river.contains("连江") || river.contains("滃江") {
            (150.0, 400.0)
        } else if river.contains("榕江") {
            (80.0, 250.0)
        } else if river.contains("练江") {
            (15.0, 40.0)
        } else {
            (20.0, 120.0)
        };
        Self {
            base_m3s: rng.range(lo, hi),
            response: RiverResponse::new(rng),
            noise: Wander::new(rng, 0.02, 7200.0, 0.02),
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        let rel = self.noise.step(rng, ctx.dt_s);
        let runoff = self.response.runoff(ctx.weather, ctx);
        let flow = self.base_m3s * (1.0 + 0.15 * season(ctx.ts_ms)) * (1.0 + 0.08 * runoff);
        out.put("flow", flow * (1.0 + rel), 4);
    }
}

/// Typical concentrations of a GB 3838 class, chosen so that normal swings (diurnal, rain,
/// noise) stay inside the class limits.
struct ClassCentre {
    dissolved_oxygen: f64,
    cod: f64,
    codmn: f64,
    ammonia_nitrogen: f64,
    total_phosphorus: f64,
}

const CLASS_II: ClassCentre = ClassCentre {
    dissolved_oxygen: 7.2,
    cod: 10.0,
    codmn: 2.8,
    ammonia_nitrogen: 0.28,
    total_phosphorus: 0.055,
};

const CLASS_III: ClassCentre = ClassCentre {
    dissolved_oxygen: 6.2,
    cod: 15.5,
    codmn: 4.6,
    ammonia_nitrogen: 0.65,
    total_phosphorus: 0.14,
};

pub(crate) struct Quality {
    centre: &'static ClassCentre,
    turbidity_base: f64,
    response: RiverResponse,
    ph: Wander,
    dissolved_oxygen: Wander,
    temperature: Wander,
    cod: Wander,
    codmn: Wander,
    ammonia_nitrogen: Wander,
    total_phosphorus: Wander,
    turbidity: Wander,
    /// The value a stuck turbidity probe keeps repeating.
    stuck_turbidity: Option<f64>,
}

impl Quality {
    pub(crate) fn new(
        rng: &mut SplitMix64,
        district: &District,
        n: usize,
        incidents: &[Incident],
        meta: &mut Meta,
    ) -> Self {
        let river = nth_place(district.rivers, n);
        // The Beijiang is the cleaner main stem (class II); the excursion section must be
        // class III so that its NH3-N warning is the default 1.0 mg/L.
        let class_ii = river.contains("北江") && !incidents.contains(&Incident::AmmoniaExcursion);
        meta.water_class = Some(if class_ii { "II" } else { "III" });
        meta.site = river;
        // Speed limits are well under the catalog's spike limits (pH 2/h, DO and °C 5/h).
        Self {
            centre: if class_ii { &CLASS_II } else { &CLASS_III },
            turbidity_base: rng.range(8.0, 25.0),
            response: RiverResponse::new(rng),
            ph: Wander::new(rng, 0.05, 3.0 * 3600.0, 0.3),
            dissolved_oxygen: Wander::new(rng, 0.15, 2.0 * 3600.0, 0.5),
            temperature: Wander::new(rng, 0.15, 3.0 * 3600.0, 0.3),
            cod: Wander::new(rng, 0.8, 3.0 * 3600.0, 2.0),
            codmn: Wander::new(rng, 0.2, 3.0 * 3600.0, 0.5),
            ammonia_nitrogen: Wander::new(rng, 0.035, 3.0 * 3600.0, 0.05),
            total_phosphorus: Wander::new(rng, 0.007, 3.0 * 3600.0, 0.02),
            turbidity: Wander::new(rng, 1.5, 3600.0, 5.0),
            stuck_turbidity: None,
        }
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        let dt = ctx.dt_s;
        let h = local_hour(ctx.ts_ms);
        let runoff = self.response.runoff(ctx.weather, ctx);
        let c = self.centre;
        // Photosynthesis lifts pH and oxygen in the afternoon.
        let ph = 7.35 + 0.12 * daily_cos(h, 15.0) + self.ph.step(rng, dt);
        let dissolved_oxygen =
            c.dissolved_oxygen + 0.45 * daily_cos(h, 15.0) + self.dissolved_oxygen.step(rng, dt);
        let temperature = 22.0
            + 6.5 * season(ctx.ts_ms)
            + 0.6 * daily_cos(h, 16.0)
            + self.temperature.step(rng, dt);
        let cod = c.cod + 0.08 * runoff + self.cod.step(rng, dt);
        let codmn = c.codmn + 0.02 * runoff + self.codmn.step(rng, dt);
        let mut ammonia = c.ammonia_nitrogen + 0.005 * runoff + self.ammonia_nitrogen.step(rng, dt);
        let total_phosphorus =
            c.total_phosphorus + 0.001 * runoff + self.total_phosphorus.step(rng, dt);
        let mut turbidity =
            (self.turbidity_base + 1.5 * runoff + self.turbidity.step(rng, dt)).max(0.5);

        if ctx.has(Incident::AmmoniaExcursion) {
            if let Some(spill) = incidents::ammonia_excursion(ctx.elapsed_s) {
                // The spill rides on the section's own variation, so the plateau is not flat.
                ammonia = spill + self.ammonia_nitrogen.value();
            }
        }
        if ctx.has(Incident::StuckTurbidity) {
            if incidents::turbidity_stuck(ctx.elapsed_s) {
                // Round first so the repeated value is exactly the one printed.
                turbidity = *self
                    .stuck_turbidity
                    .get_or_insert((turbidity * 1000.0).round() / 1000.0);
            } else {
                self.stuck_turbidity = None;
            }
        }

        out.put("ph", ph, 4);
        out.put("dissolved_oxygen", dissolved_oxygen, 4);
        out.put("cod", cod, 4);
        out.put("codmn", codmn, 4);
        out.put("ammonia_nitrogen", ammonia, 5);
        out.put("total_phosphorus", total_phosphorus, 6);
        out.put("turbidity", turbidity, 3);
        out.put("temperature", temperature, 4);
    }
}
