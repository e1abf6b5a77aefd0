//! Modbus TCP and RTU polling.
//!
//! ```text
//! [modbus] config ──resolve──► Field list ──plan──► ReadRequests (≤125 registers / 2000 bits)
//!   device task: every `interval` (on a fixed grid, with jitter) run the requests through the
//!   device's transport (a TCP connection, or the shared serial bus), decode each field
//!   (crate::codec::modbus), and submit one Batch per poll to the pipeline.
//! ```
//! Every call is wrapped in a timeout, because tokio-modbus has none; after a timeout or a
//! transport error the connection is dropped and made again (a late reply would otherwise be
//! read as the answer to the next request). A device exception is not a transport error: it
//! marks the fields of that request bad (a dead letter naming the exception) and the rest of
//! the poll counts.

pub mod config;
pub mod field;
pub mod plan;

pub use config::{DeviceConfig, FieldConfig, FieldType, ModbusConfig, Table, WordOrder};
pub use field::{Field, Target};
pub use plan::{plan, PlanOptions, ReadRequest};
