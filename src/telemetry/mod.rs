//! Telemetry: feature flags, the event, the opt-out decision, and its delivery (privacy
//! guard, sender with retries, schedule, audit log, state file).

pub(crate) mod audit;
pub mod cycle;
pub mod features;
pub mod guard;
pub(crate) mod optout;
pub(crate) mod payload;
pub(crate) mod retry;
pub(crate) mod schedule;
pub mod sender;
pub(crate) mod state;

use std::time::SystemTime;

use serde_json::Value;

use crate::config::LoadedConfig;
use crate::host::identifying::Identifying;
use crate::host::{self, HostFacts, Roots, Syscalls};
use crate::instance_id::{self, InstanceId};
use features::Features;

/// What one telemetry cycle knows: host facts, the instance ID, the feature flags, and every
/// identifying value read on the way (for the privacy guard, which reads nothing itself).
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) host: HostFacts,
    pub(crate) id: InstanceId,
    pub(crate) features: Features,
    /// What the host showed that identifies it (the ID's inputs among them).
    pub(crate) seen: Identifying,
    /// The Docker engine's ID, when the ID asked the engine.
    pub(crate) engine_id: Option<String>,
    /// The state directory's secret, when it holds one.
    pub(crate) secret: Option<String>,
    /// What the ID's derivation says the user should fix; the caller logs them.
    pub(crate) id_warnings: Vec<instance_id::Warning>,
}

/// Gathers host facts and the host's identifying values (each read once), derives the ID and
/// the flags. Never fails: unknown facts are `unknown`.
pub(crate) fn gather(config: &LoadedConfig, roots: &Roots, sys: &dyn Syscalls) -> Snapshot {
    let host = host::detect_with(roots, sys);
    let seen = Identifying::read(roots, sys);
    let derived = instance_id::derive(roots, &host, &seen, id_config(config), sys);
    let features = features::derive(&config.tree);
    Snapshot {
        host,
        id: derived.id,
        features,
        seen,
        engine_id: derived.engine_id,
        secret: derived.secret,
        id_warnings: derived.warnings,
    }
}

/// What the instance ID reads from the configuration.
pub(crate) fn id_config(config: &LoadedConfig) -> instance_id::IdConfig<'_> {
    instance_id::IdConfig {
        qrs_host: config.butler.qrs_host.as_deref(),
        state_dir: config.agent.state_dir.as_deref(),
    }
}

/// Builds the capture body for a snapshot, stamped now with a fresh UUID v7. `service_version`
/// is Butler's version as [`crate::butler::service_version`] found it.
pub(crate) fn event(
    config: &LoadedConfig,
    snapshot: &Snapshot,
    service_version: &str,
    now: SystemTime,
) -> Result<Value, crate::random::NoRandom> {
    let uuid = payload::new_uuid(now)?;
    Ok(payload::build(
        payload::EventInput {
            api_key: &config.agent.posthog_key,
            instance_id: &snapshot.id.id,
            host: &snapshot.host,
            features: &snapshot.features,
            geoip_disable: config.agent.geoip_disable,
            service_version,
        },
        uuid,
        now,
    ))
}

#[cfg(test)]
mod tests;
