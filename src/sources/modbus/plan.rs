//! Merging fields into as few read requests as the device allows.
//!
//! Fields are grouped by table and sorted by address. Fields that overlap (a status word read
//! whole and bit by bit, say) are first joined into one span, since splitting them would read
//! the same registers twice in overlapping requests. Spans are then packed greedily: the next
//! one joins the current request when the unused gap before it is at most `max_gap` and the
//! request stays within `max_registers` (or `max_bits`).
//!
//! Two limits of the greedy packing are accepted rather than worked around, because resolved
//! configs cannot produce them: a single field wider than the limit gets a request of its own
//! that is too big (the device answers with an exception and that field is marked bad), and a
//! chain of overlapping fields wider than the limit is split into requests that overlap.

use super::config::{DeviceConfig, Table};
use super::field::Field;

/// The protocol's limits: 125 registers (function codes 3 and 4), 2000 bits (1 and 2).
pub const PROTOCOL_MAX_REGISTERS: u16 = 125;
pub const PROTOCOL_MAX_BITS: u16 = 2000;

/// Limits of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// Merge neighbouring fields; off, one request per field.
    pub merge: bool,
    /// Most unused registers/bits read in between to merge two fields.
    pub max_gap: u16,
    /// Most registers per request (≤ 125; larger values are treated as 125).
    pub max_registers: u16,
    /// Most bits per request (≤ 2000; larger values are treated as 2000).
    pub max_bits: u16,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            merge: true,
            max_gap: 10,
            max_registers: PROTOCOL_MAX_REGISTERS,
            max_bits: PROTOCOL_MAX_BITS,
        }
    }
}

impl PlanOptions {
    /// A device's merge settings.
    pub fn for_device(device: &DeviceConfig) -> Self {
        PlanOptions {
            merge: device.merge,
            max_gap: device.max_gap,
            max_registers: device.max_registers,
            max_bits: device.max_bits,
        }
    }

    /// The most registers or bits one request of `table` may read, within the protocol's
    /// limits, and at least 1 so that a zero in config cannot stall the planner.
    pub fn limit(&self, table: Table) -> u16 {
        if table.is_bits() {
            self.max_bits.clamp(1, PROTOCOL_MAX_BITS)
        } else {
            self.max_registers.clamp(1, PROTOCOL_MAX_REGISTERS)
        }
    }
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

impl ReadRequest {
    /// The part of this request's answer (`data`, registers or bits from `self.address` on)
    /// that holds `field`, or `None` when the field is not inside it or the answer is short.
    pub fn slice<'a, T>(&self, field: &Field, data: &'a [T]) -> Option<&'a [T]> {
        if field.table != self.table {
            return None;
        }
        let start = usize::from(field.address.checked_sub(self.address)?);
        data.get(start..start + usize::from(field.count))
    }
}

/// The read requests that cover every field, by table (coils, discrete inputs, input
/// registers, holding registers) and then by address.
pub fn plan(fields: &[Field], opts: &PlanOptions) -> Vec<ReadRequest> {
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|&i| (fields[i].table, fields[i].address, fields[i].count));

    let mut requests = Vec::new();
    for table_fields in order.chunk_by(|&a, &b| fields[a].table == fields[b].table) {
        let table = fields[table_fields[0]].table;
        let spans: Vec<Span> = if opts.merge {
            overlap_spans(fields, table_fields, opts.limit(table))
        } else {
            table_fields.iter().map(|&i| Span::of(fields, i)).collect()
        };
        let packed = if opts.merge {
            pack(spans, opts.max_gap, opts.limit(table))
        } else {
            spans
        };
        requests.extend(packed.into_iter().map(|s| s.into_request(table)));
    }
    requests
}

/// Addresses as u32 so that `start + count` past 65535 (impossible after resolve) cannot
/// overflow.
#[derive(Debug)]
struct Span {
    start: u32,
    end: u32,
    fields: Vec<usize>,
}

impl Span {
    fn of(fields: &[Field], i: usize) -> Span {
        let start = u32::from(fields[i].address);
        Span {
            start,
            end: start + u32::from(fields[i].count),
            fields: vec![i],
        }
    }

    fn len(&self) -> u32 {
        self.end - self.start
    }

    fn join(&mut self, other: Span) {
        self.end = self.end.max(other.end);
        self.fields.extend(other.fields);
    }

    fn into_request(self, table: Table) -> ReadRequest {
        ReadRequest {
            table,
            address: u16::try_from(self.start).unwrap_or(u16::MAX),
            count: u16::try_from(self.len()).unwrap_or(u16::MAX),
            fields: self.fields,
        }
    }
}

/// Joins overlapping fields (sorted by address) into spans, each at most `limit` wide unless
/// one field alone is wider.
fn overlap_spans(fields: &[Field], sorted: &[usize], limit: u16) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for &i in sorted {
        let next = Span::of(fields, i);
        match spans.last_mut() {
            Some(cur)
                if next.start < cur.end && next.end.max(cur.end) - cur.start <= limit.into() =>
            {
                cur.join(next)
            }
            _ => spans.push(next),
        }
    }
    spans
}

/// Packs spans (sorted by start) greedily into requests of at most `limit`, joining two when
/// at most `max_gap` unused addresses lie between them.
fn pack(spans: Vec<Span>, max_gap: u16, limit: u16) -> Vec<Span> {
    let mut requests: Vec<Span> = Vec::new();
    for next in spans {
        match requests.last_mut() {
            Some(cur)
                if next.start.saturating_sub(cur.end) <= max_gap.into()
                    && next.end.max(cur.end) - cur.start <= limit.into() =>
            {
                cur.join(next)
            }
            _ => requests.push(next),
        }
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::modbus::config::{FieldType, WordOrder};
    use crate::sources::modbus::field::Target;
    use proptest::prelude::*;

    fn field(table: Table, address: u16, count: u16) -> Field {
        let ty = match (table.is_bits(), count) {
            (true, _) => FieldType::Bit,
            (false, 1) => FieldType::U16,
            (false, 2) => FieldType::F32,
            (false, 4) => FieldType::F64,
            (false, _) => FieldType::String,
        };
        Field {
            target: Target::Metric(format!("m{address}").into()),
            table,
            address,
            count,
            ty,
            order: WordOrder::Abcd,
            bit: None,
            scale: 1.0,
            offset: 0.0,
        }
    }

    /// (table, address, count) of each request, to compare plans at a glance.
    fn shape(requests: &[ReadRequest]) -> Vec<(Table, u16, u16)> {
        requests
            .iter()
            .map(|r| (r.table, r.address, r.count))
            .collect()
    }

    #[test]
    fn three_hundred_registers_make_three_requests() {
        let fields: Vec<Field> = (0..300).map(|a| field(Table::Holding, a, 1)).collect();
        let requests = plan(&fields, &PlanOptions::default());
        assert_eq!(
            shape(&requests),
            [
                (Table::Holding, 0, 125),
                (Table::Holding, 125, 125),
                (Table::Holding, 250, 50)
            ]
        );
        assert_eq!(requests[1].fields, (125..250).collect::<Vec<_>>());
    }

    #[test]
    fn gaps_up_to_max_gap_are_read_through() {
        let fields = [
            field(Table::Input, 0, 2),
            field(Table::Input, 12, 2),  // gap 10: joined
            field(Table::Input, 25, 2),  // gap 11: new request
            field(Table::Holding, 0, 1), // other table
        ];
        let requests = plan(&fields, &PlanOptions::default());
        assert_eq!(
            shape(&requests),
            [
                (Table::Input, 0, 14),
                (Table::Input, 25, 2),
                (Table::Holding, 0, 1)
            ]
        );
        assert_eq!(requests[0].fields, [0, 1]);
    }

    #[test]
    fn bit_tables_use_the_bit_limit() {
        let fields: Vec<Field> = (0..2500).map(|a| field(Table::Coil, a, 1)).collect();
        let requests = plan(&fields, &PlanOptions::default());
        assert_eq!(
            shape(&requests),
            [(Table::Coil, 0, 2000), (Table::Coil, 2000, 500)]
        );
    }

    #[test]
    fn no_merge_gives_one_request_per_field_even_when_they_overlap() {
        let fields = [
            field(Table::Holding, 4, 1),
            field(Table::Holding, 0, 2),
            field(Table::Holding, 4, 1),
        ];
        let opts = PlanOptions {
            merge: false,
            ..PlanOptions::default()
        };
        let requests = plan(&fields, &opts);
        assert_eq!(
            shape(&requests),
            [
                (Table::Holding, 0, 2),
                (Table::Holding, 4, 1),
                (Table::Holding, 4, 1)
            ]
        );
        assert_eq!(requests[0].fields, [1]);
    }

    #[test]
    fn overlapping_fields_share_a_request_across_the_limit_boundary() {
        // Greedy field-by-field packing would close [0,124) and start the overlapping pair at
        // 120 and 122 in two requests that overlap; as one span they move together.
        let fields = [
            field(Table::Holding, 0, 120),
            field(Table::Holding, 120, 4),
            field(Table::Holding, 122, 4),
        ];
        let requests = plan(&fields, &PlanOptions::default());
        assert_eq!(
            shape(&requests),
            [(Table::Holding, 0, 120), (Table::Holding, 120, 6)]
        );
        assert_eq!(requests[1].fields, [1, 2]);
    }

    #[test]
    fn a_field_wider_than_the_limit_gets_its_own_request() {
        let fields = [
            field(Table::Holding, 0, 1),
            field(Table::Holding, 1, 200),
            field(Table::Holding, 201, 1),
        ];
        let requests = plan(&fields, &PlanOptions::default());
        assert_eq!(
            shape(&requests),
            [
                (Table::Holding, 0, 1),
                (Table::Holding, 1, 200),
                (Table::Holding, 201, 1)
            ]
        );
    }

    #[test]
    fn limits_are_clamped_to_the_protocol() {
        let fields: Vec<Field> = (0..300).map(|a| field(Table::Input, a, 1)).collect();
        let opts = PlanOptions {
            max_registers: 1000,
            ..PlanOptions::default()
        };
        assert_eq!(plan(&fields, &opts).len(), 3);
        let opts = PlanOptions {
            max_registers: 0,
            ..PlanOptions::default()
        };
        assert_eq!(plan(&fields[..5], &opts).len(), 5);
    }

    #[test]
    fn slice_finds_a_field_in_the_answer() {
        let fields = [field(Table::Input, 10, 2), field(Table::Input, 14, 1)];
        let requests = plan(&fields, &PlanOptions::default());
        let answer: Vec<u16> = (10..15).collect();
        assert_eq!(requests[0].slice(&fields[0], &answer), Some(&[10, 11][..]));
        assert_eq!(requests[0].slice(&fields[1], &answer), Some(&[14][..]));
        assert_eq!(requests[0].slice(&fields[1], &answer[..4]), None);
        let elsewhere = field(Table::Input, 9, 1);
        assert_eq!(requests[0].slice(&elsewhere, &answer), None);
    }

    fn arb_field() -> impl Strategy<Value = Field> {
        let table = prop_oneof![
            Just(Table::Coil),
            Just(Table::DiscreteInput),
            Just(Table::Input),
            Just(Table::Holding),
        ];
        let count = prop_oneof![4 => Just(1u16), 2 => Just(2u16), 2 => Just(4u16), 1 => 1u16..=125];
        (table, 0u16..3000, count).prop_map(|(table, address, count)| {
            let count = if table.is_bits() { 1 } else { count };
            field(table, address, count)
        })
    }

    fn arb_opts() -> impl Strategy<Value = PlanOptions> {
        (any::<bool>(), 0u16..40, 1u16..=125, 1u16..=2000).prop_map(
            |(merge, max_gap, max_registers, max_bits)| PlanOptions {
                merge,
                max_gap,
                max_registers,
                max_bits,
            },
        )
    }

    /// Whether every run of overlapping fields of one table fits in one request: only then
    /// can requests avoid overlapping each other.
    fn overlap_runs_fit(fields: &[Field], opts: &PlanOptions) -> bool {
        let mut by_table: Vec<&Field> = fields.iter().collect();
        by_table.sort_by_key(|f| (f.table, f.address));
        let mut run: Option<(Table, u32, u32)> = None;
        for f in by_table {
            let (s, e) = (
                u32::from(f.address),
                u32::from(f.address) + u32::from(f.count),
            );
            run = match run {
                Some((t, rs, re)) if t == f.table && s < re => Some((t, rs, re.max(e))),
                _ => Some((f.table, s, e)),
            };
            if let Some((t, rs, re)) = run {
                if re - rs > u32::from(opts.limit(t)) {
                    return false;
                }
            }
        }
        true
    }

    proptest! {
        #[test]
        fn plans_cover_every_field_within_the_limits(
            fields in prop::collection::vec(arb_field(), 0..150),
            opts in arb_opts(),
        ) {
            let requests = plan(&fields, &opts);

            // Every field is listed by exactly one request, of its table, and lies wholly inside it.
            let mut listed = vec![0usize; fields.len()];
            for r in &requests {
                for &i in &r.fields {
                    listed[i] += 1;
                    let f = &fields[i];
                    prop_assert_eq!(f.table, r.table);
                    prop_assert!(f.address >= r.address);
                    prop_assert!(
                        u32::from(f.address) + u32::from(f.count)
                            <= u32::from(r.address) + u32::from(r.count)
                    );
                }
            }
            prop_assert!(listed.iter().all(|&n| n == 1), "{:?}", listed);

            // No request exceeds the limit, unless one field alone is wider.
            for r in &requests {
                let widest = r.fields.iter().map(|&i| fields[i].count).max().unwrap_or(0);
                prop_assert!(r.count <= opts.limit(r.table).max(widest), "{:?}", r);
            }

            if opts.merge {
                if overlap_runs_fit(&fields, &opts) {
                    for pair in requests.windows(2) {
                        if pair[0].table == pair[1].table {
                            prop_assert!(
                                u32::from(pair[0].address) + u32::from(pair[0].count)
                                    <= u32::from(pair[1].address),
                                "{:?} overlaps {:?}", pair[0], pair[1]
                            );
                        }
                    }
                }
            } else {
                prop_assert_eq!(requests.len(), fields.len());
            }
        }

    }
}
