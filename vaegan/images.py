"""The edges of the toolkit: pixel conventions, image files and atomic writes.

Inside the toolkit images are float tensors in [-1, 1]; at the edges (files, datasets,
torch-fidelity) they are uint8 in [0, 255]. The two conversions below are the only place
where one becomes the other.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from vaegan.files import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


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
        raise FileNotFoundError(f"image not found: {path}") from None
    except Exception as e:  # PIL raises several types for corrupt files
        raise ValueError(f"cannot read image {path}: {e} (expected a readable jpg/png/webp/bmp file)") from None


def pil_to_uint8(im: Image.Image) -> torch.Tensor:
    """PIL RGB image -> uint8 tensor (3, H, W)."""
    data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return data.view(im.size[1], im.size[0], 3).permute(2, 0, 1).contiguous()


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
        raise FileNotFoundError(f"image folder not found: {root} (expected a folder of jpg/png/webp/bmp files)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images in {root} (looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
    return files
