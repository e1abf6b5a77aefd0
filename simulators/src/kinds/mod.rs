//! Per-kind signal generators. Each keeps the state of one sensor (noise walks, counters) and
//! writes one report's metrics given the time.

mod air;
mod hazards;
mod meters;
mod water;

use crate::geo::District;
use crate::incidents::Incident;
use crate::rng::SplitMix64;
use crate::weather::Weather;
use crate::StationLevels;

/// One metric value and how many decimals it is reported with (the device's resolution).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) value: f64,
    pub(crate) decimals: u8,
}

/// What a generator knows about the report it is making.
pub(crate) struct Ctx<'a> {
    pub(crate) ts_ms: i64,
    /// Timestamp of the sensor's previous report, `None` for its first.
    pub(crate) prev_ts_ms: Option<i64>,
    /// Seconds since the previous report (0 for the first).
    pub(crate) dt_s: f64,
    /// Seconds since the fleet started: the incident clock.
    pub(crate) elapsed_s: f64,
    pub(crate) district: usize,
    pub(crate) weather: &'a Weather,
    pub(crate) incidents: &'a [Incident],
}

impl Ctx<'_> {
    pub(crate) fn has(&self, incident: Incident) -> bool {
        self.incidents.contains(&incident)
    }
}

/// Collects one report's metrics.
pub(crate) struct Out<'a>(pub(crate) &'a mut Vec<Metric>);

impl Out<'_> {
    pub(crate) fn put(&mut self, name: &'static str, value: f64, decimals: u8) {
        self.0.push(Metric {
            name,
            value,
            decimals,
        });
    }
}

/// Static facts about a sensor, published in [`SimSensor`](crate::SimSensor).
#[derive(Default)]
pub(crate) struct Meta {
    pub(crate) site: String,
    pub(crate) levels: Option<StationLevels>,
    pub(crate) water_class: Option<&'static str>,
    pub(crate) noise_class: Option<&'static str>,
}

pub(crate) enum State {
    WaterLevel(water::Level),
    Rainfall(water::Rain),
    Flow(water::Flow),
    WaterQuality(Box<water::Quality>),
    AirQuality(Box<air::Air>),
    Noise(air::Noise),
    Electricity(Box<meters::Electricity>),
    WaterMeter(meters::Usage),
    GasMeter(meters::Usage),
    GasDetector(hazards::GasDetector),
    Structural(Box<hazards::Structural>),
    Landslide(hazards::Landslide),
    ForestFire(hazards::ForestFire),
}

impl State {
    /// Creates sensor number `n` (0-based within its kind and district) of `kind`.
    pub(crate) fn build(
        kind: &str,
        n: usize,
        district: &District,
        rng: &mut SplitMix64,
        incidents: &[Incident],
    ) -> (State, Meta) {
        let mut meta = Meta::default();
        let state = match kind {
            "water_level" => State::WaterLevel(water::Level::new(rng, incidents, &mut meta)),
            "rainfall" => State::Rainfall(water::Rain::new(rng)),
            "flow" => State::Flow(water::Flow::new(rng, district, n)),
            "water_quality" => State::WaterQuality(Box::new(water::Quality::new(
                rng, district, n, incidents, &mut meta,
            ))),
            "air_quality" => State::AirQuality(Box::new(air::Air::new(rng))),
            "noise" => State::Noise(air::Noise::new(rng, &mut meta)),
            "electricity_meter" => State::Electricity(Box::new(meters::Electricity::new(
                rng, n, district, &mut meta,
            ))),
            "water_meter" => State::WaterMeter(meters::Usage::water(rng, n, district, &mut meta)),
            "gas_meter" => State::GasMeter(meters::Usage::gas(rng, n, district, &mut meta)),
            "gas_detector" => {
                State::GasDetector(hazards::GasDetector::new(rng, n, district, &mut meta))
            }
            "structural" => State::Structural(Box::new(hazards::Structural::new(rng))),
            "landslide" => State::Landslide(hazards::Landslide::new(rng)),
            _ => State::ForestFire(hazards::ForestFire::new(rng)),
        };
        if meta.site.is_empty() {
            let places = match kind {
                "water_level" | "rainfall" | "flow" | "water_quality" => district.rivers,
                "structural" => district.bridges,
                "landslide" => district.slopes,
                "forest_fire" => district.forests,
                _ => district.streets,
            };
            meta.site = crate::geo::nth_place(places, n);
        }
        (state, meta)
    }

    pub(crate) fn sample(&mut self, ctx: &Ctx, rng: &mut SplitMix64, out: &mut Out) {
        match self {
            State::WaterLevel(s) => s.sample(ctx, rng, out),
            State::Rainfall(s) => s.sample(ctx, out),
            State::Flow(s) => s.sample(ctx, rng, out),
            State::WaterQuality(s) => s.sample(ctx, rng, out),
            State::AirQuality(s) => s.sample(ctx, rng, out),
            State::Noise(s) => s.sample(ctx, rng, out),
            State::Electricity(s) => s.sample(ctx, rng, out),
            State::WaterMeter(s) | State::GasMeter(s) => s.sample(ctx, rng, out),
            State::GasDetector(s) => s.sample(ctx, rng, out),
            State::Structural(s) => s.sample(ctx, rng, out),
            State::Landslide(s) => s.sample(ctx, rng, out),
            State::ForestFire(s) => s.sample(ctx, rng, out),
        }
    }
}
