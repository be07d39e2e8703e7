//! `healthcheck`: the probe the image's HEALTHCHECK runs, every 12 s, for the container's life.
//!
//! It GETs `http://127.0.0.1:<port>/health` and exits 0 on HTTP 200, 1 otherwise, printing one
//! line that says why (Docker keeps it in `docker inspect`). It depends on nothing, not even
//! a C library, so it starts in well under a millisecond and adds a few tens of KB to the
//! image, where Butler's image starts a whole Node.js process for the same question.
//!
//! Usage: `healthcheck [PORT | URL]`
//! - no argument: port from `BUTLER_HEALTH_PORT`, else 12398;
//! - `PORT`: `http://127.0.0.1:PORT/health`;
//! - `URL`: `http://HOST[:PORT][/PATH]`, HOST an IP address or `localhost` (plain HTTP only:
//!   the health server speaks nothing else), e.g. `http://127.0.0.1:12398/readyz`.
//!
//! Everything (connecting, writing, reading the status line) shares one 2 s deadline, Butler's
//! probe timeout, so a hung server cannot hang the probe.
//!
//! # Why no std, and no C library
//! A static std binary is 1.1 MB before it does anything: static glibc's start-up (0.7 MB) and
//! std's runtime (panic hook, backtrace symbolizer, I/O error formatting), none of which a probe
//! needs. This one uses `core` only and makes its few Linux system calls itself ([`sys`]:
//! socket, connect, ppoll, sendto, recvfrom, clock_gettime, write, exit), so the same code runs
//! everywhere. The image's build (`scripts/build-image`: cargo profile `probe`, which aborts
//! on panic, static, linked without C start files or library) compiles it freestanding, with
//! its own `_start`: a few tens of KB. Other builds (`cargo build`, the tests) link std and
//! the C library as every Rust program does, and enter through C's `main` (`#![no_main]`).

#![cfg_attr(all(panic = "abort", target_feature = "crt-static"), no_std)]
#![cfg_attr(not(test), no_main)]

use core::fmt::{self, Write as _};
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Butler's probe gives up after 2 s; Docker's own timeout (12 s) is the outer bound.
const TIMEOUT_MS: u64 = 2_000;
/// Butler's well-known health port.
const DEFAULT_PORT: u16 = 12398;
/// The status line is all we need; a longer first line is not an HTTP answer.
const MAX_STATUS_LINE: usize = 1024;
/// The request (path and headers) must fit here; the agent refuses heads over 8 KiB anyway.
const MAX_REQUEST: usize = 8 * 1024;
/// The one output line; a longer one (a very long URL) is cut, marked with `…`.
const MAX_LINE: usize = 4 * 1024;

const USAGE: &str = "usage: healthcheck [PORT | http://IP[:PORT][/PATH]] \
(default: http://127.0.0.1:$BUTLER_HEALTH_PORT/health, port 12398)";

/// Where to send the probe. Borrows from the argument it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target<'a> {
    host: &'a str,
    port: u16,
    path: Path<'a>,
}

/// The request path: `rest`, after a `/` when the URL had none before its query
/// (`http://h?x` asks for `/?x`; `http://h` for `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Path<'a> {
    slash: bool,
    rest: &'a str,
}

impl Path<'static> {
    const HEALTH: Path<'static> = Path {
        slash: false,
        rest: "/health",
    };
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.slash {
            f.write_char('/')?;
        }
        f.write_str(self.rest)
    }
}

/// `http://HOST:PORT/PATH` for messages, with an IPv6 host in brackets and a path over
/// [`MAX_SHOWN_PATH`] characters cut with `…`, so that the reason after it stays on the line.
struct Url<'t, 'a>(&'t Target<'a>);

/// How much of a path a message shows.
const MAX_SHOWN_PATH: usize = 200;

impl fmt::Display for Url<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.0.path;
        write!(f, "http://{}", HostHeader(self.0))?;
        if path.slash {
            f.write_char('/')?;
        }
        match path.rest.char_indices().nth(MAX_SHOWN_PATH) {
            Some((cut, _)) => write!(f, "{}…", &path.rest[..cut]),
            None => f.write_str(path.rest),
        }
    }
}

/// `HOST:PORT` as the `Host` header wants it (IPv6 in brackets).
struct HostHeader<'t, 'a>(&'t Target<'a>);

impl fmt::Display for HostHeader<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        if t.host.contains(':') {
            write!(f, "[{}]:{}", t.host, t.port)
        } else {
            write!(f, "{}:{}", t.host, t.port)
        }
    }
}

impl<'a> Target<'a> {
    fn local(port: u16) -> Self {
        Target {
            host: "127.0.0.1",
            port,
            path: Path::HEALTH,
        }
    }

    /// The address to connect to. Names are not resolved: the probe checks the agent in its own
    /// container, and leaving out the resolver keeps glibc's NSS code out of the binary.
    fn ip(&self) -> Result<IpAddr, Error<'a>> {
        if self.host.eq_ignore_ascii_case("localhost") {
            return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        self.host.parse().map_err(|_| Error::NotIp(self.host))
    }

    /// Chooses the target from the arguments (at most one) and `BUTLER_HEALTH_PORT`. Pure.
    fn from_args(args: &[Arg<'a>], env_port: Option<Arg<'a>>) -> Result<Self, Error<'a>> {
        match args {
            [] => match env_port {
                None => Ok(Self::local(DEFAULT_PORT)),
                Some(Arg::NotUtf8) => Err(Error::EnvPort(PortError::NotUtf8)),
                Some(Arg::Text(p)) => match p.trim() {
                    "" => Ok(Self::local(DEFAULT_PORT)),
                    p => parse_port(p)
                        .map(Self::local)
                        .map_err(|_| Error::EnvPort(PortError::Range(p))),
                },
            },
            [Arg::NotUtf8] => Err(Error::ArgNotUtf8),
            [Arg::Text(arg)] if arg.contains("://") => parse_url(arg),
            [Arg::Text(arg)] => parse_port(arg).map(Self::local),
            _ => Err(Error::TooManyArgs),
        }
    }
}

/// One command-line argument or environment value as the C runtime hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg<'a> {
    Text(&'a str),
    NotUtf8,
}

impl<'a> Arg<'a> {
    fn from_bytes(bytes: &'a [u8]) -> Self {
        core::str::from_utf8(bytes).map_or(Arg::NotUtf8, Arg::Text)
    }
}

fn parse_port(text: &str) -> Result<u16, Error<'_>> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or(Error::Port(text))
}

/// `http://HOST[:PORT][/PATH]`, HOST may be `[IPv6]`.
fn parse_url(url: &str) -> Result<Target<'_>, Error<'_>> {
    let bad = |why| Error::Url(url, why);
    let rest = url.strip_prefix("http://").ok_or(bad(UrlError::NotHttp))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (
            &rest[..i],
            Path {
                slash: !rest[i..].starts_with('/'),
                rest: &rest[i..],
            },
        ),
        None => (
            rest,
            Path {
                slash: true,
                rest: "",
            },
        ),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(bad(UrlError::Unclosed))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(bad(UrlError::AfterHost(after))),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains('@') {
        return Err(bad(UrlError::NoHost));
    }
    let port = match port {
        Some(p) => parse_port(p).map_err(|_| bad(UrlError::Port(p)))?,
        None => 80,
    };
    Ok(Target { host, port, path })
}

/// The status code from `HTTP/1.x NNN reason`.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = core::str::from_utf8(line).ok()?;
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

/// Why the probe did not get a status code, in words a person reading `docker inspect`
/// understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Error<'a> {
    TooManyArgs,
    ArgNotUtf8,
    Port(&'a str),
    EnvPort(PortError<'a>),
    Url(&'a str, UrlError<'a>),
    NotIp(&'a str),
    RequestTooLong,
    Connect(SocketAddr, Os),
    Send(Os),
    Read(Os),
    Closed,
    NotHttp(Snippet),
    LineTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortError<'a> {
    NotUtf8,
    Range(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlError<'a> {
    NotHttp,
    Unclosed,
    AfterHost(&'a str),
    NoHost,
    Port(&'a str),
}

/// `"TEXT" is not a port number …`.
struct NotAPort<'a>(&'a str);

impl fmt::Display for NotAPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a port number from 1 to 65535; {USAGE}",
            self.0
        )
    }
}

impl fmt::Display for Error<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::TooManyArgs => write!(f, "expected at most one argument; {USAGE}"),
            Error::ArgNotUtf8 => write!(f, "the argument is not UTF-8 text; {USAGE}"),
            Error::Port(text) => NotAPort(text).fmt(f),
            Error::EnvPort(PortError::NotUtf8) => {
                write!(f, "BUTLER_HEALTH_PORT is not UTF-8 text; {USAGE}")
            }
            Error::EnvPort(PortError::Range(p)) => {
                write!(f, "BUTLER_HEALTH_PORT={p:?}: {}", NotAPort(p))
            }
            Error::Url(url, why) => match why {
                UrlError::NotHttp => {
                    write!(f, "{url:?}: only http:// URLs are supported; {USAGE}")
                }
                UrlError::Unclosed => write!(f, "{url:?}: unclosed '[' in the host"),
                UrlError::AfterHost(after) => {
                    write!(f, "{url:?}: unexpected {after:?} after the host")
                }
                UrlError::NoHost => {
                    write!(
                        f,
                        "{url:?}: no host name (expected http://HOST[:PORT][/PATH])"
                    )
                }
                UrlError::Port(p) => write!(f, "{url:?}: {}", NotAPort(p)),
            },
            Error::NotIp(host) => write!(
                f,
                "{host:?} is not an IP address; the probe does not resolve host names \
                 (use 127.0.0.1, localhost or an IP address)"
            ),
            Error::RequestTooLong => write!(
                f,
                "the request would be over {} KiB; use a shorter path",
                MAX_REQUEST / 1024
            ),
            Error::Connect(addr, e) => write!(f, "cannot connect to {addr}: {e}"),
            Error::Send(e) => write!(f, "cannot send the request: {e}"),
            Error::Read(e) => write!(f, "cannot read the answer: {e}"),
            Error::Closed => f.write_str("the connection closed before an answer"),
            Error::NotHttp(ref line) => {
                write!(f, "not an HTTP answer: {}", Quoted(line.as_bytes(), 80))
            }
            Error::LineTooLong => f.write_str("not an HTTP answer: the first line is too long"),
        }
    }
}

/// Up to `.1` characters of `.0` as a quoted, escaped string; invalid UTF-8 shows as U+FFFD.
struct Quoted<'a>(&'a [u8], usize);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut left = self.1;
        f.write_char('"')?;
        'chunks: for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if left == 0 {
                    break 'chunks;
                }
                left -= 1;
                for e in c.escape_debug() {
                    f.write_char(e)?;
                }
            }
            if !chunk.invalid().is_empty() {
                if left == 0 {
                    break;
                }
                left -= 1;
                f.write_char(char::REPLACEMENT_CHARACTER)?;
            }
        }
        f.write_char('"')
    }
}

/// An OS error number (`errno`). The values are Linux's, the same on every architecture the
/// image is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Os(i32);

impl Os {
    const INTERRUPTED: Os = Os(4);
    const WOULD_BLOCK: Os = Os(11);
    const TIMED_OUT: Os = Os(110);
    const REFUSED: Os = Os(111);
    const IN_PROGRESS: Os = Os(115);
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match *self {
            Os::WOULD_BLOCK | Os::TIMED_OUT => {
                return write!(f, "no answer within {} s", TIMEOUT_MS / 1000);
            }
            Os::REFUSED => {
                "connection refused (is butler-agent running, with its health server on?)"
            }
            Os(1) => "operation not permitted",
            Os(13) => "permission denied",
            Os(23) | Os(24) => "too many open files",
            Os(32) => "broken pipe",
            Os(97) => "address family not supported",
            Os(99) => "cannot assign the requested address",
            Os(100) => "network is down",
            Os(101) => "network is unreachable",
            Os(104) => "connection reset by peer",
            Os(105) => "no buffer space available",
            Os(113) => "no route to host",
            Os(n) => return write!(f, "os error {n}"),
        };
        f.write_str(text)
    }
}

/// A fixed buffer that text is formatted into: no allocator needed. Text that does not fit
/// is cut at a character boundary and `full` is set.
struct Buf<const N: usize> {
    bytes: [u8; N],
    len: usize,
    full: bool,
}

impl<const N: usize> Buf<N> {
    fn new() -> Self {
        Buf {
            bytes: [0; N],
            len: 0,
            full: false,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> fmt::Write for Buf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.full = true;
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// The one line the probe prints, cut with `…` when it does not fit.
fn line(args: fmt::Arguments<'_>) -> Buf<MAX_LINE> {
    let mut out = Buf::<MAX_LINE>::new();
    if out.write_fmt(args).is_err() && out.full {
        // Make room for the mark: cut back to a character boundary 4 bytes from the end.
        let mut end = MAX_LINE - 4;
        while end > 0 && (out.bytes[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        out.len = end;
        let _ = out.write_str("…");
    }
    let _ = out.write_str("\n");
    out
}

/// Sends the request and returns the status line's code.
fn probe<'a>(target: &Target<'a>, deadline: sys::Instant) -> Result<u16, Error<'a>> {
    let mut request = Buf::<MAX_REQUEST>::new();
    if write!(
        request,
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: butler-agent-healthcheck\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        target.path,
        HostHeader(target)
    )
    .is_err()
    {
        return Err(Error::RequestTooLong);
    }
    let addr = SocketAddr::new(target.ip()?, target.port);
    let socket = sys::Socket::connect(addr, deadline).map_err(|e| Error::Connect(addr, e))?;
    socket
        .send_all(request.as_bytes(), deadline)
        .map_err(Error::Send)?;
    read_status(&socket, deadline)
}

/// Reads until the end of the status line and parses it.
fn read_status<'a>(socket: &sys::Socket, deadline: sys::Instant) -> Result<u16, Error<'a>> {
    let mut buf = [0u8; MAX_STATUS_LINE + 256];
    let mut len = 0;
    loop {
        if let Some(end) = buf[..len].windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&buf[..end])
                .ok_or_else(|| Error::NotHttp(Snippet::of(&buf[..end])));
        }
        if len > MAX_STATUS_LINE {
            return Err(Error::LineTooLong);
        }
        match socket.recv(&mut buf[len..], deadline) {
            Ok(0) => return Err(Error::Closed),
            Ok(n) => len += n,
            Err(e) => return Err(Error::Read(e)),
        }
    }
}

/// The start of a rejected status line, kept for the message (its first 80 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snippet {
    bytes: [u8; 80],
    len: u8,
}

impl Snippet {
    fn of(line: &[u8]) -> Self {
        let n = line.len().min(80);
        let mut s = Snippet {
            bytes: [0; 80],
            len: n as u8,
        };
        s.bytes[..n].copy_from_slice(&line[..n]);
        s
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The whole probe: arguments and environment in; the exit code and the line to print out.
fn run(args: &[Arg<'_>], env_port: Option<Arg<'_>>, started: sys::Instant) -> (i32, Buf<MAX_LINE>) {
    if matches!(args, [Arg::Text("-h" | "--help")]) {
        return (0, line(format_args!("{USAGE}")));
    }
    let target = match Target::from_args(args, env_port) {
        Ok(t) => t,
        Err(e) => return (1, line(format_args!("unhealthy: {e}"))),
    };
    match probe(&target, started.after_ms(TIMEOUT_MS)) {
        Ok(200) => (
            0,
            line(format_args!(
                "healthy: {} answered 200 in {} ms",
                Url(&target),
                sys::Instant::now().ms_since(started)
            )),
        ),
        Ok(status) => (
            1,
            line(format_args!(
                "unhealthy: {} answered HTTP {status}",
                Url(&target)
            )),
        ),
        Err(e) => (1, line(format_args!("unhealthy: {}: {e}", Url(&target)))),
    }
}

/// The probe's start: the arguments and the environment as the kernel or the C runtime hands
/// them over, to [`run`]; prints its line and returns the exit code.
///
/// # Safety
/// `argv` holds `argc` valid NUL-terminated strings; `envp` is a NULL-terminated array of
/// them, as the kernel lays them out.
#[cfg(not(test))]
unsafe fn start(argc: usize, argv: *const *const u8, envp: *const *const u8) -> i32 {
    let started = sys::Instant::now();
    // Two are enough to tell one argument from too many.
    let mut args = [Arg::NotUtf8; 2];
    let given = argc.saturating_sub(1).min(2);
    for (i, slot) in args.iter_mut().enumerate().take(given) {
        // SAFETY: i + 1 < argc, so argv[i + 1] is one of the argument strings.
        *slot = Arg::from_bytes(unsafe { sys::c_str(*argv.add(i + 1)) });
    }
    // SAFETY: envp is the process's environment, as the caller guarantees.
    let env_port = unsafe { sys::getenv(envp, b"BUTLER_HEALTH_PORT") }.map(Arg::from_bytes);
    let (code, out) = run(&args[..given], env_port, started);
    sys::print(out.as_bytes());
    code
}

/// The C runtime's entry point (builds with std or a C library).
///
/// # Safety
/// Called by the C runtime with its `argc`, `argv` and `envp`.
#[cfg(not(any(test, all(panic = "abort", target_feature = "crt-static"))))]
#[unsafe(no_mangle)]
unsafe extern "C" fn main(argc: i32, argv: *const *const u8, envp: *const *const u8) -> i32 {
    // SAFETY: the C runtime passes valid arguments and environment.
    sys::exit(unsafe { start(usize::try_from(argc).unwrap_or(0), argv, envp) })
}

/// The image's build: no C library at all. The kernel starts the program at `_start` with the
/// stack holding argc, the argv pointers, NULL, the envp pointers, NULL.
#[cfg(all(panic = "abort", target_feature = "crt-static", not(test)))]
mod freestanding {
    #[cfg(target_arch = "x86_64")]
    core::arch::global_asm!(
        ".globl _start",
        "_start:",
        "xor ebp, ebp",
        "mov rdi, rsp",
        "and rsp, -16",
        "call {entry}",
        "ud2",
        entry = sym entry,
    );

    #[cfg(target_arch = "aarch64")]
    core::arch::global_asm!(
        ".globl _start",
        "_start:",
        "mov x29, xzr",
        "mov x30, xzr",
        "mov x0, sp",
        "and sp, x0, #-16",
        "bl {entry}",
        "brk #0",
        entry = sym entry,
    );

    /// # Safety
    /// `sp` is the initial stack pointer the kernel set up.
    unsafe extern "C" fn entry(sp: *const usize) -> ! {
        // SAFETY: the kernel's initial stack: argc, then argc pointers and NULL, then envp.
        let code = unsafe {
            let argc = *sp;
            let argv = sp.add(1).cast::<*const u8>();
            super::start(argc, argv, argv.add(argc + 1))
        };
        super::sys::exit(code)
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        super::sys::exit(super::PANIC_EXIT)
    }

    // What the compiler calls for copies and comparisons, which a C library would provide.
    // Plain loops: the optimizer does not turn the body of a function with these names into a
    // call to itself.

    /// # Safety
    /// As C's `memcpy`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        let mut i = 0;
        while i < n {
            // SAFETY: the caller guarantees n valid bytes at both.
            unsafe { *dst.add(i) = *src.add(i) };
            i += 1;
        }
        dst
    }

    /// # Safety
    /// As C's `memmove`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        if (dst as usize) <= (src as usize) {
            // SAFETY: forward copy never overwrites a byte before it is read here.
            return unsafe { memcpy(dst, src, n) };
        }
        let mut i = n;
        while i > 0 {
            i -= 1;
            // SAFETY: the caller guarantees n valid bytes at both.
            unsafe { *dst.add(i) = *src.add(i) };
        }
        dst
    }

    /// # Safety
    /// As C's `memset`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
        let mut i = 0;
        while i < n {
            // SAFETY: the caller guarantees n valid bytes.
            unsafe { *dst.add(i) = c as u8 };
            i += 1;
        }
        dst
    }

    /// # Safety
    /// As C's `memcmp`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut i = 0;
        while i < n {
            // SAFETY: the caller guarantees n valid bytes at both.
            let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            i += 1;
        }
        0
    }

    /// # Safety
    /// As C's `strlen` (the optimizer turns [`super::sys::c_str`]'s loop into a call to it).
    #[unsafe(no_mangle)]
    unsafe extern "C" fn strlen(s: *const u8) -> usize {
        let mut n = 0;
        // SAFETY: the caller guarantees a NUL-terminated string.
        while unsafe { *s.add(n) } != 0 {
            n += 1;
        }
        n
    }

    /// # Safety
    /// As C's `bcmp`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: same contract.
        unsafe { memcmp(a, b, n) }
    }
}

/// Exit code after a panic (a bug): 101, as a Rust program's.
#[cfg(all(panic = "abort", target_feature = "crt-static", not(test)))]
const PANIC_EXIT: i32 = 101;

/// The Linux system calls the probe makes, behind safe wrappers, made directly (no C library):
/// the same code runs in the tests and in the image. Structure layouts, numbers and constants
/// are Linux's for x86_64 and aarch64, the image's architectures.
mod sys {
    use core::net::SocketAddr;

    use super::Os;

    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    compile_error!("the probe's system calls are written for Linux on x86_64 and aarch64");

    #[cfg(target_arch = "x86_64")]
    mod nr {
        pub(super) const WRITE: usize = 1;
        pub(super) const CLOSE: usize = 3;
        pub(super) const SOCKET: usize = 41;
        pub(super) const CONNECT: usize = 42;
        pub(super) const SENDTO: usize = 44;
        pub(super) const RECVFROM: usize = 45;
        pub(super) const GETSOCKOPT: usize = 55;
        #[cfg_attr(test, allow(dead_code))]
        pub(super) const EXIT_GROUP: usize = 231;
        pub(super) const CLOCK_GETTIME: usize = 228;
        pub(super) const PPOLL: usize = 271;
    }

    #[cfg(target_arch = "aarch64")]
    mod nr {
        pub(super) const WRITE: usize = 64;
        pub(super) const CLOSE: usize = 57;
        pub(super) const SOCKET: usize = 198;
        pub(super) const CONNECT: usize = 203;
        pub(super) const SENDTO: usize = 206;
        pub(super) const RECVFROM: usize = 207;
        pub(super) const GETSOCKOPT: usize = 209;
        #[cfg_attr(test, allow(dead_code))]
        pub(super) const EXIT_GROUP: usize = 94;
        pub(super) const CLOCK_GETTIME: usize = 113;
        pub(super) const PPOLL: usize = 73;
    }

    /// One system call; a result in -4095..=-1 is `-errno`.
    ///
    /// # Safety
    /// The arguments must be what system call `n` expects (valid pointers and lengths).
    #[cfg(target_arch = "x86_64")]
    unsafe fn syscall(n: usize, a: [usize; 5]) -> isize {
        let ret: isize;
        // SAFETY: the caller passes what the call expects; the kernel clobbers rcx and r11.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a[0],
                in("rsi") a[1],
                in("rdx") a[2],
                in("r10") a[3],
                in("r8") a[4],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// One system call; a result in -4095..=-1 is `-errno`.
    ///
    /// # Safety
    /// The arguments must be what system call `n` expects (valid pointers and lengths).
    #[cfg(target_arch = "aarch64")]
    unsafe fn syscall(n: usize, a: [usize; 5]) -> isize {
        let ret: isize;
        // SAFETY: the caller passes what the call expects.
        unsafe {
            core::arch::asm!(
                "svc 0",
                in("x8") n,
                inlateout("x0") a[0] as isize => ret,
                in("x1") a[1],
                in("x2") a[2],
                in("x3") a[3],
                in("x4") a[4],
                options(nostack),
            );
        }
        ret
    }

    /// The call's result, or its error.
    fn check(ret: isize) -> Result<usize, Os> {
        match usize::try_from(ret) {
            Ok(n) => Ok(n),
            Err(_) => Err(Os(i32::try_from(-ret).unwrap_or(i32::MAX))),
        }
    }

    const AF_INET: usize = 2;
    const AF_INET6: usize = 10;
    const SOCK_STREAM: usize = 1;
    const SOCK_NONBLOCK: usize = 0o4000;
    const SOCK_CLOEXEC: usize = 0o2_000_000;
    const SOL_SOCKET: usize = 1;
    const SO_ERROR: usize = 4;
    const POLLIN: i16 = 0x1;
    const POLLOUT: i16 = 0x4;
    /// No SIGPIPE when the agent has closed the connection: an error to report instead.
    const MSG_NOSIGNAL: usize = 0x4000;
    const CLOCK_MONOTONIC: usize = 1;

    #[repr(C)]
    struct PollFd {
        fd: i32,
        events: i16,
        revents: i16,
    }

    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }

    #[repr(C)]
    struct SockaddrIn {
        family: u16,
        port: [u8; 2],
        addr: [u8; 4],
        zero: [u8; 8],
    }

    #[repr(C)]
    struct SockaddrIn6 {
        family: u16,
        port: [u8; 2],
        flowinfo: u32,
        addr: [u8; 16],
        scope_id: u32,
    }

    /// A point on the monotonic clock, in milliseconds.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub(super) struct Instant(u64);

    impl Instant {
        pub(super) fn now() -> Self {
            let mut ts = Timespec { sec: 0, nsec: 0 };
            // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
            let _ = unsafe {
                syscall(
                    nr::CLOCK_GETTIME,
                    [CLOCK_MONOTONIC, (&raw mut ts) as usize, 0, 0, 0],
                )
            };
            let ms = u64::try_from(ts.sec).unwrap_or(0) * 1000
                + u64::try_from(ts.nsec).unwrap_or(0) / 1_000_000;
            Instant(ms)
        }

        pub(super) fn after_ms(self, ms: u64) -> Self {
            Instant(self.0.saturating_add(ms))
        }

        pub(super) fn ms_since(self, earlier: Instant) -> u64 {
            self.0.saturating_sub(earlier.0)
        }
    }

    /// A non-blocking TCP socket, closed when dropped.
    pub(super) struct Socket(usize);

    impl Drop for Socket {
        fn drop(&mut self) {
            // SAFETY: the descriptor is ours and closed once.
            let _ = unsafe { syscall(nr::CLOSE, [self.0, 0, 0, 0, 0]) };
        }
    }

    impl Socket {
        /// Connects to `addr`, giving up at `deadline`.
        pub(super) fn connect(addr: SocketAddr, deadline: Instant) -> Result<Self, Os> {
            let family = if addr.is_ipv4() { AF_INET } else { AF_INET6 };
            let ty = SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC;
            // SAFETY: plain call with constant arguments.
            let fd = check(unsafe { syscall(nr::SOCKET, [family, ty, 0, 0, 0]) })?;
            let socket = Socket(fd);
            let port = addr.port().to_be_bytes();
            let r = match addr {
                SocketAddr::V4(a) => {
                    let sa = SockaddrIn {
                        family: AF_INET as u16,
                        port,
                        addr: a.ip().octets(),
                        zero: [0; 8],
                    };
                    let (p, len) = ((&raw const sa) as usize, size_of_val(&sa));
                    // SAFETY: sa is a valid sockaddr_in of the size given.
                    check(unsafe { syscall(nr::CONNECT, [fd, p, len, 0, 0]) })
                }
                SocketAddr::V6(a) => {
                    let sa = SockaddrIn6 {
                        family: AF_INET6 as u16,
                        port,
                        flowinfo: a.flowinfo(),
                        addr: a.ip().octets(),
                        scope_id: a.scope_id(),
                    };
                    let (p, len) = ((&raw const sa) as usize, size_of_val(&sa));
                    // SAFETY: sa is a valid sockaddr_in6 of the size given.
                    check(unsafe { syscall(nr::CONNECT, [fd, p, len, 0, 0]) })
                }
            };
            match r {
                Ok(_) => return Ok(socket),
                // Interrupted or not, a non-blocking connect carries on in the background.
                Err(Os::IN_PROGRESS | Os::INTERRUPTED) => {}
                Err(e) => return Err(e),
            }
            socket.wait(POLLOUT, deadline)?;
            let mut err: i32 = 0;
            let mut len = size_of::<i32>() as u32;
            let args = [
                fd,
                SOL_SOCKET,
                SO_ERROR,
                (&raw mut err) as usize,
                (&raw mut len) as usize,
            ];
            // SAFETY: err and len are valid for the kernel to write an int and its length.
            check(unsafe { syscall(nr::GETSOCKOPT, args) })?;
            match err {
                0 => Ok(socket),
                e => Err(Os(e)),
            }
        }

        /// Waits until the socket is ready for `events` (or has an error to report), at most
        /// until `deadline`.
        fn wait(&self, events: i16, deadline: Instant) -> Result<(), Os> {
            loop {
                let left = deadline.ms_since(Instant::now());
                if left == 0 {
                    return Err(Os::TIMED_OUT);
                }
                let mut pfd = PollFd {
                    fd: i32::try_from(self.0).unwrap_or(-1),
                    events,
                    revents: 0,
                };
                let timeout = Timespec {
                    sec: i64::try_from(left / 1000).unwrap_or(i64::MAX),
                    nsec: i64::try_from(left % 1000).unwrap_or(0) * 1_000_000,
                };
                let args = [
                    (&raw mut pfd) as usize,
                    1,
                    (&raw const timeout) as usize,
                    0,
                    8,
                ];
                // SAFETY: one valid pollfd and a valid timeout; no signal mask.
                match check(unsafe { syscall(nr::PPOLL, args) }) {
                    Ok(0) | Err(Os::INTERRUPTED) => {}
                    Ok(_) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }

        /// Sends all of `buf`, giving up at `deadline`.
        pub(super) fn send_all(&self, mut buf: &[u8], deadline: Instant) -> Result<(), Os> {
            while !buf.is_empty() {
                let args = [self.0, buf.as_ptr() as usize, buf.len(), MSG_NOSIGNAL, 0];
                // SAFETY: buf is valid for reads of its length; no destination address.
                match check(unsafe { syscall(nr::SENDTO, args) }) {
                    Ok(n) => buf = &buf[n.min(buf.len())..],
                    Err(Os::INTERRUPTED) => {}
                    Err(Os::WOULD_BLOCK) => self.wait(POLLOUT, deadline)?,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }

        /// Reads what has arrived into `buf` (0: the peer closed), giving up at `deadline`.
        pub(super) fn recv(&self, buf: &mut [u8], deadline: Instant) -> Result<usize, Os> {
            loop {
                let args = [self.0, buf.as_mut_ptr() as usize, buf.len(), 0, 0];
                // SAFETY: buf is valid for writes of its length; no source address wanted.
                match check(unsafe { syscall(nr::RECVFROM, args) }) {
                    Ok(n) => return Ok(n),
                    Err(Os::INTERRUPTED) => {}
                    Err(Os::WOULD_BLOCK) => self.wait(POLLIN, deadline)?,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// The bytes of the NUL-terminated string at `p` (without the NUL).
    ///
    /// # Safety
    /// `p` points to a NUL-terminated string that outlives the program's use of it.
    #[cfg_attr(test, allow(dead_code))]
    pub(super) unsafe fn c_str(p: *const u8) -> &'static [u8] {
        let mut n = 0;
        // SAFETY: the string is NUL-terminated, so every byte up to the NUL is readable.
        while unsafe { *p.add(n) } != 0 {
            n += 1;
        }
        // SAFETY: the n bytes before the NUL are the string's.
        unsafe { core::slice::from_raw_parts(p, n) }
    }

    /// The value of the environment variable `name` in `envp`, as bytes.
    ///
    /// # Safety
    /// `envp` is a NULL-terminated array of NUL-terminated `NAME=value` strings.
    #[cfg_attr(test, allow(dead_code))]
    pub(super) unsafe fn getenv(envp: *const *const u8, name: &[u8]) -> Option<&'static [u8]> {
        let mut i = 0;
        loop {
            // SAFETY: the array is NULL-terminated and i has not passed the NULL.
            let entry = unsafe { *envp.add(i) };
            if entry.is_null() {
                return None;
            }
            // SAFETY: each entry is a NUL-terminated string.
            let entry = unsafe { c_str(entry) };
            if let Some(value) = entry
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(b"="))
            {
                return Some(value);
            }
            i += 1;
        }
    }

    /// Writes `text` to stdout; a closed stdout loses it, never the exit code.
    #[cfg_attr(test, allow(dead_code))]
    pub(super) fn print(mut text: &[u8]) {
        while !text.is_empty() {
            // SAFETY: text is valid for reads of its length.
            match check(unsafe {
                syscall(nr::WRITE, [1, text.as_ptr() as usize, text.len(), 0, 0])
            }) {
                Ok(0) => return,
                Ok(n) => text = &text[n.min(text.len())..],
                Err(Os::INTERRUPTED) => {}
                Err(_) => return,
            }
        }
    }

    /// Ends the process with `code`.
    #[cfg_attr(test, allow(dead_code))]
    pub(super) fn exit(code: i32) -> ! {
        loop {
            // SAFETY: exit_group takes the code and does not return.
            let _ = unsafe { syscall(nr::EXIT_GROUP, [code as usize, 0, 0, 0, 0]) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<'a>(a: &[&'a str]) -> Vec<Arg<'a>> {
        a.iter().map(|s| Arg::from_bytes(s.as_bytes())).collect()
    }

    fn url(t: &Target<'_>) -> String {
        Url(t).to_string()
    }

    #[test]
    fn default_and_env_port() {
        let t = Target::from_args(&[], None).expect("defaults are valid");
        assert_eq!(url(&t), "http://127.0.0.1:12398/health");
        let t = Target::from_args(&[], Some(Arg::Text("12399"))).expect("valid port");
        assert_eq!(url(&t), "http://127.0.0.1:12399/health");
        let t = Target::from_args(&[], Some(Arg::Text(" "))).expect("blank means unset");
        assert_eq!(t.port, DEFAULT_PORT);
        let e = Target::from_args(&[], Some(Arg::Text("70000"))).expect_err("out of range");
        assert!(e.to_string().contains("BUTLER_HEALTH_PORT"), "{e}");
        let e = Target::from_args(&[], Some(Arg::NotUtf8)).expect_err("not text");
        assert!(
            e.to_string().starts_with("BUTLER_HEALTH_PORT is not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn port_argument_wins() {
        let t = Target::from_args(&text(&["8080"]), Some(Arg::Text("1"))).expect("valid port");
        assert_eq!(url(&t), "http://127.0.0.1:8080/health");
        assert!(Target::from_args(&text(&["0"]), None).is_err());
        assert!(Target::from_args(&text(&["x"]), None).is_err());
        assert!(Target::from_args(&text(&["1", "2"]), None).is_err());
        assert_eq!(
            Target::from_args(&[Arg::NotUtf8], None),
            Err(Error::ArgNotUtf8)
        );
    }

    #[test]
    fn urls() {
        let t = Target::from_args(&text(&["http://sink:8080/health"]), None).expect("valid");
        assert_eq!((t.host, t.port), ("sink", 8080));
        assert_eq!(t.path.to_string(), "/health");
        let t = parse_url("http://[::1]:9/readyz?verbose").expect("valid IPv6 URL");
        assert_eq!((t.host, t.port), ("::1", 9));
        assert_eq!(url(&t), "http://[::1]:9/readyz?verbose");
        assert_eq!(HostHeader(&t).to_string(), "[::1]:9");
        let t = parse_url("http://localhost").expect("no port, no path");
        assert_eq!((t.port, t.path.to_string().as_str()), (80, "/"));
        let t = parse_url("http://h?x").expect("query without path");
        assert_eq!(t.path.to_string(), "/?x");
        assert!(parse_url("https://h/").is_err());
        assert!(Target::from_args(&text(&["https://h/"]), None).is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://[::1/").is_err());
        assert!(parse_url("http://h:99999/").is_err());
        assert!(parse_url("http://user@h/").is_err());
        let e = parse_url("http://[::1]x/").expect_err("junk after the host");
        assert_eq!(
            e.to_string(),
            r#""http://[::1]x/": unexpected "x" after the host"#
        );
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
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 \xff\xff\xff OK"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn messages_quote_and_cut() {
        assert_eq!(
            Quoted(b"a\"b\xffc\n", 80).to_string(),
            "\"a\\\"b\u{fffd}c\\n\""
        );
        assert_eq!(
            Quoted("é".repeat(100).as_bytes(), 80)
                .to_string()
                .chars()
                .count(),
            82
        );
        assert_eq!(Os(111).to_string().split(' ').next(), Some("connection"));
        assert_eq!(Os(110).to_string(), "no answer within 2 s");
        assert_eq!(Os(9999).to_string(), "os error 9999");
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_LINE);
        let out = line(format_args!("unhealthy: {long}"));
        let s = std::str::from_utf8(out.as_bytes()).expect("still UTF-8");
        assert!(s.ends_with("…\n"), "{}", &s[s.len() - 10..]);
        assert!(out.as_bytes().len() <= MAX_LINE + 1);
        assert_eq!(line(format_args!("short")).as_bytes(), b"short\n");
    }

    #[test]
    fn help_and_usage_errors_need_no_network() {
        let now = sys::Instant::now();
        let (code, out) = run(&text(&["--help"]), None, now);
        assert_eq!((code, out.as_bytes()), (0, format!("{USAGE}\n").as_bytes()));
        let (code, out) = run(&[Arg::from_bytes(b"\xff")], None, now);
        assert_eq!(code, 1);
        assert!(
            out.as_bytes()
                .starts_with(b"unhealthy: the argument is not UTF-8")
        );
    }

    #[test]
    fn a_path_too_long_for_the_request_is_refused_before_connecting() {
        let path = format!("/{}", "a".repeat(MAX_REQUEST));
        let t = Target {
            host: "127.0.0.1",
            port: 9,
            path: Path {
                slash: false,
                rest: &path,
            },
        };
        let e = probe(&t, sys::Instant::now().after_ms(TIMEOUT_MS)).expect_err("too long");
        assert_eq!(e, Error::RequestTooLong);
    }
}
