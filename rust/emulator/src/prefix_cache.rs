//! A simulated prefix cache keyed by `prompt_cache_key`, so clients' cache locality and their
//! `usage.input_tokens_details.cached_tokens` handling are tested for real.
//!
//! Model: Sail routes requests with the same key to the same replica, whose KV cache still
//! holds the last prompt it saw under that key. A create with a known key is served
//! `common_prefix(prompt, cached prompt)` tokens from the cache (at most all but the last
//! token, which is always computed to produce the first output's logits); a create without a
//! key is never a hit. Bounded: least recently used keys are evicted beyond `max_entries`
//! keys or `max_tokens` stored tokens.
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Longest accepted key (characters), as documented for the create body.
pub const MAX_KEY_CHARS: usize = 1024;
pub const DEFAULT_MAX_ENTRIES: usize = 4096;
/// 16 M tokens (64 MiB) of stored prompts.
pub const DEFAULT_MAX_TOKENS: usize = 16 << 20;

struct Entry {
    prompt: Arc<[u32]>,
    last_used: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<Box<str>, Entry>,
    /// last_used tick -> key, oldest first.
    order: BTreeMap<u64, Box<str>>,
    tokens: usize,
    tick: u64,
}

pub struct PrefixCache {
    inner: Mutex<Lru>,
    max_entries: usize,
    max_tokens: usize,
}

impl Default for PrefixCache {
    fn default() -> Self {
        PrefixCache::new(DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TOKENS)
    }
}

impl PrefixCache {
    pub fn new(max_entries: usize, max_tokens: usize) -> PrefixCache {
        PrefixCache { inner: Mutex::new(Lru::default()), max_entries, max_tokens }
    }

    /// Serve `prompt` under `key` (scoped by `model`): the number of its tokens found in the
    /// cache; the prompt then becomes the key's cached prompt.
    pub fn serve(&self, model: &str, key: Option<&str>, prompt: &[u32]) -> u64 {
        let Some(key) = key.filter(|k| !k.is_empty()) else { return 0 };
        let scoped: Box<str> = format!("{model}\u{0}{key}").into_boxed_str();
        let mut lru = self.inner.lock();
        lru.tick += 1;
        let tick = lru.tick;
        let cached = match lru.entries.remove(&scoped) {
            Some(old) => {
                lru.order.remove(&old.last_used);
                lru.tokens -= old.prompt.len();
                let common = old.prompt.iter().zip(prompt).take_while(|(a, b)| a == b).count();
                common.min(prompt.len().saturating_sub(1)) as u64
            }
            None => 0,
        };
        if prompt.len() <= self.max_tokens && self.max_entries > 0 {
            while lru.entries.len() >= self.max_entries || lru.tokens + prompt.len() > self.max_tokens {
                let Some((_, oldest)) = lru.order.pop_first() else { break };
                if let Some(e) = lru.entries.remove(&oldest) {
                    lru.tokens -= e.prompt.len();
                }
            }
            lru.tokens += prompt.len();
            lru.order.insert(tick, scoped.clone());
            lru.entries.insert(scoped, Entry { prompt: prompt.into(), last_used: tick });
        }
        cached
    }

    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_hits_after_its_first_sample() {
        let c = PrefixCache::default();
        let p: Vec<u32> = (0..100).collect();
        assert_eq!(c.serve("m", Some("g"), &p), 0, "the first sample fills the cache");
        for _ in 0..7 {
            assert_eq!(c.serve("m", Some("g"), &p), 99, "all but the last token");
        }
        assert_eq!(c.serve("other-model", Some("g"), &p), 0, "keys are scoped by model");
    }

    #[test]
    fn no_key_no_hit_and_partial_prefixes() {
        let c = PrefixCache::default();
        let p: Vec<u32> = (0..50).collect();
        assert_eq!(c.serve("m", None, &p), 0);
        assert_eq!(c.serve("m", None, &p), 0);
        assert_eq!(c.serve("m", Some(""), &p), 0);
        assert!(c.is_empty());
        c.serve("m", Some("conv"), &p);
        let mut turn2 = p.clone();
        turn2.extend([900, 901]);
        assert_eq!(c.serve("m", Some("conv"), &turn2), 50, "the second turn reuses the first");
        let mut diverged = p[..20].to_vec();
        diverged.push(7);
        assert_eq!(c.serve("m", Some("conv"), &diverged), 20);
        assert_eq!(c.serve("m", Some("other"), &p), 0, "another key, another replica");
    }

    #[test]
    fn bounded_lru() {
        let c = PrefixCache::new(2, 1000);
        c.serve("m", Some("a"), &[1, 2, 3]);
        c.serve("m", Some("b"), &[1, 2, 3]);
        assert_eq!(c.serve("m", Some("a"), &[1, 2, 3]), 2, "touches a: b is now the oldest");
        c.serve("m", Some("c"), &[1, 2, 3]);
        assert_eq!(c.len(), 2);
        assert_eq!(c.serve("m", Some("b"), &[1, 2, 3]), 0, "b was evicted");
        // Token budget: a prompt larger than the whole budget is served but never stored.
        let small = PrefixCache::new(100, 10);
        small.serve("m", Some("x"), &[1; 6]);
        small.serve("m", Some("y"), &[2; 6]);
        assert_eq!(small.len(), 1, "x evicted to make room for y");
        assert_eq!(small.serve("m", Some("z"), &[3; 11]), 0);
        assert_eq!(small.serve("m", Some("z"), &[3; 11]), 0);
        assert_eq!(small.serve("m", Some("y"), &[2; 6]), 5);
    }
}
