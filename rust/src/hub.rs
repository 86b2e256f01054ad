//! The hand-over point between tokio tasks and one asyncio event loop.
//!
//! Tasks never touch Python: a finished sample is pushed onto `queue`, and only the first
//! push of a burst writes one byte to a pipe the event loop watches (`loop.add_reader`).
//! The loop thread then drains everything at once. So a burst of N completions costs one
//! wake-up, not N `call_soon_threadsafe` calls.

use crate::decode::DecodedSample;
use crate::sample_error::SampleError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
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

pub struct Hub {
    queue: Mutex<Vec<Completion>>,
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
        // SAFETY: pipe2 writes two fds into the array we own.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for fd in fds {
            set_nonblocking_cloexec(fd)?;
        }
        Ok(Hub {
            queue: Mutex::new(Vec::new()),
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
    /// and release the pipe.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for (_, token) in self.in_flight.lock().drain() {
            token.cancel();
        }
        self.queue.lock().clear();
        // SAFETY: we own both fds and close them exactly once (guarded by `closed`).
        unsafe {
            libc::close(self.read_fd);
            libc::close(self.write_fd);
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.close();
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
    fn close_cancels_in_flight() {
        let hub = Hub::new().unwrap();
        let t = hub.register(1).unwrap();
        hub.close();
        assert!(t.is_cancelled());
        assert!(hub.register(2).is_none());
        hub.push(done(1));
        assert!(hub.take().is_empty());
    }
}
