//! One way to stop: the stop token every server and loop takes.
//!
//! Every server and loop ([`crate::health::serve`], [`crate::sink::serve`], the telemetry
//! schedule, the sender's pauses between retries) takes its stop trigger as a parameter of
//! type `impl Future<Output = ()>` (as mini-redis does) and stops when it completes. The
//! trigger is usually [`Stop::wait`] of a token from [`stop_channel`]; tests pass any future.
//! What pulls the trigger is a signal ([`crate::signals`]).

use std::future::Future;

use tokio::sync::watch;

// The sink still names these here; they live in their own modules.
pub(crate) use crate::runtime::block_on;
pub(crate) use crate::signals::Signals;

/// Creates a stop trigger and its token.
pub(crate) fn stop_channel() -> (StopTrigger, Stop) {
    let (tx, rx) = watch::channel(false);
    (StopTrigger(tx), Stop(rx))
}

/// Sets the stop flag; dropping it does not (a forgotten trigger must not stop anything).
#[derive(Debug)]
pub(crate) struct StopTrigger(watch::Sender<bool>);

impl StopTrigger {
    /// Asks every holder of a [`Stop`] token to stop.
    pub(crate) fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// The stop token: cloned to each task, which turns it into its trigger with [`Stop::wait`].
#[derive(Debug, Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Completes once the stop flag is set; never if the trigger is dropped without stopping.
    pub(crate) fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            if rx.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
