"""SyncBatchNorm on 2 processes equals BatchNorm on the global batch: driven by tests/test_distributed.py.

    torchrun --nproc_per_node 2 tests/syncbn_worker.py OUT

Each rank normalises its half of a global batch; rank 0 checks outputs, input and parameter
gradients and running statistics (and, for a batch of N(0, I) draws, the decoder's prior
statistics) against one BatchNorm over the whole batch, and writes
OUT/syncbn.json with the largest differences.
"""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from vaegan.models.layers import BatchNorm, sync_batchnorm

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
result = {}
for shape in ((8, 6, 5, 5), (8, 6)):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 3 + 1
    weight = torch.randn(shape, generator=g)  # the loss sum(y * weight) gives every output its own gradient
    reference, synced = BatchNorm(6), sync_batchnorm(BatchNorm(6))
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5, generator=g)
        reference.bias.normal_(generator=g)
    synced.load_state_dict(reference.state_dict())

    x_ref = x.clone().requires_grad_()
    y_ref = reference(x_ref)
    (y_ref * weight).sum().backward()

    half = shape[0] // world
    rows = slice(rank * half, (rank + 1) * half)
    x_mine = x[rows].clone().requires_grad_()
    y = synced(x_mine)
    (y * weight[rows]).sum().backward()
    for p in synced.parameters():  # what data-parallel training sums (then averages) over ranks
        dist.all_reduce(p.grad)
    y_all, gx_all = [torch.empty_like(y) for _ in range(world)], [torch.empty_like(y) for _ in range(world)]
    dist.all_gather(y_all, y.detach())
    dist.all_gather(gx_all, x_mine.grad)

    # The decoder's norms: a batch of N(0, I) draws (from_prior) trains the prior set alone, on the global batch.
    prior_ref = BatchNorm(6, prior_statistics=True)
    prior_ref.load_state_dict(reference.state_dict(), strict=False)
    prior_synced = sync_batchnorm(BatchNorm(6, prior_statistics=True))
    prior_synced.load_state_dict(prior_ref.state_dict())
    with torch.no_grad():
        y_prior_ref = prior_ref(x, from_prior=True)
        y_prior = prior_synced(x[rows], from_prior=True)
    y_prior_all = [torch.empty_like(y_prior) for _ in range(world)]
    dist.all_gather(y_prior_all, y_prior)

    plain = BatchNorm(6)  # per-rank statistics: what the check must be able to tell apart
    plain.load_state_dict(reference.state_dict())
    y_plain = plain(x[rows])
    diffs = {
        "output": (torch.cat(y_all) - y_ref.detach()).abs().max(),
        "input_grad": (torch.cat(gx_all) - x_ref.grad).abs().max(),
        "weight_grad": (synced.weight.grad - reference.weight.grad).abs().max(),
        "bias_grad": (synced.bias.grad - reference.bias.grad).abs().max(),
        "running_mean": (synced.running_mean - reference.running_mean).abs().max(),
        "running_var": (synced.running_var - reference.running_var).abs().max(),
        "prior_output": (torch.cat(y_prior_all) - y_prior_ref).abs().max(),
        "prior_mean": (prior_synced.prior_mean - prior_ref.prior_mean).abs().max(),
        "prior_var": (prior_synced.prior_var - prior_ref.prior_var).abs().max(),
        "prior_count": (prior_synced.prior_batches_tracked - 1).abs(),
        "data_stats_left_alone": ((prior_synced.running_mean - reference.running_mean).abs().max()
                                  + (prior_synced.running_var - reference.running_var).abs().max()
                                  + (prior_synced.num_batches_tracked - reference.num_batches_tracked).abs()),
        "per_rank_output": (y_plain - y_ref.detach()[rows]).abs().max(),
    }
    result[f"{len(shape)}d"] = {k: float(v) for k, v in diffs.items()}
if rank == 0:
    Path(sys.argv[1], "syncbn.json").write_text(json.dumps(result, indent=1))
dist.destroy_process_group()
