//! The PostHog capture body: Butler's `telemetry sent` event, key for key.
//!
//! `properties` holds exactly the keys of Butler's documented event (flat `system_*` and
//! `feature_*`, and the same data nested in `telemetry_json`), plus PostHog's `$` controls:
//! `$lib`, `$lib_version`, `$process_person_profile: false` (no person profile for an anonymous
//! instance) and `$geoip_disable` (on by default, so PostHog does not geolocate the sender).
//!
//! [`build`] is pure: time and UUID are parameters, so tests pin them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::host::HostFacts;
use crate::random::{self, NoRandom};
use crate::telemetry::features::Features;

/// PostHog event name Butler uses; dashboards key on it.
pub(crate) const EVENT_NAME: &str = "telemetry sent";
/// `service` property.
pub(crate) const SERVICE: &str = "butler";
/// `$lib`: which client sent the event.
pub(crate) const LIB: &str = "butler-agent";
/// The agent's version (`$lib_version`; never `serviceVersion`, which is Butler's).
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The runtime's version string (`system_nodeVersion`), e.g. `rustc 1.95.0`.
pub(crate) const RUNTIME_VERSION: &str = env!("BUTLER_AGENT_RUSTC_VERSION");

/// Everything an event is made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventInput<'a> {
    pub(crate) api_key: &'a str,
    pub(crate) instance_id: &'a str,
    pub(crate) host: &'a HostFacts,
    pub(crate) features: &'a Features,
    pub(crate) geoip_disable: bool,
    /// `serviceVersion`: the version of the Butler served, or `unknown` (see [`crate::butler`]).
    pub(crate) service_version: &'a str,
}

/// Builds the capture body.
pub(crate) fn build(input: EventInput<'_>, uuid: Uuid, now: SystemTime) -> Value {
    let h = input.host;
    let mut props = Map::new();
    props.insert("service".into(), json!(SERVICE));
    props.insert("serviceVersion".into(), json!(input.service_version));
    props.insert("system_id".into(), json!(input.instance_id));
    props.insert(
        "system_isRunningInDocker".into(),
        json!(h.is_running_in_docker),
    );
    props.insert("system_virtual".into(), json!(h.is_virtual));
    props.insert("system_arch".into(), json!(h.arch));
    props.insert("system_nodeVersion".into(), json!(RUNTIME_VERSION));
    props.insert("system_platform".into(), json!(h.platform));
    props.insert("system_distro".into(), json!(h.distro));
    props.insert("system_codename".into(), json!(h.codename));
    props.insert("system_release".into(), json!(h.release));
    for (k, v) in &input.features.flat {
        props.insert(k.clone(), v.clone());
    }
    props.insert(
        "telemetry_json".into(),
        json!({
            "enabledFeatures": { "feature": input.features.nested },
            "system": {
                "arch": h.arch,
                "codename": h.codename,
                "distro": h.distro,
                "id": input.instance_id,
                "isRunningInDocker": h.is_running_in_docker,
                "nodeVersion": RUNTIME_VERSION,
                "platform": h.platform,
                "release": h.release,
                "virtual": h.is_virtual,
            },
        }),
    );
    props.insert("$lib".into(), json!(LIB));
    props.insert("$lib_version".into(), json!(VERSION));
    props.insert("$process_person_profile".into(), json!(false));
    props.insert("$geoip_disable".into(), json!(input.geoip_disable));

    json!({
        "api_key": input.api_key,
        "event": EVENT_NAME,
        "distinct_id": input.instance_id,
        "uuid": uuid.hyphenated().to_string(),
        "timestamp": rfc3339_millis(now),
        "properties": props,
    })
}

/// A UUID v7 for the event, from the OS's random source. Fallible on purpose: where
/// `/dev/urandom` is missing, `Uuid::now_v7()` would panic; this returns an error instead.
pub(crate) fn new_uuid(now: SystemTime) -> Result<Uuid, NoRandom> {
    let random: [u8; 10] = random::bytes("the event's UUID")?;
    let millis = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64;
    Ok(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-25T00:00:00.000Z`.
pub(crate) fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests;
