"""Rebuild trained models from a run folder, a checkpoint folder or an export folder.

Loading reads safetensors and JSON only (no pickle) and needs no training code. Every tensor is
checked against the model that the saved config builds, so a file that does not belong to its
config fails with the file, the tensor and what was expected named.

An export folder (written by :func:`vaegan.storage.export.export_model`) holds::

    model.safetensors   encoder.* and decoder.* (EMA weights when the run kept an EMA),
                        discriminator.* when exported with the discriminator
    config.json         the resolved config of the run
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from vaegan.config import Config, ConfigError, from_dict
from vaegan.models import VAE, Discriminator, build_discriminator, build_vae
from vaegan.files import read_safetensors

WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
EXPORT_FORMAT = "vaegan-export-v1"
_WRAPPER_PARTS = ("module", "_orig_mod")  # added by DDP and torch.compile


class Pretrained(NamedTuple):
    """What a loader returns; unpacks as ``vae, config, discriminator, info = load_pretrained(...)``."""

    vae: VAE  # eval mode
    config: Config
    discriminator: Discriminator | None  # eval mode; None unless asked for and available
    info: dict  # {"source": folder, "format": "export" | "checkpoint", "step": int | None, "weights": "ema" | "raw"}


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return (path.is_file() and path.suffix == ".safetensors") or (path / WEIGHTS_FILE).is_file()


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) parts of every key."""
    return {".".join(p for p in k.split(".") if p not in _WRAPPER_PARTS): v for k, v in state.items()}


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], file: str, prefix: str,
                      expected_from: str) -> None:
    """Copy ``state`` into ``module`` after checking every key and shape; ValueError naming the first misfit.

    Messages name ``file`` and the tensor's key there (``prefix`` + key); ``expected_from`` says
    what decided the expected layout (e.g. the config file).
    """
    state = strip_wrappers(state)
    wanted = module.state_dict()
    missing = [prefix + k for k in wanted if k not in state]
    unexpected = [prefix + k for k in state if k not in wanted]
    if missing:
        shape = tuple(wanted[missing[0][len(prefix):]].shape)
        raise ValueError(f"{file}: tensor '{missing[0]}' is missing (expected shape {shape} from {expected_from}; "
                         f"{len(missing)} missing in all: {_preview(missing)})")
    if unexpected:
        raise ValueError(f"{file}: unexpected tensor '{unexpected[0]}' (not in the model that {expected_from} "
                         f"describes; {len(unexpected)} unexpected in all: {_preview(unexpected)})")
    for k, v in wanted.items():
        if state[k].shape != v.shape:
            raise ValueError(f"{file}: tensor '{prefix}{k}' has shape {tuple(state[k].shape)} but {expected_from} "
                             f"needs {tuple(v.shape)}; the weights and the config do not belong together")
    module.load_state_dict(state)


def _preview(keys: list[str], n: int = 3) -> str:
    return ", ".join(f"'{k}'" for k in keys[:n]) + (", ..." if len(keys) > n else "")


def _split(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"encoder.fc.weight": t}`` -> ``{"encoder": {"fc.weight": t}}`` (wrapper parts dropped)."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in strip_wrappers(tensors).items():
        net, _, rest = key.partition(".")
        groups.setdefault(net, {})[rest] = value
    return groups


def saved_config(values: dict, where: str) -> Config:
    """A saved config, for inference: strict in ``model`` and ``data`` (they decide the weights' layout
    and the images), while keys of the training-only sections that this version no longer has are
    dropped with a warning, so that older runs and exports stay loadable."""
    known = Config().to_dict()
    cleaned, dropped = {}, []
    for section, body in values.items():
        if section in ("loss", "optim", "train") and isinstance(body, dict):
            dropped += [f"{section}.{k}" for k in body if k not in known[section]]
            body = {k: v for k, v in body.items() if k in known[section]}
        cleaned[section] = body
    if dropped:
        warnings.warn(f"{where}: ignoring saved training settings this version does not know: {dropped}", stacklevel=3)
    try:
        return from_dict(cleaned)
    except ConfigError as e:
        raise ValueError(f"{where}: {e}") from None


def _read_config(path: Path) -> Config:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} "
                                f"(an export folder holds {WEIGHTS_FILE} and {CONFIG_FILE})")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    return saved_config(values, str(path))


# Each loader returns ({net: (state dict, its keys' prefix in the file)}, config, info).

def _load_export(path: Path) -> tuple[dict, Config, dict]:
    weights = path if path.is_file() else path / WEIGHTS_FILE
    config_file = weights.parent / CONFIG_FILE
    cfg = _read_config(config_file)
    tensors, metadata = read_safetensors(weights, f"the {WEIGHTS_FILE} that 'vaegan export' writes")
    groups = _split(tensors)
    unknown = sorted(set(groups) - {"encoder", "decoder", "discriminator"})
    if unknown:
        key = next(k for k in strip_wrappers(tensors) if k.startswith(unknown[0] + "."))
        raise ValueError(f"{weights}: unexpected tensor '{key}' (expected keys starting with encoder., decoder. "
                         f"or discriminator.)")
    step = metadata.get("step")
    info = {"source": str(weights.parent), "format": "export", "step": int(step) if step else None,
            "weights": metadata.get("weights", "unknown"), "expected_from": str(config_file), "file": str(weights)}
    return {net: (state, f"{net}.") for net, state in groups.items()}, cfg, info


def _load_checkpoint(path: Path, use_ema: bool) -> tuple[dict, Config, dict]:
    from vaegan.storage.checkpoint import load_checkpoint

    folder, state = load_checkpoint(path)
    cfg = saved_config(state["config"], str(folder / "state.json"))
    nets = {net: (weights, f"models.{net}.") for net, weights in state["models"].items()}
    weights = "raw"
    if use_ema and "ema" in state:
        nets.update({net: (weights, f"ema.{net}.") for net, weights in state["ema"].items()})
        weights = "ema"
    file = folder / "state.safetensors"
    info = {"source": str(folder), "format": "checkpoint", "step": int(state.get("step", 0)), "weights": weights,
            "expected_from": f"the config saved in {folder / 'state.json'}", "file": str(file)}
    return nets, cfg, info


def load_pretrained(path: str | Path, device: str | torch.device = "cpu", with_discriminator: bool | None = False,
                    use_ema: bool = True) -> Pretrained:
    """Rebuild a trained model from a run folder, checkpoint folder or export folder (or its model.safetensors).

    Returns :class:`Pretrained` ``(vae, config, discriminator, info)``, modules in eval mode on
    ``device``. The EMA weights are used when the run kept an EMA and ``use_ema`` is set (an export
    already holds the weights chosen at export time). ``with_discriminator``: False skips it,
    True requires it (ValueError if the source has none), None loads it when available.
    """
    path = Path(path)
    nets, cfg, info = _load_export(path) if is_export(path) else _load_checkpoint(path, use_ema)
    res = cfg.data.resolution
    vae = build_vae(cfg.model, res)
    for name in ("encoder", "decoder"):
        if name not in nets:
            raise ValueError(f"{info['file']}: has no '{name}.*' tensors (expected the encoder and decoder "
                             f"that {info['expected_from']} describes)")
        state, prefix = nets[name]
        load_module_state(getattr(vae, name), state, info["file"], prefix, info["expected_from"])
    dis = None
    if with_discriminator is True and "discriminator" not in nets:
        hint = "export it with --with-discriminator" if info["format"] == "export" else \
            f"model.kind is {cfg.model.kind!r}"
        raise ValueError(f"{info['source']} holds no discriminator ({hint})")
    if with_discriminator is not False and "discriminator" in nets:
        dis = build_discriminator(cfg.model, res)
        load_module_state(dis, nets["discriminator"][0], info["file"], nets["discriminator"][1], info["expected_from"])
        dis = dis.to(device).eval()
    info = {k: v for k, v in info.items() if k != "expected_from"}
    return Pretrained(vae.to(device).eval(), cfg, dis, info)


def load_from_checkpoint(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True,
                         with_discriminator: bool = False) -> tuple[VAE, Config, Discriminator | None]:
    """``(vae, config, discriminator)`` from a run, checkpoint or export folder (see :func:`load_pretrained`).

    Kept for existing callers; the discriminator is loaded when asked for and available.
    """
    vae, cfg, dis, _ = load_pretrained(path, device, with_discriminator=None if with_discriminator else False,
                                       use_ema=use_ema)
    return vae, cfg, dis
