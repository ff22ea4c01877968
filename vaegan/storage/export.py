"""Export a trained model as ``model.safetensors`` + ``config.json``, loadable without training code.

``config.json`` (format ``vaegan-export-v2``, see :mod:`vaegan.storage.configs`) holds what rebuilds
the networks and reads images for them: the resolution and the run's ``model`` and ``data``
sections, no training settings. The training provenance is in ``model.safetensors``' metadata.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import json

import torch
from vaegan.files import read_safetensors, write_safetensors, write_text_atomic
from vaegan.storage.configs import EXPORT_FORMAT, export_config
from vaegan.storage.pretrained import CONFIG_FILE, WEIGHTS_FILE, load_pretrained, strip_wrappers
from vaegan.storage.prior import PRIOR_FILE, prior_path


def export_state(vae, discriminator=None) -> dict[str, torch.Tensor]:
    """Flat ``{"encoder.*", "decoder.*"[, "discriminator.*"]: tensor}`` of unwrapped modules, on the CPU."""
    state = {f"encoder.{k}": v for k, v in vae.encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in vae.decoder.state_dict().items()})
    if discriminator is not None:
        state.update({f"discriminator.{k}": v for k, v in discriminator.state_dict().items()})
    return {k: v.detach().cpu().contiguous() for k, v in strip_wrappers(state).items()}


def export_model(checkpoint: str | Path, out: str | Path, with_discriminator: bool = False,
                 use_ema: bool = True) -> Path:
    """Write ``out/model.safetensors`` and ``out/config.json`` from a run, checkpoint or export folder.

    The EMA encoder/decoder are exported when the run kept an EMA (and ``use_ema``); the
    discriminator only with ``with_discriminator`` (InputError if the run has none). Each file is
    written atomically. Returns ``out``.

    The weights file's metadata records the provenance: ``format``, ``source``, ``step``,
    ``weights`` (ema | raw), ``model_kind``, ``resolution``, ``latent_dim``, ``precision``,
    ``batch_size`` and ``images_seen`` (step x batch size); all strings, "" where the source does
    not record it (an export of an export keeps its source's record).
    """
    vae, cfg, dis, info = load_pretrained(checkpoint, with_discriminator=with_discriminator, use_ema=use_ema)
    out = Path(out)
    record = {k: info[k] for k in ("step", "weights", "precision", "batch_size", "images_seen")}
    metadata = {"format": EXPORT_FORMAT, "source": info["source"], "model_kind": cfg.model.kind,
                "resolution": str(cfg.data.resolution), "latent_dim": str(cfg.model.latent_dim),
                **{k: "" if v is None else str(v) for k, v in record.items()}}
    write_safetensors(out / WEIGHTS_FILE, export_state(vae, dis), metadata)
    write_text_atomic(out / CONFIG_FILE, json.dumps(export_config(cfg), indent=2) + "\n")
    prior = prior_path(checkpoint)
    if prior.is_file() and prior != out / PRIOR_FILE:  # the fitted latent prior travels with its weights
        tensors, meta = read_safetensors(prior)
        if (meta.get("step"), meta.get("weights")) == (str(info["step"] or ""), info["weights"]):
            write_safetensors(out / PRIOR_FILE, tensors, meta)
        else:
            warnings.warn(f"{prior} was fitted for step {meta.get('step')} ({meta.get('weights')} weights), not the "
                          f"exported step {info['step']} ({info['weights']}); not exported. Fit it again: "
                          f"vaegan fit-prior --checkpoint {out}", stacklevel=2)
    return out
