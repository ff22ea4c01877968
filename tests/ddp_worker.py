"""Run a few training steps and dump this rank's weights: driven by tests/test_distributed.py.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT [flags] [overrides...]
    python tests/ddp_worker.py OUT [flags] [overrides...]        # the single-process reference

Flags:
    --perturb=SEED   multiply every initial weight by (1 + 1e-7 * N(0, 1)) drawn from SEED: the same
                     run up to a rounding-sized change, to measure how far rounding alone carries
    --no-sync        skip the gradient all-reduce (each rank learns from its own half batch): the
                     bug the comparison must catch
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_config  # noqa: E402

from vaegan.training.trainer import Trainer  # noqa: E402

out = Path(sys.argv[1])
flags = dict(a[2:].partition("=")[::2] for a in sys.argv[2:] if a.startswith("--"))
overrides = [a for a in sys.argv[2:] if not a.startswith("--")]
cfg = tiny_config("model.norm=group", "train.precision=fp32", "train.max_steps=4", "train.batch_size=16",
                  "train.checkpoint_every_steps=0", "loss.fake_sources=both", *overrides)
trainer = Trainer(cfg, out / "run")
rank = trainer.accelerator.process_index
unwrapped = {k: trainer.accelerator.unwrap_model(v) for k, v in trainer.nets.items()}
if "no-sync" in flags:
    trainer.nets.update(unwrapped)  # plain modules: no data-parallel gradient hooks
if "perturb" in flags:
    gen = torch.Generator().manual_seed(int(flags["perturb"]))
    with torch.no_grad():
        for module in unwrapped.values():
            for p in module.parameters():
                p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=gen))


def weights() -> dict:
    return {f"{net}.{k}": v.detach().cpu().clone().contiguous()
            for net, module in unwrapped.items() for k, v in module.state_dict().items()}


initial = weights()
trainer.fit()
save_file(initial, str(out / f"rank{rank}-initial.safetensors"))
save_file(weights(), str(out / f"rank{rank}.safetensors"))
torch.distributed.barrier() if torch.distributed.is_initialized() else None
