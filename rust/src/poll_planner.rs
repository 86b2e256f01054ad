//! When to poll a background response, planned from the service times learned so far.
//!
//! A response's service time (create answered -> completed) is learned online, per
//! (origin, model, completion window) and per window process-wide (what a new origin or model
//! starts from), as a decaying log-spaced histogram. It decays by when each sample started (in
//! completions learned before it), not by when it finished: a cohort started together finishes
//! in order of its service times, and weighing its last completions most would learn its tail
//! as its whole. The fallback is never shared across windows: a `priority` sample must not plan
//! from `flex`'s hours.
//! Observations are interval-censored: a response finished somewhere between the last poll
//! that found it pending and the first that found it done, so each one spreads its weight over
//! that interval. A wide interval (the first look, or polls a cold prior spaced far apart) is
//! vague: it counts only until narrow ones arrive, or its mass spread over stretches where
//! nothing finishes would cost every later sample polls there.
//! Samples still pending are right-censored observations: warm plans read a Kaplan-Meier
//! estimate, where what finishes by some time is weighed against every sample seen pending
//! past it. A cohort larger than what was learned before it would otherwise learn its own
//! first (fastest) completions as its whole distribution, and its later samples poll early.
//! Each sample asks for its next poll at every wake-up, so a pending sample re-plans as soon
//! as new completions move the estimate (no broadcast needed).
//!
//! The plan from elapsed time `t` (since the create was answered) is
//!
//! ```text
//! next = max(t * (1 + 1.8 * overhead),  Q(F(t) + SKIP_MASS),  t + MIN_INTERVAL)
//! ```
//!
//! - Where responses finish, polls are geometric with ratio `1 + 1.8 * overhead`: a response
//!   finishing at `s` is seen at most `1.8 * overhead * s` late, typically `0.9 * overhead * s`.
//! - Where almost nothing finishes (less than `SKIP_MASS` of the distribution), one poll jumps
//!   to where finishing starts again: no polls before the body of the distribution or between
//!   the modes of a bimodal one.
//! - Beyond the learned tail (`F(t) + SKIP_MASS > 1`), the geometric term alone remains, so an
//!   outlier is still seen with bounded relative lateness.
//!
//! Cold (fewer than `WARM_OBSERVATIONS` completions for the key and for its window), the estimate
//! is a prior at the window's documented scale (priority ~1 min, standard ~5 min, ...) with a
//! thin log-uniform head down to 1/64 of it, and the ratio is `1 + 3.6 * overhead`; the prior's
//! weight quarters with every completion, so a compressed time scale (the emulator in tests) is
//! picked up within a few completions. A scout's intervals are spread over 0.5x-1.5x per
//! (sample, poll): a cohort created together (all cold, all planning the same times) would
//! otherwise poll in lockstep and see nothing finish until the whole cohort is late together.
//! Followers are not spread: the scouts' first completions re-plan them anyway, and spread they
//! paid more polls (a cold cohort of 1,000 at 15 s: 4.0 -> 3.6 polls per sample unspread, 50,000
//! at 30 s: 5.4 -> 5.0, lateness unchanged, in simulation).
//!
//! Only the first `MAX_SCOUTS` cold samples of a key probe the prior's head (polls seconds in,
//! for a minute's scale): what they find serves the whole cohort, which would otherwise pay
//! those polls once per sample. The others (followers) plan from where the prior's body starts,
//! and every completion learned while the key is cold wakes the cold samples waiting
//! (`PollPlanner::cold_news`) to re-plan at once, so a much shorter real scale costs followers
//! no lateness beyond the scouts' own.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The lateness target used when the caller gives none.
pub const DEFAULT_POLL_OVERHEAD: f64 = 0.05;
/// Probability mass below which a stretch of time is not worth a poll.
const SKIP_MASS: f64 = 0.005;
/// Never poll the same response twice within this (latency-0 servers finish in microseconds).
const MIN_INTERVAL: f64 = 0.002;
/// Poll spacing in units of `overhead`: warm, a response is seen at most 1.8x the target late
/// and at about 0.9x it on average; cold, where the prior is only a guess, a wider spacing
/// keeps the first cohort's polls few.
const WARM_RATIO: f64 = 1.8;
const COLD_RATIO: f64 = 3.6;
/// Completions needed before the learned histogram replaces the prior.
const WARM_OBSERVATIONS: u64 = 3;
/// The prior's thin head (down to 1/64 of the window's scale), there so a much shorter real
/// scale is found; only scouts poll it.
const PRIOR_HEAD_MASS: f64 = 0.02;
/// Cold samples of one key scouting at once; the others follow (see `Knowledge`). Enough to
/// probe a prior 20x too long densely (a cohort of 1,000 at 3 s on the 60 s prior, in
/// simulation); fewer found its first completions late (p99 24% at 128). A larger cohort leaves
/// the head to them: 50,000 created over 10 s at 30 s poll 6.6 times each instead of 9.0.
pub const MAX_SCOUTS: usize = 256;
/// A completion weighs this much more for each completion learned before its sample started: an
/// effective memory of about 128 completions, so a shifting distribution is followed.
const DECAY_GROWTH: f64 = 128.0 / 127.0;
const VAGUE_FADE: f64 = 0.8;

/// Histogram geometry: bins of ratio 2^(1/24) (~2.9%) from 1 ms to 2^30 ms (~12 days).
const BINS_PER_OCTAVE: f64 = 24.0;
const MIN_SECONDS: f64 = 0.001;
const BINS: usize = 30 * 24;

fn bin_of(seconds: f64) -> f64 {
    ((seconds.max(MIN_SECONDS) / MIN_SECONDS).log2() * BINS_PER_OCTAVE).clamp(0.0, BINS as f64 - 1e-9)
}

/// The mass of a cumulative histogram up to `seconds`, log-interpolated within its bin.
fn mass_up_to(cumulative: &[f64], seconds: f64) -> f64 {
    let b = bin_of(seconds);
    let i = b as usize;
    let below = if i == 0 { 0.0 } else { cumulative[i - 1] };
    below + (cumulative[i] - below) * (b - i as f64)
}

fn bin_edge(bin: f64) -> f64 {
    MIN_SECONDS * (bin / BINS_PER_OCTAVE).exp2()
}

/// A window's documented time scale (median seconds) for the cold-start prior.
pub fn window_scale_seconds(window: &str) -> f64 {
    match window {
        "asap" => 2.0,
        "priority" | "balanced" => 60.0,
        "standard" => 300.0,
        "15m" => 600.0,
        "flex" | "24h" => 1800.0,
        _ => 300.0,
    }
}

/// A decaying histogram of service times plus a fading prior.
#[derive(Clone, Debug)]
pub struct ServiceTimeModel {
    mass: Vec<f64>,
    /// Vague observations (found done at the first look, or polled across a wide interval) say
    /// little about where they finished; they count (scaled by `vague_factor`) until precise
    /// ones (a narrow interval) tell more, and each of those shrinks them by VAGUE_FADE.
    /// Otherwise their guessed spread would linger below the real distribution and cost polls there.
    vague: Vec<f64>,
    vague_factor: f64,
    /// The prior's shape (sums to 1), weighted by `prior_weight` observations.
    prior: Vec<f64>,
    prior_weight: f64,
    /// Samples still pending, by the bin of their last pending poll, each weighed as its
    /// completion will be: right-censored observations. Without them a large cohort's first
    /// completions, its fastest members, would be learned as its whole distribution (its later
    /// samples then polled early: 10,000 created over 5 s paid 5.1 polls each instead of 4.1,
    /// in simulation). With them the estimate is Kaplan-Meier's: what finishes in a bin is
    /// weighed against everything still at risk there, pending samples included.
    censored: Vec<f64>,
    pending: u64,
    /// Pending samples moved since the last rebuild: a few are not worth one (see `refresh`).
    censored_moves: u64,
    /// Weight of the next observation (grows to implement decay).
    increment: f64,
    observations: u64,
    /// The estimates (see `Basis`), rebuilt lazily.
    with_prior: Distribution,
    learned: Distribution,
    dirty: bool,
}

impl ServiceTimeModel {
    /// A model knowing nothing but the window's time scale.
    pub fn with_prior(scale_seconds: f64) -> ServiceTimeModel {
        let mut prior = vec![0.0; BINS];
        let (median, sigma) = (scale_seconds.max(MIN_SECONDS), 0.4);
        // The lognormal body around the documented scale; the log-uniform head down to 1/64.
        let head_lo = bin_of(median / 64.0);
        let head_hi = bin_of(median);
        for (i, p) in prior.iter_mut().enumerate() {
            let mid = bin_edge(i as f64 + 0.5);
            let z = (mid / median).ln() / sigma;
            let width = (2f64.ln()) / BINS_PER_OCTAVE;
            *p = (1.0 - PRIOR_HEAD_MASS) * (-0.5 * z * z).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt()) * width;
            if (i as f64) >= head_lo.floor() && (i as f64) < head_hi.ceil() {
                *p += PRIOR_HEAD_MASS / (head_hi.ceil() - head_lo.floor()).max(1.0);
            }
        }
        let total: f64 = prior.iter().sum();
        prior.iter_mut().for_each(|p| *p /= total);
        ServiceTimeModel {
            mass: vec![0.0; BINS],
            vague: vec![0.0; BINS],
            vague_factor: 1.0,
            prior,
            prior_weight: 1.0,
            censored: vec![0.0; BINS],
            pending: 0,
            censored_moves: 0,
            increment: 1.0,
            observations: 0,
            with_prior: Distribution::new(),
            learned: Distribution::new(),
            dirty: true,
        }
    }

    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// A response finished after `lo` seconds and by `hi` seconds (lo may be 0: unknown), polled
    /// with the default overhead, by a sample started just now.
    pub fn observe(&mut self, lo: f64, hi: f64) {
        self.observe_polled(lo, hi, DEFAULT_POLL_OVERHEAD, self.observations);
    }

    /// As `observe`, for polls planned with `overhead`. Only an interval at most two cold poll
    /// steps wide is precise; a wider one (the first look, or a poll that jumped over a stretch
    /// the estimate thought empty, as the polls of a cold cohort do) is vague: spread evenly over
    /// its interval it would put mass where nothing finishes, which every later sample would pay
    /// for with polls there, so it fades as precise ones arrive.
    ///
    /// `started_at` is `observations()` when the sample started: a completion weighs as of then,
    /// so a cohort started together weighs the same whatever order it finishes in. Weighed by
    /// completion order instead, a cohort larger than the memory counted its slowest (last)
    /// members most, and the next cohort's first polls came after its early tail (p99 lateness
    /// 30% at 50,000 in flight after a warm-up of 512 started at once, in simulation and bench).
    pub fn observe_polled(&mut self, lo: f64, hi: f64, overhead: f64, started_at: u64) {
        if !(hi.is_finite() && hi >= 0.0) {
            return;
        }
        let hi = hi.max(MIN_SECONDS);
        let seen_pending = lo.is_finite() && lo > 0.0;
        // Finished at the first look: somewhere in the last three quarters of the wait is the
        // guess, so the next plan looks earlier (halving the estimate each round if need be).
        let lo = if seen_pending { lo.min(hi) } else { hi / 4.0 };
        let precise = seen_pending && hi <= lo * (1.0 + COLD_RATIO * overhead).powi(2);
        let (b_lo, b_hi) = (bin_of(lo), bin_of(hi));
        let increment = self.weight_of(started_at);
        let (target, w) = if precise {
            self.vague_factor *= VAGUE_FADE;
            if self.vague_factor < 1e-30 {
                self.vague.iter_mut().for_each(|v| *v = 0.0);
                self.vague_factor = 1.0;
            }
            (&mut self.mass, increment)
        } else {
            (&mut self.vague, increment / self.vague_factor)
        };
        if b_hi - b_lo < 1e-9 {
            target[b_hi as usize] += w;
        } else {
            // Spread uniformly in log time over [lo, hi].
            let span = b_hi - b_lo;
            let mut b = b_lo;
            while b < b_hi {
                let next = (b.floor() + 1.0).min(b_hi);
                target[b as usize] += w * (next - b) / span;
                b = next;
            }
        }
        self.observations += 1;
        self.prior_weight *= 0.25;
        self.increment *= DECAY_GROWTH;
        if self.increment > 1e100 {
            let k = 1.0 / self.increment;
            self.mass.iter_mut().chain(self.vague.iter_mut()).chain(self.censored.iter_mut()).for_each(|m| *m *= k);
            self.increment = 1.0;
        }
        self.dirty = true;
    }

    /// The weight, now, of a completion of a sample started at `started_at` observations.
    fn weight_of(&self, started_at: u64) -> f64 {
        let completions_since_start = self.observations.saturating_sub(started_at).min(1 << 20) as i32;
        self.increment * DECAY_GROWTH.powi(-completions_since_start)
    }

    /// A sample started at `started_at` observations is pending `to` seconds in (None: no longer
    /// pending), having been pending `from` seconds in (None: not yet counted).
    pub fn move_pending(&mut self, started_at: u64, from: Option<f64>, to: Option<f64>) {
        let w = self.weight_of(started_at);
        if let Some(from) = from {
            let bin = &mut self.censored[bin_of(from) as usize];
            *bin = (*bin - w).max(0.0);
            self.pending = self.pending.saturating_sub(1);
        }
        if let Some(to) = to {
            self.censored[bin_of(to) as usize] += w;
            self.pending += 1;
        }
        self.censored_moves += 1;
    }

    fn refresh(&mut self) {
        // Moved pending samples change the estimate little each: rebuilt once 1/32 of them moved.
        if !self.dirty && self.censored_moves * 32 <= self.pending {
            return;
        }
        // The prior weighs `prior_weight` observations of the current weight.
        let pw = self.prior_weight * self.increment;
        let (mass, vague, vague_factor) = (&self.mass, &self.vague, self.vague_factor);
        let learned = |i: usize| mass[i] + vague_factor * vague[i];
        self.with_prior.uncensored(|i| learned(i) + pw * self.prior[i]);
        self.learned.kaplan_meier(learned, &self.censored);
        self.dirty = false;
        self.censored_moves = 0;
    }

    /// The estimate a plan on `basis` reads.
    pub fn estimate(&mut self, basis: Basis) -> &Distribution {
        self.refresh();
        match basis {
            Basis::Learned => &self.learned,
            Basis::WithPrior => &self.with_prior,
        }
    }

    /// Whether a sample still pending at `seconds` is past (almost) everything learned: an
    /// outlier, about whose future only the prior's leftover weight would speak.
    pub fn beyond_learned(&mut self, seconds: f64) -> bool {
        let learned = self.estimate(Basis::Learned);
        let finished = learned.cdf(f64::INFINITY);
        // Within its bin too: the first completions of a cohort all end in the bin of the poll
        // that found them, where a sample still pending is already past them.
        finished > 0.0 && finished - learned.cdf(seconds) <= SKIP_MASS
    }
}

/// Which estimate a plan reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// What was learned, pending samples counted (warm plans): a cohort's later samples plan
    /// from its whole distribution, not from its first (fastest) completions.
    Learned,
    /// What was learned plus the prior, pending samples not counted (cold plans): a cold
    /// cohort's first completions are its head, and planning from them finds the rest early,
    /// where the prior conditioned on the cohort still pending would keep its polls at the
    /// window's documented scale.
    WithPrior,
}

/// A cumulative distribution over the histogram's bins.
#[derive(Clone, Debug)]
pub struct Distribution {
    /// Mass at or below each bin's upper edge, in units of `total`. It may stop short of
    /// `total` by what pending samples past every completion leave unknown.
    at_edge: Vec<f64>,
    total: f64,
}

impl Distribution {
    fn new() -> Distribution {
        Distribution { at_edge: vec![0.0; BINS], total: 0.0 }
    }

    /// From per-bin finished mass alone.
    fn uncensored(&mut self, finished: impl Fn(usize) -> f64) {
        let mut acc = 0.0;
        for (i, c) in self.at_edge.iter_mut().enumerate() {
            acc += finished(i);
            *c = acc;
        }
        self.total = acc;
    }

    /// Kaplan-Meier, from per-bin finished mass and pending (right-censored) mass: what
    /// finishes in a bin is weighed against everything at risk there. A pending sample is at
    /// risk through the bin of its last pending poll.
    fn kaplan_meier(&mut self, finished: impl Fn(usize) -> f64, censored: &[f64]) {
        let mut at_risk = 0.0;
        for i in (0..BINS).rev() {
            at_risk += finished(i) + censored[i];
            self.at_edge[i] = at_risk;
        }
        self.total = at_risk;
        let mut surviving = 1.0;
        for (i, c) in self.at_edge.iter_mut().enumerate() {
            let (risk, done) = (*c, finished(i));
            if risk > 0.0 {
                surviving *= (1.0 - done / risk).max(0.0);
            }
            *c = at_risk * (1.0 - surviving);
        }
    }

    /// P(service time <= t).
    pub fn cdf(&self, seconds: f64) -> f64 {
        if self.total <= 0.0 {
            return 0.0;
        }
        (mass_up_to(&self.at_edge, seconds) / self.total).clamp(0.0, 1.0)
    }

    /// The smallest time with cdf >= p (log-interpolated within a bin); None if p >= 1 or
    /// beyond what is known.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        if self.total <= 0.0 || !(0.0..1.0).contains(&p) {
            return None;
        }
        let target = p * self.total;
        let i = self.at_edge.partition_point(|&c| c < target);
        if i >= BINS {
            return None;
        }
        let below = if i == 0 { 0.0 } else { self.at_edge[i - 1] };
        let inside = self.at_edge[i] - below;
        let frac = if inside > 0.0 { ((target - below) / inside).clamp(0.0, 1.0) } else { 0.0 };
        Some(bin_edge(i as f64 + frac))
    }
}

/// What a plan rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Knowledge {
    /// Enough completions were learned for the key (or its window).
    Warm,
    /// Cold, and probing the whole prior, its head included, for the samples of its key.
    ColdScout,
    /// Cold, while enough scouts probe the prior's head: polls only from where the prior's
    /// body starts (or where the first completions put it), and re-plans when they are learned.
    ColdFollower,
}

/// The next poll time (seconds since the create was answered) from elapsed time `t`.
///
/// `phase` (in [0, 1), drawn per sample and poll) spreads a scout's interval over 0.5x-1.5x of
/// itself: a cohort's scouts, created together, then probe the time axis densely while each
/// polls as sparsely as planned, so its first completions are found (and re-plan the rest) early.
pub fn plan_next(model: &mut ServiceTimeModel, t: f64, overhead: f64, knowledge: Knowledge, phase: f64) -> f64 {
    let warm = knowledge == Knowledge::Warm;
    let ratio = 1.0 + if warm { WARM_RATIO } else { COLD_RATIO } * overhead;
    let mut next = (t * ratio).max(t + MIN_INTERVAL);
    // Skip ahead only on what was learned (or, cold, the prior): an outlier past everything
    // learned would otherwise jump to the prior's leftover weight at the window's documented
    // scale (a minute for priority) and be seen far late; it steps geometrically instead.
    let outlier = warm && model.beyond_learned(t);
    let estimate = model.estimate(if warm { Basis::Learned } else { Basis::WithPrior });
    let reached = estimate.cdf(t);
    if reached + SKIP_MASS < 1.0 && !outlier {
        if let Some(q) = estimate.quantile(reached + SKIP_MASS) {
            next = next.max(q);
        }
    }
    if knowledge == Knowledge::ColdFollower {
        if let Some(q) = estimate.quantile(PRIOR_HEAD_MASS + SKIP_MASS) {
            next = next.max(q);
        }
    }
    if knowledge == Knowledge::ColdScout {
        next = (t + (next - t) * (0.5 + phase.clamp(0.0, 1.0))).max(t + MIN_INTERVAL);
    }
    next
}

/// A phase for `plan_next`: uniform in [0, 1), fixed for one (sample, poll) so re-planning
/// while waiting does not draw again.
pub fn poll_phase(sample: u64, polls: u32) -> f64 {
    let mut z = sample.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (polls as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// One learned model, shared by the planners of its key (or window), with what its cold start
/// needs: how many samples scout, and a signal to the others when a completion is learned.
struct SharedModel {
    model: Mutex<ServiceTimeModel>,
    /// Set once the model has `WARM_OBSERVATIONS` completions (never unset).
    warm: AtomicBool,
    /// Cold samples of this key scouting now (`ScoutSeat`s held).
    scouts: AtomicUsize,
    /// Woken on every completion learned while the model is cold: followers re-plan at once.
    cold_news: Notify,
}

impl SharedModel {
    fn new(window: &str) -> SharedModel {
        SharedModel {
            model: Mutex::new(ServiceTimeModel::with_prior(window_scale_seconds(window))),
            warm: AtomicBool::new(false),
            scouts: AtomicUsize::new(0),
            cold_news: Notify::new(),
        }
    }

    fn is_warm(&self) -> bool {
        self.warm.load(Ordering::Acquire)
    }

    fn observations(&self) -> u64 {
        self.model.lock().observations()
    }

    /// Learn one completion of a sample started at `started_at` observations; true if the model
    /// was cold before it.
    fn observe(&self, lo: f64, hi: f64, overhead: f64, started_at: u64) -> bool {
        let mut model = self.model.lock();
        let was_cold = model.observations() < WARM_OBSERVATIONS;
        model.observe_polled(lo, hi, overhead, started_at);
        if model.observations() >= WARM_OBSERVATIONS {
            self.warm.store(true, Ordering::Release);
        }
        was_cold
    }
}

/// A seat among a key's `MAX_SCOUTS`, freed when its sample ends.
struct ScoutSeat(Arc<SharedModel>);

impl Drop for ScoutSeat {
    fn drop(&mut self) {
        self.0.scouts.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One sample's part in its key's cold start, decided at its first cold plan and kept for
/// its life (a scout keeps its seat until it ends, so it probes consistently).
#[derive(Default)]
pub struct ColdRole {
    seat: Option<ScoutSeat>,
    decided: bool,
}

impl ColdRole {
    fn knowledge(&mut self, shared: &Arc<SharedModel>) -> Knowledge {
        if !self.decided {
            self.decided = true;
            let seated = shared.scouts.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_SCOUTS).then_some(n + 1));
            self.seat = seated.is_ok().then(|| ScoutSeat(shared.clone()));
        }
        if self.seat.is_some() {
            Knowledge::ColdScout
        } else {
            Knowledge::ColdFollower
        }
    }
}

/// The learned models of one process, shared by every completer.
struct Registry {
    pid: u32,
    by_key: Mutex<HashMap<String, Arc<SharedModel>>>,
    /// Per window, every origin and model together.
    by_window: Mutex<HashMap<String, Arc<SharedModel>>>,
}

/// The shared model for `key` in `models`, made from `window`'s prior on first use.
fn shared_model(models: &Mutex<HashMap<String, Arc<SharedModel>>>, key: &str, window: &str) -> Arc<SharedModel> {
    models.lock().entry(key.to_string()).or_insert_with(|| Arc::new(SharedModel::new(window))).clone()
}

static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(std::ptr::null_mut());

/// This process's registry; a forked child builds its own (the parent's locks may be held by
/// threads that do not exist in the child), leaking the inherited one as the engine does.
fn registry() -> &'static Registry {
    let current = REGISTRY.load(Ordering::Acquire);
    let pid = std::process::id();
    // SAFETY: registries are leaked boxes, never freed.
    if let Some(r) = unsafe { current.as_ref() } {
        if r.pid == pid {
            return r;
        }
    }
    let fresh = Box::into_raw(Box::new(Registry { pid, by_key: Mutex::new(HashMap::new()), by_window: Mutex::new(HashMap::new()) }));
    match REGISTRY.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => unsafe { &*fresh },
        Err(winner) => unsafe { &*winner },
    }
}

/// The polling plan of one completer configuration.
#[derive(Clone)]
pub struct PollPlanner {
    overhead: f64,
    pid: u32,
    key: String,
    window: String,
    model: Arc<SharedModel>,
    global: Arc<SharedModel>,
}

impl std::fmt::Debug for PollPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollPlanner").field("overhead", &self.overhead).field("window", &self.window).finish()
    }
}

impl PollPlanner {
    /// The planner for (origin, model, window), sharing what this process learned for that key.
    pub fn for_key(origin: &str, model: &str, window: &str, overhead: f64) -> PollPlanner {
        let reg = registry();
        let key = format!("{origin}\n{model}\n{window}");
        PollPlanner {
            overhead: overhead.clamp(1e-4, 10.0),
            pid: reg.pid,
            model: shared_model(&reg.by_key, &key, window),
            global: shared_model(&reg.by_window, window, window),
            key,
            window: window.to_string(),
        }
    }

    /// In a forked child, the models inherited from the parent are dropped for fresh ones.
    fn current(&self) -> std::borrow::Cow<'_, PollPlanner> {
        if self.pid == std::process::id() {
            std::borrow::Cow::Borrowed(self)
        } else {
            let mut parts = self.key.splitn(3, '\n');
            let (o, m) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            std::borrow::Cow::Owned(PollPlanner::for_key(o, m, &self.window, self.overhead))
        }
    }

    /// Whether plans are still cold: nothing much learned for the key nor for its window.
    pub fn is_cold(&self) -> bool {
        let me = self.current();
        !me.model.is_warm() && !me.global.is_warm()
    }

    /// Signalled on every completion learned while the key is cold: a cold sample waits on it
    /// too, so the first completions re-plan a cohort at once, not at its next re-plan.
    pub fn cold_news(&self) -> ColdNews {
        ColdNews(self.current().model.clone())
    }

    /// How long after the create was answered to poll next, given `elapsed` now.
    /// A server hint (Retry-After on a pending response) wins when present. `role` is the
    /// sample's own, kept across its polls.
    pub fn next_poll(&self, elapsed: Duration, server_hint: Option<Duration>, phase: f64, role: &mut ColdRole) -> Duration {
        if let Some(h) = server_hint {
            return elapsed + h;
        }
        let me = self.current();
        let t = elapsed.as_secs_f64();
        let next = if me.model.is_warm() {
            plan_next(&mut me.model.model.lock(), t, me.overhead, Knowledge::Warm, phase)
        } else if me.global.is_warm() {
            plan_next(&mut me.global.model.lock(), t, me.overhead, Knowledge::Warm, phase)
        } else {
            let knowledge = role.knowledge(&me.model);
            plan_next(&mut me.model.model.lock(), t, me.overhead, knowledge, phase)
        };
        Duration::from_secs_f64(next.clamp(0.0, 1e7))
    }

    /// A sample starting now, whose create was just answered. `learn`: whether it will teach
    /// the models (an attached sample will not: its service time is unknown); if so it counts as
    /// pending in them until it completes or ends.
    pub fn start(&self, learn: bool) -> InFlight {
        let me = self.current();
        let models = [&me.model, &me.global].map(|m| Counted { started_at: m.observations(), model: Arc::clone(m) });
        let mut in_flight = InFlight { models, pending_at: None };
        if learn {
            in_flight.move_pending(None, Some(0.0));
            in_flight.pending_at = Some(0.0);
        }
        in_flight
    }

    /// A response of a sample in flight finished after `pending_at` (its last pending poll;
    /// zero if none) and by `done_at`.
    pub fn observe(&self, pending_at: Duration, done_at: Duration, in_flight: &mut InFlight) {
        let (lo, hi) = (pending_at.as_secs_f64(), done_at.as_secs_f64());
        in_flight.no_longer_pending();
        let [key, window] = &in_flight.models;
        let key_was_cold = key.model.observe(lo, hi, self.overhead, key.started_at);
        window.model.observe(lo, hi, self.overhead, window.started_at);
        if key_was_cold {
            key.model.cold_news.notify_waiters();
        }
    }
}

/// A sample in flight, in the models of its key and window: how many completions each had
/// learned when it started (see `ServiceTimeModel::observe_polled`), and where it counts as
/// pending in them (see `ServiceTimeModel::move_pending`) until it completes or is dropped.
pub struct InFlight {
    models: [Counted; 2],
    pending_at: Option<f64>,
}

struct Counted {
    model: Arc<SharedModel>,
    started_at: u64,
}

impl InFlight {
    /// The sample was found pending `elapsed` after its create was answered.
    pub fn still_pending(&mut self, elapsed: Duration) {
        if let Some(from) = self.pending_at {
            let to = elapsed.as_secs_f64();
            self.move_pending(Some(from), Some(to));
            self.pending_at = Some(to);
        }
    }

    fn no_longer_pending(&mut self) {
        let from = self.pending_at.take();
        self.move_pending(from, None);
    }

    fn move_pending(&self, from: Option<f64>, to: Option<f64>) {
        if from.is_none() && to.is_none() {
            return;
        }
        for counted in &self.models {
            counted.model.model.lock().move_pending(counted.started_at, from, to);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.no_longer_pending();
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").field("pending_at", &self.pending_at).finish()
    }
}

/// The signal of `PollPlanner::cold_news`.
pub struct ColdNews(Arc<SharedModel>);

impl ColdNews {
    /// Completes at the next completion learned while the key is cold (once `enable`d, one
    /// learned before this future is first polled counts too).
    pub fn next(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.cold_news.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A deterministic generator so the simulations are reproducible.
    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.unit().max(1e-12), self.unit());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
        fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
            median * (sigma * self.normal()).exp()
        }
    }

    /// Poll one response finishing at `s` the way the sampler does; returns (polls, lateness).
    fn poll_one(model: &mut ServiceTimeModel, s: f64, overhead: f64) -> (u32, f64) {
        let (mut t, mut last_pending, mut polls) = (0.0, 0.0, 0);
        loop {
            let knowledge = if model.observations() >= WARM_OBSERVATIONS { Knowledge::Warm } else { Knowledge::ColdScout };
            t = plan_next(model, t, overhead, knowledge, poll_phase(s.to_bits(), polls));
            polls += 1;
            if t >= s {
                model.observe_polled(last_pending, t, overhead, model.observations());
                return (polls, t - s);
            }
            last_pending = t;
            assert!(polls < 10_000, "runaway polling for s={s}");
        }
    }

    struct Summary {
        mean_polls: f64,
        p50: f64,
        p99: f64,
    }

    /// Run `n` responses (sequentially learned) drawn by `draw`; stats over the last `measured`.
    fn simulate(model: &mut ServiceTimeModel, n: usize, measured: usize, overhead: f64, mut draw: impl FnMut(usize) -> f64) -> Summary {
        let mut rel = Vec::new();
        let mut polls = 0u64;
        for i in 0..n {
            let s = draw(i);
            let (p, late) = poll_one(model, s, overhead);
            if i >= n - measured {
                polls += p as u64;
                rel.push(late / s);
            }
        }
        rel.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q = |p: f64| rel[((rel.len() as f64 - 1.0) * p).round() as usize];
        eprintln!("polls {:.2} p50 {:.4} p99 {:.4} max {:.4}", polls as f64 / measured as f64, q(0.5), q(0.99), rel.last().unwrap());
        Summary { mean_polls: polls as f64 / measured as f64, p50: q(0.5), p99: q(0.99) }
    }

    #[test]
    fn fixed_service_time_needs_about_two_polls_when_warm() {
        let mut m = ServiceTimeModel::with_prior(60.0);
        let s = simulate(&mut m, 400, 200, 0.05, |_| 31.0);
        assert!(s.mean_polls <= 3.0, "polls {}", s.mean_polls);
        assert!(s.p99 <= 0.10 + 1e-9, "p99 {}", s.p99);
    }

    #[test]
    fn priority_like_lognormal_meets_the_warm_targets() {
        let mut rng = Rng(1);
        let mut m = ServiceTimeModel::with_prior(60.0);
        let s = simulate(&mut m, 2000, 1000, 0.05, |_| rng.lognormal(60.0, 0.08));
        // <= 6 requests per sample = create + <= 5 polls.
        assert!(s.mean_polls <= 5.0, "polls {}", s.mean_polls);
        assert!(s.p50 <= 0.05, "p50 {}", s.p50);
        assert!(s.p99 <= 0.15, "p99 {}", s.p99);
    }

    #[test]
    fn uniform_spread_like_the_issue_measurement() {
        // The issue's stand-in: service times uniform in 30-35 s (old schedule: ~50 polls).
        let mut rng = Rng(2);
        let mut m = ServiceTimeModel::with_prior(60.0);
        let s = simulate(&mut m, 2000, 1000, 0.05, |_| 30.0 + 5.0 * rng.unit());
        assert!(s.mean_polls <= 4.0, "polls {}", s.mean_polls);
        assert!(s.p50 <= 0.05 && s.p99 <= 0.15, "p50 {} p99 {}", s.p50, s.p99);
    }

    #[test]
    fn bimodal_does_not_poll_between_the_modes() {
        let mut rng = Rng(3);
        let mut m = ServiceTimeModel::with_prior(60.0);
        let s =
            simulate(&mut m, 3000, 1000, 0.05, |_| if rng.unit() < 0.5 { rng.lognormal(10.0, 0.05) } else { rng.lognormal(100.0, 0.05) });
        // Geometric polling across 10 -> 100 s alone would take ~24 polls at ratio 1.1.
        assert!(s.mean_polls <= 6.0, "polls {}", s.mean_polls);
        assert!(s.p50 <= 0.05 && s.p99 <= 0.15, "p50 {} p99 {}", s.p50, s.p99);
    }

    #[test]
    fn a_shifting_distribution_is_followed() {
        let mut rng = Rng(4);
        let mut m = ServiceTimeModel::with_prior(60.0);
        simulate(&mut m, 1000, 10, 0.05, |_| rng.lognormal(20.0, 0.08));
        // The busy hour: everything takes three times longer.
        let s = simulate(&mut m, 1500, 500, 0.05, |_| rng.lognormal(60.0, 0.08));
        assert!(s.mean_polls <= 5.0, "polls after the shift {}", s.mean_polls);
        assert!(s.p50 <= 0.05 && s.p99 <= 0.15, "p50 {} p99 {}", s.p50, s.p99);
        // And back down again.
        let s = simulate(&mut m, 1500, 500, 0.05, |_| rng.lognormal(20.0, 0.08));
        assert!(s.mean_polls <= 5.0, "polls after the shift back {}", s.mean_polls);
    }

    #[test]
    fn cold_start_at_the_documented_scale() {
        // Nothing learned: the first cohort of priority responses (all in flight together,
        // so none learns from another) stays within the cold targets.
        let mut rng = Rng(5);
        let mut rel = Vec::new();
        let mut polls = 0;
        for _ in 0..200 {
            let mut m = ServiceTimeModel::with_prior(60.0);
            let s = rng.lognormal(60.0, 0.08);
            let (p, late) = poll_one(&mut m, s, 0.05);
            polls += p;
            rel.push(late / s);
        }
        rel.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mean = polls as f64 / 200.0;
        eprintln!("cold polls {mean} p50 {} p99 {}", rel[100], rel[198]);
        assert!(mean <= 11.0, "cold polls {mean}");
        assert!(rel[100] <= 0.10, "cold p50 {}", rel[100]);
    }

    #[test]
    fn compressed_time_scale_is_learned_within_a_few_completions() {
        // Tests run the emulator with priority compressed to ~1 s: after a handful of
        // completions the plan is as tight as at full scale.
        let mut rng = Rng(6);
        let mut m = ServiceTimeModel::with_prior(60.0);
        let s = simulate(&mut m, 20, 12, 0.05, |_| rng.lognormal(1.0, 0.08));
        assert!(s.mean_polls <= 6.0, "polls {}", s.mean_polls);
        assert!(s.p50 <= 0.10, "p50 {}", s.p50);
    }

    #[test]
    fn outliers_beyond_the_tail_have_bounded_relative_lateness() {
        let mut rng = Rng(7);
        let mut m = ServiceTimeModel::with_prior(60.0);
        simulate(&mut m, 500, 10, 0.05, |_| rng.lognormal(30.0, 0.05));
        for s in [100.0, 300.0, 3000.0] {
            let mut probe = m.clone();
            let (polls, late) = poll_one(&mut probe, s, 0.05);
            assert!(late / s <= 0.09 + 1e-9, "{s}s: {}", late / s);
            assert!(polls < 200, "{s}s: {polls}");
        }
    }

    #[test]
    fn an_outlier_soon_after_warm_up_is_not_planned_from_the_prior() {
        // Three completions at ~1 s leave the 60 s prior ~0.5% of the mass: a sample still
        // pending at 1.3 s must step geometrically, not skip to the prior's body (~100 s).
        let mut m = ServiceTimeModel::with_prior(60.0);
        for (lo, hi) in [(0.95, 1.0), (0.97, 1.02), (1.0, 1.05)] {
            m.observe(lo, hi);
        }
        let next = plan_next(&mut m, 1.3, 0.05, Knowledge::Warm, 0.5);
        assert!(next <= 1.3 * (1.0 + WARM_RATIO * 0.05) + 1e-9, "planned {next} s");
        // Before the learned mass ends, skipping over stretches where nothing finishes still works.
        let early = plan_next(&mut m, 0.1, 0.05, Knowledge::Warm, 0.5);
        assert!(early >= 0.9, "planned {early} s");
    }

    #[test]
    fn smaller_overhead_costs_more_polls_and_is_later_less() {
        let mut rng = Rng(8);
        let draws: Vec<f64> = (0..2000).map(|_| rng.lognormal(300.0, 0.15)).collect();
        let tight = simulate(&mut ServiceTimeModel::with_prior(300.0), 2000, 1000, 0.01, |i| draws[i]);
        let loose = simulate(&mut ServiceTimeModel::with_prior(300.0), 2000, 1000, 0.10, |i| draws[i]);
        assert!(tight.mean_polls > loose.mean_polls, "{} vs {}", tight.mean_polls, loose.mean_polls);
        assert!(tight.p50 < loose.p50, "{} vs {}", tight.p50, loose.p50);
        // Within the learned body lateness is at most 1.8x the target; the skipped stretches (0.5%
        // of the mass each) set the p99, which still improves.
        assert!(tight.p99 < loose.p99, "tight p99 {} vs {}", tight.p99, loose.p99);
    }

    #[test]
    fn server_hint_wins_and_forked_state_is_per_process() {
        let p = PollPlanner::for_key("http://127.0.0.1:1", "m-hint", "priority", 0.05);
        let at = p.next_poll(Duration::from_secs(3), Some(Duration::from_millis(1500)), 0.5, &mut ColdRole::default());
        assert_eq!(at, Duration::from_millis(4500));
        // Without a hint, the cold priority plan does not poll in the first hundred ms.
        assert!(p.next_poll(Duration::ZERO, None, 0.0, &mut ColdRole::default()) >= Duration::from_millis(100));
    }

    #[test]
    fn planners_of_one_key_share_what_they_learn() {
        let a = PollPlanner::for_key("http://127.0.0.1:2", "m-share", "standard", 0.05);
        let b = PollPlanner::for_key("http://127.0.0.1:2", "m-share", "standard", 0.05);
        for _ in 0..20 {
            a.observe(Duration::from_millis(1900), Duration::from_millis(2000), &mut a.start(true));
        }
        // b learned ~2 s from a: its first poll comes near 2 s, not at the 5-minute prior.
        let first = b.next_poll(Duration::ZERO, None, 0.5, &mut ColdRole::default()).as_secs_f64();
        assert!((1.0..2.1).contains(&first), "{first}");
    }

    #[test]
    fn a_new_origin_starts_from_its_window_and_never_from_another_window() {
        // Window names no other test uses (both get the default prior).
        let learned = PollPlanner::for_key("http://127.0.0.1:3", "m-fallback", "test-window-slow", 0.05);
        for _ in 0..20 {
            learned.observe(Duration::from_secs(990), Duration::from_secs(1000), &mut learned.start(true));
        }
        // Another origin, same window: it starts from what the window learned (~1,000 s).
        let same_window = PollPlanner::for_key("http://127.0.0.1:4", "m-fallback", "test-window-slow", 0.05);
        let borrowed = same_window.next_poll(Duration::ZERO, None, 0.5, &mut ColdRole::default()).as_secs_f64();
        assert!(borrowed > 500.0, "{borrowed}");
        // Another window: its own prior (5 minutes, first poll seconds in), not the 1,000 s.
        let other_window = PollPlanner::for_key("http://127.0.0.1:4", "m-fallback", "test-window-fast", 0.05);
        let own = other_window.next_poll(Duration::ZERO, None, 0.5, &mut ColdRole::default()).as_secs_f64();
        assert!(own < 100.0, "{own}");
    }

    #[test]
    fn first_look_completions_do_not_linger_below_the_real_distribution() {
        // A cohort polled late (cold) is found done at the first look: the estimate moves down;
        // once responses are seen pending first, the vague guesses stop costing polls.
        let mut rng = Rng(9);
        let mut m = ServiceTimeModel::with_prior(60.0);
        for _ in 0..24 {
            m.observe(0.0, 2.6);
        }
        for _ in 0..24 {
            m.observe(0.0, 0.65);
        }
        let s = simulate(&mut m, 150, 50, 0.05, |_| rng.lognormal(0.4, 0.1));
        assert!(s.mean_polls <= 6.0, "polls {}", s.mean_polls);
    }

    #[test]
    fn bad_observations_are_ignored() {
        let mut m = ServiceTimeModel::with_prior(60.0);
        m.observe(f64::NAN, f64::NAN);
        m.observe(5.0, f64::INFINITY);
        m.observe(-1.0, -1.0);
        assert_eq!(m.observations(), 0);
        m.observe(10.0, 5.0); // lo > hi: clamped, still counted
        assert_eq!(m.observations(), 1);
        let q = m.estimate(Basis::WithPrior).quantile(0.5).unwrap();
        assert!(q.is_finite() && q > 0.0);
    }

    /// How the sampler waits (sampler.rs): it plans from the last answer and re-plans on waking
    /// after at most half the elapsed time (at least 0.1 s), so completions of other samples
    /// move its plan while it waits.
    const SIM_REPLAN_MIN_WAIT: f64 = 0.1;

    struct Cohort {
        mean_polls: f64,
        p50: f64,
        p99: f64,
        /// Completed samples by how many polls found them pending first.
        histogram: Vec<u32>,
    }

    /// How a simulated cohort is started and planned.
    #[derive(Clone, Copy)]
    struct Run {
        /// Samples in all, and at most this many at once (a finished one is replaced until `n`
        /// were started or `deadline` seconds passed).
        n: usize,
        concurrency: usize,
        deadline: f64,
        /// The first `concurrency` creates are answered evenly over this many seconds.
        creates_over: f64,
        overhead: f64,
        /// At most this many cold samples scout at once (as `PollPlanner::role` allows).
        scouts: usize,
    }

    impl Run {
        fn cohort(n: usize) -> Run {
            Run { n, concurrency: n, deadline: 0.0, creates_over: 0.0, overhead: 0.05, scouts: MAX_SCOUTS }
        }
    }

    /// Samples in flight together sharing one model, as the bench runs them, each with its
    /// service time from `draw`. Event-driven, in simulated time; cold samples waiting are woken
    /// to re-plan by every completion learned while the model is cold, as in the sampler.
    fn simulate_concurrent(model: &mut ServiceTimeModel, run: Run, mut draw: impl FnMut() -> f64) -> Cohort {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        struct S {
            created: f64,
            service: f64,
            planned_from: f64,
            last_pending: f64,
            polls: u32,
            role: Option<Knowledge>,
            waiting_cold: bool,
            started_at: u64,
            /// Wake-ups queued before the latest one are stale.
            generation: u32,
        }
        // (wake time in ns, sample index, generation)
        let mut queue: BinaryHeap<Reverse<(u64, usize, u32)>> = BinaryHeap::new();
        let ns = |t: f64| (t * 1e9) as u64;
        let mut samples: Vec<S> = Vec::new();
        let mut start =
            |samples: &mut Vec<S>, queue: &mut BinaryHeap<Reverse<(u64, usize, u32)>>, model: &mut ServiceTimeModel, now: f64| {
                let started_at = model.observations();
                model.move_pending(started_at, None, Some(0.0));
                let s = S {
                    created: now,
                    service: draw(),
                    planned_from: 0.0,
                    last_pending: 0.0,
                    polls: 0,
                    role: None,
                    waiting_cold: false,
                    started_at,
                    generation: 0,
                };
                samples.push(s);
                queue.push(Reverse((ns(now), samples.len() - 1, 0)));
            };
        let first = run.concurrency.min(run.n);
        for k in 0..first {
            start(&mut samples, &mut queue, model, run.creates_over * k as f64 / first as f64);
        }
        let (mut rel, mut histogram, mut polls, mut scouting) = (Vec::new(), vec![0u32; 64], 0u64, 0usize);
        while let Some(Reverse((at, i, generation))) = queue.pop() {
            if generation != samples[i].generation {
                continue;
            }
            let now = at as f64 / 1e9;
            let s = &mut samples[i];
            let elapsed = now - s.created;
            let knowledge = if model.observations() >= WARM_OBSERVATIONS {
                Knowledge::Warm
            } else {
                *s.role.get_or_insert_with(|| {
                    if scouting < run.scouts {
                        scouting += 1;
                        Knowledge::ColdScout
                    } else {
                        Knowledge::ColdFollower
                    }
                })
            };
            let poll_at = plan_next(model, s.planned_from, run.overhead, knowledge, poll_phase(i as u64, s.polls));
            if poll_at > elapsed + 1e-9 {
                let recheck = (poll_at - elapsed).min((elapsed * 0.5).max(SIM_REPLAN_MIN_WAIT));
                s.waiting_cold = knowledge != Knowledge::Warm;
                // At least 1 ns on: a plan a rounding error ahead would wake at this instant forever.
                queue.push(Reverse((ns(now + recheck).max(at + 1), i, s.generation)));
                continue;
            }
            s.waiting_cold = false;
            s.polls += 1;
            assert!(s.polls < 10_000, "runaway polling for s={}", s.service);
            if elapsed < s.service {
                model.move_pending(s.started_at, Some(s.last_pending), Some(elapsed));
                s.last_pending = elapsed;
                s.planned_from = elapsed;
                queue.push(Reverse((at + 1, i, s.generation)));
                continue;
            }
            if s.role == Some(Knowledge::ColdScout) {
                scouting -= 1;
            }
            let was_cold = model.observations() < WARM_OBSERVATIONS;
            model.move_pending(s.started_at, Some(s.last_pending), None);
            model.observe_polled(s.last_pending, elapsed, run.overhead, s.started_at);
            rel.push((elapsed - s.service) / s.service);
            histogram[(s.polls as usize - 1).min(63)] += 1;
            polls += s.polls as u64;
            if was_cold {
                for (j, w) in samples.iter_mut().enumerate() {
                    if w.waiting_cold {
                        w.generation += 1;
                        queue.push(Reverse((at, j, w.generation)));
                    }
                }
            }
            if samples.len() < run.n && now < run.deadline {
                start(&mut samples, &mut queue, model, now);
            }
        }
        rel.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q = |p: f64| rel[((rel.len() as f64 - 1.0) * p).round() as usize];
        let mean_polls = polls as f64 / rel.len() as f64;
        let last = histogram.iter().rposition(|&c| c > 0).unwrap_or(0);
        eprintln!(
            "{} samples: polls {mean_polls:.2} p50 {:.4} p99 {:.4} pending polls {:?}",
            rel.len(),
            q(0.5),
            q(0.99),
            &histogram[..=last]
        );
        Cohort { mean_polls, p50: q(0.5), p99: q(0.99), histogram }
    }

    #[test]
    fn a_cohort_started_together_weighs_the_same_whatever_order_it_finishes_in() {
        // 512 samples started together finish in order of their service times (1..=512 s).
        let (mut by_start, mut by_finish) = (ServiceTimeModel::with_prior(60.0), ServiceTimeModel::with_prior(60.0));
        for s in 1..=512 {
            let s = s as f64;
            by_start.observe_polled(s * 0.99, s, 0.05, 0);
            by_finish.observe_polled(s * 0.99, s, 0.05, by_finish.observations());
        }
        // Evenly weighed, the median is the middle one; weighed by finishing order, the last
        // ones counted ~55x the first, pulling it to the slow end.
        let median = by_start.estimate(Basis::Learned).quantile(0.5).unwrap();
        assert!((240.0..=270.0).contains(&median), "median {median}");
        assert!(by_finish.estimate(Basis::Learned).quantile(0.5).unwrap() > 400.0);
    }

    #[test]
    fn a_warm_up_larger_than_the_memory_plans_the_next_cohort_from_its_whole_distribution() {
        // benches/scenarios.py rt-priority-50k-warm: 512 started at once, then 50,000 created
        // over 10 s, lognormal median 30 s, sigma 0.1. Weighed by finishing order, the warm-up's
        // slowest members planned the first polls after the cohort's early tail: 3.7% were found
        // at their first poll, p99 lateness 30%.
        let mut rng = Rng(1);
        let mut m = ServiceTimeModel::with_prior(window_scale_seconds("balanced"));
        simulate_concurrent(&mut m, Run::cohort(512), || rng.lognormal(30.0, 0.1));
        let c = simulate_concurrent(&mut m, Run { creates_over: 10.0, ..Run::cohort(50_000) }, || rng.lognormal(30.0, 0.1));
        assert!(c.histogram[0] < 1_000, "found at the first poll: {}", c.histogram[0]);
        assert!(c.mean_polls <= 5.0, "polls {}", c.mean_polls);
        assert!(c.p50 <= 0.05 && c.p99 <= 0.15, "p50 {} p99 {}", c.p50, c.p99);
    }

    #[test]
    fn a_large_cohort_created_over_seconds_plans_its_later_samples_from_its_whole_distribution() {
        // benches/scenarios.py rt-priority-10k-warm: a warm-up of 512 (256 at a time), then
        // 10,000 created over ~5 s, lognormal median 6 s, sigma 0.1. Samples created last plan
        // after the cohort's first completions, its fastest; learned without the thousands still
        // pending, those made them poll early: 5.1 polls per sample instead of 4.1.
        let mut rng = Rng(21);
        let mut m = ServiceTimeModel::with_prior(window_scale_seconds("balanced"));
        simulate_concurrent(&mut m, Run { concurrency: 256, deadline: 12.0, ..Run::cohort(512) }, || rng.lognormal(6.0, 0.1));
        let c = simulate_concurrent(&mut m, Run { creates_over: 5.0, ..Run::cohort(10_000) }, || rng.lognormal(6.0, 0.1));
        assert!(c.mean_polls <= 4.5, "polls {} {:?}", c.mean_polls, c.histogram);
        assert!(c.p50 <= 0.05 && c.p99 <= 0.15, "p50 {} p99 {}", c.p50, c.p99);
    }

    #[test]
    fn a_cohort_s_first_completions_are_weighed_against_those_still_pending() {
        // 1,000 completions of 8-12 s, then a cohort of 1,000 started: at 8 s, its 10 fastest
        // finished (at 7.5-8 s) and the other 990 were seen pending.
        let cohort = |counted: bool| {
            let mut m = ServiceTimeModel::with_prior(60.0);
            for i in 0..1000 {
                m.observe_polled(8.0 + 0.004 * i as f64, 8.01 + 0.004 * i as f64, 0.05, 0);
            }
            let started_at = m.observations();
            for i in 0..1000 {
                if counted {
                    m.move_pending(started_at, None, Some(0.0));
                }
                if i < 10 {
                    if counted {
                        m.move_pending(started_at, Some(0.0), None);
                    }
                    m.observe_polled(7.5, 8.0, 0.05, started_at);
                } else if counted {
                    m.move_pending(started_at, Some(0.0), Some(8.0));
                }
            }
            m.estimate(Basis::Learned).quantile(0.5).unwrap()
        };
        // The cohort's completions are the newest and weigh most: alone, its 10 fastest would
        // be its whole distribution. Against the 990 pending they are its first 1%, and the
        // rest is expected to finish as the earlier completions did (median 10 s).
        assert!(cohort(false) < 8.0, "{}", cohort(false));
        assert!((9.5..10.5).contains(&cohort(true)), "{}", cohort(true));
    }

    #[test]
    fn a_sample_counts_as_pending_until_it_completes_or_is_dropped() {
        let p = PollPlanner::for_key("http://127.0.0.1:7", "m-pending", "priority", 0.05);
        let pending = || (p.model.model.lock().pending, p.global.model.lock().pending);
        let before = pending();
        let mut dropped = p.start(true);
        dropped.still_pending(Duration::from_secs(3));
        let mut completed = p.start(true);
        let attached = p.start(false);
        assert_eq!(pending(), (before.0 + 2, before.1 + 2));
        drop(dropped);
        drop(attached);
        assert_eq!(pending(), (before.0 + 1, before.1 + 1));
        p.observe(Duration::from_secs(2), Duration::from_secs(3), &mut completed);
        drop(completed);
        assert_eq!(pending(), before);
        let censored: f64 = p.model.model.lock().censored.iter().sum();
        assert!(censored.abs() < 1e-9, "left behind: {censored}");
    }

    #[test]
    fn concurrent_cohorts_like_the_realtime_bench() {
        // benches/scenarios.py realtime(): lognormal sigma 0.1, compressed 20x; a warm-up of 512
        // samples, 256 at a time, then 1,000 created together. Priority-like (3 s) and
        // standard-like (15 s), both on the prior of window "balanced" (60 s).
        for (median, warmup_deadline) in [(3.0, 8.0), (15.0, 25.0)] {
            let mut rng = Rng(11);
            let mut m = ServiceTimeModel::with_prior(window_scale_seconds("balanced"));
            eprint!("median {median} s warm-up: ");
            simulate_concurrent(&mut m, Run { concurrency: 256, deadline: warmup_deadline, ..Run::cohort(512) }, || {
                rng.lognormal(median, 0.1)
            });
            eprint!("median {median} s cohort: ");
            let c = simulate_concurrent(&mut m, Run::cohort(1000), || rng.lognormal(median, 0.1));
            // <= 6 requests per sample = create + <= 5 polls.
            assert!(c.mean_polls <= 5.0, "median {median} s: polls {} {:?}", c.mean_polls, c.histogram);
            assert!(c.p50 <= 0.05 && c.p99 <= 0.15, "median {median} s: p50 {} p99 {}", c.p50, c.p99);
        }
    }

    #[test]
    fn a_cold_cohort_learns_from_its_own_first_completions() {
        // A fresh process creates 1,000 samples together (`rt-*-cold`): none has anything
        // learned when it plans its first polls; the scouts' first completions re-plan the rest.
        // Window "balanced" (prior 60 s) at the benches' compressed scales, then at the prior's own.
        for (median, max_polls) in [(3.0, 5.0), (6.0, 4.5), (15.0, 5.0), (30.0, 6.5), (60.0, 10.5)] {
            let mut rng = Rng(12);
            let mut m = ServiceTimeModel::with_prior(window_scale_seconds("balanced"));
            eprint!("median {median} s cold cohort: ");
            let c = simulate_concurrent(&mut m, Run::cohort(1000), || rng.lognormal(median, 0.1));
            // The issue's cold target is <= 12 requests per sample (create + <= 11 polls) with
            // p50 <= 10%; at the prior's own scale the cohort still walks the prior's body at the
            // cold spacing until three completions are learned.
            assert!(c.mean_polls <= max_polls, "median {median} s: polls {} {:?}", c.mean_polls, c.histogram);
            assert!(c.p50 <= 0.10 && c.p99 <= 0.15, "median {median} s: p50 {} p99 {}", c.p50, c.p99);
        }
    }

    #[test]
    fn followers_leave_the_prior_s_head_to_the_scouts() {
        // Every sample scouting (as before scouts) against MAX_SCOUTS, at the standard-like bench
        // scale (15 s on the 60 s prior) and 50,000 created over 10 s at 30 s (`rt-priority-50k-cold`).
        let cohort = |run: Run, median: f64| {
            let mut rng = Rng(13);
            let mut m = ServiceTimeModel::with_prior(window_scale_seconds("balanced"));
            simulate_concurrent(&mut m, run, || rng.lognormal(median, 0.1))
        };
        for (run, median) in [(Run::cohort(1000), 15.0), (Run { creates_over: 10.0, ..Run::cohort(50_000) }, 30.0)] {
            eprint!("median {median} s, {} samples, all scouting: ", run.n);
            let all = cohort(Run { scouts: usize::MAX, ..run }, median);
            eprint!("median {median} s, {} samples, {MAX_SCOUTS} scouts: ", run.n);
            let some = cohort(run, median);
            assert!(some.mean_polls <= 0.8 * all.mean_polls, "{} against {}", some.mean_polls, all.mean_polls);
            assert!(some.p50 <= 0.10 && some.p99 <= 0.15, "p50 {} p99 {}", some.p50, some.p99);
        }
    }

    #[test]
    fn scouts_are_few_and_their_seats_are_freed() {
        let p = PollPlanner::for_key("http://127.0.0.1:5", "m-scouts", "priority", 0.05);
        let mut scouts: Vec<ColdRole> = (0..MAX_SCOUTS).map(|_| ColdRole::default()).collect();
        // A scout's first poll falls in the prior's head (a minute's scale: seconds in) ...
        for role in &mut scouts {
            let first = p.next_poll(Duration::ZERO, None, 0.5, role).as_secs_f64();
            assert!(first < 10.0, "scout {first}");
        }
        // ... a follower's where the prior's body starts (~20 s), until completions tell otherwise.
        let mut follower = ColdRole::default();
        let first = p.next_poll(Duration::ZERO, None, 0.5, &mut follower).as_secs_f64();
        assert!(first > 15.0, "follower {first}");
        // A sample that ends frees its seat for the next new one; a follower stays a follower.
        scouts.pop();
        let mut next = ColdRole::default();
        assert!(p.next_poll(Duration::ZERO, None, 0.5, &mut next).as_secs_f64() < 10.0);
        assert!(p.next_poll(Duration::ZERO, None, 0.5, &mut follower).as_secs_f64() > 15.0);
    }

    #[test]
    fn completions_learned_while_cold_wake_the_waiting_samples() {
        use futures_util::FutureExt;
        let p = PollPlanner::for_key("http://127.0.0.1:6", "m-news", "standard", 0.05);
        let news = p.cold_news();
        for _ in 0..WARM_OBSERVATIONS {
            assert!(p.is_cold());
            let mut waiting = std::pin::pin!(news.next());
            waiting.as_mut().enable();
            assert!(waiting.as_mut().now_or_never().is_none());
            p.observe(Duration::from_millis(1900), Duration::from_millis(2000), &mut p.start(true));
            assert!(waiting.now_or_never().is_some(), "not woken by a completion learned cold");
        }
        // Warm now: nobody listens, and a completion signals no one.
        assert!(!p.is_cold());
        let mut waiting = std::pin::pin!(news.next());
        waiting.as_mut().enable();
        p.observe(Duration::from_millis(1900), Duration::from_millis(2000), &mut p.start(true));
        assert!(waiting.now_or_never().is_none());
    }

    #[test]
    fn a_cold_cohort_pending_past_the_first_completions_is_not_planned_from_the_prior() {
        // Seed 112 (one of 40 explored): the scouts found no completion before 11.6 s, and the first
        // three (two at a first look) all ended in the bin of that poll. The rest of the cohort,
        // pending there, counted as not yet past what was learned, so its next poll skipped to
        // the prior's leftover weight and the sampler's half-elapsed re-plan brought it at
        // 17.5 s: p50 17%, p99 45% (the realtime bench's occasional bad cold run).
        let mut rng = Rng(112);
        let mut m = ServiceTimeModel::with_prior(window_scale_seconds("balanced"));
        eprint!("median 15 s cold cohort, seed 112: ");
        let c = simulate_concurrent(&mut m, Run::cohort(1000), || rng.lognormal(15.0, 0.1));
        assert!(c.p50 <= 0.06 && c.p99 <= 0.15, "p50 {} p99 {} {:?}", c.p50, c.p99, c.histogram);
    }

    #[test]
    fn past_everything_learned_counts_within_the_last_learned_bin() {
        // First completions, all seen by one poll late in a bin: a sample pending at that poll
        // is past them, though its time shares their bin.
        let seen = bin_edge(bin_of(11.64).floor() + 0.9);
        let mut m = ServiceTimeModel::with_prior(60.0);
        for lo in [6.47, 0.0, 0.0] {
            m.observe(lo, seen);
        }
        assert!(m.beyond_learned(seen));
        assert!(!m.beyond_learned(8.0));
        let next = plan_next(&mut m, seen, 0.05, Knowledge::Warm, 0.5);
        assert!(next <= seen * (1.0 + WARM_RATIO * 0.05) + 1e-9, "planned {next} s");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever the (lognormal) distribution and scale, the warm plan keeps the median
        /// lateness near the target and never polls a response more than a bounded number of times.
        #[test]
        fn warm_plan_meets_targets_for_any_lognormal(median in 0.5f64..3000.0, sigma in 0.02f64..0.12, seed in 0u64..1000) {
            let mut rng = Rng(seed);
            let mut m = ServiceTimeModel::with_prior(60.0);
            let s = simulate(&mut m, 800, 400, 0.05, |_| rng.lognormal(median, sigma));
            prop_assert!(s.mean_polls <= 6.0, "polls {}", s.mean_polls);
            // A very narrow distribution fits inside one or two poll intervals, so where its
            // median falls in them decides the median lateness: up to ~1.5x the target.
            prop_assert!(s.p50 <= 0.08, "p50 {}", s.p50);
            prop_assert!(s.p99 <= 0.15, "p99 {}", s.p99);
        }

        /// The plan always moves forward, by at least the minimum interval.
        #[test]
        fn plan_moves_forward(t in 0.0f64..1e6, obs in proptest::collection::vec((0.0f64..100.0, 0.0f64..100.0), 0..50)) {
            let mut m = ServiceTimeModel::with_prior(60.0);
            for (a, b) in obs { m.observe(a.min(b), a.max(b)); }
            for knowledge in [Knowledge::Warm, Knowledge::ColdScout, Knowledge::ColdFollower] {
                let next = plan_next(&mut m, t, 0.05, knowledge, 0.5);
                prop_assert!(next >= t + MIN_INTERVAL - 1e-12 && next.is_finite());
            }
        }
    }
}
