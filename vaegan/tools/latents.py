"""Images to latents and back: batched encode/decode, and latent files for compression.

A latents file is safetensors holding ``latents`` (N, latent_dim) posterior means in float32 or
float16, with the image names, resolution and latent size in its metadata.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from vaegan.errors import InputError, MissingFileError
from vaegan.images import check_output_file, check_output_folder, output_paths, save_images
from vaegan.models.inference import decode_latents, encode_images
from vaegan.storage.pretrained import load_pretrained
from vaegan.files import read_safetensors, write_safetensors

LATENTS_FORMAT = "vaegan-latents-v1"
BATCH_SIZE = 256


def save_latents(path: str | Path, latents: torch.Tensor, names: list[str], resolution: int,
                 fp16: bool = False, extra: dict | None = None) -> Path:
    """Write (N, D) latents and their image names to a safetensors file (atomically)."""
    if len(names) != len(latents):
        raise ValueError(f"{len(names)} names for {len(latents)} latents")
    metadata = {"format": LATENTS_FORMAT, "names": json.dumps(names), "resolution": str(resolution),
                "latent_dim": str(latents.shape[1]), **{k: str(v) for k, v in (extra or {}).items()}}
    stored = latents.detach().cpu().to(torch.float16 if fp16 else torch.float32)
    return write_safetensors(path, {"latents": stored}, metadata)


def load_latents(path: str | Path) -> tuple[torch.Tensor, list[str], dict]:
    """(latents as stored, names, metadata) from a file written by :func:`save_latents`."""
    path = Path(path)
    tensors, metadata = read_safetensors(path, "a latents file written by 'vaegan encode'")
    if metadata.get("format") != LATENTS_FORMAT or "latents" not in tensors:
        raise InputError(f"{path} is not a latents file (expected format {LATENTS_FORMAT!r} with a 'latents' "
                         f"tensor, as 'vaegan encode' writes; found tensors {sorted(tensors)})")
    latents = tensors["latents"]
    try:
        names = json.loads(metadata["names"])
        resolution = int(metadata["resolution"])
    except (KeyError, ValueError) as e:
        raise InputError(f"{path}: unreadable metadata ({type(e).__name__}: {e}); expected 'names' (a JSON list "
                         f"of strings) and 'resolution' (an integer), as 'vaegan encode' writes") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names) or resolution < 1:
        raise InputError(f"{path}: metadata 'names' must be a JSON list of strings and 'resolution' a positive "
                         f"integer, as 'vaegan encode' writes")
    if not latents.is_floating_point():
        raise InputError(f"{path}: 'latents' holds {latents.dtype} values; expected float32 or float16")
    if latents.ndim != 2 or len(names) != len(latents):
        raise InputError(f"{path}: 'latents' has shape {tuple(latents.shape)} for {len(names)} names "
                         f"(expected (N, latent_dim) with one name per row)")
    return latents, names, metadata


def compression_report(latents_file: Path, num_images: int, source_bytes: int | None, resolution: int,
                       reconstructions: torch.Tensor, originals: torch.Tensor) -> dict:
    """Bytes per image (latent file, source files, raw uint8 pixels) and PSNR/SSIM against the originals."""
    from vaegan.metrics.recon import compute_recon_metrics

    raw = 3 * resolution * resolution
    latent = latents_file.stat().st_size / num_images
    report = {"images": num_images, "latent_bytes_per_image": latent, "raw_pixel_bytes_per_image": raw,
              "ratio_vs_raw_pixels": raw / latent}
    if source_bytes is not None:
        report["source_bytes_per_image"] = source_bytes / num_images
        report["ratio_vs_source_files"] = source_bytes / num_images / latent
    report.update(compute_recon_metrics(reconstructions, originals))
    return report


def encode_to_file(checkpoint: str | Path, images: str | Path, out: str | Path, fp16: bool = False,
                   limit: int | None = None, device: str = "cpu") -> dict:
    """Encode images (file, folder or ``split:NAME``) to posterior means in ``out``; returns the report.

    The report compares the stored latents' bytes with the source files and with raw pixels, and
    gives PSNR/SSIM of their decoding against the originals at the model's resolution.
    """
    from vaegan.data.inputs import check_limit, read_images

    check_limit(limit)
    check_output_file(out)
    vae, cfg, _, info = load_pretrained(checkpoint, device)
    data = read_images(images, cfg, limit)
    means = encode_images(vae, data.images).mean
    out = save_latents(out, means, data.names, cfg.data.resolution, fp16=fp16, extra={"checkpoint": info["source"]})
    stored, _, _ = load_latents(out)
    source_bytes = sum(f.stat().st_size for f in data.files) if data.files is not None else None
    return compression_report(out, len(data.names), source_bytes, cfg.data.resolution,
                              decode_latents(vae, stored), data.images)


def decode_to_files(latents_file: str | Path, checkpoint: str | Path, out: str | Path,
                    originals: str | Path | None = None, device: str = "cpu") -> dict:
    """Decode a latents file to ``out/<name>.png`` (one per image); with ``originals``, also PSNR/SSIM.

    The names come from the file's metadata, so they are made safe (``vaegan.images.output_paths``):
    every file lands inside ``out``, one per latent, none shared. Returns ``{"paths": [...],
    "replaced": [...] (those that existed before), "psnr": ..., "ssim": ...}`` (metrics only with
    ``originals``).
    """
    check_output_folder(out)
    latents, names, metadata = load_latents(latents_file)
    vae, cfg, _, _ = load_pretrained(checkpoint, device)
    if latents.shape[1] != vae.latent_dim or int(metadata["resolution"]) != cfg.data.resolution:
        raise InputError(f"{latents_file} holds {latents.shape[1]}-d latents of {metadata['resolution']} px images, "
                         f"but {checkpoint} is a {vae.latent_dim}-d model at {cfg.data.resolution} px")
    images = decode_latents(vae, latents)
    written = save_images(images, output_paths(names, out))
    result: dict = {"paths": written.paths, "replaced": written.replaced}
    if originals is not None:
        from vaegan.data.inputs import read_images
        from vaegan.metrics.recon import compute_recon_metrics

        data = read_images(originals, cfg)
        index = {name: i for i, name in enumerate(data.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise MissingFileError(f"{originals} has no image {missing[0]!r} named in {latents_file}")
        result.update(compute_recon_metrics(images, data.images[[index[n] for n in names]]))
    return result
