//! The health server's second serving thread, for kept-alive connections.
//!
//! The accept loop's thread serves every connection it accepts. One that has answered
//! [`KEPT_AFTER`] requests and is waiting for its next one is kept alive: when the second
//! thread holds fewer kept-alive connections than the first, it moves there, between two
//! requests, as the socket it is plus whatever part of a next request hyper had already read
//! ([`super::stream::Stream`]). So a probe with a new connection per request (kubelet, Docker) never pays for
//! the second thread (nothing moves, and the thread is not even started), while many busy
//! kept-alive clients are served by two threads: one thread alone gets a third of two cores
//! when it competes with two others, the clients' own.
//!
//! A moved connection keeps its slot, its limits and its record in the accept loop's list:
//! they are shared through atomics, so eviction and stop reach it on either thread.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::runtime::Handle;

/// A connection that has answered this many requests and waits for another is kept alive.
pub(super) const KEPT_AFTER: u32 = 2;

/// The second thread (started the first time a connection moves) and how many kept-alive
/// connections each thread serves. Dropping the last reference ends the thread.
#[derive(Debug, Default)]
pub(super) struct Spare {
    thread: OnceLock<Option<Started>>,
    here: AtomicUsize,
    there: AtomicUsize,
}

/// The running second thread: its runtime, and the sender whose drop ends it.
#[derive(Debug)]
struct Started {
    runtime: Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Where a kept-alive connection is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// On the accept loop's thread.
    Here,
    /// On the second thread.
    There,
}

impl Spare {
    /// Decides where a connection that has just become kept-alive is served, and counts it
    /// there until [`Kept`] is dropped: the second thread when it holds fewer than the first
    /// (so a lone kept-alive client stays where it is), and when it runs.
    pub(super) fn place(self: &Arc<Self>) -> Kept {
        let here = self.here.load(Ordering::Relaxed);
        let there = self.there.load(Ordering::Relaxed);
        let side = if there < here && self.runtime().is_some() {
            Side::There
        } else {
            Side::Here
        };
        self.count(side).fetch_add(1, Ordering::Relaxed);
        Kept {
            spare: Arc::clone(self),
            side,
        }
    }

    fn count(&self, side: Side) -> &AtomicUsize {
        match side {
            Side::Here => &self.here,
            Side::There => &self.there,
        }
    }

    /// The second thread's runtime, started on first use; `None` if it cannot start (the
    /// connections then all stay on the first thread).
    pub(super) fn runtime(&self) -> Option<&Handle> {
        self.thread
            .get_or_init(|| match start() {
                Ok(started) => Some(started),
                Err(e) => {
                    tracing::warn!(
                        "health server: cannot start its second thread ({e}); \
                         serving every connection on one"
                    );
                    None
                }
            })
            .as_ref()
            .map(|s| &s.runtime)
    }
}

/// Starts the second thread and waits (a fraction of a millisecond, once) for its runtime.
fn start() -> io::Result<Started> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Its completion is not waited for: the thread ends when `stop` is dropped.
    let (runtime, _ended) = crate::runtime::on_own_thread("health-2", move || async move {
        // Closed (never sent to) when the last connection has let go of the `Spare`.
        let _ = stopped.await;
    })
    .map_err(io::Error::other)?;
    Ok(Started {
        runtime,
        _stop: stop,
    })
}

/// A kept-alive connection counted on its [`Side`] until dropped.
#[derive(Debug)]
pub(super) struct Kept {
    spare: Arc<Spare>,
    side: Side,
}

impl Kept {
    pub(super) fn side(&self) -> Side {
        self.side
    }

    /// The second thread's runtime (running, as [`Spare::place`] chose it).
    pub(super) fn runtime(&self) -> Option<&Handle> {
        self.spare.runtime()
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.spare.count(self.side).fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_server::{Server, answer, ask, request};
    use super::*;

    #[test]
    fn a_lone_kept_alive_connection_stays_and_the_next_ones_alternate() {
        let spare = Arc::new(Spare::default());
        let first = spare.place();
        assert_eq!(first.side(), Side::Here, "nothing to balance against yet");
        let second = spare.place();
        assert_eq!(second.side(), Side::There);
        let third = spare.place();
        assert_eq!(third.side(), Side::Here);
        let fourth = spare.place();
        assert_eq!(fourth.side(), Side::There);
        drop(second);
        drop(fourth);
        // Both moved ones ended: the next two go there again, then alternate.
        assert_eq!(spare.place().side(), Side::There);
        assert_eq!(
            (
                spare.here.load(Ordering::Relaxed),
                spare.there.load(Ordering::Relaxed)
            ),
            (2, 0),
            "a dropped Kept uncounts itself"
        );
        drop(first);
        drop(third);
        assert_eq!(spare.here.load(Ordering::Relaxed), 0);
    }

    /// The second kept-alive connection moves between two requests, with the start of its
    /// next request that the first thread had already read; the first stays; connections
    /// that close after each request never move.
    #[test]
    fn kept_alive_connections_share_two_threads_and_move_between_requests() {
        let server = Server::start(Default::default(), None);
        let mut one = server.connect();
        let mut two = server.connect();
        assert_eq!(ask(&mut one, &request("/a")).as_deref(), Some("/a first"));
        assert_eq!(ask(&mut one, &request("/b")).as_deref(), Some("/b first"));
        assert_eq!(ask(&mut two, &request("/c")).as_deref(), Some("/c first"));
        // Its second request and the start of its third in one write: the first thread answers
        // the second and has read part of the third when the connection moves.
        let third = request("/e");
        let (start, rest) = third.split_at(9);
        let both = format!("{}{start}", request("/d"));
        assert_eq!(ask(&mut two, &both).as_deref(), Some("/d first"));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(ask(&mut two, rest).as_deref(), Some("/e health-2"));
        assert_eq!(
            ask(&mut two, &request("/f")).as_deref(),
            Some("/f health-2")
        );
        assert_eq!(ask(&mut one, &request("/g")).as_deref(), Some("/g first"));
        for _ in 0..3 {
            let mut once = server.connect();
            let close = "GET /h HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
            assert_eq!(ask(&mut once, close).as_deref(), Some("/h first"));
        }
        assert!(
            server.stop(),
            "the server ends with a moved connection open"
        );
        assert_eq!(
            answer(&mut two),
            None,
            "the moved connection was closed at stop"
        );
    }

    /// Eviction reaches a connection on the second thread: with every slot taken, the one
    /// idle the longest, the moved one, makes room for a newcomer.
    #[test]
    fn a_moved_connection_is_evicted_like_any_other() {
        let server = Server::start(
            super::super::Limits {
                max_connections: 3,
                ..Default::default()
            },
            None,
        );
        let mut one = server.connect();
        let mut two = server.connect();
        for path in ["/a", "/b"] {
            assert!(ask(&mut one, &request(path)).is_some());
        }
        for path in ["/c", "/d"] {
            assert!(ask(&mut two, &request(path)).is_some());
        }
        assert_eq!(
            ask(&mut two, &request("/e")).as_deref(),
            Some("/e health-2")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(ask(&mut one, &request("/f")).as_deref(), Some("/f first"));
        let mut three = server.connect();
        assert!(ask(&mut three, &request("/g")).is_some());
        let mut four = server.connect();
        assert_eq!(ask(&mut four, &request("/h")).as_deref(), Some("/h first"));
        assert_eq!(answer(&mut two), None, "the moved connection made room");
        assert_eq!(ask(&mut one, &request("/i")).as_deref(), Some("/i first"));
        assert!(server.stop());
    }
}
