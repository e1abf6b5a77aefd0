//! Modbus register decoding: registers (or bits) in, a number or a string out.
//!
//! The byte and word orders are the ones documented on [`WordOrder`]; `docs/modbus-byte-order.md`
//! shows the same four bytes read all four ways. Slicing a field out of a read and applying
//! its scale happen in [`crate::sources::modbus::Field`]; this module only turns the exact
//! registers of one value into that value.

use crate::sources::modbus::config::{FieldType, WordOrder};

/// A decoded field: a number for metrics, text for string tags.
#[derive(Clone, Debug, PartialEq)]
pub enum RegisterValue {
    /// Every numeric type widens to f64. 64-bit integers above 2^53 lose their lowest bits,
    /// which is below any meter's resolution.
    Number(f64),
    Text(String),
}

/// Why registers could not be decoded into a field's value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RegisterError {
    /// The device answered with fewer (or more) registers or bits than the type spans.
    #[error("{ty} needs {expected} {unit}, got {got}")]
    WrongCount {
        ty: &'static str,
        expected: usize,
        got: usize,
        unit: &'static str,
    },

    #[error("type bit on a register needs `bit`, 0 (least significant) to 15")]
    MissingBit,

    #[error("bit {bit} is out of range: a register has bits 0 to 15")]
    BitOutOfRange { bit: u8 },

    #[error("`bit` ({bit}) is only for type bit, not {ty}")]
    UnexpectedBit { bit: u8, ty: &'static str },

    /// `position` counts characters from 0, after the byte order is applied.
    #[error("string byte 0x{byte:02X} at position {position} is not printable ASCII")]
    BadStringByte { byte: u8, position: usize },
}

impl RegisterError {
    /// A short stable code for metrics labels and dead letters.
    pub fn reason(&self) -> &'static str {
        match self {
            RegisterError::WrongCount { .. } => "wrong_register_count",
            RegisterError::MissingBit => "missing_bit",
            RegisterError::BitOutOfRange { .. } => "bit_out_of_range",
            RegisterError::UnexpectedBit { .. } => "unexpected_bit",
            RegisterError::BadStringByte { .. } => "bad_string_byte",
        }
    }

    /// Every reason code, for pre-registering metrics and for the docs.
    pub const REASONS: [&'static str; 5] = [
        "wrong_register_count",
        "missing_bit",
        "bit_out_of_range",
        "unexpected_bit",
        "bad_string_byte",
    ];
}

/// The name config uses for a type, as error messages quote it.
pub fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::U16 => "u16",
        FieldType::I16 => "i16",
        FieldType::U32 => "u32",
        FieldType::I32 => "i32",
        FieldType::U64 => "u64",
        FieldType::I64 => "i64",
        FieldType::F32 => "f32",
        FieldType::F64 => "f64",
        FieldType::Bit => "bit",
        FieldType::String => "string",
    }
}

/// Decodes the registers of one value from a register table (input or holding).
///
/// `words` must be exactly the value's registers, in the order the device sent them: 1 for
/// 16-bit types and bits, 2 for 32-bit, 4 for 64-bit, any number from 1 for strings. `bit`
/// is required for [`FieldType::Bit`] and refused for every other type. NaN and infinite
/// floats come back as numbers: rejecting them is the pipeline's job, with its own reason.
pub fn decode(
    words: &[u16],
    ty: FieldType,
    order: WordOrder,
    bit: Option<u8>,
) -> Result<RegisterValue, RegisterError> {
    match (ty, bit) {
        (FieldType::Bit, None) => return Err(RegisterError::MissingBit),
        (FieldType::Bit, Some(b)) if b > 15 => return Err(RegisterError::BitOutOfRange { bit: b }),
        (FieldType::Bit, Some(_)) => {}
        (other, Some(b)) => {
            return Err(RegisterError::UnexpectedBit {
                bit: b,
                ty: type_name(other),
            })
        }
        (_, None) => {}
    }
    let number = match ty {
        FieldType::U16 => f64::from(u16::from_be_bytes(fixed(words, ty, order)?)),
        FieldType::I16 => f64::from(i16::from_be_bytes(fixed(words, ty, order)?)),
        FieldType::U32 => f64::from(u32::from_be_bytes(fixed(words, ty, order)?)),
        FieldType::I32 => f64::from(i32::from_be_bytes(fixed(words, ty, order)?)),
        FieldType::F32 => f64::from(f32::from_be_bytes(fixed(words, ty, order)?)),
        FieldType::U64 => u64::from_be_bytes(fixed(words, ty, order)?) as f64,
        FieldType::I64 => i64::from_be_bytes(fixed(words, ty, order)?) as f64,
        FieldType::F64 => f64::from_be_bytes(fixed(words, ty, order)?),
        FieldType::Bit => {
            let word = u16::from_be_bytes(fixed(words, ty, order)?);
            f64::from((word >> bit.unwrap_or(0)) & 1)
        }
        FieldType::String => {
            if words.is_empty() {
                return Err(wrong_count(ty, 1, 0, "register"));
            }
            return decode_string(words, order).map(RegisterValue::Text);
        }
    };
    Ok(RegisterValue::Number(number))
}

/// Decodes one coil or discrete input: 1.0 when set, 0.0 when not.
pub fn decode_bits(bits: &[bool]) -> Result<RegisterValue, RegisterError> {
    match bits {
        [b] => Ok(RegisterValue::Number(if *b { 1.0 } else { 0.0 })),
        _ => Err(wrong_count(FieldType::Bit, 1, bits.len(), "bit")),
    }
}

/// The reading of a raw value: `raw * scale + offset`.
pub fn scaled(raw: f64, scale: f64, offset: f64) -> f64 {
    raw * scale + offset
}

fn wrong_count(ty: FieldType, expected: usize, got: usize, unit: &'static str) -> RegisterError {
    RegisterError::WrongCount {
        ty: type_name(ty),
        expected,
        got,
        unit,
    }
}

/// The value's `N` bytes most significant first (`A B C D ...`), undoing the device's order,
/// or the count error when `words` is not exactly `N / 2` registers.
fn fixed<const N: usize>(
    words: &[u16],
    ty: FieldType,
    order: WordOrder,
) -> Result<[u8; N], RegisterError> {
    let n = N / 2;
    if words.len() != n {
        let unit = if n == 1 { "register" } else { "registers" };
        return Err(wrong_count(ty, n, words.len(), unit));
    }
    let mut out = [0u8; N];
    for (i, slot) in out.chunks_exact_mut(2).enumerate() {
        let word = if order.swaps_words() {
            words[n - 1 - i]
        } else {
            words[i]
        };
        let pair = if order.swaps_bytes() {
            word.to_le_bytes()
        } else {
            word.to_be_bytes()
        };
        slot.copy_from_slice(&pair);
    }
    Ok(out)
}

/// Two characters per register. The word order does not reorder registers of a string (text
/// is read first register first on every device we know); only BADC/DCBA swap each pair.
fn decode_string(words: &[u16], order: WordOrder) -> Result<String, RegisterError> {
    let mut bytes: Vec<u8> = Vec::with_capacity(words.len() * 2);
    for w in words {
        if order.swaps_bytes() {
            bytes.extend_from_slice(&w.to_le_bytes());
        } else {
            bytes.extend_from_slice(&w.to_be_bytes());
        }
    }
    // Devices pad fixed-width text with NULs or spaces; only the padding at the end is
    // dropped, so a NUL inside the text is still reported.
    let text_len = bytes
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .map_or(0, |i| i + 1);
    bytes.truncate(text_len);
    if let Some(position) = bytes.iter().position(|b| !(0x20..0x7f).contains(b)) {
        return Err(RegisterError::BadStringByte {
            byte: bytes[position],
            position,
        });
    }
    // Every byte was checked to be printable ASCII, so this cannot fail; the fallback keeps
    // it panic-free anyway.
    Ok(String::from_utf8(bytes).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(words: &[u16], ty: FieldType, order: WordOrder) -> f64 {
        match decode(words, ty, order, None) {
            Ok(RegisterValue::Number(n)) => n,
            other => panic!("{ty:?} {order:?} {words:04X?}: {other:?}"),
        }
    }

    #[test]
    fn f32_230_5_in_each_order() {
        // 230.5 is 0x43668000 as an IEEE 754 single.
        let cases = [
            (WordOrder::Abcd, [0x4366, 0x8000]),
            (WordOrder::Cdab, [0x8000, 0x4366]),
            (WordOrder::Badc, [0x6643, 0x0080]),
            (WordOrder::Dcba, [0x0080, 0x6643]),
        ];
        for (order, words) in cases {
            assert_eq!(number(&words, FieldType::F32, order), 230.5, "{order:?}");
        }
    }

    #[test]
    fn one_register_types_swap_bytes_only_for_badc_and_dcba() {
        assert_eq!(number(&[0x1234], FieldType::U16, WordOrder::Abcd), 4660.0);
        assert_eq!(number(&[0x1234], FieldType::U16, WordOrder::Cdab), 4660.0);
        assert_eq!(number(&[0x3412], FieldType::U16, WordOrder::Badc), 4660.0);
        assert_eq!(number(&[0x3412], FieldType::U16, WordOrder::Dcba), 4660.0);
        assert_eq!(number(&[0xFFFE], FieldType::I16, WordOrder::Abcd), -2.0);
        assert_eq!(number(&[0xFEFF], FieldType::I16, WordOrder::Dcba), -2.0);
    }

    #[test]
    fn sixty_four_bit_cdab_reverses_all_four_registers() {
        // 0x0001020304050607
        let words = [0x0607, 0x0405, 0x0203, 0x0001];
        assert_eq!(
            number(&words, FieldType::U64, WordOrder::Cdab),
            283_686_952_306_183.0
        );
    }

    #[test]
    fn nan_and_infinity_are_numbers_not_errors() {
        let nan = number(&[0x7FC0, 0x0000], FieldType::F32, WordOrder::Abcd);
        assert!(nan.is_nan());
        let inf = number(&[0x7F80, 0x0000], FieldType::F32, WordOrder::Abcd);
        assert_eq!(inf, f64::INFINITY);
    }

    #[test]
    fn bits_of_a_register_count_from_the_least_significant() {
        let bit = |b, order| decode(&[0x0004], FieldType::Bit, order, Some(b));
        assert_eq!(bit(2, WordOrder::Abcd), Ok(RegisterValue::Number(1.0)));
        assert_eq!(bit(1, WordOrder::Abcd), Ok(RegisterValue::Number(0.0)));
        // Byte-swapped, 0x0004 is 0x0400: bit 10.
        assert_eq!(bit(10, WordOrder::Badc), Ok(RegisterValue::Number(1.0)));
        assert_eq!(bit(2, WordOrder::Badc), Ok(RegisterValue::Number(0.0)));
    }

    #[test]
    fn bit_arguments_are_checked() {
        let reason = |r: Result<RegisterValue, RegisterError>| r.map_err(|e| e.reason());
        assert_eq!(
            reason(decode(&[1], FieldType::Bit, WordOrder::Abcd, None)),
            Err("missing_bit")
        );
        assert_eq!(
            reason(decode(&[1], FieldType::Bit, WordOrder::Abcd, Some(16))),
            Err("bit_out_of_range")
        );
        assert_eq!(
            reason(decode(&[1], FieldType::U16, WordOrder::Abcd, Some(0))),
            Err("unexpected_bit")
        );
    }

    #[test]
    fn wrong_register_count_names_the_type() {
        let err = decode(&[0x4366], FieldType::F32, WordOrder::Abcd, None).unwrap_err();
        assert_eq!(err.to_string(), "f32 needs 2 registers, got 1");
        assert_eq!(err.reason(), "wrong_register_count");
        let err = decode(&[], FieldType::String, WordOrder::Abcd, None).unwrap_err();
        assert_eq!(err.to_string(), "string needs 1 register, got 0");
        let err = decode_bits(&[true, false]).unwrap_err();
        assert_eq!(err.to_string(), "bit needs 1 bit, got 2");
    }

    #[test]
    fn strings_trim_trailing_padding_only() {
        // "AB C" then a NUL pad and a space pad.
        let words = [0x4142, 0x2043, 0x0000, 0x2020];
        assert_eq!(
            decode(&words, FieldType::String, WordOrder::Abcd, None),
            Ok(RegisterValue::Text("AB C".into()))
        );
        assert_eq!(
            decode(&[0x4241, 0x4320], FieldType::String, WordOrder::Dcba, None),
            Ok(RegisterValue::Text("AB C".into()))
        );
        assert_eq!(
            decode(&[0x0000], FieldType::String, WordOrder::Abcd, None),
            Ok(RegisterValue::Text(String::new()))
        );
    }

    #[test]
    fn a_nul_inside_a_string_is_reported() {
        let err = decode(&[0x4100, 0x4200], FieldType::String, WordOrder::Abcd, None).unwrap_err();
        assert_eq!(
            err,
            RegisterError::BadStringByte {
                byte: 0,
                position: 1
            }
        );
    }

    #[test]
    fn every_reason_is_listed() {
        let all = [
            wrong_count(FieldType::U16, 1, 0, "register"),
            RegisterError::MissingBit,
            RegisterError::BitOutOfRange { bit: 16 },
            RegisterError::UnexpectedBit { bit: 0, ty: "u16" },
            RegisterError::BadStringByte {
                byte: 0,
                position: 0,
            },
        ];
        let reasons: Vec<_> = all.iter().map(RegisterError::reason).collect();
        assert_eq!(reasons, RegisterError::REASONS);
    }

    #[test]
    fn scaled_is_raw_times_scale_plus_offset() {
        assert_eq!(scaled(461.0, 0.5, 0.0), 230.5);
        assert_eq!(scaled(100.0, 0.5, -40.0), 10.0);
    }
}
