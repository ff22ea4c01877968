"""Latent attribute vectors (Larsen et al. 2016, section 5): mean latent of positives minus negatives.

Labels come from CelebA's ``list_attr_celeba.txt`` (+1 / -1; images without a row are left
out) or from the built-in faces' ground truth, where an image is positive when the attribute is
above the middle of its range (e.g. ``smiling`` > 0, ``glasses`` > 0.5).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from vaegan.data.faces import ATTR_NAMES as FACE_ATTRS
from vaegan.data.faces import Faces
from vaegan.errors import InputError
from vaegan.images import check_output_file, save_grid
from vaegan.models.inference import decode_latents, encode_images
from vaegan.files import read_safetensors, write_safetensors

VECTOR_FORMAT = "vaegan-attribute-vector-v1"
# Middle of each built-in face attribute's range; CelebA's +1/-1 labels split at 0.
MIDPOINTS = {name: 0.0 if name in ("smiling", "pose", "gaze", "roll") else 0.5 for name in FACE_ATTRS}


def binarise(values: torch.Tensor, name: str) -> torch.Tensor:
    """Attribute values -> +1 (positive), -1 (negative), 0 (unknown or exactly at the middle)."""
    return torch.sign(values.float() - MIDPOINTS.get(name, 0.0))


@torch.no_grad()
def attribute_vector(model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean posterior mean of positives minus that of negatives: (latent_dim,).

    images: uint8 (N, 3, R, R); labels: (N,) > 0 positive, < 0 negative, 0 ignored.
    """
    labels = torch.as_tensor(labels)
    n_pos, n_neg = int((labels > 0).sum()), int((labels < 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"an attribute vector needs positive and negative images, got {n_pos} and {n_neg}")
    z = encode_images(model, images).mean
    return z[labels > 0].mean(0) - z[labels < 0].mean(0)


def edit_attribute(model, images: torch.Tensor, vector: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Decode posterior means moved by ``alpha * vector``: uint8 (N, 3, R, R)."""
    z = encode_images(model, images).mean
    return decode_latents(model, z + alpha * vector.float().cpu())


def save_vector(path: str | Path, vector: torch.Tensor, attribute: str, positives: int, negatives: int) -> Path:
    metadata = {"format": VECTOR_FORMAT, "attribute": attribute, "positives": str(positives),
                "negatives": str(negatives), "latent_dim": str(vector.numel())}
    return write_safetensors(path, {"vector": vector.float()}, metadata)


def load_vector(path: str | Path) -> tuple[torch.Tensor, dict]:
    tensors, metadata = read_safetensors(path, "an attribute vector written by 'vaegan attribute --save-vector'")
    if metadata.get("format") != VECTOR_FORMAT or "vector" not in tensors:
        raise InputError(f"{path} is not an attribute vector file (expected format {VECTOR_FORMAT!r} with a "
                         f"'vector' tensor, as 'vaegan attribute --save-vector' writes)")
    vector = tensors["vector"]
    if vector.ndim != 1 or not vector.is_floating_point() or not torch.isfinite(vector).all():
        raise InputError(f"{path}: 'vector' must be a 1-D tensor of finite floats, got {vector.dtype} "
                         f"of shape {tuple(vector.shape)}")
    return vector, metadata


def _column(attr_names: list[str], name: str, where: str) -> str:
    """The attribute's spelling in ``attr_names`` (case-insensitive match)."""
    found = {a.lower(): a for a in attr_names}.get(name.lower())
    if found is None:
        raise InputError(f"{where} has no attribute {name!r}; valid: {list(attr_names)}")
    return found


def _values(dataset, name: str, limit: int | None) -> torch.Tensor:
    """One attribute column; for the built-in faces only the first ``limit`` (drawing no images)."""
    if isinstance(dataset, Faces):
        n = min(len(dataset), limit or len(dataset))
        return torch.tensor([dataset.params(i)[name] for i in range(n)], dtype=torch.float32)
    return dataset.attributes[:, dataset.attr_names.index(name)]


def labelled_images(cfg, attr: str, images: str | Path | None = None, attr_file: str | Path | None = None,
                    celeba_root: str | Path | None = None, split: str = "train", limit: int | None = 2000):
    """(ImageSet, labels +1/-1) of the images that carry the attribute; unknowns are left out.

    Sources: ``celeba_root`` (CelebA layout, its attribute file); ``images`` (folder) with
    ``attr_file`` (list_attr_celeba.txt format); else the split (``images='split:NAME'`` or
    ``split``) of the model's own dataset (built-in faces or CelebA).
    """
    from vaegan.data import build_dataset
    from vaegan.data.celeba import read_attributes
    from vaegan.data.inputs import SPLIT_PREFIX, ImageList, ImageSet, image_files, read_split

    if attr_file is not None:
        if images is None:
            raise InputError("--attr-file needs --images FOLDER (the images its rows name)")
        names, rows = read_attributes(Path(attr_file))
        column = names.index(_column(names, attr, str(attr_file)))
        root, files = image_files(images)
        files = [f for f in files if f.name in rows][:limit]
        if not files:
            raise InputError(f"no image in {images} has a row in {attr_file}")
        reader = ImageList(files, cfg.data.resolution)
        data = ImageSet([f.relative_to(root).as_posix() for f in files],
                        torch.stack([reader.read(i) for i in range(len(files))]), files)
        return data, torch.tensor([float(rows[f.name][column]) for f in files])
    if images is not None:
        if not str(images).startswith(SPLIT_PREFIX):
            raise InputError(f"--images {images}: give --attr-file with the labels of a folder, or split:NAME "
                             f"for a split of the model's dataset")
        split = str(images)[len(SPLIT_PREFIX):]
    data_cfg = cfg.data
    if celeba_root is not None:
        data_cfg = dataclasses.replace(cfg.data, dataset="celeba", root=str(celeba_root), cache="")
    dataset = build_dataset(data_cfg, split)
    if not getattr(dataset, "attr_names", None):
        raise InputError(f"{data_cfg.dataset} split {split!r} carries no attributes; give --attr-file or --celeba-root")
    name = _column(dataset.attr_names, attr, f"dataset {data_cfg.dataset}")
    labels = binarise(_values(dataset, name, limit), name)
    known = torch.nonzero(labels != 0).flatten()[:limit].tolist()
    if len(known) == 0:
        raise InputError(f"no image of {data_cfg.dataset} split {split!r} has a known {name!r}")
    return read_split(split, cfg, indices=known, dataset=dataset), labels[known]


def attribute_to_file(checkpoint: str | Path, attr: str | None = None, out: str | Path | None = None,
                      alphas: tuple[float, ...] = (1.5,), n: int = 8, images: str | Path | None = None,
                      attr_file: str | Path | None = None, celeba_root: str | Path | None = None,
                      split: str = "train", limit: int | None = 2000, edit_images: str | Path | None = None,
                      vector_file: str | Path | None = None, save_vector_to: str | Path | None = None) -> dict:
    """Compute (or load) an attribute vector, optionally save it, and draw an edit grid.

    Grid rows: originals, reconstructions, then one row per alpha. The edited images are
    ``edit_images`` (file, folder or ``split:NAME``), else the first n labelled images that lack
    the attribute (have it, for negative alphas).
    """
    from vaegan.data.inputs import check_limit, read_images
    from vaegan.storage.pretrained import load_pretrained

    check_limit(limit)
    check_limit(n, "--n")
    if not alphas or not all(math.isfinite(a) for a in alphas):
        raise InputError(f"--alpha needs one or more finite numbers, got {list(alphas)}")
    if out is not None:
        check_output_file(out, image=True)
    if save_vector_to is not None:
        check_output_file(save_vector_to, "--save-vector")
    vae, cfg, _, _ = load_pretrained(checkpoint)
    summary: dict = {}
    data = labels = None
    if vector_file is not None:
        vector, metadata = load_vector(vector_file)
        summary.update(attribute=metadata.get("attribute"), vector_from=str(vector_file))
        if vector.numel() != vae.latent_dim:
            raise InputError(f"{vector_file} holds a {vector.numel()}-d vector; "
                             f"{checkpoint} has {vae.latent_dim}-d latents")
    else:
        if attr is None:
            raise InputError("give --attr NAME (or --vector FILE)")
        data, labels = labelled_images(cfg, attr, images, attr_file, celeba_root, split, limit)
        vector = attribute_vector(vae, data.images, labels)
        summary.update(attribute=attr, positives=int((labels > 0).sum()), negatives=int((labels < 0).sum()))
    summary["vector_norm"] = float(vector.norm())
    if save_vector_to is not None:
        save_vector(save_vector_to, vector, summary["attribute"] or "", summary.get("positives", 0),
                    summary.get("negatives", 0))
        summary["vector"] = str(save_vector_to)
    if out is not None:
        if edit_images is not None:
            x = read_images(edit_images, cfg, limit=n).images
        elif data is not None:
            x = data.images[labels * (1 if alphas[0] >= 0 else -1) < 0][:n]
        else:
            raise InputError("give --edit IMAGES to show what the loaded vector does")
        z = encode_images(vae, x).mean
        rows = [x, decode_latents(vae, z)] + [decode_latents(vae, z + a * vector) for a in alphas]
        save_grid(torch.cat(rows), out, nrow=len(x))
        summary["out"] = str(out)
    return summary
