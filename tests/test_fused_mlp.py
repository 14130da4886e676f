"""The inference route of the VAE's decoder (``lvbench.compute.matmul`` and the Bernoulli
log-likelihood without autograd) against numpy float64 references written here, on every device and with
oneDNN on and off. Tolerances follow float32 rounding: a unit roundoff u = 2^-24 per operation, times the
magnitudes summed (stated at each check)."""

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, log_expit, logsumexp
from torch import nn

from lvbench.compute.bernoulli import SoftplusSum, bernoulli_log_likelihood
from lvbench.compute.matmul import cpu_matmul_backend, force_linear, mlp_forward, onednn_enabled
from lvbench.models import VAE
from lvbench.models.base import mlp

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
#: torch.backends.mkldnn.flags(...) also sets oneDNN TF32 for Intel GPUs and warns that there are none
pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
U32 = 2.0**-24
NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0.0),
    "elu": lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0.0))),
    "softplus": lambda a: np.logaddexp(a, 0.0),
    "gelu": lambda a: a * 0.5 * (1 + np.vectorize(math.erf)(a / math.sqrt(2))),
    "sigmoid": expit,
    "silu": lambda a: a * expit(a),
}


def numpy_mlp(net: nn.Sequential, h: np.ndarray, activation: str) -> np.ndarray:
    layers = [m for m in net if isinstance(m, nn.Linear)]
    for i, layer in enumerate(layers):
        h = h @ layer.weight.detach().cpu().double().numpy().T + layer.bias.detach().cpu().double().numpy()
        if i < len(layers) - 1:
            h = NUMPY_ACTIVATIONS[activation](h)
    return h


def linear_kernels(use_onednn: bool):
    """oneDNN's fused layers whatever this machine's calibration chose, or torch's own (oneDNN off)."""
    return force_linear("onednn") if use_onednn else torch.backends.mkldnn.flags(enabled=False)


def onednn_states() -> list:
    return [False, pytest.param(True, marks=pytest.mark.skipif(not onednn_enabled(), reason="no oneDNN here"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("use_onednn", onednn_states())
@pytest.mark.parametrize("activation", sorted(NUMPY_ACTIVATIONS))
def test_mlp_forward_is_the_mlp_in_float64_up_to_float32_rounding(device, use_onednn, activation):
    torch.manual_seed(0)
    act = {"sigmoid": nn.Sigmoid, "silu": nn.SiLU}.get(activation, activation)
    net = mlp([30, 64, 64, 50], act).to(device)
    z = 2 * torch.randn(7, 5, 30, device=device)
    with linear_kernels(use_onednn), torch.inference_mode():
        out = mlp_forward(net, z)
    assert out.shape == (7, 5, 50) and out.dtype == torch.float32 and out.device == z.device
    reference = numpy_mlp(net, z.cpu().double().numpy(), activation)
    # each output sums 64 products of O(1) terms per layer: a few hundred roundings of size u at most
    np.testing.assert_allclose(out.cpu().double().numpy(), reference, rtol=0, atol=500 * U32 * np.abs(reference).max())


def test_onednn_route_is_taken_where_chosen_and_never_inside_torch_func(monkeypatch):
    monkeypatch.setenv("LVBENCH_KERNELS", "linear=onednn,linear_autograd=onednn,bernoulli_autograd=bce")
    calls = []
    real = torch.ops.mkldnn._linear_pointwise if hasattr(torch.ops, "mkldnn") else None

    def counting(*args):
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", counting, raising=False)
    net = mlp([4, 8, 3], "tanh")
    z = torch.randn(5, 4)
    with torch.inference_mode():
        mlp_forward(net, z)
    assert calls == (["tanh", "none"] if onednn_enabled() else [])
    assert cpu_matmul_backend().startswith("onednn/onednn/" if onednn_enabled() else "aten/aten/")
    calls.clear()
    with torch.backends.mkldnn.flags(enabled=False), torch.inference_mode():
        mlp_forward(net, z)
        assert cpu_matmul_backend().startswith("aten/aten/")
    assert calls == []
    monkeypatch.setenv("LVBENCH_KERNELS", "linear=aten,linear_autograd=onednn,bernoulli_autograd=bce")
    with torch.inference_mode():
        mlp_forward(net, z)  # the choice without autograd is aten's now
    assert calls == [] and cpu_matmul_backend().startswith("aten/onednn/" if onednn_enabled() else "aten/aten/")
    z.requires_grad_(True)
    mlp_forward(net, z).sum().backward()  # autograd: OneDNNLinear; ∂h by oneDNN per layer (∂W by torch.mm)
    assert z.grad is not None
    assert calls == (["tanh", "none"] + ["none"] * 2 if onednn_enabled() else [])
    calls.clear()
    torch.func.grad(lambda z: mlp_forward(net, z).sum())(z.detach())  # inside torch.func: eager
    with torch.inference_mode():
        mlp_forward(net.double(), z.detach().double())  # float64: eager
    assert calls == []


def numpy_bernoulli(logits: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Σ_d x log σ(l) + (1 - x) log σ(-l), with scipy's log_expit (no cancellation at any l)."""
    return (x * log_expit(logits) + (1 - x) * log_expit(-logits)).sum(-1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", [784, 301, 13, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_log_likelihood_matches_scipy_at_every_logit_scale(device, dim, dtype):
    """Logits from 10^-3 to 10^3 in size, both signs, with both pixel values: products of σ(|l|) in blocks
    must neither underflow (σ(|l|) ≥ ½) nor lose the large-|l| terms."""
    gen = torch.Generator().manual_seed(dim)
    n, hidden = 6, 9
    x = torch.randint(0, 2, (n, dim), generator=gen).to(dtype)
    w = torch.randn(dim, hidden, generator=gen, dtype=dtype)
    b = torch.randn(dim, generator=gen, dtype=dtype)
    scale = 10.0 ** torch.linspace(-3, 3, 4, dtype=dtype)  # one scale per sample
    h = torch.randn(4, n, hidden, generator=gen, dtype=dtype) * scale[:, None, None]
    logits = h @ w.T + b
    expected = numpy_bernoulli(logits.double().numpy(), x.double().numpy())
    x, w, b, h, logits = (t.to(device) for t in (x, w, b, h, logits))
    with torch.inference_mode():
        got = bernoulli_log_likelihood(h, logits.abs(), (x - 0.5) @ w, (x - 0.5) @ b)
    assert got.shape == (4, n) and got.dtype == dtype
    u = U32 if dtype == torch.float32 else 2.0**-53
    # every term carries a few roundings of its own size: the |l_d|, and the products h_j W_dj and b_d that
    # (x - ½)·l is rebuilt from
    products = (h.abs() @ w.abs().T).sum(-1) + b.abs().sum()
    magnitude = (logits.abs().sum(-1) + products).double().cpu().numpy()
    np.testing.assert_array_less(np.abs(got.double().cpu().numpy() - expected), 20 * u * (magnitude + dim))


@pytest.mark.parametrize("device", DEVICES)
def test_vae_log_joint_is_the_same_with_and_without_autograd(device):
    """The inference route (oneDNN where available, block products) against the autograd route and a
    numpy float64 log joint, on a VAE whose last layer is scaled up so that logits pass 50 (where σ(l) rounds to 1)."""
    torch.manual_seed(1)
    model = VAE(784, 50, (200, 200)).to(device)
    with torch.no_grad():
        model.decoder[-1].weight.mul_(200.0)
    x, _ = model.sample(20)
    z = torch.randn(11, 20, 50, device=device)
    with torch.inference_mode():
        fast = model.conditioned_log_joint(x)(z)
    autograd = model.conditioned_log_joint(x)(z.clone().requires_grad_(True))
    logits = numpy_mlp(model.decoder, z.cpu().double().numpy(), "tanh")
    z64 = z.cpu().double().numpy()
    reference = numpy_bernoulli(logits, x.cpu().double().numpy()) - 0.5 * (z64**2).sum(-1) - 25 * math.log(2 * math.pi)
    assert np.abs(logits).max() > 50
    tolerance = 2000 * U32 * np.abs(logits).sum(-1)  # per pixel: the decoder's own float32 rounding, ~10^3 u
    np.testing.assert_array_less(np.abs(fast.cpu().double().numpy() - reference), tolerance)
    np.testing.assert_array_less(np.abs(autograd.detach().cpu().double().numpy() - reference), tolerance)
    autograd.sum().backward()  # still differentiable


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("use_onednn", onednn_states())
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "silu", "elu"])
def test_mlp_forward_gradients_match_float64_autograd(device, use_onednn, activation):
    """∂/∂(h, W, b) of Σ c·MLP(h) (c fixed random weights): the oneDNN backward of ``OneDNNLinear`` (or
    the eager one) in float32 against eager autograd in float64, to float32 rounding."""
    torch.manual_seed(2)
    act = {"sigmoid": nn.Sigmoid, "silu": nn.SiLU}.get(activation, activation)
    net = mlp([30, 64, 64, 50], act).to(device)
    h = (2 * torch.randn(7, 5, 30, device=device)).requires_grad_(True)
    weights = torch.randn(7, 5, 50, device=device)
    with linear_kernels(use_onednn):
        (mlp_forward(net, h) * weights).sum().backward()
    net64 = mlp([30, 64, 64, 50], act).double().to(device)
    net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    h64 = h.detach().double().requires_grad_(True)
    (net64(h64) * weights.double()).sum().backward()
    pairs = [(h.grad, h64.grad)] + [(p.grad, q.grad) for p, q in zip(net.parameters(), net64.parameters())]
    for got, expected in pairs:
        assert got is not None and got.dtype == torch.float32
        scale = expected.abs().max().item() + 1.0
        # each gradient entry sums at most a few hundred products through three layers: ~10^3 roundings
        np.testing.assert_allclose(got.cpu().double().numpy(), expected.cpu().numpy(), rtol=0, atol=2000 * U32 * scale)


def test_onednn_backward_is_first_order_only():
    if not onednn_enabled():
        pytest.skip("no oneDNN here")
    net = mlp([4, 8, 3], "tanh")
    z = torch.randn(5, 4, requires_grad=True)
    with force_linear("onednn"):
        (g,) = torch.autograd.grad(mlp_forward(net, z).sum(), z, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|does not require grad"):
        torch.autograd.grad(g.sum(), z)


@pytest.mark.parametrize("device", DEVICES)
def test_softplus_sum_and_its_gradient_match_scipy_at_every_logit_scale(device):
    """``SoftplusSum`` (used where autograd records) against Σ log(1 + e^l) and its gradient σ(l) from
    scipy in float64, logits from 10^-3 to 10^3 in size; and it refuses a second derivative."""
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 3, 301, generator=gen) * (10.0 ** torch.linspace(-3, 3, 4))[:, None, None]
    logits = logits.to(device).requires_grad_(True)
    value = SoftplusSum.apply(logits)
    (value * torch.arange(1.0, 4.0, device=device)).sum().backward()
    value, grad = value.detach().cpu(), logits.grad.cpu()
    l64 = logits.detach().cpu().double().numpy()
    expected = logsumexp(np.stack([np.zeros_like(l64), l64]), axis=0).sum(-1)
    magnitude = np.abs(l64).sum(-1) + 301
    np.testing.assert_array_less(np.abs(value.double().numpy() - expected), 20 * U32 * magnitude)
    np.testing.assert_allclose(grad.numpy(), expit(l64) * np.arange(1.0, 4.0)[:, None], rtol=4 * U32, atol=1e-30)
    (g,) = torch.autograd.grad(SoftplusSum.apply(logits).sum(), logits, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), logits)
