"""Command line: ``vaegan <command> ...``. Each command parses arguments and calls one function."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaegan.config import ConfigError


def cmd_train(args: argparse.Namespace) -> int:
    from vaegan.config import load_config, parse_override, apply, validate
    from vaegan.training.trainer import Trainer, config_from_run

    if args.resume:
        run_dir = Path(args.resume)
        cfg = config_from_run(run_dir)
        for text in args.overrides:
            values = parse_override(text)
            if list(values) != ["train"]:
                raise ConfigError(f"override '{text}': only train.* keys can change on --resume")
            apply(cfg, values, origin=f"override '{text}'")
        validate(cfg)
    else:
        if not args.config:
            raise ConfigError("give --config FILE (see configs/) or --resume RUN")
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(cfg.train.out_dir) / (cfg.train.run_name or cfg.model.kind)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"run folder {run_dir} already exists; resume it with --resume {run_dir} "
                              f"or choose another train.run_name / train.out_dir")
    result = Trainer(cfg, run_dir, resume=bool(args.resume)).fit()
    print(f"trained {result['step']} steps; run folder: {run_dir}")
    for name, path in result["grids"].items():
        print(f"  {name}: {path}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from vaegan.tools.generate import sample_to_files

    paths = sample_to_files(args.checkpoint, args.n, args.out, seed=args.seed, individual=args.individual,
                            use_ema=not args.no_ema, prior=args.prior)
    print(f"wrote {len(paths)} file(s): {paths[0] if len(paths) == 1 else Path(args.out)}")
    return 0


def cmd_fit_prior(args: argparse.Namespace) -> int:
    from vaegan.tools.prior import fit_prior

    if args.components < 1 or (args.num_images is not None and args.num_images < args.components):
        raise ValueError(f"--components must be >= 1 and --num-images >= --components, got {args.components}, "
                         f"{args.num_images}")
    path = fit_prior(args.checkpoint, args.components, args.num_images, args.seed)
    print(f"wrote {path}; sample from it with: vaegan sample --checkpoint {args.checkpoint} --prior gmm --out OUT.png")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from vaegan.config import load_config
    from vaegan.data import build_dataset
    from vaegan.data.cache import prepare

    cfg = load_config(args.config, args.overrides)
    cfg.data.cache = ""
    dataset = build_dataset(cfg.data)
    prepare(dataset, args.out)
    print(f"prepared {len(dataset)} images at {cfg.data.resolution}px into {args.out}; "
          f"train with data.cache={args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaegan", description="Train and use VAE-GAN image generators.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a VAE or VAE-GAN from a config")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--resume", metavar="RUN", help="continue a run folder from its latest checkpoint")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=100")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw prior samples from a trained model")
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or export folder")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", required=True, help="grid PNG path, or a folder with --individual")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--individual", action="store_true", help="one PNG per sample in the --out folder")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even if an EMA exists")
    p.add_argument("--prior", choices=("normal", "gmm"), default="normal",
                   help="latents from N(0, I), or from the mixture 'vaegan fit-prior' fitted to the training codes")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("fit-prior", help="fit a Gaussian mixture to the training images' codes, for --prior gmm")
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or export folder")
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--num-images", type=int, help="use the first N training images (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_fit_prior)

    p = sub.add_parser("prepare", help="decode/crop/resize a dataset once into a uint8 cache")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="cache file to write")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_prepare)

    for register in _command_groups():
        register(sub)
    return parser


def _command_groups():
    """Subcommands that live beside the modules they drive (evaluation, model tools)."""
    from vaegan.cli import eval as cli_eval
    from vaegan.cli import tools as cli_tools

    return [cli_eval.register, cli_tools.register]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"vaegan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
