"""Where a model's fitted latent prior (:mod:`vaegan.models.gmm`) is kept, and reading it back."""
from __future__ import annotations

from pathlib import Path

from vaegan.errors import InputError, MissingFileError
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


def load_prior(source: str | Path, latent_dim: int) -> GaussianMixture:
    """The mixture fitted for ``source`` (see :func:`prior_path`); a clear error when there is none."""
    path = prior_path(source)
    if not path.is_file():
        raise MissingFileError(f"no fitted latent prior at {path}; fit one first: vaegan fit-prior --checkpoint {source}")
    mixture = GaussianMixture.load(path)
    if mixture.latent_dim != latent_dim:
        raise InputError(f"{path}: a prior over {mixture.latent_dim} latent dimensions, but the model has {latent_dim}; "
                         f"fit it again: vaegan fit-prior --checkpoint {source}")
    return mixture
