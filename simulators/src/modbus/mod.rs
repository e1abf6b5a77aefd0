//! A Modbus device simulator: the four example devices of `config/examples/modbus/` behind
//! one Modbus TCP port or one RTU serial line, with fault injection and a request log.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use citygate_sim::modbus::{self, Faults};
//! let sim = modbus::example_sim(); // units 1..=5 with the fixed values of `devices`
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = listener.local_addr()?.port();
//! let server = modbus::serve_tcp(listener, sim.clone());
//! sim.set_faults(5, Faults { silent: true, ..Faults::default() });
//! // ... poll 127.0.0.1:port, then look at sim.requests(1) ...
//! # let _ = (port, server); Ok(()) }
//! ```
//!
//! # Layout
//! - `encode`: [`Table`], [`ValueType`], [`WordOrder`], [`encode`], [`encode_string`]
//! - `bank`: [`Bank`], the registers and bits of one unit
//! - `faults`: [`Faults`] and the `--fault` spec
//! - `sim`: [`Sim`], the shared units, their faults and request logs
//! - `devices`: the example devices and their fixed values; `live`: their live values
//! - `server`: [`serve_tcp`], [`serve_rtu`], [`ServerHandle`]
//! - `rtt`: [`round_trips`], a bare client's back-to-back reads, for benchmarks

mod bank;
mod devices;
mod encode;
mod faults;
mod live;
mod rtt;
mod server;
mod sim;

pub use bank::{Bank, BankError, MAX_READ_BITS, MAX_READ_REGISTERS};
pub use devices::{
    example_sim, GasDetectorValues, MeterValues, SondeValues, WaterMeterValues, GAS_DETECTOR_UNITS,
    METER_SERIAL, METER_SERIAL_ADDRESS, METER_UNIT, SONDE_UNIT, WATER_METER_UNIT,
};
pub use encode::{encode, encode_string, Table, ValueType, WordOrder};
pub use faults::{parse_fault_spec, DropFault, ExceptionFault, FaultSpecError, Faults};
pub use live::{spawn_live, LiveDevices, LiveUpdates};
pub use rtt::{round_trips, RttError, RttOptions, RttReport};
pub use server::{serve_rtu, serve_tcp, Parity, SerialSettings, ServeError, ServerHandle};
pub use sim::{LoggedRequest, Sim};
/// Re-exported so callers name exception codes without their own tokio-modbus dependency.
pub use tokio_modbus::ExceptionCode;
