//! Placeholder with the scheduler's interface so `run` can start it; the delivery work replaces it.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{ConfigSource, Env, LoadedConfig};
use crate::host::Roots;

/// Everything the scheduler needs, handed over by `run`.
pub struct ScheduleContext {
    pub source: ConfigSource,
    pub initial: LoadedConfig,
    pub env: Arc<dyn Env>,
    pub roots: Roots,
}

/// Waits for shutdown; sends nothing.
pub async fn run(_ctx: ScheduleContext, mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
