"""Failed runs and hostile run folders: every error is one line naming the file or key, leaves the
run folder as it was, and where it gives advice, following the advice works (the run then trains)."""
from __future__ import annotations

import json
import math
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open

from vaegan.cli import main
from vaegan.storage.checkpoint import resolve_checkpoint, save_checkpoint
from vaegan.storage.state import load_state, save_state
from vaegan.training import losses
from vaegan.training.trainer import Trainer, TrainingDiverged

from conftest import tiny_config

SMALL = ["train.batch_size=8", "data.num_images=64", "data.num_workers=0"]


def _snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder`` with its bytes: what 'nothing changed' compares."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _error(capsys) -> str:
    """The CLI's error: exactly one line on stderr, 'vaegan <cmd>: error: ...'."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.match(r"vaegan [\w-]+: error: ", err), err
    return err


def _advice(message: str) -> list[str]:
    """The 'vaegan train --resume RUN [key=value ...]' command a message gives, as main()'s argv."""
    found = re.search(r"vaegan (train --resume \S+(?: [\w.]+=\S+)*)", message)
    assert found, message
    return shlex.split(found.group(1))


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
            if "loss/kl" in json.loads(line)]


def _config_file(tmp_path: Path, *overrides: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(*SMALL, *overrides).to_dict()))
    return path


def _trained(tmp_path: Path, *overrides: str) -> Path:
    run = tmp_path / "run"
    Trainer(tiny_config(*SMALL, *overrides), run).fit()
    return run


# ---------------------------------------------------------------- dead ends after a crash (item 4)

def test_run_killed_before_its_first_checkpoint_restarts_by_following_the_advice(tmp_path, capsys):
    # What a SIGKILL at step 3 leaves: config.json, a log with an unfinished last line, no checkpoint
    # (a save that had begun leaves only its temporary folder).
    config = _config_file(tmp_path, "train.max_steps=4")
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(tiny_config(*SMALL, "train.max_steps=4", f"train.out_dir={tmp_path / 'runs'}",
                                                 "train.run_name=r").to_json())
    (run / "log.jsonl").write_text('{"step": 1, "loss/kl": 1.0}\n{"step": 2, "loss/kl": 1.0}\n{"step": 3, "lo')
    (run / "checkpoints" / ".tmp-step-00000003").mkdir(parents=True)
    before = _snapshot(run)

    fresh = ["train", "--config", str(config), f"train.out_dir={tmp_path / 'runs'}", "train.run_name=r"]
    assert main(fresh) == 2
    err = _error(capsys)
    assert str(run) in err and "holds no checkpoint" in err and "restart it from step 0" in err
    assert _snapshot(run) == before

    assert main(_advice(err)) == 0
    out = capsys.readouterr().out
    assert "from step 0" in out and "1 unreadable line(s)" in out
    assert _steps(run) == [1, 2, 3, 4]  # the stopped attempt's lines are gone, the new ones complete
    assert load_state(resolve_checkpoint(run))["step"] == 4


def _image_folder(root: Path, n: int = 40, bad: int = 36) -> Path:
    """``n`` images, image ``bad`` unreadable: not among the first 32 (the fixed sample inputs), and read
    in the 4th batch of 8 of the seed-0 order, so a run stops at step 3, after a checkpoint every 2 steps."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"img_{i:03d}.png")
    (root / f"img_{bad:03d}.png").write_bytes(b"not an image")
    return root


@pytest.mark.parametrize("checkpoint_every, workers", [(0, 0), (2, 0), (0, 1)],
                         ids=["no-checkpoint", "checkpoint", "loader-worker"])
def test_bad_image_mid_epoch_advice_works(tmp_path, capsys, checkpoint_every, workers):
    images = _image_folder(tmp_path / "images")
    config = _config_file(tmp_path, "data.dataset=folder", f"data.root={images}", "train.max_steps=10",
                          f"train.checkpoint_every_steps={checkpoint_every}", f"data.num_workers={workers}")
    assert main(["train", "--config", str(config), f"train.out_dir={tmp_path / 'runs'}", "train.run_name=r"]) == 2
    err = _error(capsys)
    run = tmp_path / "runs" / "r"
    assert "img_036.png" in err and "Training stopped at step 3" in err
    assert ("restart the run from step 0" in err) == (checkpoint_every == 0)
    assert (f"last good checkpoint is {run / 'checkpoints'}" in err) == (checkpoint_every > 0)
    command = _advice(err)
    assert command[-1] == "data.skip_bad_images=true"
    assert main(command) == 0
    state = load_state(resolve_checkpoint(run))
    assert state["step"] == 10 and state["config"]["data"]["skip_bad_images"] is True
    assert _steps(run) == list(range(1, 11))


def _nan_kl(monkeypatch, from_step: int, trainer: Trainer | None = None):
    """Non-finite KL from ``from_step`` on (every step when no trainer is given)."""
    original = losses.kl_loss

    def kl(posterior):
        value = original(posterior)
        return value * math.nan if trainer is None or trainer.step + 1 >= from_step else value

    monkeypatch.setattr(losses, "kl_loss", kl)


def test_divergence_before_any_checkpoint_says_so_and_the_restart_works(tmp_path, capsys, monkeypatch):
    config = _config_file(tmp_path, "train.max_steps=4", "train.max_nonfinite_steps=2", "optim.lr=3e-4")
    _nan_kl(monkeypatch, 1)
    assert main(["train", "--config", str(config), f"train.out_dir={tmp_path / 'runs'}", "train.run_name=r"]) == 2
    err = _error(capsys)
    run = tmp_path / "runs" / "r"
    assert "2 consecutive steps with non-finite losses" in err and "is intact" not in err
    assert "no checkpoint was written" in err and "restart the run from step 0" in err
    command = _advice(err)
    assert command[-1] == "optim.lr=3e-05"

    monkeypatch.undo()
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "optim.lr 0.0003 -> 3e-05" in out
    state = load_state(resolve_checkpoint(run))
    assert state["step"] == 4 and state["config"]["optim"]["lr"] == 3e-5
    assert all(g["lr"] == 3e-5 for opt in state["optimizers"].values() for g in opt["param_groups"])
    notes = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if "resumed_with" in line]
    assert notes == [{"step": 0, "resumed_with/optim.lr": 3e-5}]


def test_divergence_names_the_last_good_checkpoint_and_its_resume_command_works(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    tr = Trainer(tiny_config(*SMALL, "train.max_steps=8", "train.checkpoint_every_steps=2",
                             "train.max_nonfinite_steps=3", "optim.grad_clip=0"), run)
    _nan_kl(monkeypatch, 5, tr)
    with pytest.raises(TrainingDiverged) as diverged:
        tr.fit()
    message = str(diverged.value)
    assert "\n" not in message and f"the last good checkpoint is {run / 'checkpoints' / 'step-00000004'}" in message
    command = _advice(message)
    assert command[-1] == "optim.lr=3e-05"

    monkeypatch.undo()
    assert main([*command, "optim.grad_clip=1"]) == 0
    assert "optim.lr 0.0003 -> 3e-05, optim.grad_clip 0.0 -> 1.0" in capsys.readouterr().out
    state = load_state(resolve_checkpoint(run))
    assert state["step"] == 8 and state["config"]["optim"]["grad_clip"] == 1.0
    assert all(g["lr"] == 3e-5 for opt in state["optimizers"].values() for g in opt["param_groups"])
    assert _steps(run) == list(range(1, 9))  # the diverged steps' lines were dropped and redone
    notes = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if "resumed_with" in line]
    assert notes == [{"step": 4, "resumed_with/optim.lr": 3e-5, "resumed_with/optim.grad_clip": 1.0}]


def test_resume_refuses_what_changes_the_model_or_data_and_a_config_file(tmp_path, capsys):
    run = _trained(tmp_path, "train.max_steps=1")
    before = _snapshot(run)
    for override in ("model.latent_dim=64", "data.resolution=64", "loss.beta=2", "data.seed=3"):
        assert main(["train", "--resume", str(run), override]) == 2
        err = _error(capsys)
        key = override.split("=")[0]
        assert f"{key} cannot change on --resume" in err
        assert "train.* and data.skip_bad_images, data.num_workers, optim.lr, optim.lr_dis, optim.lr_schedule" in err
    config = _config_file(tmp_path)
    assert main(["train", "--resume", str(run), "--config", str(config)]) == 2
    err = _error(capsys)
    assert f"--config {config} would be ignored" in err
    assert _snapshot(run) == before
    assert main(["train", "--resume", str(run), "train.max_steps=2", "data.num_workers=0"]) == 0


# ---------------------------------------------------------------- corrupt checkpoints (item 6)

def test_corrupt_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys):
    run = _trained(tmp_path, "train.max_steps=4", "train.checkpoint_every_steps=2", "train.keep_checkpoints=2")
    latest = run / "checkpoints" / "step-00000004" / "state.safetensors"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated, as a full disk leaves it

    with pytest.warns(UserWarning, match=r"step-00000004/state\.safetensors is not a readable.*newest intact.*"
                                         r"step-00000002"):
        assert main(["sample", "--checkpoint", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    with pytest.warns(UserWarning, match="step-00000004"):
        assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "e")]) == 0
    with safe_open(str(tmp_path / "e" / "model.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "2"
    # Resume continues from step 2 and writes step 4 again (the end-of-run save is not skipped
    # because a folder of that name exists).
    with pytest.warns(UserWarning, match="step-00000004"):
        assert main(["train", "--resume", str(run), "train.checkpoint_every_steps=0"]) == 0
    assert load_state(run / "checkpoints" / "step-00000004")["step"] == 4
    assert _steps(run) == [1, 2, 3, 4]


def test_choosing_a_checkpoint_reads_each_one_tried_once(tmp_path, monkeypatch):
    """Resolving and checking share one read of each checkpoint tried; loading adds one of the chosen."""
    import vaegan.storage.checkpoint as checkpoint
    import vaegan.storage.state as state

    run = _trained(tmp_path, "train.max_steps=4", "train.checkpoint_every_steps=2", "train.keep_checkpoints=2")
    latest = run / "checkpoints" / "step-00000004" / "state.safetensors"
    latest.write_bytes(latest.read_bytes()[:1000])
    seen, inspect = [], state.inspect_state

    def counting(folder):
        seen.append(Path(folder).name)
        return inspect(folder)

    monkeypatch.setattr(checkpoint, "inspect_state", counting)
    monkeypatch.setattr(state, "inspect_state", counting)
    with pytest.warns(UserWarning, match="step-00000004"):
        folder, skeleton = checkpoint.checked_checkpoint(run)
    assert folder.name == "step-00000002" and skeleton["step"] == 2
    assert seen == ["step-00000004", "step-00000002"]
    seen.clear()
    with pytest.warns(UserWarning, match="step-00000004"):
        assert checkpoint.load_checkpoint(run)[1]["step"] == 2
    assert seen == ["step-00000004", "step-00000002", "step-00000002"]  # choose, then load the tensors


def test_keeping_checkpoints_never_deletes_the_new_one_for_a_stale_newer_one(tmp_path):
    run = _trained(tmp_path, "train.max_steps=2")
    state = load_state(resolve_checkpoint(run))
    stale = run / "checkpoints" / "step-00000009"
    shutil.copytree(run / "checkpoints" / "step-00000002", stale)
    (stale / "state.json").write_text("{")
    save_checkpoint(run, 3, state, keep=1)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000003", "step-00000009"]
    assert resolve_checkpoint(run).name == "step-00000003"  # latest names it; the stale one is not tried first


def test_no_intact_checkpoint_names_them_and_the_advice_restarts_the_run(tmp_path, capsys):
    run = _trained(tmp_path, "train.max_steps=2")
    (run / "checkpoints" / "step-00000002" / "state.json").write_text('{"step": 2, "con')
    before = _snapshot(run)
    for argv in (["sample", "--checkpoint", str(run), "--n", "1", "--out", str(tmp_path / "s.png")],
                 ["train", "--resume", str(run)]):
        assert main(argv) == 2
        err = _error(capsys)
        assert "step-00000002/state.json is not valid JSON" in err and "Delete the corrupt checkpoint" in err
        assert _snapshot(run) == before
    shutil.rmtree(run / "checkpoints")  # as the message says
    assert main(_advice(err)) == 0
    assert load_state(resolve_checkpoint(run))["step"] == 2 and _steps(run) == [1, 2]


# ---------------------------------------------------------------- hostile state.json (item 7)

def _edit_state(run: Path, edit) -> Path:
    folder = resolve_checkpoint(run)
    skeleton = json.loads((folder / "state.json").read_text())
    text = edit(skeleton)
    (folder / "state.json").write_text(text if isinstance(text, str) else json.dumps(skeleton))
    return folder


def _set_model(key, value):
    def edit(skeleton):
        skeleton["config"]["model"][key] = value
    return edit


def _dangling(skeleton):
    skeleton["models"]["encoder"]["fc.weight"] = {"__tensor__": "models.encoder.no_such_tensor"}


def _deep(skeleton):
    return json.dumps(skeleton)[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}"


def _step(skeleton):
    skeleton["step"] = "abc"


@pytest.mark.parametrize("edit, expected", [
    (_set_model("latent_dim", 10**9), r"state\.safetensors: tensor 'models\.encoder\.to_stats\.weight' has shape "
                                      r"\(64, 128\) but the config saved in \S+state\.json needs \(2000000000, 128\)"),
    (_set_model("enc_fc", 10**9), r"state\.safetensors: tensor 'models\.encoder\.fc\.weight' has shape \(128, \d+\) "
                                  r"but the config saved in \S+state\.json needs \(1000000000, \d+\)"),
    (_dangling, r"state\.json refers to tensor 'models\.encoder\.no_such_tensor', which \S+state\.safetensors does "
                r"not hold"),
    (_deep, r"state\.json is nested too deeply"),
    (_step, r"state\.json: 'step' must be a whole number >= 0, got 'abc'"),
], ids=["latent_dim", "enc_fc", "dangling", "deep", "step"])
def test_hostile_state_json_is_one_clear_error_before_anything_is_built(tmp_path, capsys, monkeypatch, edit, expected):
    run = _trained(tmp_path, "train.max_steps=1")
    _edit_state(run, edit)
    before = _snapshot(run)
    import vaegan.storage.pretrained as pretrained
    import vaegan.training.trainer as trainer

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the check")

    # Only the meta-device check may build networks; a real build of these sizes would need terabytes.
    monkeypatch.setattr(pretrained, "build_vae", lambda *a, **k: refuse() if not _on_meta() else _real_vae(*a, **k))
    monkeypatch.setattr(trainer, "build_networks", refuse)
    for argv in (["sample", "--checkpoint", str(run), "--n", "1", "--out", str(tmp_path / "s.png")],
                 ["export", "--checkpoint", str(run), "--out", str(tmp_path / "e")],
                 ["train", "--resume", str(run), "train.max_steps=2"]):
        assert main(argv) == 2, argv
        assert re.search(expected, _error(capsys)), argv
    assert _snapshot(run) == before and not (tmp_path / "e").exists() and not (tmp_path / "s.png").exists()


def test_optimizer_state_of_the_wrong_shape_is_refused_on_resume(tmp_path, capsys):
    run = _trained(tmp_path, "train.max_steps=1")
    folder = resolve_checkpoint(run)
    state = load_state(folder)
    moments = state["optimizers"]["decoder"]["state"]
    key = next(k for k, v in moments[0].items() if torch.is_tensor(v) and v.dim() > 0)
    moments[0][key] = moments[0][key].flatten()[:5].clone()
    save_state(state, folder)
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "train.max_steps=2"]) == 2
    err = _error(capsys)
    assert re.search(rf"state\.json: cannot resume .*optimizers\.decoder: state '{key}' of parameter 0 has shape "
                     r"\(5,\), the parameter \(\d+, \d+\)", err), err
    assert _snapshot(run) == before


def _on_meta() -> bool:
    return torch.empty(()).device.type == "meta"


def _real_vae(*args, **kwargs):
    from vaegan.models import build_vae

    return build_vae(*args, **kwargs)


# ---------------------------------------------------------------- log, out_dir, config source (items 7, 8)

def test_unfinished_log_line_and_lines_after_the_checkpoint_are_dropped_on_resume(tmp_path, capsys):
    run = _trained(tmp_path, "train.max_steps=2")
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 3, "loss/kl": 1.0}\n{"step": 4, "loss/k')  # killed at step 4, mid-line
    assert main(["train", "--resume", str(run), "train.max_steps=4"]) == 0
    out = capsys.readouterr().out
    assert "log.jsonl: dropped 1 line(s) of steps after 2 (they are redone) and 1 unreadable line(s)" in out
    assert _steps(run) == [1, 2, 3, 4]


@pytest.mark.parametrize("where", ["out_dir", "run_dir", "parent"])
def test_out_dir_that_is_a_file_is_a_clear_error(tmp_path, capsys, where):
    blocker = tmp_path / "taken"
    blocker.write_text("mine")
    out_dir = {"out_dir": blocker, "run_dir": tmp_path, "parent": blocker / "deeper"}[where]
    run_name = "taken" if where == "run_dir" else "r"
    config = _config_file(tmp_path)
    assert main(["train", "--config", str(config), f"train.out_dir={out_dir}", f"train.run_name={run_name}"]) == 2
    err = _error(capsys)
    assert f"train.out_dir='{out_dir}'" in err and f"{blocker} is a file, not a folder" in err
    assert blocker.read_text() == "mine"


def test_resume_sample_and_export_read_the_config_saved_in_the_checkpoint(tmp_path, capsys):
    run = _trained(tmp_path, "train.max_steps=1")
    saved = load_state(resolve_checkpoint(run))["config"]
    # config.json is a readable copy: a damaged or edited one changes nothing.
    (run / "config.json").write_text(json.dumps({**saved, "model": {**saved["model"], "latent_dim": 7}}))
    assert main(["sample", "--checkpoint", str(run), "--n", "1", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["train", "--resume", str(run), "train.max_steps=2"]) == 0
    state = load_state(resolve_checkpoint(run))
    assert state["step"] == 2 and state["config"]["model"]["latent_dim"] == saved["model"]["latent_dim"]
    # ... and is written again as the copy of what the run continued with.
    assert json.loads((run / "config.json").read_text()) == state["config"]
    (run / "config.json").write_text("{")
    assert main(["train", "--resume", str(run), "train.max_steps=3"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 3
