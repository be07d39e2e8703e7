//! The signals the agent handles, installed together first thing in `run`.
//!
//! Stop signals are SIGTERM (what `docker stop` and the kubelet send) and SIGINT (Ctrl-C):
//! [`Signals`]. A process running as PID 1 in a container gets no default action for SIGTERM:
//! unless it installs a handler the signal is ignored, `docker stop` waits its full 10 s and
//! then kills. So the handlers are installed before anything that can take time, and a signal
//! that arrives during start-up is not lost but waits in the stream.
//!
//! SIGHUP re-reads the config at once ([`Hangups`], handed to the telemetry schedule); its
//! handler is installed at the same time, so a SIGHUP never stops the agent (its default
//! action would).

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

/// SIGHUP deliveries, for the telemetry schedule.
pub(crate) struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Installs the SIGHUP handler. Needs a running tokio runtime with I/O enabled.
    pub(crate) fn install() -> Result<Self, NoHandlers> {
        Ok(Hangups {
            #[cfg(unix)]
            signal: Some(handler(tokio::signal::unix::SignalKind::hangup())?),
        })
    }

    /// No SIGHUP handling (tests that drive the schedule themselves).
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        Hangups {
            #[cfg(unix)]
            signal: None,
        }
    }

    /// Waits for the next SIGHUP; never completes without a handler.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}
