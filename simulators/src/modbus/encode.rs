//! Tables, value types, byte/word orders and the register encoder.
//!
//! Deliberately written apart from the gateway's decoder (the crate does not depend on
//! `citygate`): the gateway's end-to-end tests check one against the other.

use std::fmt;
use std::str::FromStr;

/// The four Modbus data tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Read/write bits, function codes 1, 5, 15.
    Coil,
    /// Read-only bits, function code 2.
    DiscreteInput,
    /// Read-only registers, function code 4.
    Input,
    /// Read/write registers, function codes 3, 6, 16.
    Holding,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// The name used in the gateway's config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Table {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "coil" => Ok(Table::Coil),
            "discrete_input" => Ok(Table::DiscreteInput),
            "input" => Ok(Table::Input),
            "holding" => Ok(Table::Holding),
            _ => Err(format!(
                "unknown table {s:?} (coil, discrete_input, input or holding)"
            )),
        }
    }
}

/// Numeric register types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl ValueType {
    /// Registers one value spans.
    pub fn registers(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 4,
        }
    }
}

/// Byte and word order, named by where the bytes of the big-endian value `A B C D` land on
/// the wire; 64-bit values use the same four names (the same meaning as the gateway's
/// `order = "..."`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WordOrder {
    /// Big-endian, the Modbus standard's order.
    #[default]
    Abcd,
    /// Registers least significant first, bytes big-endian inside each.
    Cdab,
    /// Registers most significant first, the two bytes of each swapped.
    Badc,
    /// Little-endian throughout.
    Dcba,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::Abcd,
        WordOrder::Cdab,
        WordOrder::Badc,
        WordOrder::Dcba,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WordOrder::Abcd => "ABCD",
            WordOrder::Cdab => "CDAB",
            WordOrder::Badc => "BADC",
            WordOrder::Dcba => "DCBA",
        }
    }

    fn swaps_words(self) -> bool {
        matches!(self, WordOrder::Cdab | WordOrder::Dcba)
    }

    fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::Badc | WordOrder::Dcba)
    }
}

impl fmt::Display for WordOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WordOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        WordOrder::ALL
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown word order {s:?} (ABCD, CDAB, BADC or DCBA)"))
    }
}

/// The registers of `value` as `ty` in `order`. Integers are rounded to the nearest and
/// saturate at the type's bounds (a simulated value never wraps around).
pub fn encode(value: f64, ty: ValueType, order: WordOrder) -> Vec<u16> {
    let big_endian: Vec<u8> = match ty {
        ValueType::U16 => (value.round() as u16).to_be_bytes().to_vec(),
        ValueType::I16 => (value.round() as i16).to_be_bytes().to_vec(),
        ValueType::U32 => (value.round() as u32).to_be_bytes().to_vec(),
        ValueType::I32 => (value.round() as i32).to_be_bytes().to_vec(),
        ValueType::U64 => (value.round() as u64).to_be_bytes().to_vec(),
        ValueType::I64 => (value.round() as i64).to_be_bytes().to_vec(),
        ValueType::F32 => (value as f32).to_be_bytes().to_vec(),
        ValueType::F64 => value.to_be_bytes().to_vec(),
    };
    let mut words: Vec<u16> = big_endian
        .chunks_exact(2)
        .map(|b| {
            let w = u16::from_be_bytes([b[0], b[1]]);
            if order.swaps_bytes() {
                w.swap_bytes()
            } else {
                w
            }
        })
        .collect();
    if order.swaps_words() {
        words.reverse();
    }
    words
}

/// ASCII text over `registers` registers, two characters each, the first in the high byte,
/// padded with NULs. `None` if the text is not ASCII or does not fit.
pub fn encode_string(text: &str, registers: u16) -> Option<Vec<u16>> {
    let bytes = text.as_bytes();
    if !text.is_ascii() || bytes.len() > usize::from(registers) * 2 {
        return None;
    }
    Some(
        (0..usize::from(registers))
            .map(|i| {
                let hi = bytes.get(2 * i).copied().unwrap_or(0);
                let lo = bytes.get(2 * i + 1).copied().unwrap_or(0);
                u16::from_be_bytes([hi, lo])
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_230_5_in_the_four_orders() {
        // 230.5f32 is 0x43668000: A=43 B=66 C=80 D=00.
        let got: Vec<Vec<u16>> = WordOrder::ALL
            .iter()
            .map(|&o| encode(230.5, ValueType::F32, o))
            .collect();
        assert_eq!(
            got,
            vec![
                vec![0x4366, 0x8000],
                vec![0x8000, 0x4366],
                vec![0x6643, 0x0080],
                vec![0x0080, 0x6643],
            ]
        );
    }

    #[test]
    fn sixty_four_bit_orders_reverse_all_four_registers() {
        let v = f64::from_bits(0x0102_0304_0506_0708);
        assert_eq!(
            encode(v, ValueType::F64, WordOrder::Abcd),
            vec![0x0102, 0x0304, 0x0506, 0x0708]
        );
        assert_eq!(
            encode(v, ValueType::F64, WordOrder::Cdab),
            vec![0x0708, 0x0506, 0x0304, 0x0102]
        );
        assert_eq!(
            encode(v, ValueType::F64, WordOrder::Badc),
            vec![0x0201, 0x0403, 0x0605, 0x0807]
        );
        assert_eq!(
            encode(v, ValueType::F64, WordOrder::Dcba),
            vec![0x0807, 0x0605, 0x0403, 0x0201]
        );
        assert_eq!(
            encode(-2.0, ValueType::I64, WordOrder::Cdab),
            vec![0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF]
        );
    }

    #[test]
    fn integers_round_and_saturate_and_one_register_orders_only_swap_bytes() {
        assert_eq!(
            encode(123_456.0, ValueType::U32, WordOrder::Cdab),
            vec![0xE240, 0x0001]
        );
        assert_eq!(encode(-1.0, ValueType::I16, WordOrder::Abcd), vec![0xFFFF]);
        assert_eq!(
            encode(70_000.0, ValueType::U16, WordOrder::Abcd),
            vec![0xFFFF]
        );
        assert_eq!(encode(-5.0, ValueType::U32, WordOrder::Abcd), vec![0, 0]);
        assert_eq!(encode(12.6, ValueType::U16, WordOrder::Cdab), vec![13]);
        assert_eq!(
            encode(0x0102 as f64, ValueType::U16, WordOrder::Dcba),
            vec![0x0201]
        );
    }

    #[test]
    fn strings_pack_two_characters_per_register_high_byte_first() {
        assert_eq!(encode_string("CG-1", 3), Some(vec![0x4347, 0x2D31, 0]));
        assert_eq!(encode_string("abc", 1), None);
        assert_eq!(encode_string("é", 2), None);
        assert_eq!(
            "ABCD".parse::<WordOrder>().ok(),
            Some(WordOrder::Abcd),
            "names parse back"
        );
    }
}
