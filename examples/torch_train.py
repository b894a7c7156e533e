"""A PyTorch training loop that checkpoints with ckptdb and resumes exactly.

    PYTHONPATH=build/python /usr/bin/python3 examples/torch_train.py --workdir /tmp/run

Trains a small MLP with Adam on a synthetic regression task, saving the
model's and the optimizer's state every --save-every steps (asynchronously:
training goes on while ckptdb writes). Run it again with the same --workdir
after it was killed (--kill-after N kills it with SIGKILL after step N, as a
preempted job dies) and it resumes from the latest checkpoint: each step's
batch depends only on the step number, so the resumed run ends with the very
bits an uninterrupted run ends with. Prints the step it resumed from and the
SHA-256 of the final parameters.
"""

import argparse
import hashlib
import os
import signal

import torch

import ckptdb
import ckptdb.pytorch


def batch(step):
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(64, 16, generator=generator)
    return x, torch.sin(x.sum(dim=1, keepdim=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--kill-after", type=int, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    with ckptdb.Checkpointer(args.workdir, save_interval_steps=args.save_every,
                             max_to_keep=2) as ckpt:
        first = 0
        if ckpt.latest_step is not None:
            last, _ = ckptdb.pytorch.restore(ckpt, model=model, optimizer=optimizer)
            first = last + 1
            print(f"resumed from step {last}", flush=True)
        for step in range(first, args.steps):
            x, y = batch(step)
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            ckptdb.pytorch.save(ckpt, step=step, model=model, optimizer=optimizer,
                                metrics={"loss": loss.item()})
            if step == args.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.numpy().tobytes())
    print(f"final {digest.hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
