"""Fit the ex-post latent prior of a saved model (``vaegan fit-prior``; training fits one at its end)."""
from __future__ import annotations

from pathlib import Path

from vaegan.data import build_dataset
from vaegan.storage.pretrained import load_pretrained
from vaegan.storage.prior import fit_codes_mixture, prior_path, save_prior


def fit_prior(checkpoint: str | Path, components: int = 10, num_images: int | None = None, seed: int = 0,
              use_ema: bool = True) -> Path:
    """Fit a mixture to the posterior means of the model's training images; write it beside the model.

    The images are the training split the model's saved config names (its prepared cache when
    that exists), the first ``num_images`` of them (all by default). The file records the step and
    the weights (EMA, or raw with ``use_ema=False``) it was fitted for; sampling refuses it for others.
    """
    vae, cfg, _, info = load_pretrained(checkpoint, use_ema=use_ema)
    mixture, n = fit_codes_mixture(vae, build_dataset(cfg.data, split="train"), components, num_images, seed)
    return save_prior(mixture, prior_path(checkpoint), info, n, components)
