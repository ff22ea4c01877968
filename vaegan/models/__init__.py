"""The three networks of Larsen et al. 2016 and the VAE that pairs encoder and decoder."""
from __future__ import annotations

import torch
from torch import nn

from vaegan.config import ModelConfig
from vaegan.models.decoder import Decoder
from vaegan.models.discriminator import Discriminator
from vaegan.models.distributions import DiagonalGaussian, standard_normal_log_prob
from vaegan.models.encoder import Encoder


class VAE(nn.Module):
    """Encoder + decoder; the inference-side model that exports and loads."""

    def __init__(self, encoder: Encoder, decoder: Decoder, latent_dim: int):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """x: (B, 3, R, R) in [-1, 1] -> posterior over (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, from_prior: bool = False) -> torch.Tensor:
        """z: (B, latent_dim) -> (B, 3, R, R) in [-1, 1].

        ``from_prior``: z are N(0, I) draws rather than codes of images (reconstructions,
        interpolations, attribute edits, mixture samples); batch norm then uses its statistics
        of N(0, I) draws, as the VAE-GAN's training normalised them.
        """
        return self.decoder(z, from_prior)

    def reconstruct(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        posterior = self.encode(x)
        return self.decode(posterior.sample() if sample else posterior.mode())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n prior samples (n, 3, R, R) in [-1, 1]."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.decode(z, from_prior=True)


def build_encoder(cfg: ModelConfig, resolution: int) -> Encoder:
    return Encoder(resolution, cfg.latent_dim, cfg.width, cfg.enc_fc, cfg.norm, cfg.logvar_min, cfg.logvar_max)


def build_decoder(cfg: ModelConfig, resolution: int) -> Decoder:
    return Decoder(resolution, cfg.latent_dim, cfg.width, cfg.norm, cfg.upsample)


def build_discriminator(cfg: ModelConfig, resolution: int) -> Discriminator:
    return Discriminator(resolution, cfg.dis_width or cfg.width, cfg.dis_fc, cfg.dis_norm or cfg.norm, cfg.dis_spectral_norm)


def build_vae(cfg: ModelConfig, resolution: int) -> VAE:
    return VAE(build_encoder(cfg, resolution), build_decoder(cfg, resolution), cfg.latent_dim)


__all__ = [
    "VAE", "Encoder", "Decoder", "Discriminator", "DiagonalGaussian", "standard_normal_log_prob",
    "build_encoder", "build_decoder", "build_discriminator", "build_vae",
]
