"""Images handed to the tools: a file, a folder, or a split of a dataset, at the model's resolution.

Image files are read as ``data.dataset=folder`` reads them (``vaegan.images.read_image``, as
evaluation references are read too): RGB, centre-cropped to a square, resized (bicubic) to the
model's resolution. ``split:NAME`` (e.g. ``split:val``) names a split of
the dataset in the model's own data config (the built-in faces, CelebA, ...).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import torch

from vaegan.config import Config
from vaegan.data.folder import ImageFiles, ImageFolder
from vaegan.errors import InputError
from vaegan.images import IMAGE_EXTENSIONS, list_images

SPLIT_PREFIX = "split:"


class ImageList(ImageFiles):
    """Given image files, centre-cropped to a square like :class:`ImageFolder`."""

    crop_box = ImageFolder.crop_box

    def __init__(self, files: list[Path], resolution: int):
        super().__init__(resolution)
        self.files = list(files)


@dataclass
class ImageSet:
    """names[i] labels images[i]; files are the source files (None for a dataset split)."""

    names: list[str]
    images: torch.Tensor  # uint8 (N, 3, R, R)
    files: list[Path] | None = None
    dataset: object = None  # the dataset a split came from (it may carry attributes)
    indices: list[int] | None = None  # positions in that dataset


def check_limit(limit: int | None, what: str = "--limit") -> None:
    """InputError unless ``limit`` is None (no limit) or a count of at least 1."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1):
        raise InputError(f"{what} must be a whole number of images, at least 1, got {limit!r}")


def image_files(source: str | Path) -> tuple[Path, list[Path]]:
    """(root, files) for an image file or a folder of them (recursive, sorted)."""
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"{path} is not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)})")
        return path.parent, [path]
    return path, list_images(path)


def read_images(source: str | Path, cfg: Config, limit: int | None = None) -> ImageSet:
    """Images from a file, a folder or ``split:NAME`` of ``cfg.data``, as uint8 (N, 3, R, R), R = cfg.data.resolution.

    ``limit`` keeps the first images only (files in sorted order, dataset items by index); it
    must be at least 1 (InputError otherwise).
    """
    check_limit(limit)
    if str(source).startswith(SPLIT_PREFIX):
        return read_split(str(source)[len(SPLIT_PREFIX):], cfg, limit)
    root, files = image_files(source)
    files = files[:limit] if limit else files
    reader = ImageList(files, cfg.data.resolution)
    images = torch.stack([reader.read(i) for i in range(len(files))])
    names = [f.relative_to(root).as_posix() for f in files]
    return ImageSet(names, images, files)


def read_split(split: str, cfg: Config, limit: int | None = None, indices: list[int] | None = None,
               dataset=None) -> ImageSet:
    """Items of one split of the model's dataset (``indices``, else the first ``limit``).

    ``dataset``: that split already built (``build_dataset(cfg.data, split)``).
    """
    from vaegan.data import build_dataset

    check_limit(limit)
    dataset = dataset if dataset is not None else build_dataset(cfg.data, split)
    if indices is None:
        indices = list(range(min(len(dataset), limit) if limit else len(dataset)))
    files = getattr(dataset, "files", None)
    names = [files[i].name if files is not None else f"{split}-{i:06d}" for i in indices]
    if not indices:
        raise InputError(f"split {split!r} of {cfg.data.dataset} has no images to read")
    images = torch.stack([dataset[i] for i in indices])
    return ImageSet(names, images, [files[i] for i in indices] if files is not None else None, dataset, indices)
