#!/usr/bin/env python
"""Throughput of training, sampling, FID features and data loading, against a straightforward
reference step and this machine's own ceiling (GitHub issue #6).

    python benchmarks/bench.py                       # 64x64, batch 64, Larsen networks
    python benchmarks/bench.py --quick               # 32x32, fewer rounds: minutes on 2 CPU cores
    python benchmarks/bench.py --json bench.json --device cuda

Each group of variants is timed interleaved, one call of each per round, so load from other
processes slows every variant alike. Speeds use each variant's best round; ratios are the median
over rounds of the per-round ratio. See benchmarks/README.md for what each number means.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.contention import measure_contention, report_lines  # noqa: E402
from benchmarks.reference_step import reference_step  # noqa: E402
from vaegan.config import load_config  # noqa: E402
from vaegan.data import CachedImages, CelebA, Faces, prepare  # noqa: E402
from vaegan.images import to_float  # noqa: E402
from vaegan.training.trainer import Trainer  # noqa: E402

CELEBA_ROOT = ROOT.parent / "shared" / "data" / "celeba-subset"
SECTIONS = ("ceiling", "training", "sampling", "fid", "data", "contention")
TARGETS = {"step_vs_reference": 3.0, "flops_fraction": 0.40, "cache_vs_step": 10.0}


@dataclass
class Settings:
    device: str
    resolution: int
    batch_size: int
    rounds: int
    quick: bool
    threads: int
    all_formats: bool = False
    compile: bool = False


@dataclass
class Variant:
    """One training configuration: the toolkit's Trainer, or the reference step."""

    name: str
    kind: str  # vaegan | vae
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    reference: bool = False
    threads: int = 0  # intra-op threads while it runs; 0: the run's setting
    compiled: bool = False

    @property
    def config_key(self) -> tuple:
        """What decides FLOPs and memory (not the thread count)."""
        return self.kind, self.precision, self.channels_last, self.reference, self.compiled


@contextlib.contextmanager
def threads(n: int):
    """torch's intra-op thread count set to ``n`` (0: unchanged) within the block."""
    before = torch.get_num_threads()
    if not n or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# Timing.


def synchronizer(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def interleaved(fns: dict, rounds: int, sync, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, timed in turns: {name: [seconds, one per round]}."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of slow/fast: how many times faster ``fast`` ran, round by round."""
    return statistics.median(a / b for a, b in zip(slow, fast))


# ----------------------------------------------------------------------------------------------
# The machine's ceiling.


def ceiling_probes(s: Settings) -> tuple[dict, dict]:
    """(functions, facts) for the ceiling: a large matrix product per dtype and the
    discriminator's 128 -> 256 channel 5x5 stride-2 convolution, channels last; on a CPU with
    several threads, at the run's thread count and at one thread."""
    dev, cuda = torch.device(s.device), s.device.startswith("cuda")
    n = 8192 if cuda else (2048 if s.quick else 4096)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, **({"fp16": torch.float16} if cuda else {})}
    fns, info = {}, {}
    for t in [0] if cuda or s.threads == 1 else [0, 1]:
        suffix = f", {s.threads if t == 0 else t} thr" if not cuda else ""
        for name, dtype in dtypes.items():
            a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
            fns[f"matmul {name}{suffix}"] = lambda a=a, b=b, t=t: _with_threads(t, lambda: a @ b)
            info[f"matmul {name}{suffix}"] = (2 * n**3, f"{n}^3", name, t)
        if cuda:
            a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
            fns["matmul tf32"] = lambda a=a, b=b: _tf32(lambda: a @ b)
            info["matmul tf32"] = (2 * n**3, f"{n}^3", "tf32", t)
        r, bsz = s.resolution // 2, s.batch_size
        for name, dtype in dtypes.items():
            x = torch.randn(bsz, 128, r, r, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
            w = torch.randn(256, 128, 5, 5, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
            fns[f"conv {name}{suffix}"] = lambda x=x, w=w, t=t: _with_threads(t, lambda: F.conv2d(x, w, stride=2, padding=2))
            info[f"conv {name}{suffix}"] = (2 * bsz * 256 * 128 * 25 * (r // 2) ** 2,
                                            f"{bsz}x128x{r}x{r} * 256x128x5x5 /2", name, t)
    return fns, info


def ceiling_results(s: Settings, info: dict, times: dict) -> dict:
    return {key: {"flop_per_s": info[key][0] / min(times[key]), "shape": info[key][1], "dtype": info[key][2],
                  "threads": info[key][3] or s.threads} for key in info}


def measure_ceiling(s: Settings) -> dict:
    """The ceiling on its own (the training section times the same probes between its steps)."""
    fns, info = ceiling_probes(s)
    return ceiling_results(s, info, interleaved(fns, 4 if s.quick else 8, synchronizer(s.device)))


def _with_threads(n: int, fn):
    with threads(n):
        return fn()


def _tf32(fn):
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return fn()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


# ----------------------------------------------------------------------------------------------
# Training steps.


def variants(s: Settings) -> list[Variant]:
    """The reference and the toolkit's VAE-GAN and VAE per precision.

    On a CPU run with several threads, the reference and the fastest configurations also run at
    one thread: on an oversubscribed machine oneDNN's multi-threaded bf16 kernels (weight
    gradients above all) stall, and one thread wins.
    """
    cuda = s.device.startswith("cuda")
    low = ["bf16", "fp16"] if cuda else ["bf16"]
    formats = [True, False] if s.all_formats else [True]
    fmt = lambda cl: "channels-last" if cl else "contiguous"  # noqa: E731
    out = [Variant("reference fp32", "vaegan", "fp32", False, reference=True)]
    for kind in ("vaegan", "vae"):
        out += [Variant(f"{kind} {p} {fmt(cl)}", kind, p, cl) for p in ["fp32", *low] for cl in formats]
    if s.compile:
        out.append(Variant(f"vaegan bf16 {fmt(True)} compiled", "vaegan", "bf16", True, compiled=True))
    if not cuda and s.threads > 1:
        one = [v for v in out if v.reference or (v.kind == "vaegan" and v.precision == "bf16" and v.channels_last
                                                 and not v.compiled)]
        out += [Variant(f"{v.name}, 1 thread", v.kind, v.precision, v.channels_last, v.reference, threads=1)
                for v in one]
    return out


def make_trainer(s: Settings, v: Variant, run_dir: Path) -> Trainer:
    cfg = load_config(None, [
        f"model.kind={v.kind}", "data.dataset=faces", f"data.resolution={s.resolution}",
        f"data.num_images={max(64, s.batch_size)}", f"train.batch_size={s.batch_size}",
        f"train.precision={v.precision}", f"train.channels_last={str(v.channels_last).lower()}",
        "train.tensorboard=false", "train.progress=false",
        f"train.threads={torch.get_num_threads()}",  # the bench's count, not the policy's (see the contention section)
    ])
    trainer = Trainer(cfg, run_dir)
    for net in trainer.nets.values():
        net.train()
    if v.compiled:
        trainer.nets.update({k: torch.compile(net) for k, net in trainer.nets.items()})  # the update reads this dict
    return trainer


def image_batch(s: Settings) -> torch.Tensor:
    """A uint8 batch of built-in faces (B, 3, R, R), on the device."""
    faces = Faces(s.batch_size, s.resolution, seed=0)
    return torch.stack([faces.read(i) for i in range(s.batch_size)]).to(s.device)


def make_step(s: Settings, v: Variant, batch: torch.Tensor, run_dir: Path):
    """(step function, its Trainer): one training iteration on ``batch`` per call."""
    trainer = make_trainer(s, v, run_dir)
    if not v.reference:
        def step():
            with threads(v.threads):
                trainer.train_step(batch)

        return step, trainer
    # The reference: copies of the same initial networks, contiguous, float32, stock RMSprop.
    cfg = trainer.cfg
    nets = {k: copy.deepcopy(trainer.accelerator.unwrap_model(n)).to(memory_format=torch.contiguous_format)
            for k, n in trainer.nets.items()}
    opts = {k: torch.optim.RMSprop(n.parameters(), lr=cfg.optim.lr, alpha=cfg.optim.alpha, eps=cfg.optim.eps)
            for k, n in nets.items()}
    b, d = batch.shape[0], cfg.model.latent_dim

    def step():
        with threads(v.threads):
            x = to_float(batch)
            eps, z_prior = torch.randn(b, d, device=batch.device), torch.randn(b, d, device=batch.device)
            reference_step(nets, opts, x, eps, z_prior, cfg.loss, cfg.loss.beta)

    return step, trainer


def count_flops(fn) -> int | None:
    """FLOPs of one call (forward and backward), or None where the counter cannot follow it."""
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    except Exception as e:  # e.g. a compiled graph the counter's dispatch mode cannot trace
        print(f"FLOP count failed: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    return counter.get_total_flops()


def measure_training(s: Settings, memory: bool, probes: tuple[dict, dict] | None = None):
    """Every variant's images/s (interleaved), FLOPs per step and peak memory; the plain toolkit
    Trainers (default threads, not compiled) by name, for the sampling benchmark; and the
    times of ``probes`` (ceiling functions), run between the steps of every round."""
    batch = image_batch(s)
    sync = synchronizer(s.device)
    chosen = variants(s)
    steps, trainers = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, v in enumerate(chosen):
            steps[v.name], trainers[v.name] = make_step(s, v, batch, Path(tmp) / f"run{i}")
        compile_s = {}
        for v in list(chosen):  # the first call (compilation, oneDNN kernel creation) is timed on its own
            start = time.perf_counter()
            try:
                steps[v.name]()
            except Exception as e:
                if not v.compiled:
                    raise
                print(f"{v.name}: torch.compile failed, left out: {type(e).__name__}: {e}", file=sys.stderr)
                chosen.remove(v)
                del steps[v.name], trainers[v.name]
                continue
            sync()
            compile_s[v.name] = time.perf_counter() - start
        probe_fns = probes[0] if probes else {}
        times = interleaved({**steps, **probe_fns}, s.rounds, sync, warmup=0)
        references = {v.threads: v.name for v in chosen if v.reference}
        flops, rows = {}, []
        distinct = list({v.config_key: v for v in chosen if not v.compiled}.values())
        memory_bytes = peak_memory(s, distinct, steps) if memory else {}
        for v in chosen:
            t = times[v.name]
            if v.config_key not in flops:
                flops[v.config_key] = count_flops(steps[v.name])
            row = {**asdict(v), "img_per_s": s.batch_size / min(t),
                   "img_per_s_median": s.batch_size / statistics.median(t), "step_s": min(t),
                   "first_step_s": compile_s[v.name], "step_s_all": t, "flop": flops[v.config_key],
                   "flop_per_s": flops[v.config_key] and flops[v.config_key] / min(t),
                   "peak_mem_bytes": memory_bytes.get(v.config_key)}
            if v.kind == "vaegan" and v.threads in references:
                row["vs_reference"] = paired_ratio(times[references[v.threads]], t)
            rows.append(row)
    plain = {v.name for v in chosen if not (v.threads or v.reference or v.compiled)}
    return rows, {k: t for k, t in trainers.items() if k in plain}, {k: times[k] for k in probe_fns}


def peak_memory(s: Settings, chosen: list[Variant], steps: dict) -> dict[tuple, int]:
    """Per configuration, the peak memory of one steady-state step beyond what persists between
    steps (weights, optimizer state): CUDA's max allocated here, or on the CPU the resident-set
    high-water mark in one fresh process."""
    if not s.device.startswith("cuda"):
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            peaks = pool.apply(_memory_probe, (asdict(s), [asdict(v) for v in chosen]))
        return {v.config_key: peak for v, peak in zip(chosen, peaks)}
    out = {}
    for v in chosen:
        steps[v.name]()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        steps[v.name]()
        torch.cuda.synchronize()
        out[v.config_key] = torch.cuda.max_memory_allocated() - before
    return out


def _proc_status_bytes(field: str) -> int:
    """VmRSS (resident now) or VmHWM (resident high-water mark) of this process, in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def _memory_probe(settings: dict, variants: list[dict]) -> list[int]:
    """In a fresh process, per variant: one step, then the RSS high-water mark over a second step
    minus RSS before it. Before the second step, freed heap goes back to the system (malloc_trim)
    and the mark is reset (clear_refs); VmHWM, not ru_maxrss, which Linux carries over from the
    parent process."""
    s = Settings(**settings)
    torch.set_num_threads(s.threads)
    os.environ["ACCELERATE_USE_CPU"] = "1"
    libc, peaks = ctypes.CDLL("libc.so.6"), []
    batch = image_batch(s)
    with tempfile.TemporaryDirectory() as tmp:
        for i, variant in enumerate(variants):
            step, trainer = make_step(s, Variant(**variant), batch, Path(tmp) / f"run{i}")
            step()
            del trainer
            gc.collect()
            libc.malloc_trim(0)
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
            before = _proc_status_bytes("VmRSS")
            step()
            peaks.append(_proc_status_bytes("VmHWM") - before)
            del step
            gc.collect()
            libc.malloc_trim(0)
    return peaks


# ----------------------------------------------------------------------------------------------
# Sampling, FID features, data loading.


def measure_sampling(s: Settings, trainers: dict) -> list[dict]:
    """Prior samples per second: the (EMA or live) decoder in eval mode, no gradients."""
    n = 128 if s.quick else 256
    fns = {}
    for trainer in trainers.values():
        if trainer.cfg.model.kind == "vaegan":
            vae = trainer.inference_model().eval()

            def sample(vae=vae, trainer=trainer):
                with torch.no_grad(), trainer.autocast():
                    vae.sample(n)

            fns[f"decoder {trainer.cfg.train.precision} {'channels-last' if trainer.cfg.train.channels_last else 'contiguous'}"] = sample
    times = interleaved(fns, 3 if s.quick else 6, synchronizer(s.device))
    return [{"name": k, "img_per_s": n / min(t), "batch": n} for k, t in times.items()]


def measure_fid_features(s: Settings) -> dict:
    """FID feature extraction: Inception-v3 pool3 if its weights are here, else the test extractor."""
    from vaegan.metrics.features import INCEPTION, MissingWeightsError, make_extractor, register_random_extractor

    try:
        extractor = make_extractor(INCEPTION, download=False, device=s.device)
        label = "Inception-v3 pool3 (FID's)"
    except MissingWeightsError:
        extractor = make_extractor(register_random_extractor(), device=s.device)
        label = "random-conv test extractor (Inception weights absent; not FID's cost)"
    n = 16 if s.quick and not s.device.startswith("cuda") else 64
    images = torch.randint(0, 256, (n, 3, s.resolution, s.resolution), dtype=torch.uint8, device=s.device)
    times = interleaved({"fid": lambda: extractor(images)}, 3 if s.quick else 5, synchronizer(s.device))
    return {"extractor": label, "img_per_s": n / min(times["fid"]), "batch": n}


def measure_data(s: Settings, celeba_root: Path) -> list[dict]:
    """Images/s of each way the trainer can get its uint8 batches (one process, no workers)."""
    rows, r, bsz = [], s.resolution, s.batch_size
    n_faces = 64 if s.quick else 256
    faces = Faces(n_faces, r, seed=0)
    t = interleaved({"faces": lambda: [faces.read(i) for i in range(n_faces)]}, 2, lambda: None, warmup=0)
    rows.append({"name": "Faces rendering (dataset.read)", "img_per_s": n_faces / min(t["faces"])})

    with tempfile.TemporaryDirectory() as tmp:
        n_cache = 256 if s.quick else 1024
        prepare(Faces(n_cache, r, seed=1), Path(tmp) / "faces.u8", num_workers=0, progress=False)
        cache = CachedImages(Path(tmp) / "faces.u8")
        gen = torch.Generator().manual_seed(0)
        index_batches = [torch.randperm(n_cache, generator=gen)[:bsz].tolist() for _ in range(50)]
        t = interleaved({"cache": lambda: [cache.get_batch(i) for i in index_batches]}, 5, lambda: None)
        rows.append({"name": "CachedImages.get_batch (prepared cache)", "img_per_s": 50 * bsz / min(t["cache"])})

    if (celeba_root / "list_eval_partition.txt").is_file():
        celeba = CelebA(celeba_root, "train", r)
        n_jpeg = 32 if s.quick else 128
        t = interleaved({"celeba": lambda: [celeba.read(i) for i in range(n_jpeg)]}, 2, lambda: None)
        rows.append({"name": "CelebA JPEG decode + crop + resize", "img_per_s": n_jpeg / min(t["celeba"])})
    else:
        rows.append({"name": f"CelebA JPEG decode (skipped: no {celeba_root})", "img_per_s": None})
    return rows


# ----------------------------------------------------------------------------------------------
# Report.


def _fmt(x, unit: str = "", digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}{unit}"


def summarize(results: dict) -> dict:
    """The issue's three targets for the toolkit's step (the best of its uncompiled configurations)."""
    out, env = {}, results["env"]
    train = results.get("training", [])
    ceiling = results.get("ceiling", {})

    def matmul_peak(n_threads: int) -> float | None:
        """The fastest matrix product at that thread count, in any precision: bf16/fp16 where the
        hardware has it, fp32 where low precision is emulated (an AVX2-only CPU)."""
        peaks = [c["flop_per_s"] for k, c in ceiling.items() if k.startswith("matmul") and c["threads"] == n_threads]
        return max(peaks, default=None)

    rows = [r for r in train if r["kind"] == "vaegan" and not (r["reference"] or r["compiled"]) and "vs_reference" in r]
    if rows:
        best = max(rows, key=lambda r: r["vs_reference"])
        n_threads = best["threads"] or env["threads"]
        entry = {"variant": best["name"], "step_vs_reference": best["vs_reference"], "img_per_s": best["img_per_s"],
                 "flop_per_s": best["flop_per_s"]}
        peak = matmul_peak(n_threads) if env["device"] == "cpu" else matmul_peak(env["threads"])
        if peak and best["flop_per_s"]:
            entry["flops_fraction"] = best["flop_per_s"] / peak
        out["toolkit"] = entry
    consumption = max((r["img_per_s"] for r in train if not r["reference"]), default=None)
    for row in results.get("data", []):
        if consumption and row["img_per_s"]:
            row["vs_training"] = row["img_per_s"] / consumption
            if row["name"].startswith("CachedImages"):
                out["cache_vs_step"] = row["vs_training"]
    return out


def report(results: dict) -> str:
    env, lines = results["env"], []
    lines.append(f"vaegan benchmark: {env['device_name']} ({env['device']}, {env['threads']} threads), torch "
                 f"{env['torch']}, {env['resolution']}x{env['resolution']}, batch {env['batch_size']}, "
                 f"Larsen networks (default ModelConfig){', quick' if env['quick'] else ''}")
    if "ceiling" in results:
        lines += ["", "Machine ceiling (best round; with the training section, timed between its steps)", f"  {'op':<20} {'shape':<34} {'GFLOP/s':>10}"]
        for name, c in results["ceiling"].items():
            lines.append(f"  {name:<20} {c['shape']:<34} {_fmt(c['flop_per_s'] / 1e9, digits=0):>10}")
    if "training" in results:
        lines += ["", f"Training step (interleaved, {results['env']['rounds']} rounds; img/s from the best round, "
                      f"x ref = median of per-round ratios)",
                  f"  {'variant':<58} {'img/s':>7} {'median':>7} {'x ref':>6} {'GFLOP':>7} {'GFLOP/s':>8} "
                  f"{'peak MB':>8} {'1st step s':>10}"]
        for r in results["training"]:
            mem = r.get("peak_mem_bytes")
            lines.append(
                f"  {r['name']:<58} {_fmt(r['img_per_s']):>7} {_fmt(r['img_per_s_median']):>7} "
                f"{_fmt(r.get('vs_reference'), 'x', 2):>6} {_fmt(r['flop'] and r['flop'] / 1e9, digits=0):>7} "
                f"{_fmt(r['flop_per_s'] and r['flop_per_s'] / 1e9, digits=0):>8} "
                f"{_fmt(None if mem is None else mem / 2**20, digits=0):>8} "
                f"{_fmt(r['first_step_s'], digits=1):>10}")
    if "sampling" in results:
        lines += ["", "Sampling (decoder, eval, no grad)"]
        for r in results["sampling"]:
            lines.append(f"  {r['name']:<36} {_fmt(r['img_per_s']):>9} img/s  (batch {r['batch']})")
    if "fid" in results:
        f = results["fid"]
        lines += ["", "FID feature extraction", f"  {f['extractor']:<70} {_fmt(f['img_per_s']):>9} img/s"]
    if "data" in results:
        lines += ["", "Data loading (one process) vs the fastest training step's consumption"]
        for r in results["data"]:
            lines.append(f"  {r['name']:<44} {_fmt(r['img_per_s']):>11} img/s  {_fmt(r.get('vs_training'), 'x', 1):>9}")
    if "contention" in results:
        lines += report_lines(results["contention"])
    summary = results.get("summary", {})
    if summary:
        lines += ["", "Targets (x ref: against the reference at the same thread count; FLOP/s against the fastest "
                      "matmul, any precision, at that thread count)"]

        def check(text, value, target, percent=False):
            shown, goal = (f"{value:.0%}", f"{target:.0%}") if percent else (f"{value:.2f}x", f"{target:g}x")
            lines.append(f"  {text:<72} {shown:>7}  (target >= {goal}: {'met' if value >= target else 'MISSED'})")

        if "toolkit" in summary:
            e = summary["toolkit"]
            lines.append(f"  best VAE-GAN step against its reference = {e['variant']}")
            check("    images/s vs reference", e["step_vs_reference"], TARGETS["step_vs_reference"])
            if "flops_fraction" in e:
                check("    achieved FLOP/s / fastest matmul ceiling", e["flops_fraction"],
                      TARGETS["flops_fraction"], percent=True)
        if "cache_vs_step" in summary:
            check("  CachedImages.get_batch images/s vs the fastest training step", summary["cache_vs_step"],
                  TARGETS["cache_vs_step"])
    return "\n".join(lines)


def environment(s: Settings) -> dict:
    if s.device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(s.device))
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    return {"device": s.device, "device_name": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "resolution": s.resolution, "batch_size": s.batch_size,
            "rounds": s.rounds, "quick": s.quick, "cpu_count": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="32x32 and fewer rounds (a few minutes on 2 CPU cores)")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if available")
    p.add_argument("--resolution", type=int, choices=(32, 64, 128), help="default 64 (32 with --quick)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, help="timed rounds per group (default 5, 3 with --quick)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--all-formats", action="store_true", help="time contiguous as well as channels-last toolkit steps")
    p.add_argument("--compile", action="store_true", help="add a torch.compile'd VAE-GAN bf16 step (slow to compile)")
    p.add_argument("--no-memory", action="store_true", help="skip peak-memory probes (one process per variant on CPU)")
    p.add_argument("--celeba-root", type=Path, default=CELEBA_ROOT)
    args = p.parse_args(argv)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"  # the Trainer's Accelerator then stays on the CPU too
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = [x for x in args.sections.split(",") if x]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    s = Settings(device=device, resolution=args.resolution or (32 if args.quick else 64), batch_size=args.batch_size,
                 rounds=args.rounds or (3 if args.quick else 5), quick=args.quick, threads=torch.get_num_threads(),
                 all_formats=args.all_formats, compile=args.compile)

    results = {"env": environment(s)}
    trainers = {}
    if "training" in sections or "sampling" in sections:
        probes = ceiling_probes(s) if "ceiling" in sections else None
        results["training"], trainers, probe_times = measure_training(s, not args.no_memory, probes)
        if probes:  # timed between the training steps: the same load as the steps saw
            results["ceiling"] = ceiling_results(s, probes[1], probe_times)
        if "training" not in sections:
            del results["training"]
    elif "ceiling" in sections:
        results["ceiling"] = measure_ceiling(s)
    if "sampling" in sections:
        results["sampling"] = measure_sampling(s, trainers)
    if "fid" in sections:
        results["fid"] = measure_fid_features(s)
    if "data" in sections:
        results["data"] = measure_data(s, args.celeba_root)
    if "contention" in sections and device == "cpu":
        results["contention"] = measure_contention(s, image_batch(s))
    results["summary"] = summarize(results)
    print(report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
