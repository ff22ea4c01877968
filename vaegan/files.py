"""Files the toolkit writes: atomically (temporary name, then rename), and safetensors with JSON-able metadata."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from vaegan.errors import InputError, MissingFileError



@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary path in ``path``'s folder; rename it onto ``path`` on success.

    A crash or exception leaves any previous file at ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_safetensors(path: str | Path, expected: str = "a safetensors file",
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata); FileNotFoundError, or ValueError naming the file if it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"file not found: {path} (expected {expected})")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InputError(f"{path} is not a readable safetensors file ({e}); it may be truncated or in another "
                         f"format (expected {expected})") from None
    return tensors, metadata


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write tensors (moved to the CPU, made contiguous) and string metadata atomically."""
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    with atomic_path(path, suffix=".safetensors") as tmp:
        tmp.write_bytes(data)  # bytes into the prepared temp file keep its permissions
    return Path(path)
