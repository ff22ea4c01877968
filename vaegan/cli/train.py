"""Subcommands that train: train (or resume) a run, prepare a dataset cache."""
from __future__ import annotations

import argparse
from pathlib import Path

from vaegan.config import ConfigError


def cmd_train(args: argparse.Namespace) -> int:
    from vaegan.config import load_config, parse_override, apply, validate
    from vaegan.storage.configs import read_run_config
    from vaegan.training.trainer import Trainer

    if args.resume:
        run_dir = Path(args.resume)
        cfg = read_run_config(run_dir)
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


def register(sub) -> None:
    """Add this group's subcommands to the vaegan parser."""
    p = sub.add_parser("train", help="train a VAE or VAE-GAN from a config")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--resume", metavar="RUN", help="continue a run folder from its latest checkpoint")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=100")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prepare", help="decode/crop/resize a dataset once into a uint8 cache")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="cache file to write")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_prepare)
