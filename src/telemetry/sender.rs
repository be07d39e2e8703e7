//! Sending the event: one HTTP POST to PostHog's capture endpoint, and the retry loop.
//!
//! The transport is a direct reqwest call rather than the posthog-rs client: the event is a
//! single pre-built JSON body, and the agent needs to own what posthog-rs decides for its
//! users — the exact bytes (so the privacy guard checks what is sent and a retry resends the
//! same `uuid`), which statuses are retried, the timeout, the proxy and CA settings. reqwest
//! with rustls and bundled roots is already in the binary for that.
//!
//! [`Transport`] is the seam: [`HttpTransport`] talks to the network; tests drive [`deliver`]
//! with a scripted transport under tokio's paused clock to check retry counts and spacing.

use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::retry::{self, Attempt, GiveUpReason, Next, RetryPolicy};
use crate::config::AgentSettings;
pub use crate::http::SetupError;
pub(crate) use crate::http::{chain, read_ca_file, user_agent};
use crate::signals::Reread;

/// PostHog's single-event capture path (`rust/capture/src/router.rs`).
pub(crate) const CAPTURE_PATH: &str = "/i/v0/e/";
/// Connecting should be quick; a slow connect is usually a firewall dropping packets.
pub(crate) const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Of an error answer only the start is read.
const MAX_ERROR_BODY: usize = 4 * 1024;
/// Of capture's text only this many characters go into the log line.
const MAX_ANSWER_CHARS: usize = 200;

/// The capture URL for a configured host.
pub(crate) fn capture_url(posthog_host: &str) -> String {
    format!("{}{CAPTURE_PATH}", posthog_host.trim_end_matches('/'))
}

/// One attempt's result, plus whether the body may have left the machine (for the audit log:
/// a refused connection sent nothing; a timeout after connecting may have sent it all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tried {
    pub attempt: Attempt,
    pub(crate) body_may_have_left: bool,
}

/// Sends one body once.
pub(crate) trait Transport {
    fn send(&self, body: &Bytes) -> impl Future<Output = Tried> + Send;
}

/// The real transport: reqwest over rustls, proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`
/// (reqwest reads them), extra roots from the CA file setting.
#[derive(Debug, Clone)]
pub(crate) struct HttpTransport {
    client: reqwest::Client,
    url: String,
    /// The project key, so an answer that repeats it is not logged with it.
    key: String,
    /// The proxy the environment routes this URL through (no credentials), for messages.
    proxy: Option<String>,
}

impl HttpTransport {
    pub(crate) fn new(settings: &AgentSettings) -> Result<Self, SetupError> {
        let url = capture_url(&settings.posthog_host);
        reqwest::Url::parse(&url)
            .map_err(|e| SetupError(format!("the capture URL {url} is not valid: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .user_agent(user_agent())
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(MAX_CONNECT_TIMEOUT))
            // A redirect would re-send the event somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            // Two sends a day: keeping connections open between them only holds memory.
            .pool_max_idle_per_host(0);
        if let Some(path) = &settings.ca_file {
            for cert in read_ca_file(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| SetupError(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(HttpTransport {
            proxy: proxy_for(&url),
            client,
            url,
            key: settings.posthog_key.clone(),
        })
    }
}

/// The proxy reqwest will use for `url`, by the same rules (`ALL_PROXY`, `HTTPS_PROXY`,
/// `HTTP_PROXY`, `NO_PROXY`), as `scheme://host:port` without any credentials it may carry.
fn proxy_for(url: &str) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    let intercept = hyper_util::client::proxy::matcher::Matcher::from_system().intercept(&uri)?;
    let proxy = intercept.uri();
    let scheme = proxy.scheme_str().unwrap_or("http");
    let host = proxy.host()?;
    Some(match proxy.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// Checks the CA file setting, if any: readable, a regular file within
/// [`files::CA_FILE_LIMIT`], holding at least one PEM certificate. Called at start-up so a
/// broken setting is a configuration error, not a failure at the first send.
pub(crate) fn check_ca_file(settings: &AgentSettings) -> Result<(), SetupError> {
    match &settings.ca_file {
        Some(path) => read_ca_file(path).map(|_| ()),
        None => Ok(()),
    }
}

impl Transport for HttpTransport {
    async fn send(&self, body: &Bytes) -> Tried {
        // The sending time goes in the query, outside the guarded and audited body: capture
        // reads `_` (milliseconds) as the event's `sent_at` and corrects a skewed host clock
        // from it (`rust/capture/src/payload/types.rs`, `EventQuery`).
        let response = self
            .client
            .post(&self.url)
            .query(&[("_", sent_at_millis(SystemTime::now()))])
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                return Tried {
                    body_may_have_left: !e.is_connect(),
                    attempt: transport_error(&e, self.proxy.as_deref()),
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
        // Read (a bounded part of) the answer so the exchange completes, and keep capture's
        // text (its refusals are `text/plain` messages) for the log.
        let mut head = Vec::new();
        let mut read_error = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_ERROR_BODY.saturating_sub(head.len());
                    head.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if room == 0 {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
        let mut attempt = retry::classify_status(status, retry_after);
        match (&mut attempt, read_error) {
            // The status line arrived but the answer broke off: PostHog may not have stored
            // the event, so it counts as transient (the same uuid lets PostHog deduplicate).
            (Attempt::Delivered { .. }, Some(e)) => {
                attempt = Attempt::Transient {
                    status: Some(status),
                    reason: format!("the answer broke off: {}", chain(&e)),
                    retry_after: None,
                };
            }
            (Attempt::Rejected { reason, .. } | Attempt::Transient { reason, .. }, _) => {
                if let Some(said) = answer_text(&head, &self.key) {
                    reason.push_str(&format!("; the destination said: \"{said}\""));
                }
            }
            _ => {}
        }
        Tried {
            attempt,
            body_may_have_left: true,
        }
    }
}

/// `sent_at` as capture reads it from the query: Unix time in milliseconds.
pub(crate) fn sent_at_millis(now: SystemTime) -> u128 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Capture's answer made fit for one log line: decoded leniently, control characters (line
/// breaks, escapes) and invisible formatting characters turned into spaces and runs of them collapsed, the project key (and
/// anything shaped like a PostHog key) replaced by `[key]`, cut to 200 characters. `None` when
/// nothing is left.
pub(crate) fn answer_text(body: &[u8], key: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let mut line = String::new();
    for c in text.chars() {
        let c = if c.is_control() || is_invisible_format(c) {
            ' '
        } else {
            c
        };
        if c == ' ' && (line.is_empty() || line.ends_with(' ')) {
            continue;
        }
        line.push(c);
    }
    let mut line = redact_keys(line.trim_end(), key.trim());
    if line.is_empty() {
        return None;
    }
    if let Some((cut, _)) = line.char_indices().nth(MAX_ANSWER_CHARS) {
        line.truncate(cut);
        line.push('…');
    }
    Some(line)
}

/// Bidirectional overrides, zero-width characters and the byte-order mark: they can make a
/// log line read differently from what it holds.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Replaces `key` and every `phc_…`/`phx_…` word with `[key]`. (A key shorter than 8
/// characters is no key capture accepts, and replacing it would garble ordinary words.)
fn redact_keys(text: &str, key: &str) -> String {
    let text = if key.len() < 8 {
        text.to_string()
    } else {
        text.replace(key, "[key]")
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("phc_").into_iter().chain(rest.find("phx_")).min() {
        out.push_str(&rest[..at]);
        let word = rest[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(rest.len(), |n| at + n);
        out.push_str("[key]");
        rest = &rest[word..];
    }
    out.push_str(rest);
    out
}

/// Every transport error is transient: DNS, refused, reset, TLS, timeout, garbage.
/// A connect error through a proxy names the proxy (reqwest's message names only the
/// destination, which sends the reader to the wrong machine); a certificate error says how to
/// trust a private CA.
fn transport_error(e: &reqwest::Error, proxy: Option<&str>) -> Attempt {
    let what = match proxy {
        _ if e.is_timeout() => "timed out".to_string(),
        Some(p) if e.is_connect() => format!(
            "could not connect through the proxy {p} (set by HTTPS_PROXY, HTTP_PROXY or \
             ALL_PROXY; NO_PROXY lists hosts reached directly)"
        ),
        None if e.is_connect() => "could not connect".to_string(),
        _ => "the exchange failed".to_string(),
    };
    let mut reason = format!("{what}: {}", chain(e));
    if certificate_rejected(e) {
        reason.push_str(
            "; if the destination (or a proxy inspecting TLS) uses a certificate from a private \
             CA, give that CA's PEM certificate with caFile / BUTLER_CA_FILE",
        );
    }
    Attempt::Transient {
        status: None,
        reason,
        retry_after: None,
    }
}

/// Whether rustls refused the server's certificate somewhere in the error's chain. rustls'
/// error travels inside `io::Error`s (nested ones, through hyper's connector), whose
/// `source()` skips the error they wrap, so those are opened too.
fn certificate_rejected(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
        return true;
    }
    let wrapped = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .is_some_and(|inner| certificate_rejected(inner));
    wrapped || e.source().is_some_and(certificate_rejected)
}

/// How a delivery (first attempt plus retries) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The last attempt's result.
    pub last: Attempt,
    /// Attempts made (1 + retries).
    pub attempts: u32,
    /// Why it stopped without delivering, if it did.
    pub gave_up: Option<GiveUpReason>,
    /// Stopped because the agent is shutting down.
    pub(crate) interrupted: bool,
    /// Stopped between attempts because the config is to be re-read (SIGHUP, or the file
    /// changed): the new config may turn telemetry off or send elsewhere.
    pub(crate) reread: Option<Reread>,
    /// Every attempt whose body may have left the machine, with its result (for the audit log).
    pub sent: Vec<(SystemTime, Attempt)>,
}

impl Delivery {
    pub(crate) fn delivered(&self) -> bool {
        matches!(self.last, Attempt::Delivered { .. })
    }
}

/// A uniform sample in `[0, 1)` from the OS's random source; 0.5 if there is none (the pause
/// is then still bounded and non-zero: failing randomness must not stop delivery).
pub(crate) fn random_unit() -> f64 {
    match getrandom::u64() {
        Ok(n) => (n >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// [`deliver_or_reread`] with no re-read (the tests' deliveries).
#[cfg(test)]
pub(crate) async fn deliver<T: Transport>(
    transport: &T,
    body: &Bytes,
    policy: &RetryPolicy,
    shutdown: impl Future<Output = ()>,
) -> Delivery {
    deliver_or_reread(transport, body, policy, shutdown, std::future::pending()).await
}

/// Sends `body`, retrying transient failures by `policy`. Pauses between attempts end early
/// when `shutdown` completes (an attempt in flight is finished: the caller bounds it) or when
/// `reread` completes (a re-read of the config was asked for): no attempt follows,
/// [`Delivery::reread`] says why. Otherwise an
/// opt-out written to the file during a long pause (up to 30 minutes of `Retry-After`, each
/// retry) would be obeyed only after the retries had sent the event again.
pub(crate) async fn deliver_or_reread<T: Transport>(
    transport: &T,
    body: &Bytes,
    policy: &RetryPolicy,
    shutdown: impl Future<Output = ()>,
    reread: impl Future<Output = Reread>,
) -> Delivery {
    tokio::pin!(shutdown);
    tokio::pin!(reread);
    let mut attempts = 0u32;
    let mut sent = Vec::new();
    loop {
        let tried = transport.send(body).await;
        attempts += 1;
        if tried.body_may_have_left {
            sent.push((SystemTime::now(), tried.attempt.clone()));
        }
        let done = |gave_up, interrupted, reread, sent| Delivery {
            last: tried.attempt.clone(),
            attempts,
            gave_up,
            interrupted,
            reread,
            sent,
        };
        match retry::next(policy, attempts - 1, &tried.attempt, random_unit()) {
            Next::Done => return done(None, false, None, sent),
            Next::GiveUp(why) => return done(Some(why), false, None, sent),
            Next::RetryAfter(pause) => {
                tracing::debug!(
                    attempt = attempts,
                    pause = %humantime::format_duration(pause),
                    "telemetry: {}; trying again",
                    tried.attempt.describe()
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = &mut shutdown => return done(None, true, None, sent),
                    why = &mut reread => return done(None, false, Some(why), sent),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    /// Answers from a script and records when (on tokio's clock) each attempt came.
    struct Scripted {
        answers: Mutex<VecDeque<Attempt>>,
        calls: Mutex<Vec<tokio::time::Instant>>,
        bodies: Mutex<Vec<Bytes>>,
    }

    impl Scripted {
        fn new(answers: Vec<Attempt>) -> Self {
            Scripted {
                answers: Mutex::new(answers.into()),
                calls: Mutex::new(Vec::new()),
                bodies: Mutex::new(Vec::new()),
            }
        }
        fn gaps(&self) -> Vec<Duration> {
            let calls = self.calls.lock().unwrap();
            calls.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    impl Transport for Scripted {
        async fn send(&self, body: &Bytes) -> Tried {
            self.calls.lock().unwrap().push(tokio::time::Instant::now());
            self.bodies.lock().unwrap().push(body.clone());
            let attempt = self
                .answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Attempt::Delivered { status: 200 });
            Tried {
                body_may_have_left: true,
                attempt,
            }
        }
    }

    /// An empty body through `t`, up to five retries, never stopped.
    async fn deliver_with_five_retries(t: &Scripted) -> Delivery {
        deliver(
            t,
            &Bytes::new(),
            &RetryPolicy::new(5),
            std::future::pending(),
        )
        .await
    }

    fn fail(status: Option<u16>) -> Attempt {
        match status {
            Some(s) => retry::classify_status(s, None),
            None => Attempt::Transient {
                status: None,
                reason: "could not connect".into(),
                retry_after: None,
            },
        }
    }

    /// Each transient class is retried up to the bound, with growing, jittered pauses, and
    /// always with the same body.
    #[tokio::test(start_paused = true)]
    async fn transient_classes_retry_to_the_bound_with_backoff() {
        for status in [None, Some(408), Some(500), Some(502), Some(503), Some(504)] {
            let t = Scripted::new(vec![fail(status); 10]);
            let policy = RetryPolicy::new(3);
            let body = Bytes::from_static(br#"{"uuid":"same"}"#);
            let d = deliver(&t, &body, &policy, std::future::pending()).await;
            assert_eq!(d.attempts, 4, "{status:?}");
            assert_eq!(d.gave_up, Some(GiveUpReason::RetriesExhausted));
            let gaps = t.gaps();
            assert_eq!(gaps.len(), 3);
            for (i, gap) in gaps.iter().enumerate() {
                let full = policy.base_delay * 2u32.pow(i as u32);
                assert!(
                    *gap >= full / 2 && *gap < full,
                    "{status:?} gap {i}: {gap:?}"
                );
            }
            assert!(t.bodies.lock().unwrap().iter().all(|b| *b == body));
        }
    }

    /// A re-read asked for during a pause (here 30 minutes of `Retry-After`) ends the
    /// delivery there: no attempt follows, whatever retries are left.
    #[tokio::test(start_paused = true)]
    async fn a_reread_ends_the_retries_during_a_pause() {
        let t = Scripted::new(vec![
            retry::classify_status(
                503,
                Some(Duration::from_secs(30 * 60))
            );
            10
        ]);
        let started = tokio::time::Instant::now();
        let reread = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Reread::FileChanged
        };
        let d = deliver_or_reread(
            &t,
            &Bytes::new(),
            &RetryPolicy::new(5),
            std::future::pending(),
            reread,
        )
        .await;
        assert_eq!(d.attempts, 1, "no attempt after the re-read");
        assert_eq!(d.reread, Some(Reread::FileChanged));
        assert!(!d.interrupted && !d.delivered() && d.gave_up.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        // Without one, the same server gets every retry.
        let t = Scripted::new(vec![
            retry::classify_status(
                503,
                Some(Duration::from_secs(30 * 60))
            );
            10
        ]);
        assert_eq!(deliver_with_five_retries(&t).await.attempts, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn rejections_are_tried_once() {
        for status in [400, 401, 403, 413] {
            let t = Scripted::new(vec![fail(Some(status))]);
            let d = deliver_with_five_retries(&t).await;
            assert_eq!(d.attempts, 1, "{status}");
            assert_eq!(d.gave_up, Some(GiveUpReason::Rejected));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_then_recovers() {
        let t = Scripted::new(vec![
            retry::classify_status(429, Some(Duration::from_secs(42))),
            retry::classify_status(503, Some(Duration::from_secs(7))),
            Attempt::Delivered { status: 200 },
        ]);
        let d = deliver_with_five_retries(&t).await;
        assert!(d.delivered());
        assert_eq!(d.attempts, 3);
        assert_eq!(
            t.gaps(),
            vec![Duration::from_secs(42), Duration::from_secs(7)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_pause_at_once() {
        let t = Scripted::new(vec![fail(None); 10]);
        let (tx, stop) = crate::shutdown::stop_channel();
        let start = tokio::time::Instant::now();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            tx.stop();
            tx
        });
        let d = deliver(&t, &Bytes::new(), &RetryPolicy::new(5), stop.wait()).await;
        assert!(d.interrupted);
        assert_eq!(d.attempts, 1);
        assert_eq!(
            tokio::time::Instant::now() - start,
            Duration::from_millis(500)
        );
        drop(stopper.await);
    }

    #[test]
    fn urls_and_headers() {
        assert_eq!(
            capture_url("https://eu.i.posthog.com"),
            "https://eu.i.posthog.com/i/v0/e/"
        );
        assert_eq!(
            capture_url("http://127.0.0.1:1/"),
            "http://127.0.0.1:1/i/v0/e/"
        );
        assert_eq!(
            user_agent(),
            format!("butler-agent/{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn capture_answers_become_one_safe_line() {
        let key = "phc_5cmKiX9OubQjsSfOZuaolWaxo2z7WXqd295eB0uOtTb";
        assert_eq!(
            answer_text(b"API key is not valid: personal_api_key", key).as_deref(),
            Some("API key is not valid: personal_api_key")
        );
        // Line breaks and terminal escapes cannot forge log lines.
        assert_eq!(
            answer_text(b"bad\r\n\x1b[31mINFO fake line\t\t end\n", key).as_deref(),
            Some("bad [31mINFO fake line end")
        );
        // The key never comes back, nor anything shaped like one.
        let echo = format!("unknown key {key}; also phx_secret123 and  {key}x");
        let said = answer_text(echo.as_bytes(), key).unwrap();
        assert!(!said.contains("phc_") && !said.contains("phx_"), "{said}");
        assert_eq!(said, "unknown key [key]; also [key] and [key]x");
        // Bounded, even for a huge answer, on a character boundary.
        let long = "é".repeat(5000);
        let said = answer_text(long.as_bytes(), key).unwrap();
        assert_eq!(said.chars().count(), MAX_ANSWER_CHARS + 1);
        assert!(said.ends_with('…'));
        assert_eq!(answer_text(b" \r\n\t", key), None);
        assert_eq!(
            answer_text("a\u{202E}b\u{200B}c".as_bytes(), key).as_deref(),
            Some("a b c")
        );
        assert_eq!(
            answer_text(b"a kind key", "k").as_deref(),
            Some("a kind key")
        );
        assert_eq!(
            answer_text(&[0xff, b'o', b'k'], key).as_deref(),
            Some("\u{FFFD}ok")
        );
    }

    #[test]
    fn sent_at_is_unix_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_123);
        assert_eq!(sent_at_millis(t), 1_767_225_600_123);
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
