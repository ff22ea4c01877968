"""Image sources as uint8 batches, for every metric (no torch-fidelity here).

``iter_batches`` reads every accepted image source (tensor, iterable of batches, Dataset, folder)
as uint8 batches (B, 3, H, W) in [0, 255]. Image files are read by ``vaegan.images.read_image``
and other images not R x R are resized by ``vaegan.images.resize_uint8``: the same crop and filter
as the training datasets, so a folder gives the same pixels in evaluation as in training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from vaegan.images import list_images, read_image, resize_uint8

SUBSET_SEED = 0


def _check_uint8(images: torch.Tensor, ndim: int) -> torch.Tensor:
    shape = "(N, 3, H, W)" if ndim == 4 else "(3, H, W)"
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.ndim != ndim or images.shape[-3] != 3:
        got = f"{images.dtype} {tuple(images.shape)}" if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"expected uint8 images {shape} in [0, 255], got {got} (convert with vaegan.images.to_uint8)")
    return images


def _subset(n: int, num_images: int | None) -> np.ndarray:
    """Indices of the images used: all, or a sorted random subset fixed by SUBSET_SEED."""
    if num_images is None or num_images >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(SUBSET_SEED).choice(n, num_images, replace=False))


def _dataset_item(item) -> torch.Tensor:
    return item[0] if isinstance(item, (tuple, list)) else item


def iter_images(source, num_images: int | None = None, resolution: int | None = None) -> Iterator[torch.Tensor]:
    """Single uint8 images (3, H, W) from any accepted source.

    source: uint8 tensor (N, 3, H, W); folder path (images read with ``vaegan.images.read_image``);
    a map-style Dataset whose items are uint8 (3, H, W) or (image, ...) tuples; or any iterable of
    uint8 batches (B, 3, H, W), single images (3, H, W) or (batch, labels) pairs. ``num_images``
    takes a seeded random subset of indexable sources and the first ``num_images`` of plain
    iterables. ``resolution``: every image centre-cropped to a square and resized to R x R (as
    ``ImageFolder`` reads files); None: images as they are (files whole, uncropped).
    """
    if isinstance(source, (str, Path)):
        files = list_images(source)
        for i in _subset(len(files), num_images):
            yield read_image(files[i], resolution)
        return
    for image in _iter_unsized(source, num_images):
        yield image if resolution is None else resize_uint8(image, resolution)


def _iter_unsized(source, num_images: int | None) -> Iterator[torch.Tensor]:
    """``iter_images`` of a tensor, Dataset or iterable, images as they are."""
    if torch.is_tensor(source):
        _check_uint8(source, 4)
        for i in _subset(len(source), num_images):
            yield source[i]
    elif isinstance(source, torch.utils.data.Dataset) and hasattr(source, "__len__"):
        for i in _subset(len(source), num_images):
            yield _check_uint8(_dataset_item(source[int(i)]), 3)
    else:
        count = 0
        for batch in source:
            batch = _dataset_item(batch)  # DataLoader-style (images, labels) pairs
            if torch.is_tensor(batch) and batch.ndim == 3:
                batch = batch[None]
            for image in _check_uint8(batch, 4):
                if num_images is not None and count >= num_images:
                    return
                count += 1
                yield image


def iter_batches(
    source, batch_size: int = 64, num_images: int | None = None, resolution: int | None = None
) -> Iterator[torch.Tensor]:
    """uint8 batches (B, 3, H, W) from any source ``iter_images`` accepts.

    A batch holds images of one size; ``resolution`` first crops/resizes every image to R x R.
    """
    batch: list[torch.Tensor] = []
    for image in iter_images(source, num_images, resolution):
        if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield torch.stack(batch)
