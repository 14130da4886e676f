"""Learning curves: train a model with one gradient estimator (or EM) and evaluate it along the way.

One run is a sequence of Adam steps on a minibatch of the training data, each the gradient of the
estimator's surrogate of the objective (ELBO_k or IWAE_k, averaged over the batch): one forward pass,
one backward pass, one optimizer step. At the evaluation steps (log-spaced by default, step 0 being the
initial model) it records, on data the run never trains on, held-out log p(x) (exact where the model has
``log_marginal``, else a named likelihood estimator), with its standard error over points, plus training
metrics. Costs are counted, not guessed: seconds of training (evaluation excluded) and model
evaluations, the number of (z, x) pairs whose log p(x, z) the gradient estimator computed (an ARM draw
costs two, enumeration 2^L per point).

Every random draw comes from one of three seeds: ``init_seed`` (the caller's initialization),
``data_seed`` (the minibatch order and each epoch's binarization, a function of (seed, epoch) alone) and
``draw_seed`` (the estimator's samples). Evaluations draw from seeds of their own, so they do not
disturb the run. A run hands its whole state (step, weights, optimizer, generator, rows) to ``save`` at
every evaluation; resumed from it, it produces the very rows an uninterrupted run does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lvbench.analysis.anchors import PPCAOptimum, em_step
from lvbench.compute.measure import sync
from lvbench.core.errors import LvbenchInputError
from lvbench.core.protocol import capabilities_of, inference_parameters
from lvbench.core.registry import Entry, get_estimator
from lvbench.core.seeding import seeded
from lvbench.data import BinarizedImages
from lvbench.estimators.gradient.common import batch_objective

__all__ = [
    "BASELINES",
    "EvaluationCounter",
    "Evaluator",
    "LearningRun",
    "evaluation_steps",
    "gradient_step",
    "train_curve",
]

#: Training methods that are not gradient estimators: name -> what they need of the model.
BASELINES = {"em": "a gaussian_mixture (exact E-step, closed-form M-step)"}


def sub_seed(*parts: Any) -> int:
    """A 31-bit seed that is a function of ``parts`` alone."""
    return int(hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:8], 16) % 2**31


def evaluation_steps(steps: int, evaluations: int) -> tuple[int, ...]:
    """Step 0 and ``evaluations - 1`` log-spaced steps up to ``steps`` (rounded, without repeats)."""
    if steps < 1 or evaluations < 2:
        raise LvbenchInputError(f"need steps >= 1 and evaluations >= 2, got {steps} and {evaluations}")
    spaced = np.unique(np.round(np.geomspace(1, steps, evaluations - 1)).astype(int))
    return (0, *(int(s) for s in spaced))


def gradient_step(
    estimator: Entry, model: torch.nn.Module, x: torch.Tensor, k: int, objective: str, optimizer, **options: Any
) -> torch.Tensor:
    """One training step: the estimator's surrogate on ``x``, its backward pass, one optimizer step
    (ascending the objective). Returns the surrogate's value, detached."""
    optimizer.zero_grad(set_to_none=True)
    surrogate = estimator(model, x, num_samples=k, objective=objective, **options)
    (-surrogate).backward()
    optimizer.step()
    return surrogate.detach()


class EvaluationCounter:
    """Counts model evaluations while ``active``: each (z, x) pair whose log p(x, z) the model computes
    (through ``log_joint``, the closures of ``conditioned_log_joint``, counted once even where they call
    ``log_joint`` themselves, or ``relaxed_likelihood`` for a relaxed latent). A pair evaluated with its
    gradient (an HMC step) counts once."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.count, self.active = model, 0, False

    def __enter__(self) -> EvaluationCounter:
        log_joint = self.model.log_joint
        conditioned = getattr(self.model, "conditioned_log_joint", None)

        def counted_log_joint(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return self._count(log_joint, x, z)

        self.model.log_joint = counted_log_joint
        if conditioned is not None:

            def counted_conditioned(x: torch.Tensor):
                inner = conditioned(x)
                return lambda z: self._count(inner, z)

            self.model.conditioned_log_joint = counted_conditioned
        relaxed = getattr(self.model, "relaxed_likelihood", None)
        if relaxed is not None:

            def counted_relaxed(z_soft: torch.Tensor):
                self.count += z_soft.shape[:-1].numel() if self.active else 0
                return relaxed(z_soft)

            self.model.relaxed_likelihood = counted_relaxed
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("log_joint", "conditioned_log_joint", "relaxed_likelihood"):
            self.model.__dict__.pop(name, None)

    def _count(self, evaluate: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        """``evaluate(*args)``, its pairs counted once: a log_joint that calls conditioned_log_joint (or
        the reverse) inside is not counted again."""
        active, self.active = self.active, False
        try:
            out = evaluate(*args)
        finally:
            self.active = active
        self.count += out.numel() if self.active else 0
        return out

    @contextmanager
    def counting(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False


@dataclass
class Evaluator:
    """What a learning curve records at each evaluation step, with standard errors over points.

    - ``heldout_log_px``: mean log p(x) over ``heldout`` (exact, or ``heldout_estimator`` with its options);
    - ``train_log_px``: the same on ``train`` where exact;
    - ``train_objective``: the study's objective (ELBO_k / IWAE_k with the encoder) on ``train``;
    - ``excess_nll``: nats per point by which the model's train log-likelihood falls short of the PPCA
      optimum ``optimum`` (where given);
    - ``grad_trace_variance``, ``grad_mean_norm``: tr Var and ‖mean‖ of ``gradient_draws`` estimates of the
      θ-gradient on the first ``gradient_points`` training points (where asked).
    """

    heldout: torch.Tensor
    train: torch.Tensor
    objective: str
    k: int
    seed: int
    heldout_estimator: dict[str, Any] = field(default_factory=lambda: {"estimator": "iwae", "k": 1000})
    optimum: PPCAOptimum | None = None
    gradient_draws: int = 0
    gradient_points: int = 100

    def heldout_name(self, model: torch.nn.Module) -> str:
        if "exact_marginal" in capabilities_of(model):
            return "exact log p(x)"
        opts = dict(self.heldout_estimator)
        name, k = opts.pop("estimator"), opts.pop("k")
        extra = "".join(f", {key}={value}" for key, value in sorted(opts.items()))
        return f"{name} (k={k}{extra})"

    def _log_px(self, model, x: torch.Tensor) -> torch.Tensor | None:
        if "exact_marginal" in capabilities_of(model):
            return model.log_marginal(x).double()
        if x is self.train:
            return None
        opts = dict(self.heldout_estimator)
        name, k = opts.pop("estimator"), int(opts.pop("k"))
        return get_estimator(name)(model, x, num_samples=k, **opts).double()

    def __call__(self, model: torch.nn.Module, step: int, estimator: Entry | None, options: dict) -> dict:
        out: dict[str, tuple[float, float]] = {}
        with seeded(sub_seed("evaluation", self.seed, step)), torch.no_grad():
            for name, x in (("heldout_log_px", self.heldout), ("train_log_px", self.train)):
                values = self._log_px(model, x)
                if values is not None:
                    out[name] = _mean_se(values)
            if getattr(model, "encoder", None) is not None:
                q = model.encoder(self.train)
                z = q.sample((self.k,))
                out["train_objective"] = _mean_se(
                    batch_objective(model.log_joint(self.train, z) - q.log_prob(z), self.objective)
                )
            if self.optimum is not None:
                out["excess_nll"] = (self.optimum.mean_log_likelihood - out["train_log_px"][0], 0.0)
        if self.gradient_draws >= 2 and estimator is not None:
            with seeded(sub_seed("gradient variance", self.seed, step)):
                out.update(self._gradient_variance(model, estimator, options))
        return out

    def _gradient_variance(self, model, estimator: Entry, options: dict) -> dict[str, tuple[float, float]]:
        phi = {id(p) for p in inference_parameters(model)}
        theta = [p for p in model.parameters() if id(p) not in phi]
        x = self.train[: self.gradient_points]
        draws = []
        for _ in range(self.gradient_draws):
            surrogate = estimator(model, x, num_samples=self.k, objective=self.objective, **options)
            grads = torch.autograd.grad(surrogate, theta, allow_unused=True)
            draws.append(
                torch.cat(
                    [(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, theta, strict=True)]
                )
            )
        g = torch.stack(draws).double()
        return {
            "grad_trace_variance": (float(g.var(0).sum()), math.nan),
            "grad_mean_norm": (float(g.mean(0).norm()), math.nan),
        }


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    n = values.numel()
    return float(values.mean()), float(values.std() / math.sqrt(n)) if n > 1 else math.nan


@dataclass
class LearningRun:
    """One learning curve's settings: the method (a gradient estimator's name or a baseline in
    ``BASELINES``), its sample budget and objective, Adam's step size, the minibatch size, the budgets
    (``steps``, and optionally ``seconds`` of training) and the steps to evaluate at."""

    method: str
    k: int
    objective: str
    steps: int
    eval_steps: tuple[int, ...]
    lr: float = 1e-3
    batch_size: int = 100
    seconds: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


class _Minibatches:
    """The minibatch of step t (1-based): a function of (data_seed, t) alone, so a resumed run sees the
    very batches an uninterrupted one does. Epoch e permutes the points (and draws a fresh binarization
    of a dynamic set) with a seed of (data_seed, e); an epoch is ⌊N / B⌋ full batches."""

    def __init__(self, data: BinarizedImages | torch.Tensor, batch_size: int, seed: int, device, dtype):
        self.data, self.seed, self.device, self.dtype = data, seed, device, dtype
        self.n = len(data) if isinstance(data, BinarizedImages) else data.shape[0]
        self.batch = min(batch_size, self.n)
        self.per_epoch = self.n // self.batch
        self._epoch: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, j = divmod(step - 1, self.per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            g = torch.Generator().manual_seed(sub_seed("epoch", self.seed, epoch))
            x = self.data.epoch(g) if isinstance(self.data, BinarizedImages) else self.data
            order = torch.randperm(self.n, generator=g)
            self._epoch = (epoch, x.to(device=self.device, dtype=self.dtype), order.to(self.device))
        _, x, order = self._epoch
        return x[order[j * self.batch : (j + 1) * self.batch]]


def train_curve(
    model: torch.nn.Module,
    data: BinarizedImages | torch.Tensor,
    run: LearningRun,
    evaluate: Evaluator,
    data_seed: int,
    draw_seed: int,
    state: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    on_evaluation: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place by ``run`` and return the learning curve as rows (step, seconds,
    evaluations, metric, value, se); ``state`` (from ``save``) resumes a run where it was saved."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    em = run.method in BASELINES
    estimator = None if em else get_estimator(run.method)
    if estimator is not None and estimator.kind != "gradient":
        raise LvbenchInputError(f"{run.method!r} is not a gradient estimator (nor one of {sorted(BASELINES)})")
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=run.lr) if not em else None
    batches = _Minibatches(data, run.batch_size, data_seed, device, dtype)
    full = None  # EM steps on the whole fixed training set; gradient steps on minibatches
    if em:
        full = (data.tensor() if isinstance(data, BinarizedImages) else data).to(device=device, dtype=dtype)
    rows: list[dict[str, Any]] = []
    step, seconds, evaluations = 0, 0.0, 0
    with seeded(draw_seed), EvaluationCounter(model) as counter:
        if state is not None:
            model.load_state_dict(state["model"])
            if optimizer is not None:
                optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            if device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            step, seconds, rows = state["step"], state["seconds"], list(state["rows"])
            counter.count = evaluations = state["evaluations"]
        pending = [s for s in run.eval_steps if s > step or (s == 0 and not rows)]
        while pending:
            target = pending.pop(0)
            sync(device)
            start = time.perf_counter()
            while step < target:
                if run.seconds is not None and seconds + time.perf_counter() - start >= run.seconds:
                    pending = []  # the time budget is spent: this evaluation is the last
                    break
                step += 1
                if em:
                    em_step(model, full)
                    counter.count += full.shape[0] * model.num_components
                else:
                    with counter.counting():
                        gradient_step(estimator, model, batches(step), run.k, run.objective, optimizer, **run.options)
            sync(device)
            seconds += time.perf_counter() - start
            evaluations = counter.count
            metrics = evaluate(model, step, estimator, run.options)
            bad = [name for name, (value, _) in metrics.items() if not math.isfinite(value)]
            if bad:
                raise LvbenchInputError(
                    f"{run.method}: {', '.join(bad)} not finite at step {step} (diverged? lower lr)"
                )
            rows += [
                {"step": step, "seconds": seconds, "evaluations": evaluations, "metric": m, "value": v, "se": se}
                for m, (v, se) in metrics.items()
            ]
            on_evaluation()
            if save is not None and pending:
                save(
                    {
                        "step": step,
                        "seconds": seconds,
                        "evaluations": evaluations,
                        "rows": list(rows),  # a copy: the run goes on appending to its own
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                        # a copy: state_dict() holds the live moment tensors, which the next step changes
                        "optimizer": copy.deepcopy(optimizer.state_dict()) if optimizer is not None else {},
                        "rng": torch.get_rng_state(),
                        **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                    }
                )
    return rows
