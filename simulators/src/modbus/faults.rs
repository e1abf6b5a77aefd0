//! Faults a unit can be told to show, and the `--fault` spec that sets them.

use std::ops::Range;
use std::time::Duration;

use tokio_modbus::ExceptionCode;

use super::encode::{Table, WordOrder};

/// What a unit does wrong. The default does nothing wrong.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Requests touching one of these address ranges get that exception instead of data.
    pub exceptions: Vec<ExceptionFault>,
    /// Every answer is sent this late (a whole TCP connection waits: one request at a time).
    pub delay: Option<Duration>,
    /// Close the TCP connection instead of answering. On RTU the request is left unanswered.
    pub drop: Option<DropFault>,
    /// Serve every multi-register value in this order instead of its own.
    pub word_order: Option<WordOrder>,
    /// Never answer at all.
    pub silent: bool,
}

/// Requests touching `addresses` (in `table`, or in any table when `None`) get `code`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExceptionFault {
    pub code: ExceptionCode,
    pub table: Option<Table>,
    /// Half open; `0..0x1_0000` is every address.
    pub addresses: Range<u32>,
}

impl ExceptionFault {
    /// `code` for every request to the unit.
    pub fn everywhere(code: ExceptionCode) -> ExceptionFault {
        ExceptionFault {
            code,
            table: None,
            addresses: 0..0x1_0000,
        }
    }

    /// `code` for requests touching `addresses` of `table`.
    pub fn at(code: ExceptionCode, table: Table, addresses: Range<u32>) -> ExceptionFault {
        ExceptionFault {
            code,
            table: Some(table),
            addresses,
        }
    }

    pub(crate) fn hits(&self, table: Table, address: u16, count: u16) -> bool {
        let start = u32::from(address);
        let end = start + u32::from(count.max(1));
        self.table.is_none_or(|t| t == table)
            && start < self.addresses.end
            && self.addresses.start < end
    }
}

/// When to close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropFault {
    /// On the next request to the unit, once; the fault then clears itself.
    Next,
    /// On every Nth request to the unit (counted from when the faults were set).
    Every(u32),
}

/// A `--fault` spec that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault spec {spec:?}: {reason}")]
pub struct FaultSpecError {
    pub spec: String,
    pub reason: String,
}

/// Reads a fault spec: comma-separated `key=value` items, `unit` required.
///
/// `unit=3,exception=0x02,addr=0..10,table=holding` · `unit=1,delay=1500ms` ·
/// `unit=2,drop=next` · `unit=2,drop=5` (every 5th request) · `unit=3,order=ABCD` ·
/// `unit=5,silent`. `addr` is half open (`0..10` is 0 to 9), or `A..=B`, or one address;
/// without it an exception covers every address.
pub fn parse_fault_spec(spec: &str) -> Result<(u8, Faults), FaultSpecError> {
    let fail = |reason: String| FaultSpecError {
        spec: spec.to_string(),
        reason,
    };
    let mut unit = None;
    let mut faults = Faults::default();
    let (mut code, mut table, mut addresses) = (None, None, None);
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        match key.trim() {
            "unit" => {
                unit = Some(
                    value
                        .parse::<u8>()
                        .map_err(|e| fail(format!("unit: {e}")))?,
                )
            }
            "exception" => code = Some(ExceptionCode::new(parse_u8(value).map_err(fail)?)),
            "addr" => addresses = Some(parse_range(value).map_err(fail)?),
            "table" => table = Some(value.parse::<Table>().map_err(fail)?),
            "delay" => faults.delay = Some(parse_duration(value).map_err(fail)?),
            "drop" => {
                faults.drop = Some(match value {
                    "next" | "" => DropFault::Next,
                    n => match n.parse::<u32>() {
                        Ok(n) if n > 0 => DropFault::Every(n),
                        _ => return Err(fail(format!("drop={n}: want `next` or a count above 0"))),
                    },
                })
            }
            "order" => faults.word_order = Some(value.parse::<WordOrder>().map_err(fail)?),
            "silent" if matches!(value, "" | "true") => faults.silent = true,
            other => return Err(fail(format!("unknown item {other:?}"))),
        }
    }
    let unit = unit.ok_or_else(|| fail("no unit=N".into()))?;
    match code {
        Some(code) => faults.exceptions.push(ExceptionFault {
            code,
            table,
            addresses: addresses.unwrap_or(0..0x1_0000),
        }),
        None if table.is_some() || addresses.is_some() => {
            return Err(fail("addr or table without exception=CODE".into()))
        }
        None => {}
    }
    Ok((unit, faults))
}

impl Faults {
    /// Adds `other`'s faults to these: exceptions accumulate, the rest is replaced when set.
    pub fn merge(&mut self, other: Faults) {
        self.exceptions.extend(other.exceptions);
        self.delay = other.delay.or(self.delay);
        self.drop = other.drop.or(self.drop);
        self.word_order = other.word_order.or(self.word_order);
        self.silent |= other.silent;
    }
}

fn parse_u8(s: &str) -> Result<u8, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("exception code {s:?}: {e}"))
}

fn parse_range(s: &str) -> Result<Range<u32>, String> {
    let addr = |a: &str| {
        a.trim()
            .parse::<u16>()
            .map(u32::from)
            .map_err(|e| format!("address {a:?}: {e}"))
    };
    let range = if let Some((a, b)) = s.split_once("..=") {
        addr(a)?..addr(b)? + 1
    } else if let Some((a, b)) = s.split_once("..") {
        addr(a)?..addr(b)?
    } else {
        let a = addr(s)?;
        a..a + 1
    };
    if range.is_empty() {
        return Err(format!("address range {s:?} is empty"));
    }
    Ok(range)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit_s) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1.0)
    } else {
        return Err(format!("delay {s:?}: want e.g. 1500ms or 2s"));
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * unit_s < 86_400.0 => {
            Ok(Duration::from_secs_f64(n * unit_s))
        }
        _ => Err(format!("delay {s:?}: want e.g. 1500ms or 2s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let (unit, f) = parse_fault_spec("unit=3,exception=0x02,addr=0..10").unwrap();
        assert_eq!(unit, 3);
        assert_eq!(
            f.exceptions,
            vec![ExceptionFault {
                code: ExceptionCode::IllegalDataAddress,
                table: None,
                addresses: 0..10
            }]
        );
        let (_, f) = parse_fault_spec("unit=1, delay=1500ms, drop=4, order=cdab, silent").unwrap();
        assert_eq!(f.delay, Some(Duration::from_millis(1500)));
        assert_eq!(f.drop, Some(DropFault::Every(4)));
        assert_eq!(f.word_order, Some(WordOrder::Cdab));
        assert!(f.silent);
        let (_, f) = parse_fault_spec("unit=2,exception=4,table=input,addr=5..=6").unwrap();
        assert_eq!(f.exceptions[0].addresses, 5..7);
        assert_eq!(f.exceptions[0].table, Some(Table::Input));
        assert_eq!(f.exceptions[0].code, ExceptionCode::ServerDeviceFailure);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, want) in [
            ("exception=2", "no unit"),
            ("unit=300", "unit"),
            ("unit=1,addr=0..4", "without exception"),
            ("unit=1,exception=2,addr=9..3", "empty"),
            ("unit=1,delay=2h", "delay"),
            ("unit=1,drop=0", "drop=0"),
            ("unit=1,order=ACBD", "word order"),
            ("unit=1,loud", "unknown item"),
        ] {
            let err = parse_fault_spec(spec).unwrap_err().to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn an_exception_hits_requests_that_overlap_its_range() {
        let f = ExceptionFault::at(ExceptionCode::IllegalDataAddress, Table::Input, 10..20);
        assert!(f.hits(Table::Input, 0, 11));
        assert!(f.hits(Table::Input, 19, 1));
        assert!(!f.hits(Table::Input, 0, 10));
        assert!(!f.hits(Table::Input, 20, 5));
        assert!(!f.hits(Table::Holding, 12, 1));
    }
}
