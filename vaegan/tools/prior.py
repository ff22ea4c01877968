"""Fit the ex-post latent prior of a trained model (``vaegan fit-prior``)."""
from __future__ import annotations

from pathlib import Path

import torch

from vaegan.data import build_dataset
from vaegan.models.gmm import fit_gmm
from vaegan.models.inference import BATCH_SIZE, encode_images
from vaegan.storage.pretrained import load_pretrained
from vaegan.storage.prior import fitted_for, prior_path


def fit_prior(checkpoint: str | Path, components: int = 10, num_images: int | None = None, seed: int = 0,
              use_ema: bool = True) -> Path:
    """Fit a mixture to the posterior means of the model's training images; write it beside the model.

    The images are the training split the model's saved config names (its prepared cache when
    that exists), the first ``num_images`` of them (all by default). The file records the step and
    the weights (EMA, or raw with ``use_ema=False``) it was fitted for; sampling refuses it for others.
    """
    vae, cfg, _, info = load_pretrained(checkpoint, use_ema=use_ema)
    dataset = build_dataset(cfg.data, split="train")
    n = len(dataset) if num_images is None else min(num_images, len(dataset))
    means = []
    for start in range(0, n, BATCH_SIZE):  # a batch of images in memory at a time, not the split
        images = torch.stack([dataset[i] for i in range(start, min(start + BATCH_SIZE, n))])
        means.append(encode_images(vae, images).mean)
    mixture = fit_gmm(torch.cat(means), components, seed=seed)
    meta = {"source": info["source"], **fitted_for(info), "images": str(n), "components": str(components)}
    return mixture.save(prior_path(checkpoint), meta)
