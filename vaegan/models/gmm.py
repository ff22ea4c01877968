"""An ex-post density over the latent space: a Gaussian mixture fitted to posterior means.

A VAE's aggregate posterior rarely fills N(0, I): prior samples land where no training image
was encoded and decode to faces no image looks like. Fitting a density to where the training
images' codes actually are and sampling from it (Ghosh et al. 2020, "From variational to
deterministic autoencoders"; Dai & Wipf 2019's second stage plays the same role) fixes that
without retraining. The mixture is fitted by EM in float64 with full covariances, each
regularised by ``reg`` times the identity so that components with few members stay invertible.

Saved as safetensors: ``weights`` (K,), ``means`` (K, D), ``scale_tril`` (K, D, D).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from vaegan.errors import InputError
from vaegan.files import read_safetensors, write_safetensors

FORMAT = "vaegan-gmm-v1"


class GaussianMixture:
    """sum_k weights[k] N(means[k], L_k L_k^T) over R^D."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor):
        k, d = means.shape
        if weights.shape != (k,) or scale_tril.shape != (k, d, d):
            raise ValueError(f"mixture shapes do not match: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
                             f"scale_tril {tuple(scale_tril.shape)}")
        self.weights, self.means, self.scale_tril = weights.double(), means.double(), scale_tril.double()

    @property
    def latent_dim(self) -> int:
        return self.means.shape[1]

    def component_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """z: (N, D) -> log weights[k] + log N(z; component k), (N, K), float64."""
        x = z.double()
        cols = []
        for mean, tril in zip(self.means, self.scale_tril):
            sol = torch.linalg.solve_triangular(tril, (x - mean).T, upper=False)  # (D, N)
            logdet = tril.diagonal().log().sum()
            cols.append(-0.5 * sol.pow(2).sum(0) - logdet - 0.5 * self.latent_dim * math.log(2 * math.pi))
        return torch.stack(cols, dim=1) + self.weights.log()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """z: (N, D) -> log density (N,), float64."""
        return torch.logsumexp(self.component_log_probs(z), dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, D), float32; the same generator state gives the same draws."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.latent_dim, generator=generator, dtype=torch.float64)
        return (self.means[comp] + (self.scale_tril[comp] @ eps[..., None])[..., 0]).float()

    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        tensors = {"weights": self.weights, "means": self.means, "scale_tril": self.scale_tril}
        return write_safetensors(path, tensors, {"format": FORMAT, **(metadata or {})})

    @classmethod
    def load(cls, path: str | Path) -> "GaussianMixture":
        tensors, _ = read_safetensors(path, "a latent prior that 'vaegan fit-prior' writes")
        return cls.from_tensors(tensors, path)

    @classmethod
    def from_tensors(cls, tensors: dict, path: str | Path) -> "GaussianMixture":
        """The mixture in ``tensors`` (read from ``path``, which errors name)."""
        missing = {"weights", "means", "scale_tril"} - set(tensors)
        if missing:
            raise InputError(f"{path}: missing tensors {sorted(missing)} (expected weights, means, scale_tril)")
        return cls(tensors["weights"], tensors["means"], tensors["scale_tril"])


def fit_gmm(z: torch.Tensor, components: int = 10, iters: int = 100, reg: float = 1e-3, seed: int = 0,
            tol: float = 1e-6) -> GaussianMixture:
    """EM for a full-covariance mixture. z: (N, D) latents, N >= components."""
    x = z.double()
    n, d = x.shape
    if n < components:
        raise InputError(f"{n} latents cannot fit {components} mixture components")
    gen = torch.Generator().manual_seed(seed)
    means = x[torch.randperm(n, generator=gen)[:components]].clone()
    cov = torch.cov(x.T).expand(components, d, d).clone() + reg * torch.eye(d, dtype=x.dtype)
    weights = torch.full((components,), 1.0 / components, dtype=x.dtype)
    previous = -math.inf
    for _ in range(iters):
        # E step: responsibilities (N, K).
        joint = GaussianMixture(weights, means, torch.linalg.cholesky(cov)).component_log_probs(x)
        total = torch.logsumexp(joint, dim=1, keepdim=True)
        resp = (joint - total).exp()
        # M step: weights, means, regularised covariances.
        counts = resp.sum(0).clamp_min(1e-10)
        weights = counts / n
        means = (resp.T @ x) / counts[:, None]
        cov = torch.stack([((x - m) * r[:, None]).T @ (x - m) for m, r in zip(means, resp.T)])
        cov = cov / counts[:, None, None] + reg * torch.eye(d, dtype=x.dtype)
        mean_ll = float(total.mean())
        if mean_ll - previous < tol * abs(mean_ll):
            break
        previous = mean_ll
    return GaussianMixture(weights, means, torch.linalg.cholesky(cov))
