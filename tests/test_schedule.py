"""The learning-rate schedule: its shape, and that every optimizer steps with it."""
import math

import pytest
import torch

from vaegan.config import ConfigError, load_config
from vaegan.training.schedule import lr_factor
from vaegan.training.trainer import Trainer

from conftest import tiny_config


def optim(*overrides):
    return load_config(None, list(overrides)).optim


def test_warmup_ramps_to_the_base_rate_then_constant_stays():
    o = optim("optim.lr_warmup_steps=4")
    assert [lr_factor(o, s, 100) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(o, 10_000, 100) == 1.0


@pytest.mark.parametrize("kind, middle", [("cosine", 0.5), ("linear", 0.5)])
def test_decay_falls_from_one_to_lr_final_after_the_warmup(kind, middle):
    o = optim(f"optim.lr_schedule={kind}", "optim.lr_warmup_steps=10", "optim.lr_final=0.2")
    assert lr_factor(o, 9, 110) == 1.0 and lr_factor(o, 10, 110) == 1.0
    assert lr_factor(o, 60, 110) == pytest.approx(0.2 + 0.8 * middle)
    assert lr_factor(o, 110, 110) == pytest.approx(0.2) and lr_factor(o, 500, 110) == pytest.approx(0.2)
    values = [lr_factor(o, s, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:])), "the decay is monotone"


def test_cosine_and_linear_differ_where_they_should():
    cos, lin = optim("optim.lr_schedule=cosine"), optim("optim.lr_schedule=linear")
    assert lr_factor(cos, 25, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(lin, 25, 100) == pytest.approx(0.75)


def test_unknown_schedule_is_refused():
    with pytest.raises(ConfigError, match="optim.lr_schedule"):
        load_config(None, ["optim.lr_schedule=step"])


def test_every_optimizer_steps_at_its_scheduled_rate(tmp_path):
    cfg = tiny_config("model.kind=vaegan", "optim.lr=1e-3", "optim.lr_dis=4e-3", "optim.lr_schedule=linear",
                      "optim.lr_warmup_steps=2", "optim.lr_final=0.5", "train.max_steps=6")
    tr = Trainer(cfg, tmp_path / "run")
    stream, seen = iter(tr.sampler), []
    for step in range(6):
        logs = tr.train_step(torch.stack([tr.dataset[i] for i in next(stream)]))
        factor = lr_factor(cfg.optim, step, 6)
        rates = {name: {g["lr"] for g in opt.param_groups} for name, opt in tr.opts.items()}
        assert rates == {"encoder": {1e-3 * factor}, "decoder": {1e-3 * factor}, "discriminator": {4e-3 * factor}}
        assert logs["train/lr"] == pytest.approx(1e-3 * factor)
        seen.append(factor)
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625])
