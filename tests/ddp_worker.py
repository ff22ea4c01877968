"""Run a few training steps and dump this rank's weights: driven by tests/test_distributed.py.

    accelerate launch --cpu --num_processes 2 tests/ddp_worker.py OUT [overrides...]
    python tests/ddp_worker.py OUT [overrides...]        # the single-process reference
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_config  # noqa: E402

from vaegan.trainer import Trainer  # noqa: E402

out = Path(sys.argv[1])
cfg = tiny_config("model.norm=group", "train.precision=fp32", "train.max_steps=4", "train.batch_size=16",
                  "train.checkpoint_every_steps=0", "loss.fake_sources=both", *sys.argv[2:])
trainer = Trainer(cfg, out / "run")
rank = trainer.accelerator.process_index


def weights() -> dict:
    return {f"{net}.{k}": v.detach().cpu().clone().contiguous()
            for net, module in trainer.nets.items()
            for k, v in trainer.accelerator.unwrap_model(module).state_dict().items()}


initial = weights()
trainer.fit()
save_file(initial, str(out / f"rank{rank}-initial.safetensors"))
save_file(weights(), str(out / f"rank{rank}.safetensors"))
torch.distributed.barrier() if torch.distributed.is_initialized() else None
