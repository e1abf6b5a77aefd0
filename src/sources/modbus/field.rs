//! A register-map entry resolved from config: the table, the 0-based protocol address, how
//! many registers (or bits) it spans, and how to decode it.

use compact_str::CompactString;

use super::config::{FieldConfig, FieldType, Table, WordOrder};

/// What a field's value becomes.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A reading of this metric.
    Metric(CompactString),
    /// A tag on the device's readings (strings only).
    Tag(CompactString),
}

/// One resolved field.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub target: Target,
    pub table: Table,
    /// 0-based protocol address of the first register or bit.
    pub address: u16,
    /// Registers (or bits, for the bit tables) it spans.
    pub count: u16,
    pub ty: FieldType,
    pub order: WordOrder,
    /// For `bit` fields on registers: which bit, 0 = least significant.
    pub bit: Option<u8>,
    pub scale: f64,
    pub offset: f64,
}

// TODO(helper): `pub fn resolve(f: &FieldConfig, address_base: u8) -> Result<Field, Vec<(String, String)>>`
// returning every problem as (key under the field, message), and the "4xxxx" notation parser.
#[allow(dead_code)]
fn _unused(_: &FieldConfig) {}
