"""Fit a model's parameters by stochastic gradient ascent on a variational objective (Adam).

The gradient comes from any registered gradient estimator (default: pathwise ``reparam``), so the
ELBO, IWAE-k, DReG or score-function training all run through the same loop.
"""

from __future__ import annotations

import time

import pandas as pd
import torch
from tqdm.auto import tqdm

from lvbench.analysis.learning import gradient_step
from lvbench.core.protocol import capabilities_of, inference_parameters
from lvbench.core.registry import get_estimator
from lvbench.core.seeding import seeded
from lvbench.core.validation import LvbenchInputError, check_data, check_num_samples
from lvbench.data import BinarizedImages
from lvbench.estimators.gradient.common import batch_objective

__all__ = ["fit_encoder", "train_vae"]


def _epoch_data(data: BinarizedImages | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return data.epoch(generator) if isinstance(data, BinarizedImages) else data


def train_vae(
    model: torch.nn.Module,
    data: BinarizedImages | torch.Tensor,
    epochs: int = 50,
    objective: str = "elbo",
    k: int = 1,
    estimator: str = "reparam",
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    parameters: list[torch.nn.Parameter] | None = None,
) -> pd.DataFrame:
    """Train ``model`` (on its current device) and return per-epoch history: epoch, objective, seconds.

    ``objective`` per data point is averaged over each epoch's mini-batches (a noisy running value).
    Every random draw (data order, binarization, the estimator's samples) comes from ``seed``: the same
    call gives bit-identical weights whatever the process's random state, which it leaves as it was.
    """
    epochs = check_num_samples(epochs, "epochs")
    k = check_num_samples(k, "k")
    batch_size = check_num_samples(batch_size, "batch_size")
    grad_est = get_estimator(estimator)
    if grad_est.kind != "gradient":
        raise LvbenchInputError(f"{estimator!r} is not a gradient estimator")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    generator = torch.Generator().manual_seed(seed)
    params = list(model.parameters()) if parameters is None else parameters
    opt = torch.optim.Adam(params, lr=lr)
    history = []
    bar = tqdm(range(epochs), desc=f"train {objective}-{k}", disable=not progress, leave=False)
    with seeded(seed):
        for epoch in bar:
            start = time.perf_counter()
            x_all = _epoch_data(data, generator).to(device=device, dtype=dtype)
            check_data(x_all, model, getattr(model, "data_dim", None))
            order = torch.randperm(x_all.shape[0], generator=generator).to(device)
            total, count = 0.0, 0
            for i in range(0, x_all.shape[0], batch_size):
                x = x_all[order[i : i + batch_size]]
                surrogate = gradient_step(grad_est, model, x, k, objective, opt)
                if grad_est.surrogate_is_objective:  # its value is the objective's estimate already
                    value = float(surrogate)
                else:
                    with torch.no_grad():
                        value = float(_objective_value(model, x, k, objective))
                total += value * x.shape[0]
                count += x.shape[0]
            history.append({"epoch": epoch + 1, "objective": total / count, "seconds": time.perf_counter() - start})
            bar.set_postfix(objective=f"{total / count:.3f}")
    return pd.DataFrame(history)


def _objective_value(model, x: torch.Tensor, k: int, objective: str) -> torch.Tensor:
    q = model.encoder(x)
    z = q.sample((k,))
    return batch_objective(model.log_joint(x, z) - q.log_prob(z), objective).mean()


def fit_encoder(
    model: torch.nn.Module,
    x: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-2,
    k: int = 8,
    seed: int = 0,
) -> list[float]:
    """Fit only the encoder φ by maximizing the ELBO on ``x`` with θ fixed (an imperfect, realistic
    amortized proposal for toy models). Uses pathwise gradients where possible, else a leave-one-out
    score function. Returns the ELBO trace."""
    estimator = "reparam" if "reparameterizable" in capabilities_of(model) else "score_function_loo"
    est = get_estimator(estimator)
    trace = []
    with seeded(seed):
        opt = torch.optim.Adam(inference_parameters(model), lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            surrogate = est(model, x, num_samples=k, objective="elbo")
            phi = inference_parameters(model)
            grads = torch.autograd.grad(-surrogate, phi)
            for p, g in zip(phi, grads, strict=True):
                p.grad = g
            opt.step()
            trace.append(float(surrogate.detach()))
    return trace
