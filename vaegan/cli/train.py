"""Subcommands that train: train (or resume) a run, prepare a dataset cache."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from vaegan.config import ConfigError


def cmd_train(args: argparse.Namespace) -> int:
    from vaegan.config import load_config
    from vaegan.storage.checkpoint import has_checkpoint
    from vaegan.storage.configs import apply_resume_overrides, read_run_config
    from vaegan.training.trainer import Trainer

    if args.threads != "auto":  # --threads N is train.threads=N
        args.overrides = [*args.overrides, f"train.threads={args.threads}"]
    if args.resume:
        if args.config:
            raise ConfigError(f"--resume {args.resume} continues the run with the config saved in it, so --config "
                              f"{args.config} would be ignored: drop --config (change what a resume may change with "
                              f"overrides, e.g. train.max_steps=N), or drop --resume to start a new run")
        run_dir = Path(args.resume)
        cfg = apply_resume_overrides(read_run_config(run_dir), args.overrides)
    else:
        if not args.config:
            raise ConfigError("give --config FILE (see configs/) or --resume RUN")
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(cfg.train.out_dir) / (cfg.train.run_name or cfg.model.kind)
        blocker = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise ConfigError(f"train.out_dir={cfg.train.out_dir!r}: {blocker} is a file, not a folder; the run folder "
                              f"{run_dir} cannot be made there (choose another train.out_dir or train.run_name)")
        if run_dir.exists() and any(run_dir.iterdir()):
            again = f"vaegan train --resume {shlex.quote(str(run_dir))}"
            if has_checkpoint(run_dir):
                raise ConfigError(f"run folder {run_dir} already exists; resume it with: {again} "
                                  f"(or choose another train.run_name / train.out_dir)")
            raise ConfigError(f"run folder {run_dir} already exists but holds no checkpoint (the run stopped before "
                              f"its first one); restart it from step 0 with its saved config: {again} "
                              f"(or choose another train.run_name / train.out_dir)")
    result = Trainer(cfg, run_dir, resume=bool(args.resume)).fit()
    print(f"trained {result['step']} steps; run folder: {run_dir}")
    for name, path in result["grids"].items():
        print(f"  {name}: {path}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from vaegan.config import load_config
    from vaegan.data import build_dataset
    from vaegan.data.cache import prepare
    from vaegan.images import check_output_file

    check_output_file(args.out)  # before the dataset is read
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
    p.add_argument("--resume", metavar="RUN", help="continue a run folder from its newest intact checkpoint "
                   "(from step 0 if it stopped before its first)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=100")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prepare", help="decode/crop/resize a dataset once into a uint8 cache")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="cache file to write")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_prepare)
