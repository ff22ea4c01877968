"""Where a model's fitted latent prior (:mod:`vaegan.models.gmm`) is kept, and reading it back."""
from __future__ import annotations

from pathlib import Path

from vaegan.errors import InputError, MissingFileError
from vaegan.files import read_safetensors
from vaegan.models.gmm import GaussianMixture
from vaegan.storage.hub import resolve_source

PRIOR_FILE = "latent_prior.safetensors"


def prior_path(source: str | Path) -> Path:
    """Where a model's fitted prior lives: in an export folder, or in the run folder of a run or
    checkpoint folder (``RUN/checkpoints/step-N`` -> ``RUN``); for ``hf://OWNER/NAME``, in its local Hub
    cache folder."""
    source = Path(resolve_source(source))
    if source.is_file():
        source = source.parent
    if source.parent.name == "checkpoints":
        source = source.parent.parent
    return source / PRIOR_FILE


def fitted_for(info: dict) -> dict[str, str]:
    """What a prior records of the model it was fitted for (from ``load_pretrained``'s info): the
    step and which weights (ema or raw). A prior of other weights fits another model's codes."""
    return {"step": str(info["step"] or ""), "weights": str(info["weights"])}


def load_prior(source: str | Path, latent_dim: int, info: dict | None = None) -> GaussianMixture:
    """The mixture fitted for ``source`` (see :func:`prior_path`); a clear error when there is none,
    or, given the model's ``info`` (``load_pretrained``), when it was fitted for another step or other
    weights (the file is the run's, so a later ``fit-prior``, or training on, leaves it behind)."""
    path = prior_path(source)
    if not path.is_file():
        raise MissingFileError(f"no fitted latent prior at {path}; fit one first: vaegan fit-prior --checkpoint {source}")
    tensors, meta = read_safetensors(path, "a latent prior that 'vaegan fit-prior' writes")
    if info is not None:
        want, got = fitted_for(info), {k: meta.get(k) for k in ("step", "weights")}
        if None not in got.values() and got != want:
            again = " --no-ema" if want["weights"] == "raw" else ""
            raise InputError(f"{path} was fitted for step {got['step'] or '?'} ({got['weights']} weights), but "
                             f"{source} gives step {want['step'] or '?'} ({want['weights']} weights): its latents "
                             f"follow another model's codes. Fit it again: vaegan fit-prior --checkpoint {source}{again}")
    mixture = GaussianMixture.from_tensors(tensors, path)
    if mixture.latent_dim != latent_dim:
        raise InputError(f"{path}: a prior over {mixture.latent_dim} latent dimensions, but the model has {latent_dim}; "
                         f"fit it again: vaegan fit-prior --checkpoint {source}")
    return mixture
