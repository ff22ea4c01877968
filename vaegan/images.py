"""The edges of the toolkit: pixel conventions, image files and atomic writes.

Inside the toolkit images are float tensors in [-1, 1]; at the edges (files, datasets,
torch-fidelity) they are uint8 in [0, 255]. The two conversions below are the only place
where one becomes the other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

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


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB (grayscale, palette and RGBA are converted)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "RGBA" or (im.mode == "P" and "transparency" in im.info):
                background = Image.new("RGB", im.size, (255, 255, 255))
                rgba = im.convert("RGBA")
                background.paste(rgba, mask=rgba.getchannel("A"))
                return background
            return im.convert("RGB")
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
    """Save one image, uint8 (3, H, W) or float in [-1, 1], as PNG/JPEG by extension."""
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
