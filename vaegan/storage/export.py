"""Export a trained model as a Hub-ready folder, loadable without training code.

``model.safetensors`` + ``config.json`` (format ``vaegan-export-v2``, see
:mod:`vaegan.storage.configs`) hold the weights and what rebuilds the networks and reads images
for them: the resolution and the run's ``model`` and ``data`` sections, no training settings. The
training provenance and the loss, optimizer and EMA settings the run used are in
``model.safetensors``' metadata. Beside them: the model card ``README.md`` with the grids
``samples.png`` and ``reconstructions.png`` and the run's ``metrics.json`` when it was evaluated
(:mod:`vaegan.storage.card`), and with ``onnx=True`` ``encoder.onnx``, ``decoder.onnx`` and ``prior_decoder.onnx``
(:func:`export_onnx`). The folder is a Hugging Face model repo as it stands (``vaegan push``).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from vaegan.data.inputs import read_images
from vaegan.errors import VaeganError
from vaegan.files import atomic_path, read_safetensors, write_safetensors, write_text_atomic
from vaegan.images import check_output_folder, save_grid
from vaegan.models.gmm import GaussianMixture
from vaegan.models.inference import reconstruct, sample
from vaegan.storage.card import (CARD_FILE, METRICS_FILE, NUM_RECON, NUM_SAMPLES, RECON_FILE, RECON_SOURCE,
                                 SAMPLE_SEED, SAMPLES_FILE, describe_failure, find_metrics, model_card, read_metrics)
from vaegan.storage.configs import EXPORT_FORMAT, export_config
from vaegan.storage.pretrained import CONFIG_FILE, WEIGHTS_FILE, load_pretrained, strip_wrappers
from vaegan.storage.prior import PRIOR_FILE, fitted_for, prior_path

ENCODER_ONNX, DECODER_ONNX, PRIOR_DECODER_ONNX = "encoder.onnx", "decoder.onnx", "prior_decoder.onnx"
ONNX_OPSET = 17
TRAINING_SECTIONS = ("loss", "optim", "train")  # kept in the weights' metadata as JSON
_TRAIN_KEYS = ("max_steps", "ema_decay", "grad_accum_steps", "seed")  # what the card reports of train.*


def export_state(vae, discriminator=None) -> dict[str, torch.Tensor]:
    """Flat ``{"encoder.*", "decoder.*"[, "discriminator.*"]: tensor}`` of unwrapped modules, on the CPU."""
    state = {f"encoder.{k}": v for k, v in vae.encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in vae.decoder.state_dict().items()})
    if discriminator is not None:
        state.update({f"discriminator.{k}": v for k, v in discriminator.state_dict().items()})
    return {k: v.detach().cpu().contiguous() for k, v in strip_wrappers(state).items()}


def export_model(checkpoint: str | Path, out: str | Path, with_discriminator: bool = False,
                 use_ema: bool = True, onnx: bool = False, metrics: str | Path | None = None) -> Path:
    """Write an export folder ``out`` from a run, checkpoint or export folder (or ``hf://OWNER/NAME``).

    Files: ``model.safetensors``, ``config.json``, the model card ``README.md``, ``samples.png``,
    ``reconstructions.png`` (skipped, and the card says why, when the model's dataset cannot be
    read), ``metrics.json`` (when the run was evaluated), ``latent_prior.safetensors`` (when one
    was fitted for these weights) and, with ``onnx``, ``encoder.onnx`` and ``decoder.onnx``. Each
    file is written atomically; files of an earlier export that this one does not write are removed.

    The EMA encoder/decoder are exported when the run kept an EMA (and ``use_ema``); the
    discriminator only with ``with_discriminator`` (InputError if the run has none).
    ``metrics``: a ``metrics.json`` of ``vaegan fid``/``compare`` (or a folder holding one) to
    report; by default the run folder's own ``metrics.json`` when there is one.

    The weights file's metadata records the provenance: ``format``, ``source``, ``step``,
    ``weights`` (ema | raw), ``model_kind``, ``resolution``, ``latent_dim``, ``precision``,
    ``batch_size`` and ``images_seen`` (step x batch size), all strings, "" where the source does
    not record it; and ``loss``, ``optim``, ``train`` (JSON: the run's loss and optimizer sections
    and its ``max_steps``, ``ema_decay``, ``grad_accum_steps``, ``seed``) where the source
    records them. An export of an export keeps its source's record.
    """
    out = check_output_folder(out)  # before anything is loaded or written
    vae, cfg, dis, info = load_pretrained(checkpoint, with_discriminator=with_discriminator, use_ema=use_ema)
    source = Path(info["source"])  # a local folder, also for hf:// sources
    record = {k: info[k] for k in ("step", "weights", "precision", "batch_size", "images_seen")}
    training = training_record(info)
    metadata = {"format": EXPORT_FORMAT, "source": info["source"], "model_kind": cfg.model.kind,
                "resolution": str(cfg.data.resolution), "latent_dim": str(cfg.model.latent_dim),
                **{k: "" if v is None else str(v) for k, v in record.items()},
                **{k: json.dumps(v, sort_keys=True) for k, v in training.items()}}
    found = read_metrics(metrics, source) if metrics is not None else _own_metrics(source)
    write_safetensors(out / WEIGHTS_FILE, export_state(vae, dis), metadata)
    write_text_atomic(out / CONFIG_FILE, json.dumps(export_config(cfg), indent=2) + "\n")
    prior, mixture = prior_path(checkpoint), None
    if prior.is_file():  # the fitted latent prior travels with its weights
        tensors, meta = read_safetensors(prior)
        if {k: meta.get(k) for k in ("step", "weights")} == fitted_for(info):
            mixture = GaussianMixture.from_tensors(tensors, prior)
            if prior != out / PRIOR_FILE:
                write_safetensors(out / PRIOR_FILE, tensors, meta)
        else:
            warnings.warn(f"{prior} was fitted for step {meta.get('step')} ({meta.get('weights')} weights), not the "
                          f"exported step {info['step']} ({info['weights']}); not exported. Fit it again: "
                          f"vaegan fit-prior --checkpoint {out}", stacklevel=2)
    if mixture is None and prior != out / PRIOR_FILE:
        _remove(out, PRIOR_FILE)  # an earlier export's prior would be another model's
    files, recon_note = write_previews(vae, cfg, out, mixture)
    onnx_info = export_onnx(vae, cfg, out) if onnx else _remove(out, ENCODER_ONNX, DECODER_ONNX, PRIOR_DECODER_ONNX)
    if found is None:
        _remove(out, METRICS_FILE)
    elif found.file.resolve() != (out / METRICS_FILE).resolve():
        write_text_atomic(out / METRICS_FILE, json.dumps(found.record, indent=2) + "\n")
    card = model_card(cfg, metadata, training, files, found, recon_note, onnx_info, str(checkpoint),
                      discriminator=dis is not None)
    write_text_atomic(out / CARD_FILE, card)
    return out


def training_record(info: dict) -> dict:
    """``{"loss": {...}, "optim": {...}, "train": {...}}`` the source records (``{}`` where it records none).

    A checkpoint's are read from the config saved in its ``state.json``; an export's from its weights'
    metadata, or from a v1 export's ``config.json`` (a whole training config).
    """
    if info["format"] == "checkpoint":
        try:
            config = json.loads((Path(info["source"]) / "state.json").read_text()).get("config")
        except (OSError, ValueError, AttributeError):
            return {}
        return _sections(config)
    try:
        with safe_open(info["file"], framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError):
        meta = {}
    found = {}
    for key in TRAINING_SECTIONS:
        try:
            value = json.loads(meta.get(key) or "null")
        except ValueError:
            value = None
        if isinstance(value, dict):
            found[key] = value
    if found:
        return found
    try:  # a v1 export: config.json is the whole training config
        return _sections(json.loads((Path(info["file"]).parent / CONFIG_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def _sections(config) -> dict:
    if not isinstance(config, dict):
        return {}
    found = {k: config[k] for k in ("loss", "optim") if isinstance(config.get(k), dict)}
    if isinstance(config.get("train"), dict):
        found["train"] = {k: config["train"][k] for k in _TRAIN_KEYS if k in config["train"]}
    return found


def _own_metrics(source: Path):
    """The run folder's metrics.json about this model, or None (also when it is about other models)."""
    path = find_metrics(source)
    if path is None:
        return None
    try:
        return read_metrics(path, source, explicit=False)
    except VaeganError as e:
        warnings.warn(f"{path} was not used for the model card: {e}", stacklevel=3)
        return None


def _remove(folder: Path, *names: str) -> None:
    for name in names:
        if (folder / name).is_file():
            (folder / name).unlink()


@torch.no_grad()
def write_previews(vae, cfg, out: Path, mixture: GaussianMixture | None = None) -> tuple[dict, str | None]:
    """``samples.png`` (latents from ``mixture``, the exported prior, as ``vaegan sample`` draws them;
    else N(0, I)) and ``reconstructions.png`` in ``out``: ({"samples", "reconstructions"}: file names
    (None where not written), "prior": "mixture" or "normal"}, why there is no reconstruction grid or None)."""
    save_grid(sample(vae, NUM_SAMPLES, seed=SAMPLE_SEED, prior=mixture), out / SAMPLES_FILE, nrow=8)
    files = {"samples": SAMPLES_FILE, "reconstructions": None, "prior": "normal" if mixture is None else "mixture"}
    try:
        originals = read_images(RECON_SOURCE, cfg, limit=NUM_RECON).images
    except (VaeganError, OSError) as e:
        _remove(out, RECON_FILE)
        return files, describe_failure(e)
    pairs = torch.stack([originals, reconstruct(vae, originals)], dim=1).flatten(0, 1)
    save_grid(pairs, out / RECON_FILE, nrow=8)
    files["reconstructions"] = RECON_FILE
    return files, None


class _Posterior(torch.nn.Module):
    """The encoder as ONNX exports it: image -> (mean, log-variance) tensors, the log-variance clamped."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.encoder(image)
        return posterior.mean, posterior.logvar


class _PriorDecoder(torch.nn.Module):
    """The decoder for N(0, I) draws: its batch norms use their statistics of such draws."""

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent, from_prior=True)


def export_onnx(vae, cfg, out: str | Path, opset: int = ONNX_OPSET) -> dict:
    """Write ``out/encoder.onnx`` (image -> mean, logvar), ``out/decoder.onnx`` (latent -> image, for
    codes of images) and ``out/prior_decoder.onnx`` (latent -> image, for N(0, I) draws; see
    :meth:`vaegan.models.VAE.decode`).

    float32, batch axis dynamic (named ``batch``), inference (eval) mode; exported with torch's
    TorchScript-based exporter (``dynamo=False``), which needs no extra package. Returns what the
    model card says about them: ``{"opset", "files": {name: {"inputs": {...}, "outputs": {...}}}}``.
    """
    out = Path(out)
    vae = vae.float().eval()
    res, dim = cfg.data.resolution, cfg.model.latent_dim
    low, high = cfg.model.logvar_min, cfg.model.logvar_max
    image = f"float32 (batch, 3, {res}, {res}), RGB in [-1, 1]"
    files = {
        ENCODER_ONNX: {"inputs": {"image": image},
                       "outputs": {"mean": f"float32 (batch, {dim}), posterior mean",
                                   "logvar": f"float32 (batch, {dim}), posterior log-variance in [{low:g}, {high:g}]"}},
        DECODER_ONNX: {"inputs": {"latent": f"float32 (batch, {dim}), codes of images (posterior means, "
                                            f"their interpolations, mixture samples)"},
                       "outputs": {"image": image}},
        PRIOR_DECODER_ONNX: {"inputs": {"latent": f"float32 (batch, {dim}), N(0, I) draws"},
                             "outputs": {"image": image}},
    }
    jobs = [(ENCODER_ONNX, _Posterior(vae.encoder).eval(), torch.zeros(2, 3, res, res)),
            (DECODER_ONNX, vae.decoder, torch.zeros(2, dim)),
            (PRIOR_DECODER_ONNX, _PriorDecoder(vae.decoder).eval(), torch.zeros(2, dim))]
    for name, module, example in jobs:
        inputs, outputs = list(files[name]["inputs"]), list(files[name]["outputs"])
        try:
            with atomic_path(out / name, suffix=".onnx") as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=inputs, output_names=outputs, do_constant_folding=True,
                                  dynamic_axes={n: {0: "batch"} for n in inputs + outputs})
        except ImportError as e:
            raise VaeganError(f"ONNX export needs a package that is missing ({e}): pip install 'vaegan[onnx]'") \
                from None
    return {"opset": opset, "files": files}
