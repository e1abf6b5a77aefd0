//! The four example devices of `config/examples/modbus/*.toml`, register for register, and
//! their fixed test values.
//!
//! | unit | device | field | where | fixed value | gateway reads |
//! |---|---|---|---|---|---|
//! | 1 | electricity meter | voltage_a / _b / _c | input 0 / 2 / 4, f32 ABCD | 230.5 / 231.25 / 229.75 V | same |
//! | 1 | | current_a / _b / _c | input 6 / 8 / 10, f32 ABCD | 12.5 / 13.25 / 11.75 A | same |
//! | 1 | | active_power | input 52, f32 ABCD, W | 8450 W | 8.45 kW |
//! | 1 | | power_factor | input 62, f32 ABCD | 0.9375 | same |
//! | 1 | | frequency | input 70, f32 ABCD | 50.0 Hz | same |
//! | 1 | | energy_total | input 342, f32 ABCD | 12345.5 kWh | same |
//! | 1 | | serial (tag) | holding 64512, 8 registers ASCII | "CG-EM-0000000001" | same |
//! | 2 | water meter | volume_total | holding 0 ("40001"), u32 CDAB, L | 123456 L | 123.456 m³ |
//! | 2 | | flow_rate | holding 2 ("40003"), u16, 0.01 m³/h | 125 | 1.25 m³/h |
//! | 2 | | status word | holding 3 ("40004") | 0x000B: bits 0, 1, 3 set, bit 2 (reverse flow) clear | reverse_flow 0 |
//! | 3 | water-quality sonde | ph | holding 0 (register 1), f32 CDAB | 7.25 | same |
//! | 3 | | dissolved_oxygen | holding 2, f32 CDAB | 6.75 mg/L | same |
//! | 3 | | ammonia_nitrogen | holding 4, f32 CDAB | 0.375 mg/L | same |
//! | 3 | | turbidity | holding 6, f32 CDAB | 12.5 NTU | same |
//! | 3 | | temperature | holding 8, f32 CDAB | 18.5 °C | same |
//! | 3 | | cod | holding 10, f32 CDAB | 14.0 mg/L | same |
//! | 4 | gas detector | lel | input 0, u16, 0.1 % LEL | 30 | 3.0 % LEL |
//! | 4 | | h2s | input 1, u16, 0.1 ppm | 0 | 0.0 ppm |
//! | 4 | | fault | discrete input 0 | 0 | 0 |
//! | 5 | gas detector | lel / h2s / fault | as unit 4 | 20 / 5 / 0 | 2.0 % LEL / 0.5 ppm / 0 |
//!
//! Units 4 and 5 also set discrete input 1 (power OK) so a read of the wrong bit shows.
//! Every float is exact in f32, so a decoded value compares equal to the table. All values are
//! inside the catalog's plausible ranges and quiet under the default rules (voltages within
//! 198..235.4 V, water class II, gas far below 25 % LEL).

use super::bank::Bank;
use super::encode::{Table, ValueType, WordOrder};
use super::sim::Sim;

pub const METER_UNIT: u8 = 1;
pub const WATER_METER_UNIT: u8 = 2;
pub const SONDE_UNIT: u8 = 3;
pub const GAS_DETECTOR_UNITS: [u8; 2] = [4, 5];

/// Where the meter keeps its serial number.
pub const METER_SERIAL_ADDRESS: u16 = 64512;
pub const METER_SERIAL: &str = "CG-EM-0000000001";

/// Three-phase electricity meter (SDM630-style input registers, f32 ABCD).
#[derive(Clone, Debug, PartialEq)]
pub struct MeterValues {
    /// V, phases a, b, c.
    pub voltage: [f64; 3],
    /// A, phases a, b, c.
    pub current: [f64; 3],
    /// W (the gateway's map scales to kW).
    pub active_power_w: f64,
    pub power_factor: f64,
    /// Hz.
    pub frequency: f64,
    /// kWh.
    pub energy_kwh: f64,
}

impl MeterValues {
    pub const FIXED: MeterValues = MeterValues {
        voltage: [230.5, 231.25, 229.75],
        current: [12.5, 13.25, 11.75],
        active_power_w: 8450.0,
        power_factor: 0.9375,
        frequency: 50.0,
        energy_kwh: 12345.5,
    };

    pub fn write(&self, bank: &mut Bank) {
        let f32_at = |bank: &mut Bank, address: u16, v: f64| {
            known_good(bank.set(Table::Input, address, v, ValueType::F32, WordOrder::Abcd));
        };
        for (i, (v, a)) in self.voltage.iter().zip(self.current).enumerate() {
            let i = i as u16;
            f32_at(bank, 2 * i, *v);
            f32_at(bank, 6 + 2 * i, a);
        }
        f32_at(bank, 52, self.active_power_w);
        f32_at(bank, 62, self.power_factor);
        f32_at(bank, 70, self.frequency);
        f32_at(bank, 342, self.energy_kwh);
    }
}

/// Smart water meter (holding registers, "4xxxx" manual numbering).
#[derive(Clone, Debug, PartialEq)]
pub struct WaterMeterValues {
    /// Litres (u32, low word first).
    pub volume_l: f64,
    /// m³/h (served in hundredths).
    pub flow_m3h: f64,
    pub reverse_flow: bool,
}

/// Bits of the water meter's status word besides reverse flow (bit 2): battery OK (0),
/// valve open (1), radio OK (3). Set so that a gateway reading the wrong bit sees a 1.
const WATER_STATUS_OTHER_BITS: u16 = 0b1011;
const REVERSE_FLOW_BIT: u8 = 2;

impl WaterMeterValues {
    pub const FIXED: WaterMeterValues = WaterMeterValues {
        volume_l: 123_456.0,
        flow_m3h: 1.25,
        reverse_flow: false,
    };

    pub fn write(&self, bank: &mut Bank) {
        known_good(bank.set(
            Table::Holding,
            0,
            self.volume_l,
            ValueType::U32,
            WordOrder::Cdab,
        ));
        known_good(bank.set(
            Table::Holding,
            2,
            self.flow_m3h * 100.0,
            ValueType::U16,
            WordOrder::Abcd,
        ));
        known_good(bank.set_words(Table::Holding, 3, &[WATER_STATUS_OTHER_BITS]));
        known_good(bank.set_register_bit(Table::Holding, 3, REVERSE_FLOW_BIT, self.reverse_flow));
    }
}

/// Multi-parameter water-quality sonde (holding registers from 1, f32 CDAB).
#[derive(Clone, Debug, PartialEq)]
pub struct SondeValues {
    pub ph: f64,
    /// mg/L.
    pub dissolved_oxygen: f64,
    /// mg/L.
    pub ammonia_nitrogen: f64,
    /// NTU.
    pub turbidity: f64,
    /// °C.
    pub temperature: f64,
    /// mg/L.
    pub cod: f64,
}

impl SondeValues {
    pub const FIXED: SondeValues = SondeValues {
        ph: 7.25,
        dissolved_oxygen: 6.75,
        ammonia_nitrogen: 0.375,
        turbidity: 12.5,
        temperature: 18.5,
        cod: 14.0,
    };

    pub fn write(&self, bank: &mut Bank) {
        let values = [
            self.ph,
            self.dissolved_oxygen,
            self.ammonia_nitrogen,
            self.turbidity,
            self.temperature,
            self.cod,
        ];
        for (i, v) in values.into_iter().enumerate() {
            let address = 2 * i as u16;
            known_good(bank.set(Table::Holding, address, v, ValueType::F32, WordOrder::Cdab));
        }
    }
}

/// Fixed gas detector (input registers in tenths, fault relay on discrete input 0).
#[derive(Clone, Debug, PartialEq)]
pub struct GasDetectorValues {
    /// % LEL (served in tenths).
    pub lel: f64,
    /// ppm (served in tenths).
    pub h2s: f64,
    pub fault: bool,
}

impl GasDetectorValues {
    /// Unit 4's.
    pub const FIXED: GasDetectorValues = GasDetectorValues {
        lel: 3.0,
        h2s: 0.0,
        fault: false,
    };
    /// Unit 5's: different from unit 4's so a mixed-up unit id shows.
    pub const FIXED_SECOND: GasDetectorValues = GasDetectorValues {
        lel: 2.0,
        h2s: 0.5,
        fault: false,
    };

    pub fn write(&self, bank: &mut Bank) {
        let tenths = |v: f64| v * 10.0;
        known_good(bank.set(
            Table::Input,
            0,
            tenths(self.lel),
            ValueType::U16,
            WordOrder::Abcd,
        ));
        known_good(bank.set(
            Table::Input,
            1,
            tenths(self.h2s),
            ValueType::U16,
            WordOrder::Abcd,
        ));
        known_good(bank.set_bit(Table::DiscreteInput, 0, self.fault));
        known_good(bank.set_bit(Table::DiscreteInput, 1, true));
    }
}

/// Units 1 to 5 with their fixed values.
pub fn example_sim() -> Sim {
    let sim = Sim::new();
    let mut meter = Bank::new();
    MeterValues::FIXED.write(&mut meter);
    known_good(meter.set_string(Table::Holding, METER_SERIAL_ADDRESS, METER_SERIAL, 8));
    sim.add_unit(METER_UNIT, meter);

    let mut water = Bank::new();
    WaterMeterValues::FIXED.write(&mut water);
    sim.add_unit(WATER_METER_UNIT, water);

    let mut sonde = Bank::new();
    SondeValues::FIXED.write(&mut sonde);
    sim.add_unit(SONDE_UNIT, sonde);

    for (unit, values) in GAS_DETECTOR_UNITS
        .into_iter()
        .zip([GasDetectorValues::FIXED, GasDetectorValues::FIXED_SECOND])
    {
        let mut gas = Bank::new();
        values.write(&mut gas);
        sim.add_unit(unit, gas);
    }
    sim
}

/// The layouts above use constant addresses and tables that fit: a setter can fail only on a
/// bug here, which the unit tests would show.
fn known_good<E: std::fmt::Debug>(result: Result<(), E>) {
    debug_assert!(result.is_ok(), "{result:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values_land_where_the_example_maps_read_them() {
        let sim = example_sim();
        let meter = sim.bank(METER_UNIT).unwrap();
        assert_eq!(meter.words(Table::Input, 0, 2), Ok(vec![0x4366, 0x8000]));
        assert_eq!(meter.words(Table::Input, 70, 2), Ok(vec![0x4248, 0]));
        assert_eq!(
            meter.words(Table::Holding, METER_SERIAL_ADDRESS, 8),
            Ok(b"CG-EM-0000000001"
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect())
        );
        let water = sim.bank(WATER_METER_UNIT).unwrap();
        assert_eq!(
            water.words(Table::Holding, 0, 4),
            Ok(vec![0xE240, 0x0001, 125, 0b1011])
        );
        let sonde = sim.bank(SONDE_UNIT).unwrap();
        // 7.25f32 = 0x40E80000, low word first.
        assert_eq!(sonde.words(Table::Holding, 0, 2), Ok(vec![0x0000, 0x40E8]));
        let gas = sim.bank(5).unwrap();
        assert_eq!(gas.words(Table::Input, 0, 2), Ok(vec![20, 5]));
        assert_eq!(gas.bits(Table::DiscreteInput, 0, 2), Ok(vec![false, true]));
    }

    #[test]
    fn fixed_floats_are_exact_in_f32() {
        let m = MeterValues::FIXED;
        let s = SondeValues::FIXED;
        let rest = [
            m.active_power_w,
            m.power_factor,
            m.frequency,
            m.energy_kwh,
            s.ph,
            s.dissolved_oxygen,
            s.ammonia_nitrogen,
            s.turbidity,
            s.temperature,
            s.cod,
        ];
        let all = m.voltage.iter().chain(&m.current).chain(&rest);
        for v in all {
            assert_eq!(f64::from(*v as f32), *v);
        }
    }
}
