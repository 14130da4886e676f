"""Latent-variable models: the protocol and the built-in models with exact ground truth."""

from lvbench.models.base import LatentVariableModel
from lvbench.models.binary_vae import BinaryVAE
from lvbench.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from lvbench.models.encoders import CategoricalMLPEncoder, GaussianMLPEncoder, LinearGaussianEncoder
from lvbench.models.gaussian_mixture import GaussianMixture
from lvbench.models.linear_gaussian import LinearGaussian
from lvbench.models.reference import load_npz_vae
from lvbench.models.vae import VAE, load_vae

__all__ = [
    "VAE",
    "BinaryVAE",
    "CategoricalMLPEncoder",
    "GaussianMLPEncoder",
    "GaussianMixture",
    "LatentVariableModel",
    "LinearGaussian",
    "LinearGaussianEncoder",
    "load_checkpoint",
    "load_npz_vae",
    "load_vae",
    "read_checkpoint",
    "save_checkpoint",
]
