"""How well the encoder's codes fill the prior: the "prior hole" that N(0, I) samples fall into.

A VAE's prior samples are only as good as the decoder is where they land. The aggregate
posterior q(z) = mean_i q(z | x_i) over the training images is where the decoder was trained;
where it and N(0, I) differ, prior samples decode to images no training code produced. Two
numbers, both from the posteriors of a set of images (no decoding):

- ``aggregate_kl``: KL(N(m, S) || N(0, I)) for the Gaussian with the aggregate posterior's mean
  m and covariance S = Cov_i(mean_i) + mean_i diag(var_i) (law of total variance). 0 when those
  two moments match the prior's; it sees a shifted, shrunk, stretched or correlated code
  cloud, not the holes of a non-Gaussian one with the right moments.
- ``active_units``: latent dimensions whose posterior mean varies across images by more than
  0.01 (Burda et al. 2016): the dimensions that carry information; in the others every image's
  posterior is close to the prior, and the decoder learns to ignore them.
"""
from __future__ import annotations

import torch

from vaegan.models.distributions import DiagonalGaussian, aggregate_moments, gaussian_kl_to_standard

ACTIVE_THRESHOLD = 0.01


def aggregate_posterior_stats(posterior: DiagonalGaussian) -> dict[str, float]:
    """Posterior over (N, D) codes, N >= 2 -> {"aggregate_kl", "active_units"}."""
    n = posterior.mean.shape[0]
    if n < 2:
        raise ValueError(f"aggregate_posterior_stats: needs at least 2 codes, got {n}")
    means = posterior.mean.double()
    mean, cov = aggregate_moments(means, posterior.logvar.double().exp())
    active = int((means.var(0) > ACTIVE_THRESHOLD).sum())
    return {"aggregate_kl": gaussian_kl_to_standard(mean, cov).item(), "active_units": active}
