//! `[modbus]`: devices to poll and their register maps.
//!
//! ```toml
//! [modbus.maps.sdm630]                  # a register map, typed once from the device manual
//! registers = [
//!   { metric = "voltage_a", table = "input", address = 0, type = "f32", order = "ABCD" },
//!   { metric = "energy_total", address = "30343", type = "f32" },   # "3xxxx" notation
//! ]
//!
//! [[modbus.devices]]
//! sensor = "em-qc-001"
//! kind = "electricity_meter"
//! address = "tcp://10.0.0.5:502"        # or "rtu:///dev/ttyUSB0" with `serial = {...}`
//! unit_id = 1
//! map = "sdm630"
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Dur;

/// The whole `[modbus]` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Most TCP devices polled at the same moment. Devices on one serial line are always
    /// polled one at a time, whatever this says.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Reusable register maps by name, referenced by `devices[].map`.
    #[serde(default)]
    pub maps: BTreeMap<String, RegisterMap>,
    /// The devices to poll.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

impl Default for ModbusConfig {
    fn default() -> Self {
        ModbusConfig {
            max_concurrent: default_max_concurrent(),
            maps: BTreeMap::new(),
            devices: Vec::new(),
        }
    }
}

/// A register map: the fields to read from one model of device.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterMap {
    /// 0 (the default): addresses are the protocol addresses on the wire, as most manuals
    /// print them in hex. 1: addresses count from 1, as manuals that say "register 1" mean
    /// (the gateway subtracts 1). The "4xxxx" notation is always 1-based, whatever this says.
    #[serde(default)]
    pub address_base: u8,
    /// The fields.
    #[serde(default)]
    pub registers: Vec<FieldConfig>,
}

/// The four Modbus data tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Read/write bits, function code 1. "0xxxx" in the 5-digit notation.
    Coil,
    /// Read-only bits, function code 2. "1xxxx".
    DiscreteInput,
    /// Read-only 16-bit registers, function code 4. "3xxxx".
    Input,
    /// Read/write 16-bit registers, function code 3. "4xxxx".
    Holding,
}

impl Table {
    /// Bit tables hold coils or discrete inputs; the others hold 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }
}

/// How a field's registers become a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// One bit: a coil, a discrete input, or bit `bit` (0 = least significant) of a register.
    Bit,
    /// ASCII text over `length` registers, two characters per register, the first in the
    /// high byte (BADC and DCBA swap the two; registers are never reordered); trailing NULs
    /// and spaces are trimmed. Only for `tag` fields.
    String,
}

impl FieldType {
    /// Every type, for tests and fuzzing that must cover them all.
    pub const ALL: [FieldType; 10] = [
        FieldType::U16,
        FieldType::I16,
        FieldType::U32,
        FieldType::I32,
        FieldType::U64,
        FieldType::I64,
        FieldType::F32,
        FieldType::F64,
        FieldType::Bit,
        FieldType::String,
    ];

    /// Registers the type spans (strings: see [`FieldConfig::length`]).
    pub fn registers(self) -> u16 {
        match self {
            FieldType::U16 | FieldType::I16 | FieldType::Bit | FieldType::String => 1,
            FieldType::U32 | FieldType::I32 | FieldType::F32 => 2,
            FieldType::U64 | FieldType::I64 | FieldType::F64 => 4,
        }
    }
}

/// Byte and word order of a multi-register value, named by where the bytes of the big-endian
/// value `A B C D` land on the wire. 64-bit values use the same four names: ABCD is big-endian
/// throughout, CDAB reverses the order of the registers, BADC swaps the two bytes inside each
/// register, DCBA does both (fully little-endian). For one-register types, BADC and DCBA swap
/// the register's two bytes and ABCD and CDAB leave it alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WordOrder {
    /// Big-endian: the Modbus standard's own order.
    #[default]
    #[serde(rename = "ABCD")]
    Abcd,
    /// Little-endian words, big-endian bytes ("word swap", "float inverse").
    #[serde(rename = "CDAB")]
    Cdab,
    /// Big-endian words, little-endian bytes ("byte swap").
    #[serde(rename = "BADC")]
    Badc,
    /// Little-endian throughout.
    #[serde(rename = "DCBA")]
    Dcba,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::Abcd,
        WordOrder::Cdab,
        WordOrder::Badc,
        WordOrder::Dcba,
    ];

    /// Registers are sent least significant first.
    pub fn swaps_words(self) -> bool {
        matches!(self, WordOrder::Cdab | WordOrder::Dcba)
    }

    /// The two bytes inside each register are swapped.
    pub fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::Badc | WordOrder::Dcba)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WordOrder::Abcd => "ABCD",
            WordOrder::Cdab => "CDAB",
            WordOrder::Badc => "BADC",
            WordOrder::Dcba => "DCBA",
        }
    }
}

/// A field's address as written in config: a plain number (0-based unless the map says
/// `address_base = 1`), or a string in the 5- or 6-digit notation ("40001" or "400001" is
/// holding register 0; "30001" input register 0; "10001" discrete input 0; "00001" coil 0),
/// which names the table too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressSpec {
    Plain(u64),
    Notation(String),
}

impl Serialize for AddressSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AddressSpec::Plain(n) => s.serialize_u64(*n),
            AddressSpec::Notation(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for AddressSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = AddressSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a register address: a number, or a string like "40001""#)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AddressSpec, E> {
                Ok(AddressSpec::Plain(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AddressSpec, E> {
                u64::try_from(v)
                    .map(AddressSpec::Plain)
                    .map_err(|_| E::custom(format!("address {v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AddressSpec, E> {
                Ok(AddressSpec::Notation(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One value to read: a metric, or a tag (a string such as a serial number).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// The metric this value is, a metric of the device's kind. Set `metric` or `tag`.
    #[serde(default)]
    pub metric: Option<String>,
    /// The tag this string is (e.g. `serial`): added to the device's readings.
    #[serde(default)]
    pub tag: Option<String>,
    /// coil, discrete_input, input or holding. May be left out when the address uses the
    /// "4xxxx" notation, which names the table.
    #[serde(default)]
    pub table: Option<Table>,
    /// The first register (or bit) of the value.
    pub address: AddressSpec,
    /// u16, i16, u32, i32, u64, i64, f32, f64, bit or string. Default: u16 for registers,
    /// bit for coils and discrete inputs.
    #[serde(default, rename = "type")]
    pub ty: Option<FieldType>,
    /// Byte and word order: ABCD (default), CDAB, BADC or DCBA.
    #[serde(default)]
    pub order: WordOrder,
    /// For `type = "bit"` on a register: which bit, 0 (least significant) to 15.
    #[serde(default)]
    pub bit: Option<u8>,
    /// For `type = "string"`: how many registers (two characters each).
    #[serde(default)]
    pub length: Option<u16>,
    /// The reading is `raw * scale + offset`.
    #[serde(default = "one")]
    pub scale: f64,
    /// Added after scaling (see `scale`).
    #[serde(default)]
    pub offset: f64,
}

/// Serial line parity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// Settings of an RTU serial line. Every device on the same path must agree on them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Bits per second.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// none, even or odd.
    #[serde(default)]
    pub parity: Parity,
    /// 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Silence kept on the line between one exchange and the next. Default: the 3.5
    /// character times of the Modbus RTU spec at this baud rate (1.75 ms above 19200 baud).
    #[serde(default)]
    pub frame_delay: Option<Dur>,
}

impl Default for SerialConfig {
    fn default() -> Self {
        SerialConfig {
            baud: default_baud(),
            parity: Parity::None,
            data_bits: default_data_bits(),
            stop_bits: default_stop_bits(),
            frame_delay: None,
        }
    }
}

impl SerialConfig {
    /// The inter-frame silence: as configured, else 3.5 character times (11 bits each),
    /// and the spec's fixed 1.75 ms above 19200 baud.
    pub fn frame_delay(&self) -> std::time::Duration {
        if let Some(d) = self.frame_delay {
            return d.0;
        }
        if self.baud > 19_200 {
            return std::time::Duration::from_micros(1750);
        }
        let micros = 3.5 * 11.0 * 1_000_000.0 / f64::from(self.baud.max(1));
        std::time::Duration::from_micros(micros.ceil() as u64)
    }
}

/// One device (one unit id at one address) and how to poll it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The sensor id its readings carry. Listed under `[sensors]` or not: a device is a
    /// configured sensor either way.
    pub sensor: String,
    /// Its sensor kind, a key of `catalog`.
    pub kind: String,
    /// `tcp://host:port` (a device, or a Modbus TCP gateway in front of a serial bus) or
    /// `rtu:///dev/ttyUSB0` (a serial line; devices on the same path share it).
    pub address: String,
    /// Unit id (slave address), 0..=247 (0 only for TCP devices that ignore it; 255 is
    /// common for those too).
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Serial line settings for `rtu://` addresses. Default 9600 baud, 8N1.
    #[serde(default)]
    pub serial: Option<SerialConfig>,
    /// Time between polls; polls keep to this grid (no drift), with a little jitter. A poll
    /// that overruns its step skips the ticks it missed. Under 1ms (the timer's resolution)
    /// means back to back: each poll starts as soon as the last one is done.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// How long one request may take before it counts as failed and the connection is
    /// dropped (a late reply would otherwise be taken for the next request's).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Extra attempts of a request that timed out or lost its connection, within one poll.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// A register map from `[modbus.maps]`.
    #[serde(default)]
    pub map: Option<String>,
    /// Fields of its own, read after the map's (or instead of a map).
    #[serde(default)]
    pub registers: Vec<FieldConfig>,
    /// Address base of `registers` (see [`RegisterMap::address_base`]).
    #[serde(default)]
    pub address_base: u8,
    /// Tags added to every reading, e.g. district and site.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Merge neighbouring fields into one request. Off for picky devices: one request per
    /// field.
    #[serde(default = "yes")]
    pub merge: bool,
    /// Most unused registers (or bits) read in between to merge two fields into one request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Most registers per request (the protocol allows 125).
    #[serde(default = "default_max_registers")]
    pub max_registers: u16,
    /// Most bits per request (the protocol allows 2000).
    #[serde(default = "default_max_bits")]
    pub max_bits: u16,
    /// Polls failed in a row before the device counts as offline: a `device_offline` alert
    /// is raised and polling backs off.
    #[serde(default = "default_offline_after_failures")]
    pub offline_after_failures: u32,
    /// Longest wait between polls of an offline device (the back-off doubles from
    /// `interval` up to this).
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
}

fn default_max_concurrent() -> usize {
    64
}
fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_unit_id() -> u8 {
    1
}
fn default_interval() -> Dur {
    Dur::secs(10)
}
fn default_timeout() -> Dur {
    Dur::secs(1)
}
fn default_retries() -> u32 {
    1
}
fn default_max_gap() -> u16 {
    10
}
fn default_max_registers() -> u16 {
    125
}
fn default_max_bits() -> u16 {
    2000
}
fn default_offline_after_failures() -> u32 {
    3
}
fn default_backoff_max() -> Dur {
    Dur::secs(300)
}
fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
