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
    "load_pretrained": "storage.pretrained", "Pretrained": "storage.pretrained", "export_model": "storage.export",
    "push_export": "storage.hub",
    # Generation and morphing.
    "sample": "models.inference", "reconstruct": "models.inference",
    "interpolate": "tools.generate", "variations": "tools.generate", "slerp": "tools.generate", "lerp": "tools.generate",
    # Compression.
    "encode_images": "models.inference", "decode_latents": "models.inference",
    "save_latents": "tools.latents", "load_latents": "tools.latents",
    # Anomaly detection.
    "anomaly_scores": "tools.anomaly", "auroc": "tools.anomaly", "calibrate_threshold": "tools.anomaly",
    # Latent attribute vectors.
    "attribute_vector": "tools.attributes", "edit_attribute": "tools.attributes", "labelled_images": "tools.attributes",
    "save_vector": "tools.attributes", "load_vector": "tools.attributes",
    # Ex-post latent prior.
    "fit_prior": "tools.prior", "load_prior": "storage.prior",
    # Reading images at the model's resolution.
    "read_images": "data.inputs",
    # Errors a user can act on (all subclass VaeganError).
    "VaeganError": "errors",
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
