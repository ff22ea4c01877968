"""The edges of the toolkit: pixel conventions, image files and atomic writes.

Inside the toolkit images are float tensors in [-1, 1]; at the edges (files, datasets,
torch-fidelity) they are uint8 in [0, 255]. The two conversions below are the only place
where one becomes the other.

Image files are read by ``load_image`` (any PIL mode to 8-bit RGB, or InputError naming the
file). Where the tools write is checked here before any work (``check_output_file``,
``check_output_folder``), and names taken from inputs become paths that stay inside the output
folder, one file each (``output_paths``, ``save_images``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple

import numpy as np
import torch
from PIL import Image

from vaegan.errors import InputError, MissingFileError
from vaegan.files import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# The one resampling filter for image files and uint8 images that are not R x R: training
# datasets, tool inputs and evaluation references all go through ``crop_resize``. PIL's bicubic
# is antialiased (its support widens when shrinking). Changing it changes every prepared cache and
# what trained models saw.
RESAMPLE = Image.Resampling.BICUBIC

Box = Callable[[int, int], tuple[int, int, int, int]]  # (width, height) -> (left, top, right, bottom)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) in [0, 255] -> float32 in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


# The image reader's version, kept in prepared caches' headers: bump it whenever load_image or
# crop_resize turns some file into different pixels, so that caches made by the old reader are
# refused rather than silently used. 2: 16-bit grayscale and transparent images read right.
READER_VERSION = 2
READER_CHANGES = {2: "16-bit grayscale PNGs came out clipped (mostly white) and transparent parts kept the colour stored under them"}


# Modes holding more than 8 bits per sample: PNG's 16-bit grayscale opens as I;16 (or I;16B, or
# 32-bit I from older decoders). Their values run over 0..65535 and are scaled to 0..255.
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _wide_to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer) grayscale image as 8-bit L, or LA where it has a transparent value."""
    values = np.asarray(im).astype(np.int64)
    gray = Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8))
    transparent = im.info.get("transparency")
    if isinstance(transparent, int):
        alpha = Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8))
        return Image.merge("LA", (gray, alpha))
    return gray


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any decoded image as 8-bit RGB: 16-bit samples scaled, transparent parts on white; refuses
    modes without a defined 0..255 mapping (32-bit float)."""
    if im.mode in _WIDE_MODES:
        im = _wide_to_8bit(im)
    elif im.mode == "F":
        raise ValueError("32-bit floating-point pixels (PIL mode F) have no defined range; "
                         "save it with 8 or 16 bits per channel")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        background = Image.new("RGB", im.size, (255, 255, 255))
        rgba = im.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")  # 1-bit, L, P, CMYK, YCbCr, RGB (PIL reads 16-bit RGB PNGs as 8-bit RGB)


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as 8-bit RGB.

    Grayscale (1, 8 or 16 bits), palette, CMYK and RGB(A) images are converted: 16-bit samples
    are scaled to 8 bits (v / 257, rounded), transparent parts (alpha channel, palette or colour
    key transparency) are put on white. An image PIL cannot decode, or one with float pixels,
    raises InputError naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb(im)
    except FileNotFoundError:
        raise MissingFileError(f"image not found: {path}") from None
    except Exception as e:  # PIL raises several types for corrupt files
        raise InputError(f"cannot read image {path}: {e} (expected a readable jpg/png/webp/bmp file)") from None


def pil_to_uint8(im: Image.Image) -> torch.Tensor:
    """PIL RGB image -> uint8 tensor (3, H, W)."""
    data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return data.view(im.size[1], im.size[0], 3).permute(2, 0, 1).contiguous()


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred square in a width x height image."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def crop_resize(im: Image.Image, resolution: int | None, box: Box | None = None) -> Image.Image:
    """Crop ``im`` to ``box(width, height)`` (default: the centred square), then resize to R x R
    with ``RESAMPLE``. ``resolution=None`` skips the resize; ``box=None`` and ``resolution=None``
    returns ``im`` itself. ``box`` may raise ValueError for an image it cannot crop."""
    if resolution is None and box is None:
        return im
    im = im.crop((box or centre_square)(*im.size))
    if resolution is not None and im.size != (resolution, resolution):
        im = im.resize((resolution, resolution), RESAMPLE)
    return im


def read_image(path: str | Path, resolution: int | None = None, box: Box | None = None) -> torch.Tensor:
    """An image file as uint8 (3, R, R): decoded as RGB (``load_image``), cropped to ``box`` (default:
    the centred square), resized to R x R (``RESAMPLE``). The one reader of image files, for
    training datasets, tool inputs and evaluation references alike.

    ``resolution=None`` keeps the cropped size (without ``box``: the whole decoded image).
    FileNotFoundError or ValueError (naming the file) if it cannot be read or cropped.
    """
    im = load_image(path)
    try:
        im = crop_resize(im, resolution, box)
    except ValueError as e:
        raise InputError(f"cannot crop image {path}: {e}") from None
    return pil_to_uint8(im)


def resize_uint8(image: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, R, R): centre-cropped to a square and resized like ``read_image``
    (the same PIL filter, so a decoded file gives the same pixels either way). R x R is returned as is."""
    if image.shape[-2:] == (resolution, resolution):
        return image
    array = image.permute(1, 2, 0).contiguous().cpu().numpy()
    return pil_to_uint8(crop_resize(Image.fromarray(array), resolution))


def save_image(images: torch.Tensor, path: str | Path) -> None:
    """Save one image, uint8 (3, H, W) or float in [-1, 1], in the format its extension names
    (one of ``IMAGE_EXTENSIONS``; InputError otherwise)."""
    check_image_extension(path)
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    array = images.permute(1, 2, 0).cpu().numpy()
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        Image.fromarray(array).save(tmp)


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """(N, 3, H, W) uint8 or float in [-1, 1] -> one uint8 (3, H', W') grid image."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    images = images.cpu()
    n, c, h, w = images.shape
    nrow = max(1, min(nrow, n))
    ncol = (n + nrow - 1) // nrow
    grid = torch.full((c, ncol * (h + padding) + padding, nrow * (w + padding) + padding), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    save_image(make_grid(images, nrow=nrow), path)


def list_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursive), sorted; error if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"image folder not found: {root} (expected a folder of jpg/png/webp/bmp files)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise MissingFileError(f"no images in {root} (looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
    return files


# ----------------------------------------------------------------------------------------------
# Where the tools write: checked before any work; names from inputs kept inside the output folder.


def check_image_extension(path: str | Path, what: str = "--out") -> Path:
    """``path`` if its extension names an image format the toolkit writes, else InputError."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InputError(f"{what} {path}: cannot tell the image format from the extension "
                         f"{path.suffix or '(none)'!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    return path


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` if it is not a folder (so nothing can be made under it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_file(path: str | Path, what: str = "--out", image: bool = False) -> Path:
    """``path`` if a file can be written there: not a folder, nothing above it a file, and with
    ``image`` an image extension (``check_image_extension``). InputError naming it otherwise."""
    path = Path(path)
    if image:
        check_image_extension(path, what)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file path")
    blocker = _file_above(path)
    if blocker is not None:
        raise InputError(f"{what} {path}: {blocker} is a file, not a folder")
    return path


def check_output_folder(path: str | Path, what: str = "--out") -> Path:
    """``path`` if it is a folder or can become one (it is not a file, nothing above it is a file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is an existing file; give a folder (it is created if missing)")
    blocker = _file_above(path)
    if blocker is not None:
        raise InputError(f"{what} {path}: {blocker} is a file, not a folder")
    return path


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shorten(part: str, limit: int = 200) -> str:
    """``part`` cut to at most ``limit`` UTF-8 bytes (file systems refuse names over 255), its extension kept."""
    if len(part.encode()) <= limit:
        return part
    suffix = PurePosixPath(part).suffix[:16]
    stem = part[: len(part) - len(PurePosixPath(part).suffix)]
    while len((stem + suffix).encode()) > limit:
        stem = stem[:-1]
    return stem + suffix


def _relative_parts(name: str, root: Path) -> list[str]:
    """A name from an input (a file name, a latents file's metadata) as path parts under ``root``.

    Sub-folders are kept only when they stay inside ``root`` once resolved (symlinks included);
    an absolute name, a '..' part or a drive letter leaves the base name only.
    """
    name = _CONTROL.sub("_", name)
    parts = [part for part in re.split(r"[\\/]+", name) if part not in ("", ".")]
    escapes = name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts
    if escapes:
        parts = [parts[-1]] if parts and parts[-1] != ".." else []
    parts = [_shorten(part) for part in parts]
    if len(parts) > 1:
        base = root.resolve()
        if not (root.joinpath(*parts[:-1]).resolve()).is_relative_to(base):
            parts = parts[-1:]
    return parts


def output_paths(names: list[str], root: str | Path, suffix: str = ".png") -> list[Path]:
    """One path under ``root`` per name, with ``suffix`` for extension, no two alike.

    Names are made safe by ``_relative_parts``: nothing lands outside ``root``. ``a.png`` becomes
    ``root/a.png``; when several names would share a file (``a.jpg`` and ``a.png``, or a repeated
    name; compared case-insensitively) those with another extension keep it in the stem
    (``a.jpg.png``), and any still alike get ``-1``, ``-2``, ... An empty name becomes
    ``image-<index>``.
    """
    root = Path(root)
    rels = []
    for i, name in enumerate(names):
        parts = _relative_parts(str(name), root) or [f"image-{i:05d}"]
        rels.append(PurePosixPath(*parts))
    plain = [rel.with_name(rel.stem + suffix) for rel in rels]
    counts: dict[str, int] = {}
    for path in plain:
        counts[path.as_posix().lower()] = counts.get(path.as_posix().lower(), 0) + 1
    taken: set[str] = set()
    out = []
    for rel, path in zip(rels, plain):
        if counts[path.as_posix().lower()] > 1 and rel.suffix.lower() != suffix:
            path = rel.with_name(rel.name + suffix)
        final, k = path, 1
        while final.as_posix().lower() in taken:
            final, k = path.with_name(f"{path.name[:-len(suffix)]}-{k}{suffix}"), k + 1
        taken.add(final.as_posix().lower())
        out.append(root.joinpath(*final.parts))
    return out


class Written(NamedTuple):
    """Files a tool wrote (in input order) and those among them that existed before (now replaced)."""

    paths: list[Path]
    replaced: list[Path]


def save_images(images: torch.Tensor, paths: list[Path]) -> Written:
    """Save images[i] to paths[i] (distinct paths, e.g. from ``output_paths``); say which existed."""
    if len(set(paths)) != len(paths):
        raise ValueError("save_images needs distinct paths")
    replaced = [p for p in paths if p.exists() or p.is_symlink()]
    for path in replaced:
        if path.is_dir():
            raise InputError(f"cannot write {path}: a folder of that name exists")
    for image, path in zip(images, paths):
        save_image(image, path)
    return Written(list(paths), replaced)


def describe_replaced(written: Written, folder: str | Path) -> str | None:
    """One line on the files a tool replaced in ``folder`` (None when it replaced none)."""
    if not written.replaced:
        return None
    names = [os.path.relpath(p, folder) for p in written.replaced]
    shown = ", ".join(names[:5]) + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")
    return f"replaced {len(names)} existing file(s) in {folder}: {shown}"
