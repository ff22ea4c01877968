"""Images from a trained model: prior samples, reconstructions, interpolations and variations.

Every function takes and returns uint8 images (N, 3, R, R); the ``*_to_file(s)`` functions load
a model from a run, checkpoint or export folder and write PNGs.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from vaegan.errors import InputError
from vaegan.images import (
    IMAGE_EXTENSIONS,
    Written,
    check_output_file,
    check_output_folder,
    output_paths,
    save_grid,
    save_images,
)
from vaegan.storage.prior import PRIORS, choose_prior
from vaegan.models.inference import reconstruct, sample, decode_latents, encode_images
from vaegan.storage.pretrained import load_pretrained

INTERPOLATIONS = ("linear", "slerp")


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Straight line: a, b (D,), t (T,) in [0, 1] -> (T, D)."""
    t = t[:, None]
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Great-circle path from a to b (White 2016): a, b (D,), t (T,) in [0, 1] -> (T, D).

    The direction turns at a constant rate along the great circle through a and b, and the norm
    goes linearly from |a| to |b|, so with |a| = |b| every point stays on that sphere. Nearly
    parallel directions fall back to a normalised straight line.
    """
    na, nb = a.norm(), b.norm()
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    theta = torch.arccos((ua * ub).sum().clamp(-1.0, 1.0))
    t = t[:, None]
    if torch.sin(theta) < 1e-6:
        direction = lerp(ua, ub, t[:, 0])
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    else:
        direction = (torch.sin((1 - t) * theta) * ua + torch.sin(t * theta) * ub) / torch.sin(theta)
    return ((1 - t) * na + t * nb) * direction


def _check_interpolation(steps: int, mode: str) -> None:
    if steps < 2:
        raise InputError(f"--steps must be at least 2 (the two endpoints), got {steps}")
    if mode not in INTERPOLATIONS:
        raise InputError(f"--mode {mode!r} is not valid; choose one of {list(INTERPOLATIONS)}")


def interpolate(model, image_a: torch.Tensor, image_b: torch.Tensor, steps: int = 8,
                mode: str = "linear") -> torch.Tensor:
    """Decodings along a latent path between two images' posterior means: uint8 (steps, 3, R, R).

    image_a, image_b: uint8 (3, R, R). The first and last images are the reconstructions of a and b.
    """
    _check_interpolation(steps, mode)
    za, zb = encode_images(model, torch.stack([image_a, image_b])).mean
    path = (lerp if mode == "linear" else slerp)(za, zb, torch.linspace(0, 1, steps))
    path[0], path[-1] = za, zb  # exact endpoints whatever the rounding of the path
    return decode_latents(model, path)


def variations(model, image: torch.Tensor, n: int = 8, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Decodings of n posterior samples mean + scale * std * eps around one image: uint8 (n, 3, R, R)."""
    if n <= 0:
        raise InputError(f"--n must be positive, got {n}")
    posterior = encode_images(model, image[None])
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, model.latent_dim, generator=gen)
    return decode_latents(model, posterior.mean + scale * posterior.std * eps)


# Files in, files out.

def sample_to_files(checkpoint: str | Path, n: int, out: str | Path, seed: int = 0, individual: bool = False,
                    use_ema: bool = True, prior: str = "auto") -> tuple[Written, str]:
    """prior: "auto" (the mixture fitted for this model when there is one, else N(0, I)), "normal"
    (N(0, I)) or "gmm" (the fitted mixture, an error without one); see
    :func:`vaegan.storage.prior.choose_prior`.

    ``out``: a grid image file, or with ``individual`` a folder of ``sample-<i>.png``. Returns the
    files written and those of them that existed before, and a line saying which prior was used.
    """
    if n <= 0:
        raise InputError(f"--n must be positive, got {n}")
    if prior not in PRIORS:
        raise InputError(f"--prior must be one of {', '.join(PRIORS)}, got {prior!r}")
    out = check_output_folder(out) if individual else check_output_file(out, image=True)
    model, _, _, info = load_pretrained(checkpoint, use_ema=use_ema)
    mixture, used = choose_prior(checkpoint, model.latent_dim, info, prior)
    images = sample(model, n, seed, prior=mixture)
    if not individual:
        save_grid(images, out, nrow=max(1, int(n ** 0.5)))
        return Written([out], []), used
    return save_images(images, [out / f"sample-{i:05d}.png" for i in range(n)]), used


def reconstruct_to_files(checkpoint: str | Path, images: str | Path, out: str | Path,
                         limit: int | None = None) -> Written:
    """Reconstruct images (file, folder or ``split:NAME``).

    ``out`` with an image extension: one grid of original/reconstruction pairs; else a folder of
    reconstructions named like the inputs (``vaegan.images.output_paths``: as .png, inside
    ``out``, one file per input). Returns the files written and those that existed before.
    """
    from vaegan.data.inputs import check_limit, read_images

    check_limit(limit)
    grid = Path(out).suffix.lower() in IMAGE_EXTENSIONS
    out = check_output_file(out, image=True) if grid else check_output_folder(out)
    vae, cfg, _, _ = load_pretrained(checkpoint)
    data = read_images(images, cfg, limit)
    recs = reconstruct(vae, data.images)
    if grid:
        pairs = torch.stack([data.images, recs], dim=1).flatten(0, 1)
        save_grid(pairs, out, nrow=2 * max(1, min(4, math.isqrt(len(recs)))))
        return Written([out], [])
    return save_images(recs, output_paths(data.names, out))


def interpolate_to_file(checkpoint: str | Path, a: str | Path, b: str | Path, out: str | Path, steps: int = 8,
                        mode: str = "linear", originals: bool = True) -> Path:
    """One strip: [original a,] ``steps`` decodings from a to b[, original b]."""
    from vaegan.data.inputs import read_images

    _check_interpolation(steps, mode)
    check_output_file(out, image=True)
    vae, cfg, _, _ = load_pretrained(checkpoint)
    image_a, image_b = read_images(a, cfg, limit=1).images[0], read_images(b, cfg, limit=1).images[0]
    strip = interpolate(vae, image_a, image_b, steps, mode)
    if originals:
        strip = torch.cat([image_a[None], strip, image_b[None]])
    save_grid(strip, out, nrow=len(strip))
    return Path(out)


def variations_to_file(checkpoint: str | Path, image: str | Path, out: str | Path, n: int = 8,
                       scale: float = 1.0, seed: int = 0) -> Path:
    """A grid: the image, its reconstruction, then n posterior-sample decodings."""
    from vaegan.data.inputs import read_images

    if n <= 0:
        raise InputError(f"--n must be positive, got {n}")
    if not math.isfinite(scale):
        raise InputError(f"--scale must be a finite number, got {scale}")
    check_output_file(out, image=True)
    vae, cfg, _, _ = load_pretrained(checkpoint)
    x = read_images(image, cfg, limit=1).images[0]
    grid = torch.cat([x[None], reconstruct(vae, x[None]), variations(vae, x, n, scale, seed)])
    save_grid(grid, out, nrow=min(len(grid), 10))
    return Path(out)
