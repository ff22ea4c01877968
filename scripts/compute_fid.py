#!/usr/bin/env python
"""FID, KID and precision/recall of a trained model: the same command as ``vaegan fid``.

    python scripts/compute_fid.py --checkpoint runs/quickstart_vaegan --num-samples 10000 --out fid.json
"""
import sys

from vaegan.cli import main

if __name__ == "__main__":
    sys.exit(main(["fid", *sys.argv[1:]]))
