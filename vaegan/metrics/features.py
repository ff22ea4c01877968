"""Image features for FID, KID and precision/recall.

Everything here takes uint8 images (N, 3, H, W) in [0, 255], the toolkit's edge convention and
what torch-fidelity's extractors expect. Four pieces:

- ``extract_features``: features of any image source ``vaegan.metrics.batching.iter_batches``
  reads (tensor, iterable of batches, Dataset, folder; files read as the training datasets read
  them).
- ``make_extractor``: a torch-fidelity feature extractor (by registry name) wrapped as a plain
  callable, with the Inception weights resolved locally or ``MissingWeightsError``. The weights
  file is a pickle that torch-fidelity loads with ``weights_only=False`` (it can run code), so its
  SHA-256 is checked against ``INCEPTION_SHA256`` first and only those verified bytes are handed
  on (``InceptionWeightsMismatch`` otherwise). torch-fidelity's other built-in extractors load
  unverified weights or code and are refused.
- ``reference_stats``: features and mean/covariance of a reference set, cached on disk under a
  key built from the reference's *content* (torch-fidelity's own cache is keyed by a name only and
  would silently reuse stale statistics, so it is never used here).
- ``RandomConvExtractor``: a tiny fixed random network for tests and smoke runs (no weights file).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import torch_fidelity
from safetensors import safe_open
from safetensors.torch import save_file
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

from vaegan.errors import InputError, VaeganError
from vaegan.files import atomic_path
from vaegan.images import list_images
from vaegan.metrics.batching import SUBSET_SEED, _subset, iter_batches, iter_images

INCEPTION = "inception-v3-compat"
INCEPTION_URL = URL_INCEPTION_V3
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
# SHA-256 of torch-fidelity's weights-inception-2015-12-05-6726825d.pth (95,628,359 bytes; the file
# name carries its first 8 hex digits, torch hub's convention).
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
# 2: folder references read like training datasets (bicubic, not Lanczos); 3: 16-bit grayscale
# scaled to 8 bits and LA / colour-key transparency put on white (vaegan.images.load_image).
CACHE_FORMAT = 3
# torch-fidelity's own extractors other than Inception: they load weights unverified (a pickle from
# torch hub's cache with weights_only=False) or run code fetched from the network, so they are refused.
_UNVERIFIED_EXTRACTORS = frozenset(FEATURE_EXTRACTORS_REGISTRY) - {INCEPTION}


class MissingWeightsError(VaeganError, RuntimeError):
    """The Inception weights file is neither given, nor in torch hub's cache, nor downloadable."""


class InceptionWeightsMismatch(VaeganError, RuntimeError):
    """A file offered as the Inception weights is not torch-fidelity's file (wrong SHA-256); it is never loaded."""


# ----------------------------------------------------------------------------------------------
# Inception weights.


def inception_cache_path() -> Path:
    """Where torch-fidelity (through torch.hub) keeps the Inception weights: <hub dir>/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _missing_weights(reason: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"Inception-v3 weights for FID/KID/PR are not available ({reason}).\n"
        f"Download {INCEPTION_FILE} from\n  {INCEPTION_URL}\n"
        f"and either pass its path with --inception-weights PATH (inception_weights=PATH in Python)\n"
        f"or place it at\n  {inception_cache_path()}\n"
        f"(torch hub's cache; TORCH_HOME moves it)."
    )


def resolve_inception_weights(path: str | Path | None = None, download: bool = True) -> Path:
    """Path of a local Inception weights file, downloading it into torch hub's cache if allowed.

    Order: ``path`` if given (must exist); else torch hub's cache; else download there (when
    ``download``). Raises ``MissingWeightsError`` with a user-facing message otherwise.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise _missing_weights(f"no file at {path}")
        return path
    cached = inception_cache_path()
    if cached.is_file():
        return cached
    if not download:
        raise _missing_weights(f"{cached} does not exist and downloading is off")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # temp file, then rename; the digest is checked before the rename
        torch.hub.download_url_to_file(INCEPTION_URL, str(cached), hash_prefix=INCEPTION_SHA256, progress=True)
    except Exception as e:  # URLError, HTTPError, SSL and socket errors all mean the same here
        raise _missing_weights(f"{cached} does not exist and the download failed: {e}") from None
    return cached


def verify_inception_weights(path: str | Path) -> bytes:
    """The bytes of ``path`` once their SHA-256 is ``INCEPTION_SHA256``; nothing is unpickled here.

    Raises ``InceptionWeightsMismatch`` (one line: the file, both digests, where to get the right
    file) otherwise. Callers load the returned bytes, not the file again, so the file cannot be
    swapped between the check and the load.
    """
    path = Path(path)
    digest, chunks = hashlib.sha256(), []
    try:
        keep = path.stat().st_size <= 2 * 95_628_359  # hash a huge file without holding it in memory
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
                if keep:
                    chunks.append(chunk)
    except OSError as e:
        raise _missing_weights(f"cannot read {path}: {e}") from None
    actual = digest.hexdigest()
    if actual != INCEPTION_SHA256:
        raise InceptionWeightsMismatch(
            f"{path} is not torch-fidelity's Inception weights file {INCEPTION_FILE}: its SHA-256 is {actual}, "
            f"expected {INCEPTION_SHA256}; it was not loaded. Download {INCEPTION_FILE} from {INCEPTION_URL} and "
            f"pass it with --inception-weights PATH or place it at {inception_cache_path()}"
        )
    return b"".join(chunks)


# ----------------------------------------------------------------------------------------------
# Feature extractors.


@dataclass(frozen=True)
class FeatureExtractor:
    """A feature function with the identity the reference cache is keyed by.

    fn: uint8 (B, 3, H, W) on ``device`` -> float (B, D). ``name`` and ``layer`` must change
    whenever the function does (they go into the cache key).
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    name: str
    layer: str
    device: torch.device = torch.device("cpu")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float32 (B, D) on the CPU."""
        return self.fn(images.to(self.device)).float().cpu()


def make_extractor(
    name: str = INCEPTION,
    layer: str | None = None,
    *,
    inception_weights: str | Path | None = None,
    download: bool = True,
    device: str | torch.device = "cpu",
) -> FeatureExtractor:
    """A torch-fidelity feature extractor from its registry, as a ``FeatureExtractor``.

    ``layer`` defaults to the extractor's FID layer ('2048', pool3, for Inception). For
    Inception the weights come from ``resolve_inception_weights`` (never from torch-fidelity's
    own silent download). The weights file must have the SHA-256 ``INCEPTION_SHA256``
    (``InceptionWeightsMismatch`` before anything is unpickled); torch-fidelity then loads the
    verified bytes. A verified file that still cannot be loaded raises ``MissingWeightsError``.
    torch-fidelity's other built-in extractors are refused (``InputError``): they load unverified
    pickles or remote code. Extractors registered in Python (``register_random_extractor``) work.
    """
    if name in _UNVERIFIED_EXTRACTORS:
        raise InputError(f"feature extractor {name!r} is not allowed: torch-fidelity loads its weights unverified "
                         f"(a pickle from torch hub's cache, or code from the network); use {INCEPTION!r}, whose "
                         f"weights file is checked against a known SHA-256, or one registered in Python")
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        allowed = [n for n in FEATURE_EXTRACTORS_REGISTRY if n not in _UNVERIFIED_EXTRACTORS]
        raise InputError(f"unknown feature extractor {name!r}; available: {', '.join(allowed)}")
    layer = layer or FEATURE_EXTRACTORS_REGISTRY[name].get_default_feature_layer_for_metric("fid")
    kwargs = {}
    if name == INCEPTION:
        weights = resolve_inception_weights(inception_weights, download)
        # torch-fidelity hands this to torch.load(..., weights_only=False): give it the verified bytes
        kwargs["feature_extractor_weights_path"] = io.BytesIO(verify_inception_weights(weights))
    try:
        module = create_feature_extractor(name, [layer], cuda=False, verbose=False, **kwargs)
    except Exception as e:  # load_state_dict: size or key errors (not expected from the verified file)
        if name != INCEPTION:
            raise
        raise _missing_weights(f"cannot load {weights}: {e}") from None
    device = torch.device(device)
    module.to(device)
    return FeatureExtractor(fn=lambda x: module(x)[0], name=name, layer=layer, device=device)


class RandomConvExtractor(FeatureExtractorBase):
    """Two random (fixed-seed) conv layers + mean/std pooling: 64 features, no weights file.

    For tests and smoke runs only; its "FID" is not comparable to anything published.
    Input uint8 (B, 3, H, W), any H, W >= 8.
    """

    SEED = 1234

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        generator = torch.Generator().manual_seed(self.SEED)
        self.conv1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=generator) * (0.3 if p.ndim > 1 else 0.1)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        x = (x.float() - 128) / 128
        x = F.leaky_relu(self.conv1(x), 0.2)
        x = F.leaky_relu(self.conv2(x), 0.2)
        return (torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1),)

    @staticmethod
    def get_provided_features_list():
        return ("64",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "64"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 16, 16, dtype=torch.uint8)


def register_random_extractor(name: str = "vaegan-random-conv") -> str:
    """Register ``RandomConvExtractor`` with torch-fidelity under ``name`` (idempotent)."""
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(name, RandomConvExtractor)
    return name


# ----------------------------------------------------------------------------------------------
# Features of an image source (read by vaegan.metrics.batching).


def extract_features(source, extractor: FeatureExtractor, batch_size: int = 64, **kwargs) -> torch.Tensor:
    """Features of every image in ``source``: float32 (N, D). kwargs go to ``iter_batches``."""
    features = [extractor(batch) for batch in iter_batches(source, batch_size, **kwargs)]
    if not features:
        raise ValueError("no images to compute features of")
    return torch.cat(features)


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """features (N, D) -> mean (D,) and unbiased covariance (D, D), both float64."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need features (N >= 2, D), got {tuple(features.shape)}")
    x = features.double()
    return x.mean(dim=0), torch.cov(x.T)


# ----------------------------------------------------------------------------------------------
# Reference statistics with a content-keyed disk cache.


@dataclass
class ReferenceStats:
    """features: float32 (N, D); mu: float64 (D,); sigma: float64 (D, D)."""

    features: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor


def default_cache_dir() -> Path:
    """$VAEGAN_CACHE_DIR, else $XDG_CACHE_HOME/vaegan/metrics, else ~/.cache/vaegan/metrics."""
    if os.environ.get("VAEGAN_CACHE_DIR"):
        return Path(os.environ["VAEGAN_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "vaegan" / "metrics"


def content_fingerprint(source, num_images: int | None = None) -> str | None:
    """Hash of what a reference contains, or None for plain iterables (not cacheable).

    Folder: the sorted relative paths, sizes and mtimes (ns) of the image files used (so editing,
    adding or removing a file changes it; the folder's own location does not). Tensor or Dataset:
    the bytes and shapes of the images used (a Dataset is read once for this).
    """
    h = hashlib.sha256()
    if isinstance(source, (str, Path)):
        root = Path(source)
        files = list_images(root)
        for i in _subset(len(files), num_images):
            st = files[i].stat()
            h.update(json.dumps([files[i].relative_to(root).as_posix(), st.st_size, st.st_mtime_ns]).encode())
    elif torch.is_tensor(source) or (isinstance(source, torch.utils.data.Dataset) and hasattr(source, "__len__")):
        for image in iter_images(source, num_images):
            h.update(str(tuple(image.shape)).encode())
            h.update(image.contiguous().numpy().tobytes())
    else:
        return None
    return h.hexdigest()


def _count(source, num_images: int | None) -> int:
    n = len(list_images(source)) if isinstance(source, (str, Path)) else len(source)
    return n if num_images is None else min(n, num_images)


def reference_stats(
    reference,
    extractor: FeatureExtractor,
    *,
    num_images: int | None = None,
    resolution: int | None = None,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> ReferenceStats:
    """Features and statistics of a reference set, from the disk cache when its content is unchanged.

    The cache file is ``<cache_dir>/ref-<extractor>-<layer>-<digest>.safetensors``; the digest is
    over a JSON key of: cache format, source kind, content fingerprint, number of images used,
    subset seed, ``resolution``, extractor name, feature layer and torch-fidelity's version. The
    key is also stored in the file's metadata and checked on load. Plain iterables are not cached.
    """
    fingerprint = content_fingerprint(reference, num_images) if use_cache else None
    path = key_json = None
    if fingerprint is not None:
        key = {
            "format": CACHE_FORMAT,
            "source": "folder" if isinstance(reference, (str, Path)) else type(reference).__name__,
            "content": fingerprint,
            "num_images": _count(reference, num_images),
            "subset_seed": SUBSET_SEED,
            "resolution": resolution,
            "extractor": extractor.name,
            "layer": extractor.layer,
            "torch_fidelity": torch_fidelity.__version__,
        }
        key_json = json.dumps(key, sort_keys=True)
        digest = hashlib.sha256(key_json.encode()).hexdigest()[:32]
        safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{extractor.name}-{extractor.layer}")
        path = Path(cache_dir or default_cache_dir()) / f"ref-{safe_name}-{digest}.safetensors"
        stats = _load_cached(path, key_json)
        if stats is not None:
            return stats

    features = extract_features(reference, extractor, batch_size, num_images=num_images, resolution=resolution)
    mu, sigma = feature_statistics(features)
    stats = ReferenceStats(features=features, mu=mu, sigma=sigma)
    if path is not None:
        with atomic_path(path, suffix=".safetensors") as tmp:
            tensors = {"features": features.contiguous(), "mu": mu, "sigma": sigma}
            save_file(tensors, str(tmp), metadata={"key": key_json})
    return stats


def _load_cached(path: Path, key_json: str) -> ReferenceStats | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key_json:
                return None
            tensors = {name: f.get_tensor(name) for name in ("features", "mu", "sigma")}
    except Exception as e:  # a truncated or foreign file is recomputed, not fatal
        warnings.warn(f"ignoring unreadable metrics cache {path}: {e}")
        return None
    return ReferenceStats(features=tensors["features"], mu=tensors["mu"], sigma=tensors["sigma"])
