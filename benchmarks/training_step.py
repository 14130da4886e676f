"""One training step of lvbench against the same step written by hand in plain torch, side by side.

The IWAE paper's VAE (784-200-200-50, tanh, Bernoulli), a batch of 100 binary points, IWAE-k (default
k = 5) with reparameterized gradients and Adam: one forward pass, one backward pass, one Adam step.
  - plain torch: nn.Linear layers, tanh, binary_cross_entropy_with_logits, logsumexp, backward, Adam;
  - lvbench.gradient_step with the registered ``reparam`` estimator (the step ``train_vae`` and every
    training-study cell take);
  - a training study's loop (``lvbench.analysis.learning.train_curve``: minibatches, evaluation counting),
    seconds per step from its own clock, evaluation excluded.
Blocks of steps alternate between the contestants (in turn first); each reports its best block (milliseconds per step).

    python benchmarks/training_step.py                     # about a minute on 2 cores
    python benchmarks/training_step.py --threads 1 --k 50
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from lvbench.analysis.learning import Evaluator, LearningRun, gradient_step, train_curve
from lvbench.compute.provenance import machine_info
from lvbench.core.registry import get_estimator
from lvbench.models import VAE


class PlainVAE(nn.Module):
    """The same VAE as the obvious hand-written torch module."""

    def __init__(self, data_dim=784, latent_dim=50, hidden=200):
        super().__init__()
        self.latent_dim = latent_dim
        self.enc = nn.Sequential(
            nn.Linear(data_dim, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 2 * latent_dim),
        )
        self.dec = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, data_dim)
        )

    def iwae(self, x: torch.Tensor, k: int) -> torch.Tensor:
        mu, log_var = self.enc(x).chunk(2, dim=-1)
        std = (0.5 * log_var).exp()
        eps = torch.randn(k, *mu.shape)
        z = mu + std * eps
        logits = self.dec(z)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        c = 0.5 * self.latent_dim * math.log(2 * math.pi)
        log_pz = -0.5 * z.square().sum(-1) - c
        log_qz = -0.5 * eps.square().sum(-1) - std.log().sum(-1) - c
        lw = log_px_z + log_pz - log_qz
        return (torch.logsumexp(lw, 0) - math.log(k)).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((args.batch, 784), 0.3))
    data = torch.bernoulli(torch.full((10 * args.batch, 784), 0.3))
    plain = PlainVAE()
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    model = VAE(784, 50, (200, 200), "tanh", "bernoulli")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    reparam = get_estimator("reparam")

    def plain_block() -> None:
        for _ in range(args.steps):
            plain_opt.zero_grad(set_to_none=True)
            (-plain.iwae(x, args.k)).backward()
            plain_opt.step()

    def lvbench_block() -> None:
        for _ in range(args.steps):
            gradient_step(reparam, model, x, args.k, "iwae", opt)

    study_model = VAE(784, 50, (200, 200), "tanh", "bernoulli")
    study_seconds: list[float] = []

    def study_block() -> None:
        run = LearningRun("reparam", args.k, "iwae", args.steps, (0, args.steps), lr=1e-3, batch_size=args.batch)
        evaluator = Evaluator(
            data[:2], data[:2], "iwae", args.k, seed=0, heldout_estimator={"estimator": "iwae", "k": 2}
        )
        rows = train_curve(study_model, data, run, evaluator, data_seed=0, draw_seed=1)
        study_seconds.append(rows[-1]["seconds"])

    times: dict[str, list[float]] = {"plain torch": [], "lvbench gradient_step": []}
    plain_block(), lvbench_block(), study_block()  # warm-up
    study_seconds.clear()
    contestants = [("plain torch", plain_block), ("lvbench gradient_step", lvbench_block)]
    for i in range(args.blocks):
        for name, block in contestants if i % 2 == 0 else contestants[::-1]:  # neither always goes first
            start = time.perf_counter()
            block()
            times[name].append(time.perf_counter() - start)
        study_block()
    ms = {name: 1000 * min(t) / args.steps for name, t in times.items()}
    ms["lvbench training-study loop"] = 1000 * min(study_seconds) / args.steps
    base = ms["plain torch"]
    print(f"IWAE-{args.k} step, batch {args.batch}, 784-200-200-50 VAE, Adam, {args.threads} thread(s)")
    for name, value in ms.items():
        print(f"  {name:30s} {value:7.2f} ms/step   ratio to plain torch {value / base:.3f}")
    machine = machine_info()
    print(json.dumps({"ms_per_step": ms, "cpu": machine.get("cpu"), "route": machine.get("route")}))


if __name__ == "__main__":
    main()
