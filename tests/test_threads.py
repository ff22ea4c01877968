"""The CPU thread policy: usable CPUs, worker and thread counts, the tuner and the slowdown detector."""
import json

import pytest
import torch

from vaegan import threads
from vaegan.threads import SlowdownDetector, ThreadTuner, cgroup_cpu_limit, compute_threads, loader_workers

from conftest import tiny_config


def test_cgroup_quota_caps_the_cpus(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 3.0
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_threads_are_the_usable_cpus_minus_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 6.5)  # the quota wins over the mask
    assert compute_threads("auto")[0] == 6
    assert compute_threads("auto", workers=2)[0] == 4
    assert compute_threads("auto", processes=2)[0] == 3
    assert compute_threads(3, workers=2) == (3, "train.threads / --threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's environment is a choice too
    assert compute_threads("auto") == (2, "OMP_NUM_THREADS")
    assert loader_workers("auto", cached=True, device_type="cuda") == 0
    assert loader_workers("auto", cached=False, device_type="cuda") == 4
    assert loader_workers("auto", cached=False, device_type="cpu") == 0  # 6 CPUs: no worker fights the compute
    assert loader_workers(3, cached=True, device_type="cpu") == 3


def _drive(tuner, step_time, steps, start=0):
    notes = []
    for i in range(steps):
        note = tuner.observe(step_time(tuner.threads), start + i)
        if note:
            notes.append(note)
    return notes


def test_tuner_follows_the_machine_load():
    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner(2, window=4, factor=1.4, recheck_steps=10_000)
        assert tuner.candidates == [2, 1]
        idle = {2: 1.0, 1: 1.7}  # idle: two threads are faster
        notes = _drive(tuner, idle.get, 40)
        assert tuner.threads == 2 and len(notes) == 1 and "2 threads 1.00 s" in notes[0]
        busy = {2: 3.0, 1: 1.8}  # another process takes a core: two threads spin and wait
        notes = _drive(tuner, busy.get, 40, start=40)
        assert tuner.threads == 1 and torch.get_num_threads() == 1 and "CPU threads: 1" in notes[0]
        # the machine is idle again: only a periodic re-check can see that from one thread
        tuner.recheck_steps = 20
        _drive(tuner, idle.get, 60, start=80)
        assert tuner.threads == 2
    finally:
        torch.set_num_threads(before)


def test_tuner_is_off_with_one_thread():
    tuner = ThreadTuner(1)
    assert tuner.candidates == [1] and _drive(tuner, lambda t: 5.0, 30) == []


@pytest.mark.parametrize("threads", [2, 1])
def test_slowdown_is_reported_once_with_the_override(threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        detector = SlowdownDetector(window=5, factor=2.0, patience=2)
        notes = [detector.observe(1.0) for _ in range(20)]
        notes += [detector.observe(2.5) for _ in range(9)]
        assert not any(notes)  # 1.8 windows: not sustained yet
        notes = [detector.observe(2.5) for _ in range(40)]
    finally:
        torch.set_num_threads(before)
    said = [n for n in notes if n]
    assert len(said) == 1 and "2.5x slower" in said[0]
    if threads > 1:
        assert "set train.threads (now 2) lower" in said[0]
    else:  # nothing to lower: the advice must not be to set what is already set
        assert "train.threads" not in said[0] and "already uses one thread" in said[0]


def test_trainer_logs_its_choice(tmp_path, capsys):
    from vaegan.training.trainer import Trainer

    before = torch.get_num_threads()
    try:
        tr = Trainer(tiny_config("train.threads=1"), tmp_path / "run")
        assert torch.get_num_threads() == 1 and tr.thread_tuner is None and tr.workers == 0
        assert "CPU threads: 1 (train.threads / --threads); 0 loader workers" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("native, precision, warned", [(False, "bf16", True), (True, "bf16", False),
                                                     (False, "fp32", False)])
def test_trainer_warns_of_emulated_bf16(tmp_path, capsys, monkeypatch, native, precision, warned):
    """An AVX2-only CPU runs bf16 autocast on emulated kernels, several times slower than fp32:
    the run says so and names the override, and only then."""
    from vaegan.training.trainer import Trainer

    monkeypatch.setattr(threads, "native_bf16", lambda: native)
    before = torch.get_num_threads()
    try:
        Trainer(tiny_config("train.threads=1", f"train.precision={precision}"), tmp_path / "run")
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert ("no native bf16" in out and "train.precision=fp32" in out) == warned


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_where_it_is_native(tmp_path, monkeypatch, native, expected):
    """train.precision=auto (the presets'): resolved once at the start and recorded in the run's
    config, so a resume continues in what the run trained in."""
    from vaegan.training.trainer import Trainer

    monkeypatch.setattr(threads, "native_bf16", lambda: native)
    assert [threads.resolve_precision(p, "cpu") for p in ("auto", "fp32", "bf16")] == [expected, "fp32", "bf16"]
    assert threads.resolve_precision("auto", "mps") == "fp32"
    before = torch.get_num_threads()
    try:
        cfg = tiny_config("train.threads=1", "train.precision=auto", "train.max_steps=1")
        tr = Trainer(cfg, tmp_path / "run")
        with tr.autocast():
            assert torch.is_autocast_enabled("cpu") == (expected == "bf16")
        tr.fit()
    finally:
        torch.set_num_threads(before)
    assert cfg.train.precision == "auto" and tr.cfg.train.precision == expected  # the caller's config untouched
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["precision"] == expected


def test_cli_threads_option(tmp_path, capsys):
    from vaegan.cli import main

    before = torch.get_num_threads()
    try:
        assert main(["sample", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "s.png"),
                     "--threads", "1"]) == 2  # the command fails (no model), the policy ran first
        assert torch.get_num_threads() == 1 and "CPU threads: 1 (train.threads / --threads)" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("warm", [0, 2])
def test_speed_watch_starts_over_when_the_warm_start_ends(tmp_path, monkeypatch, warm):
    """A warm start's VAE steps are about 3x cheaper than the VAE-GAN's: measured against them, the
    VAE-GAN's steps would read as a machine slowed down by another process."""
    from vaegan.training import trainer as trainer_module

    made = []

    class Recording(SlowdownDetector):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(trainer_module, "SlowdownDetector", Recording)
    before = torch.get_num_threads()
    try:
        tr = trainer_module.Trainer(tiny_config("model.kind=vaegan", f"loss.warm_start_steps={warm}",
                                                "train.max_steps=4", "train.threads=1"), tmp_path / "run")
        tr.fit()
    finally:
        torch.set_num_threads(before)
    assert len(made) == (2 if warm else 1)
    assert tr.slowdown is made[-1]
