//! Modbus register decoding: registers (or bits) in, a number or a string out.
//!
//! TODO(helper): `decode(words: &[u16], ty: FieldType, order: WordOrder, bit: Option<u8>)
//! -> Result<RegisterValue, RegisterError>` and the bit-table counterpart.
