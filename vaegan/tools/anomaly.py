"""Anomaly scores from a trained model: how badly it reconstructs and explains an image.

Scores (higher means more anomalous), per image, in the toolkit's loss units (x in [-1, 1],
sums over elements, constants dropped: -log p(x|z) = sum of squared errors, as in training):

- ``pixel_error``: sum of squared errors of the reconstruction from the posterior mean.
- ``feature_error``: the same in the discriminator's Dis_l features (needs a discriminator).
- ``neg_elbo``: sum of squared errors of decoded posterior samples + KL(q(z|x) || N(0, I)).
- ``neg_iw_elbo``: the importance-weighted bound (Burda et al. 2016) with K samples,
  -log mean_k exp(log p(x|z_k) + log p(z_k) - log q(z_k|x)).
"""
from __future__ import annotations

import csv
import io
import math
import numbers
from pathlib import Path

import numpy as np
import torch

from vaegan.errors import InputError
from vaegan.images import check_output_file, to_float
from vaegan.files import write_text_atomic
from vaegan.models import standard_normal_log_prob

SCORES = ("pixel_error", "feature_error", "neg_elbo", "neg_iw_elbo")
_TRUE, _FALSE = ("1", "true", "yes", "anomaly", "anomalous"), ("0", "false", "no", "normal")


def _sse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).pow(2).flatten(1).sum(1)


@torch.no_grad()
def anomaly_scores(model, images: torch.Tensor, discriminator=None, iw_samples: int = 0, elbo_samples: int = 1,
                   seed: int = 0, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Per-image scores of uint8 images (N, 3, R, R): ``{name: float64 (N,)}`` (see the module doc).

    ``feature_error`` only with a discriminator, ``neg_iw_elbo`` only with ``iw_samples`` > 0.
    Posterior noise comes from ``seed``, so the scores are repeatable.
    """
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {}

    def draw(shape) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(device)

    for i in range(0, len(images), batch_size):
        x = to_float(images[i : i + batch_size].to(device))
        posterior = model.encode(x)
        rec = model.decode(posterior.mean)
        scores = {"pixel_error": _sse(rec, x)}
        if discriminator is not None:
            scores["feature_error"] = _sse(discriminator(rec)[1][-1], discriminator(x)[1][-1])
        # Negative ELBO: reconstruction error of posterior samples plus the analytic KL.
        errors = [_sse(model.decode(posterior.sample(noise=draw(posterior.mean.shape))), x)
                  for _ in range(elbo_samples)]
        scores["neg_elbo"] = torch.stack(errors).mean(0) + posterior.kl()
        # Importance-weighted bound: log-mean-exp over K samples of the log weights.
        if iw_samples > 0:
            log_w = []
            for _ in range(iw_samples):
                z = posterior.sample(noise=draw(posterior.mean.shape))
                log_w.append(-_sse(model.decode(z), x) + standard_normal_log_prob(z) - posterior.log_prob(z))
            scores["neg_iw_elbo"] = -(torch.logsumexp(torch.stack(log_w), 0) - math.log(iw_samples))
        for k, v in scores.items():
            out.setdefault(k, []).append(v.double().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` separating labels 1 (positive) from 0; ties count 1/2.

    The Mann-Whitney U statistic with mid-ranks: the probability that a random positive scores
    above a random negative, plus half the probability of a tie.
    """
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"AUROC needs both classes, got {n_pos} positive and {n_neg} negative")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct value, ties averaged
    u = mid_ranks[inverse][y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def calibrate_threshold(scores, percentile: float = 95.0) -> float:
    """The ``percentile`` of scores on normal data: images scoring above it are flagged."""
    if not 0.0 <= percentile <= 100.0:
        raise InputError(f"--percentile must be in [0, 100], got {percentile}")
    return float(np.percentile(np.asarray(scores, np.float64), percentile))


def read_labels(path: str | Path) -> dict[str, int]:
    """``{file: 0 or 1}`` from a CSV with ``file`` and ``label`` columns (1/anomaly/true = anomalous)."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
            raise InputError(f"{path}: expected a header with 'file' and 'label' columns, got {reader.fieldnames}")
        labels = {}
        for line, row in enumerate(reader, start=2):
            value = (row["label"] or "").strip().lower()
            if value not in _TRUE + _FALSE:
                raise InputError(f"{path}, line {line}: label {row['label']!r} is not one of {list(_TRUE + _FALSE)}")
            labels[row["file"].strip()] = int(value in _TRUE)
    return labels


def _match_labels(names: list[str], labels: dict[str, int], source: str) -> list[int]:
    """Look names up by relative path, then by file name."""
    by_base = {Path(k).name: v for k, v in labels.items()}
    out = []
    for name in names:
        value = labels.get(name, by_base.get(Path(name).name))
        if value is None:
            raise InputError(f"{source} has no label for image {name!r}")
        out.append(value)
    return out


def write_scores(path: str | Path, names: list[str], scores: dict[str, torch.Tensor], labels: list[int] | None = None,
                 flagged: torch.Tensor | None = None) -> None:
    """CSV: file, [label,] one column per score[, anomalous]; written atomically."""
    header = ["file", *(["label"] if labels is not None else []), *scores,
              *(["anomalous"] if flagged is not None else [])]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for i, name in enumerate(names):
        writer.writerow([name, *([labels[i]] if labels is not None else []),
                         *(f"{v[i].item():.6g}" for v in scores.values()),
                         *([int(flagged[i])] if flagged is not None else [])])
    write_text_atomic(path, text.getvalue())


def score_to_csv(checkpoint: str | Path, images: str | Path, out: str | Path, anomalies: str | Path | None = None,
                 labels: str | Path | None = None, calibrate: str | Path | None = None, percentile: float = 95.0,
                 threshold: float | None = None, score: str = "neg_elbo", iw_samples: int = 0, limit: int | None = None,
                 seed: int = 0, device: str = "cpu") -> dict:
    """Score images (file, folder or ``split:NAME``) into a CSV; returns a summary dict.

    ``anomalies``: a second source whose images are anomalous (``images`` then count as normal);
    ``labels``: a file,label CSV instead. With labels the summary holds each score's AUROC. A
    threshold (given, or the ``percentile`` of ``score`` over ``calibrate``) adds an ``anomalous``
    column and a count of flagged images.
    """
    from vaegan.data.inputs import check_limit, read_images
    from vaegan.storage.pretrained import load_pretrained

    check_limit(limit)
    if isinstance(iw_samples, bool) or not isinstance(iw_samples, numbers.Integral) or iw_samples < 0:
        raise InputError(f"--iw-samples must be a whole number >= 0 (0: no importance-weighted bound), "
                         f"got {iw_samples!r}")
    if score not in SCORES:
        raise InputError(f"--score {score!r} is not valid; choose one of {list(SCORES)}")
    if threshold is not None and not math.isfinite(threshold):
        raise InputError(f"--threshold must be a finite number, got {threshold}")
    if not 0.0 <= percentile <= 100.0:
        raise InputError(f"--percentile must be in [0, 100], got {percentile}")
    check_output_file(out)
    if anomalies is not None and labels is not None:
        raise InputError("give --anomalies (a folder of anomalous images) or --labels (a CSV), not both")
    if calibrate is not None and threshold is not None:
        raise InputError("give --calibrate (to set the threshold) or --threshold, not both")
    vae, cfg, dis, _ = load_pretrained(checkpoint, device, with_discriminator=None)

    def run(source) -> tuple[list[str], dict[str, torch.Tensor]]:
        data = read_images(source, cfg, limit)
        return data.names, anomaly_scores(vae, data.images, dis, iw_samples=iw_samples, seed=seed)

    names, scores = run(images)
    truth = None
    if anomalies is not None:
        more_names, more = run(anomalies)
        truth = [0] * len(names) + [1] * len(more_names)
        names = [f"normal/{n}" for n in names] + [f"anomaly/{n}" for n in more_names]
        scores = {k: torch.cat([v, more[k]]) for k, v in scores.items()}
    elif labels is not None:
        truth = _match_labels(names, read_labels(labels), str(labels))
    if score not in scores:
        raise InputError(f"--score {score!r} is not available here; choose one of {list(scores)}"
                         + (" (feature_error needs a discriminator)" if score == "feature_error" else "")
                         + (" (neg_iw_elbo needs --iw-samples K)" if score == "neg_iw_elbo" else ""))
    summary: dict = {"images": len(names), "score": score, "out": str(out)}
    if calibrate is not None:
        threshold = calibrate_threshold(run(calibrate)[1][score], percentile)
        summary["calibrated_on"] = str(calibrate)
    flagged = None
    if threshold is not None:
        flagged = scores[score] > threshold
        summary.update(threshold=threshold, flagged=int(flagged.sum()))
    if truth is not None:
        summary["auroc"] = {k: auroc(v, truth) for k, v in scores.items()}
    write_scores(out, names, scores, truth, flagged)
    return summary
