"""Turn each [models.*] entry into a saved artifact: the model's weights, its evaluation points and the
reference log p(x) they are judged against (exact where the model allows, else a much stronger
estimate with its standard error).

An artifact is content-addressed: it lives at ``models/<key>.pt`` where the key is a digest of the
model's full configuration (``model_config``: type, parameters, data and the data file's bytes,
training, checkpoint bytes, encoder fit, reference, BDMC settings, run seed, dtype, threads), so a
changed spec prepares a new artifact and never reuses an old one. Artifacts hold only tensors and
plain values and are read with ``torch.load(weights_only=True)``; one that does not read back is
prepared again, with a warning naming it.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from lvbench.analysis.inference_gaps import inference_gaps
from lvbench.analysis.training import fit_encoder, train_vae
from lvbench.compute.matmul import cpu_matmul_backend
from lvbench.core.code_identity import lvbench_version
from lvbench.core.errors import LvbenchInputError
from lvbench.core.protocol import capabilities_of
from lvbench.core.registry import get_estimator, get_model
from lvbench.core.seeding import seeded
from lvbench.data import BUNDLED_DATASETS, bundled_digest, load_dataset, sample_from_model
from lvbench.experiments.identity import digest, file_digest
from lvbench.experiments.spec import ModelSpec, RunSettings, SpecError, dataset_options
from lvbench.experiments.store import StoreWarning, atomic_write, atomic_write_text, warn_untrusted
from lvbench.models.checkpoint import load_state, load_weights_only
from lvbench.models.reference import read_model_file

__all__ = [
    "PreparedModel",
    "prepared_extras",
    "artifact_digest",
    "heldout_data",
    "instantiate",
    "instantiate_type",
    "load_prepared",
    "model_config",
    "model_key",
    "prepare_model",
]

ARTIFACT_FORMAT = "lvbench.prepared/2"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_TRAIN = {"epochs": 50, "objective": "iwae", "k": 5, "batch_size": 100, "lr": 1e-3}
DEFAULT_REFERENCE = {"estimator": "iwae", "k": 20000, "repeats": 4}
DEFAULT_ENCODER_FIT = {"steps": 300, "lr": 1e-2, "k": 8, "train_points": 512}
DEFAULT_BDMC = {"steps": 200, "chains": 4, "points": 8}


@dataclass
class PreparedModel:
    label: str
    key: str
    type: str
    params: dict[str, Any]
    model: torch.nn.Module
    x: torch.Tensor
    reference: torch.Tensor
    reference_se: torch.Tensor
    reference_name: str
    extras: dict[str, Any]


def artifact_path(out_dir: str, key: str) -> str:
    return os.path.join(out_dir, "models", f"{key}.pt")


def prepared_extras(out_dir: str, models: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{label: what was measured when the model was prepared (inference gaps, BDMC)} for the models
    ({label: key}) whose artifact exists: the rows reports build their tables from."""
    extras = {}
    for label, key in sorted(models.items()):
        path = artifact_path(out_dir, key)
        if os.path.isfile(path):
            extras[label] = load_weights_only(path, what="prepared-model artifact").get("extras", {})
    return extras


def digest_path(out_dir: str, key: str) -> str:
    """The record of an artifact's SHA-256, written when it was prepared."""
    return os.path.join(out_dir, "models", f"{key}.sha256")


def artifact_digest(out_dir: str, key: str, quiet: bool = False) -> str | None:
    """The SHA-256 of the prepared model ``key`` if its file exists and matches the digest recorded when
    it was prepared, else None (with a warning naming the file, unless ``quiet``, where it exists)."""
    path = artifact_path(out_dir, key)
    if not os.path.isfile(path):
        return None
    name = os.path.relpath(path, out_dir)
    try:
        with open(digest_path(out_dir, key)) as fh:
            recorded = fh.read().strip()
    except (OSError, UnicodeDecodeError):
        recorded = ""
    if len(recorded) != 64:
        quiet or warn_untrusted(f"{name} has no recorded digest; preparing it again")
        return None
    actual = file_digest(path)
    if actual != recorded:
        quiet or warn_untrusted(
            f"{name} does not match the digest recorded when it was prepared (changed or corrupted); "
            "preparing it again, and recomputing the cells made from it"
        )
        return None
    return actual


def _checkpoint_config(ms: ModelSpec) -> dict[str, Any]:
    """The checkpoint's architecture, refusing a spec parameter that contradicts it."""
    ckpt = read_model_file(ms.checkpoint)
    if ckpt.type != ms.type:
        raise SpecError(
            f"models.{ms.label}.checkpoint {ms.checkpoint} holds a {ckpt.type!r} model, not type = {ms.type!r}"
        )
    config = ckpt.params
    for key, value in ms.params.items():
        given = list(value) if isinstance(value, tuple) else value
        if key in config and config[key] != given:
            raise SpecError(
                f"models.{ms.label}.{key} = {value!r} contradicts the checkpoint {ms.checkpoint}, which has "
                f"{key} = {config[key]!r}; remove the key or use a matching checkpoint"
            )
    return dict(config)


def _params(ms: ModelSpec, run: RunSettings) -> dict[str, Any]:
    """The factory's keyword arguments: the spec's, the run seed, and for a VAE the data's dimension or
    the checkpoint's architecture."""
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ms.params.items()}
    factory = get_model(ms.type).obj
    from lvbench.core.options import signature_options

    names, var_kw = signature_options(factory)
    if "seed" in names or var_kw:
        params.setdefault("seed", run.seed)
    if ms.checkpoint is not None:
        params.update(_checkpoint_config(ms))
    elif ms.dataset is not None:
        params.setdefault("data_dim", load_dataset(ms.dataset, **dataset_options(ms)).data_dim)
    return params


def model_config(ms: ModelSpec, run: RunSettings) -> dict[str, Any]:
    """Everything that determines a prepared model's numbers (its weights, points and reference)."""
    data_options = dict(ms.dataset_options)
    if "path" in data_options:
        data_options["path_sha256"] = file_digest(data_options.pop("path"))
    if ms.dataset in BUNDLED_DATASETS:
        data_options["sha256"] = bundled_digest(ms.dataset)
    trained = ms.dataset is not None and ms.checkpoint is None
    reference = {**DEFAULT_REFERENCE, **ms.reference}
    code = {"model": digest(get_model(ms.type).code), "reference": digest(get_estimator(reference["estimator"]).code)}
    if trained and "estimator" in ms.train:
        code["train_estimator"] = digest(get_estimator(ms.train["estimator"]).code)
    return {
        "format": ARTIFACT_FORMAT,
        "lvbench": lvbench_version(),
        "code": code,
        "type": ms.type,
        "params": _params(ms, run),
        "points": ms.points,
        "dataset": ms.dataset,
        "dataset_options": data_options,
        "train": {**DEFAULT_TRAIN, **ms.train} if trained else None,
        "checkpoint_sha256": file_digest(ms.checkpoint) if ms.checkpoint else None,
        "encoder_fit": {**DEFAULT_ENCODER_FIT, **ms.encoder_fit} if ms.dataset is None else None,
        "reference": reference,
        "bdmc": {**DEFAULT_BDMC, **ms.bdmc} if ms.bdmc else None,
        "inference_gaps": ms.inference_gaps,
        "seed": run.seed,
        "dtype": run.dtype,
        "threads": run.threads,
        # training, encoder fits and references run on the CPU by its calibrated kernels
        "cpu_kernels": cpu_matmul_backend(run.threads),
    }


def model_key(ms: ModelSpec, run: RunSettings) -> str:
    """The content address of the prepared model of ``ms``."""
    return f"{ms.type}-{digest(model_config(ms, run))}"


def instantiate_type(type_: str, params: dict[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    factory = get_model(type_)
    try:
        model = factory(**params)
    except (TypeError, LvbenchInputError) as exc:
        raise SpecError(f"model type {type_!r} rejected its parameters {params}: {exc}") from None
    return model.to(dtype)


def instantiate(ms: ModelSpec, run: RunSettings) -> torch.nn.Module:
    """The untrained model of ``ms`` (cheap): enough to read its capabilities and check the spec."""
    return instantiate_type(ms.type, _params(ms, run), DTYPES[run.dtype])


def load_prepared(
    out_dir: str, key: str, device: str | torch.device = "cpu", label: str = "", sha256: str = ""
) -> PreparedModel:
    """Rebuild a prepared model (on ``device``) from its artifact; with ``sha256``, only from a file with
    exactly that digest (the one its cells were planned for)."""
    path = artifact_path(out_dir, key)
    if sha256 and (not os.path.isfile(path) or file_digest(path) != sha256):
        raise LvbenchInputError(
            f"the prepared model {os.path.relpath(path, out_dir)} changed or vanished since it was prepared "
            f"(expected SHA-256 {sha256[:12]}...): refusing to compute from it"
        )
    art = load_weights_only(path, what="prepared-model artifact")
    if not isinstance(art, dict) or art.get("format") != ARTIFACT_FORMAT or art.get("key") != key:
        raise LvbenchInputError(f"{path} is not the lvbench prepared-model artifact {key}")
    model = instantiate_type(art["type"], art["params"], DTYPES[art["dtype"]])
    load_state(model, art["state_dict"], path)
    return PreparedModel(
        label=label,
        key=key,
        type=art["type"],
        params=art["params"],
        model=model.to(device),
        x=art["x"].to(device),
        reference=art["reference"],
        reference_se=art["reference_se"],
        reference_name=art["reference_name"],
        extras=art["extras"],
    )


def _reference(model, x: torch.Tensor, options: dict[str, Any], seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Mean and standard error over ``repeats`` runs of a strong estimator (default IWAE, k = 20,000)."""
    opts = dict(options)
    name, k, repeats = opts.pop("estimator"), int(opts.pop("k")), int(opts.pop("repeats"))
    with seeded(seed):
        runs = torch.stack([get_estimator(name)(model, x, num_samples=k, **opts).double() for _ in range(repeats)])
    se = runs.std(0) / math.sqrt(repeats) if repeats > 1 else torch.full_like(runs[0], math.nan)
    extra = "".join(f", {key}={value}" for key, value in sorted(opts.items()))
    return runs.mean(0), se, f"{name} (k={k}{extra}), mean of {repeats} runs"


def training_estimator(model, train: dict[str, Any]) -> str:
    """Pathwise gradients where the latent allows, else VIMCO for the IWAE objective (k >= 2) and DisARM
    for the ELBO or binary latents at k = 1."""
    if "reparameterizable" in capabilities_of(model):
        return "reparam"
    objective, k = train.get("objective", DEFAULT_TRAIN["objective"]), train.get("k", DEFAULT_TRAIN["k"])
    if objective == "iwae" and k >= 2:
        return "vimco"
    return "disarm" if "binary_latent" in capabilities_of(model) else "score_function"


def _check_finite(model: torch.nn.Module, label: str, when: str) -> None:
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    bad = [name for name, t in tensors if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise LvbenchInputError(f"model {label!r} has NaN or infinite parameters {when}: {bad[:5]}")


def prepare_model(ms: ModelSpec, run: RunSettings, out_dir: str, progress: bool = True) -> str:
    """Build, fit or train, and save the model of one [models.*] entry unless its artifact exists and reads
    back; return its key."""
    config = model_config(ms, run)
    key = f"{ms.type}-{digest(config)}"
    path = artifact_path(out_dir, key)
    if artifact_digest(out_dir, key) is not None:
        try:
            load_prepared(out_dir, key)
            return key
        except LvbenchInputError as exc:
            warnings.warn(f"{os.path.relpath(path, out_dir)}: {exc}; preparing it again", StoreWarning, stacklevel=2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    params = config["params"]
    extras: dict[str, Any] = {}
    model = instantiate_type(ms.type, params, DTYPES[run.dtype])
    _check_finite(model, ms.label, "as built")
    if ms.dataset is not None:
        x = _fit_to_dataset(model, ms, config, run, extras, progress)
    else:
        x = _fit_to_own_data(model, ms, config, run, extras)
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    reference, reference_se, reference_name = _reference_of(model, x, config, run)
    _check_unchanged(model, weights, ms.label, f"computing its reference ({reference_name})")
    if ms.bdmc:
        extras["bdmc"] = _bdmc(model, config["bdmc"], run)
        _check_unchanged(model, weights, ms.label, "BDMC")
    if ms.inference_gaps is not None:
        gaps = inference_gaps(model, x, log_marginal=reference, seed=run.seed, **ms.inference_gaps)
        extras["inference_gaps"] = {c: torch.tensor(gaps[c].to_numpy()) for c in gaps if c != "point"}
        _check_unchanged(model, weights, ms.label, "inference_gaps")
    artifact = {
        "format": ARTIFACT_FORMAT,
        "key": key,
        "config": config,
        "type": ms.type,
        "params": params,
        "dtype": run.dtype,
        "state_dict": weights,
        "x": x.detach().cpu(),
        "reference": reference.detach().cpu(),
        "reference_se": reference_se.detach().cpu(),
        "reference_name": reference_name,
        "extras": extras,
    }
    _save_artifact(out_dir, key, artifact)
    return key


def _fit_to_dataset(model, ms: ModelSpec, config: dict, run: RunSettings, extras: dict, progress: bool) -> torch.Tensor:
    """A model trained on data: its weights from the checkpoint, or trained on the dataset's training part;
    returns the evaluation points, the first ``points`` of the held-out part, statically binarized."""
    if ms.checkpoint is not None:
        load_state(model, read_model_file(ms.checkpoint).state_dict, ms.checkpoint)
        extras["checkpoint"] = ms.checkpoint
        _check_finite(model, ms.label, f"in checkpoint {ms.checkpoint}")
    else:
        data = load_dataset(ms.dataset, **dataset_options(ms))
        train = {"seed": run.seed, "estimator": training_estimator(model, config["train"]), **config["train"]}
        history = train_vae(model, data, progress=progress, **train)
        extras["train"] = dict(config["train"])
        extras["train_final_objective"] = float(history["objective"].iloc[-1])
        _check_finite(model, ms.label, "after training (diverged? lower train.lr)")
    return heldout_data(ms.dataset, dataset_options(ms), run.seed)[: ms.points].to(DTYPES[run.dtype])


def heldout_data(dataset: str, options: dict[str, Any], seed: int) -> torch.Tensor:
    """The held-out part of a dataset, statically binarized with ``seed``: the points a model trained on
    its training part is evaluated on."""
    if dataset in BUNDLED_DATASETS:
        return load_dataset(dataset, split="test", binarization="static", seed=seed).tensor()
    return load_dataset(dataset, **{**options, "binarization": "static"}).tensor()


def _fit_to_own_data(model, ms: ModelSpec, config: dict, run: RunSettings, extras: dict) -> torch.Tensor:
    """A model that simulates its data: the evaluation points drawn from it, and its encoder fitted on
    other draws from it; returns the evaluation points."""
    x, _ = sample_from_model(model, ms.points, seed=run.seed + 1)
    if getattr(model, "encoder", None) is not None:
        fit = {"seed": run.seed, **config["encoder_fit"]}
        train_x, _ = sample_from_model(model, int(fit.pop("train_points")), seed=fit["seed"] + 2)
        trace = fit_encoder(model, train_x, **fit)
        extras["encoder_fit_elbo"] = trace[-1]
        _check_finite(model, ms.label, "after fitting its encoder (lower encoder_fit.lr)")
    return x


def _reference_of(model, x: torch.Tensor, config: dict, run: RunSettings) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(reference log p(x) [N], its standard error, its name): exact where the model has it, else the
    spec's reference estimator."""
    with torch.no_grad():
        if "exact_marginal" in capabilities_of(model):
            reference = model.log_marginal(x).double()
            return reference, torch.zeros_like(reference), "exact log p(x)"
        return _reference(model, x, config["reference"], run.seed)


def _save_artifact(out_dir: str, key: str, artifact: dict[str, Any]) -> None:
    """The artifact, then the record of its digest (the commit point: a model is prepared once both exist)."""
    recorded = {}

    def save(tmp: str) -> None:
        torch.save(artifact, tmp)
        recorded["sha256"] = file_digest(tmp)

    atomic_write(artifact_path(out_dir, key), save)
    atomic_write_text(digest_path(out_dir, key), recorded["sha256"] + "\n")


def _check_unchanged(model: torch.nn.Module, weights: dict[str, torch.Tensor], label: str, what: str) -> None:
    """Refuse a preparation step that changed the model it was only meant to evaluate."""
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v.detach().cpu(), weights[k])]
    if changed:
        raise LvbenchInputError(
            f"model {label!r}: {what} changed the model's parameters {changed[:5]} while evaluating it; "
            "an evaluation must leave the model as it found it"
        )


def _bdmc(model, options: dict[str, Any], run: RunSettings) -> dict[str, Any]:
    """BDMC sandwich on points simulated from the model itself (their latents are exact posterior draws)."""
    from lvbench.estimators.likelihood.ais import bdmc

    opts = dict(options)
    n = int(opts.pop("points"))
    x, z = sample_from_model(model, n, seed=run.seed + 3)
    with seeded(run.seed):
        lower, upper = bdmc(model, x, z, **opts)
    out = {"lower": lower.double().cpu(), "upper": upper.double().cpu(), "options": opts}
    if "exact_marginal" in capabilities_of(model):
        with torch.no_grad():
            out["exact"] = model.log_marginal(x).double().cpu()
    return out
