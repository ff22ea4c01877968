"""Checkpoint folders inside a run: atomic writes, a 'latest' pointer, keep the last K.

Layout: ``RUN/checkpoints/step-00001000/{state.safetensors,state.json}`` and
``RUN/checkpoints/latest`` (a text file naming the newest complete checkpoint).
A checkpoint folder is written under a temporary name and renamed when complete, so a kill
during a save leaves the previous checkpoint as the latest one.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from vaegan.errors import InputError, MissingFileError
from vaegan.files import write_text_atomic
from vaegan.storage.state import inspect_state, load_state, save_state


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | Path, step: int, state: dict, keep: int = 3) -> Path:
    root = checkpoint_dir(run_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_state(state, tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    write_text_atomic(root / "latest", final.name + "\n")
    if keep > 0:  # checkpoints past this step (left by a run resumed from an older one) wait to be overwritten
        for old in [p for p in list_checkpoints(run_dir) if p.name <= final.name][:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / "state.json").is_file() and (p / "state.safetensors").is_file())


def checkpoint_candidates(run_dir: str | Path) -> list[Path]:
    """Every checkpoint folder of a run, complete or not, in the order loading tries them: the one
    ``latest`` names first, then the others newest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True)
    latest = root / "latest"
    try:
        name = latest.read_text().strip() if latest.is_file() else ""
    except (OSError, UnicodeDecodeError):
        name = ""
    first = [p for p in found if p.name == name]
    return first + [p for p in found if p.name != name]


def check_checkpoint(folder: str | Path) -> dict:
    """The skeleton of ``folder/state.json`` once the checkpoint is known to be intact: both files there,
    the safetensors header complete, every tensor reference resolved, ``step`` a whole number >= 0 and
    ``config`` and ``models`` objects. MissingFileError or InputError naming the file otherwise.
    Reads no tensor."""
    folder = Path(folder)
    skeleton, _ = inspect_state(folder)
    where = folder / "state.json"
    step = skeleton.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(f"checkpoint {where}: 'step' must be a whole number >= 0, got {step!r}")
    for key in ("config", "models"):
        if not isinstance(skeleton.get(key), dict):
            raise InputError(f"checkpoint {where}: no '{key}' object (got {type(skeleton.get(key)).__name__})")
    for key in ("models", "ema"):
        section = skeleton.get(key, {})
        bad = [key] if not isinstance(section, dict) or "__tensor__" in section else \
            [f"{key}.{net}" for net, v in section.items() if not isinstance(v, dict) or "__tensor__" in v]
        if bad:
            raise InputError(f"checkpoint {where}: '{bad[0]}' is not an object of a network's tensors")
    return skeleton


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (-> its newest intact checkpoint) or a checkpoint folder -> checkpoint folder.

    In a run folder the checkpoint ``latest`` names is tried first, then the others newest first;
    a corrupt one (a file missing, truncated or unreadable, see :func:`check_checkpoint`) is passed
    over with a warning naming it. A checkpoint folder named directly is returned as it is (loading
    it reports what is wrong). MissingFileError when the run has no checkpoint at all; InputError
    naming every corrupt one when none is intact.
    """
    return _resolve(path, stacklevel=3)[0]


def checked_checkpoint(path: str | Path) -> tuple[Path, dict]:
    """``(folder, skeleton)``: the checkpoint :func:`resolve_checkpoint` picks and what
    :func:`check_checkpoint` returns for it, checked once."""
    folder, skeleton = _resolve(path, stacklevel=3)
    return folder, skeleton if skeleton is not None else check_checkpoint(folder)


def _resolve(path: str | Path, stacklevel: int) -> tuple[Path, dict | None]:
    """:func:`resolve_checkpoint`'s folder, with its skeleton when choosing it checked it (None for a
    checkpoint folder named directly). ``stacklevel``: the warnings' (3: the caller's caller)."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path, None
    candidates = checkpoint_candidates(path)
    problems = []
    for folder in candidates:
        try:
            skeleton = check_checkpoint(folder)
        except (InputError, MissingFileError) as e:
            problems.append(str(e))
            continue
        for problem in problems:
            warnings.warn(f"{problem}; using the newest intact checkpoint, {folder}", stacklevel=stacklevel)
        return folder, skeleton
    if problems:
        raise InputError(f"no intact checkpoint in {path}: {'; '.join(problems)}. Delete the corrupt checkpoint "
                         f"folders to restart the run from step 0 with: vaegan train --resume {path}")
    if not path.exists():
        raise MissingFileError(f"checkpoint or run folder not found: {path}")
    raise MissingFileError(
        f"no checkpoint in {path} (expected a run folder with checkpoints/step-*/state.json, "
        f"or a checkpoint folder holding state.json and state.safetensors)"
    )


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run folder holds any checkpoint folder (intact or not): without one, a resume
    starts from step 0."""
    return bool(checkpoint_candidates(run_dir))


def load_checkpoint(path: str | Path) -> tuple[Path, dict]:
    """``(folder, state)`` of the checkpoint :func:`resolve_checkpoint` picks; InputError naming the file
    when it cannot be read."""
    folder, _ = checked_checkpoint(path)
    return folder, load_state(folder)
