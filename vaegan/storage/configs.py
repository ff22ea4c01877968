"""The one reader of saved configs: a run's ``config.json``, a checkpoint's config, an export's ``config.json``.

Two readings:

- :func:`read_run_config` (resume): a run's full config, every section strict, exactly as
  training left it: the config inside the checkpoint's ``state.json``, as sample and export read
  it (``RUN/config.json`` is a readable copy, read only before the first checkpoint).
- :func:`read_model_config` (inference): from a run/checkpoint config, an export config of
  format ``vaegan-export-v2`` or an old v1 export config (a whole training config, possibly
  with training keys this version no longer knows) it takes ``model`` and ``data`` strictly
  (they decide the networks' layout and how images are read for them) and returns a
  :class:`~vaegan.config.Config` whose ``loss``, ``optim`` and ``train`` sections are the
  defaults: a trained model does not depend on them.

An export's ``config.json`` (written by :func:`export_config`)::

    {"format": "vaegan-export-v2", "resolution": R, "model": {...ModelConfig}, "data": {...DataConfig}}

``data`` is the record of what the model was trained on (tools read ``split:NAME`` of it and its
crop settings). The training provenance (step, weights, precision, batch size, images seen) is in
the metadata of the export's ``model.safetensors``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from vaegan.config import Config, ConfigError, apply, from_dict, parse_override, validate
from vaegan.errors import InputError, MissingFileError

EXPORT_FORMAT = "vaegan-export-v2"
RUN_CONFIG_FILE = "config.json"
REEXPORT = "vaegan export --checkpoint RUN --out DIR"
_EXPORT_KEYS = ("format", "resolution", "model", "data")
_TRAINING_SECTIONS = ("loss", "optim", "train")  # not needed to rebuild a trained model


def read_json(path: str | Path, expected: str) -> dict:
    """A JSON object from ``path``; MissingFileError or InputError naming the file and ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"file not found: {path} (expected {expected})")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON: {e} (expected {expected})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a JSON object ({expected}), got {type(values).__name__}")
    return values


def read_run_config(run_dir: str | Path) -> Config:
    """The full config a resume of ``run_dir`` continues, every key checked.

    One source of truth: the config saved in the checkpoint's own ``state.json`` (the newest intact
    checkpoint, see :func:`vaegan.storage.checkpoint.resolve_checkpoint`), the one that sample and
    export read too; ``RUN/config.json`` is a readable copy of it. Only a run that stopped before its
    first checkpoint is read from ``config.json`` (its resume restarts from step 0). The networks
    the config describes are checked against the checkpoint's tensor shapes (from the safetensors
    header, no tensor loaded) before anything is built.
    """
    from vaegan.storage.checkpoint import checked_checkpoint, has_checkpoint
    from vaegan.storage.pretrained import check_checkpoint_shapes

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        if run_dir.exists():
            raise InputError(f"not a run folder: {run_dir} is a file")
        raise MissingFileError(f"run folder not found: {run_dir}")
    if has_checkpoint(run_dir):
        folder, skeleton = checked_checkpoint(run_dir)
        where = folder / "state.json"
        try:
            cfg = from_dict(skeleton["config"])
        except ConfigError as e:
            raise _named(e, str(where)) from None
        check_checkpoint_shapes(cfg, folder)
        return cfg
    path = run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(f"not a run folder: {run_dir} (expected {path})")
    values = read_json(path, "the config.json that 'vaegan train' writes into its run folder")
    try:
        return from_dict(values)
    except ConfigError as e:
        raise _named(e, str(path)) from None


RESUME_KEYS = ("data.skip_bad_images", "data.num_workers", "optim.lr", "optim.lr_dis", "optim.lr_schedule",
               "optim.lr_warmup_steps", "optim.lr_final", "optim.grad_clip")
"""What a resume may change besides ``train.*``: keys that change neither the networks nor the data order."""


def apply_resume_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``section.key=value`` overrides on a resumed run's config: ``train.*`` and :data:`RESUME_KEYS` only
    (ConfigError naming the key and listing what may change otherwise)."""
    for text in overrides:
        values = parse_override(text)
        (section, body), = values.items()
        key = f"{section}.{next(iter(body))}"
        if section != "train" and key not in RESUME_KEYS:
            raise ConfigError(f"override '{text}': {key} cannot change on --resume (it would change the networks "
                              f"or the data order); a resume may change train.* and {', '.join(RESUME_KEYS)}")
        apply(cfg, values, origin=f"override '{text}'")
    validate(cfg)
    return cfg


def read_model_config(values: dict, where: str) -> Config:
    """The config that rebuilds a trained model, from any saved config (see the module docstring).

    ``where`` names the file in messages. ``model`` and ``data`` are checked strictly; the training
    sections of a full config are not read, and the returned config has default ones.
    """
    hint = (f"if this is an export folder, export it again from its run folder with this version: "
            f"{REEXPORT}")
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a JSON object with 'model' and 'data' sections, "
                         f"got {type(values).__name__}; {hint}")
    if "format" in values:
        if values["format"] != EXPORT_FORMAT:
            raise InputError(f"{where}: unknown export format {values['format']!r} (this version reads "
                             f"{EXPORT_FORMAT!r}); {hint}")
        unknown = sorted(set(values) - set(_EXPORT_KEYS))
        if unknown:
            raise InputError(f"{where}: unexpected keys {unknown} in a {EXPORT_FORMAT} config "
                             f"(expected {list(_EXPORT_KEYS)}); {hint}")
    else:  # a run or checkpoint config, or a v1 export (the whole training config)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(Config)})
        if unknown:
            raise InputError(f"{where}: unknown sections {unknown} (expected model, data and, in a run's "
                             f"config, {', '.join(_TRAINING_SECTIONS)}); {hint}")
    missing = [s for s in ("model", "data") if not isinstance(values.get(s), dict)]
    if missing:
        raise InputError(f"{where}: no {' or '.join(repr(s) for s in missing)} section, so the model cannot be "
                         f"rebuilt; {hint}")

    try:
        cfg = apply(Config(), {"model": values["model"], "data": values["data"]}, origin=where)
        validate(cfg)
    except ConfigError as e:
        raise _named(e, where) from None
    if "resolution" in values and values["resolution"] != cfg.data.resolution:
        raise InputError(f"{where}: 'resolution' is {values['resolution']!r} but data.resolution is "
                         f"{cfg.data.resolution}; {hint}")
    return cfg


def export_config(cfg: Config) -> dict:
    """What an export's ``config.json`` holds for ``cfg``: format, resolution, ``model`` and ``data``."""
    return {"format": EXPORT_FORMAT, "resolution": cfg.data.resolution,
            "model": dataclasses.asdict(cfg.model), "data": dataclasses.asdict(cfg.data)}


def training_settings(values: dict) -> dict:
    """``{"precision", "batch_size"}`` recorded in a full (run, checkpoint or v1 export) config's
    ``train`` section, for provenance; ``{}`` for an export v2 config, and a value left out
    where it is missing or of the wrong type."""
    train = values.get("train") if isinstance(values, dict) else None
    if not isinstance(train, dict):
        return {}
    found = {}
    if isinstance(train.get("precision"), str):
        found["precision"] = train["precision"]
    if isinstance(train.get("batch_size"), int) and not isinstance(train.get("batch_size"), bool):
        found["batch_size"] = train["batch_size"]
    return found


def _named(error: ConfigError, where: str) -> ConfigError:
    """``error`` with its message starting with ``where`` (the file it came from)."""
    message = str(error)
    return ConfigError(message if message.startswith(where) else f"{where}: {message}")
