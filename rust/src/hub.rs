//! The hand-over point between tokio tasks and one asyncio event loop.
//!
//! Tasks never touch Python: a finished sample is pushed onto `queue`, and only the first
//! push of a burst writes one byte to a pipe the event loop watches (`loop.add_reader`).
//! The loop thread then drains everything at once. So a burst of N completions costs one
//! wake-up, not N `call_soon_threadsafe` calls.
//!
//! Log events (a retry, a server-side cancel, a failed response) travel the same way, but
//! only while the loop's `sail_lite` logger would emit them: Python sets `log_level`, and a
//! task checks it (one atomic load) before it even formats an event.

use crate::decode::DecodedSample;
use crate::sample_error::SampleError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use tokio_util::sync::CancellationToken;

pub struct SampleOutput {
    pub sample: DecodedSample,
    pub response_id: Option<String>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SampleStats {
    pub http_requests: u32,
    pub retries: u32,
    pub polls: u32,
}

pub struct Completion {
    pub request_id: u64,
    pub result: Result<SampleOutput, SampleError>,
    pub stats: SampleStats,
}

/// `logging.DEBUG` / `logging.INFO` / `logging.WARNING`: the levels engine events are logged at.
pub const DEBUG: u8 = 10;
pub const INFO: u8 = 20;
pub const WARNING: u8 = 30;
/// Above every `logging` level: no events are queued (the default until Python says otherwise).
pub const LOGGING_OFF: u8 = u8::MAX;

/// Something worth a log line, produced by a sample's task.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub level: u8,
    pub kind: &'static str,
    pub request_id: u64,
    pub message: String,
    pub status: Option<u16>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub delay: Option<f64>,
    pub response_id: Option<String>,
}

impl Event {
    pub fn new(level: u8, kind: &'static str, request_id: u64, message: String) -> Event {
        Event { level, kind, request_id, message, status: None, attempt: 0, max_attempts: 0, delay: None, response_id: None }
    }
}

pub struct Hub {
    queue: Mutex<Vec<Completion>>,
    events: Mutex<Vec<Event>>,
    log_level: AtomicU8,
    wake_pending: AtomicBool,
    read_fd: RawFd,
    write_fd: RawFd,
    closed: AtomicBool,
    /// Cancel tokens of the samples still running for this loop.
    in_flight: Mutex<HashMap<u64, CancellationToken>>,
}

impl Hub {
    pub fn new() -> std::io::Result<Hub> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe writes two fds into the array we own.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for fd in fds {
            set_nonblocking_cloexec(fd)?;
        }
        Ok(Hub {
            queue: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            log_level: AtomicU8::new(LOGGING_OFF),
            wake_pending: AtomicBool::new(false),
            read_fd: fds[0],
            write_fd: fds[1],
            closed: AtomicBool::new(false),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    pub fn read_fd(&self) -> RawFd {
        self.read_fd
    }

    /// Register a new sample; returns the token its task watches. `None` if the hub is closed.
    pub fn register(&self, request_id: u64) -> Option<CancellationToken> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let token = CancellationToken::new();
        self.in_flight.lock().insert(request_id, token.clone());
        Some(token)
    }

    pub fn cancel(&self, request_id: u64) {
        if let Some(token) = self.in_flight.lock().remove(&request_id) {
            token.cancel();
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().len()
    }

    /// Called from tokio tasks.
    pub fn push(&self, completion: Completion) {
        self.in_flight.lock().remove(&completion.request_id);
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        self.queue.lock().push(completion);
        self.wake();
    }

    /// Queue events at `level` and above; `level` is a Python `logging` level (clamped).
    pub fn set_log_level(&self, level: i64) {
        self.log_level.store(level.clamp(1, LOGGING_OFF as i64) as u8, Ordering::Relaxed);
    }

    /// Whether an event at `level` would be logged: check before building one.
    #[inline]
    pub fn logs(&self, level: u8) -> bool {
        level >= self.log_level.load(Ordering::Relaxed)
    }

    /// Called from tokio tasks; dropped unless `logs(event.level)`.
    pub fn push_event(&self, event: Event) {
        if !self.logs(event.level) || self.closed.load(Ordering::Acquire) {
            return;
        }
        self.events.lock().push(event);
        self.wake();
    }

    /// The events queued since the last call (on the event-loop thread, after `take`).
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock())
    }

    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let byte = 1u8;
            // SAFETY: writing one byte from a live buffer to our own fd. A full pipe (EAGAIN)
            // already holds a pending wake-up, so the result can be ignored.
            unsafe { libc::write(self.write_fd, &byte as *const u8 as *const libc::c_void, 1) };
        }
    }

    /// Called on the event-loop thread when the pipe is readable.
    pub fn take(&self) -> Vec<Completion> {
        let mut sink = [0u8; 256];
        // SAFETY: reading into a stack buffer we own; the fd is non-blocking.
        while unsafe { libc::read(self.read_fd, sink.as_mut_ptr() as *mut libc::c_void, sink.len()) } > 0 {}
        // Clear the flag before taking: a push racing with us then writes a fresh byte.
        self.wake_pending.store(false, Ordering::Release);
        std::mem::take(&mut *self.queue.lock())
    }

    /// The loop is gone: cancel everything still running (so the server stops working on it)
    /// and drop what is queued. The pipe stays open until `Drop`: a task may be inside `push`
    /// right now, and closing (then the OS reusing) its fd under it would write a byte into
    /// some unrelated file.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for (_, token) in self.in_flight.lock().drain() {
            token.cancel();
        }
        self.queue.lock().clear();
        self.events.lock().clear();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.close();
        // SAFETY: we own both fds, and `drop` runs once, when no other reference (so no
        // concurrent `push` or `take`) exists.
        unsafe {
            libc::close(self.read_fd);
            libc::close(self.write_fd);
        }
    }
}

fn set_nonblocking_cloexec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd we just created.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fdflags = libc::fcntl(fd, libc::F_GETFD);
        if fdflags < 0 || libc::fcntl(fd, libc::F_SETFD, fdflags | libc::FD_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::StopReason;

    fn done(id: u64) -> Completion {
        Completion {
            request_id: id,
            result: Ok(SampleOutput {
                sample: DecodedSample { tokens: vec![1], logprobs: None, stop_reason: StopReason::Stop, usage: Default::default() },
                response_id: None,
            }),
            stats: SampleStats::default(),
        }
    }

    fn readable(fd: RawFd) -> bool {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn one_wakeup_per_burst() {
        let hub = Hub::new().unwrap();
        assert!(!readable(hub.read_fd()));
        for i in 0..1000 {
            hub.register(i).unwrap();
            hub.push(done(i));
        }
        assert!(readable(hub.read_fd()));
        let got = hub.take();
        assert_eq!(got.len(), 1000);
        assert!(!readable(hub.read_fd()), "the burst left exactly one byte, now drained");
        assert_eq!(hub.in_flight(), 0);
        hub.push(done(5));
        assert!(readable(hub.read_fd()), "the next burst wakes again");
    }

    #[test]
    fn events_are_queued_only_at_enabled_levels() {
        let hub = Hub::new().unwrap();
        assert!(!hub.logs(INFO), "off until Python sets a level");
        hub.push_event(Event::new(INFO, "retry", 1, "x".into()));
        assert!(hub.take_events().is_empty() && !readable(hub.read_fd()));
        hub.set_log_level(INFO as i64);
        assert!(hub.logs(INFO) && !hub.logs(DEBUG));
        hub.push_event(Event::new(DEBUG, "server_cancel", 1, "dropped".into()));
        hub.push_event(Event::new(INFO, "retry", 1, "kept".into()));
        assert!(readable(hub.read_fd()), "an event wakes the loop like a completion");
        let events = hub.take_events();
        assert_eq!(events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["kept"]);
        hub.set_log_level(0);
        assert!(hub.logs(DEBUG));
    }

    #[test]
    fn close_cancels_in_flight() {
        let hub = Hub::new().unwrap();
        let t = hub.register(1).unwrap();
        hub.close();
        assert!(t.is_cancelled());
        assert!(hub.register(2).is_none());
        hub.push(done(1));
        assert!(hub.take().is_empty());
    }

    /// The inode behind `fd`, if it is open (other tests may reuse the number once closed).
    fn inode(fd: RawFd) -> Option<u64> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino as u64)
    }

    /// Regression: `close` used to close the pipe while a task could still be in `push`
    /// (the OS could then hand the fd number to another file). Only `Drop` closes it now.
    #[test]
    fn the_pipe_outlives_close_and_is_released_on_drop() {
        let hub = std::sync::Arc::new(Hub::new().unwrap());
        let (r, w) = (hub.read_fd(), hub.write_fd);
        let (ri, wi) = (inode(r), inode(w));
        assert!(ri.is_some() && wi.is_some());
        hub.close();
        assert!(inode(r) == ri && inode(w) == wi, "close() must not release the fds");
        let pusher = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    hub.push(done(i));
                }
            })
        };
        pusher.join().unwrap();
        drop(hub);
        assert!(inode(r) != ri && inode(w) != wi, "drop must release the fds");
    }
}
