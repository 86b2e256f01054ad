//! Process-wide token totals per completion window, as servers report them (`usage`):
//! prompt tokens, the part of them served from a prefix cache, and sampled tokens.

use crate::decode::Usage;
use parking_lot::Mutex;

/// The label of samples sent without a completion window (the `/completions` protocol).
const NO_WINDOW: &str = "completions";

#[derive(Default)]
pub struct UsageTotals {
    /// (window, [input, cached, output]); a handful of windows, so a short list.
    by_window: Mutex<Vec<(Box<str>, [u64; 3])>>,
}

impl UsageTotals {
    /// Count one finished sample's usage under `window`.
    pub fn add(&self, window: &str, usage: &Usage) {
        let window = if window.is_empty() { NO_WINDOW } else { window };
        let mut totals = self.by_window.lock();
        let row = match totals.iter().position(|(w, _)| &**w == window) {
            Some(i) => &mut totals[i].1,
            None => {
                totals.push((window.into(), [0; 3]));
                &mut totals.last_mut().expect("just pushed").1
            }
        };
        for (total, n) in row.iter_mut().zip([usage.input_tokens, usage.cached_tokens, usage.output_tokens]) {
            *total = total.saturating_add(n);
        }
    }

    /// `usage.{window}.input_tokens`, `.cached_tokens`, `.output_tokens` for every window seen.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let totals = self.by_window.lock();
        let mut out = Vec::with_capacity(totals.len() * 3);
        for (window, [input, cached, output]) in totals.iter() {
            out.push((format!("usage.{window}.input_tokens"), *input));
            out.push((format!("usage.{window}.cached_tokens"), *cached));
            out.push((format!("usage.{window}.output_tokens"), *output));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_per_window() {
        let t = UsageTotals::default();
        assert!(t.snapshot().is_empty());
        t.add("priority", &Usage { input_tokens: 10, output_tokens: 2, cached_tokens: 4 });
        t.add("priority", &Usage { input_tokens: 5, output_tokens: 1, cached_tokens: 0 });
        t.add("", &Usage { input_tokens: 3, output_tokens: 3, cached_tokens: 3 });
        t.add("flex", &Usage { input_tokens: u64::MAX, output_tokens: 0, cached_tokens: 0 });
        t.add("flex", &Usage { input_tokens: 1, output_tokens: 0, cached_tokens: 0 });
        let snap: std::collections::HashMap<String, u64> = t.snapshot().into_iter().collect();
        assert_eq!(snap["usage.priority.input_tokens"], 15);
        assert_eq!(snap["usage.priority.cached_tokens"], 4);
        assert_eq!(snap["usage.priority.output_tokens"], 3);
        assert_eq!(snap["usage.completions.cached_tokens"], 3);
        assert_eq!(snap["usage.flex.input_tokens"], u64::MAX, "saturates, never wraps");
        assert_eq!(snap.len(), 9);
    }
}
