"""The model card (``README.md``) and preview grids that make an export folder a Hub model repo.

``vaegan export`` writes, beside ``model.safetensors`` and ``config.json``:

- ``samples.png``: 64 prior samples (latents from the exported fitted prior, else N(0, I); seed 0), 8 per row;
- ``reconstructions.png``: 32 held-out images of the model's own dataset (``split:test``), each
  beside its reconstruction from the posterior mean; skipped, and the card says why, when the
  dataset cannot be read here;
- ``metrics.json``: the evaluation found for the run (``vaegan fid --out`` or ``vaegan compare``),
  copied as it was written;
- ``README.md``: YAML front matter the Hub reads (``library_name: vaegan``, tags, the dataset,
  a license placeholder, metrics and a ``model-index``), then what the model is, how it was
  trained, what was measured under which protocol, the grids and a loading example.

:func:`read_metrics` reads both metrics formats into one :class:`Metrics`; :func:`model_card`
renders the card from what the export knows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vaegan.config import Config
from vaegan.errors import InputError, MissingFileError, VaeganError
from vaegan.storage.hub import REPO_PLACEHOLDER  # replaced by the repo's id on `vaegan push`

CARD_FILE, SAMPLES_FILE, RECON_FILE, METRICS_FILE = "README.md", "samples.png", "reconstructions.png", "metrics.json"
SAMPLE_SEED, NUM_SAMPLES, NUM_RECON = 0, 64, 32
RECON_SOURCE = "split:test"
LICENSE_PLACEHOLDER = "set-a-license-before-publishing"
PAPER = "https://arxiv.org/abs/1512.09300"

# (key in a metrics record, label, model-index type, format, lower is better?)
_SAMPLE_METRICS = [
    ("fid", "FID", "fid", "{:.2f}", True),
    ("kid_mean", "KID", "kid", "{:.5f}", True),
    ("precision", "precision", "precision", "{:.3f}", False),
    ("recall", "recall", "recall", "{:.3f}", False),
    ("SWDx1e3_avg", "SWD ×10³ (average over levels)", "swd", "{:.2f}", True),
    ("hf_ratio", "sharpness (HF energy / real; 1 = real)", "sharpness", "{:.3f}", None),
]
_RECON_METRICS = [
    ("psnr", "reconstruction PSNR (dB)", "psnr", "{:.2f}", False),
    ("ssim", "reconstruction SSIM", "ssim", "{:.3f}", False),
    ("recon_hf_ratio", "reconstruction sharpness (HF energy / real)", "sharpness", "{:.3f}", None),
]


@dataclass
class Metric:
    label: str
    type: str  # model-index metric type
    value: float
    text: str  # formatted for the card's table
    of: str  # "samples" | "reconstructions"
    better: str  # "lower" | "higher" | "closer to 1"


@dataclass
class Metrics:
    """What was measured and how: the values, the protocol record, the file they came from."""

    values: list[Metric]
    protocol: dict
    file: Path
    evaluated: str = ""  # the checkpoint or run the file says it evaluated
    note: str | None = None  # e.g. why FID was not computed
    record: dict = field(default_factory=dict)  # the file's JSON, copied into the export


def run_folder(source: str | Path) -> Path:
    """The run folder of a checkpoint folder (``RUN/checkpoints/step-N`` -> ``RUN``); other folders as they are."""
    source = Path(source)
    if source.is_file():
        source = source.parent
    return source.parent.parent if source.parent.name == "checkpoints" else source


def find_metrics(source: str | Path) -> Path | None:
    """``metrics.json`` of the run (or export folder) ``source`` belongs to, or None."""
    path = run_folder(source) / METRICS_FILE
    return path if path.is_file() else None


def read_metrics(path: str | Path, source: str | Path, explicit: bool = True) -> Metrics | None:
    """Metrics of the model at ``source`` from a ``vaegan fid --out`` or ``vaegan compare``/``summarize``
    ``metrics.json`` (a folder holding one works too).

    A compare file holding several runs gives the run whose path is ``source``'s run, checkpoint or
    export folder (or the only run). When none fits: InputError if ``explicit``, else None (a file
    found in the run folder that is about other models is left out of the card).
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise MissingFileError(f"metrics file not found: {path} (expected the metrics.json that "
                               f"'vaegan fid --out FILE' or 'vaegan compare --out DIR' writes)")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(record, dict) or not isinstance(record.get("protocol"), dict):
        raise InputError(f"{path}: expected the metrics.json of 'vaegan fid' or 'vaegan compare' "
                         f"(an object with a 'protocol' section)")
    protocol = record["protocol"]
    if isinstance(record.get("runs"), dict):  # compare / summarize
        run = _pick_run(record["runs"], source)
        if run is None:
            if not explicit:
                return None
            raise InputError(f"{path} holds runs {sorted(record['runs'])}, none of them {source}; pass the "
                             f"metrics.json of an evaluation of this model")
        name, entry = run
        values = _values(entry.get("metrics", {}), _SAMPLE_METRICS + _RECON_METRICS,
                         {k for k, *_ in _RECON_METRICS})
        return Metrics(values, protocol, path, str(entry.get("path", name)), record.get("feature_note"), record)
    if isinstance(record.get("samples"), dict):  # fid
        values = _values(record["samples"], _SAMPLE_METRICS, set())
        if isinstance(record.get("recon"), dict):
            values += [Metric(f"{m.label} of reconstructions", m.type, m.value, m.text, "reconstructions", m.better)
                       for m in _values(record["recon"], _SAMPLE_METRICS, set())]
        return Metrics(values, protocol, path, str(record.get("checkpoint", "")), None, record)
    raise InputError(f"{path}: neither a 'vaegan fid' record (with 'samples') nor a 'vaegan compare' one "
                     f"(with 'runs')")


def _pick_run(runs: dict, source: str | Path) -> tuple[str, dict] | None:
    if len(runs) == 1:
        return next(iter(runs.items()))
    mine = {_resolved(p) for p in (source, run_folder(source))}
    for name, entry in runs.items():
        if isinstance(entry, dict) and _resolved(entry.get("path", "")) in mine:
            return name, entry
    return None


def _resolved(path) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError, TypeError):
        return str(path)


def _values(found: dict, table: list, recon_keys: set) -> list[Metric]:
    values = []
    for key, label, kind, fmt, lower in table:
        value = found.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        text = fmt.format(value)
        if key == "kid_mean" and isinstance(found.get("kid_std"), (int, float)):
            text += f" ± {fmt.format(found['kid_std'])}"
        better = "closer to 1" if lower is None else "lower" if lower else "higher"
        values.append(Metric(label, kind, float(value), text, "reconstructions" if key in recon_keys else "samples",
                             better))
    return values


# ---------------------------------------------------------------------------------------------- the card

def model_card(cfg: Config, provenance: dict, training: dict, files: dict, metrics: Metrics | None,
               recon_note: str | None, onnx: dict | None, source: str, discriminator: bool = False) -> str:
    """The README.md of an export folder.

    provenance: the weights' metadata (step, weights, precision, batch_size, images_seen);
    training: ``{"loss": {...}, "optim": {...}, "train": {...}}`` from the run's config (empty
    when the source does not record it); files: ``{"samples": name, "reconstructions": name or
    None, "prior": "mixture" (samples.png from the exported prior) or "normal"}``; recon_note: why
    there is no reconstruction grid; onnx: the ONNX files' description
    (:func:`vaegan.storage.export.export_onnx`) or None; discriminator: the weights include it.
    """
    kind = "VAE-GAN" if cfg.model.kind == "vaegan" else "VAE"
    res = cfg.data.resolution
    dataset = _dataset_name(cfg)
    front = _front_matter(cfg, metrics, kind, dataset)
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [f"# {kind} image generator, {res}x{res} ({dataset})", ""]
    lines += _what_it_is(cfg, kind, discriminator)
    lines += ["", "## Use", "", "```python", "import vaegan",
              f'vae, config, _, info = vaegan.load_pretrained("hf://{REPO_PLACEHOLDER}")  # or this folder\'s path',
              *([f'prior = vaegan.load_prior("hf://{REPO_PLACEHOLDER}", vae.latent_dim, info)  # the fitted mixture',
                 f"images = vaegan.sample(vae, 16, seed=0, prior=prior)  # uint8 (16, 3, {res}, {res}); "
                 f"prior=None: N(0, I)"] if files.get("prior") == "mixture" else
                [f"images = vaegan.sample(vae, 16, seed=0)  # uint8 (16, 3, {res}, {res})"]), "```", "",
              f"The same from the command line: `vaegan sample --checkpoint hf://{REPO_PLACEHOLDER} --n 16 --out "
              f"faces.png`. Every vaegan command takes `--checkpoint hf://{REPO_PLACEHOLDER}[@REVISION]` "
              f"(`pip install 'vaegan[hub]'`); loading reads only safetensors and JSON, no pickle.", ""]
    lines += _grids(files, recon_note, cfg)
    lines += _training(cfg, provenance, training, source)
    lines += _evaluation(metrics)
    if onnx:
        lines += _onnx(onnx)
    lines += _files(files, onnx, metrics, discriminator)
    lines += ["## License", "",
              f"**Not set yet**: replace `license: other` / `license_name: {LICENSE_PLACEHOLDER}` in the "
              f"front matter with the license you publish these weights under."
              + (" CelebA's images are for non-commercial research purposes only (see the CelebA "
                 "agreement); weights trained on them inherit that restriction."
                 if cfg.data.dataset == "celeba" else ""), ""]
    return "\n".join(lines)


def _dataset_name(cfg: Config) -> str:
    return {"celeba": "CelebA", "faces": "vaegan's built-in procedural faces"}.get(
        cfg.data.dataset, f"an image folder ({Path(cfg.data.root).name or cfg.data.root})")


def _front_matter(cfg: Config, metrics: Metrics | None, kind: str, dataset: str) -> dict:
    tags = ["vaegan", "vae"] + (["gan", "vae-gan"] if cfg.model.kind == "vaegan" else []) + \
        ["image-generation", "unconditional-image-generation", "pytorch", "safetensors"]
    if cfg.data.dataset in ("celeba", "faces"):
        tags.append("faces")
    front: dict = {"library_name": "vaegan", "pipeline_tag": "unconditional-image-generation", "tags": tags}
    if cfg.data.dataset == "celeba":
        front["datasets"] = ["celeba"]
    front["license"] = "other"
    front["license_name"] = LICENSE_PLACEHOLDER
    if metrics and metrics.values:
        front["metrics"] = sorted({m.type for m in metrics.values})
        front["model-index"] = [{"name": f"vaegan-{cfg.model.kind}-{cfg.data.resolution}px", "results": [{
            "task": {"type": "unconditional-image-generation", "name": "Unconditional image generation"},
            "dataset": {"type": "celeba" if cfg.data.dataset == "celeba" else cfg.data.dataset,
                        "name": f"{dataset}, {metrics.protocol.get('reference') or 'reference set'}"},
            "metrics": [{"type": m.type, "value": round(m.value, 6), "name": m.label + (
                " of reconstructions" if m.of == "reconstructions" and "reconstruction" not in m.label else "")}
                for m in metrics.values]}]}]
    return front


def _what_it_is(cfg: Config, kind: str, discriminator: bool) -> list[str]:
    m, res = cfg.model, cfg.data.resolution
    what = (f"A {kind} after Larsen et al. 2016, [*Autoencoding beyond pixels using a learned similarity "
            f"metric*]({PAPER}), trained with the vaegan toolkit. ")
    if m.kind == "vaegan":
        what += ("Its decoder doubles as a GAN generator, and the discriminator's intermediate features replace "
                 "pixel error as the reconstruction loss. ")
    else:
        what += "A plain VAE (Gaussian pixel likelihood), the baseline of the VAE-GAN. "
    what += "This repo holds the encoder and the decoder" + (" (and the discriminator)" if discriminator else "") + ":"
    return [what, "",
            f"- **Encoder**: an RGB image (3, {res}, {res}) in [-1, 1] -> a diagonal Gaussian posterior over a "
            f"{m.latent_dim}-d latent (mean and log-variance, clamped to [{m.logvar_min:g}, {m.logvar_max:g}]).",
            f"- **Decoder** (the generator): a {m.latent_dim}-d latent -> an RGB image (3, {res}, {res}) in "
            f"[-1, 1]; latents from N(0, I) give new images.",
            f"- Networks: width x{m.width:g}, {m.norm} norm, decoder upsampling `{m.upsample}`; the full settings "
            f"are in `config.json` (`model` and `data`)."]


_SAMPLE_PRIORS = {"normal": "N(0, I)",
                  "mixture": "the Gaussian mixture fitted to the training codes (`latent_prior.safetensors`, as "
                             "`vaegan sample` draws them; `--prior normal` for N(0, I))"}


def _grids(files: dict, recon_note: str | None, cfg: Config) -> list[str]:
    lines = ["## Samples", "", f"![prior samples]({files['samples']})", "",
             f"{NUM_SAMPLES} decodings of latents drawn from {_SAMPLE_PRIORS[files.get('prior', 'normal')]} "
             f"(seed {SAMPLE_SEED}), not cherry-picked.", ""]
    lines += ["## Reconstructions", ""]
    if files.get("reconstructions"):
        held_out = ("held-out images (the test split)" if cfg.data.dataset != "folder" else
                    "images of the training folder (a folder dataset has no held-out split)")
        lines += [f"![reconstructions]({files['reconstructions']})", "",
                  f"The first {NUM_RECON} {held_out} of {_dataset_name(cfg)}, each followed by its reconstruction "
                  f"from the posterior mean.", ""]
    else:
        lines += [f"No reconstruction grid: {recon_note}", ""]
    return lines


def _training(cfg: Config, provenance: dict, training: dict, source: str) -> list[str]:
    d = cfg.data
    rows = [("dataset", _dataset_name(cfg) + (f", split `{d.split}`" if d.dataset != "folder" else "")),
            ("resolution", f"{d.resolution}x{d.resolution}" + (
                f" (CelebA crop {d.crop} px, top {d.crop_top if d.crop_top >= 0 else 'centred'})"
                if d.dataset == "celeba" and d.crop else "")),
            ("horizontal flips", "yes" if d.hflip else "no")]
    for key, label in (("step", "training steps"), ("images_seen", "images seen (steps x batch size)"),
                       ("batch_size", "batch size"), ("precision", "precision")):
        if provenance.get(key) not in (None, ""):
            rows.append((label, str(provenance[key])))
    if provenance.get("weights"):
        rows.append(("weights", "EMA of the training weights" if provenance["weights"] == "ema" else
                     "the training weights (no EMA)"))
    loss, optim, train = training.get("loss"), training.get("optim"), training.get("train") or {}
    if loss:
        rows += _loss_rows(cfg, loss)
    if optim:
        lr = f"lr {optim.get('lr')}" + (f", discriminator lr {optim['lr_dis']}" if optim.get("lr_dis") else "")
        rows.append(("optimizer", f"{optim.get('name')} ({lr})"))
        if optim.get("lr_warmup_steps") or optim.get("lr_schedule", "constant") != "constant":
            schedule = optim.get("lr_schedule", "constant")
            text = schedule if schedule == "constant" else f"{schedule} to {optim.get('lr_final')} x lr"
            warm = optim.get("lr_warmup_steps")
            rows.append(("learning-rate schedule", text + (f" after {warm} warm-up steps" if warm else "")))
    if train.get("ema_decay"):
        rows.append(("EMA decay", str(train["ema_decay"])))
    lines = ["## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", f"Exported from `{source}`." + ("" if loss else
                                                   " The source does not record its loss settings."), ""]
    return lines


def _loss_rows(cfg: Config, loss: dict) -> list[tuple[str, str]]:
    rows = [("KL weight (beta)", str(loss.get("beta")))]
    if loss.get("kl_warmup_steps"):
        rows.append(("KL warm-up steps", str(loss["kl_warmup_steps"])))
    if loss.get("mmd_weight"):
        rows.append(("MMD of the codes against N(0, I)", f"weight {loss['mmd_weight']}"))
    if loss.get("agg_kl_weight"):
        rows.append(("aggregate posterior's KL to N(0, I)", f"weight {loss['agg_kl_weight']}"))
    if cfg.model.kind == "vae":
        rows.append(("reconstruction loss", f"{loss.get('recon')} pixel likelihood"))
        return rows
    layers = loss.get("feature_layers", 1)
    rec = "Dis_l (discriminator features)" if layers == 1 else \
        f"Dis_l and the {layers - 1} finer discriminator layer{'s' if layers > 2 else ''} (averaged)"
    if loss.get("pixel_weight"):
        rec += f" + {loss['pixel_weight']} x {loss.get('recon')} pixel loss"
    adv = f"{loss.get('adversarial')}, weight {loss.get('adv_weight')}" + (
        " x adaptive" if loss.get("adaptive_weight") else "")
    rows += [("reconstruction loss", rec), ("gamma (decoder's weight on rec)", str(loss.get("gamma"))),
             ("adversarial loss", adv), ("discriminator's fakes", str(loss.get("fake_sources")))]
    if loss.get("prior_adv_weight", 1.0) != 1.0:
        rows.append(("adversarial weight of prior samples", f"{loss['prior_adv_weight']} x reconstructions'"))
    if loss.get("warm_start_steps"):
        rows.append(("VAE warm start", f"first {loss['warm_start_steps']} steps as the plain VAE"))
    if loss.get("adv_start_step"):
        rows.append(("adversarial start step", str(loss["adv_start_step"])))
    if loss.get("dis_augment"):
        rows.append(("discriminator augmentation", f"DiffAugment {loss['dis_augment']}"))
    if loss.get("r1_gamma"):
        rows.append(("R1 penalty", f"gamma {loss['r1_gamma']} every {loss.get('r1_every_steps')} steps"))
    if loss.get("equilibrium"):
        rows.append(("equilibrium rule", f"target {loss.get('equilibrium_target')}, margin "
                                         f"{loss.get('equilibrium_margin')}"))
    return rows


def _evaluation(metrics: Metrics | None) -> list[str]:
    lines = ["## Evaluation", ""]
    if metrics is None or not metrics.values:
        return lines + ["Not evaluated: the run folder held no `metrics.json`. Measure it with `vaegan fid "
                        "--checkpoint RUN --out RUN/metrics.json` (or `vaegan compare --runs RUN --out RUN`) and "
                        "export again, or pass `--metrics FILE` to `vaegan export`.", ""]
    p = metrics.protocol
    lines += ["| metric | of | value | better |", "|---|---|---|---|"]
    lines += [f"| {m.label} | {m.of} | {m.text} | {m.better} |" for m in metrics.values]
    latents = "the fitted mixture, " if p.get("prior") == "gmm" else ""  # older records: N(0, I)
    protocol = [f"{p.get('num_samples')} prior samples (latents from {latents}seed {p.get('seed')})",
                f"against {p.get('num_reference')} reference images: {p.get('reference')}"
                + (f" at {p['resolution']} px" if p.get("resolution") else "")]
    if p.get("extractor"):
        protocol.append(f"FID/KID/precision/recall on {p['extractor']} features (torch-fidelity)")
    lines += ["", "Protocol: " + "; ".join(protocol) + ". Reconstructions are of the reference images, from "
              "the posterior mean. SWD is the sliced Wasserstein distance of Laplacian-pyramid patches (Karras "
              "et al. 2018); sharpness is the high-frequency spectral energy relative to real images.",
              "", f"Measured by `vaegan {'fid' if 'runs' not in metrics.record else 'compare'}` on "
              f"`{metrics.evaluated}`; the record is `metrics.json`"
              + (f" (reference sha256 {str(p['reference_sha256'])[:16]}…)" if p.get("reference_sha256") else "")
              + "."]
    if metrics.note:
        lines += ["", f"Not computed: {metrics.note.splitlines()[0]}"]
    return lines + [""]


def _onnx(onnx: dict) -> list[str]:
    lines = ["## ONNX", "",
             f"`encoder.onnx`, `decoder.onnx` and `prior_decoder.onnx` (opset {onnx['opset']}, float32, dynamic batch "
             f"axis `batch`) run "
             f"without torch, e.g. with onnxruntime:", "",
             "| file | input | output |", "|---|---|---|"]
    for name, spec in onnx["files"].items():
        inputs = ", ".join(f"`{k}` {v}" for k, v in spec["inputs"].items())
        outputs = ", ".join(f"`{k}` {v}" for k, v in spec["outputs"].items())
        lines.append(f"| `{name}` | {inputs} | {outputs} |")
    lines += ["", "Images are float32 (N, 3, R, R), RGB, channels first, in [-1, 1]: `x = pixels / 127.5 - 1` "
              "and back `pixels = round((x + 1) * 127.5)` clipped to [0, 255]. To sample, feed `prior_decoder.onnx` "
              "latents from a standard normal; `decoder.onnx` decodes codes of images (its batch norms use the "
              "statistics of those codes, `prior_decoder.onnx`'s those of N(0, I) draws), and latents drawn from "
              "`latent_prior.safetensors` where there is one (component k with probability `weights[k]`, then "
              "`means[k] + scale_tril[k] @ eps`, eps standard normal).", ""]
    return lines


def _files(files: dict, onnx: dict | None, metrics: Metrics | None, discriminator: bool) -> list[str]:
    lines = ["## Files", "",
             "- `model.safetensors`: encoder (`encoder.*`) and decoder (`decoder.*`) weights"
             + (", discriminator (`discriminator.*`)" if discriminator else "")
             + "; its metadata records the training provenance and loss settings",
             "- `config.json`: what rebuilds the networks (`model`) and reads images for them (`data`)",
             f"- `{files['samples']}`" + (f", `{files['reconstructions']}`" if files.get("reconstructions") else "")
             + ": the grids above"]
    if files.get("prior") == "mixture":
        lines.append("- `latent_prior.safetensors`: a Gaussian mixture fitted to the training images' codes "
                     "(`weights` (K,), `means` (K, D), `scale_tril` (K, D, D)), where `vaegan sample` draws latents")
    if metrics:
        lines.append("- `metrics.json`: the evaluation record")
    if onnx:
        lines.append("- `encoder.onnx`, `decoder.onnx`, `prior_decoder.onnx`: the same networks for ONNX runtimes")
    return lines + [""]


def describe_failure(error: Exception) -> str:
    """One line for the card saying why the reconstruction grid could not be made."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    kind = "" if isinstance(error, VaeganError) else f"{type(error).__name__}: "
    return f"the model's dataset could not be read when this folder was exported ({kind}{text})."
