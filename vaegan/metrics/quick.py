"""The metrics that need no download, of images and of a model: what training logs periodically
and what every evaluation reports beside FID."""
from __future__ import annotations

import torch

from vaegan.errors import InputError
from vaegan.metrics.artifacts import grid_peak_ratio, pixel_fd
from vaegan.metrics.batching import iter_batches
from vaegan.metrics.recon import compute_recon_metrics
from vaegan.metrics.sharpness import compute_sharpness
from vaegan.metrics.swd import compute_swd
from vaegan.models.inference import reconstruct, sample


def load_images(source, num_images: int | None, resolution: int, batch_size: int = 256) -> torch.Tensor:
    """uint8 (N, 3, R, R) from a folder, Dataset or tensor: a subset fixed by the metrics' subset seed.

    N = min(num_images, available); images not R x R are centre-cropped and resized.
    """
    batches = list(iter_batches(source, batch_size, num_images=num_images, resolution=resolution))
    if not batches:
        raise InputError("the reference holds no images")
    return torch.cat(batches)


def image_metrics(samples: torch.Tensor, reconstructions: torch.Tensor, reference: torch.Tensor,
                  seed: int = 0) -> dict[str, float]:
    """The metrics that need no download.

    samples: uint8 (N, 3, R, R); reconstructions: uint8 (M, 3, R, R) of reference[:M]; reference:
    uint8 (K, 3, R, R). SWD compares the first min(N, K) of each set (it needs equal counts).
    Returns SWDx1e3_<res> per level and SWDx1e3_avg, hf_generated, hf_reference, hf_ratio
    (samples), grid_peak_generated, grid_peak_reference, grid_peak_ratio (samples), pixel_fd
    (samples; from two images per set on), recon_hf_ratio, recon_grid_peak_ratio, psnr (dB), ssim. Sharpness counts speckle
    as detail; the grid-peak ratio (1 = as real) does not, so the two are reported together
    (:mod:`vaegan.metrics.artifacts`).
    """
    n = min(len(samples), len(reference))
    out = compute_swd(samples[:n], reference[:n], seed=seed)
    out.update(compute_sharpness(samples, reference))
    out.update(grid_peak_ratio(samples, reference))
    if n >= 2:  # a Gaussian fit needs two images per set
        out["pixel_fd"] = pixel_fd(samples, reference)
    out["recon_hf_ratio"] = compute_sharpness(reconstructions, reference)["hf_ratio"]
    out["recon_grid_peak_ratio"] = grid_peak_ratio(reconstructions, reference)["grid_peak_ratio"]
    out.update(compute_recon_metrics(reconstructions, reference[: len(reconstructions)]))
    return out


@torch.no_grad()
def quick_metrics(model, reference: torch.Tensor, num_images: int = 500, seed: int = 0,
                  batch_size: int = 256) -> dict[str, float]:
    """No-download metrics of a model, cheap enough for periodic evaluation during training.

    model: a VAE on any device; it runs in eval mode for the call and gets its mode back.
    reference: held-out uint8 images (N, 3, R, R) on the CPU; the first min(num_images, N) are
    compared with as many prior samples (latents fixed by ``seed``) and reconstructed.
    Uses its own seeded generators: the global RNG state is left untouched.
    Returns the keys of ``image_metrics``. Cost grows linearly with ``num_images`` and is nearly
    all SWD's sorting, on the CPU whatever the model's device.
    """
    reference = reference[:num_images]
    was_training = model.training
    model.eval()
    try:
        samples = sample(model, len(reference), seed, batch_size)
        reconstructions = reconstruct(model, reference, batch_size)
    finally:
        model.train(was_training)
    return image_metrics(samples, reconstructions, reference, seed)
