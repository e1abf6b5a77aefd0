//! Golden Modbus decoding cases: every `tests/cases/modbus/*.toml` holds a `case` array. Each
//! case is one register-map entry (`type`, `order`, `bit`, `length`, `table`, `address`,
//! `address_base`, `scale`, `offset`), the device's answer (`words`, hex registers as sent,
//! or `bits` for coils and discrete inputs), and one outcome:
//! - `expect`: the reading (a number, compared within 1e-12 relative; `nan` matches NaN) or
//!   the tag text (a string);
//! - `error` and `message`: the decode error's reason code and exact message;
//! - `problems`: the entry is refused by config resolution with exactly these `key: message`.
//!
//! Defaults keep the cases short: a string type is a `tag`, anything else a `metric`; with no
//! `address`, the entry is at 0 in the holding table (a coil when the case gives `bits`); a
//! string's `length` is the number of words. The expected words were worked out independently
//! of citygate (Python's `struct.pack`), never by running the code under test.

use std::fs;
use std::path::{Path, PathBuf};

use citygate::codec::modbus::{RegisterError, RegisterValue};
use citygate::sources::modbus::config::{AddressSpec, FieldConfig, FieldType, Table, WordOrder};
use citygate::sources::modbus::field::{resolve, Field};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct CaseFile {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(rename = "type")]
    ty: Option<FieldType>,
    #[serde(default)]
    order: WordOrder,
    table: Option<Table>,
    address: Option<AddressSpec>,
    #[serde(default)]
    address_base: u8,
    bit: Option<u8>,
    length: Option<u16>,
    scale: Option<f64>,
    offset: Option<f64>,
    words: Option<Vec<String>>,
    bits: Option<Vec<bool>>,
    expect: Option<Expect>,
    error: Option<String>,
    message: Option<String>,
    problems: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expect {
    Number(f64),
    Text(String),
}

impl Case {
    fn field_config(&self) -> Result<FieldConfig, String> {
        let is_string = self.ty == Some(FieldType::String);
        let name = if is_string { "serial" } else { "m" };
        let (table, address) = match &self.address {
            Some(a) => (self.table, a.clone()),
            None if self.bits.is_some() => {
                (self.table.or(Some(Table::Coil)), AddressSpec::Plain(0))
            }
            None => (self.table.or(Some(Table::Holding)), AddressSpec::Plain(0)),
        };
        let length = match (&self.length, &self.words) {
            (Some(n), _) => Some(*n),
            (None, Some(w)) if is_string => {
                Some(u16::try_from(w.len()).map_err(|_| "too many words".to_string())?)
            }
            _ => None,
        };
        Ok(FieldConfig {
            metric: (!is_string).then(|| name.to_string()),
            tag: is_string.then(|| name.to_string()),
            table,
            address,
            ty: self.ty,
            order: self.order,
            bit: self.bit,
            length,
            scale: self.scale.unwrap_or(1.0),
            offset: self.offset.unwrap_or(0.0),
        })
    }

    fn decode(&self, field: &Field) -> Result<Result<RegisterValue, RegisterError>, String> {
        match (&self.words, &self.bits) {
            (Some(words), None) => {
                let words = words
                    .iter()
                    .map(|w| parse_word(w))
                    .collect::<Result<Vec<u16>, String>>()?;
                Ok(field.decode_words(&words))
            }
            (None, Some(bits)) => Ok(field.decode_bits(bits)),
            _ => Err("give exactly one of `words` and `bits`".to_string()),
        }
    }

    /// Runs the case; `Err` says how the outcome differs from the expected one.
    fn check(&self) -> Result<(), String> {
        let resolved = resolve(&self.field_config()?, self.address_base);
        if let Some(expected) = &self.problems {
            let actual: Vec<String> = match resolved {
                Ok(f) => return Err(format!("expected problems {expected:?}, resolved to {f:?}")),
                Err(ps) => ps.into_iter().map(|(k, m)| format!("{k}: {m}")).collect(),
            };
            return if &actual == expected {
                Ok(())
            } else {
                Err(format!(
                    "problems differ\n  expected: {expected:#?}\n  actual:   {actual:#?}"
                ))
            };
        }
        let field = resolved.map_err(|ps| format!("the entry does not resolve: {ps:?}"))?;
        let outcome = self.decode(&field)?;
        match (&self.expect, &self.error, outcome) {
            (Some(Expect::Number(want)), None, Ok(RegisterValue::Number(got))) => {
                if same_number(got, *want) {
                    Ok(())
                } else {
                    Err(format!("expected {want:?}, got {got:?}"))
                }
            }
            (Some(Expect::Text(want)), None, Ok(RegisterValue::Text(got))) => {
                if &got == want {
                    Ok(())
                } else {
                    Err(format!("expected {want:?}, got {got:?}"))
                }
            }
            (None, Some(reason), Err(e)) => {
                if e.reason() != reason {
                    return Err(format!("expected error {reason}, got {}: {e}", e.reason()));
                }
                match &self.message {
                    Some(m) if *m != e.to_string() => {
                        Err(format!("expected message {m:?}, got {:?}", e.to_string()))
                    }
                    Some(_) => Ok(()),
                    None => Err(format!("an error case needs `message`; it is {e:?}")),
                }
            }
            (Some(_), Some(_), _) | (None, None, _) => {
                Err("give exactly one of `expect`, `error` and `problems`".to_string())
            }
            (want, reason, got) => Err(format!(
                "expected {}, got {got:?}",
                match (want, reason) {
                    (Some(w), _) => format!("{w:?}"),
                    (_, Some(r)) => format!("error {r}"),
                    _ => String::new(),
                }
            )),
        }
    }
}

fn parse_word(text: &str) -> Result<u16, String> {
    text.strip_prefix("0x")
        .and_then(|hex| u16::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("word {text:?} is not \"0x\" and 1 to 4 hex digits"))
}

/// Equal within 1e-12 relative (scaled values are not exact in binary), NaN equal to NaN, and
/// infinities only equal to themselves.
fn same_number(got: f64, want: f64) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= 1e-12 * want.abs().max(1.0)
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/modbus")
}

fn load(path: &Path) -> Result<Vec<Case>, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file: CaseFile = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| e.to_string())?;
    Ok(file.case)
}

#[test]
fn every_golden_case_decodes_as_expected() {
    let mut files: Vec<PathBuf> = fs::read_dir(cases_dir())
        .expect("tests/cases/modbus is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();

    let mut failures = Vec::new();
    let mut checked = 0;
    for path in &files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let cases = match load(path) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{name}: cannot be read: {e}"));
                continue;
            }
        };
        for (i, case) in cases.iter().enumerate() {
            checked += 1;
            if let Err(why) = case.check() {
                failures.push(format!("{name} case {i} ({case:?}):\n  {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 150, "expected the golden cases, found {checked}");
}

/// Every type in every order has a case: the matrix the golden files promise.
#[test]
fn every_type_is_covered_in_every_order() {
    let mut missing = Vec::new();
    let mut all = Vec::new();
    for path in fs::read_dir(cases_dir()).expect("readable").flatten() {
        all.extend(load(&path.path()).unwrap_or_default());
    }
    for ty in FieldType::ALL {
        for order in WordOrder::ALL {
            let covered = all.iter().any(|c| {
                c.ty == Some(ty) && c.order == order && c.expect.is_some() && c.words.is_some()
            });
            if !covered {
                missing.push(format!("{ty:?} {}", order.as_str()));
            }
        }
    }
    assert!(missing.is_empty(), "no decoding case for: {missing:?}");
}
