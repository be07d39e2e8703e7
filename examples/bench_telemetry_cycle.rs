//! Benchmark helper: the cost of one telemetry cycle, measured in process.
//!
//! A cycle is what the agent does every interval before the network: gather host facts and the
//! instance ID, derive the feature flags, build the event, serialize it and run the privacy
//! guard on those bytes ([`telemetry::cycle::prepare`], the function each cycle calls).
//! The config is loaded once, as the agent does at start-up. `bench/run` runs this example
//! twice under callgrind (with 1 and with N+1 cycles) so the instruction count of one cycle is
//! the difference, free of process start-up; it also runs it natively for wall and CPU time.
//!
//! Usage: `bench_telemetry_cycle [--config FILE] [--root DIR] CYCLES`
//! Prints one JSON object: cycles, wall and CPU nanoseconds per cycle, body size.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use butler_agent::config::{self, ConfigSource, ProcessEnv};
use butler_agent::host::{RealSyscalls, Roots};
use butler_agent::telemetry;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_telemetry_cycle: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    const USAGE: &str = "usage: bench_telemetry_cycle [--config FILE] [--root DIR] CYCLES";
    let mut config_path: Option<PathBuf> = None;
    let mut root = PathBuf::from("/");
    let mut cycles: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config_path = Some(args.next().ok_or(USAGE)?.into()),
            "--root" => root = args.next().ok_or(USAGE)?.into(),
            n => {
                let parsed = n
                    .parse()
                    .map_err(|_| format!("{n:?} is not a number of cycles; {USAGE}"))?;
                cycles = Some(parsed);
            }
        }
    }
    let cycles = cycles.ok_or(USAGE)?;

    let source = config_path.map_or(ConfigSource::Defaults, ConfigSource::Flag);
    let cfg = config::load(source, &ProcessEnv).map_err(|e| e.to_string())?;
    let roots = Roots::at(&root);

    let cpu_start = thread_cpu_ns();
    let wall_start = Instant::now();
    let mut body_len = 0;
    for _ in 0..cycles {
        let body = telemetry::cycle::prepare(&cfg, &roots, &RealSyscalls, "16.0.4")
            .body
            .map_err(|e| format!("the cycle failed: {e}"))?;
        body_len = std::hint::black_box(body).len();
    }
    let wall = wall_start.elapsed().as_nanos();
    let cpu = match (cpu_start, thread_cpu_ns()) {
        (Some(a), Some(b)) => format!("{}", (b - a) / u128::from(cycles.max(1))),
        _ => "null".to_string(),
    };
    println!(
        "{{\"cycles\":{cycles},\"wall_ns_per_cycle\":{},\"cpu_ns_per_cycle\":{cpu},\"body_bytes\":{body_len}}}",
        wall / u128::from(cycles.max(1)),
    );
    Ok(())
}

/// On-CPU time of this thread in nanoseconds (the first field of schedstat), so the figure is
/// CPU time at nanosecond resolution rather than 10 ms clock ticks. `None` off Linux.
fn thread_cpu_ns() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
