"""Running estimates of the aggregate posterior's mean and covariance, for ``loss.agg_kl_weight``.

One batch of B codes in D >= B dimensions gives a singular covariance and a noisy one; the KL
of the aggregate posterior to N(0, I) needs its inverse. Exponential moving averages over
batches give a full-rank, low-noise estimate that lags the encoder by about 1 / (1 - decay)
batches. They start at the prior's moments (mean 0, covariance I) and are not bias-corrected:
the first estimates are shrunk towards the prior (full rank from the first batch, and a gentle
start: codes that look like the prior get no push), and the start's weight decays as
decay^batches (0.05 after 300). The estimates are part of the trainer's state (saved in
checkpoints), so a resumed run continues exactly.
"""
from __future__ import annotations

import torch

DECAY = 0.99  # about 100 batches: 6,400 codes at the presets' batch of 64, for 128 dimensions


class RunningMoments:
    """EMAs of a (D,) mean and a (D, D) covariance, from N(0, I)'s."""

    def __init__(self, dim: int, device: torch.device | str = "cpu", decay: float = DECAY):
        self.decay = decay
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.cov = torch.eye(dim, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, mean: torch.Tensor, cov: torch.Tensor) -> None:
        """Fold in one batch's moments (detached)."""
        d = self.decay
        self.mean.mul_(d).add_(mean.detach().double(), alpha=1 - d)
        self.cov.mul_(d).add_(cov.detach().double(), alpha=1 - d)

    def estimate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean, self.cov

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.clone(), "cov": self.cov.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("mean", "cov"):
            own, saved = getattr(self, name), state[name]
            if tuple(saved.shape) != tuple(own.shape):
                raise ValueError(f"running moments: saved {name} has shape {tuple(saved.shape)}, this model's is "
                                 f"{tuple(own.shape)} (model.latent_dim changed?)")
            own.copy_(saved.to(own))
