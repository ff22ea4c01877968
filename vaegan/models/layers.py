"""Building blocks shared by the three networks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bf16_cpu_training(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Training under CPU bf16 autocast: where oneDNN's bf16 weight gradient is slow."""
    return (x.device.type == "cpu" and torch.is_grad_enabled() and weight.requires_grad
            and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)


class _Bf16ConvFloatWeightGrad(torch.autograd.Function):
    """A bf16 convolution (or transposed convolution) whose weight gradient runs in float32.

    On CPU, oneDNN's bf16 weight-gradient kernels run 2-3x slower than its float32 ones at
    this toolkit's shapes (about 30x at 3 channels), while the bf16 forward and input gradient
    run about 2x faster than float32: so both of those stay in bf16. The weight gradient also
    comes out more exact (float32 sums, no rounding to bf16). Padding mode: zeros only.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
        xb, wb = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        bb = bias.to(torch.bfloat16) if bias is not None else None
        ctx.save_for_backward(xb, wb)
        ctx.conf = (stride, padding, dilation, transposed, output_padding, groups)
        ctx.x_dtype, ctx.bias_sizes = x.dtype, None if bias is None else list(bias.shape)
        return torch.ops.aten.convolution(xb, wb, bb, stride, padding, dilation, transposed, output_padding, groups)

    @staticmethod
    def backward(ctx, grad):
        xb, wb = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.ops.aten.convolution_backward(grad.to(torch.bfloat16), xb, wb, None, *ctx.conf,
                                                         [True, False, False])[0].to(ctx.x_dtype)
        if need_w or need_b:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad.float(), xb.float(), wb.float(), ctx.bias_sizes, *ctx.conf, [False, need_w, need_b])
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state dict) with a faster bf16 CPU backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or not _bf16_cpu_training(x, self.weight):
            return super().forward(x)
        return _Bf16ConvFloatWeightGrad.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                              False, (0, 0), self.groups)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same parameters and state dict) with a faster bf16 CPU backward."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or self.padding_mode != "zeros" or not _bf16_cpu_training(x, self.weight):
            return super().forward(x, output_size)
        return _Bf16ConvFloatWeightGrad.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                              True, self.output_padding, self.groups)


class ChunkedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are taken per chunk of the batch.

    The trainer runs the discriminator once over ``cat([real, recon, prior])`` and the decoder
    once over ``cat([z, z_prior])`` for speed. Normalising each chunk on its own keeps that
    identical to separate passes (and keeps real and fake statistics apart, as GAN practice
    asks); running statistics are updated once per chunk, as separate passes would.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected 2D or 4D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor, chunks: int = 1) -> torch.Tensor:  # type: ignore[override]
        if chunks == 1 or not self.training:
            return super().forward(x)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(chunks)
        return torch.cat(
            [
                F.batch_norm(c, self.running_mean, self.running_var, self.weight, self.bias, True, self.momentum, self.eps)
                for c in x.chunk(chunks)
            ]
        )


class Norm(nn.Module):
    """A norm chosen by name: batch (chunk-aware), group, or none."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        if kind == "batch":
            self.norm = ChunkedBatchNorm(channels)
        elif kind == "group":
            self.norm = nn.GroupNorm(min(32, channels // 4) if channels >= 8 else 1, channels)
        elif kind == "none":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"unknown norm {kind!r}; choose batch, group or none")
        self.kind = kind

    def forward(self, x: torch.Tensor, chunks: int = 1) -> torch.Tensor:
        if self.kind == "batch":
            return self.norm(x, chunks)
        if self.kind == "group" and x.dim() == 2:
            return self.norm(x[:, :, None, None])[:, :, 0, 0]
        return self.norm(x)


def channels(base: int, width: float) -> int:
    """Scale a layer's channel count by the width multiplier (at least 8)."""
    return max(8, int(round(base * width)))


def levels(resolution: int) -> int:
    """Number of stride-2 stages between ``resolution`` and the 8x8 bottleneck."""
    n = {32: 2, 64: 3, 128: 4}.get(resolution)
    if n is None:
        raise ValueError(f"resolution {resolution} not supported; choose 32, 64 or 128")
    return n
