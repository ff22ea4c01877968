"""A trained VAE on batches of uint8 images: encode, decode, reconstruct, sample.

Inputs and outputs are uint8 (N, 3, R, R) on the CPU at the edges; the model runs on its own
device in batches of ``batch_size``.
"""
from __future__ import annotations

import torch

from vaegan.images import to_float, to_uint8
from vaegan.models import VAE, DiagonalGaussian

BATCH_SIZE = 256


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_images(model: VAE, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> DiagonalGaussian:
    """uint8 (N, 3, R, R) -> posterior over (N, latent_dim) (mean and logvar on the CPU)."""
    means, logvars = [], []
    for i in range(0, len(images), batch_size):
        posterior = model.encode(to_float(images[i : i + batch_size].to(_device(model))))
        means.append(posterior.mean.cpu())
        logvars.append(posterior.logvar.cpu())
    return DiagonalGaussian(torch.cat(means), torch.cat(logvars), *model.encoder.logvar_range)


@torch.no_grad()
def decode_latents(model: VAE, z: torch.Tensor, batch_size: int = BATCH_SIZE, from_prior: bool = False) -> torch.Tensor:
    """z: (N, latent_dim), any float dtype -> uint8 images (N, 3, R, R) on the CPU.

    ``from_prior``: z are N(0, I) draws (see :meth:`VAE.decode`)."""
    z = z.float()
    return torch.cat([to_uint8(model.decode(z[i : i + batch_size].to(_device(model)), from_prior)).cpu()
                      for i in range(0, len(z), batch_size)])


@torch.no_grad()
def sample(model, n: int, seed: int = 0, batch_size: int = BATCH_SIZE, prior=None) -> torch.Tensor:
    """n prior samples as uint8 (n, 3, R, R); the same seed gives the same images.

    prior: None for N(0, I), or a fitted ``vaegan.models.gmm.GaussianMixture`` (``vaegan.load_prior``) to draw latents from."""
    gen = torch.Generator().manual_seed(seed)
    z = prior.sample(n, gen) if prior is not None else torch.randn(n, model.latent_dim, generator=gen)
    return decode_latents(model, z, batch_size, from_prior=prior is None)


def reconstruct(model, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """uint8 (N, 3, R, R) -> decodings of their posterior means, uint8 (N, 3, R, R)."""
    return decode_latents(model, encode_images(model, images, batch_size).mean, batch_size)
