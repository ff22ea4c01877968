"""The bench's contention section: the toolkit's default CPU step on an idle and on a busy machine.

For each phase (idle; one busy competitor process, started and stopped here) the VAE-GAN
training step, in the precision the presets' ``train.precision=auto`` picks on this CPU (bf16
where it is native, else fp32), runs with each fixed thread count (1 and the usable CPUs) and with the default
(``train.threads=auto``: the policy's count, re-tuned by ``vaegan.threads.ThreadTuner`` as it
would be inside ``Trainer.fit``). Images/s come from the median step time after a warm-up long
enough for the tuner's first trial. Targets: busy, the default keeps >= 90% of the best fixed
count; idle, >= 95% of it. Run it with ``OMP_NUM_THREADS`` unset (that variable fixes the
count and turns the tuner off).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vaegan.config import load_config
from vaegan.threads import resolve_precision, usable_cpus
from vaegan.training.trainer import Trainer

TARGETS = {"busy": 0.90, "idle": 0.95}
PRECISION = resolve_precision("auto", "cpu")  # what a preset trains in here: emulated bf16 says nothing


def _trainer(s, threads: int | str, run_dir: Path) -> Trainer:
    cfg = load_config(None, [
        "model.kind=vaegan", "data.dataset=faces", f"data.resolution={s.resolution}",
        f"data.num_images={max(64, s.batch_size)}", f"train.batch_size={s.batch_size}", f"train.precision={PRECISION}",
        "train.channels_last=true", "train.tensorboard=false", "train.progress=false", f"train.threads={threads}",
    ])
    return Trainer(cfg, run_dir)


def _img_per_s(trainer: Trainer, batch: torch.Tensor, warmup: int, steps: int) -> float:
    """Median images/s over ``steps`` after ``warmup``; the tuner (if any) sees every step, as in fit()."""
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        trainer.train_step(batch)
        seconds = time.perf_counter() - start
        if trainer.thread_tuner is not None:
            trainer.thread_tuner.observe(seconds, trainer.step)
        if i >= warmup:
            times.append(seconds)
    return batch.shape[0] / statistics.median(times)


def _competitor() -> subprocess.Popen:
    """One process that keeps one core busy (pure Python spinning)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure_contention(s, batch: torch.Tensor, steps: int = 12) -> dict:
    cpus, why = usable_cpus()
    counts = sorted({1, cpus})
    before = torch.get_num_threads()
    tuner_warmup = 2 * (len(counts) * 7) + 2  # the first trial: 7 steps per candidate, with room
    out = {"usable_cpus": cpus, "why": why, "steps": steps, "precision": PRECISION, "phases": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for phase in ("idle", "busy"):
                competitor = _competitor() if phase == "busy" else None
                try:
                    time.sleep(0.5 if competitor else 0)
                    row = {f"{n} threads": _img_per_s(_trainer(s, n, Path(tmp) / f"{phase}{n}"), batch, 3, steps)
                           for n in counts}
                    default = _trainer(s, "auto", Path(tmp) / f"{phase}-auto")
                    row["default"] = _img_per_s(default, batch, tuner_warmup, steps)
                    row["default_threads"] = torch.get_num_threads()
                finally:
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
                best = max(v for k, v in row.items() if k.endswith(" threads"))
                row["default_vs_best"] = row["default"] / best
                out["phases"][phase] = row
    finally:
        torch.set_num_threads(before)
    return out


def report_lines(c: dict) -> list[str]:
    lines = ["", f"Contention: VAE-GAN {c.get('precision', 'bf16')} step, default (train.threads=auto) vs fixed thread counts; usable CPUs "
                 f"{c['usable_cpus']} ({c['why']}); median of {c['steps']} steps after warm-up",
             f"  {'phase':<28} " + " ".join(f"{k:>11}" for k in c["phases"]["idle"] if k.endswith("threads") and k != "default_threads")
             + f" {'default':>9} {'(threads)':>9} {'default/best':>13}"]
    for phase, row in c["phases"].items():
        fixed = " ".join(f"{v:>11.1f}" for k, v in row.items() if k.endswith(" threads"))
        name = "idle" if phase == "idle" else "one busy competitor process"
        ok = "met" if row["default_vs_best"] >= TARGETS[phase] else "MISSED"
        lines.append(f"  {name:<28} {fixed} {row['default']:>9.1f} {row['default_threads']:>9} "
                     f"{row['default_vs_best']:>12.0%}  (target >= {TARGETS[phase]:.0%}: {ok})")
    lines.append("  (img/s)")
    return lines
