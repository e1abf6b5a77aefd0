//! Modbus TCP and RTU servers in front of a [`Sim`], on the tokio-modbus server.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Response, SlaveRequest};

use super::sim::{Answer, Sim, Transport};

/// Serial line parity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

impl std::str::FromStr for Parity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Parity::None),
            "even" => Ok(Parity::Even),
            "odd" => Ok(Parity::Odd),
            _ => Err(format!("unknown parity {s:?} (none, even or odd)")),
        }
    }
}

/// Serial line settings of the RTU server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialSettings {
    pub baud: u32,
    pub parity: Parity,
    /// 7 or 8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
}

impl Default for SerialSettings {
    /// 9600 baud, 8N1.
    fn default() -> Self {
        SerialSettings {
            baud: 9600,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open serial device {path}: {source}")]
    OpenSerial {
        path: String,
        source: tokio_serial::Error,
    },
    #[error("unsupported serial setting: {0}")]
    Setting(String),
    #[error("server stopped with an error: {0}")]
    Io(#[from] io::Error),
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running server. Dropping it stops the server too, without waiting.
#[derive(Debug)]
pub struct ServerHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl ServerHandle {
    /// Stops serving (open TCP connections are closed) and waits until the server is down.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }

    /// Waits until the server ends by itself (an accept or serial error); it does not stop it.
    pub async fn wait(self) -> Result<(), ServeError> {
        let _keep_serving = self.stop;
        self.task.await??;
        Ok(())
    }

    /// Whether the server has ended by itself.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Serves every unit of `sim` on `listener`, like a Modbus TCP gateway in front of a bus.
/// Needs a tokio runtime.
pub fn serve_tcp(listener: TcpListener, sim: Sim) -> ServerHandle {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = tokio_modbus::server::tcp::Server::new(listener);
        let on_connected = |stream: TcpStream, _addr| {
            let sim = sim.clone();
            async move {
                let closing = Arc::new(AtomicBool::new(false));
                let service = UnitService {
                    sim,
                    transport: Transport::Tcp,
                    closing: Some(closing.clone()),
                };
                io::Result::Ok(Some((service, ClosableStream { stream, closing })))
            }
        };
        // Dropping `serve` (on stop) cancels the connection tasks it spawned.
        tokio::select! {
            served = server.serve(&on_connected, |_err| {}) => served,
            _ = stopped => Ok(()),
        }
    });
    ServerHandle { stop, task }
}

/// Serves every unit of `sim` over Modbus RTU on the serial device at `path`. Units that
/// are not in `sim` stay silent, as absent devices on a bus do. Needs a tokio runtime.
pub fn serve_rtu(
    path: &str,
    settings: &SerialSettings,
    sim: Sim,
) -> Result<ServerHandle, ServeError> {
    let data_bits = match settings.data_bits {
        7 => tokio_serial::DataBits::Seven,
        8 => tokio_serial::DataBits::Eight,
        n => return Err(ServeError::Setting(format!("{n} data bits (7 or 8)"))),
    };
    let stop_bits = match settings.stop_bits {
        1 => tokio_serial::StopBits::One,
        2 => tokio_serial::StopBits::Two,
        n => return Err(ServeError::Setting(format!("{n} stop bits (1 or 2)"))),
    };
    let parity = match settings.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let builder = tokio_serial::new(path, settings.baud)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity);
    let serial =
        tokio_serial::SerialStream::open(&builder).map_err(|source| ServeError::OpenSerial {
            path: path.to_string(),
            source,
        })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let service = UnitService {
        sim,
        transport: Transport::Rtu,
        closing: None,
    };
    let task = tokio::spawn(async move {
        let server = tokio_modbus::server::rtu::Server::new(serial);
        tokio::select! {
            served = server.serve_forever(service) => served,
            _ = stopped => Ok(()),
        }
    });
    Ok(ServerHandle { stop, task })
}

/// The tokio-modbus service of one TCP connection or one serial line.
struct UnitService {
    sim: Sim,
    transport: Transport,
    /// Set to make the connection fail its next write (TCP only).
    closing: Option<Arc<AtomicBool>>,
}

type Reply = Result<Option<Response>, ExceptionCode>;

impl Service for UnitService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let (answer, delay) = self.sim.answer(req.slave, &req.request, self.transport);
        let closing = self.closing.clone();
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match answer {
                Answer::Reply(reply) => reply.map(Some),
                Answer::Silent => Ok(None),
                Answer::DropConnection => {
                    if let Some(closing) = closing {
                        closing.store(true, Ordering::SeqCst);
                    }
                    // Never sent: the write fails and the server closes the connection.
                    Err(ExceptionCode::ServerDeviceFailure)
                }
            }
        })
    }
}

/// A TCP stream whose writes fail once `closing` is set. The tokio-modbus server offers no
/// way to close a connection from a service; a failed write makes it drop the stream.
struct ClosableStream {
    stream: TcpStream,
    closing: Arc<AtomicBool>,
}

impl AsyncRead for ClosableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClosableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closing.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "dropped by fault injection",
            )));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
