"""Run one training-study cell: build the replicate's initial model, train it with the cell's method and
record its learning curve, saving the whole state at every evaluation under
``training/<cell id>.pt`` (tensors and plain values, read back with ``weights_only=True``), so a killed
cell resumes there and produces the rows an uninterrupted one does.

Data: a model that simulates its data (the toy models) is the truth a study's training and held-out sets
are drawn from (``train_points`` and ``heldout_points``, seeds the cell id covers); a model trained on a
dataset is trained on its training part and evaluated on its held-out part.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from lvbench.analysis.anchors import ppca_optimum
from lvbench.analysis.learning import BASELINES, Evaluator, LearningRun, sub_seed, train_curve
from lvbench.core.registry import get_estimator
from lvbench.core.seeding import seeded
from lvbench.data import load_dataset, sample_from_model
from lvbench.experiments.cells import Cell
from lvbench.experiments.prepare import DTYPES, PreparedModel, heldout_data, instantiate_type
from lvbench.experiments.store import StoreWarning, atomic_write
from lvbench.models.checkpoint import load_weights_only
from lvbench.models.linear_gaussian import LinearGaussian

__all__ = ["remove_training_state", "run_training_cell", "training_state_path"]

#: Training points the per-evaluation training metrics are computed on (the first of the fixed set).
TRAIN_EVALUATION_POINTS = 1000


def training_state_path(out_dir: str, cell_id: str) -> str:
    return os.path.join(out_dir, "training", f"{cell_id}.pt")


def remove_training_state(out_dir: str, cell_id: str) -> None:
    path = training_state_path(out_dir, cell_id)
    if os.path.exists(path):
        os.remove(path)


def _data(prepared: PreparedModel, study: dict[str, Any], dtype: torch.dtype):
    """(training data: a tensor or a dynamically binarized set, its fixed tensor, held-out points)."""
    data = study["data"]
    if data.get("simulate"):
        truth = prepared.model.to("cpu")
        train, _ = sample_from_model(truth, study["train_points"], seed=data["seed"])
        heldout, _ = sample_from_model(truth, study["heldout_points"], seed=data["seed"] + 1)
        train = train.detach().to(dtype)
        return train, train, heldout.detach().to(dtype)[: study["heldout_points"]]
    images = load_dataset(data["dataset"], **data["options"])
    heldout = heldout_data(data["dataset"], data["options"], data["heldout_seed"])
    return images, images.tensor().to(dtype), heldout.to(dtype)[: study["heldout_points"]]


def _initial_model(prepared: PreparedModel, study: dict[str, Any], init_seed: int, dtype: torch.dtype):
    """The replicate's starting point: the prepared model's architecture freshly initialized from
    ``init_seed`` (``start = "init"``), or a copy of the prepared model (``start = "prepared"``)."""
    if study["start"] == "prepared":
        return copy.deepcopy(prepared.model).cpu()
    params = dict(prepared.params)
    if "seed" in params:
        params["seed"] = init_seed
    with seeded(init_seed):
        return instantiate_type(prepared.type, params, dtype)


def _load_state(path: str, sha256: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    try:
        state = load_weights_only(path, what="training checkpoint")
    except Exception as exc:  # noqa: BLE001 — any unreadable checkpoint: train from the start instead
        warnings.warn(f"{path}: {exc}; training this cell from the start", StoreWarning, stacklevel=2)
        return None
    if not isinstance(state, dict) or state.get("model_sha256") != sha256:
        warnings.warn(
            f"{path} belongs to another copy of the model; training from the start", StoreWarning, stacklevel=2
        )
        return None
    return state


def run_training_cell(
    cell: Cell, prepared: PreparedModel, device: torch.device, out_dir: str, tick: Callable[[int], None]
) -> pd.DataFrame:
    """The learning curve of one (study, method, k, seed) as a tidy table: one row per evaluation step and
    metric, with the step's cumulative training seconds and model evaluations."""
    study, options = cell.options["study"], cell.options["estimator"]
    dtype = DTYPES[cell.dtype]
    data, train, heldout = _data(prepared, study, dtype)
    model = _initial_model(prepared, study, sub_seed("init", cell.reference_seed), dtype).to(device)
    optimum = None
    if isinstance(model, LinearGaussian):
        optimum = ppca_optimum(train, model.latent_dim, float(model.noise_std))
    variance = study["gradient_variance"]
    evaluator = Evaluator(
        heldout=heldout.to(device),
        train=train[:TRAIN_EVALUATION_POINTS].to(device),
        objective=cell.objective,
        k=cell.k,
        seed=cell.reference_seed,
        heldout_estimator=dict(study["heldout"]),
        optimum=optimum,
        gradient_draws=variance.get("draws", 0),
        gradient_points=variance.get("points", 100),
    )
    run = LearningRun(
        method=cell.estimator_name,
        k=cell.k,
        objective=cell.objective,
        steps=study["steps"],
        eval_steps=tuple(study["eval_steps"]),
        lr=study["lr"],
        batch_size=study["batch_size"],
        seconds=study["seconds"],
        options=options,
    )
    path = training_state_path(out_dir, cell.id)
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def save(state: dict[str, Any]) -> None:
        state = {**state, "model_sha256": cell.model_sha256}
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    rows = train_curve(
        model,
        data,
        run,
        evaluator,
        data_seed=sub_seed("data", cell.reference_seed),
        draw_seed=cell.seed,
        state=_load_state(path, cell.model_sha256),
        save=save,
        on_evaluation=lambda: tick(1),
    )
    frame = pd.DataFrame(rows)
    baseline = cell.estimator_name in BASELINES
    unbiased = not baseline and get_estimator(cell.estimator_name).unbiased_for_objective(cell.objective)
    meta = {
        "study": cell.study,
        "model": cell.model,
        "estimator": cell.estimator,
        "estimator_name": cell.estimator_name,
        "objective": cell.objective,
        "k": cell.k,
        "replicate": study["replicate"],
        "device": cell.device,
        "dtype": cell.dtype,
        "heldout_name": evaluator.heldout_name(model),
        "method_kind": "baseline" if baseline else ("unbiased" if unbiased else "biased"),
        "cell_id": cell.id,
    }
    for i, (name, value) in enumerate(meta.items()):
        frame.insert(i, name, value)
    return frame
