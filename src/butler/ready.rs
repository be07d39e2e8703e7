//! The `butler` readiness check: `/readyz` fails while Butler does not answer.
//!
//! One background task asks Butler every [`PERIOD`] and stores the result in the
//! [`Readiness`] flags, which `/readyz` reads. So Butler gets at most 60 / [`PERIOD`] requests a
//! minute (12) from this check however often `/readyz` is probed — well under Butler's rate
//! limit of 100 — and `/readyz` follows Butler within one period. `/livez` and `/health` never
//! look at it: a Butler outage must not get the sidecar restarted.

use std::future::Future;
use std::time::Duration;

use super::probe::{self, PingError};
use crate::config::butler::Target;
use crate::health::{ButlerCheck, Readiness};

/// How long one result is used: the check's request rate and `/readyz`'s delay in following
/// Butler.
pub(crate) const PERIOD: Duration = Duration::from_secs(5);

/// Asks Butler once. Pure apart from the request: `Ok` when Butler answers as Butler.
pub(crate) async fn check_once(client: &reqwest::Client, target: &Target) -> Result<(), NotReady> {
    let result = match target {
        Target::Health(port) => probe::health(client, *port).await,
        Target::Ping(api) => match probe::ping(client, &api.url).await {
            Ok(_) => Ok(()),
            Err(e) if e.butler_is_up() => Ok(()),
            Err(e) => Err(e),
        },
    };
    result.map_err(|error| NotReady {
        target: target.clone(),
        error,
    })
}

/// Butler did not answer the check as Butler; says what was asked (never the URL) and what
/// came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{target} {error}")]
pub(crate) struct NotReady {
    target: Target,
    error: PingError,
}

/// Checks Butler every [`period`] until `shutdown` completes, setting the `butler` check of
/// `readiness`; logs once per change (never the URL).
pub(crate) async fn watch(
    target: Target,
    client: reqwest::Client,
    readiness: Readiness,
    period: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last: Option<Result<(), NotReady>> = None;
    loop {
        let result = tokio::select! {
            r = check_once(&client, &target) => r,
            _ = shutdown.as_mut() => return,
        };
        if last.as_ref() != Some(&result) {
            match &result {
                Ok(()) => tracing::info!("butler check: {target} answers; /readyz may pass"),
                Err(why) => tracing::warn!("butler check: {why}; /readyz fails until it answers"),
            }
        }
        readiness.set_butler(match &result {
            Ok(()) => ButlerCheck::Ok,
            Err(why) => ButlerCheck::Failed(why.to_string().into()),
        });
        last = Some(result);
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.as_mut() => return,
        }
    }
}
