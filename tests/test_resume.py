"""Exact resume after SIGKILL, atomic checkpoints, and non-finite losses."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaegan.storage import checkpoint
from vaegan.training import losses
from vaegan.cli import main
from vaegan.storage.state import load_state
from vaegan.training.trainer import Trainer, TrainingDiverged

from conftest import TINY, tiny_config

ROOT = Path(__file__).parents[1]
RUN = [*TINY, "model.kind=vaegan", "train.max_steps=12", "train.checkpoint_every_steps=3", "train.ema_decay=0.9",
       "train.keep_checkpoints=2", "data.hflip=true", "optim.name=adam",
       "optim.lr_schedule=cosine", "optim.lr_warmup_steps=4", "optim.lr_final=0.1",  # the rate is a function of the step
       "loss.agg_kl_weight=0.1"]  # running moments: trainer state outside the networks


def _tensors(state, prefix=""):
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for k, v in state.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from _tensors(v, f"{prefix}.{i}")


def test_killed_run_resumes_bit_identically(tmp_path):
    # Uninterrupted reference, in this process.
    assert main(["train", *RUN, f"train.out_dir={tmp_path / 'a'}", "train.run_name=r",
                 "--config", "configs/quickstart_vaegan.yaml"]) == 0
    # The same run in a child process, SIGKILLed once its first checkpoint exists.
    run_b = tmp_path / "b" / "r"
    cmd = [sys.executable, "-m", "vaegan", "train", "--config", "configs/quickstart_vaegan.yaml", *RUN,
           f"train.out_dir={tmp_path / 'b'}", "train.run_name=r"]
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_b / "checkpoints" / "latest").exists():
        assert child.poll() is None and time.time() < deadline, "child ended before its first checkpoint"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed_at = int(checkpoint.resolve_checkpoint(run_b).name.split("-")[1])
    assert killed_at < 12, "the kill came too late to test anything"
    # Resume and finish.
    assert main(["train", "--resume", str(run_b)]) == 0
    a = load_state(checkpoint.resolve_checkpoint(tmp_path / "a" / "r"))
    b = load_state(checkpoint.resolve_checkpoint(run_b))
    assert a["step"] == b["step"] == 12
    ta, tb = dict(_tensors(a)), dict(_tensors(b))
    assert ta.keys() == tb.keys() and any(".ema." in k or k.startswith(".ema") for k in ta)
    assert ".agg_kl_moments.cov" in ta
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, different[:5]
    log = [line for line in (run_b / "log.jsonl").read_text().splitlines()]
    assert len(log) == 12  # steps redone after the kill are not logged twice


def test_resume_refuses_model_changes(tmp_path, capsys):
    Trainer(tiny_config("train.max_steps=1"), tmp_path / "run").fit()
    assert main(["train", "--resume", str(tmp_path / "run"), "model.latent_dim=64"]) == 2
    err = capsys.readouterr().err
    assert "model.latent_dim cannot change on --resume" in err and "train.* and data.skip_bad_images" in err
    assert main(["train", "--resume", str(tmp_path / "run"), "train.max_steps=2"]) == 0


def test_interrupted_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    tr = Trainer(tiny_config("train.max_steps=2"), tmp_path / "run")
    tr.fit()
    good = checkpoint.resolve_checkpoint(tmp_path / "run")

    def crash(path, tensors, metadata):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(str(path) + ".partial").write_bytes(b"half a file")
        raise KeyboardInterrupt  # as if killed mid-write

    import vaegan.storage.state

    monkeypatch.setattr(vaegan.storage.state, "write_safetensors", crash)
    tr.step = 3
    with pytest.raises(KeyboardInterrupt):
        tr.save()
    assert checkpoint.resolve_checkpoint(tmp_path / "run") == good
    assert load_state(good)["step"] == 2
    monkeypatch.undo()
    tr.save()  # the next save clears the debris
    assert checkpoint.resolve_checkpoint(tmp_path / "run").name == "step-00000003"
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def _nan_kl_on(steps_with_nan, trainer):
    original = losses.kl_loss

    def kl(posterior):
        value = original(posterior)
        return value * math.nan if trainer.step + 1 in steps_with_nan else value

    return kl


def test_nonfinite_step_is_skipped_and_counted(tmp_path, monkeypatch):
    tr = Trainer(tiny_config("train.max_steps=4"), tmp_path / "run")
    monkeypatch.setattr(losses, "kl_loss", _nan_kl_on({2}, tr))
    stream = iter(tr.sampler)
    batch = lambda: torch.stack([tr.dataset[i] for i in next(stream)])
    tr.train_step(batch())
    before = {k: [p.detach().clone() for p in v.parameters()] for k, v in tr.nets.items()}
    logs = tr.train_step(batch())
    assert logs["train/skipped_nonfinite"] == 1.0
    for name, net in tr.nets.items():  # nothing moved on the bad step
        assert all(torch.equal(a, p) for a, p in zip(before[name], net.parameters())), name
    assert tr.train_step(batch())["train/skipped_nonfinite"] == 0.0


def test_consecutive_nonfinite_steps_stop_training(tmp_path, monkeypatch):
    cfg = tiny_config("train.max_steps=20", "train.checkpoint_every_steps=2", "train.max_nonfinite_steps=3")
    tr = Trainer(cfg, tmp_path / "run")
    monkeypatch.setattr(losses, "kl_loss", _nan_kl_on(set(range(5, 100)), tr))
    with pytest.raises(TrainingDiverged, match="3 consecutive steps with non-finite losses.*loss/kl"):
        tr.fit()
    assert tr.nonfinite_total == 3
    folder = checkpoint.resolve_checkpoint(tmp_path / "run")
    state = load_state(folder)
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for _, t in _tensors(state["models"]))
