//! A stand-in for the two parts of Butler that butler-agent talks to, answering exactly as Butler's
//! source does (ptarmiganlabs/butler 16.0.4, commit ad511645ab51; line numbers are for it):
//!
//! - **The REST API's `GET /v4/butlerping`** (`src/routes/rest_server/butler_ping.js` L19-22,
//!   L43): 200 `{"response":"Butler reporting for duty","butlerVersion":"<package.json version>"}`
//!   (`src/globals.js` L86/L103), `content-type: application/json; charset=utf-8`. The route
//!   exists only when `Butler.restServerEndpointsEnable.butlerping` is true (L37-40): otherwise
//!   fastify's own 404 body. `butlerVersion` exists since Butler 6.0 (da180411): a Butler < 6
//!   answers with `response` alone. Per-IP rate limit, `--api-rate-limit`, default 100 calls a
//!   minute (`src/globals.js` L144-148, `src/app.js` L190), then 429 with @fastify/rate-limit's
//!   default body. Butler sits behind a proxy (`src/butler.js` L203-233), so every client shares
//!   one bucket: the stand-in keeps one bucket for all.
//! - **The Docker health endpoint** (`fastify-healthcheck` on `Butler.dockerHealthCheck.port`,
//!   template 12398, started with `listen({ port })` and no host: `src/butler.js` L259-261), so
//!   on loopback only: `GET /health` → 200 `{"statusCode":200,"status":"ok"}`.
//!
//! What Butler cannot be made to do on purpose, the stand-in can: go silent (its listeners close,
//! so connections are refused) and come back, start late, and answer badly (`Fault`), so tests
//! can check how the agent copes. It is std only, so its static binary is small and builds fast.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Butler's version in the stand-in unless told otherwise (the version the facts were read from).
pub const DEFAULT_VERSION: &str = "16.0.4";
/// Butler's `--api-rate-limit` default (`src/globals.js` L144-148).
pub const DEFAULT_RATE_LIMIT: u32 = 100;
/// Where the control commands go unless told otherwise; loopback only.
pub const DEFAULT_CONTROL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 12390);
/// Butler's REST API in Docker: `serverHost: 0.0.0.0`, `serverPort: 8080` (template L1022-1031).
pub const DEFAULT_API: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);

/// The ping body's fixed text (`butler_ping.js` L19-22).
pub const PING_RESPONSE: &str = "Butler reporting for duty";
/// fastify-healthcheck's body.
pub const HEALTH_BODY: &str = r#"{"statusCode":200,"status":"ok"}"#;
const JSON: &str = "application/json; charset=utf-8";
/// How often a closed or idle listener looks at the state again.
const POLL: Duration = Duration::from_millis(10);
/// fastify's keep-alive timeout (72 s), shortened: a test tool keeps no idle connection long.
const IDLE: Duration = Duration::from_secs(5);
/// A request head longer than this is refused (fastify's limit is larger; nobody sends one).
const MAX_HEAD: usize = 16 * 1024;
/// At most this many connections at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 64;
/// The size of the `huge` answer: far beyond any sane version reply.
pub const HUGE_BYTES: usize = 1024 * 1024;
/// How long the `slow` answer stalls between its head and its body.
pub const SLOW_STALL: Duration = Duration::from_secs(10);

/// A way to answer `/v4/butlerping` that Butler does not choose on purpose but a proxy, an older
/// Butler, a crashed handler or a wrong URL can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Butler's own answer.
    None,
    /// 200 with an HTML page (a web server or a login portal at the URL).
    Html,
    /// 500 with the error body of Butler's schema (`src/api/butler_ping.js` L13-30).
    Error,
    /// 200 with a JSON body of `HUGE_BYTES`.
    Huge,
    /// 200 whose head arrives at once and whose body arrives `SLOW_STALL` later.
    Slow,
    /// 302 to another path on the same server.
    Redirect,
    /// Accepts the connection, reads the request and never answers.
    Hang,
}

impl Fault {
    pub const ALL: [(&str, Fault); 7] = [
        ("none", Fault::None),
        ("html", Fault::Html),
        ("error", Fault::Error),
        ("huge", Fault::Huge),
        ("slow", Fault::Slow),
        ("redirect", Fault::Redirect),
        ("hang", Fault::Hang),
    ];
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|&(_, f)| f)
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown fault {s:?} (one of {})", names.join(", "))
            })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Fault::ALL.iter().find(|(_, x)| x == self).map(|(n, _)| *n);
        f.write_str(name.unwrap_or("?"))
    }
}

/// How the stand-in starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// `butlerVersion`; `None`: a Butler older than 6.0, which answers without it. Sent as given
    /// (JSON-escaped), so a test can make it anything.
    pub version: Option<String>,
    /// The REST server's listen address (`serverHost:serverPort`); `None`: the REST server is off
    /// (`restServerConfig.enable: false`), nothing listens.
    pub api: Option<SocketAddr>,
    /// `restServerEndpointsEnable.butlerping`; false: the route is not registered (404).
    pub ping: bool,
    /// `dockerHealthCheck.port`, listened on at 127.0.0.1 only; `None`: off. 0 picks a free port.
    pub health_port: Option<u16>,
    /// The control port (loopback only); `None`: no control port (in-process use).
    pub control: Option<SocketAddr>,
    /// Nothing answers until this long after start (a Butler still starting).
    pub startup_delay: Duration,
    /// Calls to `/v4/butlerping` a minute before 429; 0: no limit.
    pub rate_limit: u32,
    pub fault: Fault,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            version: Some(DEFAULT_VERSION.into()),
            api: Some(DEFAULT_API),
            ping: true,
            health_port: None,
            control: Some(DEFAULT_CONTROL),
            startup_delay: Duration::ZERO,
            rate_limit: DEFAULT_RATE_LIMIT,
            fault: Fault::None,
        }
    }
}

/// Requests seen, for tests that count what reached Butler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests on the REST port, whatever their path or answer.
    pub api: u64,
    /// Of those, answered 200 by `/v4/butlerping`.
    pub ping_ok: u64,
    /// Of those, answered 429.
    pub limited: u64,
    /// Requests on the health port.
    pub health: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "api={} ping_ok={} limited={} health={}",
            self.api, self.ping_ok, self.limited, self.health
        )
    }
}

impl FromStr for Stats {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut st = Stats::default();
        for part in s.split_whitespace() {
            let (k, v) = part.split_once('=').ok_or(format!("bad stats {s:?}"))?;
            let v: u64 = v.parse().map_err(|_| format!("bad stats {s:?}"))?;
            match k {
                "api" => st.api = v,
                "ping_ok" => st.ping_ok = v,
                "limited" => st.limited = v,
                "health" => st.health = v,
                _ => return Err(format!("bad stats {s:?}")),
            }
        }
        Ok(st)
    }
}

/// What the threads share; changed by the control commands or the in-process handle.
struct Shared {
    started: Instant,
    startup_delay: Duration,
    silent: AtomicBool,
    stopping: AtomicBool,
    fault: Mutex<Fault>,
    version: Mutex<Option<String>>,
    ping: AtomicBool,
    rate_limit: u32,
    /// Fixed window: its start and the calls counted in it (@fastify/rate-limit's local store).
    window: Mutex<(Instant, u32)>,
    api: AtomicU64,
    ping_ok: AtomicU64,
    limited: AtomicU64,
    health: AtomicU64,
    connections: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn answering(&self) -> bool {
        !self.silent.load(Ordering::SeqCst)
            && !self.stopping.load(Ordering::SeqCst)
            && self.started.elapsed() >= self.startup_delay
    }

    fn stats(&self) -> Stats {
        Stats {
            api: self.api.load(Ordering::SeqCst),
            ping_ok: self.ping_ok.load(Ordering::SeqCst),
            limited: self.limited.load(Ordering::SeqCst),
            health: self.health.load(Ordering::SeqCst),
        }
    }

    fn reset(&self) {
        for c in [&self.api, &self.ping_ok, &self.limited, &self.health] {
            c.store(0, Ordering::SeqCst);
        }
        *lock(&self.window) = (Instant::now(), 0);
    }

    /// Counts one call against the limit: `Ok(remaining)` or `Err(seconds until the reset)`.
    fn take(&self) -> Result<(u32, u64), u64> {
        let minute = Duration::from_secs(60);
        let mut w = lock(&self.window);
        if w.0.elapsed() >= minute {
            *w = (Instant::now(), 0);
        }
        let reset = minute.saturating_sub(w.0.elapsed()).as_secs().max(1);
        if self.rate_limit > 0 && w.1 >= self.rate_limit {
            return Err(reset);
        }
        w.1 += 1;
        Ok((self.rate_limit.saturating_sub(w.1), reset))
    }

    /// Runs one control command; the answer is one line.
    fn command(&self, line: &str) -> String {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("silent"), None, _) => {
                self.silent.store(true, Ordering::SeqCst);
                "ok silent".into()
            }
            (Some("answer"), None, _) => {
                self.silent.store(false, Ordering::SeqCst);
                "ok answering".into()
            }
            (Some("stats"), None, _) => self.stats().to_string(),
            (Some("reset"), None, _) => {
                self.reset();
                "ok reset".into()
            }
            (Some("fault"), Some(kind), None) => match kind.parse::<Fault>() {
                Ok(f) => {
                    *lock(&self.fault) = f;
                    format!("ok fault {f}")
                }
                Err(e) => format!("error: {e}"),
            },
            (Some("version"), Some(v), None) => {
                *lock(&self.version) = (v != "none").then(|| v.to_string());
                format!("ok version {v}")
            }
            (Some("ping"), Some(on @ ("on" | "off")), None) => {
                self.ping.store(on == "on", Ordering::SeqCst);
                format!("ok ping {on}")
            }
            (Some("stop"), None, _) => {
                self.stopping.store(true, Ordering::SeqCst);
                "ok stopping".into()
            }
            _ => format!("error: unknown command {line:?} ({COMMANDS})"),
        }
    }
}

/// The control commands, for usage lines.
pub const COMMANDS: &str =
    "silent | answer | stats | reset | fault KIND | version V|none | ping on|off | stop";

/// A running stand-in. Dropping it stops its threads and closes its ports.
pub struct Standin {
    shared: Arc<Shared>,
    api: Option<SocketAddr>,
    health: Option<SocketAddr>,
    control: Option<SocketAddr>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Standin {
    /// Binds every port (so port 0 resolves to a real one), then serves on threads of its own.
    /// With a start-up delay the ports are released at once and bound again when the delay ends.
    pub fn start(opts: Options) -> io::Result<Standin> {
        if let Some(c) = opts.control
            && !c.ip().is_loopback()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the control port must be on loopback, not {c}"),
            ));
        }
        let shared = Arc::new(Shared {
            started: Instant::now(),
            startup_delay: opts.startup_delay,
            silent: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            fault: Mutex::new(opts.fault),
            version: Mutex::new(opts.version),
            ping: AtomicBool::new(opts.ping),
            rate_limit: opts.rate_limit,
            window: Mutex::new((Instant::now(), 0)),
            api: AtomicU64::new(0),
            ping_ok: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            health: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
        });
        let mut threads = Vec::new();
        let mut bound = |addr: SocketAddr, role: Role| -> io::Result<SocketAddr> {
            let l = TcpListener::bind(addr)?;
            let at = l.local_addr()?;
            let sh = Arc::clone(&shared);
            threads.push(thread::spawn(move || serve(l, at, role, sh)));
            Ok(at)
        };
        let api = opts.api.map(|a| bound(a, Role::Api)).transpose()?;
        let health = opts
            .health_port
            .map(|p| bound(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), p), Role::Health))
            .transpose()?;
        let control = opts.control.map(|a| bound(a, Role::Control)).transpose()?;
        Ok(Standin {
            shared,
            api,
            health,
            control,
            threads,
        })
    }

    /// Where the REST API listens (`None` when it is off).
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api
    }
    /// The REST API's base URL, `http://127.0.0.1:PORT` for an unspecified listen address.
    pub fn api_url(&self) -> Option<String> {
        self.api.map(|a| {
            let ip = if a.ip().is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                a.ip()
            };
            format!("http://{}", SocketAddr::new(ip, a.port()))
        })
    }
    /// Where the health endpoint listens (`None` when it is off).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health
    }
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control
    }
    /// Stops answering: every port but the control port closes (connections are refused).
    pub fn silence(&self) {
        self.shared.command("silent");
    }
    /// Answers again on the same ports.
    pub fn answer(&self) {
        self.shared.command("answer");
    }
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
    }
    pub fn set_version(&self, version: Option<&str>) {
        *lock(&self.shared.version) = version.map(str::to_string);
    }
    pub fn set_ping(&self, on: bool) {
        self.shared.ping.store(on, Ordering::SeqCst);
    }
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
    pub fn reset(&self) {
        self.shared.reset();
    }
    /// True once a `stop` command came (the binary exits then).
    pub fn stop_requested(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends one control command to a running stand-in and returns its one-line answer.
pub fn control(at: SocketAddr, command: &str) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s.take(4096)).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Api,
    Health,
    Control,
}

/// Accepts connections while answering; while silent the listener is closed, and bound again at
/// the same address when answering resumes. The control port never closes.
fn serve(listener: TcpListener, at: SocketAddr, role: Role, shared: Arc<Shared>) {
    let mut listener = Some(listener);
    while !shared.stopping.load(Ordering::SeqCst) {
        let live = role == Role::Control || shared.answering();
        if !live {
            listener = None;
            thread::sleep(POLL);
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(at) {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    thread::sleep(POLL);
                    continue;
                }
            },
        };
        if l.set_nonblocking(true).is_err() {
            thread::sleep(POLL);
            continue;
        }
        match l.accept() {
            Ok((conn, _)) => {
                let _ = conn.set_nonblocking(false);
                if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    shared.connections.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let sh = Arc::clone(&shared);
                thread::spawn(move || {
                    let _ = connection(conn, role, &sh);
                    sh.connections.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Serves the requests of one connection (keep-alive, as fastify does).
fn connection(conn: TcpStream, role: Role, shared: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(IDLE))?;
    conn.set_write_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    if role == Role::Control {
        let mut line = String::new();
        (&mut reader).take(4096).read_line(&mut line)?;
        let answer = shared.command(line.trim());
        out.write_all(format!("{answer}\n").as_bytes())?;
        return Ok(());
    }
    loop {
        let Some(req) = read_head(&mut reader)? else {
            return Ok(());
        };
        // A stand-in told to go silent mid-connection closes it unanswered.
        if !shared.answering() {
            return Ok(());
        }
        let reply = match role {
            Role::Health => {
                shared.health.fetch_add(1, Ordering::SeqCst);
                health_reply(&req)
            }
            _ => {
                shared.api.fetch_add(1, Ordering::SeqCst);
                api_reply(&req, shared)
            }
        };
        let close = req.close;
        match reply {
            Reply::Hang => {
                // Reads nothing more and answers nothing until the peer gives up.
                let mut sink = [0u8; 512];
                while !shared.stopping.load(Ordering::SeqCst) {
                    match reader.get_mut().read(&mut sink) {
                        Ok(0) => return Ok(()),
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => return Err(e),
                    }
                }
                return Ok(());
            }
            Reply::Http {
                status,
                headers,
                body,
                stall,
            } => {
                let mut head = format!("HTTP/1.1 {status}\r\n");
                for (k, v) in &headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str(&format!("content-length: {}\r\n", body.len()));
                if close {
                    head.push_str("connection: close\r\n\r\n");
                } else {
                    head.push_str("connection: keep-alive\r\nkeep-alive: timeout=72\r\n\r\n");
                }
                out.write_all(head.as_bytes())?;
                if let Some(stall) = stall {
                    out.flush()?;
                    let until = Instant::now() + stall;
                    while Instant::now() < until && !shared.stopping.load(Ordering::SeqCst) {
                        thread::sleep(POLL);
                    }
                }
                out.write_all(&body)?;
                out.flush()?;
            }
        }
        if close {
            let _ = out.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

struct Request {
    method: String,
    path: String,
    close: bool,
}

/// Reads one request head; `None` at a clean end of the connection.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r
            .take((MAX_HEAD + 1 - head.len()) as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let version = parts.next().unwrap_or_default();
    let mut close = version == "HTTP/1.0";
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("connection")
        {
            close = v.trim().eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(Request {
        method,
        path,
        close,
    }))
}

enum Reply {
    Http {
        status: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        stall: Option<Duration>,
    },
    Hang,
}

fn json(status: &'static str, body: String) -> Reply {
    Reply::Http {
        status,
        headers: vec![("content-type", JSON.into())],
        body: body.into_bytes(),
        stall: None,
    }
}

/// fastify's default 404 (its `fourOhFour` handler): `Route <METHOD>:<url> not found`.
fn not_found(req: &Request) -> Reply {
    json(
        "404 Not Found",
        format!(
            r#"{{"message":"Route {}:{} not found","error":"Not Found","statusCode":404}}"#,
            escape(&req.method),
            escape(&req.path)
        ),
    )
}

fn health_reply(req: &Request) -> Reply {
    if req.method == "GET" && req.path == "/health" {
        json("200 OK", HEALTH_BODY.into())
    } else {
        not_found(req)
    }
}

fn api_reply(req: &Request, shared: &Shared) -> Reply {
    let route = req.path.split('?').next().unwrap_or_default();
    if !(req.method == "GET" && route == "/v4/butlerping" && shared.ping.load(Ordering::SeqCst)) {
        return not_found(req);
    }
    let limit = shared.rate_limit.to_string();
    let (remaining, reset) = match shared.take() {
        Ok(ok) => ok,
        Err(reset) => {
            shared.limited.fetch_add(1, Ordering::SeqCst);
            // @fastify/rate-limit's default error, serialised by fastify's error handler.
            let mut r = json(
                "429 Too Many Requests",
                r#"{"statusCode":429,"error":"Too Many Requests","message":"Rate limit exceeded, retry in 1 minute"}"#
                    .into(),
            );
            if let Reply::Http { headers, .. } = &mut r {
                headers.push(("x-ratelimit-limit", limit));
                headers.push(("x-ratelimit-remaining", "0".into()));
                headers.push(("x-ratelimit-reset", reset.to_string()));
                headers.push(("retry-after", reset.to_string()));
            }
            return r;
        }
    };
    let fault = *lock(&shared.fault);
    let version = lock(&shared.version).clone();
    let body = match &version {
        Some(v) => format!(
            r#"{{"response":"{PING_RESPONSE}","butlerVersion":"{}"}}"#,
            escape(v)
        ),
        None => format!(r#"{{"response":"{PING_RESPONSE}"}}"#),
    };
    let mut reply = match fault {
        Fault::None => {
            shared.ping_ok.fetch_add(1, Ordering::SeqCst);
            json("200 OK", body)
        }
        Fault::Html => Reply::Http {
            status: "200 OK",
            headers: vec![("content-type", "text/html; charset=utf-8".into())],
            body: b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in</body></html>".to_vec(),
            stall: None,
        },
        // The 500 schema of `src/api/butler_ping.js` L13-30.
        Fault::Error => json(
            "500 Internal Server Error",
            r#"{"statusCode":500,"code":"500","error":"Internal Server Error","message":"Something went wrong","time":"2026-01-01T00:00:00.000Z"}"#.into(),
        ),
        Fault::Huge => {
            let pad = "x".repeat(HUGE_BYTES);
            json(
                "200 OK",
                format!(r#"{{"response":"{PING_RESPONSE}","padding":"{pad}","butlerVersion":"16.0.4"}}"#),
            )
        }
        Fault::Slow => Reply::Http {
            status: "200 OK",
            headers: vec![("content-type", JSON.into())],
            body: body.into_bytes(),
            stall: Some(SLOW_STALL),
        },
        Fault::Redirect => Reply::Http {
            status: "302 Found",
            headers: vec![("location", "/v4/butlerping-moved".into())],
            body: Vec::new(),
            stall: None,
        },
        Fault::Hang => Reply::Hang,
    };
    if let Reply::Http { headers, .. } = &mut reply {
        headers.push(("x-ratelimit-limit", limit));
        headers.push(("x-ratelimit-remaining", remaining.to_string()));
        headers.push(("x-ratelimit-reset", reset.to_string()));
    }
    reply
}

/// A JSON string's contents.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
