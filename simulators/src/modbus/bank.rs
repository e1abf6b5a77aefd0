//! The data of one unit: coils, discrete inputs, input and holding registers.

use std::collections::BTreeMap;

use tokio_modbus::ExceptionCode;

use super::encode::{encode, encode_string, Table, ValueType, WordOrder};

/// The protocol's own limits on one read.
pub const MAX_READ_REGISTERS: u16 = 125;
pub const MAX_READ_BITS: u16 = 2000;

/// Something a setter could not store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    #[error("{table} holds bits, not registers")]
    NotRegisters { table: Table },
    #[error("{table} holds registers, not bits")]
    NotBits { table: Table },
    #[error("bit {bit} does not exist in a 16-bit register")]
    NoSuchBit { bit: u8 },
    #[error("{count} registers from address {address} run past 65535")]
    PastTheEnd { address: u16, count: usize },
    #[error("{text:?} is not ASCII or does not fit in {registers} registers")]
    StringDoesNotFit { text: String, registers: u16 },
}

/// A typed value written with [`Bank::set`], kept so it can be served again in another
/// word order when a fault asks for it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct TypedValue {
    value: f64,
    ty: ValueType,
    order: WordOrder,
}

/// A sparse register bank. Addresses never set read as 0 (or false), as on many devices whose
/// manual leaves gaps: the gateway may merge neighbouring fields into one read across them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bank {
    coils: BTreeMap<u16, bool>,
    discrete_inputs: BTreeMap<u16, bool>,
    input: BTreeMap<u16, u16>,
    holding: BTreeMap<u16, u16>,
    typed: BTreeMap<(Table, u16), TypedValue>,
    order_override: Option<WordOrder>,
}

impl Bank {
    pub fn new() -> Bank {
        Bank::default()
    }

    /// `count` holding registers from address 0, each holding its own address: a plain
    /// unit for tests of request splitting.
    pub fn counting(count: u16) -> Bank {
        let mut bank = Bank::new();
        bank.holding = (0..count).map(|a| (a, a)).collect();
        bank
    }

    /// Stores `value` as `ty` in `order` from `address` on.
    pub fn set(
        &mut self,
        table: Table,
        address: u16,
        value: f64,
        ty: ValueType,
        order: WordOrder,
    ) -> Result<(), BankError> {
        self.check_span(table, address, usize::from(ty.registers()))?;
        self.typed
            .insert((table, address), TypedValue { value, ty, order });
        let words = encode(value, ty, self.served_order(ty, order));
        self.put_words(table, address, &words);
        Ok(())
    }

    /// Stores raw registers from `address` on.
    pub fn set_words(
        &mut self,
        table: Table,
        address: u16,
        words: &[u16],
    ) -> Result<(), BankError> {
        self.check_span(table, address, words.len())?;
        self.forget_typed(table, address, words.len());
        self.put_words(table, address, words);
        Ok(())
    }

    /// Stores a coil or a discrete input.
    pub fn set_bit(&mut self, table: Table, address: u16, value: bool) -> Result<(), BankError> {
        match table {
            Table::Coil => self.coils.insert(address, value),
            Table::DiscreteInput => self.discrete_inputs.insert(address, value),
            Table::Input | Table::Holding => return Err(BankError::NotBits { table }),
        };
        Ok(())
    }

    /// Sets or clears bit `bit` (0 = least significant) of a register.
    pub fn set_register_bit(
        &mut self,
        table: Table,
        address: u16,
        bit: u8,
        value: bool,
    ) -> Result<(), BankError> {
        if bit > 15 {
            return Err(BankError::NoSuchBit { bit });
        }
        let word = self
            .words(table, address, 1)
            .map_err(|_| BankError::NotRegisters { table })?[0];
        let mask = 1u16 << bit;
        let word = if value { word | mask } else { word & !mask };
        self.set_words(table, address, &[word])
    }

    /// Stores ASCII text over `registers` registers, two characters each, NUL padded.
    pub fn set_string(
        &mut self,
        table: Table,
        address: u16,
        text: &str,
        registers: u16,
    ) -> Result<(), BankError> {
        let words = encode_string(text, registers).ok_or_else(|| BankError::StringDoesNotFit {
            text: text.to_string(),
            registers,
        })?;
        self.set_words(table, address, &words)
    }

    /// `count` registers from `address`, as a read request would get them.
    pub fn words(&self, table: Table, address: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        let map = match table {
            Table::Input => &self.input,
            Table::Holding => &self.holding,
            Table::Coil | Table::DiscreteInput => return Err(ExceptionCode::IllegalFunction),
        };
        check_read(address, count, MAX_READ_REGISTERS)?;
        Ok((0..count)
            .map(|i| map.get(&(address + i)).copied().unwrap_or(0))
            .collect())
    }

    /// `count` bits from `address`, as a read request would get them.
    pub fn bits(&self, table: Table, address: u16, count: u16) -> Result<Vec<bool>, ExceptionCode> {
        let map = match table {
            Table::Coil => &self.coils,
            Table::DiscreteInput => &self.discrete_inputs,
            Table::Input | Table::Holding => return Err(ExceptionCode::IllegalFunction),
        };
        check_read(address, count, MAX_READ_BITS)?;
        Ok((0..count)
            .map(|i| map.get(&(address + i)).copied().unwrap_or(false))
            .collect())
    }

    /// Serves every multi-register value set with [`Bank::set`] in `order` instead of its
    /// own (`None`: each in its own again). One-register values keep their order.
    pub fn set_order_override(&mut self, order: Option<WordOrder>) {
        if self.order_override == order {
            return;
        }
        self.order_override = order;
        let typed: Vec<_> = self.typed.iter().map(|(k, v)| (*k, *v)).collect();
        for ((table, address), v) in typed {
            let words = encode(v.value, v.ty, self.served_order(v.ty, v.order));
            self.put_words(table, address, &words);
        }
    }

    fn served_order(&self, ty: ValueType, own: WordOrder) -> WordOrder {
        match self.order_override {
            Some(o) if ty.registers() > 1 => o,
            _ => own,
        }
    }

    fn check_span(&self, table: Table, address: u16, count: usize) -> Result<(), BankError> {
        if table.is_bits() {
            return Err(BankError::NotRegisters { table });
        }
        if usize::from(address) + count > 0x1_0000 {
            return Err(BankError::PastTheEnd { address, count });
        }
        Ok(())
    }

    /// Callers have checked the span with `check_span`.
    fn put_words(&mut self, table: Table, address: u16, words: &[u16]) {
        let map = match table {
            Table::Input => &mut self.input,
            Table::Holding => &mut self.holding,
            Table::Coil | Table::DiscreteInput => return,
        };
        for (a, w) in (address..=u16::MAX).zip(words) {
            map.insert(a, *w);
        }
    }

    /// A raw write over a typed value replaces it: re-encoding it later would undo the write.
    fn forget_typed(&mut self, table: Table, address: u16, count: usize) {
        let end = usize::from(address) + count;
        self.typed.retain(|(t, a), v| {
            let start = usize::from(*a);
            *t != table
                || start + usize::from(v.ty.registers()) <= usize::from(address)
                || start >= end
        });
    }

    /// Applies a client's register write (function codes 6 and 16).
    pub(crate) fn write_holding(
        &mut self,
        address: u16,
        words: &[u16],
    ) -> Result<(), ExceptionCode> {
        self.set_words(Table::Holding, address, words)
            .map_err(|_| ExceptionCode::IllegalDataAddress)
    }

    /// Applies a client's coil write (function codes 5 and 15).
    pub(crate) fn write_coils(&mut self, address: u16, bits: &[bool]) -> Result<(), ExceptionCode> {
        if usize::from(address) + bits.len() > 0x1_0000 {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        for (a, b) in (address..=u16::MAX).zip(bits) {
            self.coils.insert(a, *b);
        }
        Ok(())
    }
}

fn check_read(address: u16, count: u16, max: u16) -> Result<(), ExceptionCode> {
    if count == 0 || count > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    if u32::from(address) + u32::from(count) > 0x1_0000 {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_and_gaps_read_back() {
        let mut b = Bank::new();
        b.set(Table::Input, 2, 230.5, ValueType::F32, WordOrder::Abcd)
            .unwrap();
        assert_eq!(
            b.words(Table::Input, 0, 5),
            Ok(vec![0, 0, 0x4366, 0x8000, 0])
        );
        assert_eq!(b.words(Table::Holding, 2, 2), Ok(vec![0, 0]));
    }

    #[test]
    fn order_override_reencodes_multi_register_values_only() {
        let mut b = Bank::new();
        b.set(Table::Holding, 0, 230.5, ValueType::F32, WordOrder::Cdab)
            .unwrap();
        b.set(
            Table::Holding,
            2,
            0x0102 as f64,
            ValueType::U16,
            WordOrder::Abcd,
        )
        .unwrap();
        b.set_order_override(Some(WordOrder::Abcd));
        assert_eq!(
            b.words(Table::Holding, 0, 3),
            Ok(vec![0x4366, 0x8000, 0x0102])
        );
        b.set(Table::Holding, 4, 1.0, ValueType::F32, WordOrder::Cdab)
            .unwrap();
        assert_eq!(b.words(Table::Holding, 4, 2), Ok(vec![0x3F80, 0]));
        b.set_order_override(None);
        assert_eq!(b.words(Table::Holding, 0, 2), Ok(vec![0x8000, 0x4366]));
        assert_eq!(b.words(Table::Holding, 4, 2), Ok(vec![0, 0x3F80]));
    }

    #[test]
    fn a_raw_write_is_not_undone_by_an_override() {
        let mut b = Bank::new();
        b.set(Table::Holding, 10, 1.0, ValueType::F32, WordOrder::Abcd)
            .unwrap();
        b.write_holding(11, &[7]).unwrap();
        b.set_order_override(Some(WordOrder::Cdab));
        assert_eq!(b.words(Table::Holding, 10, 2), Ok(vec![0x3F80, 7]));
    }

    #[test]
    fn bits_strings_and_limits() {
        let mut b = Bank::new();
        b.set_words(Table::Holding, 3, &[0b1011]).unwrap();
        b.set_register_bit(Table::Holding, 3, 2, true).unwrap();
        b.set_register_bit(Table::Holding, 3, 0, false).unwrap();
        assert_eq!(b.words(Table::Holding, 3, 1), Ok(vec![0b1110]));
        b.set_bit(Table::DiscreteInput, 1, true).unwrap();
        assert_eq!(
            b.bits(Table::DiscreteInput, 0, 3),
            Ok(vec![false, true, false])
        );
        b.set_string(Table::Holding, 100, "CG", 2).unwrap();
        assert_eq!(b.words(Table::Holding, 100, 2), Ok(vec![0x4347, 0]));

        assert_eq!(
            b.set_bit(Table::Input, 0, true),
            Err(BankError::NotBits {
                table: Table::Input
            })
        );
        assert_eq!(
            b.set(Table::Holding, 65534, 1.0, ValueType::F32, WordOrder::Abcd),
            Ok(())
        );
        assert!(b
            .set(Table::Holding, 65535, 1.0, ValueType::F32, WordOrder::Abcd)
            .is_err());
        assert_eq!(
            b.words(Table::Holding, 0, 126),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            b.words(Table::Holding, 65500, 100),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            b.bits(Table::Coil, 0, 2001),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            Bank::counting(300).words(Table::Holding, 298, 3),
            Ok(vec![298, 299, 0])
        );
    }
}
