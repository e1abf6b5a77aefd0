//! Helpers shared by the modbus_* tests: a server on a free port, a socat pty pair, mbpoll.
#![allow(dead_code)] // each test file uses its own subset

use std::net::SocketAddr;
use std::process::Command;

use citygate_sim::modbus::{serve_tcp, ServerHandle, Sim};

/// `sim` served on 127.0.0.1 on a free port.
pub async fn tcp_server(sim: &Sim) -> (ServerHandle, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    (serve_tcp(listener, sim.clone()), addr)
}

pub use citygate_sim::pty::PtyPair;

/// What one run of mbpoll printed.
#[derive(Debug)]
pub struct Mbpoll {
    /// `[reference]: value` lines of stdout.
    pub values: Vec<(u32, String)>,
    pub stdout: String,
    pub stderr: String,
}

impl Mbpoll {
    pub fn f64s(&self) -> Vec<f64> {
        self.values
            .iter()
            .map(|(r, v)| {
                v.parse()
                    .unwrap_or_else(|_| panic!("mbpoll [{r}] {v:?} is not a number:\n{self:?}"))
            })
            .collect()
    }

    pub fn refs(&self) -> Vec<u32> {
        self.values.iter().map(|(r, _)| *r).collect()
    }
}

/// Runs mbpoll (polling once) with these arguments, off the async runtime's threads.
pub async fn mbpoll(args: &[&str]) -> Mbpoll {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || mbpoll_blocking(&args))
        .await
        .expect("mbpoll thread")
}

fn mbpoll_blocking(args: &[String]) -> Mbpoll {
    let out = match Command::new("mbpoll").arg("-1").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("mbpoll is not installed: install with: apt-get install mbpoll")
        }
        Err(e) => panic!("cannot run mbpoll: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let values = stdout
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix('[')?;
            let (reference, value) = rest.split_once("]:")?;
            Some((reference.parse().ok()?, value.trim().to_string()))
        })
        .collect();
    Mbpoll {
        values,
        stdout,
        stderr,
    }
}
