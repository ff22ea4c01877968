"""Data-parallel training on CPU (gloo, 2 processes) matches a single process on the same global batch."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).parent / "ddp_worker.py"
ROOT = Path(__file__).parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, out: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd + [str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    single, multi = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("multi")
    _run([sys.executable, str(WORKER)], single)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER)]
    _run(torchrun, multi)
    return single, multi


def test_every_rank_holds_identical_weights(runs):
    _, multi = runs
    a, b = load_file(str(multi / "rank0.safetensors")), load_file(str(multi / "rank1.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("discriminator.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_losses_match_single_process_on_the_global_batch(runs):
    single, multi = runs
    log = lambda d: [json.loads(line) for line in (d / "run" / "log.jsonl").read_text().splitlines()]
    one, two = log(single), log(multi)
    assert len(one) == len(two) == 4
    # Tolerance: only the order of floating-point sums differs (all-reduce vs one batch).
    for a, b in zip(one, two):
        for key in ("loss/kl", "loss/dis_l", "loss/gan", "loss/dis", "grad_norm/encoder", "grad_norm/decoder"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["step"], key)
    w1, w2 = load_file(str(single / "rank0.safetensors")), load_file(str(multi / "rank0.safetensors"))
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-3, atol=1e-4)
