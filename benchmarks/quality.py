"""Real-face quality at equal compute: the VAE-GAN against the plain VAE trained by the same code.

    python benchmarks/quality.py --out runs/quality                      # 64 px, CelebA subset, CPU
    python benchmarks/quality.py --out runs/quality --budget-pflop 20 --device cuda

Both models train on the train split of a CelebA-layout folder (default: the shared subset)
for the same training compute, counted in floating-point operations of the forward and
backward passes (torch's FlopCounterMode over one training step of each model, times steps),
so the comparison does not depend on how busy the machine is. Each model is evaluated at
``--evals`` points along its budget on the held-out test split, under one protocol: the same
seed, the test images as reference (read by the same cached reader that feeds training),
prior samples from N(0, I) and from a Gaussian mixture fitted to the training codes
(``vaegan.models.gmm``), reconstructions of the test images. Metrics: SWD per pyramid level,
sample sharpness (high-frequency fraction / real), grid-peak ratio (checkerboard, / real),
pixel FD at 8x8, reconstruction PSNR/SSIM and sharpness, FID/KID with ``--inception-weights``;
of the training codes, the aggregate posterior's KL to N(0, I) and the active units
(``vaegan.metrics.latent``).

Writes OUT/quality.json, OUT/quality.md (the tables), OUT/curves.png (metrics against compute),
OUT/samples-normal.png, OUT/samples-gmm.png and OUT/recon.png (the models side by side). Runs
resume: a finished model is not trained again, so ``--models vae --train-only`` and ``--models
vaegan --train-only`` can run as two processes (one thread each) and a last call with
``--no-train`` writes the report (without ``--train-only`` each would go on to evaluate every run
in the folder). A larger ``--budget-pflop`` continues a finished run from its last checkpoint,
with ``--evals`` points over the new budget (``--budget-pflop 1 --evals 2``, then
``--budget-pflop 2 --evals 4``: the points fall at 0.5, 1.0, 1.5 and 2.0 PFLOP).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vaegan.storage.checkpoint import list_checkpoints  # noqa: E402
from vaegan.config import load_config  # noqa: E402
from vaegan.data.cache import CachedImages, prepare, read_header  # noqa: E402
from vaegan.data import build_dataset  # noqa: E402
from vaegan.metrics.quick import image_metrics  # noqa: E402
from vaegan.images import save_image, to_float  # noqa: E402
from vaegan.models.gmm import fit_gmm  # noqa: E402
from vaegan.models.inference import decode_latents, encode_images, reconstruct  # noqa: E402
from vaegan.metrics.swd import compute_swd, pyramid_resolutions  # noqa: E402
from vaegan.metrics.latent import aggregate_posterior_stats  # noqa: E402
from vaegan.storage.pretrained import load_pretrained  # noqa: E402
from vaegan.evaluation.report import side_by_side  # noqa: E402
from vaegan.training.ema import recalibrate_batchnorm  # noqa: E402
from vaegan.training.trainer import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "celeba-subset"
CONFIGS = {"vae": ROOT / "configs" / "celeba64_vae.yaml", "vaegan": ROOT / "configs" / "celeba64_vaegan_plus.yaml"}


def headline(resolution: int) -> list[str]:
    swd = [f"SWDx1e3_{r}" for r in pyramid_resolutions(resolution)]
    # recon_grid_peak_ratio beside recon_hf_ratio: reconstruction "sharpness" that is grid speckle shows there
    return [*swd, "SWDx1e3_avg", "hf_ratio", "grid_peak_ratio", "pixel_fd", "psnr", "ssim", "recon_hf_ratio",
            "recon_grid_peak_ratio"]


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (0 evaluation points or draws would divide by zero or do nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (caches, runs, report)")
    p.add_argument("--root", default=str(DEFAULT_DATA), help="CelebA-layout folder (img_align_celeba/, list_eval_partition.txt)")
    p.add_argument("--resolution", type=int, default=64, choices=(32, 64, 128))
    p.add_argument("--budget-pflop", type=float, default=1.2,
                   help="training compute per model in PFLOP (1e15). At 64 px a VAE step is 0.21 TFLOP, a "
                        "recommended VAE-GAN step 0.78: 1.2 PFLOP is 5,600 and 1,500 steps, for both as two "
                        "one-thread processes on a 2-core CPU about an hour with AMX, two with AVX-512 BF16 alone, "
                        "and about twelve on an AVX2-only CPU, which trains in fp32")
    p.add_argument("--evals", type=positive_int, default=4, help="evaluation points along the budget (the curve)")
    p.add_argument("--models", default="vae,vaegan",
                   help="runs to train now, comma-separated: vae, vaegan, vae-<variant> or vaegan-<variant> (the "
                        "VAE or VAE-GAN config with that run's --set overrides, e.g. a second seed)")
    p.add_argument("--vae-config", default=str(CONFIGS["vae"]))
    p.add_argument("--vaegan-config", default=str(CONFIGS["vaegan"]))
    p.add_argument("--set", action="append", default=[], metavar="RUN:KEY=VALUE",
                   help="config override for one run, e.g. vaegan-g01:loss.gamma=0.1 (repeatable)")
    p.add_argument("--num-images", type=positive_int, default=660, help="test images (and samples) evaluated")
    p.add_argument("--swd-draws", type=positive_int, default=1,
                   help="N(0, I) sample sets per evaluation: SWD is their mean, with its standard deviation "
                        "across draws (the evaluation's own noise) as SWDx1e3_<level>_sd")
    p.add_argument("--gmm-components", type=positive_int, default=10)
    p.add_argument("--inception-weights", help="pt_inception-2015-12-05 weights file, for FID/KID")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("config", "fp32", "bf16"), default="config",
                   help="train.precision of every run (config: the presets' auto, bf16 where it is native, else "
                        "fp32); the FLOP budget does not depend on it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recalibrate", action="store_true",
                   help="recompute each model's batch-norm statistics from 256 training images before evaluating, "
                        "as the trainer does at every save: brings checkpoints saved before the decoder kept "
                        "statistics of N(0, I) draws apart from the data's to today's (README)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-train", action="store_true", help="only evaluate the runs that exist")
    mode.add_argument("--train-only", action="store_true",
                      help="train the --models runs and stop, evaluating nothing (runs trained as separate "
                           "processes; a last call with --no-train reports them all)")
    return p.parse_args(argv)


def caches(args) -> dict[str, Path]:
    """Prepared uint8 caches of the train and test splits (made once)."""
    out = {}
    for split in ("train", "test"):
        path = Path(args.out) / "cache" / f"celeba{args.resolution}-{split}.u8"
        try:
            read_header(path)
        except (FileNotFoundError, ValueError):
            cfg = load_config(CONFIGS["vae"], [f"data.root={args.root}", f"data.resolution={args.resolution}",
                                               f"data.split={split}"])
            prepare(build_dataset(cfg.data), path, num_workers=0)
        out[split] = path
    return out


def model_config(args, name: str, cache: Path, steps: int | None = None):
    overrides = [f"data.root={args.root}", f"data.cache={cache}", f"data.resolution={args.resolution}",
                 "data.num_workers=0", f"train.out_dir={Path(args.out) / 'runs'}", f"train.run_name={name}",
                 "train.tensorboard=false", "train.progress=false", "train.sample_every_steps=0",
                 f"train.seed={args.seed}"]
    overrides += [f"train.precision={args.precision}"] if args.precision != "config" else []
    overrides += [s.split(":", 1)[1] for s in args.set if s.split(":", 1)[0] == name]
    if steps is not None:
        every = max(1, steps // args.evals)
        overrides += [f"train.max_steps={steps}", f"train.checkpoint_every_steps={every}",
                      f"train.keep_checkpoints={args.evals + 1}"]
    path = args.vae_config if family(name) == "vae" else args.vaegan_config
    return load_config(path, overrides)


def family(name: str) -> str | None:
    """"vae" for vae and vae-<variant>, "vaegan" for vaegan and vaegan-<variant>, else None."""
    return next((f for f in ("vae", "vaegan") if name == f or name.startswith(f + "-")), None)


def step_flops(cfg, tmp: Path, step: int = 0) -> float:
    """Forward + backward FLOPs of one training step at ``step`` (torch's FlopCounterMode; convs
    and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer = Trainer(cfg, tmp)
    images = torch.stack([trainer.dataset[i] for i in range(trainer.local_batch)])
    trainer.step = step
    trainer.train_step(images)  # the first step allocates; count the second, at the same step
    trainer.step = step
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(images)
    return float(counter.get_total_flops())


def flops_at(info: dict, step: int) -> float:
    """Training FLOPs of a run after ``step`` steps: a VAE-GAN's warm-start steps
    (``loss.warm_start_steps``) cost a plain VAE step each."""
    warm = min(step, info.get("warm_steps", 0))
    return warm * info.get("warm_step_flops", 0.0) + (step - warm) * info["step_flops"]


def budget(args, name: str, cache: Path) -> dict:
    """Steps that spend ``--budget-pflop``, a multiple of ``--evals`` (every eval point a checkpoint)."""
    cfg = model_config(args, name, cache)
    warm = cfg.loss.warm_start_steps if cfg.model.kind == "vaegan" else 0
    tmp = Path(args.out) / "flops" / name
    info = {"step_flops": step_flops(cfg, tmp, step=warm)}
    budget_flops = args.budget_pflop * 1e15
    if warm:
        info.update(warm_steps=warm, warm_step_flops=step_flops(cfg, tmp))
        if flops_at(info, warm) >= budget_flops:
            raise SystemExit(f"{name}: loss.warm_start_steps={warm} alone spends {flops_at(info, warm) / 1e15:.2f} "
                             f"PFLOP, more than --budget-pflop {args.budget_pflop}")
    return {**info, "steps": budget_steps(args, info), "budget_pflop": args.budget_pflop}


def budget_steps(args, info: dict) -> int:
    """The steps of ``info``'s run that spend ``--budget-pflop``, a multiple of ``--evals``."""
    warm = info.get("warm_steps", 0)
    steps = warm + int((args.budget_pflop * 1e15 - flops_at(info, warm)) / info["step_flops"])
    return max(args.evals, steps // args.evals * args.evals)


def train(args, name: str, cache: Path) -> dict:
    run_dir = Path(args.out) / "runs" / name
    info_path = run_dir / "budget.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if args.budget_pflop > info["budget_pflop"] * 1.001 and not args.no_train:  # a larger budget: go on
            info.update(steps=budget_steps(args, info), budget_pflop=args.budget_pflop, finished=False)
            info_path.write_text(json.dumps(info, indent=2))
    else:
        info = {**budget(args, name, cache), "finished": False}
        run_dir.mkdir(parents=True, exist_ok=True)
        info_path.write_text(json.dumps(info, indent=2))  # an unfinished run can be reported as far as it got
    cfg = model_config(args, name, cache, info["steps"])
    if args.no_train or (list_checkpoints(run_dir) and list_checkpoints(run_dir)[-1].name == f"step-{info['steps']:08d}"):
        return info
    resume = bool(list_checkpoints(run_dir))
    start = time.perf_counter()
    Trainer(cfg, run_dir, resume=resume).fit()
    info["train_seconds"] = info.get("train_seconds", 0.0) * resume + time.perf_counter() - start
    info.update(threads=torch.get_num_threads(), finished=True)
    info_path.write_text(json.dumps(info, indent=2))
    return info


@torch.no_grad()
def evaluate(checkpoint: Path, train_images: torch.Tensor, test_images: torch.Tensor, args) -> dict:
    vae = load_pretrained(checkpoint, args.device).vae
    if args.recalibrate:
        recalibrate_batchnorm(vae.encoder, vae.decoder, to_float(train_images[:256]).to(args.device), vae.latent_dim)
    n = min(args.num_images, len(test_images))
    reference = test_images[:n]
    recon = reconstruct(vae, reference)
    codes = encode_images(vae, train_images)
    gmm = fit_gmm(codes.mean, args.gmm_components, seed=args.seed)
    # One sampler per prior: the first draw (seed --seed) is kept and pictured, --swd-draws adds more.
    draw = {"normal": lambda g: decode_latents(vae, torch.randn(n, vae.latent_dim, generator=g), from_prior=True),
            "gmm": lambda g: decode_latents(vae, gmm.sample(n, g))}
    normal, mixture = (draw[k](torch.Generator().manual_seed(args.seed)) for k in ("normal", "gmm"))
    out = {"latent": aggregate_posterior_stats(codes)}
    for prior, samples in (("normal", normal), ("gmm", mixture)):
        m = image_metrics(samples, recon, reference, seed=args.seed)
        if args.swd_draws > 1:
            m.update(swd_spread(draw[prior], reference, m, args))
        if args.inception_weights:
            from vaegan.evaluation.evaluate import feature_extractor, feature_metrics
            m.update(feature_metrics(samples, reference, feature_extractor(None, args.inception_weights, args.device)))
        out[prior] = m
    out["images"] = {"normal": normal[:64], "gmm": mixture[:64], "recon": torch.stack([reference[:32], recon[:32]], 1).flatten(0, 1)}
    return out


def swd_spread(draw, reference: torch.Tensor, first: dict, args) -> dict:
    """SWD of ``--swd-draws`` sample sets (the first already in ``first``, drawn with ``--seed``; the
    others by ``draw(generator)`` seeded with the next seeds): each level's mean and standard deviation."""
    draws = [{k: v for k, v in first.items() if k.startswith("SWDx1e3_")}]
    for seed in range(args.seed + 1, args.seed + args.swd_draws):
        draws.append(compute_swd(draw(torch.Generator().manual_seed(seed)), reference, seed=seed))
    out = {}
    for key in draws[0]:
        values = torch.tensor([d[key] for d in draws], dtype=torch.float64)
        out.update({key: values.mean().item(), f"{key}_sd": values.std().item()})
    return out


def cached_evaluation(path: Path, checkpoint: Path, train_images, test_images, args) -> dict:
    """``evaluate``, kept in PATH.json / PATH.safetensors so that a later report does not redo it
    (the protocol's arguments are part of the key)."""
    key = {k: getattr(args, k) for k in ("num_images", "gmm_components", "seed", "inception_weights")}
    if args.swd_draws != 1:  # (evaluations cached before the option existed used one draw)
        key["swd_draws"] = args.swd_draws
    if args.recalibrate:
        key["recalibrate"] = True
    meta, tensors = Path(f"{path}.json"), Path(f"{path}.safetensors")
    if meta.exists() and tensors.exists():
        cached = json.loads(meta.read_text())
        spread = args.swd_draws == 1 or "SWDx1e3_avg_sd" in cached["metrics"]["gmm"]
        if cached["key"] == key and "latent" in cached["metrics"] and spread:  # (older evaluations lack them: redone)
            return {**cached["metrics"], "images": load_file(str(tensors))}
    point = evaluate(checkpoint, train_images, test_images, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in point["images"].items()}, str(tensors))
    meta.write_text(json.dumps({"key": key, "metrics": {k: v for k, v in point.items() if k != "images"}}))
    return point


def fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def common_points(results: dict) -> dict[str, dict]:
    """Each run's last evaluation at the largest compute every run has reached (equal FLOPs)."""
    reached = min(res["curve"][-1]["pflop"] for res in results.values())
    return {name: [p for p in res["curve"] if p["pflop"] <= reached * 1.01][-1] for name, res in results.items()}


def report(args, results: dict) -> str:
    lines, keys = [], headline(args.resolution)
    swd = [k for k in keys if k.startswith("SWDx1e3_") and k != "SWDx1e3_avg"]
    points = common_points(results)
    for prior in ("normal", "gmm"):
        lines += [f"\n### Prior samples from {'N(0, I)' if prior == 'normal' else 'the fitted Gaussian mixture'}, "
                  f"at {min(p['pflop'] for p in points.values()):.2f} PFLOP each\n",
                  "| model | step | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
        for name, point in points.items():
            values = " | ".join(fmt(point[prior].get(k, float("nan"))) for k in keys)
            lines.append(f"| {name} | {point['step']} | {values} |")
    lines += ["\n### Along the budget (hf, grid: N(0, I) samples; agg. KL and active: the training codes, "
              "vaegan.metrics.latent)\n",
              f"| model | step | PFLOP | SWD {'/'.join(k[8:] for k in swd)}, N(0, I) | mixture | hf | grid | PSNR | "
              "agg. KL | active |", "|---" * 10 + "|"]
    for name, res in results.items():
        for point in res["curve"]:
            m, latent = point["normal"], point.get("latent", {})  # (evaluations cached before it: absent)
            lines.append(f"| {name} | {point['step']} | {point['pflop']:.2f} | "
                         f"{' / '.join(_mean_sd(m, k) for k in swd)} | "
                         f"{' / '.join(_mean_sd(point['gmm'], k) for k in swd)} | {m['hf_ratio']:.2f} | "
                         f"{m['grid_peak_ratio']:.2f} | {m['psnr']:.2f} | "
                         f"{fmt(latent.get('aggregate_kl', '-'))} | {latent.get('active_units', '-')} |")
    return "\n".join(lines) + "\n"


def _mean_sd(m: dict, key: str) -> str:
    return f"{m[key]:.1f}" + (f" ± {m[key + '_sd']:.1f}" if key + "_sd" in m else "")


def plot(results: dict, path: Path, resolution: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in headline(resolution) if k.startswith("SWDx1e3_") and k != "SWDx1e3_avg"][:3]
    keys += ["hf_ratio", "grid_peak_ratio", "psnr"]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, key in zip(axes.flat, keys):
        for name, res in results.items():
            for prior, style in (("normal", "-o"), ("gmm", "--s")):
                xs = [p["pflop"] for p in res["curve"]]
                ax.plot(xs, [p[prior][key] for p in res["curve"]], style, label=f"{name} ({prior})", markersize=4)
        ax.set_title(key)
        ax.set_xlabel("training PFLOP")
        if key in ("hf_ratio", "grid_peak_ratio"):
            ax.axhline(1.0, color="grey", lw=0.8)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",") if not args.no_train else []
    for name in names:  # before anything is prepared or trained
        if family(name) is None:
            raise SystemExit(f"--models: {name!r} is not vae, vaegan, vae-<variant> or vaegan-<variant>")
    paths = caches(args)
    for name in names:
        train(args, name, paths["train"])
    if args.train_only:
        return 0
    # Every finished run in the folder is reported: the VAE runs first, then the VAE-GAN runs.
    budgets = {d.name: json.loads((d / "budget.json").read_text())
               for d in sorted((out / "runs").glob("*"), key=lambda d: (family(d.name) != "vae", d.name))
               if (d / "budget.json").exists()}
    if not budgets:
        raise SystemExit(f"{out / 'runs'}: no runs to report; train some with --models (without --no-train)")
    train_images, test_images = (CachedImages(paths[s]).get_batch(range(len(CachedImages(paths[s]))))
                                 for s in ("train", "test"))
    results = {}
    for name, info in budgets.items():
        curve = []
        for ckpt in list_checkpoints(out / "runs" / name):
            step = int(ckpt.name.split("-")[1])
            point = cached_evaluation(out / "eval" / f"{name}-{ckpt.name}", ckpt, train_images, test_images, args)
            point.update(step=step, pflop=flops_at(info, step) / 1e15)
            curve.append(point)
        results[name] = {"budget": info, "curve": curve}
    points = common_points(results)
    grids = {k: side_by_side([p["images"][k] for p in points.values()], list(points), nrow=8)
             for k in ("normal", "gmm", "recon")}
    for k, grid in grids.items():
        save_image(grid, out / f"{'recon' if k == 'recon' else 'samples-' + k}.png")
    for res in results.values():
        for point in res["curve"]:
            point.pop("images")
    (out / "quality.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    table = report(args, results)
    (out / "quality.md").write_text(table)
    plot(results, out / "curves.png", args.resolution)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
