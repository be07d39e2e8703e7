//! Connection limits shared by the agent's HTTP servers: the health server and the sink.
//!
//! [`serve`] accepts connections, runs each in its own task with hyper's HTTP/1 server, and
//! holds every hostile client to a budget:
//! - at most [`Limits::max_connections`] are open at once, so memory and descriptors are
//!   bounded (about `max_connections × 16 KiB` of buffers);
//! - a request head must be complete within [`Limits::header_read_timeout`] of the connection
//!   becoming ready for it (accepted, or its previous answer sent), and fit in
//!   [`Limits::max_header_bytes`] (larger heads get 431);
//! - keep-alive is on: a connection serves up to [`Limits::max_requests`] requests (the last
//!   answer says `Connection: close`), and is closed once it has been waiting for its next
//!   request for [`Limits::idle_timeout`];
//! - no connection is kept alive past [`Limits::connection_deadline`]: every answer in its last
//!   [`Limits::idle_timeout`] says `Connection: close`, so a client reusing it is told before
//!   the close and never finds it closed under a request it has just sent; a request being
//!   answered at the deadline is answered (its own limits apply), and none lives past twice
//!   the deadline, whatever the client does.
//!
//! # Fair eviction
//! When every slot is taken, a new connection makes room by closing one that is not being
//! answered (waiting for its first request, dribbling its head, or idle between kept-alive
//! requests), or whose request body has stopped arriving ([`STALLED`], reported through
//! [`Progress`]), or whose answer has stopped going out for as long (a client that sends
//! requests and reads no answer: noted by its [`Stream`]): one of the source holding the most
//! connections, the one idle the longest.
//! Sources are grouped as an attacker holds them: an IPv4 address, an IPv6 /64 ([`group`]). A
//! source is only made to give up a connection for a source holding fewer, so a flood from one
//! address evicts its own connections and never another address's probe; and a connection in
//! use is protected from other sources — one idle between kept-alive requests (closed anyway
//! after [`Limits::idle_timeout`]), or one accepted less than [`NEW_GRACE`] ago that has not
//! sent its head yet — so rotating addresses (each new one holding nothing) cannot take a
//! monitor's kept-alive connection or a probe that has just connected (a source holding more
//! than a quarter of the slots, a flood, loses that protection: its connections are all young,
//! and shielding them would lock every other source out). A request being
//! answered is never cut; only when no open connection can be evicted is the new one closed at
//! accept.
//!
//! # Two threads
//! With [`Limits::second_thread`] (the health server), a connection that has answered two
//! requests and waits for its next is kept alive, and moves to a second serving thread when
//! that one holds fewer kept-alive connections ([`spare`]): busy kept-alive clients are served
//! by two threads, while a probe with a new connection per request is served where it was
//! accepted, with no hand-over (the second thread starts only when a connection first moves).
//! A moved connection keeps its slot, limits and place in the eviction list.
//!
//! # Sockets
//! Accepted sockets are read and written directly and registered with the runtime only when
//! a read or a write would block ([`stream`]): a probe whose request is there when it is
//! accepted is answered and closed without ever being registered.
//!
//! # Stop
//! When `shutdown` completes the listener closes at once. Connections waiting between
//! requests close at once; one whose request head is still arriving gets [`STOP_HEAD_GRACE`]
//! to finish it; answers in progress are finished (bounded by the deadline) and their
//! connections then close. So a stop takes well under a second whatever idle or dribbling
//! clients hold.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod quick;
mod spare;
mod stream;
#[cfg(test)]
mod test_server;

pub(crate) use quick::Quick;
use spare::{KEPT_AFTER, Kept, Side, Spare};
use stream::{Listener, Stream, Writes};

/// Kubelet, Docker and a few humans probe at once; 64 leaves ample room and bounds memory.
pub const MAX_CONNECTIONS: usize = 64;
/// Kubelet's default probe timeout is 1 s and Butler's probe allows 2 s; a client that has not
/// sent its headers in 5 s is not a probe and loses its slot.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on one connection's life, whatever the client does.
pub(crate) const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Probes send a few hundred bytes of headers; more than 8 KiB is refused with 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// A kept-alive connection with no new request for this long is closed (Node's default).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests per connection before the server closes it (nginx's `keepalive_requests`).
pub(crate) const MAX_REQUESTS: u32 = 1000;
/// On stop, how long a connection whose request head is still arriving may finish it.
pub(crate) const STOP_HEAD_GRACE: Duration = Duration::from_millis(250);
/// hyper's read buffer per connection (its minimum is 8 KiB; headers must fit with room).
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// How long the accept loop waits for an evicted connection to give its slot back.
const EVICTION_WAIT: Duration = Duration::from_millis(100);
/// When every slot is taken, how long after a connection has handed over its last answer (one
/// that closes it) the accept loop waits for that slot rather than evicting another connection.
/// A client that reconnects as soon as it reads `Connection: close` races the old connection's
/// end by microseconds; without this wait it could win and cost a third connection its slot
/// (and that client a failed request). Counted from the answer, not per accept, so a
/// connection that never ends after its last answer stalls the accept loop this long once.
const CLOSING_WAIT: Duration = Duration::from_millis(50);
/// A request body with no new bytes for this long, or an answer of which nothing has gone out
/// for this long, makes its connection evictable.
pub(crate) const STALLED: Duration = Duration::from_secs(1);
/// A source holding more than 1/`FLOOD_SHARE` of the slots is flooding: its connections lose
/// the protection of [`NEW_GRACE`] and of kept-alive use.
const FLOOD_SHARE: usize = 4;
/// A new connection is protected from other sources' eviction this long, time to send its head.
pub(crate) const NEW_GRACE: Duration = Duration::from_secs(1);
/// A server left with no connection open after at least this many since it last gave memory
/// back has seen a burst: see [`Bursts`].
const BURST_CONNECTIONS: u64 = 64;
/// At most one release of free memory per this long.
const RELEASE_INTERVAL: Duration = Duration::from_secs(5);

/// A server's limits; [`Limits::default`] holds the health server's values, tests shrink them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub connection_deadline: Duration,
    pub max_header_bytes: usize,
    pub idle_timeout: Duration,
    pub max_requests: u32,
    /// See [`CLOSING_WAIT`].
    pub closing_wait: Duration,
    /// Kept-alive connections may move to a second serving thread ([`spare`]).
    pub second_thread: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            connection_deadline: CONNECTION_DEADLINE,
            max_header_bytes: MAX_HEADER_BYTES,
            idle_timeout: IDLE_TIMEOUT,
            max_requests: MAX_REQUESTS,
            closing_wait: CLOSING_WAIT,
            second_thread: true,
        }
    }
}

/// Serves HTTP/1 on `listener` with `handler` under `limits` until `shutdown` completes, then
/// stops as the module documentation describes and returns once every connection has ended.
/// `name` prefixes log lines; with `quick`, kept-alive connections give that answer without
/// hyper ([`quick`]; kept-alive connections are those [`Limits::second_thread`] places, so it
/// takes both). Fails only at the start, if the listener cannot be taken over.
pub(crate) async fn serve<H, Fut>(
    listener: TcpListener,
    limits: Limits,
    name: &'static str,
    quick: Option<Quick>,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr, Progress) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + Unpin + 'static,
{
    let max = limits.max_connections.max(1);
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(max));
    let epoch = Instant::now();
    let bursts = Arc::new(Bursts::new(epoch));
    let mut open: Vec<Arc<Conn>> = Vec::with_capacity(max);
    // Dropped when the server has stopped (every connection has ended): its thread then ends.
    let spare = limits.second_thread.then(|| Arc::new(Spare::default()));
    // Linux gives accepted sockets the listener's TCP_NODELAY: set once here, not per
    // connection.
    let nodelay_inherited =
        nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::TcpNoDelay, &true)
            .is_ok();
    let listener = Listener::new(listener)?;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on a failing accept.
                    tracing::warn!("{name}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                open.retain(|c| Arc::strong_count(c) > 1);
                // A connection gone from `open` has given its slot back (see the task below):
                // one may have ended since the first try. Else a closing one is about to.
                let freed = match slots.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) => match closing_wait(&open, limits.closing_wait) {
                        Some(wait) => slot_within(&slots, wait).await,
                        None => None,
                    },
                };
                if freed.is_some() {
                    freed
                } else {
                    match evict(&open, peer.ip(), &limits) {
                        Some(_) => {
                            // Neither address is logged: they are the clients' IPs.
                            tracing::debug!(
                                "{name}: {max} connections open, closing an idle one to make room"
                            );
                            // The evicted task frees its slot as soon as it runs; a slot still
                            // taken after this wait belongs to a task that has just started
                            // answering.
                            slot_within(&slots, EVICTION_WAIT).await
                        }
                        None => None,
                    }
                }
            }
        };
        let Some(slot) = slot else {
            tracing::debug!(
                "{name}: {max} connections open and none can make room: closing the new one"
            );
            drop(stream);
            continue;
        };
        if open.len() >= 2 * max {
            open.retain(|c| Arc::strong_count(c) > 1);
        }
        let state = Arc::new(Conn::new(peer.ip(), epoch));
        open.push(Arc::clone(&state));
        bursts.accepted();
        let ticket = Ticket {
            slot: Some(slot),
            // Held until the slot is given back, so that a connection the accept loop no
            // longer sees (it counts `state`'s owners) has always freed its slot.
            _held: Arc::clone(&state),
            bursts: Arc::clone(&bursts),
            all_free: Arc::clone(&slots),
            max,
            kept: None,
        };
        let stream = Stream::new(stream, Arc::clone(&state.writes));
        let served = Served {
            peer,
            state,
            handler: Arc::clone(&handler),
            limits,
            name,
            quick,
            ticket,
        };
        // Boxed: the connection's future (hyper's state inline) is a few KiB, and spawning
        // moves a future by value through several calls; a box moves as one pointer.
        let serving = Box::pin(connection(stream, served, nodelay_inherited, spare.clone()));
        // Outside tokio's cooperative budget: hyper yields on its own after 16 requests in a
        // row, and the budget's bookkeeping on every read and write costs each request.
        tokio::spawn(tokio::task::unconstrained(async move {
            if let Some(moving) = serving.await {
                moving.go();
            }
        }));
    }
    drop(listener);
    // Every connection still open is in `open` (only ended ones are dropped from it).
    for c in &open {
        c.stopping.store(true, Ordering::Release);
        c.waker.wake();
    }
    // Every connection holds a slot until it ends, so holding all slots means all have ended.
    // Each connection is bounded by its deadline, so this wait is too.
    let _all = slots
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// One connection's share of the server: what serving it needs, on whichever thread serves it.
struct Served<H> {
    peer: SocketAddr,
    state: Arc<Conn>,
    handler: Arc<H>,
    limits: Limits,
    name: &'static str,
    quick: Option<Quick>,
    ticket: Ticket,
}

/// A connection's slot and bookkeeping, given back when it ends (on either thread).
struct Ticket {
    slot: Option<OwnedSemaphorePermit>,
    _held: Arc<Conn>,
    bursts: Arc<Bursts>,
    all_free: Arc<Semaphore>,
    max: usize,
    /// Counted as a kept-alive connection on its thread.
    kept: Option<Kept>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        drop(self.slot.take());
        if self.all_free.available_permits() == self.max {
            self.bursts.idle();
        }
    }
}

/// A kept-alive connection on its way to the second thread ([`spare`]), between two requests.
struct Moving<H> {
    tcp: std::net::TcpStream,
    unread: Bytes,
    served: Served<H>,
}

impl<H, Fut> Moving<H>
where
    H: Fn(Request<Incoming>, SocketAddr, Progress) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + Unpin + 'static,
{
    /// Serves the rest of the connection on the second thread.
    fn go(self) {
        let Some(runtime) = self.served.ticket.kept.as_ref().and_then(Kept::runtime) else {
            return;
        };
        let runtime = runtime.clone();
        let Moving {
            tcp,
            unread,
            served,
        } = self;
        runtime.spawn(tokio::task::unconstrained(async move {
            let stream = Stream::from_parts(tcp, unread, Arc::clone(&served.state.writes));
            // Its socket already has TCP_NODELAY; it moves no further.
            let _ = Box::pin(connection(stream, served, true, None)).await;
        }));
    }
}

/// Serves one connection to its end: the client closes, a limit is reached, it is evicted, or
/// the server stops; or until it moves to the second thread ([`spare`]), which it returns.
/// A kept-alive connection of a server with a [`Quick`] answer is served by [`quick`] until a
/// request needs hyper.
async fn connection<H, Fut>(
    mut stream: Stream,
    mut served: Served<H>,
    nodelay_inherited: bool,
    spare: Option<Arc<Spare>>,
) -> Option<Moving<H>>
where
    H: Fn(Request<Incoming>, SocketAddr, Progress) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + Unpin + 'static,
{
    if !nodelay_inherited {
        // Nagle would hold a kept-alive answer back until the client's delayed ACK.
        let _ = stream.set_nodelay();
    }
    // One that has moved here was kept alive on the first thread.
    let mut quick_next = served.ticket.kept.is_some();
    loop {
        if let Some(quick) = served.quick.filter(|_| quick_next) {
            let state = &served.state;
            match quick::serve(stream, &quick, state, &served.limits, served.name).await {
                quick::Outcome::Ended => return None,
                quick::Outcome::Hyper(rest) => stream = rest,
            }
        }
        match with_hyper(stream, served, spare.as_ref()).await {
            Phase::Ended => return None,
            Phase::Moves(moving) => return Some(moving),
            Phase::Quick(rest, back) => {
                (stream, served, quick_next) = (rest, back, true);
            }
        }
    }
}

/// How a connection left hyper.
enum Phase<H> {
    Ended,
    /// Kept alive, to the second thread.
    Moves(Moving<H>),
    /// Kept alive, to quick answers on this thread.
    Quick(Stream, Served<H>),
}

/// Serves a connection with hyper, as [`connection`] says.
///
/// Besides hyper's work the task reacts to three things, checked on every wake-up without a
/// lock: the accept loop's flags ([`Conn::evicting`], [`Conn::stopping`], which wake it through
/// [`Conn::waker`]) and one timer, set to the earliest of the connection's deadline, the end of
/// its idle time (which also bounds the time to send a request head) and the stop grace.
async fn with_hyper<H, Fut>(
    stream: Stream,
    mut served: Served<H>,
    spare: Option<&Arc<Spare>>,
) -> Phase<H>
where
    H: Fn(Request<Incoming>, SocketAddr, Progress) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + Unpin + 'static,
{
    let state = Arc::clone(&served.state);
    let limits = served.limits;
    let name = served.name;
    let peer = served.peer;
    let handler = Arc::clone(&served.handler);
    let answering = Arc::clone(&state);
    let max_requests = limits.max_requests.max(1);
    // Answers from here on say `Connection: close`: a client is told before the deadline
    // closes the connection (see the module documentation).
    let announce_from = limits
        .connection_deadline
        .saturating_sub(limits.idle_timeout);
    let service = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&answering);
        state.busy.store(true, Ordering::Release);
        let served = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let client_closes = asks_close(&req);
        let answer = handler(req, peer, Progress(Arc::clone(&state)));
        Answering {
            answer,
            state,
            closes: if served >= max_requests {
                Closes::Now
            } else {
                Closes::From(announce_from)
            },
            client_closes,
        }
    });
    // No header-read timer in hyper (it would arm and drop a timer for every request): the
    // idle timer below closes a connection that has not completed a request head within
    // `min(idle_timeout, header_read_timeout)` of becoming idle, which bounds a head's time.
    let mut builder = http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(READ_BUFFER_BYTES.max(limits.max_header_bytes + 1024))
        .max_header_size(limits.max_header_bytes)
        // A client may shut its sending side once the request is out (HTTP/1.0 clients and
        // `nc -N` do); without this hyper can see the EOF first and close without answering.
        .half_close(true)
        // One buffer and one `write` per answer: the answers are small, and gathering head
        // and body with `writev` costs more than copying the body.
        .writev(false)
        .keep_alive(true);
    // Polled as hyper's future (which flushes what it holds, then `shutdown(2)`s the socket),
    // except to let it go when it moves: then without that shutdown, so the socket stays open.
    let mut conn = builder.serve_connection(TokioIo::new(stream), service);
    let idle_limit = limits.idle_timeout.min(limits.header_read_timeout);
    let mut deadline = later(state.accepted, limits.connection_deadline);
    let mut past_deadline = false;
    let mut evict_seen = false;
    let mut stop_at: Option<Instant> = None;
    let mut due = deadline.min(later(state.accepted, idle_limit));
    let timer = tokio::time::sleep_until(due);
    tokio::pin!(timer);
    loop {
        let event = std::future::poll_fn(|cx| {
            state.waker.register(cx.waker());
            if let Poll::Ready(r) = Pin::new(&mut conn).poll(cx) {
                return Poll::Ready(Event::Ended(r));
            }
            if !evict_seen && state.evicting.load(Ordering::Acquire) {
                return Poll::Ready(Event::Evict);
            }
            if stop_at.is_none() && state.stopping.load(Ordering::Acquire) {
                return Poll::Ready(Event::Stop);
            }
            // Placed once (a connection on the second thread has no `spare`: it stays), when
            // it has become kept-alive and its last answer has gone out (hyper gives back its
            // socket, not what it still holds to send).
            if let Some(spare) = spare
                && served.ticket.kept.is_none()
                && state.kept_alive()
                && !state.writes.blocked()
                && !past_deadline
            {
                let kept = spare.place();
                let moves = kept.side() == Side::There;
                served.ticket.kept = Some(kept);
                if moves || served.quick.is_some() {
                    // Idle between requests: hyper lets go at once, writing nothing. (Pending:
                    // not idle after all; the request it is on is answered, and the connection
                    // closed, here.)
                    Pin::new(&mut conn).graceful_shutdown();
                    if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
                        return Poll::Ready(Event::LetGo(r));
                    }
                }
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
            Poll::Pending
        })
        .await;
        let now = Instant::now();
        match event {
            Event::Ended(Ok(())) => {
                // hyper has sent what it held and shut the sending side down.
                return Phase::Ended;
            }
            Event::Ended(Err(e)) => {
                tracing::debug!("{name}: a connection ended: {e}");
                shut_down(conn.into_parts().io.into_inner(), name).await;
                return Phase::Ended;
            }
            Event::LetGo(r) => {
                let parts = conn.into_parts();
                let stream = parts.io.into_inner();
                if let Err(e) = r {
                    tracing::debug!("{name}: a connection ended: {e}");
                    shut_down(stream, name).await;
                    return Phase::Ended;
                }
                if state.stopping.load(Ordering::Acquire)
                    || state.evicting.load(Ordering::Acquire)
                    || state.closing_for().is_some()
                {
                    shut_down(stream, name).await;
                    return Phase::Ended;
                }
                if served.ticket.kept.as_ref().map(Kept::side) != Some(Side::There) {
                    return Phase::Quick(stream.unread_first(parts.read_buf), served);
                }
                return match stream.into_parts(parts.read_buf) {
                    Ok((tcp, unread)) => Phase::Moves(Moving {
                        tcp,
                        unread,
                        served,
                    }),
                    Err(e) => {
                        tracing::debug!("{name}: a connection could not move: {e}");
                        Phase::Ended
                    }
                };
            }
            Event::Evict => {
                evict_seen = true;
                if state.evictable() {
                    return Phase::Ended;
                }
                // Chosen while idle, but a request started since: answer it, then close.
                Pin::new(&mut conn).graceful_shutdown();
                continue;
            }
            Event::Stop => {
                // Closes a connection idle between requests at once; one being answered
                // closes after its answer; one whose head is arriving gets the grace.
                Pin::new(&mut conn).graceful_shutdown();
                stop_at = Some(now);
            }
            Event::Timer => {
                if tokio::time::Instant::from_std(now) >= deadline {
                    if past_deadline || !state.busy() {
                        // Idle at the deadline means idle since before its last idle timeout
                        // (every later answer said close): closing races no request.
                        tracing::debug!("{name}: a connection reached its deadline");
                        return Phase::Ended;
                    }
                    // Answer the request in progress (its answer says close), then close;
                    // none lives past twice the deadline.
                    past_deadline = true;
                    Pin::new(&mut conn).graceful_shutdown();
                    deadline = later(now, limits.connection_deadline);
                }
            }
        }
        // The next time to look: the deadline, and the end of the idle time or of the stop
        // grace.
        let quiet_until = state.quiet_until(state.busy(), now, idle_limit, stop_at);
        if !state.busy() && quiet_until <= tokio::time::Instant::from_std(now) {
            tracing::debug!("{name}: a connection closed while idle");
            return Phase::Ended;
        }
        let next = deadline.min(quiet_until);
        if next != due {
            due = next;
            timer.as_mut().reset(due);
        }
    }
}

/// When an answer says `Connection: close`.
#[derive(Clone, Copy)]
enum Closes {
    /// This one: the connection has answered its last request.
    Now,
    /// Every answer once the connection is this old.
    From(Duration),
}

/// An answer on its way to hyper: the handler's, marked `Connection: close` when the server
/// closes after it, and tracked so its connection becomes idle once it has been written.
struct Answering<Fut> {
    answer: Fut,
    state: Arc<Conn>,
    closes: Closes,
    client_closes: bool,
}

impl<Fut> Future for Answering<Fut>
where
    Fut: Future<Output = Response<Full<Bytes>>> + Unpin,
{
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Poll::Ready(mut answer) = Pin::new(&mut this.answer).poll(cx) else {
            return Poll::Pending;
        };
        let state = &this.state;
        state.reading.store(false, Ordering::Release);
        let server_closes = match this.closes {
            Closes::Now => true,
            Closes::From(age) => state.accepted.elapsed() >= age,
        };
        if server_closes {
            answer
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if server_closes || this.client_closes {
            state.mark_closing();
        }
        Poll::Ready(Ok(answer.map(|body| Tracked {
            body,
            _done: Answered(Arc::clone(state)),
        })))
    }
}

/// Gives memory back after a burst of connections. Each connection's buffers (about 16 KiB)
/// come from the C library's allocator, which keeps freed memory in its pools: after a burst
/// of a few hundred connections the process would stay a megabyte or more larger until it
/// ends, paid for on every node. When the last connection of a burst (at least
/// [`BURST_CONNECTIONS`] since the last release) has closed, the free memory is returned to
/// the system, at most once per [`RELEASE_INTERVAL`]: never during a load (some connection is
/// open), and not for the occasional probe.
#[derive(Debug)]
struct Bursts {
    epoch: Instant,
    /// Connections accepted since the last release.
    accepted: AtomicU64,
    /// When memory was last given back, in milliseconds since `epoch` (0: never).
    released_ms: AtomicU64,
}

impl Bursts {
    fn new(epoch: Instant) -> Self {
        Bursts {
            epoch,
            accepted: AtomicU64::new(0),
            released_ms: AtomicU64::new(0),
        }
    }

    fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// No connection is open: gives memory back if a burst has just ended.
    fn idle(&self) {
        let now = millis_since(self.epoch);
        let last = self.released_ms.load(Ordering::Relaxed);
        if !burst_over(self.accepted.load(Ordering::Relaxed), last, now) {
            return;
        }
        // One task releases; another finding the burst over at the same moment does not.
        if self
            .released_ms
            .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.accepted.store(0, Ordering::Relaxed);
            release_free_memory();
        }
    }
}

/// Whether a server that has just become idle, after `accepted` connections since its last
/// release at `last_ms` (0: never), should give memory back at `now_ms`.
fn burst_over(accepted: u64, last_ms: u64, now_ms: u64) -> bool {
    accepted >= BURST_CONNECTIONS
        && (last_ms == 0 || now_ms.saturating_sub(last_ms) >= RELEASE_INTERVAL.as_millis() as u64)
}

/// Returns the allocator's free memory to the system (glibc's `malloc_trim`, which also
/// releases free pages inside its pools). A few hundred microseconds for a few megabytes.
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers; it walks the allocator's own free lists under
    // the allocator's locks, so it is safe to call from any thread at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Sends the FIN of a connection hyper has given back, as hyper would before the close, so a
/// client whose request was not read to its end (431 for a huge head) reads the answer before
/// the reset that closing with unread bytes sends.
async fn shut_down(mut stream: Stream, name: &str) {
    let shut = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx));
    if let Err(e) = shut.await {
        tracing::debug!("{name}: a connection ended: {e}");
    }
}

/// What woke a connection's task, besides hyper's own progress.
enum Event {
    /// hyper finished the connection (the client closed, an error, or a graceful shutdown); when
    /// it finished well, it has sent what it held and shut the socket's sending side down.
    Ended(Result<(), hyper::Error>),
    /// hyper let an idle connection go, without that shutdown, so that it moves to the second
    /// thread.
    LetGo(Result<(), hyper::Error>),
    /// The accept loop chose it to make room.
    Evict,
    /// The server is stopping.
    Stop,
    /// Its timer fired: the deadline, idle time or stop grace may have passed.
    Timer,
}

/// A slot, if one comes back within `wait`.
async fn slot_within(slots: &Arc<Semaphore>, wait: Duration) -> Option<OwnedSemaphorePermit> {
    tokio::time::timeout(wait, Arc::clone(slots).acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
}

/// Milliseconds since `epoch`: the clock of the connection and burst records, kept in atomics.
fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `base + d` as a timer deadline ([`crate::runtime::later`]).
fn later(base: Instant, d: Duration) -> tokio::time::Instant {
    crate::runtime::later(base.into(), d)
}

/// One open connection as the accept loop and its own task see it.
#[derive(Debug)]
struct Conn {
    source: IpAddr,
    epoch: Instant,
    accepted: Instant,
    /// A request body is being read ([`Progress::reading`]).
    reading: AtomicBool,
    /// When the body last brought bytes, in milliseconds since `epoch`.
    progress_ms: AtomicU64,
    /// From the moment a request head is complete until its answer has been handed over.
    busy: AtomicBool,
    /// Whether its answers go out, noted by its [`Stream`].
    writes: Arc<Writes>,
    /// When the connection last became idle (accepted, or an answer handed over), in
    /// milliseconds since `epoch`.
    idle_since_ms: AtomicU64,
    requests: AtomicU32,
    /// When its last answer (one that closes it) was handed over, in milliseconds since `epoch`
    /// plus one; 0 while it stays open.
    closing_at_ms: AtomicU64,
    /// Set by the accept loop when it has chosen this connection to make room.
    evicting: AtomicBool,
    /// Set by the accept loop when the server stops.
    stopping: AtomicBool,
    /// The connection's task, woken when the accept loop sets a flag.
    waker: AtomicWaker,
}

impl Conn {
    fn new(source: IpAddr, epoch: Instant) -> Self {
        let c = Conn {
            source,
            epoch,
            accepted: Instant::now(),
            reading: AtomicBool::new(false),
            progress_ms: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            writes: Arc::new(Writes::new(epoch)),
            idle_since_ms: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            closing_at_ms: AtomicU64::new(0),
            evicting: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        };
        c.mark_idle();
        c
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Idle after answering [`KEPT_AFTER`] requests, none of them its last.
    fn kept_alive(&self) -> bool {
        self.requests.load(Ordering::Relaxed) >= KEPT_AFTER
            && !self.busy()
            && self.closing_at_ms.load(Ordering::Acquire) == 0
    }

    fn mark_idle(&self) {
        self.idle_since_ms
            .store(millis_since(self.epoch), Ordering::Relaxed);
        self.busy.store(false, Ordering::Release);
    }

    /// Its answer in hand closes it: the slot is about to come back.
    fn mark_closing(&self) {
        self.closing_at_ms
            .store(self.now_ms().saturating_add(1), Ordering::Release);
    }

    /// How long ago it handed over an answer that closes it, if it did.
    fn closing_for(&self) -> Option<Duration> {
        match self.closing_at_ms.load(Ordering::Acquire) {
            0 => None,
            at => Some(Duration::from_millis(
                self.now_ms().saturating_sub(at.saturating_sub(1)),
            )),
        }
    }

    fn now_ms(&self) -> u64 {
        millis_since(self.epoch)
    }

    /// Reading a request body that has brought nothing for [`STALLED`], or sending an answer
    /// of which nothing has gone out for as long (a client that sends requests and does not
    /// read the answers: hyper goes on reading while an answer waits, so the connection stays
    /// busy).
    fn stalled(&self) -> bool {
        let body_stalled = self.reading.load(Ordering::Acquire)
            && self
                .now_ms()
                .saturating_sub(self.progress_ms.load(Ordering::Relaxed))
                >= STALLED.as_millis() as u64;
        body_stalled || self.writes.blocked_for().is_some_and(|w| w >= STALLED)
    }

    /// Can be closed to make room: idle with nothing left to send, or stalled. The accept loop
    /// chooses by this and the connection's task closes by it, so a connection chosen is one
    /// that closes (an idle connection whose last answer is still going out is neither).
    fn evictable(&self) -> bool {
        (!self.busy() && !self.writes.blocked()) || self.stalled()
    }

    /// When a connection that stays quiet is closed: the end of its idle time, or of the
    /// stop grace once the stop has come (`stop_at`); while `busy` with an answer, look again
    /// an idle time from `now`.
    fn quiet_until(
        &self,
        busy: bool,
        now: Instant,
        idle_limit: Duration,
        stop_at: Option<Instant>,
    ) -> tokio::time::Instant {
        if busy {
            return later(now, idle_limit);
        }
        let idle_due = later(self.idle_since(), idle_limit);
        match stop_at {
            Some(at) => idle_due.min(later(at, STOP_HEAD_GRACE)),
            None => idle_due,
        }
    }

    fn idle_since(&self) -> Instant {
        let ms = self.idle_since_ms.load(Ordering::Relaxed);
        self.epoch
            .checked_add(Duration::from_millis(ms))
            .unwrap_or(self.epoch)
    }
}

/// A handler's view of its connection, in each request's extensions: it says when the request
/// body is being read and when bytes arrive, so a body that stops arriving makes its
/// connection evictable ([`STALLED`]).
#[derive(Debug, Clone)]
pub(crate) struct Progress(Arc<Conn>);

impl Progress {
    /// The body is being read (`true`) or no longer (`false`).
    pub(crate) fn reading(&self, reading: bool) {
        self.moved();
        self.0.reading.store(reading, Ordering::Release);
    }

    /// Body bytes arrived.
    pub(crate) fn moved(&self) {
        self.0.progress_ms.store(self.0.now_ms(), Ordering::Relaxed);
    }
}

/// Marks its connection idle when dropped: hyper drops an answer's body once it has written
/// it (or, for `HEAD`, at once).
struct Answered(Arc<Conn>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.mark_idle();
    }
}

/// An answer body that marks its connection idle when done.
struct Tracked {
    body: Full<Bytes>,
    _done: Answered,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The source an address counts for: an IPv4 address, or the /64 of an IPv6 one (what one
/// subscriber gets; an IPv4-mapped address counts as its IPv4 address).
pub(crate) fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// How long to wait for a slot before evicting: what is left of `wait` ([`CLOSING_WAIT`]) since
/// the latest answer that closes a connection still open, or `None` when there is none.
fn closing_wait(open: &[Arc<Conn>], wait: Duration) -> Option<Duration> {
    open.iter()
        .filter_map(|c| c.closing_for())
        .min()
        .and_then(|since| wait.checked_sub(since))
        .filter(|left| !left.is_zero())
}

/// Whether the client asked to close after this request: `Connection: close`, or HTTP/1.0
/// without `keep-alive` (hyper then closes after the answer).
fn asks_close<B>(req: &Request<B>) -> bool {
    // A walk over the few headers a request has, comparing names (a known name compares as a
    // number), instead of a lookup that hashes the name for every request.
    let has = |token: &[u8]| {
        req.headers().iter().any(|(name, v)| {
            name == CONNECTION
                && v.as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    if req.version() == hyper::Version::HTTP_10 {
        !has(b"keep-alive")
    } else {
        has(b"close")
    }
}

/// Picks the connection to close for a newcomer from `source` and tells it to close.
fn evict<'a>(open: &'a [Arc<Conn>], source: IpAddr, limits: &Limits) -> Option<&'a Arc<Conn>> {
    let views: Vec<View> = open
        .iter()
        .map(|c| {
            let gone = c.evicting.load(Ordering::Relaxed);
            let requests = c.requests.load(Ordering::Relaxed);
            let idle = !c.busy();
            View {
                source: group(c.source),
                evictable: !gone && c.evictable(),
                gone,
                // In use: idle between kept-alive requests (it has answered one, and the idle
                // timeout closes it), or just accepted and not yet sent its head.
                protected: idle
                    && if requests > 0 {
                        c.idle_since().elapsed() < limits.idle_timeout
                    } else {
                        c.accepted.elapsed() < NEW_GRACE
                    },
                idle_since_ms: c.idle_since_ms.load(Ordering::Relaxed),
            }
        })
        .collect();
    let flood = limits.max_connections / FLOOD_SHARE;
    let victim = &open[choose_victim(&views, group(source), flood)?];
    // Set before the wake-up: the task registers its waker, then reads the flag, so a wake-up
    // before its first poll is not lost.
    victim.evicting.store(true, Ordering::Release);
    victim.waker.wake();
    Some(victim)
}

/// What [`choose_victim`] needs to know about one open connection.
#[derive(Debug, Clone, Copy)]
struct View {
    /// Its source's [`group`].
    source: IpAddr,
    /// Not being answered (or its body stalled), and not already chosen.
    evictable: bool,
    /// Already chosen to close: no longer counts for its source.
    gone: bool,
    /// In use: only its own source may take it.
    protected: bool,
    idle_since_ms: u64,
}

/// The fair choice: among evictable connections, one of the source holding the most open
/// connections (the newcomer's own source on a tie), idle the longest. None when no
/// connection is evictable, or when the only candidates belong to a source that holds no more
/// than the newcomer's source would: a source never loses a connection to one holding fewer.
/// A protected connection is only taken by its own source, unless that source holds more
/// than `flood` connections: a flood's connections are all young, and shielding them would
/// lock every other source out.
fn choose_victim(open: &[View], newcomer: IpAddr, flood: usize) -> Option<usize> {
    let mut held: HashMap<IpAddr, usize> = HashMap::new();
    for c in open.iter().filter(|c| !c.gone) {
        *held.entry(c.source).or_default() += 1;
    }
    let count = |ip: &IpAddr| held.get(ip).copied().unwrap_or(0);
    let (index, victim) = open
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let shielded = c.protected && count(&c.source) <= flood;
            c.evictable && (!shielded || c.source == newcomer)
        })
        .max_by_key(|(_, c)| {
            (
                count(&c.source),
                c.source == newcomer,
                std::cmp::Reverse(c.idle_since_ms),
            )
        })?;
    (victim.source == newcomer || count(&victim.source) > count(&newcomer)).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn view(source: u8, evictable: bool, idle_since_ms: u64) -> View {
        View {
            source: ip(source),
            evictable,
            gone: false,
            protected: false,
            idle_since_ms,
        }
    }

    #[test]
    fn asks_close_reads_the_connection_tokens_and_the_version() {
        let req = |version, connection: &[&str]| {
            let mut b = Request::builder().version(version);
            for v in connection {
                b = b.header(CONNECTION, *v);
            }
            b.body(()).expect("a request")
        };
        use hyper::Version;
        assert!(!asks_close(&req(Version::HTTP_11, &[])));
        assert!(asks_close(&req(Version::HTTP_11, &["close"])));
        assert!(asks_close(&req(Version::HTTP_11, &["Upgrade, CLOSE"])));
        assert!(asks_close(&req(Version::HTTP_11, &["keep-alive", "close"])));
        assert!(!asks_close(&req(Version::HTTP_11, &["closed, keep-alive"])));
        assert!(asks_close(&req(Version::HTTP_10, &[])));
        assert!(!asks_close(&req(Version::HTTP_10, &["Keep-Alive"])));
    }

    #[test]
    fn memory_is_given_back_after_a_burst_not_after_a_probe() {
        let interval = RELEASE_INTERVAL.as_millis() as u64;
        // A probe now and then: never.
        assert!(!burst_over(1, 0, 10_000));
        assert!(!burst_over(BURST_CONNECTIONS - 1, 0, 10_000));
        // The end of the first burst.
        assert!(burst_over(BURST_CONNECTIONS, 0, 10_000));
        // Another burst too soon after a release waits for a later idle moment.
        assert!(!burst_over(500, 10_000, 10_000 + interval - 1));
        assert!(burst_over(500, 10_000, 10_000 + interval));
        // The state machine: a release resets the count and records the time.
        let b = Bursts::new(Instant::now());
        for _ in 0..BURST_CONNECTIONS {
            b.accepted();
        }
        b.idle();
        assert_eq!(b.accepted.load(Ordering::Relaxed), 0);
        assert!(b.released_ms.load(Ordering::Relaxed) >= 1);
        for _ in 0..BURST_CONNECTIONS {
            b.accepted();
        }
        b.idle();
        assert_eq!(
            b.accepted.load(Ordering::Relaxed),
            BURST_CONNECTIONS,
            "a second release within the interval waits"
        );
    }

    #[test]
    fn the_closing_wait_counts_from_the_latest_closing_answer() {
        let epoch = Instant::now();
        let open: Vec<Arc<Conn>> = (0..3).map(|_| Arc::new(Conn::new(ip(1), epoch))).collect();
        let wait = Duration::from_secs(60);
        assert_eq!(closing_wait(&open, wait), None, "none is closing");
        open[1].mark_closing();
        let left = closing_wait(&open, wait).expect("one is closing");
        assert!(left > Duration::from_secs(59) && left <= wait, "{left:?}");
        // Long ago: no wait left.
        open[1].closing_at_ms.store(
            open[1].now_ms().saturating_sub(61_000).max(1),
            Ordering::Release,
        );
        if open[1].now_ms() >= 61_000 {
            assert_eq!(closing_wait(&open, wait), None);
        }
        assert_eq!(closing_wait(&open, Duration::ZERO), None);
    }

    /// A client that reconnects as soon as it has its `Connection: close` answer, while every
    /// slot is taken, gets the slot that answer frees, not another client's kept-alive one.
    /// Made deterministic by a large answer: the closing connection cannot end (and free its
    /// slot) until its client has read the body, which it does only after the newcomer has
    /// connected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_reconnecting_after_close_takes_the_slot_it_freed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpStream;
        const BIG: usize = 16 << 20;
        let big = Bytes::from(vec![b'x'; BIG]);
        let limits = Limits {
            max_connections: 3,
            closing_wait: Duration::from_secs(5),
            ..Limits::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            limits,
            "test",
            None,
            async move {
                let _ = stop_rx.await;
            },
            move |req, _peer, _progress| {
                let body = if req.uri().path() == "/big" {
                    big.clone()
                } else {
                    Bytes::from_static(b"ok")
                };
                std::future::ready(Response::new(Full::new(body)))
            },
        ));
        async fn ask(c: &mut TcpStream, path: &str) -> String {
            let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
            c.write_all(req.as_bytes()).await.expect("send");
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n\r\nok") {
                let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                    .await
                    .expect("an answer within 5 s")
                    .expect("read");
                if n == 0 {
                    return String::from_utf8_lossy(&got).into_owned();
                }
                got.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&got).into_owned()
        }
        // Two kept-alive clients, each answered once and idle.
        let mut kept = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            assert!(ask(&mut c, "/small").await.starts_with("HTTP/1.1 200"));
            kept.push(c);
        }
        // The third asks for a large answer and to close; it reads the head only.
        let mut closing = TcpStream::connect(addr).await.expect("connect");
        closing
            .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut head = vec![0u8; 1024];
        let n = closing.read(&mut head).await.expect("the answer starts");
        assert!(head[..n].starts_with(b"HTTP/1.1 200"));
        // Every slot is taken: a newcomer connects, then the closing client reads to the end.
        let mut newcomer = TcpStream::connect(addr).await.expect("connect");
        newcomer
            .write_all(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("send");
        let mut rest = Vec::with_capacity(BIG);
        closing.read_to_end(&mut rest).await.expect("the body");
        assert!(n + rest.len() > BIG, "the whole answer arrived");
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), newcomer.read(&mut answer))
            .await
            .expect("the newcomer is answered")
            .expect("read");
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &answer[..n]
        );
        // Nobody's kept-alive connection was taken to make room.
        for c in &mut kept {
            let answer = ask(c, "/small").await;
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "a kept-alive connection was evicted: {answer:?}"
            );
        }
        let _ = stop_tx.send(());
        server
            .await
            .expect("the server stops")
            .expect("the server took its listener");
    }

    #[test]
    fn a_flooding_source_loses_its_own_oldest_idle_connection() {
        let mut open = vec![view(1, true, 0)];
        open.extend((0..63).map(|i| view(2, true, 10 + i)));
        // The probe from .1 is the oldest idle connection, yet the flood pays for itself.
        assert_eq!(choose_victim(&open, ip(2), 16), Some(1));
        // And a third source also takes from the flood.
        assert_eq!(choose_victim(&open, ip(3), 16), Some(1));
    }

    #[test]
    fn busy_and_chosen_connections_are_not_evicted() {
        let mut open = vec![view(2, false, 0), view(2, true, 5), view(2, true, 3)];
        assert_eq!(choose_victim(&open, ip(1), 16), Some(2));
        open[2].evictable = false;
        open[2].gone = true;
        assert_eq!(choose_victim(&open, ip(1), 16), Some(1));
        open[1].evictable = false;
        assert_eq!(choose_victim(&open, ip(1), 16), None);
    }

    #[test]
    fn a_source_never_gives_way_to_one_holding_more() {
        // .1 holds one idle connection, .2 holds three being answered: a newcomer from .2
        // must not take .1's only connection.
        let open = vec![
            view(1, true, 0),
            view(2, false, 0),
            view(2, false, 0),
            view(2, false, 0),
        ];
        assert_eq!(choose_victim(&open, ip(2), 16), None);
        // A newcomer from a source holding nothing may take it (1 > 0).
        assert_eq!(choose_victim(&open, ip(3), 16), Some(0));
        // On a tie the newcomer's own source gives way.
        let tie = vec![view(1, true, 0), view(2, true, 5)];
        assert_eq!(choose_victim(&tie, ip(2), 16), Some(1));
        assert_eq!(choose_victim(&tie, ip(1), 16), Some(0));
    }

    #[test]
    fn sources_are_grouped_by_ipv4_address_and_ipv6_64() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(group(ip(7)), ip(7));
        assert_eq!(group(v6("2001:db8:1:2:aaaa::1")), v6("2001:db8:1:2::"));
        assert_eq!(group(v6("2001:db8:1:2:ffff:1:2:3")), v6("2001:db8:1:2::"));
        assert_ne!(group(v6("2001:db8:1:3::1")), v6("2001:db8:1:2::"));
        assert_eq!(group(v6("::ffff:127.0.0.9")), ip(9));
    }

    #[test]
    fn a_connection_in_use_is_only_taken_by_its_own_source() {
        // A monitor's kept-alive connection from .1, the oldest idle one; a newcomer from a
        // source holding nothing may not take it, and with nothing else evictable is refused.
        let mut open = vec![view(1, true, 0)];
        open[0].protected = true;
        assert_eq!(choose_victim(&open, ip(9), 16), None);
        // Its own source may, and an unprotected connection of another source goes first.
        assert_eq!(choose_victim(&open, ip(1), 16), Some(0));
        open.push(view(2, true, 50));
        assert_eq!(choose_victim(&open, ip(9), 16), Some(1));
    }
}
