"""Checkpoints of any registered model: its registered type, factory parameters and weights.

A checkpoint is a dict of plain values and tensors, written with ``torch.save`` and read with
``weights_only=True`` (never unpickled code): ``{"format": "lvbench.checkpoint/1", "model": type,
"params": factory parameters, "state_dict": …, "metadata": …}``. The older VAE-only format
``lvbench.vae/1`` (``VAE.save``) reads as a checkpoint of type ``vae``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lvbench.core.errors import LvbenchInputError
from lvbench.core.registry import get_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "VAE_FORMAT",
    "Checkpoint",
    "load_checkpoint",
    "load_state",
    "load_weights_only",
    "read_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "lvbench.checkpoint/1"
#: The older format ``VAE.save`` writes: the VAE's config and weights.
VAE_FORMAT = "lvbench.vae/1"


def load_weights_only(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors: a missing or corrupt file, or one holding
    pickled objects (refused: lvbench never unpickles code, and never suggests turning that off)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise LvbenchInputError(f"{what} {path} is a folder, not a file")
    if not os.path.isfile(path):
        raise LvbenchInputError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise LvbenchInputError(
            f"{path}: refused to load this {what}: it holds pickled Python objects, not only tensors and plain "
            "values (lvbench loads with weights_only=True and never runs code from a file)"
        ) from None
    except Exception as exc:  # noqa: BLE001 — zip, EOF, magic-number errors: all mean an unreadable file
        raise LvbenchInputError(f"{path}: not a readable {what} (truncated or corrupt: {type(exc).__name__})") from None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """``model.load_state_dict(state)``, or one line naming the mismatched weights."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:4])
        raise LvbenchInputError(f"{path}: its weights do not match its config: {detail}") from None


@dataclass
class Checkpoint:
    """What a checkpoint file holds: the model's registered type, factory parameters and weights."""

    path: str
    type: str
    params: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    def build(self, map_location: str | torch.device = "cpu") -> nn.Module:
        """The model with these weights (in the checkpoint's floating dtype), on ``map_location``."""
        try:
            model = get_model(self.type)(**self.params)
        except TypeError as exc:
            raise LvbenchInputError(
                f"{self.path}: parameters {self.params} do not build a {self.type!r} ({exc})"
            ) from None
        floats = [v.dtype for v in self.state_dict.values() if v.is_floating_point()]
        model = model.to(floats[0] if floats else torch.get_default_dtype())
        load_state(model, self.state_dict, self.path)
        return model.to(map_location)


def save_checkpoint(
    path: str | os.PathLike[str], model_type: str, params: dict[str, Any], model: nn.Module, **metadata: Any
) -> None:
    """Write ``model``'s weights with its registered type and factory ``params`` (loadable weights-only)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items() if k != "seed"}
    torch.save(
        {"format": CHECKPOINT_FORMAT, "model": model_type, "params": params, "state_dict": state, "metadata": metadata},
        path,
    )


def read_checkpoint(path: str | os.PathLike[str], what: str = "checkpoint") -> Checkpoint:
    """Read and check a checkpoint (either format) without building the model; errors name ``what``."""
    path = os.fspath(path)
    ckpt = load_weights_only(path, what=what)
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (CHECKPOINT_FORMAT, VAE_FORMAT):
        raise LvbenchInputError(f"{path} is not an lvbench {what} (expected format {CHECKPOINT_FORMAT!r})")
    vae_only = ckpt["format"] == VAE_FORMAT
    model_type = "vae" if vae_only else ckpt.get("model")
    params = ckpt.get("config") if vae_only else ckpt.get("params")
    state = ckpt.get("state_dict")
    if not isinstance(model_type, str) or not isinstance(params, dict) or not isinstance(state, dict):
        raise LvbenchInputError(f"{path}: checkpoint lacks its model type, parameters or state_dict")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LvbenchInputError(f"{path}: checkpoint state_dict holds values that are not tensors")
    return Checkpoint(path, model_type, dict(params), state, dict(ckpt.get("metadata") or {}))


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """The model a checkpoint holds, built through the registry and loaded weights-only."""
    return read_checkpoint(path).build(map_location)
