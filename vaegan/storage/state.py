"""Pickle-free storage of nested state (model, optimizer, RNG, counters).

A nested structure of dicts, lists, tuples, tensors and JSON scalars is split into a flat
dict of tensors (saved with safetensors) and a JSON skeleton that references them, so that
loading never unpickles anything.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vaegan.errors import InputError, MissingFileError
from vaegan.files import atomic_path
from vaegan.files import write_safetensors

_TENSOR, _TUPLE, _INTKEYS = "__tensor__", "__tuple__", "__intkeys__"


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Move every tensor of ``obj`` into ``tensors``; return the JSON-able skeleton."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        int_keys = bool(obj) and all(isinstance(k, int) for k in obj)
        body = {str(k): flatten(v, tensors, f"{prefix}.{k}" if prefix else str(k)) for k, v in obj.items()}
        return {_INTKEYS: body} if int_keys else body
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at '{prefix}' without pickle")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            return tensors[skeleton[_TENSOR]]
        if _TUPLE in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton[_TUPLE])
        if _INTKEYS in skeleton:
            return {int(k): unflatten(v, tensors) for k, v in skeleton[_INTKEYS].items()}
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def save_state(state: dict, folder: str | Path) -> None:
    """Write ``folder/state.safetensors`` and ``folder/state.json`` (each atomically)."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    write_safetensors(folder / "state.safetensors", tensors, {})
    with atomic_path(folder / "state.json") as tmp:
        tmp.write_text(json.dumps(skeleton))


def load_state(folder: str | Path) -> dict:
    folder = Path(folder)
    files = folder / "state.safetensors", folder / "state.json"
    for f in files:
        if not f.is_file():
            raise MissingFileError(f"checkpoint file missing: {f}")
    try:
        tensors = load_file(str(files[0]))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"checkpoint {files[0]} is not a readable safetensors file: {e}") from None
    try:
        skeleton = json.loads(files[1].read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"checkpoint {files[1]} is not valid JSON: {e}") from None
    return unflatten(skeleton, tensors)
