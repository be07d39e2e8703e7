//! One way to stop: the runtime, the stop signals, and the stop token every server and loop
//! takes.
//!
//! Stop signals are SIGTERM (what `docker stop` and the kubelet send) and SIGINT (Ctrl-C).
//!
//! A process running as PID 1 in a container gets no default action for SIGTERM: unless it
//! installs a handler the signal is ignored, `docker stop` waits its full 10 s and then kills.
//! So the handlers are installed first thing in `run`, before anything that can take time, and
//! a signal that arrives during start-up is not lost but waits in the stream.

//!
//! Every server and loop ([`crate::health::serve`], [`crate::sink::serve`], the telemetry
//! schedule, the sender's pauses between retries) takes its stop trigger as a parameter of
//! type `impl Future<Output = ()>` (as mini-redis does) and stops when it completes. The
//! trigger is usually [`Stop::wait`] of a token from [`stop_channel`]; tests pass any future.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Failure;

/// How long the blocking pool keeps threads of finished tasks around when the runtime stops:
/// the process exits right after, so nothing is worth waiting for.
const RUNTIME_SHUTDOWN_WAIT: Duration = Duration::from_millis(50);

/// Runs `work` on tokio's current-thread runtime, the runtime of every short command: they
/// make a handful of requests at most, so worker threads would only add memory; blocking work
/// goes to tokio's blocking pool, which starts its threads on demand.
pub(crate) fn block_on<T>(work: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    run_on(tokio::runtime::Builder::new_current_thread(), work)
}

/// At most this many worker threads serve the agent's connections.
pub const SERVING_WORKERS: usize = 2;

/// Runs `work` on a multi-thread runtime of up to [`SERVING_WORKERS`] workers (one per CPU the
/// process may use): the agent's runtime, whose health server may answer many kept-alive
/// connections at once. Most of a request's cost is the kernel's TCP work, done on the thread
/// that reads and writes; on a busy host one thread gets one share of the CPU, so a second
/// worker answers such a load up to twice as fast. It costs about 1 MiB of resident memory
/// under load (its stack and allocator arena). With one CPU this is one worker.
pub(crate) fn block_on_serving<T>(
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    limit_malloc_arenas();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(cpus.clamp(1, SERVING_WORKERS));
    run_on(builder, work)
}

/// glibc's allocator gives a thread that finds the arena busy an arena of its own, and each
/// arena keeps what was freed into it. The agent's threads (main, workers, blocking pool)
/// allocate little and briefly, so one arena serves them all: after 64 connections of load
/// the agent then holds about 0.8 MiB less anonymous memory (2.6 instead of 3.3–3.9 MiB,
/// three runs each), with no measurable cost per request (each thread's cache of small blocks
/// takes most allocations without the arena's lock). `MALLOC_ARENA_MAX`, when set, wins.
const MALLOC_ARENAS: i32 = 1;

/// Applies [`MALLOC_ARENAS`]; runs before the runtime starts its threads.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter, M_ARENA_MAX one glibc knows; on
        // failure it returns 0 and the default stays, which is harmless.
        unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
}

/// Builds the runtime `builder` describes, runs `work` to its end on it, and stops it without
/// waiting for idle blocking threads.
fn run_on<T>(
    mut builder: tokio::runtime::Builder,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let runtime = builder.enable_all().build().map_err(Failure::Runtime)?;
    let result = runtime.block_on(work);
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_WAIT);
    result
}

/// Creates a stop trigger and its token.
pub fn stop_channel() -> (StopTrigger, Stop) {
    let (tx, rx) = watch::channel(false);
    (StopTrigger(tx), Stop(rx))
}

/// Sets the stop flag; dropping it does not (a forgotten trigger must not stop anything).
#[derive(Debug)]
pub struct StopTrigger(watch::Sender<bool>);

impl StopTrigger {
    /// Asks every holder of a [`Stop`] token to stop.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// The stop token: cloned to each task, which turns it into its trigger with [`Stop::wait`].
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Completes once the stop flag is set; never if the trigger is dropped without stopping.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            if rx.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The installed handlers; [`Signals::recv`] waits for the next stop signal.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Needs a running tokio runtime with I/O enabled.
    pub(crate) fn install() -> Result<Self, Failure> {
        Self::try_install().map_err(Failure::Signals)
    }

    fn try_install() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Waits for the next SIGTERM or SIGINT and returns its name, for the log.
    pub(crate) async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                // Without a Ctrl-C handler there is nothing to wait for; never return.
                Err(_) => std::future::pending().await,
            }
        }
    }
}
