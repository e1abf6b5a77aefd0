//! A register-map entry resolved from config: the table, the 0-based protocol address, how
//! many registers (or bits) it spans, and how to decode it.
//!
//! [`resolve`] checks everything about one entry that does not need the catalog (whether the
//! metric belongs to the device's kind is the config validator's business) and reports every
//! problem at once, keyed by the entry's own config keys.

use compact_str::CompactString;

use super::config::{AddressSpec, FieldConfig, FieldType, Table, WordOrder};
use crate::codec::modbus::{self, type_name, RegisterError, RegisterValue};

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

/// A config problem: the key under the field (`address`, `bit`, ...) and what is wrong.
pub type Problem = (String, String);

/// The most registers a string may span: one read request's worth.
pub const MAX_STRING_REGISTERS: u16 = 125;

impl Field {
    /// Decodes this field from exactly its registers (input and holding tables) and applies
    /// scale and offset to numbers.
    pub fn decode_words(&self, words: &[u16]) -> Result<RegisterValue, RegisterError> {
        self.check_count(words.len(), "register")?;
        let value = modbus::decode(words, self.ty, self.order, self.bit)?;
        Ok(self.scale_value(value))
    }

    /// Decodes this field from exactly its bits (coil and discrete input tables) and applies
    /// scale and offset.
    pub fn decode_bits(&self, bits: &[bool]) -> Result<RegisterValue, RegisterError> {
        let value = modbus::decode_bits(bits)?;
        Ok(self.scale_value(value))
    }

    // A string's register count is only known from its config, so the codec cannot check it.
    fn check_count(&self, got: usize, unit: &'static str) -> Result<(), RegisterError> {
        let expected = usize::from(self.count);
        if got == expected {
            return Ok(());
        }
        Err(RegisterError::WrongCount {
            ty: type_name(self.ty),
            expected,
            got,
            unit: if expected == 1 { unit } else { plural(unit) },
        })
    }

    fn scale_value(&self, value: RegisterValue) -> RegisterValue {
        match value {
            RegisterValue::Number(raw) => {
                RegisterValue::Number(modbus::scaled(raw, self.scale, self.offset))
            }
            text => text,
        }
    }
}

fn plural(unit: &'static str) -> &'static str {
    match unit {
        "bit" => "bits",
        _ => "registers",
    }
}

/// Resolves one register-map entry. `address_base` is the map's (or device's) base for plain
/// addresses: 0 or 1. Returns every problem found, each keyed by the entry's config key.
pub fn resolve(f: &FieldConfig, address_base: u8) -> Result<Field, Vec<Problem>> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut problem = |key: &str, message: String| problems.push((key.to_string(), message));

    let target = resolve_target(f, &mut problem);
    let (table, address) = resolve_address(f, address_base, &mut problem);

    let ty = f.ty.unwrap_or(match table {
        Some(t) if t.is_bits() => FieldType::Bit,
        _ => FieldType::U16,
    });
    check_type(f, ty, table, &target, &mut problem);
    let count = resolve_count(f, ty, &mut problem);

    if let (Some(address), Some(count)) = (address, count) {
        let end = u32::from(address) + u32::from(count);
        if end > 1 << 16 {
            problem(
                "address",
                format!(
                    "{} at {address} spans {count} {}, past the last address 65535",
                    type_name(ty),
                    if table.is_some_and(Table::is_bits) {
                        "bits"
                    } else {
                        "registers"
                    }
                ),
            );
        }
    }
    let scale_ok = f.scale.is_finite() && f.scale != 0.0;
    if !scale_ok {
        problem(
            "scale",
            format!(
                "scale must be a finite number other than 0, not {}",
                f.scale
            ),
        );
    }
    if !f.offset.is_finite() {
        problem(
            "offset",
            format!("offset must be a finite number, not {}", f.offset),
        );
    }
    let scaled = f.scale != 1.0 || f.offset != 0.0;
    if ty == FieldType::String && scale_ok && f.offset.is_finite() && scaled {
        problem(
            "scale",
            "a string has no scale or offset: they apply to numbers".to_string(),
        );
    }

    match (target, table, address, count) {
        (Some(target), Some(table), Some(address), Some(count)) if problems.is_empty() => {
            Ok(Field {
                target,
                table,
                address,
                count,
                ty,
                order: if table.is_bits() {
                    WordOrder::Abcd
                } else {
                    f.order
                },
                bit: f.bit,
                scale: f.scale,
                offset: f.offset,
            })
        }
        _ => Err(problems),
    }
}

/// Resolves a list of entries (a map's `registers`, or a device's), keying each problem
/// `registers[i].key`. Also reports a metric or tag read by two entries, which would give two
/// different values for the same series.
pub fn resolve_list(fields: &[FieldConfig], address_base: u8) -> Result<Vec<Field>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut resolved = Vec::with_capacity(fields.len());
    if address_base > 1 {
        problems.push((
            "address_base".to_string(),
            format!("address_base is 0 or 1, not {address_base}"),
        ));
    }
    for (i, f) in fields.iter().enumerate() {
        match resolve(f, address_base) {
            Ok(field) => {
                let earlier = resolved
                    .iter()
                    .find(|(_, other): &&(usize, Field)| other.target == field.target);
                if let Some((first, _)) = earlier {
                    let (what, name) = match &field.target {
                        Target::Metric(m) => ("metric", m),
                        Target::Tag(t) => ("tag", t),
                    };
                    problems.push((
                        format!("registers[{i}].{what}"),
                        format!("{what} {name:?} is already read by registers[{first}]"),
                    ));
                }
                resolved.push((i, field));
            }
            // The base problem is reported once above, not once per entry.
            Err(ps) => problems.extend(
                ps.into_iter()
                    .filter(|(key, _)| key != "address_base")
                    .map(|(key, message)| (format!("registers[{i}].{key}"), message)),
            ),
        }
    }
    if problems.is_empty() {
        Ok(resolved.into_iter().map(|(_, f)| f).collect())
    } else {
        Err(problems)
    }
}

fn resolve_target(f: &FieldConfig, problem: &mut impl FnMut(&str, String)) -> Option<Target> {
    match (&f.metric, &f.tag) {
        (Some(_), Some(_)) => {
            problem(
                "tag",
                "set `metric` or `tag`, not both: one entry is one value".to_string(),
            );
            None
        }
        (None, None) => {
            problem(
                "metric",
                "set `metric` (a metric of the device's kind) or `tag` (a string tag)".to_string(),
            );
            None
        }
        (Some(m), None) if m.trim().is_empty() => {
            problem("metric", "metric is empty".to_string());
            None
        }
        (None, Some(t)) if t.trim().is_empty() => {
            problem("tag", "tag is empty".to_string());
            None
        }
        (Some(m), None) => Some(Target::Metric(m.as_str().into())),
        (None, Some(t)) => Some(Target::Tag(t.as_str().into())),
    }
}

/// The table and 0-based address, from `table` and `address` (and the base).
fn resolve_address(
    f: &FieldConfig,
    address_base: u8,
    problem: &mut impl FnMut(&str, String),
) -> (Option<Table>, Option<u16>) {
    match &f.address {
        AddressSpec::Notation(text) => match parse_notation(text) {
            Ok((table, address)) => {
                if let Some(explicit) = f.table.filter(|&t| t != table) {
                    problem(
                        "table",
                        format!(
                            "address {text:?} names the {} table, but table = {:?}; \
                             leave `table` out or make them agree",
                            table.as_str(),
                            explicit.as_str()
                        ),
                    );
                    return (None, Some(address));
                }
                (Some(table), Some(address))
            }
            Err(message) => {
                problem("address", message);
                (f.table, None)
            }
        },
        AddressSpec::Plain(n) => {
            let table = f.table;
            if table.is_none() {
                problem(
                    "table",
                    format!(
                        "address {n} needs a table: set table = \"coil\", \"discrete_input\", \
                         \"input\" or \"holding\", or write the address as a string in the \
                         5-digit notation (\"4xxxx\" for holding registers)"
                    ),
                );
            }
            let address = match address_base {
                0 => u16::try_from(*n).map_err(|_| {
                    format!("address {n} is past the last address 65535 (address_base = 0)")
                }),
                1 if *n == 0 => Err("address 0 with address_base = 1: addresses count from 1, \
                     so the first register is 1"
                    .to_string()),
                1 => u16::try_from(n - 1).map_err(|_| {
                    format!("address {n} is past the last address 65536 (address_base = 1)")
                }),
                other => {
                    problem(
                        "address_base",
                        format!("address_base is 0 or 1, not {other}"),
                    );
                    return (table, None);
                }
            };
            match address {
                Ok(a) => (table, Some(a)),
                Err(message) => {
                    problem("address", message);
                    (table, None)
                }
            }
        }
    }
}

/// Parses the 5- or 6-digit notation: the first digit names the table (0 coil, 1 discrete
/// input, 3 input register, 4 holding register), the rest is the 1-based address.
pub fn parse_notation(text: &str) -> Result<(Table, u16), String> {
    let well_formed = matches!(text.len(), 5 | 6) && text.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(format!(
            "{text:?} is not a register address: write a number (0-based, or 1-based with \
             address_base = 1), or 5 or 6 digits such as \"40001\" or \"400001\""
        ));
    }
    let (lead, rest) = text.split_at(1);
    let table = match lead {
        "0" => Table::Coil,
        "1" => Table::DiscreteInput,
        "3" => Table::Input,
        "4" => Table::Holding,
        _ => {
            return Err(format!(
                "{text:?}: no table starts with {lead}; the first digit is 0 (coil), \
                 1 (discrete input), 3 (input register) or 4 (holding register)"
            ))
        }
    };
    // At most five digits, so this always fits.
    let one_based: u32 = rest.parse().unwrap_or(0);
    if one_based == 0 {
        return Err(format!(
            "{text:?}: the notation counts from 1 (\"{lead}{}1\" is the first {})",
            "0".repeat(rest.len() - 1),
            table_words(table)
        ));
    }
    u16::try_from(one_based - 1)
        .map(|a| (table, a))
        .map_err(|_| {
            format!(
                "{text:?} is past the last {} {lead}65536",
                table_words(table)
            )
        })
}

/// A table as prose names it.
fn table_words(table: Table) -> &'static str {
    match table {
        Table::Coil => "coil",
        Table::DiscreteInput => "discrete input",
        Table::Input => "input register",
        Table::Holding => "holding register",
    }
}

fn check_type(
    f: &FieldConfig,
    ty: FieldType,
    table: Option<Table>,
    target: &Option<Target>,
    problem: &mut impl FnMut(&str, String),
) {
    let bit_table = table.filter(|t| t.is_bits());
    if let Some(t) = bit_table {
        if ty != FieldType::Bit {
            problem(
                "type",
                format!(
                    "a {} is a single bit: type must be \"bit\" (the default), not {:?}",
                    table_words(t),
                    type_name(ty)
                ),
            );
        }
        if f.bit.is_some() {
            problem(
                "bit",
                format!(
                    "`bit` picks a bit of a register; a {} is one bit already",
                    table_words(t)
                ),
            );
        }
        if f.order != WordOrder::Abcd {
            problem(
                "order",
                format!("a {} is one bit and has no byte order", table_words(t)),
            );
        }
    } else {
        match (ty, f.bit) {
            (FieldType::Bit, None) => problem(
                "bit",
                "type \"bit\" on a register needs `bit`, 0 (least significant) to 15".to_string(),
            ),
            (FieldType::Bit, Some(b)) if b > 15 => problem(
                "bit",
                format!("bit {b} is out of range: a register has bits 0 to 15"),
            ),
            (FieldType::Bit, Some(_)) | (_, None) => {}
            (other, Some(_)) => problem(
                "bit",
                format!("`bit` is only for type \"bit\", not {:?}", type_name(other)),
            ),
        }
    }
    match (target, ty) {
        (Some(Target::Metric(_)), FieldType::String) => problem(
            "type",
            "a string can only be a tag: write tag = \"...\" instead of metric".to_string(),
        ),
        (Some(Target::Tag(_)), t) if t != FieldType::String => problem(
            "type",
            format!(
                "a tag is text: type must be \"string\" (with `length`), not {:?}",
                type_name(t)
            ),
        ),
        _ => {}
    }
}

/// Registers (or bits) the field spans.
fn resolve_count(
    f: &FieldConfig,
    ty: FieldType,
    problem: &mut impl FnMut(&str, String),
) -> Option<u16> {
    match (ty, f.length) {
        (FieldType::String, None) => {
            problem(
                "length",
                format!(
                    "a string needs `length`, its number of registers \
                     (two characters each), 1 to {MAX_STRING_REGISTERS}"
                ),
            );
            None
        }
        (FieldType::String, Some(n)) if n == 0 || n > MAX_STRING_REGISTERS => {
            problem(
                "length",
                format!("length {n} is out of range 1 to {MAX_STRING_REGISTERS} registers"),
            );
            None
        }
        (FieldType::String, Some(n)) => Some(n),
        (_, Some(_)) => {
            problem(
                "length",
                format!(
                    "`length` is only for strings; a {} spans {} register(s)",
                    type_name(ty),
                    ty.registers()
                ),
            );
            Some(ty.registers())
        }
        (_, None) => Some(ty.registers()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(toml_entry: &str) -> FieldConfig {
        #[derive(serde::Deserialize)]
        struct Wrap {
            f: FieldConfig,
        }
        let text = format!("f = {toml_entry}");
        let wrap: Wrap = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .unwrap_or_else(|e| panic!("{toml_entry}: {e}"));
        wrap.f
    }

    fn ok(entry: &str, base: u8) -> Field {
        resolve(&field(entry), base).unwrap_or_else(|p| panic!("{entry}: {p:?}"))
    }

    fn problems(entry: &str, base: u8) -> Vec<(String, String)> {
        match resolve(&field(entry), base) {
            Ok(f) => panic!("{entry} resolved to {f:?}"),
            Err(p) => p,
        }
    }

    fn keys(entry: &str, base: u8) -> Vec<String> {
        problems(entry, base).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn notation_names_table_and_counts_from_one() {
        assert_eq!(parse_notation("40001"), Ok((Table::Holding, 0)));
        assert_eq!(parse_notation("400001"), Ok((Table::Holding, 0)));
        assert_eq!(parse_notation("30343"), Ok((Table::Input, 342)));
        assert_eq!(parse_notation("10001"), Ok((Table::DiscreteInput, 0)));
        assert_eq!(parse_notation("00001"), Ok((Table::Coil, 0)));
        assert_eq!(parse_notation("49999"), Ok((Table::Holding, 9998)));
        assert_eq!(parse_notation("465536"), Ok((Table::Holding, 65535)));
        for bad in [
            "465537", "40000", "400000", "20001", "4001", "4000001", "4x001", "", "+4000",
        ] {
            assert!(parse_notation(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn notation_ignores_address_base_and_fills_in_the_table() {
        let f = ok(
            r#"{ metric = "flow_rate", address = "40003", scale = 0.01 }"#,
            1,
        );
        assert_eq!(f.table, Table::Holding);
        assert_eq!(f.address, 2);
        assert_eq!(f.ty, FieldType::U16);
        assert_eq!(f.count, 1);
        assert_eq!(f.scale, 0.01);
        assert_eq!(f.target, Target::Metric("flow_rate".into()));
    }

    #[test]
    fn notation_agreeing_with_table_is_fine_and_disagreeing_is_not() {
        let f = ok(
            r#"{ metric = "ph", table = "holding", address = "40011", type = "f32" }"#,
            0,
        );
        assert_eq!((f.table, f.address, f.count), (Table::Holding, 10, 2));
        let p = problems(
            r#"{ metric = "ph", table = "input", address = "40011", type = "f32" }"#,
            0,
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "table");
        assert!(p[0].1.contains("holding"), "{}", p[0].1);
    }

    #[test]
    fn plain_addresses_honour_the_base() {
        let f0 = ok(
            r#"{ metric = "ph", table = "holding", address = 1, type = "f32" }"#,
            0,
        );
        let f1 = ok(
            r#"{ metric = "ph", table = "holding", address = 1, type = "f32" }"#,
            1,
        );
        assert_eq!((f0.address, f1.address), (1, 0));
        assert_eq!(
            keys(r#"{ metric = "ph", table = "holding", address = 0 }"#, 1),
            ["address"]
        );
        assert_eq!(
            keys(r#"{ metric = "ph", table = "holding", address = 3 }"#, 2),
            ["address_base"]
        );
        let last = ok(
            r#"{ metric = "ph", table = "holding", address = 65536 }"#,
            1,
        );
        assert_eq!(last.address, 65535);
        assert_eq!(
            keys(
                r#"{ metric = "ph", table = "holding", address = 65536 }"#,
                0
            ),
            ["address"]
        );
    }

    #[test]
    fn a_plain_address_needs_a_table() {
        let p = problems(r#"{ metric = "ph", address = 3 }"#, 0);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "table");
        assert!(p[0].1.contains("holding"), "{}", p[0].1);
    }

    #[test]
    fn the_value_must_fit_below_65536() {
        ok(
            r#"{ metric = "m", table = "input", address = 65534, type = "f32" }"#,
            0,
        );
        let p = problems(
            r#"{ metric = "m", table = "input", address = 65535, type = "f32" }"#,
            0,
        );
        assert_eq!(
            p,
            [(
                "address".to_string(),
                "f32 at 65535 spans 2 registers, past the last address 65535".to_string()
            )]
        );
        assert_eq!(
            keys(
                r#"{ tag = "s", table = "holding", address = 65500, type = "string", length = 40 }"#,
                0
            ),
            ["address"]
        );
    }

    #[test]
    fn metric_xor_tag() {
        assert_eq!(keys(r#"{ table = "input", address = 0 }"#, 0), ["metric"]);
        assert_eq!(
            keys(
                r#"{ metric = "m", tag = "t", table = "holding", address = 0, type = "string", length = 2 }"#,
                0
            ),
            ["tag"]
        );
    }

    #[test]
    fn strings_are_tags_and_tags_are_strings() {
        let f = ok(
            r#"{ tag = "serial", table = "holding", address = 64512, type = "string", length = 8 }"#,
            0,
        );
        assert_eq!((f.address, f.count), (64512, 8));
        assert_eq!(f.target, Target::Tag("serial".into()));
        assert_eq!(
            keys(
                r#"{ metric = "m", table = "holding", address = 0, type = "string", length = 2 }"#,
                0
            ),
            ["type"]
        );
        assert_eq!(
            keys(r#"{ tag = "serial", table = "holding", address = 0 }"#, 0),
            ["type"]
        );
    }

    #[test]
    fn string_length_is_required_bounded_and_only_for_strings() {
        assert_eq!(
            keys(
                r#"{ tag = "s", table = "holding", address = 0, type = "string" }"#,
                0
            ),
            ["length"]
        );
        for n in [0, 126] {
            let entry = format!(
                r#"{{ tag = "s", table = "holding", address = 0, type = "string", length = {n} }}"#
            );
            assert_eq!(keys(&entry, 0), ["length"], "{n}");
        }
        ok(
            r#"{ tag = "s", table = "holding", address = 0, type = "string", length = 125 }"#,
            0,
        );
        assert_eq!(
            keys(
                r#"{ metric = "m", table = "holding", address = 0, length = 2 }"#,
                0
            ),
            ["length"]
        );
    }

    #[test]
    fn bits_of_registers() {
        let f = ok(
            r#"{ metric = "reverse_flow", address = "40004", type = "bit", bit = 2 }"#,
            0,
        );
        assert_eq!((f.address, f.count, f.bit), (3, 1, Some(2)));
        assert_eq!(
            keys(r#"{ metric = "m", address = "40004", type = "bit" }"#, 0),
            ["bit"]
        );
        assert_eq!(
            keys(
                r#"{ metric = "m", address = "40004", type = "bit", bit = 16 }"#,
                0
            ),
            ["bit"]
        );
        assert_eq!(
            keys(
                r#"{ metric = "m", address = "40004", type = "u16", bit = 1 }"#,
                0
            ),
            ["bit"]
        );
    }

    #[test]
    fn bit_tables_default_to_bit_and_take_nothing_else() {
        let f = ok(
            r#"{ metric = "fault", table = "discrete_input", address = 0 }"#,
            0,
        );
        assert_eq!((f.ty, f.count, f.bit), (FieldType::Bit, 1, None));
        let c = ok(r#"{ metric = "fault", address = "00001" }"#, 0);
        assert_eq!((c.table, c.address), (Table::Coil, 0));
        assert_eq!(
            keys(
                r#"{ metric = "m", table = "coil", address = 0, type = "u16" }"#,
                0
            ),
            ["type"]
        );
        assert_eq!(
            keys(
                r#"{ metric = "m", table = "coil", address = 0, bit = 3 }"#,
                0
            ),
            ["bit"]
        );
        assert_eq!(
            keys(r#"{ metric = "m", address = "10001", order = "DCBA" }"#, 0),
            ["order"]
        );
    }

    #[test]
    fn register_tables_default_to_u16() {
        let f = ok(
            r#"{ metric = "lel", table = "input", address = 0, scale = 0.1 }"#,
            0,
        );
        assert_eq!((f.ty, f.count), (FieldType::U16, 1));
    }

    #[test]
    fn scale_and_offset_must_be_usable() {
        assert_eq!(
            keys(
                r#"{ metric = "m", table = "input", address = 0, scale = 0.0 }"#,
                0
            ),
            ["scale"]
        );
        assert_eq!(
            keys(
                r#"{ metric = "m", table = "input", address = 0, scale = nan }"#,
                0
            ),
            ["scale"]
        );
        assert_eq!(
            keys(
                r#"{ metric = "m", table = "input", address = 0, offset = inf }"#,
                0
            ),
            ["offset"]
        );
        assert_eq!(
            keys(
                r#"{ tag = "s", table = "holding", address = 0, type = "string", length = 1, scale = 2.0 }"#,
                0
            ),
            ["scale"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let p = problems(
            r#"{ address = 3, type = "string", bit = 20, scale = 0.0, offset = -inf }"#,
            0,
        );
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["metric", "table", "bit", "length", "scale", "offset"]
        );
    }

    #[test]
    fn resolve_list_prefixes_keys_and_finds_duplicates() {
        let fields = [
            field(r#"{ metric = "ph", table = "holding", address = 0, type = "f32" }"#),
            field(r#"{ metric = "ph", table = "holding", address = 2, type = "f32" }"#),
            field(r#"{ metric = "cod", address = 4 }"#),
        ];
        let p = resolve_list(&fields, 0).unwrap_err();
        assert_eq!(
            p,
            [
                (
                    "registers[1].metric".to_string(),
                    "metric \"ph\" is already read by registers[0]".to_string()
                ),
                (
                    "registers[2].table".to_string(),
                    p[1].1.clone() // the message is checked in a_plain_address_needs_a_table
                ),
            ]
        );
        let p = resolve_list(&fields[..1], 7).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "address_base");
        let ok = resolve_list(&fields[1..2], 1).unwrap();
        assert_eq!(ok[0].address, 1);
    }

    #[test]
    fn decode_words_checks_the_count_and_scales() {
        let f = ok(
            r#"{ metric = "volume_total", address = "40001", type = "u32", order = "CDAB", scale = 0.001 }"#,
            0,
        );
        // 123456 litres = 0x0001E240, low word first.
        assert_eq!(
            f.decode_words(&[0xE240, 0x0001]),
            Ok(RegisterValue::Number(123.456))
        );
        assert_eq!(
            f.decode_words(&[0xE240]).map_err(|e| e.to_string()),
            Err("u32 needs 2 registers, got 1".to_string())
        );
        let s = ok(
            r#"{ tag = "serial", table = "holding", address = 0, type = "string", length = 2 }"#,
            0,
        );
        assert_eq!(
            s.decode_words(&[0x4142]).map_err(|e| e.to_string()),
            Err("string needs 2 registers, got 1".to_string())
        );
        assert_eq!(
            s.decode_words(&[0x4142, 0x4300]),
            Ok(RegisterValue::Text("ABC".into()))
        );
    }

    #[test]
    fn decode_bits_scales_too() {
        // scale -1, offset 1 inverts an active-low input.
        let f = ok(
            r#"{ metric = "fault", table = "discrete_input", address = 0, scale = -1.0, offset = 1.0 }"#,
            0,
        );
        assert_eq!(f.decode_bits(&[true]), Ok(RegisterValue::Number(0.0)));
        assert_eq!(f.decode_bits(&[false]), Ok(RegisterValue::Number(1.0)));
    }

    #[test]
    fn example_maps_resolve() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/modbus");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("example dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("readable example");
            let cfg: super::super::config::ModbusConfig = {
                #[derive(serde::Deserialize)]
                struct Root {
                    modbus: super::super::config::ModbusConfig,
                }
                let root: Root = config::Config::builder()
                    .add_source(config::File::from_str(&text, config::FileFormat::Toml))
                    .build()
                    .and_then(config::Config::try_deserialize)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                root.modbus
            };
            for (name, map) in &cfg.maps {
                let fields = resolve_list(&map.registers, map.address_base)
                    .unwrap_or_else(|p| panic!("{} map {name}: {p:?}", path.display()));
                assert_eq!(fields.len(), map.registers.len());
                seen += 1;
            }
        }
        assert_eq!(seen, 4, "the four example maps");
    }
}
