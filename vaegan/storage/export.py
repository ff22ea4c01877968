"""Export a trained model as ``model.safetensors`` + ``config.json``, loadable without training code."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from vaegan.files import write_text_atomic
from vaegan.storage.pretrained import CONFIG_FILE, EXPORT_FORMAT, WEIGHTS_FILE, load_pretrained, strip_wrappers
from vaegan.storage.prior import PRIOR_FILE, prior_path
from vaegan.files import read_safetensors, write_safetensors


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
    discriminator only with ``with_discriminator`` (ValueError if the run has none). Each file is
    written atomically. Returns ``out``.
    """
    vae, cfg, dis, info = load_pretrained(checkpoint, with_discriminator=with_discriminator, use_ema=use_ema)
    out = Path(out)
    metadata = {"format": EXPORT_FORMAT, "weights": info["weights"], "step": str(info["step"] or ""),
                "source": info["source"], "model_kind": cfg.model.kind,
                "resolution": str(cfg.data.resolution), "latent_dim": str(cfg.model.latent_dim)}
    write_safetensors(out / WEIGHTS_FILE, export_state(vae, dis), metadata)
    write_text_atomic(out / CONFIG_FILE, cfg.to_json() + "\n")
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
