"""Turn each [models.*] entry into a saved artifact: the model's weights, its evaluation points and the
reference log p(x) they are judged against (exact where the model allows, else a much stronger
estimate with its standard error). Artifacts are written once and reused on resume; they hold only
tensors and plain values and are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from lvbench.data import load_dataset, sample_from_model
from lvbench.errors import LvbenchInputError
from lvbench.experiments.spec import ModelSpec, RunSettings
from lvbench.models import load_vae
from lvbench.registry import get_estimator, get_model
from lvbench.training import fit_encoder, train_vae

__all__ = ["PreparedModel", "load_prepared", "prepare_model"]

ARTIFACT_FORMAT = "lvbench.prepared/1"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_TRAIN = {"epochs": 50, "objective": "iwae", "k": 5, "batch_size": 100, "lr": 1e-3}
DEFAULT_REFERENCE = {"estimator": "iwae", "k": 20000, "repeats": 4}


@dataclass
class PreparedModel:
    label: str
    type: str
    params: dict[str, Any]
    model: torch.nn.Module
    x: torch.Tensor
    reference: torch.Tensor
    reference_se: torch.Tensor
    reference_name: str
    extras: dict[str, Any]


def _artifact_path(out_dir: str, label: str) -> str:
    return os.path.join(out_dir, "models", f"{label}.pt")


def _build(type_: str, params: dict[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    try:
        return get_model(type_)(**params).to(dtype)
    except TypeError as exc:
        raise LvbenchInputError(f"model type {type_!r} rejected its parameters {params}: {exc}") from None


def load_prepared(out_dir: str, label: str, device: str | torch.device = "cpu") -> PreparedModel:
    """Rebuild a prepared model (on ``device``) from its artifact."""
    art = torch.load(_artifact_path(out_dir, label), map_location="cpu", weights_only=True)
    if art.get("format") != ARTIFACT_FORMAT:
        raise LvbenchInputError(f"{_artifact_path(out_dir, label)} is not an lvbench prepared-model artifact")
    dtype = DTYPES[art["dtype"]]
    model = _build(art["type"], art["params"], dtype)
    model.load_state_dict(art["state_dict"])
    model = model.to(device)
    return PreparedModel(
        label=art["label"],
        type=art["type"],
        params=art["params"],
        model=model,
        x=art["x"].to(device),
        reference=art["reference"],
        reference_se=art["reference_se"],
        reference_name=art["reference_name"],
        extras=art["extras"],
    )


def _reference(model, x: torch.Tensor, options: dict[str, Any], seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Mean and standard error over ``repeats`` runs of a strong estimator (default IWAE, k = 20,000)."""
    opts = {**DEFAULT_REFERENCE, **options}
    name, k, repeats = opts.pop("estimator"), int(opts.pop("k")), int(opts.pop("repeats"))
    torch.manual_seed(seed)
    runs = torch.stack([get_estimator(name)(model, x, num_samples=k, **opts).double() for _ in range(repeats)])
    se = runs.std(0) / math.sqrt(repeats) if repeats > 1 else torch.full_like(runs[0], math.nan)
    extra = "".join(f", {key}={value}" for key, value in sorted(opts.items()))
    return runs.mean(0), se, f"{name} (k={k}{extra}), mean of {repeats} runs"


def prepare_model(ms: ModelSpec, run: RunSettings, out_dir: str, progress: bool = True) -> str:
    """Build, fit or train, and save the model of one [models.*] entry; return the artifact path."""
    path = _artifact_path(out_dir, ms.label)
    if os.path.isfile(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    dtype = DTYPES[run.dtype]
    params = dict(ms.params)
    extras: dict[str, Any] = {}
    if ms.type == "vae":
        split = {"split": "train"} if ms.dataset == "digits" else {}
        data = load_dataset(ms.dataset, **{"binarization": "dynamic", **ms.dataset_options, **split})
        params.setdefault("data_dim", data.data_dim)
        params.setdefault("seed", run.seed)
        if ms.checkpoint is not None:
            loaded = load_vae(ms.checkpoint)
            params.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in loaded.config.items()})
            model = _build(ms.type, params, dtype)
            model.load_state_dict(loaded.state_dict())
            extras["checkpoint"] = ms.checkpoint
        else:
            model = _build(ms.type, params, dtype)
            train = {**DEFAULT_TRAIN, **ms.train}
            history = train_vae(model, data, seed=run.seed, progress=progress, **train)
            extras["train"] = {k: v for k, v in train.items()}
            extras["train_final_objective"] = float(history["objective"].iloc[-1])
        if ms.dataset == "digits":
            test = load_dataset("digits", split="test", binarization="static", seed=run.seed)
        else:
            test = data
        x = test.tensor()[: ms.points].to(dtype)
        with torch.no_grad():
            reference, reference_se, reference_name = _reference(model, x, ms.reference, run.seed)
    else:
        params.setdefault("seed", run.seed)
        model = _build(ms.type, params, dtype)
        x, _ = sample_from_model(model, ms.points, seed=run.seed + 1)
        if model.encoder is not None:
            fit = {"steps": 300, "lr": 1e-2, "k": 8, "train_points": 512, **ms.encoder_fit}
            train_x, _ = sample_from_model(model, int(fit.pop("train_points")), seed=run.seed + 2)
            trace = fit_encoder(model, train_x, seed=run.seed, **fit)
            extras["encoder_fit_elbo"] = trace[-1]
        with torch.no_grad():
            reference = model.log_marginal(x).double()
        reference_se = torch.zeros_like(reference)
        reference_name = "exact log p(x)"
    if ms.bdmc:
        extras["bdmc"] = _bdmc(model, ms, run)
    artifact = {
        "format": ARTIFACT_FORMAT,
        "label": ms.label,
        "type": ms.type,
        "params": params,
        "dtype": run.dtype,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "x": x.detach().cpu(),
        "reference": reference.detach().cpu(),
        "reference_se": reference_se.detach().cpu(),
        "reference_name": reference_name,
        "extras": extras,
    }
    tmp = f"{path}.tmp"
    torch.save(artifact, tmp)
    os.replace(tmp, path)
    return path


def _bdmc(model, ms: ModelSpec, run: RunSettings) -> dict[str, Any]:
    """BDMC sandwich on points simulated from the model itself (their latents are exact posterior draws)."""
    from lvbench.estimators.likelihood.ais import bdmc

    opts = {"steps": 200, "chains": 4, "points": 8, **ms.bdmc}
    n = int(opts.pop("points"))
    x, z = sample_from_model(model, n, seed=run.seed + 3)
    torch.manual_seed(run.seed)
    lower, upper = bdmc(model, x, z, **opts)
    out = {"lower": lower.double().cpu(), "upper": upper.double().cpu(), "options": opts}
    if "exact_marginal" in model.capabilities():
        with torch.no_grad():
            out["exact"] = model.log_marginal(x).double().cpu()
    return out
