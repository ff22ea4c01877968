"""bf16 autocast tracks fp32; gradient accumulation equals the large batch."""
import json

import torch

from vaegan.training.trainer import Trainer

from conftest import tiny_config


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


KEYS = ("loss/kl", "loss/dis_l", "loss/dis")
PERTURBATION = 4e-3  # relative noise on the initial weights: bf16's rounding step (2^-8)
# bf16 and fp32 trajectories part as two fp32 runs whose weights differ by bf16-sized rounding
# do: over 30 steps, the bf16 run's largest per-step and run-mean differences from fp32 were
# 0.4-1.6x the larger of two such perturbed runs' (Intel Xeon, 1 and 2 threads), except where
# both are tiny (run-mean loss/dis: 0.2% bf16, 0.01-0.04% perturbed). Bound: 2x, and never
# below FLOOR (per step, run mean): differences the 30-step runs do not resolve (perturbed runs
# alone part by up to 11% per step and 3% in the mean).
MULTIPLE = 2.0
FLOOR = (0.02, 0.01)


def _train(tmp_path, name, *overrides, perturb_seed=None):
    cfg = tiny_config("model.kind=vaegan", "train.max_steps=30", "optim.name=adam", *overrides)
    trainer = Trainer(cfg, tmp_path / name)
    if perturb_seed is not None:
        gen = torch.Generator().manual_seed(perturb_seed)
        with torch.no_grad():
            for net in trainer.nets.values():
                for p in net.parameters():
                    p.mul_(1 + PERTURBATION * torch.randn(p.shape, generator=gen))
    trainer.fit()
    return _log(tmp_path / name)


def _divergence(reference, other) -> dict[str, tuple[float, float]]:
    """Per key: (largest per-step relative difference, relative difference of the run means)."""
    out = {}
    for key in KEYS:
        a = torch.tensor([line[key] for line in reference])
        b = torch.tensor([line[key] for line in other])
        assert torch.isfinite(b).all(), key
        out[key] = (float(((a - b).abs() / a.abs().clamp_min(1e-3)).max()),
                    float((a.mean() - b.mean()).abs() / a.mean().abs()))
    return out


def test_bf16_losses_track_fp32(tmp_path):
    fp32 = _train(tmp_path, "fp32", "train.precision=fp32")
    natural = [_divergence(fp32, _train(tmp_path, f"p{s}", "train.precision=fp32", perturb_seed=s)) for s in (0, 1)]
    bound = {k: tuple(max(MULTIPLE * max(n[k][i] for n in natural), FLOOR[i]) for i in (0, 1)) for k in KEYS}
    bf16 = _divergence(fp32, _train(tmp_path, "bf16", "train.precision=bf16"))
    for key in KEYS:
        assert bf16[key][0] <= bound[key][0] and bf16[key][1] <= bound[key][1], (key, bf16[key], bound[key])
    # The bound can fail: a KL weighted 2x too much (e.g. in the wrong units) leaves it (measured in
    # bf16: run-mean KL 20% off against bounds of 2-6%; in fp32 on an AVX2 EPYC, 17.5% against
    # 7.2%). Checked in fp32: on an AVX2-only CPU each bf16 run is emulated and costs over a minute.
    broken = _divergence(fp32, _train(tmp_path, "broken", "train.precision=fp32", "loss.beta=2.0"))
    assert broken["loss/kl"][1] > bound["loss/kl"][1], (broken["loss/kl"], bound["loss/kl"])


def test_gradient_accumulation_steps_once_per_accumulated_batch(tmp_path):
    cfg = tiny_config("model.kind=vaegan", "train.precision=fp32", "train.grad_accum_steps=2", "train.batch_size=16")
    tr = Trainer(cfg, tmp_path / "run")
    assert tr.local_batch == 8
    counts = {k: 0 for k in tr.opts}
    for name, opt in tr.opts.items():
        original = opt.step

        def counted(*a, _name=name, _orig=original, **kw):
            counts[_name] += 1
            return _orig(*a, **kw)

        opt.step = counted
    stream = iter(tr.sampler)
    batch = lambda: torch.stack([tr.dataset[i] for i in next(stream)])
    before = [p.detach().clone() for p in tr.nets["decoder"].parameters()]
    assert tr.train_step(batch()) is None  # first micro-batch: gradients accumulate, nothing steps
    assert counts == {"encoder": 0, "decoder": 0, "discriminator": 0} and tr.step == 0
    assert all(torch.equal(a, p) for a, p in zip(before, tr.nets["decoder"].parameters()))
    assert all(p.grad is not None for p in tr.nets["decoder"].parameters())
    assert tr.train_step(batch()) is not None
    assert counts == {"encoder": 1, "decoder": 1, "discriminator": 1} and tr.step == 1
