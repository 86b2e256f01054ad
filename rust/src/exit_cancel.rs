//! Exit without orphans: the samples a process abandons when it exits are cancelled on the
//! server, best effort and bounded in time.
//!
//! Every unscoped Responses sample registers its cancel token here for as long as its task
//! runs, and every best-effort server cancel counts itself while it is being sent. At exit
//! (`cancel_all_and_wait`, called from Python's atexit hook and SIGTERM handler) all
//! registered tokens are cancelled (each sample task then sends its server cancel) and the
//! caller waits, at most `limit`, until the tasks have ended and their cancels are sent.
//! Scoped samples (an explicit idempotency key) never register: they are left running for a
//! restarted process to re-attach to.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Registry {
    /// The process these entries belong to: a forked child starts with an empty registry.
    pid: u32,
    next: u64,
    samples: BTreeMap<u64, CancellationToken>,
    /// Server cancels being sent right now.
    cancels_in_progress: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { pid: 0, next: 0, samples: BTreeMap::new(), cancels_in_progress: 0 });

/// Samples cancelled by `cancel_all_and_wait` (for engine_metrics and tests).
pub static EXIT_CANCELLED: AtomicU64 = AtomicU64::new(0);

fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut r = REGISTRY.lock();
    let pid = std::process::id();
    if r.pid != pid {
        // Inherited through fork: those tasks do not exist here.
        *r = Registry { pid, next: 0, samples: BTreeMap::new(), cancels_in_progress: 0 };
    }
    f(&mut r)
}

/// Keeps one sample registered while it runs.
pub struct SampleGuard(u64);

impl Drop for SampleGuard {
    fn drop(&mut self) {
        with_registry(|r| r.samples.remove(&self.0));
    }
}

/// Register a running sample; it is cancelled at exit unless it ends first.
pub fn track_sample(token: &CancellationToken) -> SampleGuard {
    with_registry(|r| {
        r.next += 1;
        r.samples.insert(r.next, token.clone());
        SampleGuard(r.next)
    })
}

/// Counts one server cancel as in progress until dropped.
pub struct CancelGuard(());

impl Drop for CancelGuard {
    fn drop(&mut self) {
        with_registry(|r| r.cancels_in_progress = r.cancels_in_progress.saturating_sub(1));
    }
}

pub fn track_server_cancel() -> CancelGuard {
    with_registry(|r| r.cancels_in_progress += 1);
    CancelGuard(())
}

/// Cancel every registered sample, then wait (at most `limit`) until their tasks ended and
/// every server cancel was sent. Returns how many samples were cancelled.
pub fn cancel_all_and_wait(limit: Duration) -> usize {
    let tokens: Vec<CancellationToken> = with_registry(|r| r.samples.values().cloned().collect());
    for t in &tokens {
        t.cancel();
    }
    EXIT_CANCELLED.fetch_add(tokens.len() as u64, Ordering::Relaxed);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if with_registry(|r| r.samples.is_empty() && r.cancels_in_progress == 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tokens.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the registry is process-wide, so parallel tests would see each other's samples.
    #[test]
    fn waits_for_samples_and_their_cancels_but_never_past_the_limit() {
        let token = CancellationToken::new();
        let guard = track_sample(&token);
        let watcher = token.clone();
        let worker = std::thread::spawn(move || {
            while !watcher.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let cancel = track_server_cancel();
            drop(guard);
            std::thread::sleep(Duration::from_millis(20));
            drop(cancel);
        });
        assert_eq!(cancel_all_and_wait(Duration::from_secs(30)), 1);
        assert!(token.is_cancelled());
        assert!(with_registry(|r| r.samples.is_empty() && r.cancels_in_progress == 0));
        worker.join().unwrap();

        let stuck = CancellationToken::new();
        let _never_ends = track_sample(&stuck);
        let started = Instant::now();
        assert_eq!(cancel_all_and_wait(Duration::from_millis(50)), 1);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(stuck.is_cancelled());
    }
}
