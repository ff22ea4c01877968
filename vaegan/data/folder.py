"""Datasets of image files: a shared base (decode, crop, resize, skip bad files) and ImageFolder."""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vaegan.errors import InputError
from vaegan.images import centre_square, list_images, read_image


class ImageFiles(Dataset):
    """Base for datasets of image files: item ``i`` is uint8 (3, R, R) in [0, 255].

    Subclasses set ``files`` and implement ``crop_box(width, height)``. Every image is read by
    ``vaegan.images.read_image``: decoded as RGB, cropped to that box, then resized to R x R
    (``vaegan.images.RESAMPLE``: bicubic, antialiased), as evaluation references are read.

    Unreadable files raise a ``ValueError`` naming the file. With ``skip_bad_images`` the next
    readable image is returned instead, and the bad file is recorded in ``bad_files`` (its count
    in ``num_skipped``) and warned about once. These records live in the process that read the
    file: with DataLoader workers each worker keeps its own, so the main process's dataset
    object shows none of them. ``vaegan.data.cache.prepare`` reads every file once in the main
    process's view and reports all bad files, so prefer a prepared cache for large datasets.
    """

    files: list[Path]

    def __init__(self, resolution: int, hflip: bool = False, skip_bad_images: bool = False):
        self.resolution, self.hflip, self.skip_bad_images = resolution, hflip, skip_bad_images
        self.bad_files: list[Path] = []
        self._bad: set[int] = set()

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the region to keep in a width x height image."""
        raise NotImplementedError

    @property
    def num_skipped(self) -> int:
        return len(self.bad_files)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> torch.Tensor:
        """Decode file ``index`` (no skipping, no flip): uint8 (3, R, R); ValueError if unreadable."""
        return read_image(self.files[index], self.resolution, self.crop_box)

    def load(self, index: int) -> torch.Tensor:
        """``read(index)``, or with ``skip_bad_images`` the next readable image after it."""
        if not self.skip_bad_images:
            try:
                return self.read(index)
            except (OSError, ValueError) as e:
                raise InputError(f"{e}; to skip unreadable images add the override data.skip_bad_images=true "
                                 f"(a resumed run accepts it too)") from None
        n = len(self.files)
        for k in range(n):
            j = (index + k) % n
            if j in self._bad:
                continue
            try:
                return self.read(j)
            except (OSError, ValueError) as e:
                self._bad.add(j)
                self.bad_files.append(self.files[j])
                warnings.warn(f"skipping unreadable image ({e})", stacklevel=2)
        raise InputError(f"no readable images among the {n} files of this dataset")

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.load(index)
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image

    def content_key(self) -> str:
        """sha256 of file names (relative to the root) and sizes: changes when the files do."""
        h = hashlib.sha256()
        for path in self.files:
            h.update(f"{os.path.relpath(path, self.root)}\t{os.path.getsize(path)}\n".encode())
        return h.hexdigest()


class ImageFolder(ImageFiles):
    """Every jpg/png/webp/bmp under ``root`` (recursive, sorted), centre-cropped to a square.

    Grayscale (16-bit too, scaled to 8 bits), palette, CMYK and RGBA images become RGB
    (transparent parts on white; ``vaegan.images.load_image``). Item ``i`` is
    uint8 (3, R, R) in [0, 255]; there are no attributes.
    """

    attributes = None
    attr_names: list[str] = []

    def __init__(self, root: str | Path, resolution: int, hflip: bool = False,
                 skip_bad_images: bool = False):
        super().__init__(resolution, hflip, skip_bad_images)
        self.root = Path(root)
        self.files = list_images(self.root)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        return centre_square(width, height)

    def source(self) -> dict:
        """What identifies these images, for cache headers."""
        return {"dataset": "folder", "root": str(self.root), "resolution": self.resolution,
                "num_images": len(self.files), "crop": "centre square"}

    def describe(self) -> str:
        return (f"folder {self.root}: {len(self.files)} images, centre-cropped to "
                f"{self.resolution}x{self.resolution}, hflip={self.hflip}")
