"""FID, KID and precision/recall of generated images against a reference set.

Images are uint8 (N, 3, H, W) in [0, 255] (or any source ``batching.iter_batches`` reads; the
reference may also be a folder). Features come from a torch-fidelity extractor, by default
'inception-v3-compat' pool3 (2048-d), the usual FID network. The arithmetic is ours:

- FID: ``fid_from_features`` (module ``frechet``, torch-fidelity-free) in float64 numpy,
  tr sqrt(S1 S2) via symmetric eigen-decompositions.
- KID: torch-fidelity's ``kid_features_to_metric`` (polynomial kernel, degree 3, unbiased MMD^2
  averaged over random subsets), fed float64 features.
- Precision/recall (Kynkaenniemi et al. 2019, k-NN balls): torch-fidelity's
  ``prc_features_to_metric`` in its batched (save_cpu_ram) form. Note: on Inception pool3
  features here, whereas the paper and torch-fidelity's default use VGG16 fc2 features, so the
  numbers are not comparable with published PR values.

Reference features/statistics are cached on disk by content (see ``features.reference_stats``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from vaegan.metrics.features import (
    INCEPTION,
    FeatureExtractor,
    extract_features,
    feature_statistics,
    make_extractor,
    reference_stats,
)
from vaegan.metrics.frechet import fid_from_features

METRICS = ("fid", "kid", "pr")


def kid_from_features(
    generated: torch.Tensor, reference: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std over subsets) of features (N1, D) vs (N2, D); subset_size capped at min(N1, N2)."""
    size = min(subset_size, len(generated), len(reference))
    if size < 2:
        raise ValueError("KID needs at least 2 images in each set")
    out = kid_features_to_metric(
        generated.double().cpu(), reference.double().cpu(),
        kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False,
    )  # fmt: skip
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


def precision_recall_from_features(generated: torch.Tensor, reference: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall) in [0, 1] of features (N1, D) vs (N2, D) with k-NN radii."""
    out = prc_features_to_metric(
        generated.float().cpu(), reference.float().cpu(),
        prc_neighborhood=k, prc_batch_size=10000, save_cpu_ram=True, verbose=False,
    )  # fmt: skip
    return out["precision"], out["recall"]


def compute_feature_metrics(
    generated,
    reference,
    metrics: tuple[str, ...] = METRICS,
    *,
    extractor: str | FeatureExtractor = INCEPTION,
    inception_weights: str | Path | None = None,
    download: bool = True,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    num_generated: int | None = None,
    num_reference: int | None = None,
    resolution: int | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """FID / KID / precision-recall of ``generated`` against ``reference``, features extracted once.

    generated: uint8 (N, 3, H, W), an iterable of such batches, a Dataset or a folder.
    reference: the same kinds; tensors, Datasets and folders get a content-keyed stats cache.
    extractor: a torch-fidelity registry name or a ``FeatureExtractor`` (tests pass a small one).
    resolution: crop/resize reference images to R x R first (use the generator's resolution).
    Returns a subset of {"fid", "kid_mean", "kid_std", "precision", "recall"}.
    Raises ``MissingWeightsError`` when Inception weights are needed and unavailable.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; valid: {', '.join(METRICS)}")
    if isinstance(extractor, str):
        extractor = make_extractor(extractor, inception_weights=inception_weights, download=download, device=device)

    gen = extract_features(generated, extractor, batch_size, num_images=num_generated)
    ref = reference_stats(
        reference, extractor, num_images=num_reference, resolution=resolution,
        batch_size=batch_size, cache_dir=cache_dir, use_cache=use_cache,
    )  # fmt: skip

    out: dict[str, float] = {}
    if "fid" in metrics:
        out["fid"] = fid_from_features(*feature_statistics(gen), ref.mu, ref.sigma)
    if "kid" in metrics:
        out["kid_mean"], out["kid_std"] = kid_from_features(gen, ref.features, kid_subsets, kid_subset_size, seed)
    if "pr" in metrics:
        out["precision"], out["recall"] = precision_recall_from_features(gen, ref.features, pr_k)
    return out


def compute_fid(generated, reference, **kwargs) -> float:
    """FID of ``generated`` vs ``reference``; kwargs as for ``compute_feature_metrics``."""
    return compute_feature_metrics(generated, reference, ("fid",), **kwargs)["fid"]


def compute_kid(generated, reference, **kwargs) -> tuple[float, float]:
    """KID (mean, std); kwargs as for ``compute_feature_metrics``."""
    out = compute_feature_metrics(generated, reference, ("kid",), **kwargs)
    return out["kid_mean"], out["kid_std"]


def compute_precision_recall(generated, reference, **kwargs) -> tuple[float, float]:
    """(precision, recall); kwargs as for ``compute_feature_metrics``."""
    out = compute_feature_metrics(generated, reference, ("pr",), **kwargs)
    return out["precision"], out["recall"]
