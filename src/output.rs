//! Output that never blocks: log lines on stderr and the sink's events on stdout.
//!
//! A pipe nobody reads fills up (64 KiB on Linux), and a plain `write` then waits for as long
//! as the reader stalls: Docker's blocking log mode with a stalled log driver, a `| less` left
//! open. Written from the async runtime, that wait stopped probes from being answered and
//! SIGTERM from being acted on.
//!
//! So each stream has one writer thread, fed through a bounded queue ([`QUEUE_LINES`] lines,
//! [`QUEUE_BYTES`] bytes). Callers only ever enqueue: when the queue is full the line is
//! dropped and counted, and once the thread can write again the count is reported (a warning
//! in the log: "N log lines were dropped ..."). The descriptor itself stays blocking: it may be
//! shared with other processes (a terminal, the pipe of a whole `docker run`), which
//! `O_NONBLOCK` would change for them too.
//!
//! At exit, [`flush`] waits a bounded time for what is queued; a stalled pipe loses it.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Lines that may wait for the writer thread.
pub const QUEUE_LINES: usize = 4096;
/// Bytes that may wait for the writer thread. One line longer than this passes when nothing
/// else waits (it is in memory already).
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// How often the writer thread looks for dropped lines to report when nothing else comes and
/// some are not reported yet.
const REPORT_EVERY: Duration = Duration::from_millis(500);

enum Message {
    Line(Vec<u8>),
    /// Answered once everything before it is written.
    Flush(SyncSender<()>),
}

/// What a stream's dropped lines are reported as, once it can be written again.
pub type Report = fn(u64);

/// One output stream with its writer thread. Cheap to share: every method takes `&self`.
pub struct Lines {
    tx: SyncSender<Message>,
    state: Arc<State>,
}

struct State {
    queued_bytes: AtomicUsize,
    dropped: AtomicU64,
}

impl Lines {
    /// Starts the writer thread for `out`; `report` is called on that thread with the number
    /// of lines dropped since the last report, after a write succeeded.
    pub fn spawn(name: &str, out: impl Write + Send + 'static, report: Report) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let state = Arc::new(State {
            queued_bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        let thread_state = Arc::clone(&state);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_loop(rx, out, &thread_state, report))?;
        Ok(Lines { tx, state })
    }

    /// Queues `line` (which should end in a newline) without waiting; false when it was
    /// dropped because the queue is full.
    pub fn write_line(&self, line: &[u8]) -> bool {
        self.write_owned(line.to_vec())
    }

    /// [`Lines::write_line`] for a line the caller owns (no copy).
    pub fn write_owned(&self, line: Vec<u8>) -> bool {
        let len = line.len();
        let before = self.state.queued_bytes.fetch_add(len, Ordering::AcqRel);
        let fits = before == 0 || before + len <= QUEUE_BYTES;
        let sent = fits && self.tx.try_send(Message::Line(line)).is_ok();
        if !sent {
            self.state.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.state.dropped.fetch_add(1, Ordering::AcqRel);
        }
        sent
    }

    /// Lines dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Acquire)
    }

    /// Waits until everything queued so far is written, at most `within`; true when it was.
    pub fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (done, wait) = mpsc::sync_channel(1);
        let mut message = Message::Flush(done);
        // The queue may be full: retry until the deadline rather than block.
        loop {
            match self.tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    message = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

fn write_loop(rx: Receiver<Message>, mut out: impl Write, state: &State, report: Report) {
    loop {
        // Idle, the thread sleeps until a line comes: a line is dropped only while others
        // wait in the queue (so this thread is awake), and it reports drops after each line
        // it writes. Only drops it could not report yet (its stream failed) need the timer.
        let next = if state.dropped.load(Ordering::Acquire) > 0 {
            rx.recv_timeout(REPORT_EVERY)
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(Message::Line(line)) => {
                state.queued_bytes.fetch_sub(line.len(), Ordering::AcqRel);
                // A closed or failing stream loses the line; there is nowhere to say so.
                if out.write_all(&line).and_then(|()| out.flush()).is_ok() {
                    report_dropped(state, report);
                }
            }
            Ok(Message::Flush(done)) => {
                let _ = out.flush();
                let _ = done.try_send(());
            }
            Err(RecvTimeoutError::Timeout) => report_dropped(state, report),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn report_dropped(state: &State, report: Report) {
    let n = state.dropped.swap(0, Ordering::AcqRel);
    if n > 0 {
        report(n);
    }
}

static STDERR: OnceLock<Option<Lines>> = OnceLock::new();
static STDOUT: OnceLock<Option<Lines>> = OnceLock::new();

/// The process's stderr, for log lines; `None` when no thread could be started.
pub fn stderr() -> Option<&'static Lines> {
    STDERR
        .get_or_init(|| Lines::spawn("stderr-writer", io::stderr(), report_log_lines).ok())
        .as_ref()
}

/// The process's stdout, for the sink's events; `None` when no thread could be started.
pub fn stdout() -> Option<&'static Lines> {
    STDOUT
        .get_or_init(|| Lines::spawn("stdout-writer", io::stdout(), report_stdout_lines).ok())
        .as_ref()
}

fn report_log_lines(n: u64) {
    tracing::warn!(
        "{n} log line{} dropped: standard error was not being read fast enough",
        if n == 1 { " was" } else { "s were" }
    );
}

fn report_stdout_lines(n: u64) {
    tracing::warn!(
        "{n} line{} not printed: standard output was not being read fast enough",
        if n == 1 { " was" } else { "s were" }
    );
}

/// Writes `line` to the process's stderr without waiting (a line for people, such as the
/// final error); a direct write only when no writer thread could be started.
pub fn eprint_line(line: &str) {
    eprint_bytes(line.as_bytes());
}

fn eprint_bytes(buf: &[u8]) {
    match stderr() {
        Some(lines) => {
            lines.write_line(buf);
        }
        None => {
            let _ = io::stderr().write_all(buf);
        }
    }
}

/// Waits, at most `within` in all, for the queued stdout and stderr lines to be written:
/// called once before the process exits.
pub fn flush(within: Duration) {
    let deadline = Instant::now() + within;
    for lines in [STDOUT.get(), STDERR.get()].into_iter().flatten().flatten() {
        lines.flush(deadline.saturating_duration_since(Instant::now()));
    }
}

/// The `MakeWriter` of the log: every log line goes to [`stderr`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

/// One log event's writer: tracing-subscriber formats an event into one buffer and writes it
/// in one call, so one `write` is one line.
pub struct EventWriter;

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        eprint_bytes(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter
    }
}

#[cfg(test)]
mod tests;
