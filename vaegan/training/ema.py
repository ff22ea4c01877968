"""Exponential moving average of the encoder and decoder weights."""
from __future__ import annotations

import copy

import torch
from torch import nn

from vaegan.models.layers import fill_prior_statistics


def ema_decay(decay: float, step: int) -> float:
    """The decay at ``step`` (counted from 0): ramped up as min(decay, (1 + step) / (10 + step)).

    Without the ramp a copy that starts at the initial weights stays mostly initialisation for
    thousands of steps (0.999^600 = 55% after 600 steps); with it the average covers roughly the
    last tenth of training early on and the last 1 / (1 - decay) steps later (diffusers' rule).
    """
    return min(decay, (1.0 + step) / (10.0 + step))


class EMA:
    """Keeps ``decay``-averaged copies of some modules; buffers (BN statistics) are copied.

    Batch-norm statistics copied from the live networks belong to the live weights; call
    :func:`recalibrate_batchnorm` before using the averaged copies (the trainer does).
    """

    def __init__(self, modules: dict[str, nn.Module], decay: float):
        self.decay = decay
        self.modules = {name: copy.deepcopy(m).eval().requires_grad_(False) for name, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module], step: int) -> None:
        """Average in the live weights after optimizer step ``step`` (0 for the first)."""
        weight = 1.0 - ema_decay(self.decay, step)
        for name, module in modules.items():
            shadow = self.modules[name]
            params = [p for p in shadow.parameters()]
            torch._foreach_lerp_(params, [p.detach() for p in module.parameters()], weight)
            for b_shadow, b in zip(shadow.buffers(), module.buffers()):
                b_shadow.copy_(b)

    def state_dict(self) -> dict:
        return {name: m.state_dict() for name, m in self.modules.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, m in self.modules.items():
            m.load_state_dict(fill_prior_statistics(m, state[name]))


@torch.no_grad()
def recalibrate_batchnorm(encoder: nn.Module, decoder: nn.Module, images: torch.Tensor, latent_dim: int,
                          batch_size: int = 64, seed: int = 0) -> None:
    """Recompute the batch-norm statistics of (averaged) networks from their own activations.

    images: float (N, 3, R, R) in [-1, 1]. The encoder sees the images; the decoder's data
    statistics come from their posterior means (what reconstructions, interpolations, attribute
    edits and mixture samples decode), its prior statistics from as many N(0, I) draws (what
    samples decode). Each kind of input is normalised as a batch of its own kind, as in training.
    Every statistic becomes the plain average over these batches ("precise BN"); the modules end
    in eval mode.
    """
    norms = [m for net in (encoder, decoder) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        if getattr(m, "has_prior_statistics", False):
            m.prior_mean.zero_(), m.prior_var.fill_(1.0), m.prior_batches_tracked.zero_()
        m.momentum = None  # cumulative average
    gen = torch.Generator().manual_seed(seed)
    encoder.train(), decoder.train()
    try:
        for batch in images.split(batch_size):
            posterior = encoder(batch)
            decoder(posterior.mean.to(batch.dtype))
            decoder(torch.randn(posterior.mean.shape, generator=gen).to(batch.device), from_prior=True)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        encoder.eval(), decoder.eval()
