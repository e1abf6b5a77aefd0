//! Scheduling: one task per device, each on its own fixed grid.
//!
//! - A TCP device has its own connection and is polled concurrently with the others, up to
//!   `max_concurrent` polls at once.
//! - Devices on one serial line share it: a poll holds the line (a fair lock, so units take
//!   turns) and keeps the inter-frame silence after each exchange.
//! - A device that fails `offline_after_failures` polls in a row is reported down (the
//!   pipeline raises `device_offline`) and polled less often, backing off up to
//!   `backoff_max`; the next good poll reports it up again.
//!
//! A slow or dead TCP device only ever holds its own task and one permit; other devices keep
//! their grids.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use tokio::sync::{watch, Mutex, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::app::{now_ms, Ingest};
use crate::model::{Batch, DeviceHealth, Tags};

use super::config::SerialConfig;
use super::device::{Device, SOURCE};
use super::link::{Endpoint, Link};
use super::status::DeviceStatus;

/// The running Modbus source.
pub struct ModbusSource {
    tasks: Vec<JoinHandle<()>>,
    status: Vec<Arc<DeviceStatus>>,
    stop: watch::Sender<bool>,
}

impl ModbusSource {
    pub fn status(&self) -> &[Arc<DeviceStatus>] {
        &self.status
    }

    /// Stops polling and waits for the tasks to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

enum LinkHandle {
    Own(Link),
    Shared(Arc<Mutex<Link>>),
}

/// Starts polling `devices`. Serial settings come per path (`serial`).
pub fn spawn(
    devices: Vec<Device>,
    serial: &HashMap<String, SerialConfig>,
    max_concurrent: usize,
    ingest: Ingest,
) -> ModbusSource {
    let (stop, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let mut buses: HashMap<String, Arc<Mutex<Link>>> = HashMap::new();
    let mut tasks = Vec::with_capacity(devices.len());
    let mut status = Vec::with_capacity(devices.len());
    for device in devices {
        let handle = match &device.endpoint {
            Endpoint::Tcp(_) => {
                LinkHandle::Own(Link::new(device.endpoint.clone(), SerialConfig::default()))
            }
            Endpoint::Rtu(path) => {
                let bus = buses.entry(path.clone()).or_insert_with(|| {
                    let settings = serial.get(path).cloned().unwrap_or_default();
                    Arc::new(Mutex::new(Link::new(device.endpoint.clone(), settings)))
                });
                LinkHandle::Shared(bus.clone())
            }
        };
        let st = Arc::new(DeviceStatus::new(
            &device.sensor,
            &device.endpoint.to_string(),
            device.unit,
        ));
        status.push(st.clone());
        st.set_tags(&device.tags);
        let task = DeviceTask {
            tags: Arc::from(device.tags.clone()),
            device,
            link: handle,
            permits: permits.clone(),
            ingest: ingest.clone(),
            status: st,
            stop: stop_rx.clone(),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    ModbusSource {
        tasks,
        status,
        stop,
    }
}

/// A step under this is shorter than tokio's timer can wait (it rounds every sleep up to the
/// next millisecond): such an interval means "as fast as the device answers".
const BACK_TO_BACK_BELOW: Duration = Duration::from_millis(1);

/// When to poll next, after the poll whose tick was `last`. It keeps to the grid: the next
/// tick is a whole number of steps after the last one, skipping ticks a slow poll overran
/// (no drift, no burst to catch up). A step under [`BACK_TO_BACK_BELOW`] polls again now.
fn next_tick(last: Instant, step: Duration, now: Instant) -> Instant {
    if step < BACK_TO_BACK_BELOW {
        return now;
    }
    let next = last + step;
    if next > now {
        return next;
    }
    let behind = now - next;
    let skip = u32::try_from(behind.as_nanos() / step.as_nanos().max(1))
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    next + step.saturating_mul(skip)
}

struct DeviceTask {
    device: Device,
    link: LinkHandle,
    permits: Arc<Semaphore>,
    ingest: Ingest,
    status: Arc<DeviceStatus>,
    stop: watch::Receiver<bool>,
    tags: Tags,
}

/// Up or down as last reported to the pipeline; `None` until the first poll, so that the
/// first good poll clears a `device_offline` alert left active by an earlier run.
type Reported = Option<bool>;

impl DeviceTask {
    async fn run(mut self) {
        let interval = self.device.interval;
        // A fixed phase per device spreads a thousand devices with the same interval over
        // the first tenth of it (at most a second), instead of all firing at once.
        let spread = (interval / 10).min(Duration::from_secs(1));
        let phase = spread.mul_f64(rand::random::<f64>());
        let mut next = Instant::now() + phase;
        let mut failures: u32 = 0;
        let mut reported: Reported = None;
        loop {
            // A tick already due is polled at once: tokio's timer rounds every sleep up to
            // its next millisecond, which would cap an overrunning device at ~1,000 polls/s.
            if next > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = self.stop.changed() => return,
                }
            }
            if *self.stop.borrow() {
                return;
            }
            let Some(batch) = self.poll_once(&mut failures, &mut reported).await else {
                return;
            };
            // The send waits while the pipeline is backed up (a full outbox): a stop must
            // still end the task. A batch not yet sent is polled again at the next start.
            tokio::select! {
                sent = self.ingest.send(batch) => if sent.is_err() { return },
                _ = self.stop.changed() => return,
            }
            // Offline devices are polled less often: interval × 2, 4, 8... up to backoff_max.
            let step = if reported == Some(false) {
                let doublings = failures.saturating_sub(self.device.offline_after_failures) + 1;
                interval
                    .saturating_mul(1 << doublings.min(16))
                    .min(self.device.backoff_max.max(interval))
            } else {
                interval
            };
            next = next_tick(next, step, Instant::now());
        }
    }

    /// Polls once and builds the batch to submit. `None` when stopping.
    async fn poll_once(&mut self, failures: &mut u32, reported: &mut Reported) -> Option<Batch> {
        let now = now_ms();
        let tags_before = self.tags.clone();
        // A TCP device holds one of the concurrency permits; a serial device holds its line.
        let _permit;
        let mut bus;
        let link: &mut Link = match &mut self.link {
            LinkHandle::Own(link) => {
                _permit = self.permits.acquire().await.ok()?;
                link
            }
            LinkHandle::Shared(shared) => {
                bus = shared.lock().await;
                &mut bus
            }
        };
        let before = link.connects;
        let poll = self.device.poll(link, &mut self.tags, now).await;
        count_reconnects(&self.status, before, link.connects);
        if !Arc::ptr_eq(&tags_before, &self.tags) {
            self.status.set_tags(&self.tags);
        }
        self.status
            .requests
            .fetch_add(u64::from(poll.requests), Ordering::Relaxed);
        for reason in &poll.errors {
            metrics::counter!("citygate_modbus_errors_total", "reason" => *reason).increment(1);
        }
        let failed = poll.failure.is_some();
        let error = poll
            .failure
            .as_ref()
            .map(|e| e.to_string())
            .or_else(|| poll.dead_letters.first().map(|d| d.detail.clone()));
        self.status.record_poll(now, failed, error.clone());

        let mut batch = Batch {
            source: CompactString::const_new(SOURCE),
            received_at: now,
            readings: poll.readings,
            payloads: Vec::new(),
            dead_letters: poll.dead_letters,
            devices: Vec::new(),
        };
        let d = &self.device;
        if failed {
            *failures = failures.saturating_add(1);
            if *failures >= d.offline_after_failures && *reported != Some(false) {
                let why = error.unwrap_or_default();
                warn!(
                    sensor = %d.sensor, address = %d.endpoint, unit = d.unit,
                    "modbus device offline after {failures} failed polls: {why}"
                );
                batch.devices.push(DeviceHealth {
                    sensor: d.sensor.clone(),
                    down: Some(why),
                    failures: *failures,
                    at: now,
                });
                *reported = Some(false);
                self.status.set_up(false);
            }
        } else {
            if *reported == Some(false) {
                info!(sensor = %d.sensor, address = %d.endpoint, unit = d.unit,
                    "modbus device answers again");
            }
            if *reported != Some(true) {
                batch.devices.push(DeviceHealth {
                    sensor: d.sensor.clone(),
                    down: None,
                    failures: 0,
                    at: now,
                });
                *reported = Some(true);
            }
            *failures = 0;
            self.status.set_up(true);
        }
        Some(batch)
    }
}

fn count_reconnects(status: &DeviceStatus, before: u64, after: u64) {
    // The first connection is not a reconnect.
    let new = after - before;
    let re = if before == 0 {
        new.saturating_sub(1)
    } else {
        new
    };
    if re > 0 {
        status.reconnects.fetch_add(re, Ordering::Relaxed);
        metrics::counter!("citygate_modbus_reconnects_total").increment(re);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_next_tick_keeps_to_the_grid_and_skips_what_a_slow_poll_overran() {
        let t0 = Instant::now();
        // on time: one step on
        assert_eq!(next_tick(t0, 1000 * MS, t0 + 10 * MS), t0 + 1000 * MS);
        // the poll took 2.5 steps: ticks 1 and 2 are skipped, no burst
        assert_eq!(next_tick(t0, 1000 * MS, t0 + 2500 * MS), t0 + 3000 * MS);
        // exactly on the next tick: that one is overrun too
        assert_eq!(next_tick(t0, 1000 * MS, t0 + 1000 * MS), t0 + 2000 * MS);
        // 1 ms is still a grid the timer can keep
        assert_eq!(next_tick(t0, MS, t0 + 3 * MS / 2), t0 + 2 * MS);
    }

    #[test]
    fn a_step_shorter_than_the_timer_means_back_to_back() {
        let t0 = Instant::now();
        let step = Duration::from_micros(50);
        let now = t0 + Duration::from_micros(90);
        assert_eq!(next_tick(t0, step, now), now);
        // not overrun either: the timer could not wait 30 µs, so it goes now
        let early = t0 + Duration::from_micros(20);
        assert_eq!(next_tick(t0, step, early), early);
    }
}
