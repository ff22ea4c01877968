"""train.trackers: Accelerate's experiment trackers get the resolved config and the scalars log.jsonl gets.

TensorBoard (the default) and MLflow, offline, with a local file store.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vaegan.cli import main
from vaegan.config import ConfigError, Config, active_trackers, from_dict, load_config
from vaegan.storage.configs import read_run_config
from vaegan.training.trainer import Trainer, tracker_config

from conftest import tiny_config

mlflow = pytest.importorskip("mlflow")  # in the test extra (mlflow-skinny): pip install -e .[test]

STEPS = ["train.max_steps=4", "train.log_every_steps=2", "train.eval_every_steps=4", "train.eval_num_images=16"]


def _logged(run: Path) -> dict[int, dict[str, float]]:
    """{step: scalars} of the log.jsonl lines the trackers get (flush steps and evaluations)."""
    steps: dict[int, dict[str, float]] = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "note" in record:
            continue
        step = record.pop("step")
        if step % 2 == 0:
            steps.setdefault(step, {}).update(record)
    return steps


def _tensorboard_scalars(run: Path) -> dict[int, dict[str, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    found: dict[int, dict[str, float]] = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            found.setdefault(event.step, {})[tag] = event.value
    return found


def test_tensorboard_and_mlflow_get_the_config_and_the_same_scalars(tmp_path, monkeypatch):
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this to use a local folder
    cfg = tiny_config(*STEPS, "train.tensorboard=true", "train.trackers=[tensorboard, mlflow]",
                      "train.run_name=tracked")
    run = tmp_path / "run"
    Trainer(cfg, run).fit()
    logged = _logged(run)
    assert sorted(logged) == [2, 4] and "loss/kl" in logged[2] and "eval/psnr" in logged[4]

    # TensorBoard: every scalar at every logged step, and the resolved config as hyperparameters.
    board = _tensorboard_scalars(run)
    for step, values in logged.items():
        assert set(values) <= set(board[step])
        for key, value in values.items():
            assert board[step][key] == pytest.approx(value, rel=1e-6, abs=1e-30), (step, key)
    hparams = [yaml.safe_load(p.read_text()) for p in (run / "tb").glob("*/hparams.yml")]
    assert hparams == [tracker_config(cfg)]
    assert hparams[0]["loss.gamma"] == cfg.loss.gamma and hparams[0]["train.trackers"] == "tensorboard,mlflow"

    # MLflow: one run named for the run folder in the 'vaegan' experiment, same config, same scalars.
    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("vaegan")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == "tracked" and runs[0].info.status == "FINISHED"
    assert runs[0].data.params == {k: str(v) for k, v in tracker_config(cfg).items()}
    for key in logged[2]:
        history = {m.step: m.value for m in client.get_metric_history(runs[0].info.run_id, key)}
        expected = {step: values[key] for step, values in logged.items() if key in values}
        assert history == pytest.approx(expected, rel=1e-6), key
    assert {m.step for m in client.get_metric_history(runs[0].info.run_id, "eval/psnr")} == {4}


def test_tensorboard_is_the_default_and_train_tensorboard_false_still_turns_it_off(tmp_path):
    assert Config().train.trackers == ["tensorboard"] and active_trackers(Config().train) == ["tensorboard"]
    cfg = load_config(None, ["train.tensorboard=false"])
    assert active_trackers(cfg.train) == []
    cfg = load_config(None, ["train.tensorboard=false", "train.trackers=[tensorboard, mlflow]"])
    assert active_trackers(cfg.train) == ["mlflow"]
    # A run config written before train.trackers existed loads (and resumes) as it trained.
    for tensorboard, expected in ((True, ["tensorboard"]), (False, [])):
        saved = Config().to_dict()
        del saved["train"]["trackers"]
        saved["train"]["tensorboard"] = tensorboard
        run = tmp_path / f"old-{tensorboard}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps(saved))
        assert active_trackers(read_run_config(run).train) == expected
        assert active_trackers(from_dict(saved).train) == expected


def test_tracker_names_are_checked(tmp_path):
    assert load_config(None, ["train.trackers=mlflow,wandb"]).train.trackers == ["mlflow", "wandb"]
    assert load_config(None, ["train.trackers=none"]).train.trackers == []
    assert load_config(None, ["train.trackers=[]"]).train.trackers == []
    with pytest.raises(ConfigError, match=r"'train.trackers': unknown tracker 'tensorbord'; choose from \["):
        load_config(None, ["train.trackers=[tensorbord]"])
    with pytest.raises(ConfigError, match="expected a list of names"):
        load_config(None, ["train.trackers=3"])


def test_a_tracker_whose_package_is_missing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(ConfigError, match=r"'mlflow' needs its package, which is not installed here: pip install "
                                          r"mlflow \(or leave mlflow out of train.trackers\)"):
        Trainer(tiny_config("train.trackers=[mlflow]"), tmp_path / "run")
    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart_vaegan.yaml"
    assert main(["train", "--config", str(config), f"train.out_dir={tmp_path}", "train.trackers=[wandb]"]) == 2
    assert "pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "quickstart_vaegan" / "checkpoints").exists()
