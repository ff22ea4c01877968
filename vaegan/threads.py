"""How many CPU threads to compute with, noticing when the machine gets busy, and which precision is fast.

Torch's default intra-op thread count is the host's physical core count. On a small or shared
CPU that is the wrong number twice over: a container or ``taskset`` may allow fewer cores than
the host has, and OpenMP threads spin at every barrier waiting for a thread the scheduler has
not run, so a step with 2 threads on 2 cores, one of them busy, can take longer than the same
step with 1 thread. The policy here:

- usable CPUs: the affinity mask of this process, capped by the cgroup CPU quota (v2
  ``cpu.max``, v1 ``cpu.cfs_quota_us``), not ``os.cpu_count()``;
- intra-op threads: the usable CPUs minus the DataLoader workers this process starts
  (``threads="auto"``), or a number the user gives;
- data loader workers (``"auto"``): none when the data is a prepared cache (reading it costs
  nothing) or when the CPU is small; a few on hosts with many cores;
- :class:`ThreadTuner`: on the CPU, an ``auto`` run re-measures its step time with fewer
  threads whenever it becomes much slower than its own best (another process took a core)
  and keeps the faster count, and looks again later; :class:`SlowdownDetector` says once when
  steps stay more than 2x slower than the run's best, with the likely cause and the override.

Changing the thread count may change float summation order, so an ``auto`` run is not
bit-for-bit reproducible on the CPU; ``train.threads=N`` fixes the count.
"""
from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

import torch

AUTO = "auto"


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPUs the cgroup CPU quota allows (e.g. 1.5), or None when there is no quota."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "150000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # cgroup v1: -1 when unlimited
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus() -> tuple[int, str]:
    """(whole CPUs this process may use, how that was decided)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    cpus = affinity if quota is None else max(1, min(affinity, math.floor(quota)))
    why = f"affinity {affinity} CPUs" + ("" if quota is None else f", cgroup quota {quota:g} CPUs")
    return cpus, why


def loader_workers(requested: int | str, cached: bool, device_type: str) -> int:
    """DataLoader worker processes: ``requested`` when a number, else (auto) 0 for a prepared
    cache or a CPU with fewer than 8 usable CPUs on a CPU run, and up to 4 on GPU hosts."""
    if requested != AUTO:
        return int(requested)
    if cached:
        return 0
    cpus, _ = usable_cpus()
    return min(4, cpus - 1) if device_type == "cuda" else cpus // 8


def fixed_threads(requested: int | str) -> int | None:
    """The thread count the user fixed: ``requested`` when a number, else ``OMP_NUM_THREADS``
    when set, else None (the policy decides)."""
    if requested != AUTO:
        return int(requested)
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


def compute_threads(requested: int | str, workers: int = 0, processes: int = 1) -> tuple[int, str]:
    """(intra-op threads, the reason) for ``requested`` ("auto" or a number) beside ``workers``
    loader processes, for each of ``processes`` training processes on this machine."""
    fixed = fixed_threads(requested)
    if fixed is not None:
        return fixed, "train.threads / --threads" if requested != AUTO else "OMP_NUM_THREADS"
    cpus, why = usable_cpus()
    threads = max(1, cpus // max(1, processes) - workers)
    parts = [why] + ([f"{processes} processes"] if processes > 1 else []) + \
        ([f"minus {workers} loader workers"] if workers else [])
    return threads, ", ".join(parts)


def apply_threads(requested: int | str, workers: int = 0, device_type: str = "cpu", processes: int = 1) -> str:
    """Set torch's intra-op threads per the policy (CPU runs only); returns the log line."""
    if device_type != "cpu":
        return f"compute on {device_type}; {workers} loader workers"
    threads, why = compute_threads(requested, workers, processes)
    torch.set_num_threads(threads)
    return f"CPU threads: {threads} ({why}); {workers} loader workers"


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX), as oneDNN decides it.

    Without it (an AVX2-only CPU, or AVX-512 without BF16) bf16 autocast still runs, on emulated
    kernels: a training step is many times slower than in fp32 (benchmarks/README.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: trust the kernel level torch picked
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_precision(precision: str, device_type: str) -> str:
    """``train.precision=auto``: bf16 where it is native (a CUDA GPU with bf16, a CPU with AVX-512
    BF16 or AMX), else fp32. Any other value is returned as it is."""
    if precision != "auto":
        return precision
    if device_type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # an older torch: no emulation to exclude
            native = torch.cuda.is_bf16_supported()
        return "bf16" if native else "fp32"
    return "bf16" if device_type == "cpu" and native_bf16() else "fp32"


def precision_note(precision: str, device_type: str) -> str | None:
    """A warning for ``train.precision=bf16`` on a CPU without native bf16, else None."""
    if precision != "bf16" or device_type != "cpu" or native_bf16():
        return None
    return (f"train.precision=bf16, but this CPU has no native bf16 (torch CPU kernels: "
            f"{torch.backends.cpu.get_cpu_capability()}; no AVX-512 BF16 or AMX): bf16 runs on emulated kernels, "
            f"many times slower than fp32. Set train.precision=fp32 (or auto) for this machine.")


class SlowdownDetector:
    """Says once when the median step time of the last ``window`` steps stays more than
    ``factor`` times the run's best window for ``patience`` windows in a row."""

    def __init__(self, window: int = 20, factor: float = 2.0, patience: int = 3):
        self.window, self.factor, self.patience = window, factor, patience
        self.times: list[float] = []
        self.best = math.inf
        self.slow_windows = 0
        self.reported = False

    def observe(self, seconds: float) -> str | None:
        """Record one step's time; returns the warning the first time the slowdown holds."""
        self.times.append(seconds)
        if len(self.times) < self.window:
            return None
        median, self.times = statistics.median(self.times), []
        self.best = min(self.best, median)
        self.slow_windows = self.slow_windows + 1 if median > self.factor * self.best else 0
        if self.slow_windows < self.patience or self.reported:
            return None
        self.reported = True
        threads = torch.get_num_threads()
        advice = ("On a CPU, fewer threads suffer less from that: set train.threads (now "
                  f"{threads}) lower, e.g. train.threads=1, or free the cores." if threads > 1 else
                  "This run already uses one thread: free the cores.")
        return (f"steps are {median / self.best:.1f}x slower than this run's best ({median:.2f} s vs "
                f"{self.best:.2f} s per step) for {self.patience * self.window} steps: another process is "
                f"probably using this machine's cores. {advice}")


class ThreadTuner:
    """Keeps a CPU run on the faster of its candidate thread counts as the machine's load changes.

    Candidates: ``max_threads``, halved down to 1. A trial times ``window`` steps on each
    candidate (the first step after a change is not counted) and keeps the fastest. A trial
    runs at the start, whenever the current count's median step time rises above ``factor``
    times what its last trial measured, and every ``recheck_steps`` steps (a busy machine
    may become idle again). On one thread there is nothing to tune.
    """

    def __init__(self, max_threads: int, window: int = 6, factor: float = 1.4, recheck_steps: int = 300):
        self.candidates = sorted({max(1, max_threads >> k) for k in range(max_threads.bit_length())}, reverse=True)
        self.window, self.factor, self.recheck_steps = window, factor, recheck_steps
        self.queue: list[int] = list(self.candidates) if len(self.candidates) > 1 else []
        self.results: dict[int, float] = {}
        self.threads = self.candidates[0]
        self.expected = math.inf  # the median the current count had in its trial
        self.times: list[float] = []
        self.steps_since_trial = 0
        self.changes: list[tuple[int, int]] = []  # (step count at the change, threads)
        self._set(self.queue.pop(0) if self.queue else self.threads)

    def _set(self, threads: int) -> None:
        self.threads = threads
        self.times = []
        self.skip = 1  # the step after a change pays for starting threads
        torch.set_num_threads(threads)

    def observe(self, seconds: float, step: int) -> str | None:
        """Record one step's time; returns a log line when the thread count changed."""
        if len(self.candidates) == 1:
            return None
        if self.skip:
            self.skip -= 1
            return None
        self.times.append(seconds)
        self.steps_since_trial += 1
        if len(self.times) < self.window:
            return None
        median = statistics.median(self.times)
        self.times = []
        if self.queue or self.threads not in self.results:
            return self._trial_step(median, step)
        if median > self.factor * self.expected or self.steps_since_trial >= self.recheck_steps:
            self.remeasure()
        return None

    def remeasure(self) -> None:
        """Time every candidate again from the next step (the machine's load or the step changed)."""
        if len(self.candidates) > 1:
            self.queue, self.results = list(self.candidates), {}
            self._set(self.queue.pop(0))

    def _trial_step(self, median: float, step: int) -> str | None:
        self.results[self.threads] = median
        if self.queue:
            self._set(self.queue.pop(0))
            return None
        best = min(self.results, key=self.results.get)
        self.expected, self.steps_since_trial = self.results[best], 0
        self.queue = []
        previous = self.changes[-1][1] if self.changes else None
        self._set(best)
        self.skip = 0  # no restart when the count stays; one wasted step otherwise is fine
        if best == previous:
            return None
        self.changes.append((step, best))
        timings = ", ".join(f"{t} threads {s:.2f} s" for t, s in sorted(self.results.items()))
        return f"CPU threads: {best} (step times measured at step {step}: {timings})"
