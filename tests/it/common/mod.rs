//! Helpers shared by the integration tests: copies of fixture trees, and the one way a test
//! starts the agent, as a process ([`agent`]) or as a container ([`docker_run`]).
//!
//! No test may reach the real PostHog. Every agent a test starts therefore gets a
//! [`Telemetry`]: off, or a destination on this machine (a sink or a test server), checked
//! here before the process or container starts. A test that wants to see the default
//! destination asks `telemetry status` or `telemetry preview`, which never send.

// Each test crate uses a part of this module.
#![allow(dead_code)]

pub(crate) mod capture;
/// The unit tests' answer reader (`src/test_support/http_answer.rs`).
#[path = "../../../src/test_support/http_answer.rs"]
pub(crate) mod http_answer;

use std::path::Path;
use std::process::Command;

/// The agent binary under test.
pub(crate) const AGENT: &str = env!("CARGO_BIN_EXE_butler-agent");

/// A destination that refuses at once: a port on this machine where nothing listens (the
/// discard port). For agents whose telemetry must stay on but whose event does not matter.
pub(crate) const NOWHERE: &str = "http://127.0.0.1:9";

/// What the telemetry of an agent started by a test may do.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Telemetry<'a> {
    /// Off by `DO_NOT_TRACK=1`: no event is built and no socket is opened.
    Off,
    /// On, sent to this address (`BUTLER_POSTHOG_HOST`), which must be on this machine: see
    /// [`is_local`].
    To(&'a str),
    /// As the test's own config file says (`Butler.butlerAgent.posthogHost` or
    /// `Butler.anonTelemetry`); the agent's `telemetry status` must show it off or local.
    Config(&'a Path),
}

/// True for a destination that cannot leave this machine or the test's own Docker network:
/// a loopback address, `localhost`, a single-label name (a container on a network the test
/// created), or a `.invalid` name (RFC 6761: never resolves).
pub(crate) fn is_local(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    let host = host.to_ascii_lowercase();
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    !host.is_empty() && (host == "localhost" || !host.contains('.') || host.ends_with(".invalid"))
}

/// The environment that makes `telemetry` safe, checked; for a test that must start the agent
/// through another program (`sh -c '…; exec agent'`), on top of a cleared environment.
pub(crate) fn telemetry_env(telemetry: Telemetry) -> Vec<(&'static str, String)> {
    match telemetry {
        Telemetry::Off => vec![("DO_NOT_TRACK", "1".into())],
        Telemetry::To(url) => {
            assert!(
                is_local(url),
                "a test may only send to this machine, not to {url:?}"
            );
            vec![("BUTLER_POSTHOG_HOST", url.into())]
        }
        Telemetry::Config(file) => {
            let out = Command::new(AGENT)
                .env_clear()
                .args(["telemetry", "status", "--json", "--config"])
                .arg(file)
                .output()
                .expect("the agent binary runs");
            let status: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
                    panic!(
                        "telemetry status of {}: {}",
                        file.display(),
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            let off = status["enabled"] == false;
            let dest = status["destination"].as_str().unwrap_or_default();
            assert!(
                off || is_local(dest),
                "{} would send to {dest:?}: a test config must turn telemetry off or name a \
                 posthogHost on this machine",
                file.display()
            );
            Vec::new()
        }
    }
}

/// The agent binary with a clean environment (nothing leaks in from the machine running the
/// tests) plus the telemetry setting. Add arguments and variables as with any `Command`; a
/// variable that changes the destination or the opt-out belongs in `telemetry`.
pub(crate) fn agent(telemetry: Telemetry) -> Command {
    let mut cmd = Command::new(AGENT);
    cmd.env_clear().envs(telemetry_env(telemetry));
    cmd
}

/// For a test that keeps the agent's variables in a list: the list with its destination
/// (`BUTLER_POSTHOG_HOST`) checked as for [`Telemetry::To`], or [`NOWHERE`] added when it names
/// none. Set on a cleared environment.
pub(crate) fn checked_env<K: AsRef<str>, V: AsRef<str>>(env: &[(K, V)]) -> Vec<(String, String)> {
    let host = env
        .iter()
        .find(|(k, _)| k.as_ref() == "BUTLER_POSTHOG_HOST")
        .map_or(NOWHERE, |(_, v)| v.as_ref());
    let mut all: Vec<(String, String)> = telemetry_env(Telemetry::To(host))
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    all.extend(
        env.iter()
            .filter(|(k, _)| k.as_ref() != "BUTLER_POSTHOG_HOST")
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())),
    );
    all
}

/// [`agent`] with a test's list of variables: see [`checked_env`].
pub(crate) fn agent_with<K: AsRef<str>, V: AsRef<str>>(env: &[(K, V)]) -> Command {
    let mut cmd = Command::new(AGENT);
    cmd.env_clear().envs(checked_env(env));
    cmd
}

/// The arguments of `docker run` for a container of the agent's image:
/// `docker run OPTIONS -e <telemetry> IMAGE ARGS`. Every container a test starts from the image
/// (agent, sink or one-off command) comes from here.
pub(crate) fn docker_run(
    telemetry: Telemetry,
    options: &[&str],
    image: &str,
    args: &[&str],
) -> Vec<String> {
    for o in options {
        assert!(
            ![
                "BUTLER_POSTHOG_HOST",
                "DO_NOT_TRACK",
                "BUTLER_ANON_TELEMETRY",
                "BUTLER_CONFIG"
            ]
            .iter()
            .any(|v| o.contains(v)),
            "{o:?}: give the destination or opt-out as `Telemetry`"
        );
    }
    assert!(
        !matches!(telemetry, Telemetry::Config(_)),
        "a container reads no config file from the test: use Off or To"
    );
    let mut all: Vec<String> = vec!["run".into()];
    all.extend(options.iter().map(|o| o.to_string()));
    for (k, v) in telemetry_env(telemetry) {
        all.extend(["-e".into(), format!("{k}={v}")]);
    }
    all.push(image.into());
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

/// Copies a fixture tree, keeping symbolic links as links (host facts follow them below the
/// root, so a copy must not resolve them).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("temp dir is writable");
    for e in std::fs::read_dir(from).expect("fixture readable").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let meta = std::fs::symlink_metadata(&src).expect("fixture readable");
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&src).expect("link readable");
            std::os::unix::fs::symlink(target, &dst).expect("temp dir is writable");
        } else if meta.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("temp dir is writable");
        }
    }
}

/// Sends `request` on a fresh connection to `addr` (connecting and each read within `limit`),
/// shuts down the write side when `half_close`, and reads until the server closes: the answer's
/// bytes, or what went wrong. A server may close before reading all of an oversized request
/// (its right), so a failed write is not an error; a reset after part of an answer was read
/// returns that part.
pub(crate) fn http_exchange(
    addr: std::net::SocketAddr,
    request: &[u8],
    half_close: bool,
    limit: std::time::Duration,
) -> Result<Vec<u8>, String> {
    use std::io::{ErrorKind, Read, Write};
    let mut c =
        std::net::TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    let _ = c.write_all(request);
    if half_close {
        c.shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
    }
    let mut answer = Vec::new();
    match c.read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(format!(
            "no close within {limit:?}; got {:?}",
            String::from_utf8_lossy(&answer)
        )),
        Err(e) if answer.is_empty() => Err(format!("read: {e}")),
        Err(_) => Ok(answer),
    }
}

/// The status code of the (first) HTTP answer in `answer`.
pub(crate) fn status_code(answer: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))
}

/// `GET path` with `Connection: close` and a 5 s limit: the answer's status code.
pub(crate) fn get_status(addr: std::net::SocketAddr, path: &str) -> Result<u16, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let answer = http_exchange(
        addr,
        request.as_bytes(),
        false,
        std::time::Duration::from_secs(5),
    )?;
    status_code(&answer)
}

/// Reads a started `butler-agent sink`'s stderr (piped) until it logs
/// `listening on http://ADDR` and returns `ADDR`; the rest of its stderr is drained in the
/// background so the sink never blocks on a full pipe.
pub(crate) fn sink_address(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stderr = std::io::BufReader::new(child.stderr.take().expect("the sink's stderr is piped"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = tx.send(addr);
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("the sink logs its address")
}

/// `butler-agent sink` on a loopback port the OS chooses, info-level plain logs on a piped
/// stderr (read by [`QuietSink::spawn`]), stdout discarded; add flags before spawning.
pub(crate) fn sink_command() -> Command {
    let mut cmd = agent(Telemetry::Off);
    cmd.args(["sink", "--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .env("BUTLER_LOG_LEVEL", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// A running sink whose printed events nobody reads, killed on drop.
pub(crate) struct QuietSink {
    child: std::process::Child,
    /// `IP:PORT`, as the sink logged it.
    pub(crate) addr: String,
}

impl QuietSink {
    /// Starts `cmd` (from [`sink_command`]) and waits for its address.
    pub(crate) fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("the binary runs");
        let addr = sink_address(&mut child);
        QuietSink { child, addr }
    }

    /// The sink's process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sink's address as a socket address.
    pub(crate) fn socket(&self) -> std::net::SocketAddr {
        self.addr.parse().expect("the sink logs an IP:PORT")
    }
}

impl Drop for QuietSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port a process listens on (IPv4 or IPv6 TCP), found through its descriptors and the
/// kernel's socket tables, once it listens (within `limit`): for an agent started with port 0
/// whose stdout and stderr are closed or unread, so it cannot say which port it got. Picking
/// a free port first and passing it would race other tests for that port.
pub(crate) fn listening_port(pid: u32, limit: std::time::Duration) -> Option<u16> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(port) = listening_port_now(pid) {
            return Some(port);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn listening_port_now(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    ["tcp", "tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        text.lines().skip(1).find_map(|line| {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid
            // timeout inode ...; state 0A is LISTEN.
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
    })
}

/// A TCP connection to `to` from the loopback address `from` (any of 127.0.0.0/8 is local).
pub(crate) fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> std::net::TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd as _;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("a socket");
    let [a, b, c, d] = from;
    bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, 0)).expect("bind to the loopback alias");
    let std::net::SocketAddr::V4(to) = to else {
        panic!("the health server listens on IPv4 here")
    };
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).expect("connect");
    std::net::TcpStream::from(fd)
}

/// The names of process `pid`'s threads, sorted; panics if it has ended.
pub(crate) fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// [`connect_from`], non-blocking and with a receive buffer of a few KiB set before the
/// connection is made (so the window it offers stays that small): a client that writes what
/// the buffers take and reads little, whose answers back up after a few KiB.
pub(crate) fn connect_from_nonblocking_small_window(
    from: [u8; 4],
    to: std::net::SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd as _;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::RcvBuf, &4096)?;
    let [a, b, c, d] = from;
    bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, 0))?;
    let std::net::SocketAddr::V4(to) = to else {
        panic!("the health server listens on IPv4 here")
    };
    connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    let c = std::net::TcpStream::from(fd);
    c.set_nonblocking(true)?;
    Ok(c)
}
