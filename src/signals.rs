//! The signals the agent handles, installed together first thing in `run`.
//!
//! Stop signals are SIGTERM (what `docker stop` and the kubelet send) and SIGINT (Ctrl-C):
//! [`Signals`]. A process running as PID 1 in a container gets no default action for SIGTERM:
//! unless it installs a handler the signal is ignored, `docker stop` waits its full 10 s and
//! then kills. So the handlers are installed before anything that can take time, and a signal
//! that arrives during start-up is not lost but waits in the stream.
//!
//! SIGHUP re-reads the config at once ([`Hangups`], handed to the telemetry schedule, which
//! also carries the config file's changes); its handler is installed at the same time, so a
//! SIGHUP never stops the agent (its default action would).

/// The installed handlers; [`Signals::recv`] waits for the next stop signal.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

/// The signal handlers could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install signal handlers: {0}")]
pub struct NoHandlers(std::io::Error);

/// Installs the handler of one signal. Needs a running tokio runtime with I/O enabled.
#[cfg(unix)]
fn handler(
    kind: tokio::signal::unix::SignalKind,
) -> Result<tokio::signal::unix::Signal, NoHandlers> {
    tokio::signal::unix::signal(kind).map_err(NoHandlers)
}

impl Signals {
    /// Installs the handlers. Needs a running tokio runtime with I/O enabled.
    pub(crate) fn install() -> Result<Self, NoHandlers> {
        #[cfg(unix)]
        use tokio::signal::unix::SignalKind;
        Ok(Signals {
            #[cfg(unix)]
            term: handler(SignalKind::terminate())?,
            #[cfg(unix)]
            int: handler(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT and returns its name, for the log.
    pub(crate) async fn recv(&mut self) -> &'static str {
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

/// Why the config is re-read out of turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reread {
    /// SIGHUP.
    Signal,
    /// The config file's watcher saw it change (see `crate::agent`).
    FileChanged,
}

/// SIGHUP deliveries, for the telemetry schedule, and the config file's changes once
/// [`Hangups::watch`] is given them.
pub(crate) struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
    changes: Option<tokio::sync::mpsc::Receiver<()>>,
}

impl Hangups {
    /// Installs the SIGHUP handler. Needs a running tokio runtime with I/O enabled.
    pub(crate) fn install() -> Result<Self, NoHandlers> {
        Ok(Hangups {
            #[cfg(unix)]
            signal: Some(handler(tokio::signal::unix::SignalKind::hangup())?),
            changes: None,
        })
    }

    /// No SIGHUP handling (tests that drive the schedule themselves).
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        Hangups {
            #[cfg(unix)]
            signal: None,
            changes: None,
        }
    }

    /// Also re-read when `changes` yields (the config file changed).
    pub(crate) fn watch(mut self, changes: tokio::sync::mpsc::Receiver<()>) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Waits for the next SIGHUP or change; never completes without either.
    pub(crate) async fn recv(&mut self) -> Reread {
        #[cfg(unix)]
        let sighup = &mut self.signal;
        let changes = &mut self.changes;
        let signal = async {
            #[cfg(unix)]
            if let Some(s) = sighup {
                if s.recv().await.is_some() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        let changed = async {
            if let Some(c) = changes {
                if c.recv().await.is_some() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = signal => Reread::Signal,
            () = changed => Reread::FileChanged,
        }
    }
}
