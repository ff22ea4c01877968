"""Command line: ``vaegan <command> ...``. Each command parses arguments and calls one function.

A :class:`~vaegan.errors.VaeganError` (bad input, a missing file, a failed run) is printed as
``vaegan <command>: error: <message>`` with exit status 2; any other exception is a bug and
keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from vaegan.errors import VaeganError
from vaegan.threads import apply_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaegan", description="Train and use VAE-GAN image generators.")
    sub = parser.add_subparsers(dest="command", required=True)

    for register in _command_groups():
        register(sub)
    for command in sub.choices.values():
        command.add_argument("--threads", type=_thread_count, default="auto",
                             help="CPU threads: auto (the CPUs this process may use; see README) or a number "
                                  "(for train: the same as train.threads=N)")
    return parser


def _thread_count(text: str) -> int | str:
    if text == "auto" or (text.isdigit() and int(text) >= 1):
        return text if text == "auto" else int(text)
    raise argparse.ArgumentTypeError(f"expected auto or a whole number >= 1, got {text!r}")


def _command_groups():
    """Each group's subcommands live in the module named for what they drive."""
    from vaegan.cli import eval as cli_eval
    from vaegan.cli import tools as cli_tools
    from vaegan.cli import train as cli_train

    return [cli_train.register, cli_tools.register, cli_eval.register]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "train":  # train applies train.threads (which --threads sets) itself, with the tuner
        line = apply_threads(args.threads)
        if args.threads != "auto":
            print(line, file=sys.stderr)
    try:
        return args.func(args)
    except VaeganError as e:
        print(f"vaegan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
