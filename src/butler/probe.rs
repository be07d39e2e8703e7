//! Asking Butler: `GET /v4/butlerping` for its version, `GET /health` on its loopback health
//! port for the readiness check.
//!
//! Every request is bounded: [`TIMEOUT`] for the whole exchange (connect, answer, body), at
//! most [`MAX_BODY`] bytes read, no redirect followed, no proxy (Butler is on this machine or
//! its network; a proxy would learn Butler's address and could answer for it). Every failure is
//! a [`PingError`] whose message names neither the URL nor the host.

use std::time::Duration;

use crate::config::AgentSettings;
use crate::config::butler::{PING_PATH, is_version};
use crate::http;

/// The whole exchange, connect to last byte.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(2);
/// Butler's ping answer is under 100 bytes; anything past this is not Butler's answer.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// The fixed text of Butler's ping answer.
const PING_RESPONSE: &str = "Butler reporting for duty";

/// Why Butler gave no version (or no health). The words follow "<the URL> …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PingError {
    #[error("did not answer: {0}")]
    NoAnswer(String),
    #[error("did not answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    #[error("answered 404: enable Butler.restServerEndpointsEnable.butlerping")]
    NotFound,
    #[error("answered 429: Butler's rate limit (--api-rate-limit) is spent by other clients")]
    RateLimited,
    #[error("answered {0}, a redirect (not followed): give Butler's own address")]
    Redirect(u16),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered more than {} KiB: not Butler's answer", MAX_BODY / 1024)]
    TooLarge,
    #[error("answered something that is not Butler's JSON answer (HTML or other text?)")]
    NotJson,
    #[error("answered JSON that is not Butler's ping answer")]
    NotButler,
    #[error("answered without butlerVersion: Butler before 6.0 (set BUTLER_VERSION to report it)")]
    NoVersion,
    #[error(
        "answered a butlerVersion that is not a version (1 to 64 letters, digits, dots, plus or \
         minus signs)"
    )]
    BadVersion,
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

impl PingError {
    /// Worth asking again soon: Butler may be starting or busy.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            PingError::NoAnswer(_) | PingError::Timeout | PingError::RateLimited => true,
            PingError::Status(s) => *s >= 500,
            _ => false,
        }
    }

    /// Butler answered as Butler (only the version is missing or odd): it is up.
    pub(crate) fn butler_is_up(&self) -> bool {
        matches!(self, PingError::NoVersion | PingError::BadVersion)
    }
}

/// The client for Butler: [`TIMEOUT`], no redirects, no proxy, no idle connections kept, and
/// the CA file setting's roots (a Butler with TLS on usually has a private CA).
pub(crate) fn client(agent: &AgentSettings) -> Result<reqwest::Client, PingError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(http::user_agent())
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0);
    if let Some(path) = &agent.ca_file {
        for cert in http::read_ca_file(path).map_err(|e| PingError::Client(e.to_string()))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| PingError::Client(http::chain(&e)))
}

/// `GET {base}/v4/butlerping`: Butler's version, checked against the version rule.
pub(crate) async fn ping(client: &reqwest::Client, base: &str) -> Result<String, PingError> {
    let url = format!("{base}{PING_PATH}");
    let body = get(client, &url, base).await?;
    version_in(&body)
}

/// `GET http://127.0.0.1:{port}/health`: Ok on 200.
pub(crate) async fn health(client: &reqwest::Client, port: u16) -> Result<(), PingError> {
    let base = format!("http://127.0.0.1:{port}");
    get(client, &format!("{base}/health"), &base)
        .await
        .map(|_| ())
}

/// The version in a ping answer's body. Pure.
pub(crate) fn version_in(body: &[u8]) -> Result<String, PingError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| PingError::NotJson)?;
    match value.get("butlerVersion") {
        Some(serde_json::Value::String(v)) if is_version(v) => Ok(v.clone()),
        Some(_) => Err(PingError::BadVersion),
        None if value.get("response").and_then(|r| r.as_str()) == Some(PING_RESPONSE) => {
            Err(PingError::NoVersion)
        }
        None => Err(PingError::NotButler),
    }
}

/// One bounded GET; the body of a 200. `base` is left out of every message.
async fn get(client: &reqwest::Client, url: &str, base: &str) -> Result<Vec<u8>, PingError> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| transport_error(e, base))?;
    let status = response.status().as_u16();
    match status {
        200 => {}
        300..=399 => return Err(PingError::Redirect(status)),
        404 => return Err(PingError::NotFound),
        429 => return Err(PingError::RateLimited),
        s => return Err(PingError::Status(s)),
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(PingError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(e, base))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(PingError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport failure in words that name neither the URL nor its host.
fn transport_error(e: reqwest::Error, base: &str) -> PingError {
    if e.is_timeout() {
        return PingError::Timeout;
    }
    // The innermost cause says it best ("Connection refused (os error 111)", "failed to lookup
    // address information: …"); the layers above it repeat "error sending request".
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let mut text = cause.to_string();
    if let Some(host) = reqwest::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    {
        text = text.replace(base, "the URL").replace(&host, "the host");
    }
    PingError::NoAnswer(text)
}
