"""Load VAEs published by others as plain numpy arrays (``fc1..fc6`` weights, no pickle).

The layout is that of the BDMC reference code (lxuechen/BDMC): encoder fc1, fc2, fc3 (fc3 outputs
[μ, log σ²]), decoder fc4, fc5, fc6 (Bernoulli logits), ELU activations.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from lvbench.core.errors import LvbenchInputError
from lvbench.models.checkpoint import Checkpoint, read_checkpoint
from lvbench.models.vae import VAE

__all__ = ["load_npz_vae", "read_model_file"]


def load_npz_vae(path: str | os.PathLike[str]) -> tuple[VAE, dict[str, torch.Tensor]]:
    """The VAE stored in ``path`` and any extra arrays in the file (e.g. simulated ``x`` and ``z``)."""
    if not os.path.isfile(path):
        raise LvbenchInputError(f"npz VAE weights not found: {path}")
    with np.load(path, allow_pickle=False) as arrays:
        tensors = {k: torch.from_numpy(arrays[k].copy()) for k in arrays.files}
    missing = [f"fc{i}_{p}" for i in range(1, 7) for p in ("weight", "bias") if f"fc{i}_{p}" not in tensors]
    if missing:
        raise LvbenchInputError(f"{path} lacks the arrays {missing}")
    data_dim = tensors["fc1_weight"].shape[1]
    latent_dim = tensors["fc4_weight"].shape[1]
    hidden = (tensors["fc1_weight"].shape[0], tensors["fc2_weight"].shape[0])
    if tensors["fc3_weight"].shape[0] != 2 * latent_dim or tensors["fc6_weight"].shape[0] != data_dim:
        raise LvbenchInputError(f"{path}: fc3 must output 2*latent_dim and fc6 data_dim values")
    model = VAE(data_dim, latent_dim, hidden, activation="elu", likelihood="bernoulli")
    layers = {"encoder.net": (1, 2, 3), "decoder": (4, 5, 6)}
    state = {}
    for prefix, fcs in layers.items():
        for pos, fc in zip((0, 2, 4), fcs, strict=True):
            state[f"{prefix}.{pos}.weight"] = tensors[f"fc{fc}_weight"].float()
            state[f"{prefix}.{pos}.bias"] = tensors[f"fc{fc}_bias"].float()
    state["_zero"] = torch.zeros(())
    model.load_state_dict(state)
    extras = {k: v for k, v in tensors.items() if not k.startswith("fc")}
    return model, extras


def read_model_file(path: str | os.PathLike[str], what: str = "checkpoint") -> Checkpoint:
    """A spec's ``checkpoint``: an lvbench checkpoint (``lvbench train``), or an ``.npz`` of numpy arrays
    in the BDMC layout (``load_npz_vae``), such as the shipped MNIST VAE trained by others."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        return read_checkpoint(path, what=what)
    model, _ = load_npz_vae(path)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Checkpoint(path, "vae", dict(model.config), state, {"format": "numpy arrays, BDMC layout"})
