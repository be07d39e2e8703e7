//! The environment, behind a trait so tests can feed a map instead of mutating the process.

/// Read-only access to environment variables.
pub trait Env: Send + Sync {
    /// The variable's value, `None` when unset or not valid UTF-8.
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// A fixed set of variables, for tests (not in the shipped binary).
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(crate) struct MapEnv(pub(crate) std::collections::BTreeMap<String, String>);

#[cfg(test)]
impl MapEnv {
    pub(crate) fn new<const N: usize>(pairs: [(&str, &str); N]) -> Self {
        MapEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

#[cfg(test)]
impl Env for MapEnv {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}
