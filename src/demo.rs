//! `citygate run` and `citygate demo`.
//!
//! The demo is the default run plus a simulated fleet of every sensor kind (from the
//! `citygate-sim` library) with scripted incidents, so that alerts of every severity show up
//! on the console within the first minute. Its sensors are written into a config overlay, so
//! they go through the same validation as a user's config.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;

use tracing::{info, warn};

use crate::app::{now_ms, Gateway, Ingest};
use crate::codec::{self, DecodeContext, Format};
use crate::config::{self, Config, Source};
use crate::model::{Batch, DeadLetter};

/// Options of `citygate demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Simulated sensors per kind.
    #[arg(long, default_value_t = 3)]
    pub per_kind: usize,
    /// How often each simulated sensor reports, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub interval_ms: i64,
    /// Seed of the simulation (the same seed gives the same signals).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Leave out the scripted incidents.
    #[arg(long)]
    pub no_incidents: bool,
    /// Stop after this many seconds instead of at Ctrl-C.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Where the demo keeps its SQLite store.
    #[arg(long, default_value = "data/demo")]
    pub data_dir: PathBuf,
    /// Keep the store of an earlier demo run instead of starting afresh.
    #[arg(long)]
    pub keep_data: bool,
    /// HTTP address to listen on (overrides http.listen).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// `citygate run`: serve until SIGINT or SIGTERM, then drain and stop.
pub async fn run_gateway(config: Config) -> anyhow::Result<()> {
    let gateway = Gateway::start(config, None).await?;
    info!(addr = %gateway.addr(), store = %gateway.db_path().display(), "citygate is running");
    shutdown_signal().await;
    info!("shutting down: committing what was taken");
    gateway.shutdown().await
}

pub async fn run(_a: DemoArgs, _f: Vec<PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!("x")
}
/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
