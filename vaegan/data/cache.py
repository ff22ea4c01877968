"""Prepared caches: a dataset decoded, cropped and resized once, read back memory-mapped.

A cache at ``PATH`` is three files:

    PATH              raw uint8 pixels, shape (N, 3, R, R), C order, no header
    PATH.json         header: shape, source description and content key, the image reader's version
                      (vaegan.images.READER_VERSION: an older one is refused), attribute names, bad files
    PATH.labels.npz   optional: ``attributes`` float32 (N, A) and/or ``identities`` int64 (N,)

The header is written last and removed first, so a cache is complete exactly when its header
exists (and names the right data size): a prepare killed midway leaves no usable-looking cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vaegan.errors import InputError, MissingFileError
from vaegan.files import atomic_path, write_text_atomic
from vaegan.images import READER_CHANGES, READER_VERSION

FORMAT = "vaegan-uint8-cache-v1"


def header_path(path: str | Path) -> Path:
    return Path(f"{path}.json")


def labels_path(path: str | Path) -> Path:
    return Path(f"{path}.labels.npz")


class _Reader(Dataset):
    """Wraps a dataset for prepare: ``(index, image, error)`` with a zero image if unreadable."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return index, self.dataset.read(index), ""
        except (OSError, ValueError) as e:
            r = self.dataset.resolution
            return index, torch.zeros(3, r, r, dtype=torch.uint8), str(e)


def _content_key(dataset) -> str:
    """sha256 over the source description and, for file datasets, every file name and size."""
    h = hashlib.sha256(json.dumps(dataset.source(), sort_keys=True).encode())
    if hasattr(dataset, "content_key"):
        h.update(dataset.content_key().encode())
    return h.hexdigest()


def prepare(dataset, path: str | Path, num_workers: int | None = None, batch_size: int = 64,
            progress: bool = True) -> dict:
    """Decode every image of ``dataset`` (no flips) into a cache at ``path``; returns the header.

    ``dataset`` needs ``read(i) -> uint8 (3, R, R)``, ``resolution``, ``source()`` and
    ``describe()`` (all datasets of ``vaegan.data`` have them). Unreadable images raise a
    ValueError naming the file, unless ``dataset.skip_bad_images`` is set: then they are left
    out and listed in the header's ``bad_files``. ``num_workers`` decoding processes (default:
    up to 8, none for small datasets). Any previous cache at ``path`` stays usable until the new
    one is complete.
    """
    path = Path(path)
    n, r = len(dataset), dataset.resolution
    if num_workers is None:
        num_workers = 0 if n < 2000 else min(8, os.cpu_count() or 1)
    loader = DataLoader(_Reader(dataset), batch_size=batch_size, num_workers=num_workers)
    with atomic_path(path, suffix=".part") as tmp:
        kept, bad = _write_pixels(dataset, loader, tmp, f"prepare {path.name}", progress)
        if not kept:
            raise InputError(f"prepare {path}: no readable images in {dataset.describe()}")
        # From here on the old cache is invalid: remove its header before replacing its pixels.
        header_path(path).unlink(missing_ok=True)
        labels_path(path).unlink(missing_ok=True)
    # Labels, then the header that marks the cache complete.
    labels = _write_labels(dataset, kept, labels_path(path))
    header = {
        "format": FORMAT,
        "shape": [len(kept), 3, r, r],
        "dtype": "uint8",
        "resolution": r,
        "source": dataset.source(),
        "reader": READER_VERSION,
        "description": dataset.describe(),
        "content_key": _content_key(dataset),
        "attr_names": list(getattr(dataset, "attr_names", None) or []) if "attributes" in labels else [],
        "labels": sorted(labels),
        "bad_files": bad,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text_atomic(header_path(path), json.dumps(header, indent=1))
    if bad:
        print(f"prepare {path}: left out {len(bad)} unreadable images: {bad[:5]}{' ...' if len(bad) > 5 else ''}")
    return header


def _write_pixels(dataset, loader: DataLoader, out: Path, desc: str, progress: bool) -> tuple[list[int], list[str]]:
    """Write the readable images' pixels in order to ``out``: (kept indices, unreadable files)."""
    files, skip = getattr(dataset, "files", None), getattr(dataset, "skip_bad_images", False)
    kept, bad = [], []
    with open(out, "wb") as f, tqdm(total=len(dataset), unit="img", desc=desc, disable=not progress) as bar:
        for indices, images, errors in loader:
            ok = torch.tensor([not e for e in errors], dtype=torch.bool)
            for i, e in zip(indices.tolist(), errors):
                if e and not skip:
                    raise InputError(f"{e}; set data.skip_bad_images=true to leave unreadable images out")
                if e:
                    bad.append(str(files[i]) if files is not None else f"index {i}")
            f.write(images[ok].numpy().tobytes())
            kept.extend(indices[ok].tolist())
            bar.update(len(indices))
    return kept, bad


def _write_labels(dataset, kept: list[int], out: Path) -> dict:
    """The kept images' attributes and identities (those the dataset has), saved to ``out``."""
    labels = {}
    if getattr(dataset, "attributes", None) is not None:
        labels["attributes"] = dataset.attributes[kept].numpy()
    if getattr(dataset, "identities", None) is not None:
        labels["identities"] = dataset.identities[kept].numpy()
    if labels:
        with atomic_path(out, suffix=".npz") as tmp:
            np.savez(tmp, **labels)
    return labels


def read_header(path: str | Path) -> dict:
    """The header of a complete cache at ``path``; a clear error if it is missing or incomplete."""
    path, hpath = Path(path), header_path(path)
    if not hpath.is_file():
        if path.exists():
            raise InputError(f"cache {path} is incomplete: its header {hpath} is missing (a prepare run "
                             f"was interrupted or is still running); run prepare again")
        raise MissingFileError(f"cache not found: {path} (expected {path} and {hpath}; create them "
                                f"with vaegan prepare)")
    try:
        header = json.loads(hpath.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"cache header {hpath} is not valid JSON: {e}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else f"a JSON {type(header).__name__}"
        raise InputError(f"cache header {hpath}: expected format {FORMAT!r}, got {got!r}")
    reader = header.get("reader", 1)  # caches from before the version was recorded: the first reader
    if not isinstance(reader, int) or isinstance(reader, bool) or reader < 1:
        raise InputError(f"cache header {hpath}: 'reader' must be a version number >= 1, got {reader!r}; "
                         f"run prepare again")
    source = header.get("source") if isinstance(header.get("source"), dict) else {}
    if source.get("dataset") != "faces" and reader < READER_VERSION:  # (faces are drawn, not read)
        changes = "; ".join(READER_CHANGES.get(v, f"version {v}") for v in range(reader + 1, READER_VERSION + 1))
        raise InputError(f"cache {path} was prepared by image reader version {reader}, and this vaegan reads "
                         f"image files with version {READER_VERSION} (since then: {changes}); run prepare "
                         f"again to rebuild it from the source images")
    size = int(np.prod(header["shape"]))
    actual = path.stat().st_size if path.is_file() else None
    if actual != size:
        raise InputError(f"cache {path}: header says {header['shape']} ({size} bytes) but the data file "
                         f"has {actual} bytes; run prepare again")
    return header


class CachedImages(Dataset):
    """A prepared cache, memory-mapped: item ``i`` is uint8 (3, R, R) in [0, 255].

    ``attributes`` (float32 (N, A)), ``attr_names`` and ``identities`` (int64 (N,)) are those of
    the source dataset, or None / [] if it had none. With ``hflip`` items are flipped at random.
    The map is opened lazily in each process, so DataLoader workers share the page cache and
    pickling the dataset does not copy the pixels.
    """

    def __init__(self, path: str | Path, hflip: bool = False):
        self.path, self.hflip = Path(path), hflip
        self.header = read_header(self.path)
        self.shape = tuple(self.header["shape"])
        self.resolution = self.header["resolution"]
        self.attr_names = list(self.header["attr_names"])
        self.attributes = self.identities = None
        if self.header["labels"]:
            with np.load(labels_path(self.path)) as labels:
                if "attributes" in labels:
                    self.attributes = torch.from_numpy(labels["attributes"])
                if "identities" in labels:
                    self.identities = torch.from_numpy(labels["identities"])
        self._pixels = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}

    def __len__(self) -> int:
        return self.shape[0]

    def _map(self) -> np.memmap:
        if self._pixels is None:
            self._pixels = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)
        return self._pixels

    def read(self, index: int) -> torch.Tensor:
        """Image ``index`` without augmentation: uint8 (3, R, R)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"cache index {index} out of range for {len(self)} images")
        return torch.from_numpy(np.array(self._map()[index]))

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.read(index)
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image

    def get_batch(self, indices) -> torch.Tensor:
        """Images ``indices`` in one read: uint8 (B, 3, R, R), flipped at random with ``hflip``."""
        batch = torch.from_numpy(self._map()[np.asarray(indices, dtype=np.int64)])
        if self.hflip:
            flip = torch.rand(len(batch)) < 0.5
            batch[flip] = batch[flip].flip(-1)
        return batch

    def attribute(self, name: str) -> torch.Tensor:
        """(N,): one attribute column of the source dataset."""
        if name not in self.attr_names:
            raise KeyError(f"cache {self.path} has no attribute {name!r}; valid: {self.attr_names}")
        return self.attributes[:, self.attr_names.index(name)]

    def source(self) -> dict:
        return self.header["source"]

    def describe(self) -> str:
        return (f"cache {self.path} ({len(self)} images, {self.resolution}x{self.resolution}, "
                f"hflip={self.hflip}) of {self.header['description']}")
