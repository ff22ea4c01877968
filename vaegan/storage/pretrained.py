"""Rebuild trained models from a run folder, a checkpoint folder or an export folder.

Loading reads safetensors and JSON only (no pickle) and needs no training code. Every tensor is
checked against the model that the saved config builds, so a file that does not belong to its
config fails with the file, the tensor and what was expected named.

An export folder (written by :func:`vaegan.storage.export.export_model`) holds::

    model.safetensors   encoder.* and decoder.* (EMA weights when the run kept an EMA),
                        discriminator.* when exported with the discriminator; its metadata
                        records the training provenance (step, weights, model kind,
                        precision, batch size, images seen)
    config.json         format, resolution and the run's model and data sections
                        (see :mod:`vaegan.storage.configs`, which reads every saved config)
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from vaegan.config import Config
from vaegan.errors import InputError
from vaegan.files import read_safetensors
from vaegan.models import VAE, Discriminator, build_discriminator, build_vae
from vaegan.models.layers import PRIOR_STATS, fill_prior_statistics
from vaegan.storage.configs import read_json, read_model_config, training_settings
from vaegan.storage.hub import resolve_source

WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
_WRAPPER_PARTS = ("module", "_orig_mod")  # added by DDP and torch.compile


class Pretrained(NamedTuple):
    """What a loader returns; unpacks as ``vae, config, discriminator, info = load_pretrained(...)``."""

    vae: VAE  # eval mode
    config: Config  # model and data as trained; loss, optim and train are the defaults, not the run's
    discriminator: Discriminator | None  # eval mode; None unless asked for and available
    info: dict  # {"source": folder, "format": "export" | "checkpoint", "file": weights file, "step": int | None,
    #              "weights": "ema" | "raw", "precision": str | None, "batch_size": int | None,
    #              "images_seen": int | None}: None where the source does not record it


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return (path.is_file() and path.suffix == ".safetensors") or (path / WEIGHTS_FILE).is_file()


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) parts of every key."""
    return {".".join(p for p in k.split(".") if p not in _WRAPPER_PARTS): v for k, v in state.items()}


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], file: str, prefix: str,
                      expected_from: str) -> None:
    """Copy ``state`` into ``module`` after checking every key and shape; InputError naming the first misfit.

    Messages name ``file`` and the tensor's key there (``prefix`` + key); ``expected_from`` says
    what decided the expected layout (e.g. the config file).
    """
    state = strip_wrappers(state)
    check_fit(_shapes(module.state_dict()), _shapes(state), file, prefix, expected_from)
    module.load_state_dict(fill_prior_statistics(module, state))


def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a state dict, or of a ``{key: shape}`` mapping (as a safetensors header gives)."""
    return {k: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v) if isinstance(v, (list, tuple)) else None
            for k, v in strip_wrappers(state).items()}


def check_fit(wanted: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], file: str, prefix: str,
              expected_from: str) -> None:
    """InputError naming the first tensor of ``found`` (keys and shapes in ``file``, under ``prefix``) that is
    missing, unexpected or of another shape than ``wanted``."""
    missing = [prefix + k for k in wanted if k not in found and not _saved_before_prior_statistics(k, found)]
    unexpected = [prefix + k for k in found if k not in wanted]
    if missing:
        shape = wanted[missing[0][len(prefix):]]
        raise InputError(f"{file}: tensor '{missing[0]}' is missing (expected shape {shape} from {expected_from}; "
                         f"{len(missing)} missing in all: {_preview(missing)})")
    if unexpected:
        raise InputError(f"{file}: unexpected tensor '{unexpected[0]}' (not in the model that {expected_from} "
                         f"describes; {len(unexpected)} unexpected in all: {_preview(unexpected)})")
    for k, shape in wanted.items():
        if k not in found:  # (prior statistics of a state saved before them)
            continue
        if found[k] is None:
            raise InputError(f"{file}: '{prefix}{k}' is not a tensor (expected shape {shape} from {expected_from})")
        if found[k] != shape:
            raise InputError(f"{file}: tensor '{prefix}{k}' has shape {found[k]} but {expected_from} "
                             f"needs {shape}; the weights and the config do not belong together")


def check_fits(cfg: Config, nets: dict, file: str, expected_from: str, names: tuple[str, ...],
               group: str = "") -> None:
    """Check the networks ``names`` of ``cfg`` against ``nets`` (``{net: (state or shapes, prefix)}``) before
    any is built: the expected shapes come from modules built on the meta device, which allocates
    nothing, so a config of absurd sizes fails here instead of allocating them. ``group`` is what the
    file's keys start with before the network's name (e.g. ``models.``), for messages."""
    with torch.device("meta"):
        vae = build_vae(cfg.model, cfg.data.resolution)
        modules = {"encoder": vae.encoder, "decoder": vae.decoder}
        if "discriminator" in names:
            modules["discriminator"] = build_discriminator(cfg.model, cfg.data.resolution)
    for name in names:
        if name not in nets:
            raise InputError(f"{file}: has no '{group}{name}.*' tensors (expected the {name} that {expected_from} "
                             f"describes)")
        state, prefix = nets[name]
        check_fit(_shapes(modules[name].state_dict()), _shapes(state), file, prefix, expected_from)


def check_checkpoint_shapes(cfg: Config, folder: str | Path) -> None:
    """Check a checkpoint's networks (``models.*`` in ``folder/state.safetensors``, shapes read from its
    header) against the ones ``cfg`` builds, before anything is built (see :func:`check_fits`)."""
    from vaegan.storage.state import inspect_state

    folder = Path(folder)
    _, shapes = inspect_state(folder)
    groups: dict[str, dict] = {}
    for key, shape in shapes.items():
        top, _, rest = key.partition(".")
        if top == "models":
            net, _, name = rest.partition(".")
            groups.setdefault(net, {})[name] = shape
    names = ("encoder", "decoder") + (("discriminator",) if cfg.model.kind == "vaegan" else ())
    check_fits(cfg, {net: (group, f"models.{net}.") for net, group in groups.items()},
               str(folder / "state.safetensors"), f"the config saved in {folder / 'state.json'}", names, "models.")


def _saved_before_prior_statistics(key: str, found: dict) -> bool:
    """``key`` is one of a batch norm's prior statistics and ``found`` has none of that norm's: a
    state saved before the decoder kept them (filled from the data statistics on load)."""
    module, _, leaf = key.rpartition(".")
    return leaf in PRIOR_STATS and not any(f"{module}.{p}" in found for p in PRIOR_STATS)


def _preview(keys: list[str], n: int = 3) -> str:
    return ", ".join(f"'{k}'" for k in keys[:n]) + (", ..." if len(keys) > n else "")


def _split(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"encoder.fc.weight": t}`` -> ``{"encoder": {"fc.weight": t}}`` (wrapper parts dropped)."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in strip_wrappers(tensors).items():
        net, _, rest = key.partition(".")
        groups.setdefault(net, {})[rest] = value
    return groups


def _provenance(step: int | None, settings: dict) -> dict:
    """``{"precision", "batch_size", "images_seen"}`` from what a source records (None where it does not)."""
    batch = settings.get("batch_size")
    return {"precision": settings.get("precision"), "batch_size": batch,
            "images_seen": step * batch if step is not None and batch is not None else None}


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


# Each loader returns ({net: (state dict, its keys' prefix in the file)}, config, info).

def _load_export(path: Path) -> tuple[dict, Config, dict]:
    weights = path if path.is_file() else path / WEIGHTS_FILE
    config_file = weights.parent / CONFIG_FILE
    values = read_json(config_file, f"an export folder holds {CONFIG_FILE} beside {WEIGHTS_FILE}")
    cfg = read_model_config(values, str(config_file))
    tensors, metadata = read_safetensors(weights, f"the {WEIGHTS_FILE} that 'vaegan export' writes")
    groups = _split(tensors)
    unknown = sorted(set(groups) - {"encoder", "decoder", "discriminator"})
    if unknown:
        key = next(k for k in strip_wrappers(tensors) if k.startswith(unknown[0] + "."))
        raise InputError(f"{weights}: unexpected tensor '{key}' (expected keys starting with encoder., decoder. "
                         f"or discriminator.)")
    step = _int(metadata.get("step"))
    settings = training_settings(values)  # a v1 export's config.json is the whole training config
    settings.update({k: v for k, v in (("precision", metadata.get("precision")),
                                       ("batch_size", _int(metadata.get("batch_size")))) if v})
    info = {"source": str(weights.parent), "format": "export", "file": str(weights), "step": step,
            "weights": metadata.get("weights", "unknown"), **_provenance(step, settings),
            "expected_from": str(config_file)}
    return {net: (state, f"{net}.") for net, state in groups.items()}, cfg, info


def _load_checkpoint(path: Path, use_ema: bool) -> tuple[dict, Config, dict]:
    from vaegan.storage.checkpoint import load_checkpoint

    folder, state = load_checkpoint(path)
    saved = state.get("config")
    cfg = read_model_config(saved, str(folder / "state.json"))
    nets = {net: (weights, f"models.{net}.") for net, weights in state["models"].items()}
    weights = "raw"
    if use_ema and "ema" in state:
        nets.update({net: (weights, f"ema.{net}.") for net, weights in state["ema"].items()})
        weights = "ema"
    step = int(state.get("step", 0))
    info = {"source": str(folder), "format": "checkpoint", "file": str(folder / "state.safetensors"), "step": step,
            "weights": weights, **_provenance(step, training_settings(saved)),
            "expected_from": f"the config saved in {folder / 'state.json'}"}
    return nets, cfg, info


def load_pretrained(path: str | Path, device: str | torch.device = "cpu", with_discriminator: bool | None = False,
                    use_ema: bool = True) -> Pretrained:
    """Rebuild a trained model from a run folder, checkpoint folder or export folder (or its model.safetensors).

    Returns :class:`Pretrained` ``(vae, config, discriminator, info)``, modules in eval mode on
    ``device``. The EMA weights are used when the run kept an EMA and ``use_ema`` is set (an export
    already holds the weights chosen at export time). ``with_discriminator``: False skips it,
    True requires it (InputError if the source has none), None loads it when available.

    ``config`` holds the ``model`` and ``data`` sections the model was trained with; its ``loss``,
    ``optim`` and ``train`` sections are the defaults (an export does not keep them; for a run's
    full config use :func:`vaegan.storage.configs.read_run_config`). ``info`` records where the
    weights came from and, where the source records them, the step, precision, batch size and
    images seen (step x batch size).
    """
    path = Path(resolve_source(path))  # hf://OWNER/NAME[@REV]: its folder in the local Hub cache (vaegan.storage.hub)
    nets, cfg, info = _load_export(path) if is_export(path) else _load_checkpoint(path, use_ema)
    res = cfg.data.resolution
    check_fits(cfg, nets, info["file"], info["expected_from"],  # before building: a config's sizes are checked
               ("encoder", "decoder", *(["discriminator"] if with_discriminator is not False and "discriminator" in nets
                                        else [])))
    vae = build_vae(cfg.model, res)
    for name in ("encoder", "decoder"):
        if name not in nets:
            raise InputError(f"{info['file']}: has no '{name}.*' tensors (expected the encoder and decoder "
                             f"that {info['expected_from']} describes)")
        state, prefix = nets[name]
        load_module_state(getattr(vae, name), state, info["file"], prefix, info["expected_from"])
    dis = None
    if with_discriminator is True and "discriminator" not in nets:
        hint = "export it with --with-discriminator" if info["format"] == "export" else \
            f"model.kind is {cfg.model.kind!r}"
        raise InputError(f"{info['source']} holds no discriminator ({hint})")
    if with_discriminator is not False and "discriminator" in nets:
        dis = build_discriminator(cfg.model, res)
        load_module_state(dis, nets["discriminator"][0], info["file"], nets["discriminator"][1], info["expected_from"])
        dis = dis.to(device).eval()
    info = {k: v for k, v in info.items() if k != "expected_from"}
    return Pretrained(vae.to(device).eval(), cfg, dis, info)
