"""A model's fitted latent prior (:mod:`vaegan.models.gmm`): fitting it to the model's codes, where it
is kept, reading it back, and choosing between it and N(0, I) for sampling."""
from __future__ import annotations

from pathlib import Path

import torch

from vaegan.errors import InputError, MissingFileError
from vaegan.files import read_safetensors
from vaegan.models.gmm import GaussianMixture, fit_gmm
from vaegan.models.inference import BATCH_SIZE, encode_images
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


@torch.no_grad()
def fit_codes_mixture(vae, dataset, components: int = 10, num_images: int | None = None,
                      seed: int = 0) -> tuple[GaussianMixture, int]:
    """A mixture fitted to the posterior means of the first ``num_images`` (all by default) items of
    ``dataset`` (uint8 (3, R, R) images), and how many there were. The model is used in eval mode
    (its batch norms' running statistics), each module left in the mode it was in."""
    n = len(dataset) if num_images is None else min(num_images, len(dataset))
    modes = [(m, m.training) for m in vae.modules()]
    vae.eval()
    try:
        means = []
        for start in range(0, n, BATCH_SIZE):  # a batch of images in memory at a time, not the split
            images = torch.stack([dataset[i] for i in range(start, min(start + BATCH_SIZE, n))])
            means.append(encode_images(vae, images).mean)
    finally:
        for module, mode in modes:
            module.training = mode
    return fit_gmm(torch.cat(means), components, seed=seed), n


def save_prior(mixture: GaussianMixture, path: str | Path, info: dict, images: int, components: int) -> Path:
    """Write ``mixture`` with what it was fitted for (``info``: source, step, weights; see
    :func:`vaegan.storage.prior.fitted_for`), atomically."""
    meta = {"source": str(info["source"]), **fitted_for(info), "images": str(images), "components": str(components)}
    return mixture.save(path, meta)


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


PRIORS = ("auto", "normal", "gmm")  # vaegan sample --prior


def choose_prior(source: str | Path, latent_dim: int, info: dict, prior: str = "auto") -> tuple[GaussianMixture | None, str]:
    """The latent prior to sample ``source``'s model from (None: N(0, I)) and a line saying which.

    ``"normal"``: N(0, I). ``"gmm"``: the fitted mixture, or the error :func:`load_prior` gives.
    ``"auto"``: the fitted mixture when there is one for these weights and this step (training fits
    one at its end), else N(0, I), the line saying why (none fitted; fitted for other weights or
    another step; unreadable) and how to fit one.
    """
    if prior not in PRIORS:
        raise InputError(f"--prior must be one of {', '.join(PRIORS)}, got {prior!r}")
    if prior == "normal":
        return None, "latents from N(0, I)"
    path = prior_path(source)
    if prior == "auto" and not path.is_file():
        return None, (f"latents from N(0, I): no fitted latent prior at {path} (fit one for cleaner samples: "
                      f"vaegan fit-prior --checkpoint {source})")
    try:
        mixture = load_prior(source, latent_dim, info)
    except InputError as e:
        if prior == "gmm":
            raise
        return None, f"latents from N(0, I), not the fitted prior: {e}"
    return mixture, f"latents from the Gaussian mixture fitted to the training codes, {path} (--prior normal for N(0, I))"
