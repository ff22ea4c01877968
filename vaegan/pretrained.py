"""Rebuild trained models from a run folder or checkpoint, for sampling and evaluation."""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .config import Config, from_dict
from .models import VAE, Discriminator, build_discriminator, build_vae


def load_from_checkpoint(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True,
                         with_discriminator: bool = False) -> tuple[VAE, Config, Discriminator | None]:
    """A run folder (latest checkpoint) or checkpoint folder -> (VAE in eval mode, config, D or None).

    The EMA weights are used when the run kept an EMA and ``use_ema`` is set.
    """
    folder, state = load_checkpoint(path)
    cfg = from_dict(state["config"])
    res = cfg.data.resolution
    vae = build_vae(cfg.model, res)
    source = state["ema"] if use_ema and "ema" in state else state["models"]
    vae.encoder.load_state_dict(source["encoder"])
    vae.decoder.load_state_dict(source["decoder"])
    dis = None
    if with_discriminator and "discriminator" in state["models"]:
        dis = build_discriminator(cfg.model, res)
        dis.load_state_dict(state["models"]["discriminator"])
        dis = dis.to(device).eval()
    return vae.to(device).eval(), cfg, dis
