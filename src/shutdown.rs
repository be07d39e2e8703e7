//! Stop signals: SIGTERM (what `docker stop` and the kubelet send) and SIGINT (Ctrl-C).
//!
//! A process running as PID 1 in a container gets no default action for SIGTERM: unless it
//! installs a handler the signal is ignored, `docker stop` waits its full 10 s and then kills.
//! So the handlers are installed first thing in `run`, before anything that can take time, and
//! a signal that arrives during start-up is not lost but waits in the stream.

use std::io;

/// The installed handlers; [`Signals::recv`] waits for the next stop signal.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Needs a running tokio runtime with I/O enabled.
    pub fn install() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Waits for the next SIGTERM or SIGINT and returns its name, for the log.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                // Without a Ctrl-C handler there is nothing to wait for; never return.
                Err(_) => std::future::pending().await,
            }
        }
    }
}
