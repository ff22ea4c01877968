"""Sampling from a trained model to image files."""
from __future__ import annotations

from pathlib import Path

import torch

from .io import save_grid, save_image
from .pretrained import load_from_checkpoint


@torch.no_grad()
def sample(model, n: int, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """n prior samples as uint8 (n, 3, R, R); the same seed gives the same images."""
    from .io import to_uint8

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent_dim, generator=gen)
    device = next(model.parameters()).device
    return torch.cat([to_uint8(model.decode(z[i : i + batch_size].to(device))).cpu()
                      for i in range(0, n, batch_size)])


def sample_to_files(checkpoint: str | Path, n: int, out: str | Path, seed: int = 0, individual: bool = False,
                    use_ema: bool = True) -> list[Path]:
    if n <= 0:
        raise ValueError(f"--n must be positive, got {n}")
    model, _, _ = load_from_checkpoint(checkpoint, use_ema=use_ema)
    images = sample(model, n, seed)
    out = Path(out)
    if not individual:
        save_grid(images, out, nrow=max(1, int(n ** 0.5)))
        return [out]
    paths = [out / f"sample-{i:05d}.png" for i in range(n)]
    for img, path in zip(images, paths):
        save_image(img, path)
    return paths
