"""The evaluation protocol: trained models against one reference set, under one seed.

Every model is evaluated on the same terms: ``num_samples`` prior samples drawn from latents fixed
by ``seed`` (``generate.sample``), against one reference subset (fixed by the metrics' subset seed,
so it is the same across runs and invocations), whose images are also the held-out set the
models reconstruct (from posterior means). Metrics:

- no download, always: SWD per pyramid level and averaged, sharpness (high-frequency energy of
  samples and of reconstructions relative to the reference), reconstruction PSNR/SSIM;
- with Inception weights (or another torch-fidelity extractor): FID, KID, precision/recall.

Entry points: ``fid`` (``vaegan fid``), ``compare_runs`` (``vaegan compare``, written out by
``vaegan.evaluation.report``), ``summarize_runs`` (the quickstart's table); ``vaegan.metrics.quick`` holds the cheap metrics
that training logs periodically. Images are uint8 (N, 3, R, R) throughout.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

import torch

from vaegan.config import DataConfig
from vaegan.data import build_dataset, describe, source_spec
from vaegan.models.inference import reconstruct, sample
from vaegan.metrics import (
    FeatureExtractor,
    MissingWeightsError,
    compute_feature_metrics,
    make_extractor,
    register_random_extractor,
)
from vaegan.metrics.quick import image_metrics, load_images
from vaegan.metrics.features import INCEPTION
from vaegan.errors import InputError, MissingFileError
from vaegan.storage.hub import is_hub_source, parse_hub_source
from vaegan.storage.pretrained import load_pretrained
from vaegan.storage.prior import load_prior
from vaegan.evaluation.report import summary_table

TEST_EXTRACTOR = "vaegan-random-conv"  # weights-free random network for tests; its FID is not comparable
PREVIEW_IMAGES = 64  # images per panel of the report's grids
EVAL_PRIORS = ("normal", "gmm")


@dataclass(frozen=True)
class Protocol:
    """What every evaluated model gets: the same sample count, seed and reference subset.

    num_reference: reference images (also the held-out images reconstructed); None: num_samples.
    """

    num_samples: int = 10000
    num_reference: int | None = None
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"
    prior: str = "normal"  # latents from N(0, I), or "gmm": from each model's fitted mixture (vaegan sample's default)

    def __post_init__(self):
        if self.prior not in EVAL_PRIORS:
            raise InputError(f"--prior must be one of {', '.join(EVAL_PRIORS)}, got {self.prior!r}")
        for name in ("num_samples", "num_reference", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise InputError(f"{name} must be at least 2, got {value}")


@dataclass
class Reference:
    """images: uint8 (N, 3, R, R); description: where they come from, for reports."""

    images: torch.Tensor
    description: str

    @cached_property
    def sha256(self) -> str:
        """Hash of the pixels: equal hashes mean two evaluations used the same reference images."""
        return hashlib.sha256(self.images.contiguous().numpy().tobytes()).hexdigest()


@dataclass
class RunResult:
    """One evaluated model: its metrics and preview images (uint8, first ``PREVIEW_IMAGES``)."""

    name: str
    path: str
    kind: str
    metrics: dict[str, float]
    samples: torch.Tensor
    reconstructions: torch.Tensor
    seconds: float


@dataclass
class Comparison:
    """Models evaluated under one protocol against one reference.

    feature_note: why FID/KID/PR are absent (None when they were computed).
    """

    protocol: Protocol
    reference: Reference
    extractor: str | None
    runs: list[RunResult]
    feature_note: str | None = None

    def protocol_record(self) -> dict:
        return protocol_record(self.protocol, self.reference, self.extractor)


def protocol_record(protocol: Protocol, reference: Reference, extractor: str | None) -> dict:
    """What metrics.json says about the protocol: enough to check two evaluations are comparable."""
    images = reference.images
    return {**asdict(protocol), "num_reference": len(images), "resolution": images.shape[-1],
            "reference": reference.description, "reference_sha256": reference.sha256, "extractor": extractor}


# ----------------------------------------------------------------------------------------------
# Reference images.


def reference_source(data: DataConfig, ref: str | Path | None = None, ref_celeba: str | Path | None = None,
                     split: str = "test"):
    """(source, description) of the reference images.

    ref: any image folder; ref_celeba: a CelebA root, read with the run's crop settings; neither:
    the run's own dataset (``data``). ``split`` applies to CelebA and the built-in faces (a folder
    dataset has no splits).
    """
    if ref and ref_celeba:
        raise InputError("give either --ref DIR or --ref-celeba ROOT, not both")
    if ref:
        return str(ref), f"folder {ref}"
    if ref_celeba:
        data = replace(data, dataset="celeba", root=str(ref_celeba), cache="")
    dataset = build_dataset(data, split)
    return dataset, describe(dataset)


def load_reference(data: DataConfig, num_images: int | None, resolution: int, *, ref=None, ref_celeba=None,
                   split: str = "test", batch_size: int = 256) -> Reference:
    """The reference subset as uint8 (N, 3, R, R), see ``reference_source`` and ``load_images``."""
    source, description = reference_source(data, ref, ref_celeba, split)
    return Reference(load_images(source, num_images, resolution, batch_size), description)


# ----------------------------------------------------------------------------------------------
# Metrics.


def feature_extractor(name: str | None = None, inception_weights: str | Path | None = None,
                      device: str = "cpu") -> FeatureExtractor:
    """The FID network: Inception-v3 by default (``MissingWeightsError`` if unavailable), or any
    torch-fidelity registry name; ``TEST_EXTRACTOR`` registers the weights-free test network."""
    name = name or INCEPTION
    if name == TEST_EXTRACTOR:
        register_random_extractor(name)
    return make_extractor(name, inception_weights=inception_weights, device=device)


def feature_metrics(images: torch.Tensor, reference: torch.Tensor, extractor: FeatureExtractor,
                    protocol: Protocol) -> dict[str, float]:
    """FID, KID (mean, std) and precision/recall of uint8 images against the reference images."""
    return compute_feature_metrics(images, reference, extractor=extractor, batch_size=protocol.batch_size,
                                   seed=protocol.seed)


# ----------------------------------------------------------------------------------------------
# Entry points.


def fid(checkpoint: str | Path, protocol: Protocol = Protocol(), *, recon: bool = False, ref=None,
        ref_celeba=None, ref_split: str = "test", extractor: str | None = None,
        inception_weights: str | Path | None = None) -> dict:
    """FID/KID/PR of a run, checkpoint or export's prior samples (and reconstructions, if ``recon``).

    Reference: see ``reference_source``. Returns {"checkpoint", "protocol", "samples": metrics,
    "recon": metrics (with ``recon``)}. Raises ``MissingWeightsError`` before any other work
    when the Inception weights are unavailable.
    """
    features = feature_extractor(extractor, inception_weights, protocol.device)
    model, cfg, _, info = load_pretrained(checkpoint, device=protocol.device)
    mixture = _prior(checkpoint, model, info, protocol)
    reference = load_reference(cfg.data, protocol.num_reference or protocol.num_samples, cfg.data.resolution,
                               ref=ref, ref_celeba=ref_celeba, split=ref_split, batch_size=protocol.batch_size)
    out = {"checkpoint": str(checkpoint), "protocol": protocol_record(protocol, reference, features.name)}
    samples = sample(model, protocol.num_samples, protocol.seed, protocol.batch_size, prior=mixture)
    out["samples"] = feature_metrics(samples, reference.images, features, protocol)
    if recon:
        reconstructions = reconstruct(model, reference.images, protocol.batch_size)
        out["recon"] = feature_metrics(reconstructions, reference.images, features, protocol)
    return out


def _prior(source, model, info: dict, protocol: Protocol):
    """The model's fitted mixture when ``protocol.prior`` is "gmm" (an error naming ``vaegan fit-prior``
    when it has none for these weights), else None: N(0, I)."""
    return load_prior(source, model.latent_dim, info) if protocol.prior == "gmm" else None


def evaluate_model(model, reference: Reference, protocol: Protocol, features: FeatureExtractor | None = None,
                   mixture=None) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """(metrics, sample previews, reconstruction previews) of one model under ``protocol``; its
    latents from ``mixture`` (its fitted prior, for ``protocol.prior == "gmm"``), else N(0, I)."""
    samples = sample(model, protocol.num_samples, protocol.seed, protocol.batch_size, prior=mixture)
    reconstructions = reconstruct(model, reference.images, protocol.batch_size)
    metrics = {}
    if features is not None:
        metrics.update(feature_metrics(samples, reference.images, features, protocol))
    metrics.update(image_metrics(samples, reconstructions, reference.images, protocol.seed))
    return metrics, samples[:PREVIEW_IMAGES], reconstructions[:PREVIEW_IMAGES]


def _source_name(source: str | Path) -> str:
    """A run's short name: its folder's name, or a Hub model's repo name."""
    if is_hub_source(source):
        return parse_hub_source(source)[0].split("/")[-1]
    return Path(source).name


def _default_names(paths: list[str | Path], kinds: list[str]) -> list[str]:
    """Folder (or Hub repo) names if they differ, else model kinds if those do, else run1, run2, ..."""
    for names in ([_source_name(p) for p in paths], kinds):
        if len(set(names)) == len(names):
            return names
    return [f"run{i + 1}" for i in range(len(paths))]


def _open_extractor(extractor: str | None, inception_weights,
                    device: str) -> tuple[FeatureExtractor | None, str | None]:
    """The feature extractor, or None and the reason: compare reports the no-download metrics anyway."""
    try:
        return feature_extractor(extractor, inception_weights, device), None
    except MissingWeightsError as e:
        if inception_weights is not None:  # a path the user named explicitly must work
            raise
        return None, str(e)


def compare_runs(run_dirs: list[str | Path], names: list[str] | None = None, protocol: Protocol = Protocol(), *,
                 ref=None, ref_celeba=None, ref_split: str = "test", extractor: str | None = None,
                 inception_weights: str | Path | None = None, with_features: bool = True,
                 log=print) -> Comparison:
    """Evaluate runs (or checkpoints, exports) one after another under one protocol.

    Every run is loaded first, so a bad one (no checkpoint, unreadable weights, another
    resolution) fails before minutes of evaluation of the others.

    The reference comes from ``ref`` / ``ref_celeba`` or else the first run's data config
    (``ref_split``); the other runs must share its resolution. Without Inception weights,
    FID/KID/PR are skipped and ``Comparison.feature_note`` says why; ``with_features=False``
    skips them on purpose.
    """
    paths = [p if is_hub_source(p) else Path(p) for p in run_dirs]  # hf://OWNER/NAME stays a string
    if not paths:
        raise InputError("give at least one run, checkpoint or export folder to compare")
    if names is not None and len(names) != len(paths):
        raise InputError(f"--names gives {len(names)} names for {len(paths)} runs")
    missing = [str(p) for p in paths if not is_hub_source(p) and not p.exists()]
    if missing:  # before minutes of work on the runs that do exist
        raise MissingFileError(f"run, checkpoint or export folder not found: {', '.join(missing)}")
    # Every model is loaded (and so checked: a folder without a checkpoint, weights that do not fit
    # their config, another resolution) before any is evaluated.
    loaded = [load_pretrained(path, device=protocol.device) for path in paths]
    mixtures = [_prior(path, model.vae, model.info, protocol) for path, model in zip(paths, loaded)]
    first = loaded[0].config.data
    for path, model in zip(paths[1:], loaded[1:]):
        if model.config.data.resolution != first.resolution:
            raise InputError(f"{path} generates {model.config.data.resolution}px images, {paths[0]} "
                             f"{first.resolution}px: runs compared must share a resolution")
    features, note = None, "not requested (`vaegan compare` computes them when the Inception weights are available)"
    if with_features:
        features, note = _open_extractor(extractor, inception_weights, protocol.device)
        if note:
            log(f"FID/KID/PR skipped: {note.splitlines()[0]}")

    reference = load_reference(first, protocol.num_reference or protocol.num_samples, first.resolution,
                               ref=ref, ref_celeba=ref_celeba, split=ref_split, batch_size=protocol.batch_size)
    runs = []
    for i, (path, (model, cfg, _, _), mixture) in enumerate(zip(paths, loaded, mixtures)):
        start = time.perf_counter()
        if i and not (ref or ref_celeba) and source_spec(cfg.data, ref_split) != source_spec(first, ref_split):
            log(f"note: {path} was trained on other data than {paths[0]}; both are scored against the "
                f"reference of {paths[0]}")
        metrics, samples, reconstructions = evaluate_model(model, reference, protocol, features, mixture)
        runs.append(RunResult("", str(path), cfg.model.kind, metrics, samples, reconstructions,
                              time.perf_counter() - start))
        log(f"evaluated {path} in {runs[-1].seconds:.1f} s")

    for run, name in zip(runs, names or _default_names(paths, [run.kind for run in runs])):
        run.name = name
    return Comparison(protocol, reference, features.name if features else None, runs, note)


def summarize_runs(run_dirs: list[str | Path], names: list[str] | None = None, *, num_images: int = 256,
                   seed: int = 0, device: str = "cpu", ref=None, ref_celeba=None, ref_split: str = "test",
                   file=None, prior: str = "normal") -> Comparison:
    """Print one line per run (sharpness ratio, SWD per pyramid level and average, reconstruction PSNR).

    No Inception network: the download-free metrics only, cheap enough for a quick look.
    Returns the ``Comparison`` (see ``compare_runs``); ``vaegan.evaluation.report.write_report`` can write it out.
    """
    file = file or sys.stdout
    protocol = Protocol(num_samples=num_images, seed=seed, device=device, prior=prior)
    comparison = compare_runs(run_dirs, names, protocol, ref=ref, ref_celeba=ref_celeba, ref_split=ref_split,
                              with_features=False, log=lambda *a: None)
    print(summary_table(comparison), file=file)
    return comparison
