use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex};

use super::*;

/// A stream that blocks every write until it is opened, as a pipe nobody reads does, and keeps
/// what it is given.
#[derive(Clone, Default)]
struct Stalled(Arc<(Mutex<Gate>, Condvar)>);

/// Whether writes may go through, and what they wrote.
type Gate = (bool, Vec<u8>);

impl Stalled {
    fn open(&self) {
        self.0.0.lock().unwrap().0 = true;
        self.0.1.notify_all();
    }
    fn written(&self) -> Vec<u8> {
        self.0.0.lock().unwrap().1.clone()
    }
}

impl Write for Stalled {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (lock, cv) = &*self.0;
        let mut state = cv.wait_while(lock.lock().unwrap(), |s| !s.0).unwrap();
        state.1.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

static REPORTED_A: AtomicU64 = AtomicU64::new(0);
fn report_a(n: u64) {
    REPORTED_A.fetch_add(n, Ordering::SeqCst);
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

#[test]
fn a_stalled_stream_never_blocks_the_writer_and_the_drops_are_reported_once_it_moves() {
    let stream = Stalled::default();
    let lines = Lines::spawn("test-stalled", stream.clone(), report_a).unwrap();
    let total = QUEUE_LINES + 500;
    let started = Instant::now();
    let mut kept = 0;
    for i in 0..total {
        kept += usize::from(lines.write_line(format!("line {i}\n").as_bytes()));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "writing to a stalled stream took {:?}",
        started.elapsed()
    );
    // The thread holds one line in its blocked write; the queue holds the rest it kept.
    assert!(kept <= QUEUE_LINES + 1, "{kept}");
    let dropped = lines.dropped();
    assert_eq!(dropped as usize, total - kept);
    assert!(dropped >= 499, "{dropped}");
    // A flush gives up at its limit on a stalled stream.
    let started = Instant::now();
    assert!(!lines.flush(Duration::from_millis(200)));
    assert!(started.elapsed() < Duration::from_secs(2));

    stream.open();
    assert!(lines.flush(Duration::from_secs(10)), "drains once open");
    let text = String::from_utf8(stream.written()).unwrap();
    assert_eq!(text.lines().count(), kept);
    assert!(text.starts_with("line 0\n"), "in order");
    assert!(
        wait_for(Duration::from_secs(5), || REPORTED_A.load(Ordering::SeqCst)
            == dropped),
        "reported {} of {dropped}",
        REPORTED_A.load(Ordering::SeqCst)
    );
    assert_eq!(lines.dropped(), 0, "reported drops are not counted again");
}

static REPORTED_B: AtomicU64 = AtomicU64::new(0);
fn report_b(n: u64) {
    REPORTED_B.fetch_add(n, Ordering::SeqCst);
}

#[test]
fn the_queue_is_bounded_in_bytes_but_one_long_line_passes_alone() {
    let stream = Stalled::default();
    let lines = Lines::spawn("test-bytes", stream.clone(), report_b).unwrap();
    let long = vec![b'x'; QUEUE_BYTES + 10];
    // The first is taken by the thread (blocked in its write), the second waits in the queue
    // alone, the third would exceed the budget.
    assert!(lines.write_line(&long));
    assert!(wait_for(Duration::from_secs(5), || {
        lines.state.queued_bytes.load(Ordering::SeqCst) == 0
    }));
    assert!(lines.write_line(&long));
    assert!(!lines.write_line(&long));
    assert!(!lines.write_line(b"short\n"), "the budget is spent");
    assert_eq!(lines.dropped(), 2);
    stream.open();
    assert!(lines.flush(Duration::from_secs(10)));
    assert_eq!(stream.written().len(), 2 * long.len());
    assert!(lines.write_line(b"short\n"), "room again");
}

static REPORTED_C: AtomicU64 = AtomicU64::new(0);
fn report_c(n: u64) {
    REPORTED_C.fetch_add(n, Ordering::SeqCst);
}

/// A stream that fails (a closed pipe): lines are lost, nothing is reported as dropped (there
/// is nowhere to report it), and the writer keeps going.
#[test]
fn a_failing_stream_loses_lines_quietly() {
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }
    let lines = Lines::spawn("test-closed", Closed, report_c).unwrap();
    for _ in 0..100 {
        assert!(lines.write_line(b"x\n"));
        assert!(lines.flush(Duration::from_secs(5)));
    }
    assert_eq!(REPORTED_C.load(Ordering::SeqCst), 0);
}
