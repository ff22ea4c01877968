"""Building blocks shared by the three networks."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vaegan.config import LEVELS


PRIOR_STATS = ("prior_mean", "prior_var", "prior_batches_tracked")  # buffers of a BatchNorm with prior statistics


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm for both conv (B, C, H, W) and fully connected (B, C) activations.

    The VAE-GAN step calls each network once per source (real, reconstructed, prior), so the
    training statistics of real and fake images stay apart, as GAN practice asks.

    With ``prior_statistics`` (the decoder's norms) it keeps a second set of running statistics,
    ``prior_*``, for latents drawn from N(0, I) rather than encoded from images: a call with
    ``from_prior=True`` trains them (train mode) or normalises with them (eval mode). Codes of
    real images and N(0, I) draws are not distributed alike (the aggregate posterior is not the
    prior), so one pooled set of statistics fits neither (README, "Batch-norm statistics per
    source"). While no prior batch has been seen (``prior_batches_tracked`` 0: a model that never
    decoded N(0, I) draws in train mode and was not recalibrated) the data statistics stand in.
    """

    def __init__(self, num_features: int, prior_statistics: bool = False, **kwargs):
        super().__init__(num_features, **kwargs)
        if prior_statistics:
            self.register_buffer("prior_mean", torch.zeros(num_features))
            self.register_buffer("prior_var", torch.ones(num_features))
            self.register_buffer("prior_batches_tracked", torch.tensor(0, dtype=torch.long))

    @property
    def has_prior_statistics(self) -> bool:
        return "prior_mean" in self._buffers

    def stats(self, from_prior: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(running mean, running variance, batches tracked) of the data or of the prior."""
        if from_prior and self.has_prior_statistics:
            return self.prior_mean, self.prior_var, self.prior_batches_tracked
        return self.running_mean, self.running_var, self.num_batches_tracked

    def forward(self, x: torch.Tensor, from_prior: bool = False) -> torch.Tensor:
        if not (from_prior and self.has_prior_statistics):
            return super().forward(x)
        self._check_input_dim(x)
        mean, var, count = self.stats(True)
        if self.training:
            count.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(count)
            return F.batch_norm(x, mean, var, self.weight, self.bias, True, momentum, self.eps)
        if int(count) == 0:  # no statistics of N(0, I) draws yet: the data's stand in
            return super().forward(x)
        return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected 2D or 4D input, got {x.dim()}D")


def fill_prior_statistics(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (a state dict of ``module``) with the prior statistics that a state saved before
    they existed lacks: copies of the data statistics, counted 0 (so the data's stand in)."""
    state = dict(state)
    for name, m in module.named_modules():
        if isinstance(m, BatchNorm) and m.has_prior_statistics:
            p = f"{name}." if name else ""
            if f"{p}prior_mean" in state or f"{p}running_mean" not in state:
                continue
            state[f"{p}prior_mean"] = state[f"{p}running_mean"].clone()
            state[f"{p}prior_var"] = state[f"{p}running_var"].clone()
            state[f"{p}prior_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return state


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)
    return t


def _sum(t: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Per-channel sum accumulated in float64, as PyTorch's CPU batch norm accumulates."""
    return t.sum(dims, dtype=torch.float64)


@torch.no_grad()
def _global_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, biased variance, count) per channel over every process's batch, float64.

    Two passes (the mean, then squared deviations from it) rather than E[x^2] - E[x]^2, so
    nearly constant channels lose nothing to cancellation.
    """
    dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
    xf = x.float()
    count_sum = _all_reduce(torch.cat([_sum(xf, dims), xf.new_tensor([x.numel() / x.shape[1]], dtype=torch.float64)]))
    count, mean = count_sum[-1], count_sum[:-1] / count_sum[-1]
    var = _all_reduce(_sum((xf - mean.float().view(shape)).pow(2), dims)) / count
    return mean, var, count


class _SyncBatchNormFn(torch.autograd.Function):
    """Normalise with global statistics; the backward's means are global too.

    dx = w / sigma * (g - mean(g) - x_hat * mean(g * x_hat)), both means over every process's
    batch; dw, db are this process's sums (data parallelism adds those up).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, count):
        shape = [1, -1] + [1] * (x.dim() - 2)
        x_hat = (x.float() - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(x_hat, invstd, weight)
        ctx.count = count
        return (x_hat * weight.view(shape) + bias.view(shape)).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        x_hat, invstd, weight = ctx.saved_tensors
        dims, shape = [0, *range(2, g.dim())], [1, -1] + [1] * (g.dim() - 2)
        gf = g.float()
        local = torch.cat([_sum(gf, dims), _sum(gf * x_hat, dims)])
        grad_bias, grad_weight = (t.to(weight.dtype) for t in local.chunk(2))
        mean_g, mean_gx = (t.float().view(shape) for t in (_all_reduce(local.clone()) / ctx.count).chunk(2))
        dx = (gf - mean_g - x_hat * mean_gx) * (invstd * weight.float()).view(shape)
        return dx.to(g.dtype), grad_weight, grad_bias, None, None, None


class SyncBatchNorm(BatchNorm):
    """BatchNorm whose training statistics cover the batch of every data-parallel process.

    Statistics and their gradients are all-reduced with plain ``torch.distributed`` calls, so
    it runs on any backend (NCCL on GPUs, gloo on CPUs) and a run on N processes normalises
    as one process would over the global batch. Outside a multi-process group, or in eval
    mode, it is a plain BatchNorm; its state dict is BatchNorm's.
    """

    def forward(self, x: torch.Tensor, from_prior: bool = False) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x, from_prior)
        self._check_input_dim(x)
        if not self.affine:
            raise ValueError("SyncBatchNorm needs affine=True")
        mean, var, count = _global_stats(x)
        if self.track_running_stats:
            running_mean, running_var, tracked = self.stats(from_prior)
            with torch.no_grad():
                tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                running_mean.lerp_(mean.to(running_mean.dtype), m)
                running_var.lerp_((var * count / (count - 1).clamp_min(1)).to(running_var.dtype), m)
        invstd = torch.rsqrt(var + self.eps).float()
        return _SyncBatchNormFn.apply(x, self.weight, self.bias, mean.float(), invstd, count)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Make every :class:`BatchNorm` in ``module`` a :class:`SyncBatchNorm`, in place.

    Only the class changes (the two hold the same state), so checkpoints and exports stay
    interchangeable.
    """
    for m in module.modules():
        if type(m) is BatchNorm:
            m.__class__ = SyncBatchNorm
    return module


class Norm(nn.Module):
    """A norm chosen by name: batch, group, or none."""

    def __init__(self, kind: str, channels: int, prior_statistics: bool = False):
        super().__init__()
        if kind == "batch":
            self.norm = BatchNorm(channels, prior_statistics=prior_statistics)
        elif kind == "group":
            self.norm = nn.GroupNorm(min(32, channels // 4) if channels >= 8 else 1, channels)
        elif kind == "none":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"unknown norm {kind!r}; choose batch, group or none")
        self.kind = kind

    def forward(self, x: torch.Tensor, from_prior: bool = False) -> torch.Tensor:
        """``from_prior``: x comes from N(0, I) latents (batch norm: their own running statistics)."""
        if self.kind == "batch":
            return self.norm(x, from_prior)
        if self.kind == "group" and x.dim() == 2:
            return self.norm(x[:, :, None, None])[:, :, 0, 0]
        return self.norm(x)


def channels(base: int, width: float) -> int:
    """Scale a layer's channel count by the width multiplier (at least 8)."""
    return max(8, int(round(base * width)))


def levels(resolution: int) -> int:
    """Number of stride-2 stages between ``resolution`` and the 8x8 bottleneck."""
    n = LEVELS.get(resolution)
    if n is None:
        raise ValueError(f"resolution {resolution} not supported; choose 32, 64 or 128")
    return n
