"""CelebA in its standard layout (aligned-and-cropped JPEGs plus the official text files).

    root/
      img_align_celeba/000001.jpg ...
      list_eval_partition.txt   "000001.jpg 0" per image: 0 train, 1 val, 2 test
      list_attr_celeba.txt      optional: count, 40 names, then "000001.jpg -1 1 ..." rows
      identity_CelebA.txt       optional: "000001.jpg 2880" per image

Works on full CelebA and on subsets of it (where the attribute file may cover only some images),
which torchvision's reader rejects. ``root`` may also be the folder that
``torchvision.datasets.CelebA(root=ROOT, download=True)`` fills: it puts the same files in
``ROOT/celeba/`` (see :func:`celeba_folder`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vaegan.data.folder import ImageFiles
from vaegan.errors import InputError, MissingFileError

SPLITS = {"train": 0, "val": 1, "test": 2, "all": None}
WIDTH, HEIGHT = 178, 218  # every aligned-and-cropped CelebA image
_HINT = ("download CelebA from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html and point "
         "data.root at the folder holding img_align_celeba/")


def celeba_folder(root: str | Path) -> Path:
    """The folder holding ``img_align_celeba/``: ``root`` itself (the official layout) or, as
    torchvision's downloader leaves it, ``root/celeba``."""
    root = Path(root)
    if not (root / "img_align_celeba").is_dir() and (root / "celeba" / "img_align_celeba").is_dir():
        return root / "celeba"
    return root


def _lines(path: Path):
    """(line number, stripped text) of the non-empty lines of a text file."""
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line.strip()


def read_partition(path: Path) -> list[tuple[str, int, int]]:
    """``[(file name, split code 0/1/2, line number), ...]`` in file order.

    FileNotFoundError if the file is missing, ValueError naming the line if one is malformed.
    """
    if not path.is_file():
        raise MissingFileError(f"CelebA partition file not found: {path} "
                                f"(expected the official list_eval_partition.txt; {_HINT})")
    entries, seen = [], set()
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise InputError(f"{path}, line {number}: expected '<image>.jpg <0|1|2>', got {line!r}")
        if parts[0] in seen:
            raise InputError(f"{path}, line {number}: image {parts[0]} is listed twice")
        seen.add(parts[0])
        entries.append((parts[0], int(parts[1]), number))
    if not entries:
        raise InputError(f"{path}: no entries (expected lines '<image>.jpg <0|1|2>')")
    return entries


def read_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Attribute names and ``{file name: int8 row of -1/1}`` from list_attr_celeba.txt."""
    lines = _lines(path)
    number, count = next(lines, (1, ""))
    if not count.isdigit():
        raise InputError(f"{path}, line {number}: expected the number of rows, got {count!r}")
    number, header = next(lines, (2, ""))
    names = header.split()
    if not names:
        raise InputError(f"{path}, line {number}: expected the attribute names")
    rows = {}
    for number, line in lines:
        parts = line.split()
        row = np.array(parts[1:], dtype=np.int8) if len(parts) == len(names) + 1 else None
        if row is None or not np.all(np.abs(row) == 1):
            raise InputError(f"{path}, line {number}: expected '<image>.jpg' and {len(names)} "
                             f"values of -1 or 1, got {line[:80]!r}")
        rows[parts[0]] = row
    if len(rows) != int(count):
        raise InputError(f"{path}: line 1 says {count} rows but the file has {len(rows)} (truncated?)")
    return names, rows


def read_identities(path: Path) -> dict[str, int]:
    """``{file name: identity}`` from identity_CelebA.txt."""
    ids = {}
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise InputError(f"{path}, line {number}: expected '<image>.jpg <identity>', got {line!r}")
        ids[parts[0]] = int(parts[1])
    return ids


class CelebA(ImageFiles):
    """One split of CelebA: item ``i`` is uint8 (3, R, R) in [0, 255].

    Each 178x218 image is cropped to a ``crop`` x ``crop`` square whose top-left corner is
    (``crop_top``, ``crop_left``), -1 meaning centred on that axis (default: rows 40:188 as in
    Larsen et al.), or with ``crop=0`` kept whole and squashed to a square; then resized to R.

    ``attributes``: float32 (N, 40) of +1/-1, 0 where the attribute file has no row for the
    image (``None`` without the file); ``attribute(name)`` gives one column. ``identities``:
    int64 (N,), -1 where unknown (``None`` without the file). Both are read on first use.
    """

    def __init__(self, root: str | Path, split: str = "train", resolution: int = 64,
                 crop: int = 148, crop_top: int = 40, crop_left: int = -1,
                 hflip: bool = False, skip_bad_images: bool = False):
        super().__init__(resolution, hflip, skip_bad_images)
        if split not in SPLITS:
            raise InputError(f"CelebA split {split!r} is not valid; choose one of {list(SPLITS)}")
        self.root, self.split = celeba_folder(root), split
        self.crop, self.crop_top, self.crop_left = crop, crop_top, crop_left
        self.crop_box(WIDTH, HEIGHT)  # fail early on a crop that cannot fit
        images = self.root / "img_align_celeba"
        if not self.root.is_dir():
            raise MissingFileError(f"CelebA root not found: {self.root} (expected a folder holding "
                                    f"img_align_celeba/ and list_eval_partition.txt, or celeba/ holding them as "
                                    f"torchvision's downloader leaves them; {_HINT})")
        if not images.is_dir():
            raise MissingFileError(f"CelebA image folder not found: {images} "
                                    f"(expected the official img_align_celeba/ of JPEGs, or "
                                    f"{self.root / 'celeba' / 'img_align_celeba'} as torchvision's downloader "
                                    f"leaves it; {_HINT})")

        # Keep the split's images; every one must exist.
        path = self.root / "list_eval_partition.txt"
        entries = read_partition(path)
        code = SPLITS[split]
        chosen = [(name, number) for name, s, number in entries if code is None or s == code]
        if not chosen:
            raise InputError(f"{path}: no images in split '{split}' (code {code})")
        present = set(os.listdir(images))
        missing = [(name, number) for name, number in chosen if name not in present]
        if missing:
            name, number = missing[0]
            raise MissingFileError(
                f"{path}, line {number}: names {name}, which is not in {images} "
                f"({len(missing)} of the {len(chosen)} '{split}' images are missing; "
                f"expected every listed image; {_HINT})")
        self.names = [name for name, _ in chosen]
        self.files = [images / name for name in self.names]
        self._attributes, self._attr_names, self._identities = None, None, None

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        if self.crop == 0:
            return 0, 0, width, height
        left = (width - self.crop) // 2 if self.crop_left == -1 else self.crop_left
        top = (height - self.crop) // 2 if self.crop_top == -1 else self.crop_top
        if self.crop < 0 or left < 0 or top < 0 or left + self.crop > width or top + self.crop > height:
            raise InputError(
                f"CelebA crop {self.crop} at (top {self.crop_top}, left {self.crop_left}) does not fit "
                f"a {width}x{height} image (expected crop in 1..{min(width, height)} or 0 for none, "
                f"crop_top/crop_left >= 0 or -1 for centred)")
        return left, top, left + self.crop, top + self.crop

    def _load_attributes(self) -> None:
        path = self.root / "list_attr_celeba.txt"
        if not path.is_file():
            self._attr_names = []
            return
        names, rows = read_attributes(path)
        table = np.zeros((len(self.names), len(names)), np.float32)
        for i, name in enumerate(self.names):
            if name in rows:
                table[i] = rows[name]
        self._attr_names, self._attributes = names, torch.from_numpy(table)

    @property
    def attr_names(self) -> list[str]:
        if self._attr_names is None:
            self._load_attributes()
        return self._attr_names

    @property
    def attributes(self) -> torch.Tensor | None:
        """float32 (N, 40): +1 / -1, or 0 where the image has no attribute row."""
        if self._attr_names is None:
            self._load_attributes()
        return self._attributes

    def attribute(self, name: str) -> torch.Tensor:
        """float32 (N,): one attribute, +1 / -1, 0 where unknown."""
        if name not in self.attr_names:
            raise KeyError(f"CelebA has no attribute {name!r}; valid: {self.attr_names} "
                           f"(from {self.root / 'list_attr_celeba.txt'})")
        return self.attributes[:, self.attr_names.index(name)]

    @property
    def identities(self) -> torch.Tensor | None:
        """int64 (N,): identity of each image, -1 where unknown; None without identity_CelebA.txt."""
        if self._identities is None:
            path = self.root / "identity_CelebA.txt"
            if not path.is_file():
                return None
            ids = read_identities(path)
            self._identities = torch.tensor([ids.get(n, -1) for n in self.names], dtype=torch.int64)
        return self._identities

    def source(self) -> dict:
        """What identifies these images, for cache headers."""
        return {"dataset": "celeba", "root": str(self.root), "split": self.split,
                "resolution": self.resolution, "num_images": len(self.files), "crop": self.crop,
                "crop_top": self.crop_top, "crop_left": self.crop_left}

    def describe(self) -> str:
        crop = "whole image" if self.crop == 0 else (
            f"crop {self.crop} at top {'centre' if self.crop_top == -1 else self.crop_top}, "
            f"left {'centre' if self.crop_left == -1 else self.crop_left}")
        return (f"celeba {self.split} ({self.root}): {len(self.files)} images, {crop}, "
                f"{self.resolution}x{self.resolution}, hflip={self.hflip}")
