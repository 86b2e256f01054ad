//! When to poll a background response: the first poll soon after creation, then intervals
//! growing geometrically up to a cap chosen from the completion window's time scale.
//!
//! With growth factor g, a response finishing at time T is seen at most (g - 1) * T later and
//! typically about (sqrt(g) - 1) * T later, with O(log T) polls: g = 1.08 keeps the median
//! overshoot near 4% of the run time. A floor on the interval keeps short runs from being
//! polled every few milliseconds (an absolute delay of a few tens of ms is fine there), and the
//! cap stops long windows from polling too rarely (priority) or too often (flex).

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PollSchedule {
    pub first: Duration,
    pub growth: f64,
    pub floor: Duration,
    pub cap: Duration,
}

impl PollSchedule {
    /// The default schedule for a completion window; unknown windows get the `standard` one.
    pub fn for_window(window: &str) -> PollSchedule {
        let (first_ms, growth, floor_ms, cap_ms) = match window {
            "asap" => (5, 1.25, 10, 1_000),
            "priority" | "balanced" | "15m" => (20, 1.08, 40, 3_000),
            "standard" => (100, 1.12, 200, 15_000),
            "flex" | "24h" => (500, 1.25, 1_000, 60_000),
            _ => (100, 1.12, 200, 15_000),
        };
        PollSchedule {
            first: Duration::from_millis(first_ms),
            growth,
            floor: Duration::from_millis(floor_ms),
            cap: Duration::from_millis(cap_ms),
        }
    }

    /// The wait before poll number `n` (0-based), measured from the previous poll's start.
    /// Expressed through elapsed time so the schedule holds even when polls themselves are slow.
    pub fn next_delay(&self, elapsed_since_create: Duration) -> Duration {
        if elapsed_since_create < self.first {
            return self.first - elapsed_since_create;
        }
        let grown = Duration::from_secs_f64(elapsed_since_create.as_secs_f64() * (self.growth - 1.0));
        grown.max(self.floor).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulate polling a response that completes at `done`; return (polls, overshoot).
    fn simulate(s: &PollSchedule, done: Duration) -> (u32, Duration) {
        let mut t = Duration::ZERO;
        let mut polls = 0;
        loop {
            t += s.next_delay(t);
            polls += 1;
            if t >= done {
                return (polls, t - done);
            }
        }
    }

    #[test]
    fn priority_overshoot_is_a_small_fraction_with_log_polls() {
        let s = PollSchedule::for_window("priority");
        for secs in [0.5f64, 5.0, 60.0] {
            let done = Duration::from_secs_f64(secs);
            let (polls, over) = simulate(&s, done);
            let bound = (secs * 0.08).max(0.04).min(3.0);
            assert!(over.as_secs_f64() <= bound + 1e-9, "{secs}s: overshoot {over:?}");
            assert!(polls < 130, "{secs}s: {polls} polls");
        }
        // O(log): ten times longer costs a bounded number of extra polls before the cap.
        let (p_half, _) = simulate(&s, Duration::from_millis(500));
        assert!(p_half <= 15, "short runs are not hammered: {p_half} polls");
        let (p1, _) = simulate(&s, Duration::from_secs(1));
        let (p10, _) = simulate(&s, Duration::from_secs(10));
        assert!(p10 - p1 < 40, "{p1} -> {p10}");
    }

    #[test]
    fn flex_does_not_hammer() {
        let s = PollSchedule::for_window("flex");
        let (polls, _) = simulate(&s, Duration::from_secs(600));
        assert!(polls < 40, "{polls}");
    }

    #[test]
    fn first_poll_is_soon() {
        let s = PollSchedule::for_window("priority");
        assert_eq!(s.next_delay(Duration::ZERO), Duration::from_millis(20));
        assert!(s.next_delay(Duration::from_secs(3600)) <= s.cap);
        assert_eq!(PollSchedule::for_window("renamed-window"), PollSchedule::for_window("standard"));
    }
}
