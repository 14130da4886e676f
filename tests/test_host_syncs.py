"""No host synchronisation inside the hot loops: the number of device-to-host reads an estimator asks
for does not grow with the number of chunks, annealing steps or samples. Counted through a
TorchFunctionMode, so the check runs on the CPU too; on CUDA the runtime's own count must agree."""

import pytest
import torch

import lvbench
from lvbench.compute.measure import HostSyncs
from lvbench.models import VAE, BinaryVAE, GaussianMixture, LinearGaussian

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
STREAMED = ["naive_mc", "importance", "elbo", "iwae", "jvi"]


def syncs(fn) -> HostSyncs:
    with HostSyncs() as counter:
        fn()
    return counter


def models(device: str):
    binary = BinaryVAE(16, 4, (8,))
    for model in (
        LinearGaussian.random(6, 2, 0.7, seed=0),
        VAE(64, 4, (32,)),
        GaussianMixture.random(2, 3, seed=0),
        binary,
    ):
        model = model.to(device)
        yield model, model.sample(8)[0]


def test_the_counter_sees_python_level_syncs():
    x = torch.randn(6)
    counter = syncs(lambda: (x[x > 0], float(x.sum()), bool(x.any()), x.nonzero(), x.tolist(), x + 1))
    expected = {"__getitem__[bool mask]": 1, "__float__": 1, "__bool__": 1, "nonzero": 1, "tolist": 1}
    assert dict(counter.counts) == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", STREAMED)
def test_streamed_estimators_sync_once_per_call_whatever_the_number_of_chunks(device, name):
    for model, x in models(device):
        one_chunk = syncs(lambda m=model, x=x: lvbench.get_estimator(name)(m, x, num_samples=64, chunk_size=64))
        many = syncs(lambda m=model, x=x: lvbench.get_estimator(name)(m, x, num_samples=64, chunk_size=1))
        assert many.counts == one_chunk.counts and many.cuda_runtime == one_chunk.cuda_runtime
        assert one_chunk.total <= 1, one_chunk.counts  # the input's NaN check


@pytest.mark.parametrize("device", DEVICES)
def test_ais_syncs_do_not_grow_with_steps_or_chain_batches(device):
    model = LinearGaussian.random(6, 2, 0.7, seed=0).to(device)
    x, _ = model.sample(8)
    ais = lvbench.get_estimator("ais")
    short = syncs(lambda: ais(model, x, num_samples=4, steps=5, chain_batch=4))
    long = syncs(lambda: ais(model, x, num_samples=4, steps=40, chain_batch=1, start="encoder"))
    assert long.counts == short.counts and long.cuda_runtime == short.cuda_runtime
    assert short.total <= 1, short.counts


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", lvbench.list_estimators("gradient"))
def test_gradient_surrogates_sync_at_most_once_whatever_k(device, name):
    estimator = lvbench.get_estimator(name)
    small_k, large_k = (2, 4) if name == "enumeration" else (4, 64)  # enumeration costs C^k
    for model, x in models(device):
        if lvbench.incompatibility(estimator, model, num_samples=small_k, objective="iwae"):
            continue
        small = syncs(lambda m=model, x=x: estimator(m, x, num_samples=small_k, objective="iwae").backward())
        large = syncs(lambda m=model, x=x: estimator(m, x, num_samples=large_k, objective="iwae").backward())
        assert large.counts == small.counts and large.cuda_runtime == small.cuda_runtime
        assert small.total <= 1, small.counts
