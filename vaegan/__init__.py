"""vaegan: VAE-GAN hybrid image generators after Larsen et al. 2016.

The Python API mirrors the command line; names are imported on first use, so ``import vaegan``
stays cheap and loading a model never imports training code::

    import vaegan
    vae, config, dis, info = vaegan.load_pretrained("exports/faces")    # run, checkpoint or export folder
    z = vaegan.encode_images(vae, images).mean                          # uint8 (N, 3, R, R) -> (N, D)
    strip = vaegan.interpolate(vae, images[0], images[1], steps=8, mode="slerp")
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    # Models in and out.
    "load_pretrained": "pretrained", "Pretrained": "pretrained", "export_model": "export",
    # Generation and morphing.
    "sample": "generate", "reconstruct": "generate", "interpolate": "generate", "variations": "generate",
    "slerp": "generate", "lerp": "generate",
    # Compression.
    "encode_images": "latents", "decode_latents": "latents", "save_latents": "latents", "load_latents": "latents",
    # Anomaly detection.
    "anomaly_scores": "anomaly", "auroc": "anomaly", "calibrate_threshold": "anomaly",
    # Latent attribute vectors.
    "attribute_vector": "attributes", "edit_attribute": "attributes", "labelled_images": "attributes",
    "save_vector": "attributes", "load_vector": "attributes",
    # Reading images at the model's resolution.
    "read_images": "inputs",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'vaegan' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
