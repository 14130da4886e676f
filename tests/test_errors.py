"""Bad input gets one clear sentence naming the problem, never a traceback from inside torch."""

import numpy as np
import pytest
import torch

import lvbench
from lvbench import IncompatibleError, LvbenchInputError
from lvbench.models import VAE, GaussianMixture, LinearGaussian


@pytest.fixture
def lg():
    return LinearGaussian.random(5, 2)


@pytest.mark.parametrize(
    "x,pattern",
    [
        (torch.zeros(3, 4), "expects data_dim=5"),
        (torch.zeros(3, 5, 1), r"shape \[N, D\]"),
        (torch.zeros(0, 5), "no data points"),
        (torch.zeros(3, 5, dtype=torch.int64), "floating-point"),
        (torch.zeros(3, 5, dtype=torch.float64), "dtype torch.float64 but the model"),
        (torch.tensor([[0.0, 1, 2, 3, float("nan")]] * 2), "NaN or infinite values"),
        ([[0.0] * 5], "must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("name", ["naive_mc", "importance", "elbo", "iwae"])
def test_bad_data(lg, x, pattern, name):
    with pytest.raises(LvbenchInputError, match=pattern):
        lvbench.get_estimator(name)(lg, x, num_samples=3)


def test_numpy_input_is_accepted(lg):
    x = np.zeros((2, 5), dtype=np.float32)
    assert lvbench.get_estimator("iwae")(lg, x, num_samples=2).shape == (2,)


@pytest.mark.parametrize(
    "k,pattern", [(0, ">= 1"), (-3, ">= 1"), (2.5, "integer"), (True, "integer"), ("5", "integer")]
)
def test_bad_num_samples(lg, k, pattern):
    x, _ = lg.sample(2)
    with pytest.raises(LvbenchInputError, match=pattern):
        lvbench.get_estimator("iwae")(lg, x, num_samples=k)


def test_unknown_names_and_options(lg):
    x, _ = lg.sample(2)
    with pytest.raises(KeyError, match="unknown estimator 'iwea'"):
        lvbench.get_estimator("iwea")
    with pytest.raises(KeyError, match="unknown model"):
        lvbench.get_model("nope")
    with pytest.raises(LvbenchInputError, match="no option"):
        lvbench.get_estimator("iwae")(lg, x, num_samples=2, temperature=1.0)
    with pytest.raises(LvbenchInputError, match="proposal must be one of .* got 'posterio'. Did you mean 'posterior'"):
        lvbench.get_estimator("iwae")(lg, x, num_samples=2, proposal="posterio")
    with pytest.raises(LvbenchInputError, match="chunk_size"):
        lvbench.get_estimator("iwae")(lg, x, num_samples=2, chunk_size=0)
    with pytest.raises(LvbenchInputError, match="defensive"):
        lvbench.get_estimator("importance")(lg, x, num_samples=2, defensive=1.5)


def test_incompatible_pairings_name_the_reason():
    vae = VAE(6, 2, (4,))
    x = torch.zeros(2, 6)
    with pytest.raises(IncompatibleError, match="proposal='posterior' needs exact_posterior"):
        lvbench.get_estimator("iwae")(vae, x, num_samples=2, proposal="posterior")
    gmm = GaussianMixture.random(2, 3)
    xg, _ = gmm.sample(2)
    with pytest.raises(IncompatibleError, match="reparam needs reparameterizable"):
        lvbench.get_estimator("reparam")(gmm, xg, num_samples=2)
    with pytest.raises(IncompatibleError, match="dreg estimates \\['iwae'\\]"):
        lvbench.get_estimator("dreg")(
            LinearGaussian.random(), LinearGaussian.random().sample(2)[0], num_samples=2, objective="elbo"
        )
    lg = LinearGaussian.random()
    with pytest.raises(IncompatibleError, match="gumbel_softmax needs"):
        lvbench.get_estimator("gumbel_softmax")(lg, lg.sample(2)[0], num_samples=2)
    with pytest.raises(IncompatibleError, match="vimco needs num_samples >= 2"):
        lvbench.get_estimator("vimco")(lg, lg.sample(2)[0], num_samples=1, objective="iwae")
    gmm_no_encoder = GaussianMixture(torch.zeros(2), torch.zeros(2, 1), torch.ones(2, 1), encoder=False)
    assert "encoder" in lvbench.incompatibility("iwae", gmm_no_encoder, proposal="encoder")
    assert lvbench.incompatibility("iwae", gmm_no_encoder, proposal="prior") is None


def test_device_mismatch_is_named(lg):
    meta = torch.zeros(2, 5, device="meta")
    with pytest.raises(LvbenchInputError, match="is on meta but the model is on cpu"):
        lvbench.get_estimator("iwae")(lg, meta, num_samples=2)


def test_bad_model_construction():
    with pytest.raises(ValueError, match="noise_std"):
        LinearGaussian(torch.zeros(3, 2), torch.zeros(3), noise_std=0.0)
    with pytest.raises(ValueError, match="weight must be"):
        LinearGaussian(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="stds must be > 0"):
        GaussianMixture(torch.zeros(2), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="likelihood"):
        VAE(4, 2, likelihood="poisson")
    with pytest.raises(ValueError, match="activation"):
        VAE(4, 2, activation="sigmoidish")
