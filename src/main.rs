//! The citygate binary: parse the command line, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use citygate::catalog::table::{render, Lang};
use citygate::config::{self, Config, Source};

#[derive(Parser)]
#[command(
    name = "citygate",
    version,
    about = "Smart-city sensor ingestion gateway"
)]
struct Cli {
    /// Config file(s) layered over the built-in defaults, in order. Environment variables
    /// CITYGATE__SECTION__KEY override both.
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    config: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGINT or SIGTERM.
    Run,
    /// Check the configuration: print every problem with its key path, exit non-zero if any.
    CheckConfig,
    /// Print the sensor kinds, metrics, units and rules.
    Catalog {
        /// Language of display names.
        #[arg(long, value_enum, default_value = "en")]
        lang: LangArg,
    },
    /// Run the gateway with a simulated fleet of every sensor kind and scripted incidents.
    Demo(citygate::demo::DemoArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LangArg {
    En,
    Zh,
}

fn load(paths: &[PathBuf]) -> Result<Config, ExitCode> {
    let sources: Vec<Source> = paths.iter().cloned().map(Source::File).collect();
    config::load(&sources).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig => match load(&cli.config) {
            Ok(c) => {
                println!(
                    "configuration OK: {} sensor kinds, {} configured sensors",
                    c.catalog.len(),
                    c.sensors.len()
                );
                // The same warnings `run` logs at startup; they do not fail the check.
                for w in citygate::security::config_file_warnings(&cli.config)
                    .into_iter()
                    .chain(citygate::security::startup_warnings(&c))
                {
                    println!("warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Catalog { lang } => match load(&cli.config) {
            Ok(c) => {
                let lang = match lang {
                    LangArg::En => Lang::En,
                    LangArg::Zh => Lang::Zh,
                };
                print!("{}", render(&c, lang));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run => {
            one_malloc_arena();
            let config = match load(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            citygate::telemetry::init_logging();
            for w in citygate::security::config_file_warnings(&cli.config) {
                tracing::warn!("{w}");
            }
            let workers = config.gateway.worker_threads;
            run_async(workers, citygate::demo::run_gateway(config))
        }
        Command::Demo(args) => {
            citygate::telemetry::init_logging();
            run_async(0, citygate::demo::run(args, cli.config))
        }
    }
}

/// Runs `fut` on a multi-threaded runtime of `workers` threads (0: one per core, or
/// `TOKIO_WORKER_THREADS`).
fn run_async(
    workers: usize,
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(fut);
    // A shutdown that gave up (gateway.shutdown_timeout) may leave blocking work behind:
    // do not wait for it, the bound is the point.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Asks glibc for one malloc arena instead of up to eight per core. The gateway's state is
/// built by one pipeline task but allocated from whichever arena its worker thread had, and
/// each arena keeps its own free memory: at 100,000 sensors one arena peaked 8 MiB lower
/// (`scripts/bench-resources --no-startup`: 195.1 -> 187.2 MiB) at the same CPU per reading
/// (4.09 / 4.24 -> 4.27 / 4.19 µs). Called before any thread starts. An arena count set in
/// the environment (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`) is
/// left to glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    const M_ARENA_MAX: std::ffi::c_int = -8;
    extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    let set_by_env = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || tunables.to_string_lossy().contains("malloc.arena_max");
    if !set_by_env {
        // SAFETY: mallopt only sets a glibc malloc parameter; no thread is running yet.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}
