"""Reconstruction quality: PSNR and SSIM of reconstructions against their originals.

Inputs are uint8 (N, 3, H, W) in [0, 255], paired by index. Both metrics are computed per image
(SSIM per channel, then averaged over channels) and then averaged over images. They are
invariant to the data range convention: [0, 255] with L = 255 and [0, 1] with L = 1 give the
same numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DATA_RANGE = 255.0
CHUNK = 256  # images per float64 pass, bounds memory
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _pair(reconstructions: torch.Tensor, originals: torch.Tensor) -> None:
    for name, t in (("reconstructions", reconstructions), ("originals", originals)):
        if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"{name}: expected uint8 (N, 3, H, W), got {t.dtype} {tuple(t.shape)}")
    if reconstructions.shape != originals.shape:
        raise ValueError(f"shapes differ: {tuple(reconstructions.shape)} vs {tuple(originals.shape)}")


def psnr_per_image(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """10 log10(255^2 / MSE) per image: float64 (N,) in dB; +inf where an image is exact."""
    _pair(reconstructions, originals)
    mse = torch.cat([
        (reconstructions[i : i + CHUNK].double() - originals[i : i + CHUNK].double()).square().mean(dim=(1, 2, 3))
        for i in range(0, len(originals), CHUNK)
    ])  # fmt: skip
    return 10 * torch.log10(DATA_RANGE**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian, float64 (size,)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_per_image(
    reconstructions: torch.Tensor, originals: torch.Tensor, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """SSIM (Wang et al. 2004) per image: float64 (N,) in [-1, 1], 1 for identical images.

    Gaussian window (11, sigma 1.5) over the 'valid' region (no padding, as in the reference
    MATLAB code and scikit-image's gaussian_weights mode), C1 = (0.01 L)^2, C2 = (0.03 L)^2,
    population (co)variances; the SSIM map is averaged over pixels and channels.
    """
    _pair(reconstructions, originals)
    if min(reconstructions.shape[-2:]) < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size}x{window_size}, got {tuple(originals.shape)}")
    g = gaussian_window(window_size, sigma)
    chunks = [
        _ssim(reconstructions[i : i + CHUNK].double(), originals[i : i + CHUNK].double(), g)
        for i in range(0, len(originals), CHUNK)
    ]
    return torch.cat(chunks)


def _ssim(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]

    def filt(t: torch.Tensor) -> torch.Tensor:  # separable depthwise Gaussian, valid region
        t = F.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
        return F.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)

    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def compute_recon_metrics(reconstructions: torch.Tensor, originals: torch.Tensor) -> dict[str, float]:
    """{"psnr": mean dB, "ssim": mean} over images; uint8 (N, 3, H, W) each, paired by index."""
    return {
        "psnr": psnr_per_image(reconstructions, originals).mean().item(),
        "ssim": ssim_per_image(reconstructions, originals).mean().item(),
    }


def psnr(reconstructions: torch.Tensor, originals: torch.Tensor) -> float:
    """Mean per-image PSNR in dB (inf if any image is reconstructed exactly)."""
    return psnr_per_image(reconstructions, originals).mean().item()


def ssim(reconstructions: torch.Tensor, originals: torch.Tensor) -> float:
    """Mean per-image SSIM."""
    return ssim_per_image(reconstructions, originals).mean().item()
