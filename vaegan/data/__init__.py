"""Datasets: every item is a uint8 tensor (3, R, R) in [0, 255], R = ``DataConfig.resolution``.

``build_dataset(cfg, split)`` picks the dataset named by ``cfg.dataset``:

- ``faces``: built-in procedural cartoon faces (:class:`Faces`), no download. Splits are
  disjoint random streams of the same seed (parameters drawn from ``(seed, split, index)``);
  each of train / val / test holds ``cfg.num_images`` images; ``all`` is not available.
- ``celeba``: CelebA's official layout under ``cfg.root`` (:class:`CelebA`), official splits.
- ``folder``: every image under ``cfg.root`` (:class:`ImageFolder`); it has no splits, every
  split name gives the same images.

When ``cfg.cache`` names a prepared cache (see :mod:`vaegan.data.cache`) that holds the
requested split, it is read instead of the source. A cache prepared with other settings
(resolution, crop, seed, ...) is an error; one prepared for another split is ignored with a
warning. The datasets returned never flip: ``cfg.hflip`` is applied by the trainer to whole
batches with its own seeded generator, so flips stay reproducible on resume. (Each dataset
class still takes ``hflip=True`` for use outside the trainer.)
"""
from __future__ import annotations

import warnings
from pathlib import Path

from vaegan.config import DataConfig
from vaegan.data.cache import CachedImages, header_path, prepare, read_header
from vaegan.data.celeba import CelebA
from vaegan.data.faces import ATTR_NAMES as FACE_ATTR_NAMES
from vaegan.data.faces import Faces, face_params, render
from vaegan.data.folder import ImageFolder
from vaegan.errors import InputError

__all__ = ["build_dataset", "describe", "source_spec", "CachedImages", "CelebA", "Faces",
           "ImageFolder", "FACE_ATTR_NAMES", "face_params", "render", "prepare", "read_header"]


def source_spec(cfg: DataConfig, split: str) -> dict:
    """The settings that decide the images of ``split``: what a matching cache header must hold."""
    spec = {"dataset": cfg.dataset, "resolution": cfg.resolution}
    if cfg.dataset == "faces":
        spec.update(split=split, num_images=cfg.num_images, seed=cfg.seed)
    elif cfg.dataset == "celeba":
        spec.update(split=split, crop=cfg.crop, crop_top=cfg.crop_top, crop_left=cfg.crop_left)
    return spec


def _from_source(cfg: DataConfig, split: str):
    if cfg.dataset == "faces":
        if split == "all":
            raise InputError("data.split 'all' is not available for data.dataset=faces; "
                             "choose train, val or test (each holds data.num_images images)")
        return Faces(cfg.num_images, cfg.resolution, cfg.seed, split=split)
    if cfg.dataset == "celeba":
        return CelebA(cfg.root, split, cfg.resolution, crop=cfg.crop, crop_top=cfg.crop_top,
                      crop_left=cfg.crop_left, skip_bad_images=cfg.skip_bad_images)
    if cfg.dataset == "folder":
        return ImageFolder(cfg.root, cfg.resolution, skip_bad_images=cfg.skip_bad_images)
    raise InputError(f"data.dataset {cfg.dataset!r} is not valid; choose one of ['faces', 'celeba', 'folder']")


def build_dataset(cfg: DataConfig, split: str | None = None):
    """The dataset for ``split`` (default ``cfg.split``): items uint8 (3, R, R) in [0, 255]."""
    split = split or cfg.split
    if cfg.cache and (Path(cfg.cache).exists() or header_path(cfg.cache).exists()):
        header = read_header(cfg.cache)
        have, want = header["source"], source_spec(cfg, split)
        if have.get("resolution") != want["resolution"]:
            raise InputError(
                f"cache {cfg.cache} holds {have.get('resolution')}x{have.get('resolution')} images but "
                f"data.resolution is {want['resolution']}; prepare the cache again or point data.cache "
                f"at one made for this resolution")
        differ = {k: (have.get(k), v) for k, v in want.items() if k != "split" and have.get(k) != v}
        if differ:
            details = ", ".join(f"{k}: cache {a!r}, config {b!r}" for k, (a, b) in differ.items())
            raise InputError(f"cache {cfg.cache} was prepared with other data settings ({details}); "
                             f"prepare it again or clear data.cache")
        if have.get("split") == want.get("split"):
            return CachedImages(cfg.cache)
        warnings.warn(f"cache {cfg.cache} holds split {have.get('split')!r}; reading split {split!r} "
                      f"from the source", stacklevel=2)
    return _from_source(cfg, split)


def describe(dataset) -> str:
    """One line saying what a dataset is: kind, split, size, resolution, crop, flips."""
    if hasattr(dataset, "describe"):
        return dataset.describe()
    return f"{type(dataset).__name__}: {len(dataset)} images"
