//! The tokio runtimes: the current-thread one of every command (the agent's too), and the
//! current-thread one on a thread of its own that serves the agent's health endpoint, built
//! and stopped without waiting for idle blocking threads; and the one way to say "an instant
//! plus a duration" on tokio's clock.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::Instant;

/// How long the blocking pool keeps threads of finished tasks around when the runtime stops:
/// the process exits right after, so nothing is worth waiting for.
const RUNTIME_SHUTDOWN_WAIT: Duration = Duration::from_millis(50);

/// How long an idle thread of the blocking pool waits for more work before it ends: for the
/// agent's life. A thread that has run blocking work once (the host facts at start) stays,
/// asleep, for the next (a config re-read, the next cycle's facts, 12 hours later): no thread
/// is started then, which under a pids limit (`docker run --pids-limit`) may be impossible,
/// and tokio answers a thread that cannot start with a panic of the task that asked for it.
/// (tokio's default is 10 s.) A sleeping thread costs a few KiB and no wake-ups.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Runs `work` on tokio's current-thread runtime, the runtime of every command: they make a
/// handful of requests at a time at most, so worker threads would only add memory; blocking
/// work goes to tokio's blocking pool, which starts its threads on demand and keeps them
/// ([`BLOCKING_KEEP_ALIVE`]). (The agent's health server has its own: [`on_own_thread`].)
pub(crate) fn block_on<T, E: From<NoRuntime>>(
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let runtime = current_thread()?;
    let result = runtime.block_on(work);
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_WAIT);
    result
}

/// Runs the future `make` returns on a thread of its own (named `name`), on a current-thread
/// runtime of its own; returns that runtime's handle (to spawn more work there) and a future
/// that completes when it has ended: `true` when it returned, `false` when the thread could
/// not run it to its end (a panic). `make` is called
/// on that thread, inside its runtime, so sockets it registers belong to that runtime.
///
/// The agent's health server runs so: probes are answered by a thread that nothing else runs
/// on (no TLS handshake or telemetry work in its way), by one runtime whose tasks never move
/// between threads. Measured against two worker threads of a shared runtime: the same
/// requests per second with 64 kept-alive connections, about a fifth less CPU per request
/// with a new connection per request (as Docker and kubelet probe), and one thread less.
/// Kept-alive connections can move, between two requests, to a second such thread
/// (`connections::spare`), started only when one first does.
pub(crate) fn on_own_thread<Make, Fut>(
    name: &str,
    make: Make,
) -> Result<(Handle, impl Future<Output = bool> + Send + 'static), NoRuntime>
where
    Make: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    on_thread(std::thread::Builder::new().name(name.to_string()), make)
}

/// [`on_own_thread`] with the thread's `builder`. The runtime is built on the new thread (the
/// caller waits for that, a fraction of a millisecond): a thread that cannot start (a pids
/// limit, no memory for its stack) then leaves no runtime to drop on the caller's side, where
/// tokio forbids dropping one inside an async context (it panics). Either failure is an error.
fn on_thread<Make, Fut>(
    builder: std::thread::Builder,
    make: Make,
) -> Result<(Handle, impl Future<Output = bool> + Send + 'static), NoRuntime>
where
    Make: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let (built, told) = std::sync::mpsc::sync_channel::<std::io::Result<Handle>>(1);
    builder
        .spawn(move || {
            let runtime = match current_thread() {
                Ok(runtime) => runtime,
                Err(NoRuntime(e)) => {
                    let _ = built.send(Err(e));
                    return;
                }
            };
            let _ = built.send(Ok(runtime.handle().clone()));
            runtime.block_on(async move { make().await });
            // A closed receiver means nobody waits any more: nothing to tell.
            let _ = done.send(());
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN_WAIT);
        })
        .map_err(NoRuntime)?;
    match told.recv() {
        Ok(Ok(handle)) => Ok((handle, async move { ended.await.is_ok() })),
        Ok(Err(e)) => Err(NoRuntime(e)),
        Err(_) => Err(NoRuntime(std::io::Error::other(
            "its thread ended before building it",
        ))),
    }
}

/// A current-thread runtime with I/O and timers: the one kind of runtime the project uses.
/// Each is stopped with `shutdown_timeout(RUNTIME_SHUTDOWN_WAIT)`, not waiting for idle
/// blocking threads.
fn current_thread() -> Result<tokio::runtime::Runtime, NoRuntime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
        .map_err(NoRuntime)
}

/// The runtime could not be built (no threads, no epoll).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime: {0}")]
pub struct NoRuntime(std::io::Error);

/// Now plus `d` on tokio's clock ([`later`]).
pub(crate) fn after(d: Duration) -> Instant {
    later(Instant::now(), d)
}

/// `base` plus `d`, or, when that does not fit, a time so far ahead (about 30 years) that it
/// never comes: a pause or limit too long to add is waited as "never".
pub(crate) fn later(base: Instant, d: Duration) -> Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(Duration::from_secs(30 * 365 * 24 * 3600)))
        .unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that cannot start, asked for inside an async context (where the health server
    /// starts its second thread): an error, not a panic from dropping a runtime there.
    #[tokio::test]
    async fn a_thread_that_cannot_start_is_an_error_inside_an_async_context() {
        let huge_stack = std::thread::Builder::new().stack_size(usize::MAX / 2);
        let started = on_thread(huge_stack, || async {});
        assert!(
            started.is_err(),
            "a stack of half the address space cannot be mapped"
        );
        let (_, ok) = on_thread(std::thread::Builder::new(), || async {}).expect("a normal thread");
        assert!(ok.await, "its work ran to its end");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_huge_duration_is_far_ahead_not_a_panic() {
        let now = Instant::now();
        assert_eq!(after(Duration::from_secs(5)), now + Duration::from_secs(5));
        assert!(after(Duration::MAX) > now + Duration::from_secs(29 * 365 * 24 * 3600));
    }
}
