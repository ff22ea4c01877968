"""The encoder's posterior q(z|x): a diagonal Gaussian."""
from __future__ import annotations

import math

import torch


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over latents of shape (B, D).

    Statistics are kept in float32 whatever precision the encoder ran in: the KL and the
    exponentiated log-variance are where low precision hurts.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor, logvar_min: float = -30.0, logvar_max: float = 20.0):
        self.mean = mean.float()
        self.logvar = logvar.float().clamp(logvar_min, logvar_max)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample mean + std * eps; differentiable in mean and logvar.

        ``noise`` (B, D) gives eps explicitly (the trainer draws it for the global batch).
        """
        if noise is None:
            noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        return self.mean + self.std * noise.float()

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over latent dims: (B,)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar, dim=1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) per sample: (B,) for z of shape (B, D) (or (K, B, D) -> (K, B))."""
        return -0.5 * torch.sum(
            (z.float() - self.mean).pow(2) / self.logvar.exp() + self.logvar + math.log(2 * math.pi), dim=-1
        )


def aggregate_moments(mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of the aggregate posterior mean_i N(mean_i, diag(var_i)) of
    B >= 2 codes (mean, var: (B, D)).

    Law of total variance: the covariance of the posterior means (unbiased, B - 1) plus the mean
    posterior variance on the diagonal. Differentiable, in the inputs' dtype."""
    if mean.dim() != 2 or mean.shape[0] < 2:
        raise ValueError(f"aggregate_moments: needs (B, D) codes with B >= 2, got {tuple(mean.shape)}")
    centred = mean - mean.mean(0)
    return mean.mean(0), centred.T @ centred / (len(mean) - 1) + torch.diag(var.mean(0))


def gaussian_kl_to_standard(mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, cov) || N(0, I)) = (tr cov + |mean|^2 - D - log det cov) / 2, for a positive definite cov."""
    return 0.5 * (torch.trace(cov) + mean.dot(mean) - len(mean) - torch.linalg.slogdet(cov).logabsdet)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim."""
    return -0.5 * torch.sum(z.float().pow(2) + math.log(2 * math.pi), dim=-1)
