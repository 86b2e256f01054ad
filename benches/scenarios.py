"""What is measured: each scenario's sizes, emulator settings and clients, for the full run
(`make bench`) and the reduced one (`make bench QUICK=1`). Everything is bounded in count
and time: `max_seconds` stops a run (a stuck peer is reported as timed out), and a client
process is killed `KILL_GRACE_SECONDS` after that."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODEL = "moonshotai/Kimi-K2.6"
# The official SDK's default (it rejects "priority" as retired); sail-lite polls it on its
# priority schedule. Every client sends the same window so the emulator treats them alike.
WINDOW = "balanced"
PROMPT_TOKENS = 512
MAX_TOKENS = 64
KILL_GRACE_SECONDS = 120

# 10% 429 + 5% 5xx + 1% dropped connections, on creates and polls; half of the create faults
# strike after the response was created (the case where a retry without an idempotency key
# starts a duplicate sample).
FAULTS = {"rate_429": 0.10, "rate_500": 0.02, "rate_502": 0.015, "rate_503": 0.015, "rate_drop": 0.01}

ALL_CLIENTS = ["python-floor", "sail-lite", "sail-lite-completions", "aiohttp", "sail-sdk", "openai-sdk"]
RESPONSES_CLIENTS = ["sail-lite", "aiohttp", "sail-sdk", "openai-sdk"]
# Against the slow Python server (slow_sail_server.py: the Responses protocol only).
SLOW_SERVER_CLIENTS = ["python-floor", *RESPONSES_CLIENTS]


def fixed_latency(seconds: float) -> dict[str, Any]:
    """Every window takes exactly `seconds` (no jitter), so completion time is known."""
    if seconds == 0:
        return {"scale": 0.0}
    return {"scale": 1.0, "jitter": 0.0, "default_seconds": seconds, "windows": {WINDOW: seconds}}


@dataclass(frozen=True)
class Scenario:
    key: str
    kind: str  # bench_client scenario: throughput | scale | poll | faults
    title: str
    clients: list[str]
    n: int
    max_seconds: float
    latency_seconds: float = 0.0
    concurrency: int = 0  # 0: all at once
    warmup: int = 0
    spacing: float = 0.0
    faults: dict[str, Any] = field(default_factory=dict)
    reps: int = 3
    # Run every (client, rep) at the same time, each with its own emulator: for long, light
    # runs (60 s poll latency) whose measurement is not CPU-sensitive.
    parallel: bool = False
    sample_interval: float = 0.25
    # A latency distribution (the emulator's `latency` config) instead of `fixed_latency`.
    latency: dict[str, Any] | None = None
    warmup_seconds: float = 0.0
    # Samples in flight during the warm-up (default: the client's pool size, WARMUP_CONCURRENCY).
    warmup_concurrency: int = 0
    # Run the warm-up in this completion window instead (a second client): a warm process whose
    # poll planner has learned nothing for the measured window.
    warmup_window: str = ""
    # "emulator" (the Rust one) or "slow" (benches/slow_sail_server.py, Python on aiohttp).
    server: str = "emulator"

    def emulator_config(self, rep: int) -> dict[str, Any]:
        latency = dict(self.latency) if self.latency is not None else fixed_latency(self.latency_seconds)
        config: dict[str, Any] = {"worker_threads": 2, "seed": rep, "latency": latency}
        if self.faults:
            config["faults"] = dict(self.faults)
        return config

    def client_spec(self, client: str) -> dict[str, Any]:
        return {
            "client": client,
            "scenario": self.kind,
            "model": MODEL,
            "window": WINDOW,
            "prompt_tokens": PROMPT_TOKENS,
            "max_tokens": MAX_TOKENS,
            "n": self.n,
            "concurrency": self.concurrency or self.n,
            "max_seconds": self.max_seconds,
            "warmup": self.warmup,
            "latency_seconds": self.latency_seconds,
            "spacing": self.spacing,
            "sample_interval": self.sample_interval,
            **({"warmup_seconds": self.warmup_seconds} if self.warmup_seconds else {}),
            **({"warmup_concurrency": self.warmup_concurrency} if self.warmup_concurrency else {}),
            **({"warmup_window": self.warmup_window} if self.warmup_window else {}),
        }


def full() -> list[Scenario]:
    return [
        Scenario("throughput", "throughput", "Throughput and client CPU", ALL_CLIENTS,
                 n=20_000, concurrency=1_000, warmup=1_000, max_seconds=20),
        Scenario("throughput-slow-server", "throughput", "Throughput and client CPU, slow Python server",
                 SLOW_SERVER_CLIENTS, n=5_000, concurrency=1_000, warmup=1_000, max_seconds=20, server="slow"),
        Scenario("scale", "scale", "50,000 samples in flight", RESPONSES_CLIENTS,
                 n=50_000, latency_seconds=5.0, max_seconds=90, sample_interval=0.05),
        Scenario("poll-0.5s", "poll", "Poll overhead, 0.5 s responses", RESPONSES_CLIENTS,
                 n=50, latency_seconds=0.5, spacing=0.01, max_seconds=60),
        Scenario("poll-5s", "poll", "Poll overhead, 5 s responses", RESPONSES_CLIENTS,
                 n=50, latency_seconds=5.0, spacing=0.01, max_seconds=65, parallel=True),
        Scenario("poll-60s", "poll", "Poll overhead, 60 s responses", RESPONSES_CLIENTS,
                 n=50, latency_seconds=60.0, spacing=0.01, max_seconds=120, parallel=True),
        Scenario("faults", "faults", "Fault injection", RESPONSES_CLIENTS,
                 n=5_000, concurrency=1_000, warmup=200, faults=FAULTS, max_seconds=20),
    ]


def sail_like_latency(median_seconds: float, scale: float, sigma: float = 0.1) -> dict[str, Any]:
    """Sail's shape: lognormal around the window's turn time, compressed by `scale`."""
    return {"distribution": "lognormal", "sigma": sigma, "scale": scale, "in_progress_fraction": 0.0,
            "windows": {WINDOW: median_seconds}}


REALTIME_CLIENTS = ["sail-lite", "sail-sdk", "aiohttp"]


def realtime() -> list[Scenario]:
    """Sail-like time scales (`make -C benches realtime`): priority (~60 s) and standard (~5 min)
    compressed 20x so a run takes minutes; cold (a fresh process) and warm (after a warm-up
    that completes a few hundred samples). Lateness is measured by the emulator per sample. The
    1,000-in-flight scenarios run three times, clients interleaved (a single run's client CPU
    varied by up to a third between identical runs); the larger ones, minutes each, once."""
    priority = sail_like_latency(60.0, 0.05)  # median 3 s
    standard = sail_like_latency(300.0, 0.05)  # median 15 s
    big = sail_like_latency(60.0, 0.1)  # median 6 s: the creates of 10,000 take a few seconds
    out = []
    for name, latency, n, warm_s, limit in [("priority", priority, 1_000, 8.0, 60), ("standard", standard, 1_000, 25.0, 120),
                                            ("priority-10k", big, 10_000, 12.0, 120)]:
        reps = 3 if n <= 1_000 else 1
        out.append(Scenario(f"rt-{name}-cold", "scale", f"{name}-like, {n:,} in flight, cold", REALTIME_CLIENTS,
                            n=n, latency=latency, max_seconds=limit, reps=reps, sample_interval=0.1))
        out.append(Scenario(f"rt-{name}-warm", "scale", f"{name}-like, {n:,} in flight, warm", REALTIME_CLIENTS,
                            n=n, latency=latency, max_seconds=limit, reps=reps, sample_interval=0.1,
                            warmup=512, warmup_seconds=warm_s))
        if n > 1_000:
            continue
        # Cold for the planner, warm for the process: the warm-up ran in window `priority` (emulated
        # at its default 1 s x scale, i.e. 50 ms), so only the one-time start-up is left out. Not
        # the official SDK: it rejects window `priority` ("retired").
        out.append(Scenario(f"rt-{name}-cold-warmproc", "scale", f"{name}-like, {n:,} in flight, cold planner in a warm process",
                            [c for c in REALTIME_CLIENTS if c != "sail-sdk"], n=n, latency=latency, max_seconds=limit, reps=reps, sample_interval=0.1,
                            warmup=512, warmup_seconds=warm_s, warmup_window="priority"))
    # 50,000 in flight: creating them takes sail-lite ~10 s on 2 loaded cores, so priority is
    # compressed only 2x (median 30 s) for the creates to finish well before the completions.
    # The warm-up is one wave of 512 at once (two waves of 256 would take ~70 s).
    big50 = sail_like_latency(60.0, 0.5)
    out.append(Scenario("rt-priority-50k-cold", "scale", "priority-like (median 30 s), 50,000 in flight, cold", REALTIME_CLIENTS,
                        n=50_000, latency=big50, max_seconds=120, reps=1, sample_interval=0.5))
    out.append(Scenario("rt-priority-50k-warm", "scale", "priority-like (median 30 s), 50,000 in flight, warm", REALTIME_CLIENTS,
                        n=50_000, latency=big50, max_seconds=120, reps=1, sample_interval=0.5,
                        warmup=512, warmup_seconds=45.0, warmup_concurrency=512))
    return out


TRANSPORT_CLIENTS = ["sail-lite", "sail-lite-hyper"]


def transport() -> list[Scenario]:
    """The transport comparison (`make -C benches transport`): sail-lite over its hand-written HTTP/1.1
    framing against the same engine over hyper's client, in one run, alternating per rep, at
    latency 0 (both servers) and at a Sail-like time scale."""
    return [
        Scenario("tr-throughput", "throughput", "latency 0, Rust emulator", TRANSPORT_CLIENTS,
                 n=20_000, concurrency=1_000, warmup=1_000, max_seconds=20, reps=5),
        Scenario("tr-throughput-slow-server", "throughput", "latency 0, slow Python server", TRANSPORT_CLIENTS,
                 n=5_000, concurrency=1_000, warmup=1_000, max_seconds=20, reps=5, server="slow"),
        Scenario("tr-priority-warm", "scale", "priority-like (median 3 s), 1,000 in flight, warm", TRANSPORT_CLIENTS,
                 n=1_000, latency=sail_like_latency(60.0, 0.05), max_seconds=60, reps=3, sample_interval=0.1,
                 warmup=512, warmup_seconds=8.0),
    ]


def quick() -> list[Scenario]:
    return [
        Scenario("throughput", "throughput", "Throughput and client CPU", ALL_CLIENTS,
                 n=2_000, concurrency=500, warmup=100, max_seconds=8, reps=1),
        Scenario("throughput-slow-server", "throughput", "Throughput and client CPU, slow Python server",
                 SLOW_SERVER_CLIENTS, n=1_000, concurrency=500, warmup=100, max_seconds=8, reps=1, server="slow"),
        Scenario("scale", "scale", "5,000 samples in flight", RESPONSES_CLIENTS,
                 n=5_000, latency_seconds=2.0, max_seconds=25, reps=1, sample_interval=0.05),
        Scenario("poll-0.5s", "poll", "Poll overhead, 0.5 s responses", RESPONSES_CLIENTS,
                 n=20, latency_seconds=0.5, spacing=0.01, max_seconds=40, reps=1, parallel=True),
        Scenario("poll-5s", "poll", "Poll overhead, 5 s responses", RESPONSES_CLIENTS,
                 n=20, latency_seconds=5.0, spacing=0.01, max_seconds=45, reps=1, parallel=True),
        Scenario("faults", "faults", "Fault injection", RESPONSES_CLIENTS,
                 n=500, concurrency=250, warmup=50, faults=FAULTS, max_seconds=20, reps=1),
    ]


def smoke(clients: list[str]) -> list[Scenario]:
    """Seconds, for tests/test_bench_smoke.py: the harness works end to end."""
    return [
        Scenario("throughput", "throughput", "Throughput (smoke)", clients,
                 n=200, concurrency=50, warmup=20, max_seconds=10, reps=1),
        Scenario("poll-0.2s", "poll", "Poll overhead (smoke)", [c for c in clients if c in RESPONSES_CLIENTS],
                 n=5, latency_seconds=0.2, spacing=0.01, max_seconds=10, reps=1),
        Scenario("faults", "faults", "Faults (smoke)", [c for c in clients if c in RESPONSES_CLIENTS],
                 n=100, concurrency=50, faults=FAULTS, max_seconds=20, reps=1),
    ]
