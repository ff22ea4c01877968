"""Evaluation metrics, one per module (as in StyleGAN2-ADA's metrics/).

Images enter as uint8 (N, 3, H, W) in [0, 255] (vaegan.images.to_uint8 converts model outputs).

- fid:       FID, KID, precision/recall on Inception features (torch-fidelity extractor).
- swd:       sliced Wasserstein distance on Laplacian-pyramid patches (progressive GAN).
- sharpness: fraction of spectral energy above a frequency cutoff, generated / real.
- recon:     PSNR and SSIM of reconstructions against originals.
- features:  feature extraction, Inception weights, the content-keyed reference cache.
"""
from vaegan.metrics.features import (
    INCEPTION_FILE,
    INCEPTION_URL,
    FeatureExtractor,
    MissingWeightsError,
    default_cache_dir,
    extract_features,
    make_extractor,
    reference_stats,
    register_random_extractor,
    resolve_inception_weights,
)
from vaegan.metrics.fid import (
    compute_feature_metrics,
    compute_fid,
    compute_kid,
    compute_precision_recall,
    fid_from_features,
    kid_from_features,
    precision_recall_from_features,
)
from vaegan.metrics.recon import compute_recon_metrics, psnr, psnr_per_image, ssim, ssim_per_image
from vaegan.metrics.sharpness import compute_sharpness, high_frequency_fraction
from vaegan.metrics.swd import compute_swd

__all__ = [
    "INCEPTION_FILE",
    "INCEPTION_URL",
    "FeatureExtractor",
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
