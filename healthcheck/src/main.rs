//! `healthcheck`: the probe the image's HEALTHCHECK runs, every 12 s, for the container's life.
//!
//! It GETs `http://127.0.0.1:<port>/health` and exits 0 on HTTP 200, 1 otherwise, printing one
//! line that says why (Docker keeps it in `docker inspect`). It depends on nothing but std, so
//! it starts in a millisecond and adds well under 1 MB to the image, where Butler's image starts
//! a whole Node.js process for the same question.
//!
//! Usage: `healthcheck [PORT | URL]`
//! - no argument: port from `BUTLER_HEALTH_PORT`, else 12398;
//! - `PORT`: `http://127.0.0.1:PORT/health`;
//! - `URL`: `http://HOST[:PORT][/PATH]`, HOST an IP address or `localhost` (plain HTTP only:
//!   the health server speaks nothing else).
//!
//! Everything (resolving, connecting, writing, reading the status line) shares one 2 s
//! deadline, Butler's probe timeout, so a hung server cannot hang the probe.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Butler's probe gives up after 2 s; Docker's own timeout (12 s) is the outer bound.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Butler's well-known health port.
const DEFAULT_PORT: u16 = 12398;
/// The status line is all we need; a longer first line is not an HTTP answer.
const MAX_STATUS_LINE: usize = 1024;

const USAGE: &str = "usage: healthcheck [PORT | http://IP[:PORT][/PATH]] \
(default: http://127.0.0.1:$BUTLER_HEALTH_PORT/health, port 12398)";

/// Where to send the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    /// The address to connect to. Names are not resolved: the probe checks the agent in its own
    /// container, and leaving out the resolver keeps glibc's NSS code (170 KB) out of the binary.
    fn ip(&self) -> Result<IpAddr, String> {
        if self.host.eq_ignore_ascii_case("localhost") {
            return Ok(IpAddr::from([127, 0, 0, 1]));
        }
        self.host.parse().map_err(|_| {
            format!(
                "{:?} is not an IP address; the probe does not resolve host names \
                 (use 127.0.0.1, localhost or an IP address)",
                self.host
            )
        })
    }

    fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("http://{host}:{}{}", self.port, self.path)
    }

    /// Chooses the target from the arguments and `BUTLER_HEALTH_PORT`. Pure.
    fn from_args(args: &[String], env_port: Option<&str>) -> Result<Target, String> {
        let local = |port| Target {
            host: "127.0.0.1".into(),
            port,
            path: "/health".into(),
        };
        match args {
            [] => match env_port.map(str::trim).filter(|p| !p.is_empty()) {
                None => Ok(local(DEFAULT_PORT)),
                Some(p) => parse_port(p)
                    .map(local)
                    .map_err(|e| format!("BUTLER_HEALTH_PORT={p:?}: {e}")),
            },
            [arg] if arg.contains("://") => parse_url(arg),
            [arg] => parse_port(arg).map(local),
            _ => Err(format!("expected at most one argument; {USAGE}")),
        }
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?} is not a port number from 1 to 65535; {USAGE}"))
}

/// `http://HOST[:PORT][/PATH]`, HOST may be `[IPv6]`.
fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are supported; {USAGE}"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed '[' in the host"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("{url:?}: unexpected {after:?} after the host")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains('@') {
        return Err(format!(
            "{url:?}: no host name (expected http://HOST[:PORT][/PATH])"
        ));
    }
    let port = match port {
        Some(p) => parse_port(p).map_err(|e| format!("{url:?}: {e}"))?,
        None => 80,
    };
    Ok(Target {
        host: host.to_string(),
        port,
        path,
    })
}

/// The status code from `HTTP/1.x NNN reason`.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Sends the request and returns the status line's code.
fn probe(target: &Target, deadline: Instant) -> Result<u16, String> {
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {} s", TIMEOUT.as_secs()))
    };
    let addr = SocketAddr::new(target.ip()?, target.port);
    let mut stream = TcpStream::connect_timeout(&addr, remaining()?)
        .map_err(|e| format!("cannot connect to {addr}: {}", describe(&e)))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: butler-agent-healthcheck\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        target.path,
        host_header(target)
    );
    stream
        .set_write_timeout(Some(remaining()?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("cannot send the request: {}", describe(&e)))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            return parse_status_line(&line)
                .ok_or_else(|| format!("not an HTTP answer: {:?}", truncate(&line)));
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err("not an HTTP answer: the first line is too long".into());
        }
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|e| format!("cannot read the answer: {}", describe(&e)))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err("the connection closed before an answer".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the answer: {}", describe(&e))),
        }
    }
}

fn host_header(target: &Target) -> String {
    if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// io errors in words a person reading `docker inspect` understands.
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no answer within {} s", TIMEOUT.as_secs())
        }
        io::ErrorKind::ConnectionRefused => {
            "connection refused (is butler-agent running, with its health server on?)".into()
        }
        _ => e.to_string(),
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.as_slice(), [a] if a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let env_port = std::env::var("BUTLER_HEALTH_PORT").ok();
    let target = match Target::from_args(&args, env_port.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            println!("unhealthy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = target.url();
    match probe(&target, started + TIMEOUT) {
        Ok(200) => {
            println!(
                "healthy: {url} answered 200 in {} ms",
                started.elapsed().as_millis()
            );
            ExitCode::SUCCESS
        }
        Ok(code) => {
            println!("unhealthy: {url} answered HTTP {code}");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("unhealthy: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_and_env_port() {
        let t = Target::from_args(&[], None).expect("defaults are valid");
        assert_eq!(t.url(), "http://127.0.0.1:12398/health");
        let t = Target::from_args(&[], Some("12399")).expect("valid port");
        assert_eq!(t.url(), "http://127.0.0.1:12399/health");
        let t = Target::from_args(&[], Some(" ")).expect("blank means unset");
        assert_eq!(t.port, DEFAULT_PORT);
        let e = Target::from_args(&[], Some("70000")).expect_err("out of range");
        assert!(e.contains("BUTLER_HEALTH_PORT"), "{e}");
    }

    #[test]
    fn port_argument_wins() {
        let t = Target::from_args(&args(&["8080"]), Some("1")).expect("valid port");
        assert_eq!(t.url(), "http://127.0.0.1:8080/health");
        assert!(Target::from_args(&args(&["0"]), None).is_err());
        assert!(Target::from_args(&args(&["x"]), None).is_err());
        assert!(Target::from_args(&args(&["1", "2"]), None).is_err());
    }

    #[test]
    fn urls() {
        let t = Target::from_args(&args(&["http://sink:8080/health"]), None).expect("valid");
        assert_eq!(
            t,
            Target {
                host: "sink".into(),
                port: 8080,
                path: "/health".into()
            }
        );
        let t = parse_url("http://[::1]:9/readyz?verbose").expect("valid IPv6 URL");
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert_eq!(t.url(), "http://[::1]:9/readyz?verbose");
        let t = parse_url("http://localhost").expect("no port, no path");
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        let t = parse_url("http://h?x").expect("query without path");
        assert_eq!(t.path, "/?x");
        assert!(parse_url("https://h/").is_err());
        assert!(Target::from_args(&args(&["https://h/"]), None).is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://[::1/").is_err());
        assert!(parse_url("http://h:99999/").is_err());
        assert!(
            parse_url("http://sink:8080/")
                .expect("valid URL")
                .ip()
                .is_err()
        );
        let t = parse_url("http://LOCALHOST:1/").expect("valid URL");
        assert_eq!(t.ip(), Ok(IpAddr::from([127, 0, 0, 1])));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line(""), None);
    }
}
