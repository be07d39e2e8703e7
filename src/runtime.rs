//! The tokio runtimes: the current-thread one of every short command, the small multi-thread
//! one that serves the agent, built by one function and stopped without waiting for idle
//! blocking threads; and the one way to say "now plus a duration" on tokio's clock.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long the blocking pool keeps threads of finished tasks around when the runtime stops:
/// the process exits right after, so nothing is worth waiting for.
const RUNTIME_SHUTDOWN_WAIT: Duration = Duration::from_millis(50);

/// Runs `work` on tokio's current-thread runtime, the runtime of every short command: they
/// make a handful of requests at most, so worker threads would only add memory; blocking work
/// goes to tokio's blocking pool, which starts its threads on demand.
pub(crate) fn block_on<T, E: From<NoRuntime>>(
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    run_on(tokio::runtime::Builder::new_current_thread(), work)
}

/// At most this many worker threads serve the agent's connections.
pub(crate) const SERVING_WORKERS: usize = 2;

/// Runs `work` on a multi-thread runtime of up to [`SERVING_WORKERS`] workers (one per CPU the
/// process may use): the agent's runtime, whose health server may answer many kept-alive
/// connections at once. Most of a request's cost is the kernel's TCP work, done on the thread
/// that reads and writes; on a busy host one thread gets one share of the CPU, so a second
/// worker answers such a load up to twice as fast. It costs about 1 MiB of resident memory
/// under load (its stack and allocator arena). With one CPU this is one worker.
pub(crate) fn block_on_serving<T, E: From<NoRuntime>>(
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(cpus.clamp(1, SERVING_WORKERS));
    run_on(builder, work)
}

/// Builds the runtime `builder` describes, runs `work` to its end on it, and stops it without
/// waiting for idle blocking threads.
fn run_on<T, E: From<NoRuntime>>(
    mut builder: tokio::runtime::Builder,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let runtime = builder.enable_all().build().map_err(NoRuntime)?;
    let result = runtime.block_on(work);
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_WAIT);
    result
}

/// The runtime could not be built (no threads, no epoll).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime: {0}")]
pub struct NoRuntime(std::io::Error);

/// Now plus `d` on tokio's clock, or, when that does not fit, a time so far ahead (about 30
/// years) that it never comes: a pause or limit too long to add is waited as "never".
pub(crate) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn after_a_huge_duration_is_far_ahead_not_a_panic() {
        let now = Instant::now();
        assert_eq!(after(Duration::from_secs(5)), now + Duration::from_secs(5));
        assert!(after(Duration::MAX) > now + Duration::from_secs(29 * 365 * 24 * 3600));
    }
}
