"""Data-parallel PyTorch training (DDP) under torchrun that checkpoints with
ckptdb from every rank and resumes exactly after a rank is killed.

    PYTHONPATH=build/python /usr/bin/python3 -m torch.distributed.run --standalone \\
        --redirects 1 --tee 1 --nproc_per_node 4 examples/torch_ddp_train.py --workdir /tmp/ddp_run

(Debian 12's torchrun, torch 1.13 under Python 3.11, fails with its default
--redirects 0; --redirects 1 --tee 1 works.)

Each rank trains the same MLP (wrapped in DistributedDataParallel, gloo on
CPU) on its quarter of each step's batch. Every --save-every steps, every
rank saves the model's and the optimizer's state through one ckptdb
checkpoint (ckptdb.MultiprocessingOptions over torch.distributed): the
replicated tensors are written once, by one rank, and the step commits when
all ranks have written. --kill-rank R --kill-after N kills rank R with
SIGKILL right after step N (torchrun then stops the others, as a preempted
job dies); started again with the same --workdir, the job resumes from the
latest checkpoint, and since each step's batch depends only on the step
number (and the resumed job first runs one iteration whose update it drops,
as DDP's first iteration rounds otherwise than the later ones), ends with the
very bits an uninterrupted run ends with. Rank 0 prints the step it resumed
from and the SHA-256 of the final parameters.
"""

import argparse
import hashlib
import os
import signal

import torch
import torch.distributed as dist

import ckptdb
import ckptdb.pytorch


def batch(step, rank, ranks):
    """This rank's share of step `step`'s batch (the same at every run)."""
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(64, 16, generator=generator)
    y = torch.sin(x.sum(dim=1, keepdim=True))
    share = 64 // ranks
    return x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--kill-rank", type=int, default=None)
    parser.add_argument("--kill-after", type=int, default=None)
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, ranks = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    with ckptdb.Checkpointer(args.workdir, save_interval_steps=args.save_every, max_to_keep=2,
                             multiprocessing_options=ckptdb.MultiprocessingOptions()) as ckpt:
        first = 0
        if ckpt.latest_step is not None:
            last, _ = ckptdb.pytorch.restore(ckpt, model=model, optimizer=optimizer)
            first = last + 1
            if rank == 0:
                print(f"resumed from step {last}", flush=True)
            # DDP reduces the gradients of its first iteration otherwise than
            # those of the later ones (it rearranges its buckets after it), in
            # other rounding. An iteration whose update is dropped puts the
            # resumed job where the uninterrupted one was, bit for bit.
            x, y = batch(first, rank, ranks)
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.zero_grad()
        for step in range(first, args.steps):
            x, y = batch(step, rank, ranks)
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            ckptdb.pytorch.save(ckpt, step=step, model=model, optimizer=optimizer)
            if rank == args.kill_rank and step == args.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    if rank == 0:
        digest = hashlib.sha256()
        for tensor in model.state_dict().values():
            digest.update(tensor.numpy().tobytes())
        print(f"final {digest.hexdigest()}", flush=True)
    # The DDP model goes before its process group (torch 1.13 can deadlock
    # at exit destroying them the other way round).
    del model, optimizer
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
