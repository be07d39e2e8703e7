//! Feature flags: which Butler features and API endpoints the config enables.
//!
//! The rules are Butler's, key by key, with one deliberate fix: a key that is absent gives JSON
//! `null` instead of Butler's string `"null"`. Only booleans leave the machine, so a mistyped
//! URL or password in a flag's place is never copied into the event:
//! - *true-only* keys (`heartbeat.enable`, `dockerHealthCheck.enable`, `uptimeMonitor.enable`,
//!   `uptimeMonitor.storeInInfluxdb.enable`, `webhookNotification.enable`, and the New Relic
//!   pair, true when either is `true`) give `false` for any present value other than `true`;
//! - *copied* keys (all others) give the boolean, or `null` for any other value;
//! - a non-boolean value at either kind also gives a warning naming the key (never the value).
//!
//! Pure: input is the config tree, output the flat and nested flags plus warnings.

use serde_json::{Map, Value};

/// How a config key becomes a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// The boolean as is; absent → null.
    Value,
    /// `true` when true, `false` when present and anything else; absent → null.
    TrueOnly,
}

/// A flat feature property read from one config key.
struct Simple {
    prop: &'static str,
    key: &'static str,
    rule: Rule,
}

const fn v(prop: &'static str, key: &'static str) -> Simple {
    Simple {
        prop,
        key,
        rule: Rule::Value,
    }
}

const fn t(prop: &'static str, key: &'static str) -> Simple {
    Simple {
        prop,
        key,
        rule: Rule::TrueOnly,
    }
}

/// The reference table's "value" and "true-only" rows, in the reference's order.
const SIMPLE: &[Simple] = &[
    t("feature_heartbeat", "heartbeat.enable"),
    t("feature_dockerHealthCheck", "dockerHealthCheck.enable"),
    t("feature_uptimeMonitor", "uptimeMonitor.enable"),
    t(
        "feature_uptimeMonitoStoreInInfluxdb",
        "uptimeMonitor.storeInInfluxdb.enable",
    ),
    v(
        "feature_uptimeMonitoStoreInNewRelic",
        "uptimeMonitor.storeNewRelic.enable",
    ),
    v(
        "feature_apiListEnabledEndpoints",
        "restServerEndpointsEnable.apiListEnabledEndpoints",
    ),
    v(
        "feature_apiBase62ToBase16",
        "restServerEndpointsEnable.base62ToBase16",
    ),
    v(
        "feature_apiBase16ToBase62",
        "restServerEndpointsEnable.base16ToBase62",
    ),
    v(
        "feature_apiButlerPing",
        "restServerEndpointsEnable.butlerping",
    ),
    v(
        "feature_apiCreateDir",
        "restServerEndpointsEnable.createDir",
    ),
    v(
        "feature_apiCreateDirQvd",
        "restServerEndpointsEnable.createDirQVD",
    ),
    v(
        "feature_apiFileDelete",
        "restServerEndpointsEnable.fileDelete",
    ),
    v("feature_apiFileMove", "restServerEndpointsEnable.fileMove"),
    v("feature_apiFileCopy", "restServerEndpointsEnable.fileCopy"),
    v(
        "feature_apiKeyValueStore",
        "restServerEndpointsEnable.keyValueStore",
    ),
    v(
        "feature_apiMqttPublishMessage",
        "restServerEndpointsEnable.mqttPublishMessage",
    ),
    v(
        "feature_apiNewRelicPostMetric",
        "restServerEndpointsEnable.newRelic.postNewRelicMetric",
    ),
    v(
        "feature_apiNewRelicPostEvent",
        "restServerEndpointsEnable.newRelic.postNewRelicEvent",
    ),
    v(
        "feature_apiSchedulerCreateNew",
        "restServerEndpointsEnable.scheduler.createNewSchedule",
    ),
    v(
        "feature_apiSchedulerGet",
        "restServerEndpointsEnable.scheduler.getSchedule",
    ),
    v(
        "feature_apiSchedulerGetStatusAll",
        "restServerEndpointsEnable.scheduler.getScheduleStatusAll",
    ),
    v(
        "feature_apiSchedulerUpdate",
        "restServerEndpointsEnable.scheduler.updateSchedule",
    ),
    v(
        "feature_apiSchedulerDelete",
        "restServerEndpointsEnable.scheduler.deleteSchedule",
    ),
    v(
        "feature_apiSchedulerStart",
        "restServerEndpointsEnable.scheduler.startSchedule",
    ),
    v(
        "feature_apiSchedulerStop",
        "restServerEndpointsEnable.scheduler.stopSchedule",
    ),
    v(
        "feature_apiSenseAppReload",
        "restServerEndpointsEnable.senseAppReload",
    ),
    v(
        "feature_apiSenseAppDump",
        "restServerEndpointsEnable.senseAppDump",
    ),
    v(
        "feature_apiSenseListApps",
        "restServerEndpointsEnable.senseListApps",
    ),
    v(
        "feature_apiSenseStartTask",
        "restServerEndpointsEnable.senseStartTask",
    ),
    v(
        "feature_apiSlackPostMessage",
        "restServerEndpointsEnable.slackPostMessage",
    ),
    v(
        "feature_influxDbReloadTaskFailure",
        "influxDb.reloadTaskFailure.enable",
    ),
    v(
        "feature_influxDbReloadTaskSuccess",
        "influxDb.reloadTaskSuccess.enable",
    ),
    v(
        "feature_scriptLogQseowReloadTaskFailure",
        "scriptLog.storeOnDisk.clientManaged.reloadTaskFailure.enable",
    ),
    v(
        "feature_scriptLogQsCloudAppReloadFailure",
        "scriptLog.storeOnDisk.qsCloud.appReloadFailure.enable",
    ),
    v(
        "feature_teamsNotificationReloadTaskFailure",
        "teamsNotification.reloadTaskFailure.enable",
    ),
    v(
        "feature_teamsNotificationReloadTaskAborted",
        "teamsNotification.reloadTaskAborted.enable",
    ),
    v(
        "feature_slackNotificationReloadTaskFailure",
        "slackNotification.reloadTaskFailure.enable",
    ),
    v(
        "feature_slackNotificationReloadTaskAborted",
        "slackNotification.reloadTaskAborted.enable",
    ),
    v(
        "feature_emailNotificationReloadTaskFailure",
        "emailNotification.reloadTaskFailure.enable",
    ),
    v(
        "feature_emailNotificationReloadTaskAborted",
        "emailNotification.reloadTaskAborted.enable",
    ),
    v(
        "feature_signl4NotificationReloadTaskFailure",
        "incidentTool.signl4.reloadTaskFailure.enable",
    ),
    v(
        "feature_signl4NotificationReloadTaskAborted",
        "incidentTool.signl4.reloadTaskAborted.enable",
    ),
    v("feature_qliksensecloud", "qlikSenseCloud.enable"),
    v(
        "feature_qliksensecloudReloadAppFailureTeamsNotification",
        "qlikSenseCloud.event.mqtt.tenant.alert.teamsNotification.reloadAppFailure.enable",
    ),
    v(
        "feature_qliksensecloudReloadAppFailureSlackNotification",
        "qlikSenseCloud.event.mqtt.tenant.alert.slackNotification.reloadAppFailure.enable",
    ),
    v(
        "feature_qliksensecloudReloadAppFailureEmailNotification",
        "qlikSenseCloud.event.mqtt.tenant.alert.emailNotification.reloadAppFailure.enable",
    ),
    v("feature_scheduler", "scheduler.enable"),
    v("feature_mqtt", "mqttConfig.enable"),
    v("feature_serviceMonitor", "serviceMonitor.enable"),
    v("feature_keyValueStore", "keyValueStore.enable"),
    v("feature_udpServer", "udpServerConfig.enable"),
    v("feature_restServer", "restServerConfig.enable"),
];

/// Whether `name` is one of Butler's REST endpoint names (or their groups, `newRelic`,
/// `scheduler`): the keys of `Butler.restServerEndpointsEnable`.
pub(crate) fn is_endpoint_name(name: &str) -> bool {
    SIMPLE.iter().any(|s| {
        s.key
            .strip_prefix("restServerEndpointsEnable.")
            .is_some_and(|rest| rest.split('.').any(|part| part == name))
    })
}

/// Flat properties whose value comes from the webhook rules.
const WEBHOOK_LISTS: &[(&str, &str)] = &[
    (
        "feature_webhookNotificationReloadTaskFailure",
        "reloadTaskFailure",
    ),
    (
        "feature_webhookNotificationReloadTaskAborted",
        "reloadTaskAborted",
    ),
    (
        "feature_webhookNotificationServiceMonitor",
        "serviceMonitor",
    ),
];

/// Flat properties whose value is New Relic's either-or.
const NEW_RELIC: &[(&str, &str)] = &[
    (
        "feature_newRelicNotificationReloadTaskFailure",
        "reloadTaskFailure",
    ),
    (
        "feature_newRelicNotificationReloadTaskAborted",
        "reloadTaskAborted",
    ),
];

/// The nested `telemetry_json.enabledFeatures.feature` object: each name and the flat
/// property it mirrors (the composite entries are built in [`derive`]).
const NESTED: &[(&str, &str)] = &[
    ("dockerHealthCheck", "feature_dockerHealthCheck"),
    (
        "emailNotificationReloadTaskAborted",
        "feature_emailNotificationReloadTaskAborted",
    ),
    (
        "emailNotificationReloadTaskFailure",
        "feature_emailNotificationReloadTaskFailure",
    ),
    ("heartbeat", "feature_heartbeat"),
    (
        "influxDbReloadTaskFailure",
        "feature_influxDbReloadTaskFailure",
    ),
    (
        "influxDbReloadTaskSuccess",
        "feature_influxDbReloadTaskSuccess",
    ),
    ("keyValueStore", "feature_keyValueStore"),
    ("mqtt", "feature_mqtt"),
    (
        "newRelicNotificationReloadTaskAborted",
        "feature_newRelicNotificationReloadTaskAborted",
    ),
    (
        "newRelicNotificationReloadTaskFailure",
        "feature_newRelicNotificationReloadTaskFailure",
    ),
    ("restServer", "feature_restServer"),
    ("scheduler", "feature_scheduler"),
    ("serviceMonitor", "feature_serviceMonitor"),
    (
        "signl4NotificationReloadTaskAborted",
        "feature_signl4NotificationReloadTaskAborted",
    ),
    (
        "signl4NotificationReloadTaskFailure",
        "feature_signl4NotificationReloadTaskFailure",
    ),
    (
        "slackNotificationReloadTaskAborted",
        "feature_slackNotificationReloadTaskAborted",
    ),
    (
        "slackNotificationReloadTaskFailure",
        "feature_slackNotificationReloadTaskFailure",
    ),
    (
        "teamsNotificationReloadTaskAborted",
        "feature_teamsNotificationReloadTaskAborted",
    ),
    (
        "teamsNotificationReloadTaskFailure",
        "feature_teamsNotificationReloadTaskFailure",
    ),
    ("udpServer", "feature_udpServer"),
    ("uptimeMonitor", "feature_uptimeMonitor"),
    (
        "uptimeMonitor_storeInInfluxdb",
        "feature_uptimeMonitoStoreInInfluxdb",
    ),
    (
        "uptimeMonitor_storeInNewRelic",
        "feature_uptimeMonitoStoreInNewRelic",
    ),
    (
        "webhookNotificationReloadTaskAborted",
        "feature_webhookNotificationReloadTaskAborted",
    ),
    (
        "webhookNotificationReloadTaskFailure",
        "feature_webhookNotificationReloadTaskFailure",
    ),
    (
        "webhookNotificationServiceMonitor",
        "feature_webhookNotificationServiceMonitor",
    ),
];

/// Every flag, flat and nested, plus what was dropped on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `feature_*` properties.
    pub flat: Map<String, Value>,
    /// `telemetry_json.enabledFeatures.feature`.
    pub(crate) nested: Map<String, Value>,
    /// One line per value that was not a boolean where one was expected (key path only: the
    /// value itself may be a secret and is never logged).
    pub(crate) warnings: Vec<String>,
}

/// Looks up a dotted path below `Butler`.
fn lookup<'a>(butler: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(butler, |node, key| node.as_object()?.get(key))
}

struct Reader<'a> {
    butler: &'a Value,
    warnings: Vec<String>,
}

impl Reader<'_> {
    /// The boolean at `path`: `Ok(None)` when absent (or YAML `null`), `Err(())` for another
    /// type (with a warning).
    fn bool_at(&mut self, path: &str) -> Result<Option<bool>, ()> {
        match lookup(self.butler, path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => {
                push_once(
                    &mut self.warnings,
                    format!("Butler.{path} is {}, not true or false", type_name(other)),
                );
                Err(())
            }
        }
    }

    fn simple(&mut self, s: &Simple) -> Value {
        match (self.bool_at(s.key), s.rule) {
            (Ok(Some(b)), _) => Value::Bool(b),
            (Ok(None), _) => Value::Null,
            // Butler asks "is it exactly true?": any other value present means false.
            (Err(()), Rule::TrueOnly) => Value::Bool(false),
            (Err(()), Rule::Value) => Value::Null,
        }
    }

    /// `feature_webhookNotification`: true-only (true when `true`, false for any other
    /// present value, null when absent).
    fn webhook_enabled(&mut self) -> Value {
        self.simple(&t(
            "feature_webhookNotification",
            "webhookNotification.enable",
        ))
    }

    /// A webhook list flag: webhooks enabled and the list non-empty.
    fn webhook_list(&mut self, section: &str) -> Value {
        let enabled = match lookup(self.butler, "webhookNotification.enable") {
            None | Some(Value::Null) => return Value::Null,
            // Butler asks "is it exactly true?"; a mistyped switch is reported by
            // `webhook_enabled` and means off.
            Some(v) => *v == Value::Bool(true),
        };
        if !enabled {
            return Value::Bool(false);
        }
        let path = format!("webhookNotification.{section}.webhooks");
        match lookup(self.butler, &path) {
            None | Some(Value::Null) => Value::Bool(false),
            Some(Value::Array(list)) => Value::Bool(!list.is_empty()),
            Some(other) => {
                self.warnings.push(format!(
                    "Butler.{path} is {}, not a list; reported as null",
                    type_name(other)
                ));
                Value::Null
            }
        }
    }

    /// New Relic: true when either the event or the log destination is exactly `true`, false
    /// when either is present otherwise (a non-boolean with a warning), null when both are
    /// absent.
    fn new_relic(&mut self, section: &str) -> Value {
        let base = format!("incidentTool.newRelic.{section}.destination");
        let event = self.bool_at(&format!("{base}.event.enable"));
        let log = self.bool_at(&format!("{base}.log.enable"));
        match (event, log) {
            (Ok(Some(true)), _) | (_, Ok(Some(true))) => Value::Bool(true),
            (Ok(None), Ok(None)) => Value::Null,
            _ => Value::Bool(false),
        }
    }
}

/// A value read by two rules (flat and nested) is reported once.
fn push_once(warnings: &mut Vec<String>, message: String) {
    if !warnings.contains(&message) {
        warnings.push(message);
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Copies only the boolean leaves (and the maps that hold them) of an endpoint map.
fn boolean_leaves(v: &Value, path: &str, warnings: &mut Vec<String>) -> Option<Value> {
    match v {
        Value::Bool(b) => Some(Value::Bool(*b)),
        Value::Object(map) => Some(Value::Object(
            map.iter()
                .filter_map(|(k, v)| {
                    boolean_leaves(v, &format!("{path}.{k}"), warnings).map(|v| (k.clone(), v))
                })
                .collect(),
        )),
        Value::Null => None,
        other => {
            push_once(
                warnings,
                format!("{path} is {}, not true or false", type_name(other)),
            );
            None
        }
    }
}

/// Derives every flag from a config tree (the whole file, with `Butler` at the top).
pub fn derive(tree: &Value) -> Features {
    let null = Value::Null;
    let butler = tree.get("Butler").unwrap_or(&null);
    let mut r = Reader {
        butler,
        warnings: Vec::new(),
    };
    let mut flat = Map::new();
    for s in SIMPLE {
        let value = r.simple(s);
        flat.insert(s.prop.to_string(), value);
    }
    let webhook = r.webhook_enabled();
    flat.insert("feature_webhookNotification".into(), webhook);
    for (prop, section) in WEBHOOK_LISTS {
        let value = r.webhook_list(section);
        flat.insert(prop.to_string(), value);
    }
    for (prop, section) in NEW_RELIC {
        let value = r.new_relic(section);
        flat.insert(prop.to_string(), value);
    }

    let mut nested = Map::new();
    let endpoints = lookup(butler, "restServerEndpointsEnable")
        .and_then(|v| boolean_leaves(v, "Butler.restServerEndpointsEnable", &mut r.warnings))
        .unwrap_or(Value::Null);
    nested.insert("apiEnabledEndpoints".into(), endpoints);
    for (name, prop) in NESTED {
        nested.insert(name.to_string(), flat[*prop].clone());
    }
    nested.insert(
        "qlikSenseCloud".into(),
        serde_json::json!({
            "enabled": flat["feature_qliksensecloud"],
            "reloadAppFailureEmailNotification":
                flat["feature_qliksensecloudReloadAppFailureEmailNotification"],
            "reloadAppFailureSlackNotification":
                flat["feature_qliksensecloudReloadAppFailureSlackNotification"],
            "reloadAppFailureTeamsNotification":
                flat["feature_qliksensecloudReloadAppFailureTeamsNotification"],
        }),
    );
    nested.insert(
        "scriptLogStoreOnDisk".into(),
        serde_json::json!({
            "qsCloud": { "appReloadFailure": flat["feature_scriptLogQsCloudAppReloadFailure"] },
            "qseow": { "reloadTaskFailure": flat["feature_scriptLogQseowReloadTaskFailure"] },
        }),
    );
    nested.sort_keys();
    Features {
        flat,
        nested,
        warnings: r.warnings,
    }
}

#[cfg(test)]
mod tests;
