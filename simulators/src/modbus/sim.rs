//! [`Sim`]: the units behind one server, their faults and request logs, and how a request
//! is answered.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_modbus::{ExceptionCode, Request, Response};

use super::bank::Bank;
use super::encode::Table;
use super::faults::{DropFault, Faults};

/// Requests kept per unit; older ones are forgotten so a long live run stays small.
const LOG_CAPACITY: usize = 10_000;

/// One request as a unit received it (faulted or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The function code, e.g. 3 for read holding registers.
    pub function: u8,
    /// The table it reads or writes; `None` for functions outside the four tables.
    pub table: Option<Table>,
    pub address: u16,
    /// Registers or bits read or written.
    pub count: u16,
}

#[derive(Debug, Default)]
struct Unit {
    bank: Bank,
    faults: Faults,
    requests_since_faults: u64,
    log: VecDeque<LoggedRequest>,
}

/// The units one server (or several) answers for, shared: clones see the same units.
#[derive(Clone, Debug, Default)]
pub struct Sim {
    units: Arc<Mutex<BTreeMap<u8, Unit>>>,
}

/// Which transport a request came over: a unit that is not there is answered differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Rtu,
}

/// What to do with a request.
#[derive(Debug, PartialEq)]
pub(crate) enum Answer {
    Reply(Result<Response, ExceptionCode>),
    Silent,
    DropConnection,
}

impl Sim {
    /// No units.
    pub fn new() -> Sim {
        Sim::default()
    }

    /// Adds unit `unit` with this data, or replaces its data (its faults and log stay).
    pub fn add_unit(&self, unit: u8, bank: Bank) {
        self.lock().entry(unit).or_default().bank = bank;
    }

    pub fn remove_unit(&self, unit: u8) {
        self.lock().remove(&unit);
    }

    pub fn units(&self) -> Vec<u8> {
        self.lock().keys().copied().collect()
    }

    /// Runs `f` on the unit's data; `None` if there is no such unit.
    pub fn update<R>(&self, unit: u8, f: impl FnOnce(&mut Bank) -> R) -> Option<R> {
        self.lock().get_mut(&unit).map(|u| f(&mut u.bank))
    }

    /// A copy of the unit's data.
    pub fn bank(&self, unit: u8) -> Option<Bank> {
        self.lock().get(&unit).map(|u| u.bank.clone())
    }

    /// Replaces the unit's faults; `false` if there is no such unit.
    pub fn set_faults(&self, unit: u8, faults: Faults) -> bool {
        let mut units = self.lock();
        let Some(u) = units.get_mut(&unit) else {
            return false;
        };
        u.bank.set_order_override(faults.word_order);
        u.faults = faults;
        u.requests_since_faults = 0;
        true
    }

    pub fn clear_faults(&self, unit: u8) -> bool {
        self.set_faults(unit, Faults::default())
    }

    pub fn faults(&self, unit: u8) -> Option<Faults> {
        self.lock().get(&unit).map(|u| u.faults.clone())
    }

    /// The requests the unit received, oldest first (at most the last 10,000).
    pub fn requests(&self, unit: u8) -> Vec<LoggedRequest> {
        self.lock()
            .get(&unit)
            .map(|u| u.log.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn clear_requests(&self, unit: u8) {
        if let Some(u) = self.lock().get_mut(&unit) {
            u.log.clear();
        }
    }

    /// Decides the answer to `request` for `unit`, and how long to wait before giving it.
    pub(crate) fn answer(
        &self,
        unit: u8,
        request: &Request<'_>,
        transport: Transport,
    ) -> (Answer, Duration) {
        let mut units = self.lock();
        let Some(u) = units.get_mut(&unit) else {
            // A Modbus TCP gateway says its target did not answer; on a serial bus nobody
            // else speaks up.
            let answer = match transport {
                Transport::Tcp => Answer::Reply(Err(ExceptionCode::GatewayTargetDevice)),
                Transport::Rtu => Answer::Silent,
            };
            return (answer, Duration::ZERO);
        };
        let logged = describe(request);
        if u.log.len() == LOG_CAPACITY {
            u.log.pop_front();
        }
        u.log.push_back(logged);
        u.requests_since_faults += 1;

        let delay = u.faults.delay.unwrap_or_default();
        if u.faults.silent {
            return (Answer::Silent, delay);
        }
        let drop_now = match u.faults.drop {
            Some(DropFault::Next) => {
                u.faults.drop = None;
                true
            }
            Some(DropFault::Every(n)) => u.requests_since_faults % u64::from(n.max(1)) == 0,
            None => false,
        };
        if drop_now {
            let answer = match transport {
                Transport::Tcp => Answer::DropConnection,
                Transport::Rtu => Answer::Silent,
            };
            return (answer, delay);
        }
        if let Some(table) = logged.table {
            if let Some(f) = u
                .faults
                .exceptions
                .iter()
                .find(|f| f.hits(table, logged.address, logged.count))
            {
                return (Answer::Reply(Err(f.code)), delay);
            }
        }
        (Answer::Reply(execute(&mut u.bank, request)), delay)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u8, Unit>> {
        // A panic elsewhere while holding the lock leaves plain data behind, still usable.
        self.units.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn describe(request: &Request<'_>) -> LoggedRequest {
    let (table, address, count) = match request {
        Request::ReadCoils(a, n) => (Some(Table::Coil), *a, *n),
        Request::ReadDiscreteInputs(a, n) => (Some(Table::DiscreteInput), *a, *n),
        Request::ReadInputRegisters(a, n) => (Some(Table::Input), *a, *n),
        Request::ReadHoldingRegisters(a, n) => (Some(Table::Holding), *a, *n),
        Request::ReadWriteMultipleRegisters(a, n, _, _) => (Some(Table::Holding), *a, *n),
        Request::WriteSingleCoil(a, _) => (Some(Table::Coil), *a, 1),
        Request::WriteMultipleCoils(a, bits) => (Some(Table::Coil), *a, len16(bits.len())),
        Request::WriteSingleRegister(a, _) | Request::MaskWriteRegister(a, _, _) => {
            (Some(Table::Holding), *a, 1)
        }
        Request::WriteMultipleRegisters(a, words) => (Some(Table::Holding), *a, len16(words.len())),
        _ => (None, 0, 0),
    };
    LoggedRequest {
        function: request.function_code().value(),
        table,
        address,
        count,
    }
}

fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn execute(bank: &mut Bank, request: &Request<'_>) -> Result<Response, ExceptionCode> {
    Ok(match request {
        Request::ReadCoils(a, n) => Response::ReadCoils(bank.bits(Table::Coil, *a, *n)?),
        Request::ReadDiscreteInputs(a, n) => {
            Response::ReadDiscreteInputs(bank.bits(Table::DiscreteInput, *a, *n)?)
        }
        Request::ReadInputRegisters(a, n) => {
            Response::ReadInputRegisters(bank.words(Table::Input, *a, *n)?)
        }
        Request::ReadHoldingRegisters(a, n) => {
            Response::ReadHoldingRegisters(bank.words(Table::Holding, *a, *n)?)
        }
        Request::WriteSingleRegister(a, w) => {
            bank.write_holding(*a, &[*w])?;
            Response::WriteSingleRegister(*a, *w)
        }
        Request::WriteMultipleRegisters(a, words) => {
            bank.write_holding(*a, words)?;
            Response::WriteMultipleRegisters(*a, len16(words.len()))
        }
        Request::WriteSingleCoil(a, b) => {
            bank.write_coils(*a, &[*b])?;
            Response::WriteSingleCoil(*a, *b)
        }
        Request::WriteMultipleCoils(a, bits) => {
            bank.write_coils(*a, bits)?;
            Response::WriteMultipleCoils(*a, len16(bits.len()))
        }
        _ => return Err(ExceptionCode::IllegalFunction),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::faults::ExceptionFault;

    fn sim_with_unit() -> Sim {
        let sim = Sim::new();
        sim.add_unit(7, Bank::counting(10));
        sim
    }

    #[test]
    fn reads_are_answered_and_logged() {
        let sim = sim_with_unit();
        let (answer, delay) = sim.answer(7, &Request::ReadHoldingRegisters(2, 3), Transport::Tcp);
        assert_eq!(
            answer,
            Answer::Reply(Ok(Response::ReadHoldingRegisters(vec![2, 3, 4])))
        );
        assert_eq!(delay, Duration::ZERO);
        assert_eq!(
            sim.requests(7),
            vec![LoggedRequest {
                function: 3,
                table: Some(Table::Holding),
                address: 2,
                count: 3
            }]
        );
    }

    #[test]
    fn a_missing_unit_is_a_gateway_exception_on_tcp_and_silence_on_rtu() {
        let sim = sim_with_unit();
        let req = Request::ReadHoldingRegisters(0, 1);
        assert_eq!(
            sim.answer(8, &req, Transport::Tcp).0,
            Answer::Reply(Err(ExceptionCode::GatewayTargetDevice))
        );
        assert_eq!(sim.answer(8, &req, Transport::Rtu).0, Answer::Silent);
    }

    #[test]
    fn faults_apply_in_order_silent_drop_exception() {
        let sim = sim_with_unit();
        let req = Request::ReadHoldingRegisters(0, 4);
        sim.set_faults(
            7,
            Faults {
                drop: Some(DropFault::Every(2)),
                exceptions: vec![ExceptionFault::at(
                    ExceptionCode::IllegalDataAddress,
                    Table::Holding,
                    3..4,
                )],
                delay: Some(Duration::from_millis(5)),
                ..Faults::default()
            },
        );
        let (first, delay) = sim.answer(7, &req, Transport::Tcp);
        assert_eq!(first, Answer::Reply(Err(ExceptionCode::IllegalDataAddress)));
        assert_eq!(delay, Duration::from_millis(5));
        assert_eq!(
            sim.answer(7, &req, Transport::Tcp).0,
            Answer::DropConnection
        );
        assert_eq!(
            sim.answer(7, &Request::ReadHoldingRegisters(0, 3), Transport::Tcp)
                .0,
            Answer::Reply(Ok(Response::ReadHoldingRegisters(vec![0, 1, 2])))
        );
        sim.set_faults(
            7,
            Faults {
                drop: Some(DropFault::Next),
                ..Faults::default()
            },
        );
        assert_eq!(sim.answer(7, &req, Transport::Rtu).0, Answer::Silent);
        assert_eq!(
            sim.faults(7).and_then(|f| f.drop),
            None,
            "drop=next clears itself"
        );
        sim.set_faults(
            7,
            Faults {
                silent: true,
                ..Faults::default()
            },
        );
        assert_eq!(sim.answer(7, &req, Transport::Tcp).0, Answer::Silent);
        assert_eq!(
            sim.requests(7).len(),
            5,
            "every request is logged, faulted or not"
        );
    }

    #[test]
    fn writes_land_in_the_bank() {
        let sim = sim_with_unit();
        let req = Request::WriteMultipleRegisters(1, vec![40, 41].into());
        assert_eq!(
            sim.answer(7, &req, Transport::Tcp).0,
            Answer::Reply(Ok(Response::WriteMultipleRegisters(1, 2)))
        );
        assert_eq!(
            sim.bank(7).map(|b| b.words(Table::Holding, 0, 3)),
            Some(Ok(vec![0, 40, 41]))
        );
    }
}
