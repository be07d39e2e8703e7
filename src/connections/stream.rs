//! Sockets as the servers use them: accepted without the runtime, and registered with it only
//! when they must wait.
//!
//! A health probe connects, sends one request and reads one answer with `Connection: close`.
//! By the time the accept loop has taken the connection its request has usually arrived, and
//! its answer always fits the socket's send buffer: such a connection never waits. So a
//! [`Stream`] starts as the plain non-blocking socket [`Listener::accept`] gave, read and written
//! directly, and is registered with the runtime (one `epoll_ctl`) only the first time a read or
//! a write would block: then the runtime wakes its task when it can go on. A probe whose request
//! is already there is answered and closed without being registered at all: without the
//! registration and the deregistration before the close, and without a wait for the runtime to
//! report the socket readable (a new registration starts as "not ready", so the first read of a
//! registered socket always waits a turn of the event loop, even when its bytes have arrived).
//! A kept-alive connection is registered when it first waits for its next request.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::millis_since;

/// A listening socket whose accepted connections are not registered with the runtime.
pub(super) struct Listener(AsyncFd<mio::net::TcpListener>);

impl Listener {
    /// Takes a listener from the runtime it was bound on and registers it with the current one.
    pub(super) fn new(listener: tokio::net::TcpListener) -> io::Result<Self> {
        let listener = mio::net::TcpListener::from_std(listener.into_std()?);
        // SAFETY: the mio listener owns its descriptor (it closes it when dropped, and only
        // then), so the descriptor stays open and the same for the `AsyncFd`'s whole life.
        let registered = unsafe { AsyncFd::register(listener) }?;
        Ok(Listener(registered))
    }

    /// The next connection: a non-blocking socket (`accept4` with `SOCK_NONBLOCK`), not
    /// registered with the runtime.
    pub(super) async fn accept(&self) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        loop {
            let mut ready = self.0.readable().await?;
            // A would-block clears the readiness and waits again; any other outcome is returned
            // (an error such as EMFILE leaves it set: the caller backs off).
            if let Ok(accepted) = ready.try_io(|listener| listener.get_ref().accept()) {
                return accepted.map(|(tcp, peer)| (tcp.into(), peer));
            }
        }
    }
}

/// A connection's socket, and the bytes of its next request that were already read when it
/// moved between threads (read first).
#[derive(Debug)]
pub(super) struct Stream {
    socket: Socket,
    unread: Bytes,
    /// Whether its writes go out, shared with the connection's state.
    writes: Arc<Writes>,
}

/// Whether a connection's answer is going out, readable by its task and by the accept loop,
/// which cannot reach the stream while hyper owns it.
#[derive(Debug)]
pub(super) struct Writes {
    epoch: Instant,
    /// When the first of the writes that have not gone out since the last one that did was
    /// tried, in milliseconds since `epoch` plus one; 0 while the last write went out.
    blocked_since_ms: AtomicU64,
}

impl Writes {
    pub(super) fn new(epoch: Instant) -> Self {
        Writes {
            epoch,
            blocked_since_ms: AtomicU64::new(0),
        }
    }

    /// Its last write could not go out (the socket's buffer was full, or it had just been
    /// registered and the runtime did not know yet that it can write): hyper still holds
    /// bytes to send.
    pub(super) fn blocked(&self) -> bool {
        self.blocked_since_ms.load(Ordering::Relaxed) != 0
    }

    /// How long no byte of its answer has gone out, if its last write could not.
    pub(super) fn blocked_for(&self) -> Option<Duration> {
        match self.blocked_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(
                millis_since(self.epoch).saturating_sub(since - 1),
            )),
        }
    }

    /// Notes whether a write went out (some of its bytes, or an error that ends the
    /// connection): a write that waits keeps the time of the first that did.
    fn note(&self, went_out: bool) {
        if went_out {
            self.blocked_since_ms.store(0, Ordering::Relaxed);
        } else if !self.blocked() {
            self.blocked_since_ms.store(
                millis_since(self.epoch).saturating_add(1),
                Ordering::Relaxed,
            );
        }
    }
}

#[derive(Debug)]
enum Socket {
    /// Not registered: read and written directly as long as that does not block.
    Direct(std::net::TcpStream),
    /// Registered with the runtime of the thread that serves it.
    Registered(TcpStream),
    /// Its registration failed (the socket is closed); every later use fails.
    Lost,
}

impl Stream {
    /// A non-blocking socket, not yet registered, whose writes are noted in `writes`.
    pub(super) fn new(tcp: std::net::TcpStream, writes: Arc<Writes>) -> Self {
        Self::from_parts(tcp, Bytes::new(), writes)
    }

    pub(super) fn set_nodelay(&self) -> io::Result<()> {
        match &self.socket {
            Socket::Direct(tcp) => tcp.set_nodelay(true),
            Socket::Registered(tcp) => tcp.set_nodelay(true),
            Socket::Lost => Err(lost()),
        }
    }

    /// Takes the socket off this thread's runtime (if it was registered), with what is still
    /// to be read from it: `more` (read from this stream and not used), then this stream's own
    /// unread bytes.
    pub(super) fn into_parts(self, more: Bytes) -> io::Result<(std::net::TcpStream, Bytes)> {
        let Stream {
            socket,
            unread,
            writes: _,
        } = self.unread_first(more);
        let tcp = match socket {
            Socket::Direct(tcp) => tcp,
            Socket::Registered(tcp) => tcp.into_std()?,
            Socket::Lost => return Err(lost()),
        };
        Ok((tcp, unread))
    }

    /// A socket taken by [`Stream::into_parts`], to be served on another thread (registered
    /// with that thread's runtime when it first waits).
    pub(super) fn from_parts(tcp: std::net::TcpStream, unread: Bytes, writes: Arc<Writes>) -> Self {
        Stream {
            socket: Socket::Direct(tcp),
            unread,
            writes,
        }
    }

    /// The same stream, whose reads give `more` (read from it and not used) first.
    pub(super) fn unread_first(mut self, more: Bytes) -> Self {
        self.unread = if self.unread.is_empty() {
            more
        } else if more.is_empty() {
            self.unread
        } else {
            let mut both = BytesMut::with_capacity(more.len() + self.unread.len());
            both.extend_from_slice(&more);
            both.extend_from_slice(&self.unread);
            both.freeze()
        };
        self
    }

    /// Notes whether a write went out.
    fn wrote<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.writes.note(polled.is_ready());
        polled
    }

    /// Registers a direct socket with the current runtime (the one polling it).
    fn register(&mut self) -> io::Result<&mut TcpStream> {
        if let Socket::Direct(_) = self.socket {
            let Socket::Direct(tcp) = std::mem::replace(&mut self.socket, Socket::Lost) else {
                unreachable!("matched above");
            };
            self.socket = Socket::Registered(TcpStream::from_std(tcp)?);
        }
        match &mut self.socket {
            Socket::Registered(tcp) => Ok(tcp),
            Socket::Direct(_) | Socket::Lost => Err(lost()),
        }
    }
}

fn lost() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the socket could not be registered with the runtime",
    )
}

/// Reads what the socket holds into `buf`'s unfilled part, as the runtime's own reads do:
/// without zeroing that part first (hyper's 8 KiB or more, for a request of a few hundred
/// bytes; zeroing it doubled the user-space instructions of a probe's connection).
fn read_direct(tcp: &std::net::TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    // SAFETY: `recv` writes at most `unfilled.len()` bytes at the pointer it is given and
    // returns how many it wrote; only those are then marked initialized and filled. Nothing
    // here writes uninitialized bytes into the buffer.
    unsafe {
        let unfilled = buf.unfilled_mut();
        let n = nix::libc::recv(
            tcp.as_raw_fd(),
            unfilled.as_mut_ptr().cast(),
            unfilled.len(),
            0,
        );
        let Ok(n) = usize::try_from(n) else {
            return Err(io::Error::last_os_error());
        };
        buf.assume_init(n);
        buf.advance(n);
    }
    Ok(())
}

/// Whether a direct read or write that failed with `e` should wait (registered) instead.
fn waits(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread.split_to(n));
            return Poll::Ready(Ok(()));
        }
        if let Socket::Direct(tcp) = &this.socket {
            match read_direct(tcp, buf) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if waits(&e) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        match this.register() {
            Ok(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Not vectored: hyper is told to gather each answer into one buffer (`writev(false)`).
impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Socket::Direct(tcp) = &this.socket {
            match (&*tcp).write(buf) {
                Ok(n) => return this.wrote(Poll::Ready(Ok(n))),
                Err(e) if waits(&e) => {}
                Err(e) => return this.wrote(Poll::Ready(Err(e))),
            }
        }
        let polled = match this.register() {
            Ok(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        };
        this.wrote(polled)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A socket has no buffer of its own to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Direct(tcp) => Poll::Ready(tcp.shutdown(Shutdown::Write)),
            Socket::Registered(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Socket::Lost => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn writes() -> Arc<Writes> {
        Arc::new(Writes::new(Instant::now()))
    }

    /// A connected pair on loopback: the client, and the server's end as [`Listener`] gives it.
    async fn pair() -> (TcpStream, std::net::TcpStream) {
        let listener = Listener::new(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        )
        .expect("listener");
        let addr = listener.0.get_ref().local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn accepted_sockets_are_non_blocking() {
        let (_client, server) = pair().await;
        let mut buf = [0u8; 8];
        let e = std::io::Read::read(&mut &server, &mut buf).expect_err("nothing sent yet");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[tokio::test]
    async fn unread_bytes_come_first_then_the_socket() {
        let (mut client, server) = pair().await;
        let (tcp, unread) = Stream::new(server, writes())
            .into_parts(Bytes::from_static(b"GET / HTTP/1.1\r\n"))
            .expect("off the runtime");
        // A reader takes the start of the unread bytes and gives it back, unused: it comes
        // before the rest.
        let mut stream = Stream::from_parts(tcp, unread, writes());
        let mut taken = [0; 8];
        stream
            .read_exact(&mut taken)
            .await
            .expect("the unread bytes");
        assert_eq!(&taken, b"GET / HT");
        let (tcp, unread) = stream
            .into_parts(Bytes::copy_from_slice(&taken))
            .expect("and off again");
        let mut stream = Stream::from_parts(tcp, unread, writes());
        client.write_all(b"Host: t\r\n\r\n").await.expect("send");
        drop(client);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }

    /// Bytes already there are read without registering; a read that would block registers
    /// the socket and completes when the bytes arrive (the runtime woke the task).
    #[tokio::test]
    async fn reads_directly_until_one_would_block_then_waits_registered() {
        let (mut client, server) = pair().await;
        client.write_all(b"first").await.expect("send");
        let mut stream = Stream::new(server, writes());
        let mut buf = [0u8; 16];
        let mut n = 0;
        for _ in 0..100 {
            // The bytes cross loopback at once, but give them time on a loaded machine.
            match std::future::poll_fn(|cx| {
                let mut rb = ReadBuf::new(&mut buf);
                match Pin::new(&mut stream).poll_read(cx, &mut rb) {
                    Poll::Ready(r) => Poll::Ready(Some(r.map(|()| rb.filled().len()))),
                    Poll::Pending => Poll::Ready(None),
                }
            })
            .await
            {
                Some(r) => {
                    n = r.expect("read");
                    break;
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        assert_eq!(&buf[..n], b"first");
        if n == 5 {
            assert!(
                matches!(stream.socket, Socket::Direct(_)),
                "read directly, not registered"
            );
        }
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let n = stream.read(&mut buf).await.expect("read");
            (
                buf[..n].to_vec(),
                matches!(stream.socket, Socket::Registered(_)),
            )
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"second").await.expect("send");
        let (got, registered) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("woken when the bytes arrived")
            .expect("task");
        assert_eq!(got, b"second");
        assert!(registered, "a read that would block registers the socket");
    }

    /// A write that does not fit the socket's buffers registers it and completes as the client
    /// reads; what the client reads is what was written.
    #[tokio::test]
    async fn writes_directly_until_one_would_block_then_waits_registered() {
        let (client, server) = pair().await;
        let mut stream = Stream::new(server, writes());
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut client = client;
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            got
        });
        stream.write_all(&data).await.expect("write");
        assert!(
            matches!(stream.socket, Socket::Registered(_)),
            "8 MiB do not fit loopback's buffers: a write blocked and registered"
        );
        stream.shutdown().await.expect("shutdown");
        drop(stream);
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("read to the end")
            .expect("task");
        assert!(got == expected, "the client read what was written");
    }

    /// A write that cannot go out is noted with the time of the first such write, kept while
    /// later writes wait too, and cleared by the first that goes out.
    #[tokio::test]
    async fn a_write_that_waits_is_timed_from_the_first_until_one_goes_out() {
        let (mut client, server) = pair().await;
        let writes = writes();
        let mut stream = Stream::new(server, Arc::clone(&writes));
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0usize;
        // The client reads nothing: the buffers fill (loopback's take a few MiB at most).
        let waited = loop {
            let polled = std::future::poll_fn(|cx| {
                Poll::Ready(Pin::new(&mut stream).poll_write(cx, &chunk))
            })
            .await;
            match polled {
                Poll::Ready(Ok(n)) => {
                    assert!(!writes.blocked(), "a write that went out is not blocked");
                    written += n;
                    assert!(written < 256 * 1024 * 1024, "the buffers never filled");
                }
                Poll::Ready(Err(e)) => panic!("write: {e}"),
                Poll::Pending => break writes.blocked_for(),
            }
        };
        assert!(waited.is_some_and(|w| w < Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut stream).poll_write(cx, &chunk)))
                .await;
        assert!(polled.is_pending(), "the client still reads nothing");
        assert!(
            writes
                .blocked_for()
                .is_some_and(|w| w >= Duration::from_millis(300)),
            "timed from the first write that waited: {:?}",
            writes.blocked_for()
        );
        // The client reads all that was written; the next write goes out.
        let mut buf = vec![0u8; 1024 * 1024];
        let mut read = 0usize;
        while read < written {
            let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
                .await
                .expect("the bytes arrive")
                .expect("read");
            assert!(n > 0, "the stream is still open");
            read += n;
        }
        tokio::time::timeout(Duration::from_secs(10), stream.write_all(b"more"))
            .await
            .expect("a write goes out once the client has read")
            .expect("write");
        assert!(!writes.blocked());
        assert_eq!(writes.blocked_for(), None);
    }

    /// A direct socket's shutdown sends the FIN: the client reads to its end.
    #[tokio::test]
    async fn a_direct_shutdown_ends_the_clients_read() {
        let (mut client, server) = pair().await;
        let mut stream = Stream::new(server, writes());
        stream.write_all(b"bye").await.expect("write");
        stream.shutdown().await.expect("shutdown");
        assert!(matches!(stream.socket, Socket::Direct(_)));
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
            .await
            .expect("EOF before the socket closed")
            .expect("read");
        assert_eq!(got, b"bye");
        drop(stream);
    }
}
