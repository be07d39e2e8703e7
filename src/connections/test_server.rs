//! A test server for the connection tests: its answers say which path they answer and which
//! thread answered.

use std::time::Duration;

use bytes::Bytes;

/// A server on a thread named `first` (as the health server's is `health`), whose answers
/// say which path they answer and which thread answered.
pub(super) struct Server {
    pub(super) addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    ended: std::sync::mpsc::Receiver<()>,
}

impl Server {
    /// With `quick`, its kept-alive connections give that answer ([`super::quick`]).
    pub(super) fn start(limits: super::Limits, quick: Option<super::Quick>) -> Server {
        use http_body_util::Full;
        use hyper::Response;
        let (tell, told) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (end, ended) = std::sync::mpsc::channel();
        let _thread = crate::runtime::on_own_thread("first", move || async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tell.send(listener.local_addr().expect("addr"))
                .expect("tell");
            super::serve(
                listener,
                limits,
                "test",
                quick,
                async move {
                    let _ = stopped.await;
                },
                |req, _peer, _progress| {
                    let thread = std::thread::current();
                    let body = format!("{} {}", req.uri().path(), thread.name().unwrap_or("?"));
                    std::future::ready(Response::new(Full::new(Bytes::from(body))))
                },
            )
            .await
            .expect("serve");
            let _ = end.send(());
        })
        .expect("a thread");
        let addr = told.recv().expect("the server's address");
        Server {
            addr,
            stop: Some(stop),
            ended,
        }
    }

    pub(super) fn connect(&self) -> std::net::TcpStream {
        std::net::TcpStream::connect(self.addr).expect("connect")
    }

    /// Stops it, and says whether it ended (every connection closed) within 2 s.
    pub(super) fn stop(mut self) -> bool {
        drop(self.stop.take());
        self.ended.recv_timeout(Duration::from_secs(2)).is_ok()
    }
}

pub(super) fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// Sends `raw` and reads one answer's body (`None`: the connection closed first). Waits a
/// little first: a connection moves when it waits for its next request, and a client that
/// sends it the moment it reads an answer can find the server still at work on that one
/// (hyper then reads on, and the connection stays where it is).
pub(super) fn ask(c: &mut std::net::TcpStream, raw: &str) -> Option<String> {
    std::thread::sleep(Duration::from_millis(10));
    std::io::Write::write_all(c, raw.as_bytes()).ok()?;
    answer(c)
}

pub(super) fn answer(c: &mut std::net::TcpStream) -> Option<String> {
    let (status, _, body) =
        crate::test_support::http_answer::read_kept_alive_answer(c, Duration::from_secs(2))?;
    assert_eq!(status, 200);
    Some(body)
}
