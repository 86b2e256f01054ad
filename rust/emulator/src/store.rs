//! In-memory response store: sharded maps (one short `parking_lot` lock per shard, never held across
//! an await) for responses and for idempotency reservations, plus retention-based expiry.
use crate::stats::{inc, Stats};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    Queued,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::InProgress)
    }
}

/// The immutable part of a response, shared by every rendering of it.
#[derive(Debug)]
pub struct Head {
    pub id: u64,
    pub id_str: Box<str>,
    pub created_at: u64,
    pub model: Arc<str>,
    pub background: bool,
    /// Pre-serialised `metadata` object (signed URLs redacted).
    pub metadata_json: Box<str>,
    pub max_output_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
}

struct Entry {
    status: Status,
    head: Arc<Head>,
    /// Pre-serialised body once completed/failed (cancelled ones render on demand).
    body: Option<Bytes>,
    finished_at: Option<Instant>,
    idem_key: Option<Box<str>>,
    created: Instant,
    /// A poll has already been answered with the finished response.
    seen_final: bool,
    /// When (since `created`) each poll before the finished one came, in seconds.
    pending_polls: Vec<f32>,
}

/// What a reader gets: either the finished body or enough to render the current state.
pub enum View {
    Body(Bytes),
    Live(Status, Arc<Head>),
}

struct IdemRec {
    body_hash: u64,
    resp_id: u64,
    samples: u32,
}

pub enum Reserve {
    New,
    Replay(u64),
    Conflict,
}

type Shard<K, V> = Mutex<HashMap<K, V>>;

/// Polls recorded per response for `polls_per_response` (more are counted in its last bin).
const MAX_RECORDED_POLLS: usize = 256;

pub struct Store {
    shards: Box<[Shard<u64, Entry>]>,
    idem: Box<[Shard<Box<str>, IdemRec>]>,
    hasher: RandomState,
    stats: Arc<Stats>,
}

impl Store {
    pub fn new(stats: Arc<Stats>) -> Store {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            idem: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            stats,
        }
    }

    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, Entry>> {
        &self.shards[(id as usize) % SHARDS]
    }

    fn idem_shard(&self, key: &str) -> &Mutex<HashMap<Box<str>, IdemRec>> {
        &self.idem[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    pub fn hash_body(&self, body: &[u8]) -> u64 {
        self.hasher.hash_one(body)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Insert a new queued response (not yet counted as started).
    pub fn insert(&self, head: Arc<Head>, idem_key: Option<&str>) {
        let e = Entry {
            status: Status::Queued,
            head: head.clone(),
            body: None,
            finished_at: None,
            idem_key: idem_key.map(Into::into),
            created: Instant::now(),
            seen_final: false,
            pending_polls: Vec::new(),
        };
        self.shard(head.id).lock().insert(head.id, e);
    }

    /// Mark a freshly inserted response as started (gauges), after its key reservation succeeded.
    pub fn started(&self) {
        self.stats.in_flight.fetch_add(1, Relaxed);
        self.stats.queued.fetch_add(1, Relaxed);
        inc(&self.stats.creates);
    }

    /// Drop an inserted-but-never-started response (lost an idempotency race).
    pub fn discard(&self, id: u64) {
        self.shard(id).lock().remove(&id);
    }

    /// Atomically reserve an idempotency key for response `id`.
    pub fn reserve(&self, key: &str, body_hash: u64, id: u64) -> Reserve {
        let mut m = self.idem_shard(key).lock();
        match m.get_mut(key) {
            Some(rec) if rec.body_hash != body_hash => Reserve::Conflict,
            Some(rec) => Reserve::Replay(rec.resp_id),
            None => {
                m.insert(key.into(), IdemRec { body_hash, resp_id: id, samples: 1 });
                Reserve::New
            }
        }
    }

    /// Free a key whose response is gone.
    pub fn unreserve(&self, key: &str, resp_id: u64) {
        let mut m = self.idem_shard(key).lock();
        if m.get(key).is_some_and(|r| r.resp_id == resp_id) {
            m.remove(key);
        }
    }

    /// Record that a key started another sample (only reachable through a bug; feeds the
    /// duplicate-sample detector).
    pub fn note_sample_for_key(&self, key: &str) {
        let mut m = self.idem_shard(key).lock();
        if let Some(rec) = m.get_mut(key) {
            rec.samples += 1;
            if rec.samples == 2 {
                inc(&self.stats.duplicate_samples);
            }
        }
    }

    /// Current view of a response, or None if unknown or expired.
    pub fn get(&self, id: u64, retention: Duration) -> Option<View> {
        let mut shard = self.shard(id).lock();
        let e = shard.get(&id)?;
        if let Some(t) = e.finished_at {
            if t.elapsed() >= retention {
                let e = shard.remove(&id);
                drop(shard);
                self.forget_key(e);
                inc(&self.stats.expired);
                return None;
            }
        }
        Some(match &e.body {
            Some(b) => View::Body(b.clone()),
            None => View::Live(e.status, e.head.clone()),
        })
    }

    /// A poll's view: as `get`, and the first poll to see a completed response records how late
    /// it came, as a fraction of the response's service time (created -> completed).
    pub fn get_for_poll(&self, id: u64, retention: Duration) -> Option<View> {
        {
            let mut shard = self.shard(id).lock();
            if let Some(e) = shard.get_mut(&id) {
                if let (Status::Completed, Some(done), false) = (e.status, e.finished_at, e.seen_final) {
                    e.seen_final = true;
                    let service = done.duration_since(e.created).as_secs_f64();
                    if service > 0.0 {
                        self.stats.record_poll_lateness(done.elapsed().as_secs_f64() / service, service);
                        self.stats.record_polls_of_response(&std::mem::take(&mut e.pending_polls), service);
                    }
                } else if !e.status.is_final() && e.pending_polls.len() < MAX_RECORDED_POLLS {
                    e.pending_polls.push(e.created.elapsed().as_secs_f32());
                }
            }
        }
        self.get(id, retention)
    }

    /// Queued -> in_progress. False if the response was cancelled or removed meanwhile.
    pub fn start(&self, id: u64) -> bool {
        let mut shard = self.shard(id).lock();
        match shard.get_mut(&id) {
            Some(e) if e.status == Status::Queued => {
                e.status = Status::InProgress;
                self.stats.queued.fetch_sub(1, Relaxed);
                true
            }
            _ => false,
        }
    }

    pub fn is_active(&self, id: u64) -> bool {
        matches!(self.shard(id).lock().get(&id), Some(e) if !e.status.is_final())
    }

    /// Active -> final with its rendered body. False if it was cancelled/removed meanwhile.
    pub fn finish(&self, id: u64, status: Status, body: Bytes) -> bool {
        let mut shard = self.shard(id).lock();
        match shard.get_mut(&id) {
            Some(e) if !e.status.is_final() => {
                if e.status == Status::Queued {
                    self.stats.queued.fetch_sub(1, Relaxed);
                }
                e.status = status;
                e.body = Some(body);
                e.finished_at = Some(Instant::now());
                self.stats.in_flight.fetch_sub(1, Relaxed);
                match status {
                    Status::Completed => inc(&self.stats.completions),
                    Status::Failed => inc(&self.stats.failures),
                    _ => {}
                }
                true
            }
            _ => false,
        }
    }

    /// Cancel: returns the resulting view and whether it changed anything.
    pub fn cancel(&self, id: u64, retention: Duration) -> Option<(View, bool)> {
        {
            let mut shard = self.shard(id).lock();
            if let Some(e) = shard.get_mut(&id) {
                if !e.status.is_final() {
                    if e.status == Status::Queued {
                        self.stats.queued.fetch_sub(1, Relaxed);
                    }
                    e.status = Status::Cancelled;
                    e.finished_at = Some(Instant::now());
                    self.stats.in_flight.fetch_sub(1, Relaxed);
                    return Some((View::Live(Status::Cancelled, e.head.clone()), true));
                }
            }
        }
        self.get(id, retention).map(|v| (v, false))
    }

    /// Delete a response outright (DELETE /v1/responses/{id}).
    pub fn remove(&self, id: u64) -> bool {
        let e = self.shard(id).lock().remove(&id);
        match e {
            Some(e) => {
                if !e.status.is_final() {
                    if e.status == Status::Queued {
                        self.stats.queued.fetch_sub(1, Relaxed);
                    }
                    self.stats.in_flight.fetch_sub(1, Relaxed);
                }
                self.forget_key(Some(e));
                true
            }
            None => false,
        }
    }

    fn forget_key(&self, e: Option<Entry>) {
        if let Some(key) = e.and_then(|e| e.idem_key) {
            self.idem_shard(&key).lock().remove(&key);
        }
    }

    /// Remove finished responses older than `retention`; returns how many.
    pub fn sweep(&self, retention: Duration) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut gone = Vec::new();
            {
                let mut m = shard.lock();
                m.retain(|_, e| match e.finished_at {
                    Some(t) if t.elapsed() >= retention => {
                        if let Some(k) = e.idem_key.take() {
                            gone.push(k);
                        }
                        removed += 1;
                        false
                    }
                    _ => true,
                });
            }
            for k in gone {
                self.idem_shard(&k).lock().remove(&k);
            }
        }
        self.stats.expired.fetch_add(removed as u64, Relaxed);
        removed
    }
}
