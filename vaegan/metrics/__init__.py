"""Evaluation metrics, one per module (as in StyleGAN2-ADA's metrics/).

Images enter as uint8 (N, 3, H, W) in [0, 255] (vaegan.images.to_uint8 converts model outputs).

- fid:       FID, KID, precision/recall on Inception features (torch-fidelity extractor).
- swd:       sliced Wasserstein distance on Laplacian-pyramid patches (progressive GAN).
- sharpness: fraction of spectral energy above a frequency cutoff, generated / real.
- recon:     PSNR and SSIM of reconstructions against originals.
- artifacts: grid-frequency peaks (checkerboards) and a pixel-space Frechet distance.
- features:  feature extraction, Inception weights, the content-keyed reference cache.
- batching:  every image source (tensor, Dataset, folder, iterable) as uint8 batches.
- frechet:   the Frechet distance of two Gaussians.
- latent:    how the training codes fill the prior (aggregate posterior KL, active units): it takes
             the encoder's posteriors, not images.

fid and features import torch-fidelity; their names here are imported on first use.
"""
from __future__ import annotations

import importlib

# Download-free metrics, imported eagerly: none of them imports torch-fidelity.
from vaegan.metrics.frechet import fid_from_features
from vaegan.metrics.recon import compute_recon_metrics, psnr, psnr_per_image, ssim, ssim_per_image
from vaegan.metrics.sharpness import compute_sharpness, high_frequency_fraction
from vaegan.metrics.swd import compute_swd

# Names backed by torch-fidelity, imported on first use (module __getattr__), so that importing
# vaegan.metrics or a download-free metric does not import torch-fidelity.
_LAZY = {
    **dict.fromkeys(
        ("INCEPTION_FILE", "INCEPTION_URL", "FeatureExtractor", "InceptionWeightsMismatch", "MissingWeightsError",
         "default_cache_dir", "extract_features", "make_extractor", "reference_stats", "register_random_extractor",
         "resolve_inception_weights"),
        "features",
    ),
    **dict.fromkeys(
        ("compute_feature_metrics", "compute_fid", "compute_kid", "compute_precision_recall",
         "kid_from_features", "precision_recall_from_features"),
        "fid",
    ),
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"vaegan.metrics.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "INCEPTION_FILE",
    "INCEPTION_URL",
    "FeatureExtractor",
    "InceptionWeightsMismatch",
    "MissingWeightsError",
    "compute_feature_metrics",
    "compute_fid",
    "compute_kid",
    "compute_precision_recall",
    "compute_recon_metrics",
    "compute_sharpness",
    "compute_swd",
    "default_cache_dir",
    "extract_features",
    "fid_from_features",
    "high_frequency_fraction",
    "kid_from_features",
    "make_extractor",
    "precision_recall_from_features",
    "psnr",
    "psnr_per_image",
    "reference_stats",
    "register_random_extractor",
    "resolve_inception_weights",
    "ssim",
    "ssim_per_image",
]
