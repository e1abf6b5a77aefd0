//! Merging fields into as few read requests as the device allows.

use super::config::Table;
use super::field::Field;

/// Limits of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// Merge neighbouring fields; off, one request per field.
    pub merge: bool,
    /// Most unused registers/bits read in between to merge two fields.
    pub max_gap: u16,
    /// Most registers per request (≤ 125).
    pub max_registers: u16,
    /// Most bits per request (≤ 2000).
    pub max_bits: u16,
}

/// One read request and the fields it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: Table,
    pub address: u16,
    pub count: u16,
    /// Indexes into the field list, in address order.
    pub fields: Vec<usize>,
}

/// TODO(helper): the planner.
pub fn plan(_fields: &[Field], _opts: &PlanOptions) -> Vec<ReadRequest> {
    Vec::new()
}
