//! Fewer engine wake-ups under a steady trickle of answers.
//!
//! The engine thread sleeps whenever it has nothing to run, and each network answer or timer
//! wakes it again. Against a server that answers one request at a time (one every ~0.2 ms),
//! that is one wake-up per answer: at latency 0 against a slow Python server the engine woke
//! 1.9 times per sample and spent ~40 µs per sample more than against the Rust emulator
//! (BENCHMARKS.md). So, like a network card's interrupt coalescing: when the engine's last
//! sleep was short (answers are arriving steadily), it waits `WINDOW` before sleeping again,
//! and everything that arrived meanwhile is handled in one turn. When sleeps are long (the
//! usual case at Sail's time scales, or when idle) nothing changes: no extra wake-up, no delay.
//!
//! The cost is latency: an answer arriving while the engine is busy waits at most `WINDOW`
//! longer, against responses that take Sail seconds to minutes.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long the engine gathers answers before sleeping, when answers are arriving steadily.
const WINDOW: Duration = Duration::from_millis(1);

/// A sleep shorter than this means answers are arriving steadily.
const SHORT_SLEEP: Duration = Duration::from_millis(1);

/// Whether to gather answers for `WINDOW` before sleeping, given how long the last sleep was
/// (None: the engine has not slept yet).
fn should_gather(last_sleep: Option<Duration>) -> bool {
    last_sleep.is_some_and(|d| d < SHORT_SLEEP)
}

thread_local! {
    static SLEPT_AT: Cell<Option<Instant>> = const { Cell::new(None) };
    static LAST_SLEEP: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// The runtime's `on_thread_park` hook: the engine thread is about to sleep.
pub fn before_sleep() {
    if should_gather(LAST_SLEEP.get()) {
        std::thread::sleep(WINDOW);
    }
    SLEPT_AT.set(Some(Instant::now()));
}

/// The runtime's `on_thread_unpark` hook: the engine thread woke up.
pub fn after_wake() {
    LAST_SLEEP.set(SLEPT_AT.take().map(|at| at.elapsed()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_sleeps_make_the_engine_gather_answers() {
        assert!(!should_gather(None));
        assert!(should_gather(Some(Duration::ZERO)));
        assert!(should_gather(Some(Duration::from_micros(200))));
        assert!(!should_gather(Some(SHORT_SLEEP)));
        assert!(!should_gather(Some(Duration::from_secs(3))));
    }

    #[test]
    fn the_hooks_measure_each_sleep() {
        std::thread::spawn(|| {
            // First sleep: nothing known yet, so no gathering; the sleep itself is measured.
            before_sleep();
            std::thread::sleep(Duration::from_millis(5));
            after_wake();
            let first = LAST_SLEEP.get().expect("measured");
            assert!(first >= Duration::from_millis(5), "{first:?}");
            // A wake-up without a recorded sleep start leaves nothing behind.
            after_wake();
            assert_eq!(LAST_SLEEP.get(), None);
        })
        .join()
        .unwrap();
    }
}
