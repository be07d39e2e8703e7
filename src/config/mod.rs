//! Butler's YAML config file, and the agent's own settings inside it.
//!
//! The agent reads the config file Butler already has (`Butler:` root) and looks at two kinds of
//! keys:
//! - keys that steer the agent (`Butler.anonTelemetry`, `Butler.dockerHealthCheck.*`,
//!   `Butler.configQRS.host` and everything under `Butler.butlerAgent`, [`table::SETTINGS`]) are
//!   checked strictly: a wrong type stops the agent with one message naming file, line, key
//!   path and what was expected;
//! - keys that are only reported as feature flags are read leniently from the whole tree
//!   ([`LoadedConfig::tree`]) by `telemetry::features`: Butler validates its own config. Any
//!   YAML Butler loads loads: `.inf`/`.nan` become the strings `.inf`, `-.inf`, `.nan` in the
//!   tree, integers beyond 64 bits become floats, tags are dropped (their values kept).
//!
//! Every error about a value the agent uses names the file, the line and column of the value
//! (found again in the text by `locate`: the typed pass over the tree, or a range check after
//! it, is what failed), the key path and what was expected (serde's words).
//!
//! Reading is split from parsing: [`parse_str`] is pure and tested on literals; [`load`] does
//! the file I/O with a size cap.

pub(crate) mod butler;
pub(crate) mod env;
pub(crate) mod settings;
pub(crate) mod table;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

#[cfg(test)]
pub(crate) use env::MapEnv;
pub use env::{Env, ProcessEnv};
#[cfg(test)]
pub(crate) use settings::DEFAULT_POSTHOG_KEY;
pub use settings::{AgentFile, AgentSettings};

/// Larger config files are refused before parsing. Butler's full template is about 80 KB;
/// 4 MiB leaves room for any real config while keeping memory bounded.
pub(crate) const MAX_CONFIG_BYTES: u64 = crate::files::CONFIG_LIMIT.bytes;

/// Where the config came from, for logs and `telemetry status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--config FILE`.
    Flag(PathBuf),
    /// `$BUTLER_CONFIG`.
    EnvVar(PathBuf),
    /// `./config/$NODE_ENV.yaml`, Butler's own convention.
    NodeEnv(PathBuf),
    /// No file: built-in defaults.
    Defaults,
}

impl ConfigSource {
    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Flag(p) | ConfigSource::EnvVar(p) | ConfigSource::NodeEnv(p) => Some(p),
            ConfigSource::Defaults => None,
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Flag(p) => write!(f, "{} (--config)", p.display()),
            ConfigSource::EnvVar(p) => write!(f, "{} (BUTLER_CONFIG)", p.display()),
            ConfigSource::NodeEnv(p) => write!(f, "{} (NODE_ENV)", p.display()),
            ConfigSource::Defaults => write!(f, "none (built-in defaults)"),
        }
    }
}

/// Where a bad value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A config file, as named on the command line or in the environment.
    File(Box<str>),
    /// An environment variable.
    EnvVar(&'static str),
    /// The agent's settings, before it is known whether the value came from the file or the
    /// environment; [`load`] names the file when there is one.
    Settings,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(name) => f.write_str(name),
            Origin::EnvVar(var) => write!(f, "environment variable {var}"),
            Origin::Settings => f.write_str("the agent settings"),
        }
    }
}

/// A configuration problem: one clear message; a configuration failure for the command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid configuration in {origin}{}{}: {message}{}",
    .location.map(|(line, col)| format!(" at line {line}, column {col}")).unwrap_or_default(),
    .key.as_ref().map(|key| format!(", key {key}")).unwrap_or_default(),
    .hint.as_ref().map(|hint| format!(" ({hint})")).unwrap_or_default()
)]
pub struct ConfigError {
    /// The file, or the environment variable, that holds the bad value.
    pub(crate) origin: Origin,
    /// 1-based line and column, where the parser gives them.
    pub(crate) location: Option<(u64, u64)>,
    /// Dotted key path (`Butler.anonTelemetry`), where known.
    pub(crate) key: Option<String>,
    /// What went wrong and what was expected.
    pub(crate) message: String,
    /// How to fix it.
    pub(crate) hint: Option<String>,
}

impl ConfigError {
    fn file(origin: &str, message: impl Into<String>) -> Self {
        ConfigError {
            origin: Origin::File(origin.into()),
            location: None,
            key: None,
            message: message.into(),
            hint: None,
        }
    }

    /// A bad environment variable.
    pub(crate) fn env(var: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            origin: Origin::EnvVar(var),
            location: None,
            key: None,
            message: message.into(),
            hint: None,
        }
    }

    fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The keys of Butler's own sections that steer the agent, typed so that a wrong type is an
/// error with a location. Everything else in the file is ignored here.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
struct FileRoot {
    #[serde(rename = "Butler", default)]
    butler: Option<ButlerSection>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct ButlerSection {
    #[serde(default)]
    anon_telemetry: Option<bool>,
    #[serde(default)]
    docker_health_check: Option<DockerHealthCheck>,
    #[serde(rename = "configQRS", default)]
    config_qrs: Option<ConfigQrs>,
    #[serde(default)]
    rest_server_config: Option<RestServerConfig>,
    #[serde(default)]
    rest_server_endpoints_enable: Option<RestEndpoints>,
    /// The agent's own section, directly below `Butler:`. Butler's schema accepts new keys at
    /// that level but rejects extra keys inside its own sections, so a shared file keeps working
    /// for both.
    #[serde(rename = "butlerAgent", default)]
    agent: Option<settings::AgentFile>,
}

/// `Butler.dockerHealthCheck`: reported as a feature; checked because a wrong type here is
/// almost certainly a broken file; a change is named when the config is re-read.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
pub(crate) struct DockerHealthCheck {
    #[serde(default)]
    pub(crate) enable: Option<bool>,
    #[serde(default)]
    pub(crate) port: Option<settings::Port>,
}

/// `Butler.restServerConfig`: where Butler's REST API listens, so the agent can ask
/// `/v4/butlerping` for Butler's version without being told the URL.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RestServerConfig {
    #[serde(default)]
    pub(crate) enable: Option<bool>,
    /// A listen address (`0.0.0.0` in Docker), or a host name.
    #[serde(default)]
    pub(crate) server_host: Option<String>,
    #[serde(default)]
    pub(crate) server_port: Option<settings::Port>,
    #[serde(default)]
    pub(crate) tls: Option<RestTls>,
}

/// `Butler.restServerConfig.tls` (Butler 16+).
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
pub(crate) struct RestTls {
    #[serde(default)]
    pub(crate) enable: Option<bool>,
}

/// `Butler.restServerEndpointsEnable`: only the switch of the version endpoint is steering.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
pub(crate) struct RestEndpoints {
    #[serde(default)]
    pub(crate) butlerping: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
struct ConfigQrs {
    #[serde(default)]
    host: Option<String>,
}

/// The steering keys of Butler's own sections, checked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ButlerKeys {
    /// `Butler.anonTelemetry`.
    pub(crate) anon_telemetry: Option<bool>,
    /// `Butler.dockerHealthCheck`.
    pub(crate) docker_health_check: DockerHealthCheck,
    /// `Butler.configQRS.host`: part of the instance ID, and never sent.
    pub(crate) qrs_host: Option<String>,
    /// `Butler.restServerConfig`: where Butler's REST API listens.
    pub(crate) rest_server: RestServerConfig,
    /// `Butler.restServerEndpointsEnable.butlerping`.
    pub(crate) butlerping: Option<bool>,
}

/// A parsed config file (or the defaults), with environment overrides applied.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub(crate) source: ConfigSource,
    /// The whole file as a lenient tree (`Value::Null` without a file); feature flags and the
    /// privacy guard's list of config strings read from it.
    pub(crate) tree: Value,
    pub(crate) butler: ButlerKeys,
    pub agent: AgentSettings,
}

impl LoadedConfig {
    /// Built-in defaults with environment overrides, as used when no file exists.
    pub(crate) fn defaults(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(LoadedConfig {
            source: ConfigSource::Defaults,
            tree: Value::Null,
            butler: ButlerKeys::default(),
            agent: AgentSettings::resolve(None, env)
                .and_then(|a| check_butler_reachable(&ButlerKeys::default(), a, env))?,
        })
    }
}

/// `requireButler` needs a way to reach Butler: its health endpoint or its REST API.
fn check_butler_reachable(
    butler: &ButlerKeys,
    agent: AgentSettings,
    env: &dyn Env,
) -> Result<AgentSettings, ConfigError> {
    let Err(unreachable) = self::butler::check_required(butler, &agent) else {
        return Ok(agent);
    };
    let message = unreachable.to_string();
    let setting = &table::REQUIRE_BUTLER;
    let key = Some(setting.named());
    Err(
        if env.var(setting.var)?.is_some_and(|v| !v.trim().is_empty()) {
            ConfigError {
                key,
                ..ConfigError::env(setting.var, message)
            }
        } else {
            ConfigError {
                origin: Origin::Settings,
                location: None,
                key,
                message,
                hint: None,
            }
        },
    )
}

/// Chooses the config file: `--config`, else `$BUTLER_CONFIG`, else `./config/$NODE_ENV.yaml`
/// when it exists (below `cwd`), else none.
pub(crate) fn choose_source(flag: Option<&Path>, env: &dyn Env, cwd: &Path) -> ConfigSource {
    if let Some(p) = flag {
        return ConfigSource::Flag(p.to_path_buf());
    }
    // Paths are bytes: a file name need not be UTF-8 (and an unreadable one must not be
    // mistaken for "unset", which would lose the file's opt-out).
    if let Some(p) = env.var_os("BUTLER_CONFIG").filter(|p| !p.is_empty()) {
        return ConfigSource::EnvVar(PathBuf::from(p));
    }
    let mut file = env
        .var_os("NODE_ENV")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "production".into());
    file.push(".yaml");
    if cwd.join("config").join(&file).is_file() {
        return ConfigSource::NodeEnv(PathBuf::from("config").join(file));
    }
    ConfigSource::Defaults
}

/// Reads and parses the chosen source. A file named explicitly must exist.
pub fn load(source: ConfigSource, env: &dyn Env) -> Result<LoadedConfig, ConfigError> {
    let Some(path) = source.path() else {
        return LoadedConfig::defaults(env);
    };
    if path.as_os_str().is_empty() {
        return Err(
            ConfigError::file("the --config option", "the config file path is empty")
                .with_hint("give the path of Butler's YAML file, or leave the setting out"),
        );
    }
    let origin = path.display().to_string();
    let text = read_capped(path).map_err(|e| e.with_origin(&origin))?;
    let (tree, butler, agent_file) = parse_str(&text, &origin)?;
    let agent = AgentSettings::resolve(agent_file.as_ref(), env)
        .and_then(|a| check_butler_reachable(&butler, a, env))
        .map_err(|mut e| {
            if e.origin == Origin::Settings {
                e.origin = Origin::File(origin.as_str().into());
                let key = e.key.as_deref().unwrap_or_default();
                e.location = locate(&text, key.split(" (").next().unwrap_or(key));
            }
            e
        })?;
    Ok(LoadedConfig {
        source,
        tree,
        butler,
        agent,
    })
}

struct ReadError(ConfigError);

impl ReadError {
    fn with_origin(self, origin: &str) -> ConfigError {
        ConfigError {
            origin: Origin::File(origin.into()),
            ..self.0
        }
    }
}

fn read_capped(path: &Path) -> Result<String, ReadError> {
    use crate::files::{self, Follow, ReadError as FileError};
    let fail = |msg: String, hint: &str| ReadError(ConfigError::file("", msg).with_hint(hint));
    let buf = files::read_capped(path, files::CONFIG_LIMIT, Follow::Yes).map_err(|e| match e {
        FileError::NotRegular { .. } => fail(
            e.reason(),
            "point the config setting at Butler's YAML file, e.g. config/production.yaml",
        ),
        FileError::TooLarge { .. } => fail(
            e.reason(),
            "a Butler config is normally under 100 KB; point the agent at the right file",
        ),
        FileError::NotFound(_) | FileError::Io { .. } => fail(
            format!("cannot open the file: {}", e.reason()),
            "check the path given by --config, BUTLER_CONFIG or NODE_ENV, and that the file is readable",
        ),
        FileError::Symlink(_) => fail(e.reason(), "check permissions"),
    })?;
    String::from_utf8(buf).map_err(|e| {
        fail(
            format!(
                "the file is not valid UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ),
            "save the file as UTF-8",
        )
    })
}

/// YAML parser limits: generous for any real config, small enough that alias bombs and deep
/// nesting are refused quickly with bounded memory.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 200_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_nodes = 100_000;
    budget.max_depth = 64;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = MAX_CONFIG_BYTES as usize;
    budget.max_recorded_anchor_events = 20_000;
    budget.max_recorded_anchor_bytes = MAX_CONFIG_BYTES as usize;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    // YAML 1.2 booleans only, as Butler's own parser reads them: `yes` is a string there.
    options.strict_booleans = true;
    // `.inf`, `.nan` and floats too large for f64 are valid YAML Butler loads: they become the
    // strings `.inf`, `-.inf`, `.nan` in the tree, where a key the agent uses refuses them.
    options.non_finite_float_policy = serde_saphyr::options::NonFiniteFloatPolicy::AsString;
    options
}

/// Parses the text of a config file. Pure: `origin` only names the file in messages.
pub fn parse_str(
    text: &str,
    origin: &str,
) -> Result<(Value, ButlerKeys, Option<settings::AgentFile>), ConfigError> {
    // Lenient pass first: the whole tree, for feature flags and the privacy guard. A failure
    // here is a YAML syntax or limits problem, not a wrong value.
    let Tree(tree) = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| yaml_error(e, origin))?;
    // Typed view of the steering keys, from the tree already parsed (parsing the YAML is the
    // expensive part of start-up, so the happy path does it once).
    let root = if tree.is_null() {
        FileRoot::default()
    } else {
        match serde_path_to_error::deserialize::<_, FileRoot>(&tree) {
            Ok(root) => root,
            Err(e) => return Err(value_error(text, origin, e)),
        }
    };
    if !tree.is_null() && root.butler.is_none() {
        return Err(
            ConfigError::file(origin, "no `Butler:` section at the top level")
                .with_hint("this does not look like a Butler config file"),
        );
    }
    refuse_non_finite_text(text, origin, &tree)?;
    let butler = root.butler.unwrap_or_default();
    let keys = ButlerKeys {
        anon_telemetry: butler.anon_telemetry,
        docker_health_check: butler.docker_health_check.unwrap_or_default(),
        qrs_host: butler
            .config_qrs
            .and_then(|q| q.host)
            .filter(|h| !h.is_empty()),
        rest_server: butler.rest_server_config.unwrap_or_default(),
        butlerping: butler
            .rest_server_endpoints_enable
            .and_then(|e| e.butlerping),
    };
    Ok((tree, keys, butler.agent))
}

/// The text keys of Butler's sections that the agent reads, which take any string; the agent's
/// own are marked `text` in [`table::SETTINGS`].
const BUTLER_TEXT_KEYS: &[&str] = &[
    "Butler.configQRS.host",
    "Butler.restServerConfig.serverHost",
];

/// `.inf` and `.nan` reach the tree as strings (see `yaml_options`): at a text setting, an
/// unquoted one is the number, a wrong type.
fn refuse_non_finite_text(text: &str, origin: &str, tree: &Value) -> Result<(), ConfigError> {
    let agent = table::SETTINGS.iter().filter(|s| s.text).map(|s| s.path);
    for key in BUTLER_TEXT_KEYS.iter().copied().chain(agent) {
        let value = key.split('.').try_fold(tree, |node, k| node.get(k));
        let Some(number) = value
            .and_then(Value::as_str)
            .filter(|v| [".inf", "-.inf", ".nan"].contains(v))
        else {
            continue;
        };
        let at = locate(text, key);
        let quoted = at
            .and_then(|(line, col)| {
                let line = text
                    .lines()
                    .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
                line.chars().nth(usize::try_from(col).ok()?.checked_sub(1)?)
            })
            .is_some_and(|c| c == '"' || c == '\'');
        if !quoted {
            return Err(ConfigError {
                origin: Origin::File(origin.into()),
                location: at,
                key: Some(key.to_string()),
                message: format!("invalid type: the non-finite number {number}, expected a string"),
                hint: Some("fix the value, or remove the key to use the default".into()),
            });
        }
    }
    Ok(())
}

/// The located error for a wrong value: the key path and message from the typed view of the
/// tree, the line and column of the value from the text.
fn value_error(
    text: &str,
    origin: &str,
    e: serde_path_to_error::Error<serde_json::Error>,
) -> ConfigError {
    let key = e.path().to_string();
    let key = (!key.is_empty() && key != ".").then_some(key);
    let message = e.into_inner().to_string();
    ConfigError {
        origin: Origin::File(origin.into()),
        // The value's own place.
        location: key.as_deref().and_then(|k| locate(text, k)),
        key,
        // serde's wording, except that a boolean is spelled as the file must spell it (YAML 1.2:
        // `yes` and `on` are strings), and that no text from the file is repeated.
        message: without_text_values(
            &message
                .replace("expected a boolean", "expected true/false")
                .replace("string \".inf\"", "the non-finite number .inf")
                .replace("string \"-.inf\"", "the non-finite number -.inf")
                .replace("string \".nan\"", "the non-finite number .nan"),
        ),
        hint: Some("fix the value, or remove the key to use the default".into()),
    }
}

/// serde's message without the text values it quotes (`invalid type: string "…"`, `unknown
/// variant `…``): a value in the wrong place may be a password or a host name, and the agent's
/// messages name keys and places, never values. Numbers, booleans and key names stay.
fn without_text_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let string = rest.find("string \"");
        let variant = rest.find("variant `");
        let (at, quoted, open, close, word) = match (string, variant) {
            (Some(s), Some(v)) if v < s => (v, "variant `".len(), '`', '`', "variant"),
            (Some(s), _) => (s, "string \"".len(), '"', '"', "a string"),
            (None, Some(v)) => (v, "variant `".len(), '`', '`', "variant"),
            (None, None) => break,
        };
        out.push_str(&rest[..at]);
        let inner = &rest[at + quoted..];
        // The quoted text ends at the first closing mark not escaped (serde writes strings
        // with Rust's escapes).
        let mut end = None;
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            match c {
                '\\' if open == '"' && !escaped => escaped = true,
                c if c == close && !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        out.push_str(word);
        match end {
            Some(i) => rest = &inner[i + close.len_utf8()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The whole file as a JSON tree, read as leniently as Butler reads it: a mapping key that is
/// not a string (`1: x`, `? [a, b]: x`) becomes its JSON text, an integer beyond 64 bits a
/// float.
struct Tree(Value);

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
                Ok(Tree(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
                Ok(Tree(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
                Ok(Tree(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Tree, E> {
                Ok(Tree(
                    i64::try_from(v).map_or_else(|_| (v as f64).into(), Value::from),
                ))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Tree, E> {
                Ok(Tree(
                    u64::try_from(v).map_or_else(|_| (v as f64).into(), Value::from),
                ))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
                // Non-finite floats arrive as strings (see `yaml_options`); this is a fallback.
                Ok(Tree(serde_json::Number::from_f64(v).map_or_else(
                    || Value::String(v.to_string()),
                    Value::Number,
                )))
            }
            fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
                Ok(Tree(Value::String(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Tree, E> {
                Ok(Tree(Value::String(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Tree, E> {
                Ok(Tree(Value::String(String::from_utf8_lossy(v).into_owned())))
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree(Value::Null))
            }
            fn visit_none<E>(self) -> Result<Tree, E> {
                Ok(Tree(Value::Null))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
                Tree::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
                let mut items = Vec::new();
                while let Some(Tree(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Tree(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
                let mut object = serde_json::Map::new();
                while let Some(Tree(key)) = map.next_key()? {
                    let key = match key {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    let Tree(value) = map.next_value()?;
                    object.insert(key, value);
                }
                Ok(Tree(Value::Object(object)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A YAML node with the place of each child, read only to point at a key after the fact.
enum Located {
    Leaf,
    Seq(Vec<serde_saphyr::Spanned<Located>>),
    Map(Vec<(String, serde_saphyr::Spanned<Located>)>),
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Located;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Located, E> {
                Ok(Located::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Located, E> {
                Ok(Located::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Located, E> {
                Ok(Located::Leaf)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Located, E> {
                Ok(Located::Leaf)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Located, E> {
                Ok(Located::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Located, E> {
                Ok(Located::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Located, E> {
                Ok(Located::Leaf)
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<Located, E> {
                Ok(Located::Leaf)
            }
            fn visit_unit<E>(self) -> Result<Located, E> {
                Ok(Located::Leaf)
            }
            fn visit_none<E>(self) -> Result<Located, E> {
                Ok(Located::Leaf)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Located, D::Error> {
                Located::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Located, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Located::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Located, A::Error> {
                let mut entries = Vec::new();
                // Keys as the tree spells them (see `Tree`).
                while let Some(Tree(k)) = map.next_key()? {
                    let k = match k {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    entries.push((k, map.next_value()?));
                }
                Ok(Located::Map(entries))
            }
            fn visit_enum<A: serde::de::EnumAccess<'de>>(self, e: A) -> Result<Located, A::Error> {
                let _: (IgnoredAny, _) = e.variant()?;
                Ok(Located::Leaf)
            }
        }
        d.deserialize_any(V)
    }
}

/// The 1-based line and column of the value at a dotted key path (`Butler.a.b[2].c`), or of
/// its deepest existing parent. Reads the text again: used only on the way to an error.
fn locate(text: &str, key_path: &str) -> Option<(u64, u64)> {
    let root: serde_saphyr::Spanned<Located> =
        serde_saphyr::from_str_with_options(text, yaml_options()).ok()?;
    let mut node = &root;
    let mut found = None;
    for part in key_path.split('.').filter(|p| !p.is_empty()) {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        let mut next = match (&node.value, name) {
            (_, "") => Some(node),
            (Located::Map(entries), name) => {
                entries.iter().find(|(k, _)| k == name).map(|(_, v)| v)
            }
            _ => None,
        };
        for idx in indexes.split(['[', ']']).filter(|i| !i.is_empty()) {
            next = match (next.map(|n| &n.value), idx.parse::<usize>()) {
                (Some(Located::Seq(items)), Ok(i)) => items.get(i),
                _ => None,
            };
        }
        let Some(n) = next else { break };
        node = n;
        found = Some((n.referenced.line(), n.referenced.column()));
    }
    found.filter(|(line, _)| *line > 0)
}

/// A YAML syntax or limits error: the file could not be read as YAML at all.
fn yaml_error(e: serde_saphyr::Error, origin: &str) -> ConfigError {
    let location = e
        .location()
        .map(|l| (l.line(), l.column()))
        .filter(|(l, _)| *l > 0);
    let mut message = e.to_string();
    // The crate appends its own "at line X column Y"; we print the location once, up front.
    if let Some(idx) = message.find(" at line ") {
        message.truncate(idx);
    }
    let mut message = message.lines().next().unwrap_or("").trim().to_string();
    if message.contains("budget breached") {
        message = format!(
            "refused: the YAML exceeds the parser's limits ({})",
            message.trim_start_matches("budget breached: ")
        );
    }
    ConfigError {
        origin: Origin::File(origin.into()),
        location,
        key: None,
        message,
        hint: Some("fix the YAML syntax; aliases, nesting depth and size are limited".into()),
    }
}

#[cfg(test)]
mod tests;
