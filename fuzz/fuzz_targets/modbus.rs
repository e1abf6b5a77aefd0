//! Modbus register decoding, every type, word order, bit and scale path: the codec alone
//! (`codec::modbus::decode`, checked against the byte-order definitions), and a register-map
//! entry resolved from config and decoding the registers of a read (`Field`).
//!
//! Input layout (`scripts/fuzz-seed` writes seeds in it):
//! - byte 0: type, 0..=9 = u16 i16 u32 i32 u64 i64 f32 f64 bit string, else left out;
//! - byte 1: word order, ABCD CDAB BADC DCBA (mod 4);
//! - byte 2: `bit`, 0xFF = left out;
//! - byte 3: table, coil discrete_input input holding (mod 5; 4 = left out);
//! - bytes 4..6: address, big-endian; byte 6: `length` (0 = left out);
//! - bytes 7..15 and 15..23: scale and offset, big-endian f64;
//! - the rest: the registers the device answered, big-endian u16 each (and, one bit per
//!   byte, the bits for bit tables).
#![no_main]

use citygate::codec::modbus::{decode, RegisterValue};
use citygate::sources::modbus::config::AddressSpec;
use citygate::sources::modbus::field::resolve;
use citygate::sources::modbus::{FieldConfig, FieldType, Table, WordOrder};
use libfuzzer_sys::fuzz_target;

const TABLES: [Table; 4] = [
    Table::Coil,
    Table::DiscreteInput,
    Table::Input,
    Table::Holding,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 23 {
        return;
    }
    let ty = FieldType::ALL.get(usize::from(data[0])).copied();
    let order = WordOrder::ALL[usize::from(data[1] % 4)];
    let bit = (data[2] != 0xFF).then_some(data[2]);
    let table = TABLES.get(usize::from(data[3] % 5)).copied();
    let address = u16::from_be_bytes([data[4], data[5]]);
    let length = (data[6] != 0).then_some(u16::from(data[6]));
    let scale = f64::from_be_bytes(data[7..15].try_into().unwrap_or_default());
    let offset = f64::from_be_bytes(data[15..23].try_into().unwrap_or_default());
    let rest = &data[23..];
    let words: Vec<u16> = rest
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    let bits: Vec<bool> = rest.iter().map(|b| b & 1 == 1).collect();

    check_codec(&words, ty.unwrap_or(FieldType::U16), order, bit);

    let config = FieldConfig {
        metric: Some("voltage_a".into()),
        tag: None,
        table,
        address: AddressSpec::Plain(u64::from(address)),
        ty,
        order,
        bit,
        length,
        scale,
        offset,
    };
    let tag_config = FieldConfig {
        metric: None,
        tag: Some("serial".into()),
        ..config.clone()
    };
    for config in [config, tag_config] {
        check_field(&config, &words, &bits);
    }
});

fn registers_of(ty: FieldType) -> Option<usize> {
    match ty {
        FieldType::U16 | FieldType::I16 | FieldType::Bit => Some(1),
        FieldType::U32 | FieldType::I32 | FieldType::F32 => Some(2),
        FieldType::U64 | FieldType::I64 | FieldType::F64 => Some(4),
        FieldType::String => None,
    }
}

/// The same value as the device would send it in big-endian (ABCD) order, from the
/// definitions on `WordOrder`: CDAB reverses the registers, BADC swaps the bytes in each,
/// DCBA does both. Strings are never reordered, only byte-swapped.
fn as_abcd(words: &[u16], ty: FieldType, order: WordOrder) -> Vec<u16> {
    let reorder = matches!(order, WordOrder::Cdab | WordOrder::Dcba) && ty != FieldType::String;
    let swap = matches!(order, WordOrder::Badc | WordOrder::Dcba);
    let mut out: Vec<u16> = words
        .iter()
        .map(|w| if swap { w.swap_bytes() } else { *w })
        .collect();
    if reorder {
        out.reverse();
    }
    out
}

fn same(a: &RegisterValue, b: &RegisterValue) -> bool {
    match (a, b) {
        (RegisterValue::Number(x), RegisterValue::Number(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

fn check_codec(words: &[u16], ty: FieldType, order: WordOrder, bit: Option<u8>) {
    let got = decode(words, ty, order, bit);
    // Decoding in `order` is decoding the big-endian rearrangement in ABCD.
    let reference = decode(&as_abcd(words, ty, order), ty, WordOrder::Abcd, bit);
    match (&got, &reference) {
        (Ok(a), Ok(b)) => assert!(same(a, b), "{ty:?} {order:?} {words:04X?}: {a:?} vs {b:?}"),
        (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason()),
        _ => panic!("{ty:?} {order:?} {words:04X?}: {got:?} vs ABCD {reference:?}"),
    }
    let Ok(value) = got else {
        return;
    };
    if let Some(n) = registers_of(ty) {
        assert_eq!(
            words.len(),
            n,
            "{ty:?} decoded from {} registers",
            words.len()
        );
    }
    match (ty, value) {
        (FieldType::String, RegisterValue::Text(text)) => {
            assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text:?}");
            assert!(!text.ends_with(' '), "padding left on {text:?}");
            assert!(text.len() <= words.len() * 2);
        }
        (FieldType::String, other) => panic!("a string decoded as {other:?}"),
        (_, RegisterValue::Text(t)) => panic!("{ty:?} decoded as text {t:?}"),
        (FieldType::F32 | FieldType::F64, RegisterValue::Number(_)) => {}
        (FieldType::Bit, RegisterValue::Number(n)) => assert!(n == 0.0 || n == 1.0, "bit {n}"),
        (_, RegisterValue::Number(n)) => {
            // Integers widen to f64 exactly (64-bit ones to the nearest f64).
            assert!(n.is_finite() && n.fract() == 0.0, "{ty:?} gave {n}");
            let (lo, hi) = match ty {
                FieldType::U16 => (0.0, 65535.0),
                FieldType::I16 => (-32768.0, 32767.0),
                FieldType::U32 => (0.0, 4_294_967_295.0),
                FieldType::I32 => (-2_147_483_648.0, 2_147_483_647.0),
                FieldType::U64 => (0.0, 18_446_744_073_709_551_615.0),
                _ => (-9_223_372_036_854_775_808.0, 9_223_372_036_854_775_807.0),
            };
            assert!((lo..=hi).contains(&n), "{ty:?} gave {n}");
        }
    }
}

fn check_field(config: &FieldConfig, words: &[u16], bits: &[bool]) {
    let Ok(field) = resolve(config, 0) else {
        return;
    };
    assert!(field.count >= 1, "a field spanning nothing: {field:?}");
    assert!(
        u32::from(field.address) + u32::from(field.count) <= 1 << 16,
        "past the last address: {field:?}"
    );
    let take = usize::from(field.count).min(words.len());
    let registers = &words[..take];
    if field.table.is_bits() {
        let one = &bits[..bits.len().min(1)];
        if let Ok(v) = field.decode_bits(one) {
            assert_eq!(one.len(), 1);
            let raw = if one[0] { 1.0 } else { 0.0 };
            let want = raw * field.scale + field.offset;
            assert!(same(&v, &RegisterValue::Number(want)), "{v:?} vs {want}");
        }
        return;
    }
    match field.decode_words(registers) {
        Ok(value) => {
            assert_eq!(registers.len(), usize::from(field.count));
            let raw = decode(registers, field.ty, field.order, field.bit)
                .unwrap_or_else(|e| panic!("the field decoded what the codec refuses: {e}"));
            let want = match raw {
                RegisterValue::Number(n) => RegisterValue::Number(n * field.scale + field.offset),
                text => text,
            };
            assert!(same(&value, &want), "{value:?} vs {want:?}");
        }
        Err(e) => assert!(!e.reason().is_empty()),
    }
}
