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
from safetensors import SafetensorError, safe_open
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
    """The nested structure ``skeleton`` describes, its tensor references resolved from ``tensors``."""
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


def tensor_refs(skeleton: Any) -> list:
    """Every tensor reference in ``skeleton`` (walked without recursion, so any depth is safe)."""
    refs, todo = [], [skeleton]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if _TENSOR in node:
                refs.append(node[_TENSOR])
            else:
                todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return refs


def save_state(state: dict, folder: str | Path) -> None:
    """Write ``folder/state.safetensors`` and ``folder/state.json`` (each atomically)."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    write_safetensors(folder / "state.safetensors", tensors, {})
    with atomic_path(folder / "state.json") as tmp:
        tmp.write_text(json.dumps(skeleton))


def inspect_state(folder: str | Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """``(skeleton, {tensor name: shape})`` of a saved state, reading state.json and only the header of
    state.safetensors: no tensor is loaded. MissingFileError or InputError naming the file when either
    file is missing, unreadable or truncated, state.json is nested too deeply, or it refers to a
    tensor that state.safetensors does not hold."""
    folder = Path(folder)
    weights, skeleton_file = folder / "state.safetensors", folder / "state.json"
    for f in (weights, skeleton_file):
        if not f.is_file():
            raise MissingFileError(f"checkpoint file missing: {f}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"checkpoint {weights} is not a readable safetensors file: {e}") from None
    try:
        skeleton = json.loads(skeleton_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"checkpoint {skeleton_file} is not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(f"checkpoint {skeleton_file} is nested too deeply to be a saved state") from None
    if not isinstance(skeleton, dict):
        raise InputError(f"checkpoint {skeleton_file}: expected a JSON object, got {type(skeleton).__name__}")
    for ref in tensor_refs(skeleton):
        if not isinstance(ref, str) or ref not in shapes:
            raise InputError(f"checkpoint {skeleton_file} refers to tensor {ref!r}, which {weights} does not hold; "
                             f"the two files do not belong together")
    return skeleton, shapes


def load_state(folder: str | Path) -> dict:
    """The state saved by :func:`save_state`; InputError naming the file when it cannot be (see :func:`inspect_state`)."""
    folder = Path(folder)
    skeleton, _ = inspect_state(folder)
    try:
        tensors = load_file(str(folder / "state.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"checkpoint {folder / 'state.safetensors'} is not a readable safetensors file: {e}") from None
    try:
        return unflatten(skeleton, tensors)
    except RecursionError:
        raise InputError(f"checkpoint {folder / 'state.json'} is nested too deeply to be a saved state") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"checkpoint {folder / 'state.json'} is not a saved state ({type(e).__name__}: {e})") from None
