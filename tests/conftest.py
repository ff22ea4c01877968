"""Shared fixtures: tiny configs and small models trained once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vaegan.config import Config, load_config

SHARED_CELEBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba-subset"

TINY = [
    "data.dataset=faces", "data.resolution=32", "data.num_images=2048",
    "model.latent_dim=32", "model.width=0.25", "model.enc_fc=128", "model.dis_fc=64",
    "train.batch_size=32", "train.tensorboard=false", "train.progress=false",
    "train.sample_every_steps=0", "train.checkpoint_every_steps=0", "train.log_every_steps=10",
    # A fixed thread count (torch's, i.e. OMP_NUM_THREADS or the cores): tests compare runs bit for
    # bit, and train.threads=auto may change the count (and float summation order) under load.
    f"train.threads={torch.get_num_threads()}",
]


def tiny_config(*overrides: str) -> Config:
    """A seconds-scale config on the built-in faces at 32 px; later overrides win."""
    return load_config(None, [*TINY, *overrides])


def _train(tmp_path_factory, name: str, *overrides: str) -> Path:
    from vaegan.training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp(name) / "run"
    Trainer(tiny_config(*overrides), run_dir).fit()
    return run_dir


# The fixtures train in train.precision=auto: bf16 on CPUs with native bf16, where the margins of the
# tests that use them were measured; fp32 on AVX2-only CPUs, where bf16 runs on emulated kernels
# about 10x slower (an AVX2 EPYC: the suite took 34 minutes with bf16 fixtures).
@pytest.fixture(scope="session")
def trained_vae_run(tmp_path_factory) -> Path:
    """A plain VAE trained for a few hundred steps on faces (32 px): a run folder."""
    return _train(tmp_path_factory, "vae", "model.kind=vae", "train.max_steps=300", "train.precision=auto",
                  "optim.name=adam", "optim.lr=1e-3", "model.width=0.5", "model.latent_dim=32")


@pytest.fixture(scope="session")
def trained_vaegan_run(tmp_path_factory) -> Path:
    """A small VAE-GAN trained briefly on faces (32 px) with an EMA: a run folder."""
    return _train(tmp_path_factory, "vaegan", "model.kind=vaegan", "train.max_steps=60", "train.precision=auto",
                  "optim.name=adam", "loss.adversarial=nonsaturating", "train.ema_decay=0.9")


@pytest.fixture(scope="session")
def celeba_root() -> Path:
    if not (SHARED_CELEBA / "list_eval_partition.txt").is_file():
        pytest.skip(f"shared CelebA subset not found at {SHARED_CELEBA}")
    return SHARED_CELEBA
