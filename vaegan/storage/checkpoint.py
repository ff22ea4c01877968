"""Checkpoint folders inside a run: atomic writes, a 'latest' pointer, keep the last K.

Layout: ``RUN/checkpoints/step-00001000/{state.safetensors,state.json}`` and
``RUN/checkpoints/latest`` (a text file naming the newest complete checkpoint).
A checkpoint folder is written under a temporary name and renamed when complete, so a kill
during a save leaves the previous checkpoint as the latest one.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from vaegan.errors import MissingFileError
from vaegan.files import write_text_atomic
from vaegan.storage.state import load_state, save_state


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
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / "state.json").is_file() and (p / "state.safetensors").is_file())


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (-> its latest checkpoint) or a checkpoint folder -> checkpoint folder."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    root = checkpoint_dir(path)
    latest = root / "latest"
    if latest.is_file():
        candidate = root / latest.read_text().strip()
        if (candidate / "state.json").is_file():
            return candidate
    found = list_checkpoints(path)
    if found:
        return found[-1]
    if not path.exists():
        raise MissingFileError(f"checkpoint or run folder not found: {path}")
    raise MissingFileError(
        f"no checkpoint in {path} (expected a run folder with checkpoints/step-*/state.json, "
        f"or a checkpoint folder holding state.json and state.safetensors)"
    )


def load_checkpoint(path: str | Path) -> tuple[Path, dict]:
    folder = resolve_checkpoint(path)
    return folder, load_state(folder)
