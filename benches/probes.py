"""What a benchmark process measures about itself (and the emulator process): CPU time, RSS,
open sockets. Linux /proc and getrusage only, so the harness adds no dependency."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads (including the Rust runtimes)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of another process (the emulator), all threads."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def _sum_by_thread_name(filename: str, measure: Callable[[str], tuple[str, float]]) -> dict[str, float]:
    """`measure` (the file's text -> thread name, figure) of /proc/self/task/*/`filename`, for
    this process's live threads, summed by thread name."""
    by_name: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/{filename}") as f:
                name, figure = measure(f.read())
        except OSError:  # the thread ended
            continue
        by_name[name] = by_name.get(name, 0) + figure
    return by_name


def _cpu_of_stat(stat: str) -> tuple[str, float]:
    head, tail = stat.rsplit(")", 1)
    fields = tail.split()
    return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def _wakeups_of_status(status: str) -> tuple[str, float]:
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return fields.get("Name", "?").strip(), int(fields.get("voluntary_ctxt_switches", "0"))


def thread_cpu_seconds() -> dict[str, float]:
    """CPU of this process's live threads, summed by thread name (the main Python thread,
    the Rust runtime's workers, ...): where a client's CPU goes."""
    return _sum_by_thread_name("stat", _cpu_of_stat)


def thread_wakeups() -> dict[str, float]:
    """Voluntary context switches of this process's live threads, summed by thread name: how
    often each went to sleep (and so was woken again), e.g. the engine thread's wake-ups."""
    return _sum_by_thread_name("status", _wakeups_of_status)


def peak_rss_kb() -> int:
    """Peak resident set size of this process's whole life (ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_KB


def open_sockets() -> int:
    """Sockets this process holds now (TCP connections, listeners, eventfd-free socketpairs)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:  # closed between listdir and readlink
            pass
    return count


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one, as a user with many sockets would."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class PeakSampler:
    """A background thread that samples RSS, open sockets and a caller-supplied in-flight count
    every `interval` seconds and keeps the peaks. A thread, not a task: the event loop may be
    too busy to sample when it matters most."""

    def __init__(self, in_flight, interval: float = 0.05) -> None:
        self._in_flight = in_flight
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)
        self.peak_rss_kb = current_rss_kb()
        self.peak_sockets = 0
        self.peak_in_flight = 0
        self.fd_exhausted = False
        # This thread's own CPU (listing /proc/self/fd is not free with thousands of sockets):
        # the harness's cost, not the client's, so the measurement subtracts it.
        self.cpu_seconds = 0.0

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._safe_sample()

    def _run(self) -> None:
        start = time.thread_time()
        while not self._stop.wait(self._interval):
            self._safe_sample()
            self.cpu_seconds = time.thread_time() - start

    def _safe_sample(self) -> None:
        try:
            self._sample()
        except OSError:  # out of file descriptors (a client holding one socket per request)
            self.fd_exhausted = True

    def _sample(self) -> None:
        rss = current_rss_kb()
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_sockets = max(self.peak_sockets, open_sockets())
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight())


def now() -> float:
    return time.perf_counter()


class GcTimer:
    """CPU time the garbage collector took (thread time of the collecting thread), by
    generation, from `gc.callbacks`: a fresh process pays one full collection of everything its
    imports made, whichever code happens to trigger it; reported so that is not mistaken for
    per-sample cost. Counted in the client's CPU (the client's process did it)."""

    def __init__(self) -> None:
        import gc

        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._started
            self.collections[info["generation"]] += 1

    def snapshot(self) -> tuple[float, list[int]]:
        return self.seconds, list(self.collections)

